"""Pure webhook verification and parsing: signing, signatures, events, freshness; no I/O.

Nothing here imports aiohttp: a framework of any kind can call these functions on the raw
body and headers it read itself.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from skala_async.errors import SkalaError
from skala_async.models import SupportTicketEvent, Ticket, TicketStatus

#: The signature header as Ripio documents it (reference section 6.4).
SIGNATURE_HEADER = "Http-X-Wh-Signature-256"
#: Every header name accepted, compared case-insensitively (reference section 10.1).
SIGNATURE_HEADERS = (SIGNATURE_HEADER, "X-Wh-Signature-256")
#: Default body limit of a receiver: a support ticket event is a few hundred bytes.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Default number of (ticket id, status) pairs remembered to drop repeated deliveries.
DEFAULT_DEDUPE_SIZE = 10_000

_SUPPORT_TICKET_PREFIX = "SUPPORT_TICKET."
_SIGNATURE_NAMES = frozenset(name.lower() for name in SIGNATURE_HEADERS)
_ENVELOPE_KEYS = frozenset({"eventType", "issueDatetime", "supportTicket"})
_TICKET_KEYS = frozenset({"ticketId", "status", "issueKey"})
# 0 to 6 fractional digits, and UTC written as Z or +00:00 (reference section 6.2).
_ISSUED_AT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)", re.ASCII
)

#: One webhook secret: the text or bytes the sender signs with.
Secret: TypeAlias = str | bytes
#: One secret, or several while a secret is being rotated (any of them verifies).
Secrets: TypeAlias = str | bytes | Sequence[str | bytes]
#: What a receiver calls for each new event: a function, or a coroutine function (awaited).
EventCallback: TypeAlias = Callable[[SupportTicketEvent], object]
#: A delivery's headers: a mapping, or name and value pairs (repeated names allowed).
Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]

# --------------------------------------------------------------------------- errors


class WebhookError(SkalaError):
    """A webhook request was refused: its signature, body or timestamp is not acceptable."""


class InvalidSignatureError(WebhookError):
    """The signature header is missing, malformed or does not match the body (HTTP 401)."""


class InvalidWebhookError(WebhookError):
    """The body is not a support ticket event: not JSON, fields missing or wrong (HTTP 400).

    Attributes:
        event_type: the ``eventType`` of the body, when it had one.
    """

    def __init__(self, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


class StaleWebhookError(WebhookError):
    """``issueDatetime`` lies outside the freshness window, in the past or the future.

    Attributes:
        issued_at: the event's ``issueDatetime``.
        age: seconds from ``issued_at`` to the time of the check (negative: in the future).
        tolerance: the window, in seconds.
    """

    def __init__(
        self, message: str, *, issued_at: datetime.datetime, age: float, tolerance: float
    ) -> None:
        super().__init__(message)
        self.issued_at = issued_at
        self.age = age
        self.tolerance = tolerance


# --------------------------------------------------------------------------- pure functions


def sign_payload(raw_body: bytes, secret: Secret) -> str:
    """The signature header value for ``raw_body``: ``"sha256=<lowercase hex>"``.

    Exactly what Ripio sends (reference section 6.4): HMAC-SHA256 keyed with the shared
    secret (a ``str`` is encoded as UTF-8) over the raw body bytes. Use it to sign test
    events; send it as ``Http-X-Wh-Signature-256``.
    """
    (key,) = _secret_keys(secret)
    return _signature(key, _body_bytes(raw_body))


def verify_signature(raw_body: bytes, headers: Headers, secrets: Secrets) -> None:
    """Check the signature of a webhook request; return quietly or raise.

    Args:
        raw_body: the request body exactly as received. Never parse and re-serialise it
            first: whitespace, escapes and key order change and the signature breaks.
        headers: the request headers, a mapping (``request.headers``) or ``(name, value)``
            pairs. ``Http-X-Wh-Signature-256`` and ``X-Wh-Signature-256`` are both looked
            up, in any letter case.
        secrets: the shared secret Ripio gave you, or several of them during a rotation.

    Raises:
        InvalidSignatureError: no signature header, or none that matches any secret.
        TypeError: ``raw_body`` is text rather than bytes.
        ValueError: no secret, or an empty one.

    The comparison takes constant time; the error message never holds the expected value.
    """
    body = _body_bytes(raw_body)
    keys = _secret_keys(secrets)
    _check_signature(body, _signature_values(headers), keys)


def parse_event(
    raw_body: bytes,
    *,
    tolerance: float | datetime.timedelta | None = None,
    now: datetime.datetime | None = None,
) -> SupportTicketEvent:
    """A :class:`~skala_async.SupportTicketEvent` from a webhook body (verify it first).

    The envelope is ``{"eventType", "issueDatetime", "supportTicket": {"ticketId",
    "status", "issueKey"}}``. ``issueDatetime`` is UTC with 0 to 6 fractional digits and
    ``Z`` or ``+00:00``. A missing ``supportTicket.status`` is taken from the event type
    (``SUPPORT_TICKET.CREATED``); a status that contradicts the event type is an error.
    Keys this version does not know are kept in ``event.extra``.

    Args:
        raw_body: the body as received (bytes).
        tolerance: if given, also :func:`check_freshness` with this window (seconds).
        now: the time to check against (default: the current time).

    Raises:
        InvalidWebhookError: not JSON, not an object, a required field missing or of the
            wrong type, or an event of another family (``ACCOUNT.*``, ``ON-RAMP.*``: no
            ``supportTicket`` object; ``event_type`` says which).
        StaleWebhookError: outside the ``tolerance`` window.
    """
    if tolerance is not None:
        _tolerance_seconds(tolerance)  # a bad window is the caller's bug: say so first
    event = _event_from(_decode(_body_bytes(raw_body)))
    if tolerance is not None:
        check_freshness(event.issued_at, tolerance, now=now)
    return event


def verify_and_parse(
    raw_body: bytes,
    headers: Headers,
    secrets: Secrets,
    *,
    tolerance: float | datetime.timedelta | None = None,
    now: datetime.datetime | None = None,
) -> SupportTicketEvent:
    """:func:`verify_signature`, then :func:`parse_event`: the safe way in for any framework.

    Nothing of the body is looked at before the signature is verified.
    """
    verify_signature(raw_body, headers, secrets)
    return parse_event(raw_body, tolerance=tolerance, now=now)


def check_freshness(
    issued_at: datetime.datetime,
    tolerance: float | datetime.timedelta,
    *,
    now: datetime.datetime | None = None,
) -> None:
    """Raise :class:`StaleWebhookError` unless ``issued_at`` is within ``tolerance`` of now.

    Checked in both directions: an event from the future beyond the window is refused as
    well as an old one (a replay). ``tolerance`` is in seconds (or a ``timedelta``) and must
    be positive: ``0`` does not mean "off" (leave the check out for that).

    Raises:
        ValueError: ``tolerance`` is not a positive, finite number of seconds, or ``now`` is
            a naive datetime.
    """
    seconds = _tolerance_seconds(tolerance)
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime (e.g. datetime.now(timezone.utc))")
    age = (now - issued_at).total_seconds()
    if age > seconds:
        raise StaleWebhookError(
            f"event issued {age:.3f} s ago, outside the {seconds:g} s freshness window "
            "(a replay, or a delivery retried late)",
            issued_at=issued_at,
            age=age,
            tolerance=seconds,
        )
    if age < -seconds:
        raise StaleWebhookError(
            f"event issued {-age:.3f} s in the future, outside the {seconds:g} s freshness "
            "window (check the clocks)",
            issued_at=issued_at,
            age=age,
            tolerance=seconds,
        )


# --------------------------------------------------------------------------- internals


def _signature(key: bytes, body: bytes) -> str:
    """``"sha256=<lowercase hex>"``: HMAC-SHA256 of ``body`` keyed with ``key`` (the one
    place the digest is computed, for signing and verifying alike)."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _body_bytes(raw_body: object) -> bytes:
    if isinstance(raw_body, bytes):
        return raw_body
    if isinstance(raw_body, (bytearray, memoryview)):
        return bytes(raw_body)
    if isinstance(raw_body, str):
        raise TypeError(
            "pass the raw request body as bytes, exactly as received: text that was decoded "
            "or JSON that was re-serialised no longer matches the signature"
        )
    raise TypeError(f"the raw body must be bytes, not {type(raw_body).__name__}")


