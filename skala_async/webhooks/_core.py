"""The framework-free core of a webhook receiver: verification, de-duplication, callback."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import logging
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from skala_async.bus import Claim, SupportsBus, TicketBus
from skala_async.models import SupportTicketEvent

from ._verify import (
    DEFAULT_DEDUPE_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    EventCallback,
    Headers,
    InvalidSignatureError,
    InvalidWebhookError,
    Secrets,
    StaleWebhookError,
    _body_bytes,
    _check_signature,
    _decode,
    _event_from,
    _foreign,
    _secret_keys,
    _signature_values,
    _tolerance_seconds,
    check_freshness,
)

if TYPE_CHECKING:
    from skala_async._tracing import Tracing

log = logging.getLogger("skala_async.webhooks")

#: The outcomes of the webhook request being traced in this task, if one is.
_OUTCOME: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "skala_webhook_outcome", default=None
)

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


class _ReceiverCore:
    """Verification, parsing, de-duplication, the bus and the callback of a receiver, on a
    body already read; :class:`~skala_async.webhooks.WebhookReceiver` documents it."""

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
