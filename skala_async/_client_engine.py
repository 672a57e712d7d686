"""How :class:`~skala_async.SkalaClient` sends a request: retries, the token, the pause.

:class:`_Engine` is the client's base class: one attempt after another through the
client's :class:`~skala_async.Transport`, refreshing a rejected token once, honouring the
shared ``Retry-After`` pause and the call's deadline, and turning an ambiguous failure of
a create into :class:`~skala_async.errors.CreateOutcomeUnknownError`. The public methods
are on the client (``client.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from . import _cancelsafe, _protocol
from ._attempt_log import _ambiguous, _no_retry, _reason, _ticket_label, exc_path
from ._auth import TokenProvider
from ._backoff import PollPolicy, RetryPolicy, check_timeout
from ._waiting import TicketHandle
from ._waits import Waits
from ._wire import Operation, ProgressCallback, RawResponse, Request, Timeouts, Transport
from .bus import LocalBus, TicketBus
from .errors import (
    ApiError,
    CreateOutcomeUnknownError,
    RequestTimeoutError,
    SkalaError,
    ValidationError,
    WaitTimeoutError,
)
from .models import Ticket, TicketDraft

if TYPE_CHECKING:
    from ._tracing import Tracing

#: One line per HTTP attempt (DEBUG), per retry and per request that failed (INFO).
http_log = logging.getLogger("skala_async.http")
_DEBUG = logging.DEBUG

T = TypeVar("T")


class _Engine:
    """The request machinery of a client (its attributes are set by ``SkalaClient``)."""

    base_url: str
    bus: TicketBus
    retry_policy: RetryPolicy
    poll_policy: PollPolicy
    webhook_poll_policy: PollPolicy
    request_counts: dict[str, int]
    _auth: TokenProvider
    _transport: Transport
    _tracing: Tracing | None
    _timeouts: Timeouts
    _call_timeout: float | None
    _waits: Waits
    _max_polls: int
    _poll_slots: asyncio.Semaphore | None
    _closed: bool

    def _share(
        self,
        bus: TicketBus | None,
        max_concurrent_polls: int,
        get: Callable[..., Awaitable[Ticket]],
    ) -> None:
        """Set up what waits share: the bus (the caller's, or one of the client's own)."""
        if bus is not None and not isinstance(bus, TicketBus):
            raise TypeError(f"bus must implement skala_async.bus.TicketBus, got {bus!r}")
        own_bus: LocalBus | None = None
        if bus is None:
            bus = own_bus = LocalBus()
        #: What waits, webhooks and bulk runs share (:mod:`skala_async.bus`).
        self.bus = bus
        self._waits = Waits(
            bus=self.bus,
            fetch=self._poll,
            get=get,
            policy=self._wait_policy,
            retry=self._retry,
            tracing=self._tracing,
            own_bus=own_bus,
        )
        self._max_polls = max_concurrent_polls
        self._poll_slots = None

    async def _submit(
        self,
        draft: TicketDraft,
        progress: ProgressCallback | None,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> TicketHandle:
        """A create within ``deadline`` (event-loop time; ``None``: none)."""
        if self._tracing is not None:
            return await self._submit_traced(self._tracing, draft, progress, deadline, retry)
        request = _protocol.create_request(draft)
        ticket = await self._execute(
            request, _protocol.parse_ticket, deadline, progress, self._retry(retry)
        )
        loop = asyncio.get_running_loop()
        self.bus.publish(ticket)
        return TicketHandle(self._waits, ticket.ticket_id, ticket, accepted_at=loop.time())

    async def _submit_traced(
        self,
        tracing: Tracing,
        draft: TicketDraft,
        progress: ProgressCallback | None,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> TicketHandle:
        with tracing.create() as span:
            try:
                request = _protocol.create_request(draft)
            except ValidationError as exc:
                tracing.ended(span, "invalid", exc)
                raise
            tracing.describe_create(span, request)
            try:
                ticket = await self._execute(
                    request, _protocol.parse_ticket, deadline, progress, self._retry(retry)
                )
            except CreateOutcomeUnknownError as exc:
                tracing.ended(span, "uncertain", exc)
                raise
            except ApiError as exc:
                tracing.ended(span, "rejected" if 400 <= int(exc.status) < 500 else "failed", exc)
                raise
            except Exception as exc:
                tracing.ended(span, "failed", exc)
                raise
            span.set_attribute("skala.ticket_id", str(ticket.ticket_id))
            tracing.ended(span, "accepted")
        loop = asyncio.get_running_loop()
        self.bus.publish(ticket)
        return TicketHandle(self._waits, ticket.ticket_id, ticket, accepted_at=loop.time())

    def _wait_policy(self) -> PollPolicy:
        """The poll policy of waits right now: slow while webhooks arrive."""
        if self.bus.webhooks_healthy:
            return self.webhook_poll_policy
        return self.poll_policy

    async def _create_and_wait(
        self,
        draft: TicketDraft,
        timeout: float | None,
        raise_on_failure: bool,
        progress: ProgressCallback | None,
        *,
        retry: RetryPolicy | None,
        poll: PollPolicy | None,
    ) -> Ticket:
        """``SkalaClient.create_and_wait`` once its arguments are checked."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        handle = await self._submit(draft, progress, deadline, retry)
        if deadline is None:
            return await handle.wait_until_created(
                None, raise_on_failure=raise_on_failure, poll=poll, retry=retry
            )
        left = deadline - loop.time()
        if left <= 0:
            # The 202 itself was the last word, heard just now: no time to ask again.
            raise WaitTimeoutError(
                handle.ticket_id,
                timeout or 0.0,
                handle.ticket,
                resume_token=handle.resume_token(),
            )
        try:
            return await handle.wait_until_created(
                left, raise_on_failure=raise_on_failure, poll=poll, retry=retry
            )
        except WaitTimeoutError as exc:
            # The budget of the whole job, not what was left of it for the wait.
            raise WaitTimeoutError(
                handle.ticket_id, timeout or 0.0, exc.ticket, resume_token=exc.resume_token
            ) from None

    # ------------------------------------------------------------------ internals

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            timeout = self._call_timeout
            if timeout is None:
                return None
        check_timeout(timeout)
        return asyncio.get_running_loop().time() + timeout

    async def _poll(
        self, ticket_id: uuid.UUID, deadline: float | None, slot: bool, retry: RetryPolicy
    ) -> Ticket:
        """One GET of a wait (within the shared poll slots if ``slot``)."""
        return await self._get(ticket_id, deadline=deadline, poll_slot=slot, retry=retry)

    def _retry(self, retry: RetryPolicy | None) -> RetryPolicy:
        if retry is None:
            return self.retry_policy
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        return retry

    async def _get(
        self,
        ticket_id: uuid.UUID,
        *,
        deadline: float | None,
        poll_slot: bool = True,
        retry: RetryPolicy | None = None,
    ) -> Ticket:
        request = _protocol.get_request(ticket_id)
        policy = retry or self.retry_policy
        if self._tracing is not None:
            with self._tracing.operation(request) as span:
                ticket = await self._get_slot(request, deadline, poll_slot, policy)
                span.set_attribute("skala.ticket.status", ticket.status.value)
        else:
            ticket = await self._get_slot(request, deadline, poll_slot, policy)
        self.bus.publish(ticket)
        return ticket

    async def _get_slot(
        self, request: Request, deadline: float | None, poll_slot: bool, policy: RetryPolicy
    ) -> Ticket:
        if not poll_slot:
            return await self._execute(request, _protocol.parse_ticket, deadline, None, policy)
        if self._poll_slots is None:
            self._poll_slots = asyncio.Semaphore(self._max_polls)
        async with self._poll_slots:
            return await self._execute(request, _protocol.parse_ticket, deadline, None, policy)

    async def _token_within(self, request: Request, deadline: float | None) -> str:
        """A token for ``request``, without outliving the call's deadline."""
        if (token := self._auth.cached()) is not None:
            return token  # the usual case: no request, no timer
        if deadline is None:
            return await self._auth.token()
        try:
            # The refresh itself is shared and shielded: only this call stops waiting. Not
            # asyncio.wait_for: before 3.12 it can swallow a cancel (see _cancelsafe).
            return await _cancelsafe.within(self._auth.token(), deadline)
        except TimeoutError:
            raise RequestTimeoutError(
                f"{request.method} {request.path}: deadline reached while getting a token",
                method=request.method,
                path=request.path,
                request_sent=False,
            ) from None

    async def _fetch_token(self, client_id: str, client_secret: str) -> _protocol.TokenInfo:
        request = _protocol.token_request(client_id, client_secret)
        if self._tracing is not None:
            with self._tracing.operation(request):
                return await self._execute(request, _protocol.parse_token, None)
        return await self._execute(request, _protocol.parse_token, None)

    async def _execute(
        self,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        deadline: float | None,
        progress: ProgressCallback | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Send ``request`` with retries, token refresh and the shared rate gate."""
        try:
            return await self._attempts(
                request, parse, deadline, progress, policy or self.retry_policy
            )
        except SkalaError as exc:
            # Only a failure of the create request itself is ambiguous: a token request
            # that failed first means the create was never sent.
            if (
                request.operation is Operation.CREATE
                and exc_path(exc) == request.path
                and _ambiguous(exc)
            ):
                raise CreateOutcomeUnknownError(
                    f"the create request may or may not have opened a ticket ({exc}); it was "
                    "not re-sent, because the API has no idempotency key. Check with Ripio "
                    "(or your webhook) before creating it again",
                    cause=exc,
                ) from exc
            raise

    async def _attempts(
        self,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        deadline: float | None,
        progress: ProgressCallback | None,
        policy: RetryPolicy,
    ) -> T:
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            token, limit = await self._ready_to_send(request, deadline)
            self.request_counts[request.operation.value] += 1
            try:
                return await self._send_once(request, parse, token, limit, progress, attempt)
            except SkalaError as exc:
                if (
                    token is not None
                    and _protocol.is_auth_failure(exc)
                    and self._auth.can_refresh
                    and not refreshed
                    # a create is sent again only after a documented refusal
                    and (request.operation is not Operation.CREATE or _protocol.create_refused(exc))
                ):
                    refreshed = True
                    attempt -= 1
                    http_log.info(
                        "%s %s %s attempt=%d: token rejected (%s); refreshing it once",
                        request.method,
                        request.path,
                        _ticket_label(request, None),
                        attempt + 1,
                        _reason(exc),
                    )
                    self._auth.invalidate(token)
                    continue
                await self._before_retry(request, exc, attempt, policy, deadline)

    async def _ready_to_send(
        self, request: Request, deadline: float | None
    ) -> tuple[str | None, float | None]:
        """The token and the seconds left for an attempt, after the shared pause."""
        if not await self.bus.wait_pause(deadline):
            raise RequestTimeoutError(
                f"{request.method} {request.path}: the server asked to pause requests "
                "until after this call's deadline",
                method=request.method,
                path=request.path,
                request_sent=False,
            )
        token = await self._token_within(request, deadline) if request.needs_auth else None
        limit = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if limit is not None and limit <= 0:
            raise RequestTimeoutError(
                f"{request.method} {request.path}: deadline reached before sending",
                method=request.method,
                path=request.path,
                request_sent=False,
            )
        return token, limit

    async def _before_retry(
        self,
        request: Request,
        exc: SkalaError,
        attempt: int,
        policy: RetryPolicy,
        deadline: float | None,
    ) -> None:
        """Sleep before the next attempt, or re-raise ``exc`` (saying why not) if none."""
        may_resend = (
            _protocol.create_may_be_resent
            if request.operation is Operation.CREATE
            else _protocol.read_may_be_resent
        )
        server_delay = _protocol.server_delay(exc)
        if server_delay is not None and isinstance(exc, ApiError):
            self.bus.pause(min(server_delay, policy.max_retry_after))
        why_not = _no_retry(request, exc, may_resend, attempt, policy, server_delay)
        delay = 0.0
        if why_not is None:
            delay = policy.delay(attempt, server_delay)
            if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
                why_not = "the call's deadline comes first"
        label = _ticket_label(request, None)
        if why_not is not None:
            http_log.info(
                "%s %s %s attempt=%d failed: %s; not retried: %s",
                *(request.method, request.path, label, attempt, _reason(exc), why_not),
            )
            raise exc
        http_log.info(
            "%s %s %s attempt=%d failed: %s; retry in %.2f s",
            *(request.method, request.path, label, attempt, _reason(exc), delay),
        )
        await asyncio.sleep(delay)

    async def _send_once(
        self,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        token: str | None,
        limit: float | None,
        progress: ProgressCallback | None,
        attempt: int,
    ) -> T:
        """One attempt through the transport (in a span when tracing), parsed."""
        if self._closed:
            raise RuntimeError("this client is closed; make a new one")
        sent = request if token is None else request.with_headers(_bearer(token))
        if self._tracing is None:
            raw = await self._transport.send(
                sent, time_limit=limit, timeouts=self._timeouts, progress=progress
            )
            result = parse(request, raw)
        else:
            result, raw = await self._send_traced(
                self._tracing, request, sent, parse, limit, progress, attempt
            )
        if http_log.isEnabledFor(_DEBUG):
            http_log.debug(
                "%s %s -> %d %s attempt=%d%s",
                request.method,
                request.path,
                raw.status,
                _ticket_label(request, result),
                attempt,
                f" request_id={raw.request_id}" if raw.request_id else "",
            )
        return result

    async def _send_traced(
        self,
        tracing: Tracing,
        request: Request,
        sent: Request,
        parse: Callable[[Request, RawResponse], T],
        limit: float | None,
        progress: ProgressCallback | None,
        attempt: int,
    ) -> tuple[T, RawResponse]:
        headers: dict[str, str] = {}
        with tracing.attempt(request, self.base_url, attempt, headers) as span:
            try:
                raw = await self._transport.send(
                    sent.with_headers(headers),
                    time_limit=limit,
                    timeouts=self._timeouts,
                    progress=progress,
                )
            except SkalaError as exc:
                tracing.attempt_failed(span, exc)
                raise
            tracing.answered(span, raw)
            return parse(request, raw), raw


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