def _secret_keys(secrets: object) -> tuple[bytes, ...]:
    items: list[object]
    if isinstance(secrets, (str, bytes, bytearray, memoryview)):
        items = [secrets]
    elif isinstance(secrets, Iterable):
        items = list(secrets)
    else:
        raise TypeError(f"a webhook secret must be str or bytes, not {type(secrets).__name__}")
    keys: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            key = item.encode("utf-8")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            key = bytes(item)
        else:
            raise TypeError(f"a webhook secret must be str or bytes, not {type(item).__name__}")
        if not key:
            raise ValueError("a webhook secret must not be empty")
        keys.append(key)
    if not keys:
        raise ValueError("no webhook secret given")
    return tuple(keys)


def _signature_values(headers: Headers) -> list[str]:
    pairs: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    return [value for name, value in pairs if name.lower() in _SIGNATURE_NAMES]


def _check_signature(body: bytes, values: Sequence[str], keys: Sequence[bytes]) -> None:
    if not values:
        raise InvalidSignatureError(
            "the signature header is missing (expected Http-X-Wh-Signature-256 or "
            "X-Wh-Signature-256)"
        )
    expected = [_signature(key, body).encode("ascii") for key in keys]
    matched = False
    well_formed = False
    for value in values:
        # A proxy may fold repeated headers into one, comma-separated.
        for candidate in value.split(","):
            given = candidate.strip().lower()
            if not given.isascii() or not given.startswith("sha256="):
                continue
            well_formed = True
            given_bytes = given.encode("ascii")
            for digest in expected:
                # No early exit: every comparison runs, each in constant time.
                matched |= hmac.compare_digest(given_bytes, digest)
    if matched:
        return
    if not well_formed:
        raise InvalidSignatureError("the signature header is not of the form sha256=<hex>")
    raise InvalidSignatureError(
        "the signature does not match the body: a wrong secret, or the body was changed "
        "(verify the raw bytes exactly as received)"
    )


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidWebhookError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidWebhookError(f"the body is a JSON {type(data).__name__}, not an object")
    return data


