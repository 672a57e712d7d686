"""Ticket handles: wait for a ticket's outcome by polling, woken early by any news.

A :class:`TicketHandle` drives its own polling only while it is awaited (there is no
background task: cancel the wait and nothing is left running). Between GETs it sleeps on a
future registered on the client's bus (:mod:`skala_async.bus`); anything that learns the
ticket's state (a webhook, another handle's GET, ``get_ticket``, another process sharing a
``RedisBus``) publishes it there, and every handle waiting on that ticket wakes at once.
The sleep itself is a ``loop.call_later`` timer, so 10,000 waiting handles are 10,000 timers
in the event loop's heap, not 10,000 tasks.

A sleeping wait costs little more than a bare ``while True: await asyncio.sleep(...)``
task: ``wait_until_created()`` hands back the polling coroutine itself (one frame, no
wrapper coroutine or async generator between the caller's task and the sleep), the sleep
is inline, and the bus holds a lone waiter's future without a container.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from ._backoff import PollPolicy, RetryPolicy, check_timeout
from ._resume_token import decode_resume_token, ticket_of, token_for
from ._wait_loop import Plan, outcome, told_by
from ._waits import Waits, brief, wake
from .errors import (
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    WaitTimeoutError,
)
from .models import Ticket, TicketStatus

if TYPE_CHECKING:
    from ._tracing import Tracing

__all__ = ["TicketHandle", "Waits"]

log = logging.getLogger("skala_async.wait")

#: Default overall deadline of a wait, in seconds.
DEFAULT_WAIT_TIMEOUT = 600.0


class TicketHandle:
    """A ticket that was accepted and may still be ``PENDING``.

    Made by :meth:`SkalaClient.create_ticket` (with the ``PENDING`` ticket of the 202) or
    by :meth:`SkalaClient.ticket_handle` (from an id saved earlier). The handle is cheap
    and holds no task; :meth:`wait_until_created` and :meth:`watch` poll while awaited.

    Attributes:
        ticket_id: the ticket's id: all you need to store to resume after a restart.
        ticket: the last state seen (``None`` for a handle rebuilt from an id until the
            first poll).
    """

    def __init__(
        self,
        waits: Waits,
        ticket_id: uuid.UUID,
        ticket: Ticket | None = None,
        *,
        accepted_at: float | None = None,
        accepted_wall: float | None = None,
    ) -> None:
        self._waits = waits
        self.ticket_id = ticket_id
        self.ticket = ticket
        #: Event-loop time the 202 arrived (``None`` for a rebuilt handle).
        self.accepted_at = accepted_at
        #: Wall-clock time (``time.time()``) the 202 arrived: what a resume token keeps,
        #: since event-loop time means nothing in another process.
        self.accepted_wall = (
            accepted_wall if accepted_wall is not None or accepted_at is None else time.time()
        )
        #: Event-loop time a final status was first seen.
        self.finished_at: float | None = None
        #: GETs this handle has made.
        self.polls = 0
        #: The schedule's latest point (seconds since acceptance), for a resume token.
        self._schedule: float | None = None
        #: Whether the next wait continues from ``_schedule`` (a resumed handle) instead
        #: of drawing a first poll.
        self._continue = False

    @property
    def status(self) -> TicketStatus | None:
        """Status last seen, or ``None`` if never seen."""
        return self.ticket.status if self.ticket is not None else None

    @property
    def issue_key(self) -> str | None:
        """Issue key last seen (set once ``CREATED``)."""
        return self.ticket.issue_key if self.ticket is not None else None

    @property
    def elapsed(self) -> float | None:
        """Seconds from acceptance to the final status, when both are known."""
        if self.accepted_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.accepted_at

    def __repr__(self) -> str:
        status = self.status.value if self.status is not None else "unknown"
        key = f" {self.issue_key}" if self.issue_key else ""
        return f"<TicketHandle {self.ticket_id} {status}{key}>"

    def _repr_html_(self) -> str:
        rows = [
            ("ticket id", str(self.ticket_id)),
            ("status", self.status.value if self.status is not None else "unknown"),
            ("issue key", self.issue_key or "—"),
        ]
        if self.elapsed is not None:
            rows.append(("seconds to outcome", f"{self.elapsed:.2f}"))
        rows.append(("polls", str(self.polls)))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='skala-ticket-handle'>{body}</table>"

    def done(self) -> bool:
        """Whether a final status (``CREATED`` or ``FAILED``) is known, without waiting.

        No request and no wait: it reads what this handle last saw and what the client
        already heard about the ticket in this process (a webhook, another handle's GET,
        news a ``RedisBus`` delivered). When the client knows, the handle takes that
        ticket (``handle.ticket``). ``False`` means "not known here yet", not "pending":
        :meth:`refresh` asks the API.
        """
        if self.ticket is not None and self.ticket.is_final:
            return True
        kept_here = getattr(self._waits.bus, "kept_here", None)
        known = kept_here(self.ticket_id) if callable(kept_here) else None
        if known is None or not known.ticket.is_final:
            return False
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:  # called between notebook cells, or from another thread
            now = None
        self.ticket = known.ticket
        if now is not None and self.finished_at is None:
            self.finished_at = now
        return True

    def resume_token(self) -> str:
        """An opaque, URL-safe string to continue this wait in another process.

        :meth:`SkalaClient.resume` turns it back into a handle whose wait continues the
        same schedule: it keeps the ticket id, the wall-clock time the ticket was
        accepted, the last state seen and the next point of the polling schedule. A wait
        resumed after a restart therefore does not start again from the first poll: it
        polls at once if the scheduled point passed meanwhile, else at that point, and
        then on the schedule of a ticket that old. A final state in the token ends the
        resumed wait without a request.

        It holds no secret (no token, no credentials), only the above; it is versioned,
        usually about 150 characters and never over 4,096. Store it where you would store
        the id. A status or issue key too long or odd for a token (over 64 or 256
        characters, or not printable) is left out: the resumed wait then asks at once.
        """
        return token_for(self.ticket_id, self.ticket, self.accepted_wall, self._schedule)

    @classmethod
    def _resumed(cls, waits: Waits, token: str) -> TicketHandle:
        """The handle a resume token describes (see :meth:`SkalaClient.resume`)."""
        fields = decode_resume_token(token)
        ticket_id = uuid.UUID(fields["id"])
        ticket = ticket_of(ticket_id, fields)
        handle = cls(waits, ticket_id, ticket, accepted_wall=fields["at"])
        handle._schedule = fields["next"]
        handle._continue = fields["next"] is not None
        return handle

    def _see(self, ticket: Ticket, now: float) -> bool:
        """Record ``ticket``; True if the status changed."""
        changed = self.ticket is None or self.ticket.status != ticket.status
        self.ticket = ticket
        if ticket.is_final and self.finished_at is None:
            self.finished_at = now
        return changed

    async def refresh(self) -> Ticket:
        """One GET now; returns (and remembers) the ticket's current state."""
        ticket = await self._waits.get(self.ticket_id)
        self.polls += 1
        self._see(ticket, asyncio.get_running_loop().time())
        return ticket

    # Over 60 lines: the docstring is the reference of how a wait polls.
    def wait_until_created(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        raise_on_failure: bool = True,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> Coroutine[Any, Any, Ticket]:
        """Wait until the ticket is ``CREATED`` (or ``FAILED``) and return it.

        Polls the retrieve endpoint on the client's :class:`PollPolicy` (first GET 1 to 2 s
        after acceptance, at a random point so that waits created together do not poll
        together, then every ``max(1 s, 25 % of the time waited)``, at most 30 s apart, on
        a schedule anchored at acceptance), and wakes at once when the client learns the
        state any other way (a verified webhook, another handle's poll). A ``Retry-After``
        from the server moves the next GET to a later point, within the policy's bounds.
        Transient failures of a GET (5xx, 429, timeouts, dropped connections) are retried
        and never end the wait before its deadline; 401/403/404 end it at once.

        Webhook first: on a client with a webhook handler mounted
        (:meth:`SkalaClient.webhook_handler`), a verified event ends the wait the moment it
        arrives (also one that arrived before the wait began), and polling runs only as a
        slow fallback (the client's ``webhook_poll`` policy). If a wait learns the outcome
        by its own GET instead, or the receiver refuses a delivery (bad signature, stale,
        malformed, too large), webhooks are taken to have stopped: every wait asleep on the
        slow policy is rescheduled on the normal one at once, until the next verified
        webhook.

        A wait never times out without asking: whatever the schedule, its last GET starts
        shortly before the deadline (1 s before it, or a quarter of ``timeout`` if that is
        shorter), with its own timeout cut to the deadline, and ``WaitTimeoutError`` comes
        only after it. A server's ``Retry-After`` that outlasts the deadline is honoured:
        that last GET is then not sent.

        Args:
            timeout: overall deadline in seconds (default 600). Each GET's own timeout is cut
                to what is left, and no sleep runs past it. ``None`` waits forever.
            raise_on_failure: on ``FAILED`` raise :class:`TicketFailedError` (default) or
                return the FAILED ticket.
            poll: a :class:`PollPolicy` for this wait, instead of the client's.
            retry: a :class:`RetryPolicy` for each GET of this wait, instead of the
                client's.

        Raises:
            TicketFailedError: the ticket ended ``FAILED`` (and ``raise_on_failure``).
            WaitTimeoutError: the deadline passed; it carries the last ticket seen.
            ApiError: the API refused the GET (not found, authentication, 20061).

        Cancelling the awaiting task stops the polling and leaves nothing running; the
        ticket itself is unaffected (the API has no cancel). Closing the client ends a
        sleeping wait at once with a ``RuntimeError``.

        This returns the polling coroutine itself (no wrapper): ``await`` it, or give it
        to ``asyncio.create_task``.
        """
        policy = self._waits.retry(retry)
        tracing = self._waits.tracing
        if tracing is not None:
            return self._traced_wait(tracing, timeout, poll, raise_on_failure, policy)
        # The polling coroutine itself, not a coroutine awaiting it: a sleeping wait is
        # then one frame in the caller's task.
        return self._run(timeout, poll, raise_on_failure, None, policy)

    async def _traced_wait(
        self,
        tracing: Tracing,
        timeout: float | None,
        poll: PollPolicy | None,
        raise_on_failure: bool,
        retry: RetryPolicy,
    ) -> Ticket:
        """A wait inside a ``skala.wait`` span: GETs made and how it ended."""
        polls = self.polls
        how: dict[str, str] = {}
        with tracing.current("skala.wait", {"skala.ticket_id": str(self.ticket_id)}) as span:
            try:
                ticket = await self._run(timeout, poll, False, None, retry, how)
            except BaseException as exc:
                ended = "timeout" if isinstance(exc, WaitTimeoutError) else "error"
                if isinstance(exc, asyncio.CancelledError):
                    ended = "cancelled"
                tracing.ended(span, ended, exc)
                raise
            finally:
                span.set_attribute("skala.wait.gets", self.polls - polls)
            span.set_attribute("skala.ticket.status", ticket.status.value)
            tracing.ended(span, how.get("by", "known"))
        return outcome(ticket, raise_on_failure)

    def watch(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[Ticket]:
        """Yield the ticket each time its status changes, ending after a final status.

        The first item is the current state (fetched if the handle has none). A FAILED
        ticket is yielded, not raised. Same polling, deadline, ``retry`` and errors as
        :meth:`wait_until_created`. The deadline runs while your loop body runs too; if it
        passed while you held an item, the watch asks once more (a GET of at most 1 s)
        before it raises :class:`WaitTimeoutError`.
        """
        return self._changes(timeout, poll, self._waits.retry(retry))

    async def _changes(
        self, timeout: float | None, poll: PollPolicy | None, retry: RetryPolicy
    ) -> AsyncIterator[Ticket]:
        loop = asyncio.get_running_loop()
        plan = await self._plan(timeout, poll, loop)
        if self.ticket is not None:
            plan.shown = self.ticket.status
            yield self.ticket
            if self.ticket.is_final:
                return
        while True:
            ticket = await self._run(timeout, poll, False, plan, retry)
            if ticket.status != plan.shown:
                plan.shown = ticket.status
                yield ticket
            if ticket.is_final:
                return

    async def _plan(
        self, timeout: float | None, poll: PollPolicy | None, loop: asyncio.AbstractEventLoop
    ) -> Plan:
        check_timeout(timeout)
        waits = self._waits
        if self.ticket is None or not self.ticket.is_final:
            # News that came before this wait began (a webhook, another process's GET)
            # already told the outcome.
            known = await waits.bus.kept(self.ticket_id)
            if known is not None:
                self._see(known.ticket, loop.time())
        now = loop.time()
        if self.accepted_at is None and self.accepted_wall is not None:
            # Resumed in this process: acceptance on this loop's clock (never later than
            # now, whatever the two machines' clocks say).
            self.accepted_at = now - max(0.0, time.time() - self.accepted_wall)
        # Slow fallback polling while webhooks arrive (read again after each poll).
        policy = poll or waits.policy()
        start = self.accepted_at if self.accepted_at is not None else now
        # The schedule, in seconds since acceptance, with this wait's random phase (or
        # where a resumed wait's schedule stood).
        if self._continue and self._schedule is not None:
            scheduled = self._schedule
            self._continue = False
        else:
            scheduled = policy.first_poll()
        self._schedule = scheduled
        # A handle rebuilt from an id knows nothing yet: ask at once. A fresh one waits.
        next_poll = start + scheduled if self.ticket is not None else now
        return Plan.until(timeout, now, start, scheduled, next_poll)

    async def _run(
        self,
        timeout: float | None,
        poll: PollPolicy | None,
        raise_on_failure: bool,
        watch: Plan | None,
        retry: RetryPolicy,
        how: dict[str, str] | None = None,
    ) -> Ticket:
        """The polling loop, each GET retried on ``retry``.

        Without ``watch`` (a wait), it runs until a final status and returns (or raises)
        the outcome. With ``watch`` (the state of a :meth:`watch`), it returns the first
        ticket whose status differs from the one last shown, or that is final. ``how``
        (for a span) gets ``by``: what brought the last news (``webhook``, ``news`` from
        another request, this wait's ``poll``).
        """
        waits = self._waits
        bus = waits.bus
        loop = asyncio.get_running_loop()
        plan = watch if watch is not None else await self._plan(timeout, poll, loop)
        if watch is None and (ticket := self.ticket) is not None and ticket.is_final:
            if how is not None:
                how["by"] = await told_by(bus, ticket, "known")  # before this wait began
            return outcome(ticket, raise_on_failure)
        while True:
            now = loop.time()
            due, last = self._due(plan, now, timeout)  # raises WaitTimeoutError
            if now < due:
                wake_at = due if plan.deadline is None else min(due, plan.deadline)
                generation = bus.policy_generation
                # The sleep, inline (a sleeping wait stays one frame in the caller's
                # task): a future woken by its timer or by news from the bus.
                fut: asyncio.Future[Ticket | None] = loop.create_future()
                waits.add(self.ticket_id, fut)  # raises if the client was closed
                timer = loop.call_later(wake_at - now, wake, fut)
                try:
                    news = await fut
                finally:
                    timer.cancel()
                    waits.discard(self.ticket_id, fut)
                if news is None:
                    if bus.policy_generation != generation:
                        # Webhooks stopped: leave the slow fallback schedule at once.
                        plan.reschedule(poll or waits.policy(), loop.time())
                        self._schedule = plan.scheduled
                    continue
                self._see(news, loop.time())
                if how is not None:
                    how["by"] = await told_by(bus, news, "news")
                ticket = news
            else:
                ticket = await self._poll_due(plan, now, last, poll, retry, how)
            if ticket is None:
                continue
            if watch is None:
                if ticket.is_final:
                    return outcome(ticket, raise_on_failure)
            elif ticket.is_final or ticket.status != plan.shown:
                return ticket

    def _due(self, plan: Plan, now: float, timeout: float | None) -> tuple[float, bool]:
        """When the next GET is due, and whether it is the last one before the deadline;
        ``WaitTimeoutError`` once the deadline passed and the last poll was made."""
        deadline = plan.deadline
        last_call = None if deadline is None else deadline - plan.lead
        asked_at = plan.asked_at
        asked_last = last_call is None or (asked_at is not None and asked_at >= last_call)
        if deadline is not None and now >= deadline and asked_last:
            raise WaitTimeoutError(
                self.ticket_id, timeout or 0.0, self.ticket, resume_token=self.resume_token()
            )
        due = plan.next_poll
        if not asked_last and last_call is not None:
            due = min(due, last_call)  # and once more just before the deadline
        return due, not asked_last and last_call is not None and now >= last_call

    async def _poll_due(
        self,
        plan: Plan,
        now: float,
        last: bool,
        poll: PollPolicy | None,
        retry: RetryPolicy,
        how: dict[str, str] | None,
    ) -> Ticket | None:
        """A poll is due: the state the bus keeps, else one GET (``None`` if it failed
        transiently). ``last``: the wait's last poll before its deadline."""
        waits = self._waits
        bus = waits.bus
        loop = asyncio.get_running_loop()
        if (known := await bus.kept(self.ticket_id)) is not None:
            # The bus keeps a final state: news published where this wait did not hear it
            # (a lost message, a bus that was away) costs no GET.
            self._see(known.ticket, loop.time())
            if how is not None:
                how["by"] = "webhook" if known.webhook else "news"
            return known.ticket
        retry_after: float | None = None
        before = self.ticket
        plan.asked_at = now
        deadline = plan.deadline
        # Past the deadline without having asked (a watch() whose consumer held on to an
        # item until then): one short last GET rather than a timeout without asking.
        get_deadline = deadline if deadline is None or now < deadline else now + plan.lead
        ticket: Ticket | None
        try:
            # The last poll does not queue behind other waits' polls for a poll slot: it
            # has to be sent before the deadline.
            ticket = await waits.fetch(self.ticket_id, get_deadline, not last, retry)
        except (TransportError, ServerError, RateLimitedError, UnexpectedResponseError) as exc:
            if isinstance(exc, TransportError) and not exc.retryable:
                raise  # a certificate that does not verify: polling cannot fix it
            # Transient (the GET already used its own retries): keep waiting.
            retry_after = getattr(exc, "retry_after", None)
            log.debug("poll failed ticket=%s (%s); will poll again", self.ticket_id, brief(exc))
            ticket = None
        else:
            self.polls += 1
            if how is not None:
                how["by"] = "poll"
            if ticket.is_final and before is not None and not before.is_final:
                # A webhook, if any were coming, would have told (the bus knows whether
                # one landed anywhere while this GET was in flight).
                await bus.check_missed(self.ticket_id)
            self._see(ticket, loop.time())
        plan.advance(poll or waits.policy(), loop.time(), retry_after)
        self._schedule = plan.scheduled
        return ticket
