"""Ticket handles: wait for a ticket's outcome by polling, woken early by any news.

A :class:`TicketHandle` drives its own polling only while it is awaited (there is no
background task: cancel the wait and nothing is left running). Between GETs it sleeps on a
future registered on the client's bus (:mod:`skala_async.bus`); anything that learns the
ticket's state (a webhook, another handle's GET, ``get_ticket``, another process sharing a
``RedisBus``) publishes it there, and every handle
waiting on that ticket wakes at once. The sleep itself is a ``loop.call_later`` timer, so
10,000 waiting handles are 10,000 timers in the event loop's heap, not 10,000 tasks.
"""

from __future__ import annotations

import asyncio
import html
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from ._backoff import PollPolicy, check_timeout
from .bus import TicketBus
from .errors import (
    RateLimitedError,
    ServerError,
    TicketFailedError,
    TransportError,
    UnexpectedResponseError,
    WaitTimeoutError,
)
from .models import Ticket, TicketStatus

__all__ = ["TicketHandle", "Waits"]

log = logging.getLogger("skala_async.wait")

#: Default overall deadline of a wait, in seconds.
DEFAULT_WAIT_TIMEOUT = 600.0
#: A wait never times out without asking: its last poll starts at most this many seconds
#: (and at most ``LAST_POLL_SHARE`` of the timeout) before the deadline, whatever the
#: schedule says, and its own timeout is cut to the deadline.
LAST_POLL_LEAD = 1.0
LAST_POLL_SHARE = 0.25


@attrs.frozen
class Waits:
    """What handles need from the client that made them.

    Attributes:
        bus: where news of tickets arrives and the webhook health is read.
        fetch: one GET of a wait (``ticket_id``, loop-time ``deadline``, whether to take
            one of the client's poll slots); it publishes what it learns on the bus.
        get: one GET now (:meth:`TicketHandle.refresh`).
        policy: the client's poll policy right now (slow while webhooks arrive).
    """

    bus: TicketBus
    fetch: Callable[[uuid.UUID, float | None, bool], Awaitable[Ticket]]
    get: Callable[[uuid.UUID], Awaitable[Ticket]]
    policy: Callable[[], PollPolicy]