def _foreign(data: Mapping[str, Any]) -> str | None:
    """The event type of an event of another family (``ACCOUNT.*`` ...), else ``None``."""
    event_type = data.get("eventType")
    if (
        isinstance(event_type, str)
        and event_type
        and not event_type.startswith(_SUPPORT_TICKET_PREFIX)
        and "supportTicket" not in data
    ):
        return event_type
    return None


def _issued_at(value: object) -> datetime.datetime:
    if not isinstance(value, str):
        raise InvalidWebhookError("issueDatetime is missing or not a string")
    match = _ISSUED_AT.fullmatch(value)
    if match is None:
        raise InvalidWebhookError(
            f"issueDatetime {value[:40]!r} is not a UTC timestamp like "
            "2026-06-26T14:30:00.000Z (0 to 6 fractional digits, Z or +00:00)"
        )
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "").ljust(6, "0")),
            tzinfo=datetime.timezone.utc,
        )
    except ValueError as exc:
        raise InvalidWebhookError(f"issueDatetime {value!r} is not a valid date: {exc}") from None


def _event_from(data: Mapping[str, Any]) -> SupportTicketEvent:
    event_type = data.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidWebhookError("eventType is missing or not a non-empty string")
    raw_ticket = data.get("supportTicket")
    if raw_ticket is None:
        if event_type.startswith(_SUPPORT_TICKET_PREFIX):
            raise InvalidWebhookError(
                f"a {event_type} event without a supportTicket object", event_type=event_type
            )
        raise InvalidWebhookError(
            f"not a support ticket event: {event_type!r} has no supportTicket object "
            "(an event of another Ripio family, such as ACCOUNT.*)",
            event_type=event_type,
        )
    if not isinstance(raw_ticket, dict):
        raise InvalidWebhookError("supportTicket is not an object", event_type=event_type)
    issued_at = _issued_at(data.get("issueDatetime"))
    fields = dict(raw_ticket)
    suffix: str | None = None
    if event_type.startswith(_SUPPORT_TICKET_PREFIX):
        suffix = event_type[len(_SUPPORT_TICKET_PREFIX) :]
        if not suffix:
            raise InvalidWebhookError(f"eventType {event_type!r} names no status")
        fields.setdefault("status", suffix)
    # The converter (and cattrs) load on first use, keeping `import skala_async` cheap.
    import cattrs

    from skala_async import _convert

    try:
        ticket = _convert.structure(fields, Ticket)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            messages = cattrs.transform_error(exc, path="supportTicket")
            why = "; ".join(_wire_names(message) for message in messages)
        else:
            why = str(exc)
        raise InvalidWebhookError(
            f"supportTicket is not a ticket ({why})", event_type=event_type
        ) from None
    if suffix is not None and ticket.status != TicketStatus(suffix):
        raise InvalidWebhookError(
            f"eventType {event_type} contradicts supportTicket.status {ticket.status.value}",
            event_type=event_type,
        )
    extra: dict[str, Any] = {k: v for k, v in data.items() if k not in _ENVELOPE_KEYS}
    ticket_extra = {k: v for k, v in raw_ticket.items() if k not in _TICKET_KEYS}
    if ticket_extra:
        extra["supportTicket"] = ticket_extra
    return SupportTicketEvent(event_type, issued_at, ticket, extra)


def _wire_names(message: str) -> str:
    """``"... @ supportTicket.issue_key"`` -> ``"... @ supportTicket.issueKey"``."""
    from skala_async._convert import to_camel

    text, at, path = message.rpartition(" @ ")
    return text + at + to_camel(path) if at else message


def _tolerance_seconds(tolerance: object) -> float:
    if isinstance(tolerance, datetime.timedelta):
        seconds = tolerance.total_seconds()
    elif isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool):
        seconds = float(tolerance)
    else:
        raise TypeError(f"tolerance must be seconds or a timedelta, not {type(tolerance).__name__}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(
            f"tolerance must be a positive number of seconds, got {tolerance!r}; "
            "to skip the freshness check pass tolerance=None"
        )
    return seconds
