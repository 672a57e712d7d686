"""Resume tokens: the versioned, checksummed string a wait continues from in another
process (pure: no I/O beyond reading the clock)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
import uuid
from typing import Any

from .models import Ticket, TicketStatus

__all__ = [
    "MAX_RESUME_TOKEN",
    "decode_resume_token",
    "encode_resume_token",
    "ticket_of",
    "token_for",
]

#: The version prefix of resume tokens this version writes and reads.
RESUME_PREFIX = "skw1"
_FAMILY = re.compile(r"skw(\d+)\Z")
_B64 = re.compile(r"[A-Za-z0-9_-]+\Z")
#: Longer than any token this version writes; longer input is refused before decoding.
MAX_RESUME_TOKEN = 4096
#: The longest status and issue key a token keeps (longer ones are not kept).
MAX_STATUS = 64
MAX_KEY = 256
#: An acceptance time this far ahead of this machine's clock is refused (clock skew
#: between machines is tolerated up to it).
MAX_CLOCK_SKEW = 300.0
#: No schedule point lies this far from acceptance (about 30 years, in seconds).
_MAX_SCHEDULE = 1e9
_FIELDS = ("id", "at", "st", "key", "next")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_sum(payload: bytes) -> bytes:
    # Against corruption and truncation, not forgery: a token grants nothing.
    return hashlib.sha256(b"skala_async resume token\0" + payload).digest()[:6]


def encode_resume_token(fields: dict[str, Any]) -> str:
    """``skw1.<base64url JSON>.<base64url checksum>``."""
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return f"{RESUME_PREFIX}.{_b64(payload)}.{_b64(_check_sum(payload))}"


def _bad(why: str) -> ValueError:
    return ValueError(f"not a valid resume token: {why}")


def _no_constant(name: str) -> Any:
    raise _bad(f"{name} is not a number")


def _number(value: object, name: str, *, upper: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{name} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise _bad(f"{name} is negative or not finite")
    if number > upper:
        raise _bad(f"{name} lies too far in the future")
    return number


def fits(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _text(value: object, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not fits(value, limit):
        raise _bad(f"{name} is not a short printable string")
    assert isinstance(value, str)
    return value


def decode_resume_token(token: object, *, now: float | None = None) -> dict[str, Any]:
    """The checked fields of a token; ``ValueError`` for anything this version did not
    write (truncated, corrupted, another version, another kind of string)."""
    if not isinstance(token, str):
        raise TypeError(f"a resume token is a str, not {type(token).__name__}")
    if len(token) > MAX_RESUME_TOKEN:
        raise _bad(f"{len(token)} characters, more than any token has")
    parts = token.split(".")
    family = _FAMILY.match(parts[0])
    if family is not None and parts[0] != RESUME_PREFIX:
        raise ValueError(
            f"resume token version {family.group(1)} is not one this version of "
            f"skala_async reads (it reads {RESUME_PREFIX!r} tokens)"
        )
    if family is None or len(parts) != 3:
        raise _bad(f"it does not have the form {RESUME_PREFIX}.<data>.<checksum>")
    try:
        payload = _unb64(parts[1])
        checksum = _unb64(parts[2])
    except (ValueError, binascii.Error):
        raise _bad("it is not base64url (truncated or altered?)") from None
    if checksum != _check_sum(payload):
        raise _bad("its checksum does not match (truncated or altered?)")
    try:
        fields = json.loads(payload.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad("its data is not what this version writes") from None
    if not isinstance(fields, dict) or sorted(fields) != sorted(_FIELDS):
        raise _bad("its data is not what this version writes")
    raw_id = fields["id"]
    try:
        ticket_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
    except ValueError:
        ticket_id = None
    if ticket_id is None or str(ticket_id) != raw_id:
        raise _bad("its ticket id is not a UUID")
    clock = time.time() if now is None else now
    at = _number(fields["at"], "the acceptance time", upper=clock + MAX_CLOCK_SKEW)
    status = _text(fields["st"], "the status", MAX_STATUS)
    issue_key = _text(fields["key"], "the issue key", MAX_KEY)
    if status is None and issue_key is not None:
        raise _bad("it has an issue key without a status")
    following = _number(fields["next"], "the schedule point", upper=_MAX_SCHEDULE)
    if following is not None and at is None:
        raise _bad("it has a schedule point without an acceptance time")
    return {"id": raw_id, "at": at, "st": status, "key": issue_key, "next": following}


def token_for(
    ticket_id: uuid.UUID, ticket: Ticket | None, at: float | None, schedule: float | None
) -> str:
    """The token of a handle: its ticket id, acceptance (wall clock), last state seen and
    schedule point (see :meth:`TicketHandle.resume_token`)."""
    if ticket is not None and not (
        fits(ticket.status.value, MAX_STATUS)
        and (ticket.issue_key is None or fits(ticket.issue_key, MAX_KEY))
    ):
        ticket = None  # a state no token can hold: the resumed wait asks at once
    fields = {
        "id": str(ticket_id),
        "at": None if at is None else round(at, 3),
        "st": None if ticket is None else ticket.status.value,
        "key": None if ticket is None else ticket.issue_key,
        "next": None if at is None or schedule is None else round(schedule, 3),
    }
    return encode_resume_token(fields)


def ticket_of(ticket_id: uuid.UUID, fields: dict[str, Any]) -> Ticket | None:
    """The last state a decoded token kept, if any."""
    if fields["st"] is None:
        return None
    return Ticket(ticket_id, TicketStatus(fields["st"]), fields["key"])