def _wake(fut: asyncio.Future[Ticket | None]) -> None:
    if not fut.done():
        fut.set_result(None)


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
    ) -> None:
        self._waits = waits
        self.ticket_id = ticket_id
        self.ticket = ticket
        #: Event-loop time the 202 arrived (``None`` for a rebuilt handle).
        self.accepted_at = accepted_at
        #: Event-loop time a final status was first seen.
        self.finished_at: float | None = None
        #: GETs this handle has made.
        self.polls = 0

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

    async def wait_until_created(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        raise_on_failure: bool = True,
        poll: PollPolicy | None = None,
    ) -> Ticket:
        """Wait until the ticket is ``CREATED`` (or ``FAILED``) and return it.

        Polls the retrieve endpoint on the client's :class:`PollPolicy` (first GET 1 s after
        acceptance, then every ``max(1 s, 25 % of the time waited)`` ±10 %, at most 30 s
        apart), and wakes at once when the client learns the state any other way (a
        verified webhook, another handle's poll). A ``Retry-After`` from the server lengthens
        the next gap, within the policy's bounds. Transient failures of a GET (5xx, 429,
        timeouts, dropped connections) are retried and never end the wait before its
        deadline; 401/403/404 end it at once.

        Webhook first: on a client with a webhook handler mounted
        (:meth:`SkalaClient.webhook_handler`), a verified event ends the wait the moment it
        arrives (also one that arrived before the wait began), and polling runs only as a
        slow fallback (the client's ``webhook_poll``: first GET after 60 s, then every 30
        to 120 s). If a wait learns the outcome by its own GET instead, or the receiver
        refuses a delivery (bad signature, stale, malformed, too large), webhooks are
        taken to have stopped: every wait asleep on the slow policy is rescheduled on the
        normal one at once, until the next verified webhook.

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

        Raises:
            TicketFailedError: the ticket ended ``FAILED`` (and ``raise_on_failure``).
            WaitTimeoutError: the deadline passed; it carries the last ticket seen.
            ApiError: the API refused the GET (not found, authentication, 20061).

        Cancelling the awaiting task stops the polling and leaves nothing running; the
        ticket itself is unaffected (the API has no cancel).
        """
        ticket: Ticket | None = self.ticket
        async for ticket in self._changes(timeout, poll, yield_current=False):
            if ticket.is_final:
                break
        assert ticket is not None  # _changes ends only after yielding a final ticket
        if ticket.status is TicketStatus.FAILED and raise_on_failure:
            raise TicketFailedError(ticket)
        return ticket

    def watch(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        poll: PollPolicy | None = None,
    ) -> AsyncIterator[Ticket]:
        """Yield the ticket each time its status changes, ending after a final status.

        The first item is the current state (fetched if the handle has none). A FAILED
        ticket is yielded, not raised. Same polling, deadline and errors as
        :meth:`wait_until_created`. The deadline runs while your loop body runs too; if it
        passed while you held an item, the watch asks once more (a GET of at most 1 s)
        before it raises :class:`WaitTimeoutError`.
        """
        return self._changes(timeout, poll, yield_current=True)

    async def _changes(
        self, timeout: float | None, poll: PollPolicy | None, *, yield_current: bool
    ) -> AsyncIterator[Ticket]:
        check_timeout(timeout)
        waits = self._waits
        bus = waits.bus
        loop = asyncio.get_running_loop()
        if self.ticket is None or not self.ticket.is_final:
            # News that came before this wait began (a webhook, another process's GET)
            # already told the outcome.
            known = await bus.kept(self.ticket_id)
            if known is not None:
                self._see(known.ticket, loop.time())
        now = loop.time()
        # Slow fallback polling while webhooks arrive (read again before each sleep).
        policy = poll or waits.policy()
        deadline = None if timeout is None else now + timeout
        # The last poll: no WaitTimeoutError unless a GET of this wait began at last_call
        # or later.
        lead = 0.0 if timeout is None else min(LAST_POLL_LEAD, LAST_POLL_SHARE * timeout)
        last_call = None if deadline is None else deadline - lead
        asked_at: float | None = None
        start = self.accepted_at if self.accepted_at is not None else now
        # A handle rebuilt from an id knows nothing yet: ask at once. A fresh one waits.
        next_poll = start + policy.first_delay if self.ticket is not None else now
        # What this generator last yielded: another wait on the same handle may record a
        # change first, and this one must still report it.
        shown: TicketStatus | None = None
        if yield_current and self.ticket is not None:
            shown = self.ticket.status
            yield self.ticket
            if self.ticket.is_final:
                return
        elif self.ticket is not None and self.ticket.is_final:
            yield self.ticket
            return
        while True:
            now = loop.time()
            asked_last = last_call is None or (asked_at is not None and asked_at >= last_call)
            if deadline is not None and now >= deadline and asked_last:
                raise WaitTimeoutError(self.ticket_id, timeout or 0.0, self.ticket)
            due = next_poll
            if not asked_last and last_call is not None:
                due = min(due, last_call)  # and once more just before the deadline
            if now < due:
                wake_at = due if deadline is None else min(due, deadline)
                generation = bus.policy_generation
                news = await self._sleep(loop, bus, wake_at - now)
                if news is None and bus.policy_generation != generation:
                    # Webhooks stopped: leave the slow fallback schedule at once.
                    policy = poll or waits.policy()
                    now = loop.time()
                    next_poll = min(next_poll, now + policy.interval(now - start))
                    continue
                if news is not None:
                    self._see(news, loop.time())
                    if news.status != shown:
                        shown = news.status
                        yield news
                    if news.is_final:
                        return
                continue
            # A poll is due. First what the bus keeps: news published where this process
            # did not hear it (a lost message, a bus that was away) costs no GET.
            known = await bus.kept(self.ticket_id)
            if known is not None:
                self._see(known.ticket, loop.time())
                if known.ticket.status != shown:
                    shown = known.ticket.status
                    yield known.ticket
                return  # only final states are kept
            retry_after: float | None = None
            before = self.ticket
            # The last poll does not queue behind other waits' polls for a poll slot: it
            # has to be sent before the deadline.
            last = not asked_last and last_call is not None and now >= last_call
            asked_at = now
            # Past the deadline without having asked (a watch() whose consumer held on to
            # an item until then): one short last GET rather than a timeout without asking.
            get_deadline = deadline if deadline is None or now < deadline else now + lead
            try:
                ticket = await waits.fetch(self.ticket_id, get_deadline, not last)
            except (TransportError, ServerError, RateLimitedError, UnexpectedResponseError) as exc:
                if isinstance(exc, TransportError) and not exc.retryable:
                    raise  # a certificate that does not verify: polling cannot fix it
                # Transient (the GET already used its own retries): keep waiting.
                retry_after = getattr(exc, "retry_after", None)
                log.debug("poll of %s failed (%s); will poll again", self.ticket_id, exc)
            else:
                self.polls += 1
                if ticket.is_final and before is not None and not before.is_final:
                    # A webhook, if any were coming, would have told (the bus knows whether
                    # one landed anywhere while this GET was in flight).
                    await bus.check_missed(self.ticket_id)
                self._see(ticket, loop.time())
                if ticket.status != shown:
                    shown = ticket.status
                    yield ticket
                if ticket.is_final:
                    return
            now = loop.time()
            policy = poll or waits.policy()
            next_poll = now + policy.interval(now - start, retry_after)

    async def _sleep(
        self, loop: asyncio.AbstractEventLoop, bus: TicketBus, seconds: float
    ) -> Ticket | None:
        fut: asyncio.Future[Ticket | None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, fut)
        bus.add_waiter(self.ticket_id, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            bus.discard_waiter(self.ticket_id, fut)
