"""Webhooks: verify Ripio's signature, parse events, and receive them in a web app.

Ripio POSTs a signed JSON event when a ticket is ``CREATED`` or ``FAILED`` (reference
section 6). Everything needed to take those events safely is here:

* pure functions, no I/O: :func:`verify_signature` (HMAC-SHA256 over the raw body, constant
  time, several secrets during a rotation), :func:`parse_event` (a frozen
  :class:`~skala_async.SupportTicketEvent`), :func:`check_freshness` (an optional window on
  ``issueDatetime``, both directions), :func:`verify_and_parse` (all three) and
  :func:`sign_payload` (for tests and tools);
* :class:`WebhookReceiver`: reads the body with a size limit, verifies before parsing,
  answers ``401`` / ``400`` / ``413`` / ``2xx``, delivers each (ticket id, status) once to
  your callback, and never lets an exception out. Mount :meth:`WebhookReceiver.handle` in an
  aiohttp app (:func:`webhook_handler` returns it) or :meth:`WebhookReceiver.asgi` in an
  ASGI app (Starlette, FastAPI);
* :meth:`SkalaClient.webhook_handler() <skala_async.SkalaClient.webhook_handler>`: the same
  handler, which also wakes the client's waiting handles the moment an event arrives.

``import aiohttp.web`` happens only when an aiohttp handler runs: the pure functions stay
pure and ``import skala_async`` stays cheap. A webhook secret never appears in a ``repr``,
a log line or an error message; neither does a body.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import hashlib
import hmac
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from .bus import Claim, SupportsBus, TicketBus
from .errors import SkalaError
from .models import SupportTicketEvent, Ticket, TicketStatus

if TYPE_CHECKING:
    from aiohttp import web

    from ._tracing import Tracing


async def read_capped(request: web.Request, limit: int) -> bytes | None:
    """A request's body, or ``None`` as soon as it grows past ``limit`` bytes (the rest is
    left unread: a hostile sender cannot make the receiver buffer more than ``limit``)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


__all__ = [
    "DEFAULT_DEDUPE_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "SIGNATURE_HEADERS",
    "AiohttpHandler",
    "EventCallback",
    "InvalidSignatureError",
    "InvalidWebhookError",
    "StaleWebhookError",
    "WebhookError",
    "WebhookReceiver",
    "check_freshness",
    "parse_event",
    "sign_payload",
    "verify_and_parse",
    "verify_signature",
    "webhook_handler",
]

log = logging.getLogger("skala_async.webhooks")

#: The outcomes of the webhook request being traced in this task, if one is.
_OUTCOME: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "skala_webhook_outcome", default=None
)

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

Secret: TypeAlias = str | bytes
#: One secret, or several while a secret is being rotated (any of them verifies).
Secrets: TypeAlias = str | bytes | Sequence[str | bytes]
#: What a receiver calls for each new event: a function, or a coroutine function (awaited).
EventCallback: TypeAlias = Callable[[SupportTicketEvent], object]
Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
#: The type of an aiohttp request handler, as :func:`webhook_handler` returns.
AiohttpHandler: TypeAlias = Callable[["web.Request"], Awaitable["web.Response"]]


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
    return "sha256=" + hmac.new(key, _body_bytes(raw_body), hashlib.sha256).hexdigest()


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
    expected = [
        b"sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii") for key in keys
    ]
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

    from . import _convert

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
    from ._convert import to_camel

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


# --------------------------------------------------------------------------- the receiver

_Result = tuple[int, str]
_Key = tuple[uuid.UUID, str]

#: Outcomes of a delivery that did not reach the waits: evidence that webhooks are not
#: working (a wrong secret or URL in Ripio's dashboard, a proxy rewriting bodies, clocks
#: apart), so a client's waits leave the slow fallback at once.
_REFUSALS = frozenset({"invalid_signature", "malformed", "stale", "too_large", "error"})

_OK: _Result = (200, "ok")
_DUPLICATE: _Result = (200, "duplicate")
_IGNORED: _Result = (200, "ignored: not a support ticket event")
_TOO_LARGE: _Result = (413, "body too large")
_BUSY: _Result = (503, "being handled elsewhere")


class WebhookReceiver:
    """Takes webhook requests: size limit, signature, parsing, de-duplication, your callback.

    For each request, in this order:

    1. a body over ``max_body_bytes`` is refused with ``413`` (by ``Content-Length`` before
       reading anything, or as soon as a chunked body passes the limit);
    2. a missing or wrong signature is refused with ``401`` (nothing is parsed before);
    3. a body that is not a support ticket event is refused with ``400``, and so is one
       outside the ``tolerance`` window; an event of another Ripio family (``ACCOUNT.*``,
       ``ON-RAMP.*``: no ``supportTicket`` object) is acknowledged with ``200`` and ignored,
       since one endpoint may receive them all;
    4. a repeated delivery of a (ticket id, status) already delivered is acknowledged with
       ``200`` and not passed on; a copy arriving while the first is being handled waits
       for it. With a bus shared by several processes (``client=`` or ``bus=``), the
       (ticket id, status) is also claimed on the bus first: delivered by another process
       is a ``200`` duplicate, being handled by another one is a ``503`` (delivered again
       later);
    5. ``on_event(event)`` is called (a function or a coroutine function). If it raises, the
       error is logged and the answer is ``500`` so that Ripio delivers again, and the event
       is not remembered as delivered; otherwise the answer is ``200``.

    No exception ever leaves the handler: anything unexpected is logged and answered ``500``.

    Args:
        secret: the shared secret, or several (``[new, old]``) during a rotation.
        on_event: called once for each new event; optional.
        client: a :class:`~skala_async.SkalaClient` to wake: each verified event is handed to
            its waiting handles at once, and its waits poll only as a slow fallback (see
            :meth:`SkalaClient.webhook_handler <skala_async.SkalaClient.webhook_handler>`);
            a refused request (``401``, ``400``, ``413``, an unexpected ``500``) tells it
            that webhooks are not working, and its waits poll normally at once. The app
            must run on the client's event loop. Its bus is used.
        bus: a bus (:mod:`skala_async.bus`) to publish events on without a client, such as
            ``skala_async.redis.RedisBus``: waits in other processes wake, and ``on_event``
            runs once per (ticket id, status) across every receiver sharing the bus (a
            callback that fails releases its claim; a copy arriving while another process
            runs the callback is answered ``503`` so that it is delivered again). Refused
            requests are told to the bus too: every process sharing it polls normally.
        max_body_bytes: the largest body accepted (default 64 KiB).
        tolerance: a freshness window on ``issueDatetime`` in seconds (both directions), or
            ``None`` (default) for no check. Must be positive.
        dedupe_size: how many (ticket id, status) pairs are remembered (least recently seen
            are forgotten first); ``0`` turns de-duplication off.

    Attributes:
        counts: requests by outcome: ``accepted``, ``duplicate``, ``ignored``,
            ``invalid_signature``, ``malformed``, ``stale``, ``too_large``,
            ``callback_failed``, ``busy`` (another process sharing the bus was running the
            callback for the same event), ``error``.
    """

    def __init__(
        self,
        secret: Secrets,
        on_event: EventCallback | None = None,
        *,
        client: SupportsBus | None = None,
        bus: TicketBus | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tolerance: float | datetime.timedelta | None = None,
        dedupe_size: int = DEFAULT_DEDUPE_SIZE,
    ) -> None:
        self._keys = _secret_keys(secret)
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable")
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be an integer >= 1, got {max_body_bytes!r}")
        if not isinstance(dedupe_size, int) or dedupe_size < 0:
            raise ValueError(f"dedupe_size must be an integer >= 0, got {dedupe_size!r}")
        self._tolerance = None if tolerance is None else _tolerance_seconds(tolerance)
        self._on_event = on_event
        if client is not None and bus is not None and bus is not client.bus:
            raise ValueError("pass client= or bus=, not both (a client brings its own bus)")
        self._client = client
        self._bus: TicketBus | None = client.bus if client is not None else bus
        # A SkalaClient's tracing, when on: each delivery is then a skala.webhook span.
        self._tracing: Tracing | None = getattr(client, "_tracing", None)
        self.max_body_bytes = max_body_bytes
        self.dedupe_size = dedupe_size
        self._delivered: collections.OrderedDict[_Key, None] = collections.OrderedDict()
        self._in_flight: dict[_Key, asyncio.Future[bool]] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "duplicate",
                "ignored",
                "invalid_signature",
                "malformed",
                "stale",
                "too_large",
                "callback_failed",
                "busy",
                "error",
            ),
            0,
        )
        if self._bus is not None:
            self._bus.webhooks_expected()

    def __repr__(self) -> str:
        secrets = "1 secret" if len(self._keys) == 1 else f"{len(self._keys)} secrets"
        window = "" if self._tolerance is None else f" tolerance={self._tolerance:g}s"
        client = " client" if self._client is not None else " bus" if self._bus else ""
        return f"<WebhookReceiver {secrets} max_body_bytes={self.max_body_bytes}{window}{client}>"

    # -- framework-free core -----------------------------------------------------------------

    async def process(self, raw_body: bytes, headers: Headers) -> tuple[int, str]:
        """Handle one request whose body is already read: ``(HTTP status, short text)``.

        For frameworks other than aiohttp and ASGI. Read the body with a limit yourself.
        """
        try:
            body = _body_bytes(raw_body)
            if len(body) > self.max_body_bytes:
                return self._count("too_large", _TOO_LARGE)
            return await self._process(body, headers)
        except Exception:
            log.exception("unexpected error while handling a webhook; answered 500")
            return self._count("error", (500, "internal error"))

    async def _process(self, body: bytes, headers: Headers) -> _Result:
        tracing = self._tracing
        if tracing is None:
            return await self._process_body(body, headers)
        with tracing.current("skala.webhook", {"skala.webhook.bytes": len(body)}) as span:
            outcome: list[str] = []
            reset = _OUTCOME.set(outcome)
            try:
                status, text = await self._process_body(body, headers)
            finally:
                _OUTCOME.reset(reset)
            span.set_attribute("skala.webhook.verified", status != 401)
            span.set_attribute("http.response.status_code", status)
            if outcome:
                span.set_attribute("skala.outcome", outcome[-1])
            return status, text

    async def _process_body(self, body: bytes, headers: Headers) -> _Result:
        try:
            _check_signature(body, _signature_values(headers), self._keys)
        except InvalidSignatureError as exc:
            log.warning("webhook refused (401): %s", exc)
            return self._count("invalid_signature", (401, "invalid signature"))
        try:
            data = _decode(body)
            foreign = _foreign(data)
            if foreign is not None:
                log.debug("webhook %s ignored: not a support ticket event", foreign[:60])
                return self._count("ignored", _IGNORED)
            event = _event_from(data)
        except InvalidWebhookError as exc:
            log.warning("webhook refused (400): %s", exc)
            return self._count("malformed", (400, "malformed event"))
        if self._tolerance is not None:
            try:
                check_freshness(event.issued_at, self._tolerance)
            except StaleWebhookError as exc:
                log.warning("webhook refused (400): %s", exc)
                return self._count("stale", (400, "stale event"))
        if self._bus is not None:
            self._bus.publish(event.ticket, webhook=True)
        return await self._deliver(event)

    async def _deliver(self, event: SupportTicketEvent) -> _Result:
        if self.dedupe_size == 0:
            return await self._call(event, None)
        key: _Key = (event.ticket_id, event.status.value)
        while True:
            if key in self._delivered:
                self._delivered.move_to_end(key)
                log.debug("webhook for %s %s: repeated delivery", *key)
                return self._count("duplicate", _DUPLICATE)
            first = self._in_flight.get(key)
            if first is None:
                break
            # The same event is being handled right now: its outcome decides this one's.
            await asyncio.shield(first)
        return await self._call(event, key)

    async def _call(self, event: SupportTicketEvent, key: _Key | None) -> _Result:
        done: asyncio.Future[bool] | None = None
        if key is not None:
            done = asyncio.get_running_loop().create_future()
            self._in_flight[key] = done
        ok = False
        # Across processes: claim the (ticket, status) on the bus before the callback.
        shared = None if key is None or self._bus is None else f"{key[0]}:{key[1]}"
        claimed = False
        try:
            if shared is not None:
                assert self._bus is not None
                verdict = await self._bus.claim(shared)
                if verdict is Claim.DONE:
                    ok = True  # delivered by another process: remembered here too
                    log.debug("webhook for %s: delivered elsewhere", shared)
                    return self._count("duplicate", _DUPLICATE)
                if verdict is Claim.BUSY:
                    log.info("webhook for %s: being handled elsewhere; answered 503", shared)
                    return self._count("busy", _BUSY)
                claimed = True
            if self._on_event is not None:
                result = self._on_event(event)
                if isinstance(result, Awaitable):
                    await result
            ok = True
        except Exception:
            log.exception(
                "webhook callback failed for ticket %s %s; answered 500 so that it is "
                "delivered again",
                event.ticket_id,
                event.status.value,
            )
            return self._count("callback_failed", (500, "callback failed"))
        finally:
            if claimed:
                assert self._bus is not None
                assert shared is not None
                # Done for good, or released so that a redelivery (anywhere) runs it again.
                await self._bus.settle(shared, ok)
            if key is not None and done is not None:
                del self._in_flight[key]
                if ok:
                    self._remember(key)
                done.set_result(ok)
        return self._count("accepted", _OK)

    def _remember(self, key: _Key) -> None:
        self._delivered[key] = None
        while len(self._delivered) > self.dedupe_size:
            self._delivered.popitem(last=False)

    def _count(self, outcome: str, result: _Result) -> _Result:
        self.counts[outcome] += 1
        if self._bus is not None and outcome in _REFUSALS:
            self._bus.webhook_refused(f"a webhook delivery was refused ({result[0]} {result[1]})")
        traced = _OUTCOME.get()
        if traced is not None:  # a skala.webhook span is open: it records the outcome
            traced.append(outcome)
        return result

    # -- aiohttp -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """An :mod:`aiohttp.web` handler: ``app.router.add_post("/webhooks/skala", r.handle)``."""
        from aiohttp import web

        try:
            if request.method != "POST":
                return web.Response(status=405, text="POST only", headers={"Allow": "POST"})
            length = request.content_length
            if length is not None and length > self.max_body_bytes:
                return self._too_large()
            body = await self._read(request)
            if body is None:
                return self._too_large()
            status, text = await self._process(body, request.headers)
            return web.Response(status=status, text=text)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("webhook body could not be read (%s)", type(exc).__name__)
            return web.Response(status=400, text="incomplete body")
        except Exception:
            log.exception("unexpected error while handling a webhook; answered 500")
            status, text = self._count("error", (500, "internal error"))
            return web.Response(status=status, text=text)

    async def _read(self, request: web.Request) -> bytes | None:
        return await read_capped(request, self.max_body_bytes)

    def _too_large(self) -> web.Response:
        from aiohttp import web

        self._count("too_large", _TOO_LARGE)
        response = web.Response(status=413, text=_TOO_LARGE[1])
        # Close the connection after answering: the rest of the body is not wanted.
        response.force_close()
        return response

    # -- ASGI --------------------------------------------------------------------------------

    async def asgi(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """An ASGI 3 application: ``app.mount("/webhooks/skala", receiver.asgi)``."""
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        try:
            status, text = await self._asgi_request(scope, receive)
        except Exception:
            log.exception("unexpected error while handling a webhook; answered 500")
            status, text = self._count("error", (500, "internal error"))
        if status == 0:
            return  # the client went away
        payload = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if status == 405:
            headers.append((b"allow", b"POST"))
        if status == 413:
            headers.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except Exception as exc:  # the server could not send it: nothing more to do
            log.info("webhook answer %d not sent (%s)", status, type(exc).__name__)

    async def _asgi_request(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    ) -> _Result:
        if scope.get("method") != "POST":
            return 405, "POST only"
        headers = [
            (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
            for k, v in scope.get("headers", ())
        ]
        for name, value in headers:
            if name.lower() == "content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return self._count("malformed", (400, "bad content-length"))
                if declared > self.max_body_bytes:
                    return self._count("too_large", _TOO_LARGE)
        body = bytearray()
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return 0, ""
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return self._count("too_large", _TOO_LARGE)
            if not message.get("more_body", False):
                break
        return await self._process(bytes(body), headers)


async def _lifespan(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """Answer an ASGI server's lifespan messages (when the receiver is the whole app)."""
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def webhook_handler(
    secret: Secrets,
    on_event: EventCallback | None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    tolerance: float | datetime.timedelta | None = None,
    dedupe_size: int = DEFAULT_DEDUPE_SIZE,
) -> AiohttpHandler:
    """An aiohttp handler that verifies webhooks and calls ``on_event`` once per event.

    ::

        app.router.add_post("/webhooks/skala", webhook_handler(secret, on_event))

    See :class:`WebhookReceiver` for what it answers (its ``counts`` are reachable as
    ``handler.__self__.counts``). To also wake waiting tickets, use
    :meth:`SkalaClient.webhook_handler <skala_async.SkalaClient.webhook_handler>`.
    """
    receiver = WebhookReceiver(
        secret,
        on_event,
        max_body_bytes=max_body_bytes,
        tolerance=tolerance,
        dedupe_size=dedupe_size,
    )
    return receiver.handle
