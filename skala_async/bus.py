"""The bus: what the waits, the webhook receiver and bulk runs of a service share.

Everything that makes waiting cheap is news about tickets, and news is worth most when every
process of a service hears it: Ripio's webhook for a ticket reaches one process of
``gunicorn -w 4`` (or one replica behind a load balancer) while the wait for that ticket may
sit in another. The bus is the one place such news goes through. It is owned by neither the
client nor the webhook receiver: a :class:`~skala_async.SkalaClient` publishes what its GETs
learn and reads the shared pause; its :class:`~skala_async.TicketHandle` objects sleep on it;
a :class:`~skala_async.webhooks.WebhookReceiver` publishes verified events and claims each
(ticket, status) before calling ``on_event``; bulk runs read its pause count.

:class:`TicketBus` is the protocol, four things shared:

1. **ticket news**: :meth:`~TicketBus.publish` a state learned anywhere; every wait on that
   ticket wakes. Final states are kept (:meth:`~TicketBus.kept`), so a wait that begins later
   ends at once;
2. **webhook health**: whether verified webhooks arrive (:attr:`~TicketBus.webhooks_healthy`,
   then waits poll only as a slow fallback), and the evidence that they do not
   (:meth:`~TicketBus.check_missed`, :meth:`~TicketBus.webhook_refused`);
3. **webhook dedupe**: :meth:`~TicketBus.claim` a (ticket, status) before running the
   callback, :meth:`~TicketBus.settle` it after (a failed callback releases the claim, so a
   redelivery runs it again);
4. **the 429 pause**: :meth:`~TicketBus.pause` on a ``Retry-After``, :meth:`~TicketBus.
   wait_pause` before every request, :attr:`~TicketBus.pauses` for bulk concurrency.

:class:`LocalBus` is the in-process implementation, and each client makes its own unless
given one. ``skala_async.redis.RedisBus`` (extra ``[redis]``) shares the same view between
processes; it is a :class:`LocalBus` underneath, so when Redis is away every process carries
on with its own view. Another engine (PostgreSQL's ``LISTEN``/``NOTIFY`` with a table of
kept states, say) can implement the same protocol.

The synchronous methods never do I/O and never block: a bus that talks to a server sends in
the background. The asynchronous ones (:meth:`~TicketBus.kept`, :meth:`~TicketBus.
check_missed`, :meth:`~TicketBus.claim`, :meth:`~TicketBus.settle`) may ask the server, and
must answer from the local view, quickly, when it does not answer.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import uuid
from collections.abc import Callable
from typing import Protocol, Union, runtime_checkable

import attrs

from .models import Ticket

__all__ = ["Claim", "KeptTicket", "LocalBus", "SupportsBus", "TicketBus"]

log = logging.getLogger("skala_async.bus")

#: Final states kept in process memory for waits that begin after the news.
KEPT_IN_PROCESS = 10_000


class Claim(enum.Enum):
    """The answer to :meth:`TicketBus.claim`."""

    #: Run the callback now (then :meth:`~TicketBus.settle` the claim).
    RUN = "run"
    #: The callback already ran successfully for this (ticket, status): do not run it.
    DONE = "done"
    #: Another process is running it right now: ask the sender to deliver again later.
    BUSY = "busy"


@attrs.frozen
class KeptTicket:
    """A final state kept by the bus, and whether a verified webhook brought it."""

    ticket: Ticket
    webhook: bool


@runtime_checkable
class TicketBus(Protocol):
    """What the client, its waits, the webhook receiver and bulk runs share.

    Implementations: :class:`LocalBus` (one process) and ``skala_async.redis.RedisBus``.
    A bus is used from one event loop.
    """

    # -- ticket news ------------------------------------------------------------------------

    def publish(self, ticket: Ticket, *, webhook: bool = False) -> None:
        """A state learned here (``webhook``: from a verified webhook): wake every wait on
        the ticket, here and in every process sharing the bus; keep it if it is final.
        A webhook also tells that webhooks arrive (:attr:`webhooks_healthy`)."""

    async def kept(self, ticket_id: uuid.UUID) -> KeptTicket | None:
        """The final state kept for ``ticket_id``, if any process learned one."""

    def add_waiter(self, ticket_id: uuid.UUID, waiter: asyncio.Future[Ticket | None]) -> None:
        """Resolve ``waiter`` with the next news of ``ticket_id`` (``None``: look again at
        the poll policy, it changed), or at once with a final state already kept here."""

    def discard_waiter(self, ticket_id: uuid.UUID, waiter: asyncio.Future[Ticket | None]) -> None:
        """Forget a waiter added with :meth:`add_waiter` (resolved or not)."""

    def waiting(self, ticket_id: uuid.UUID | None = None) -> int:
        """Waiters in this process (on one ticket, or on all)."""

    @property
    def policy_generation(self) -> int:
        """Bumped each time waiters were resolved with ``None`` to look at the policy again."""

    # -- webhook health ---------------------------------------------------------------------

    @property
    def webhooks_healthy(self) -> bool:
        """Whether verified webhooks are believed to arrive (waits poll slowly meanwhile)."""

    def webhooks_expected(self) -> None:
        """A webhook receiver was set up in this process: trust webhooks until shown wrong."""

    async def check_missed(self, ticket_id: uuid.UUID) -> bool:
        """A wait's own GET found ``ticket_id`` final: unless a webhook brought that state
        anywhere, conclude that webhooks are not arriving (everywhere). True if missed."""

    def webhook_refused(self, why: str) -> None:
        """The receiver refused a delivery (``why``: bad signature, malformed, ...):
        webhooks are not working, so every wait leaves the slow fallback."""

    # -- webhook dedupe ---------------------------------------------------------------------

    async def claim(self, key: str) -> Claim:
        """Claim the callback of one (ticket, status), named by ``key``."""

    async def settle(self, key: str, delivered: bool) -> None:
        """End a claim: ``delivered`` marks it done for good, otherwise it is released."""

    # -- the 429 pause ----------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """A server asked to pause requests for ``seconds`` (``Retry-After``)."""

    async def wait_pause(self, deadline: float | None) -> bool:
        """Sleep out the pause; ``False`` at once if it would outlast ``deadline`` (loop time)."""

    @property
    def pauses(self) -> int:
        """How many pauses were asked for so far (bulk runs halve their concurrency on each)."""


class SupportsBus(Protocol):
    """Anything that has a bus (a :class:`~skala_async.SkalaClient`)."""

    @property
    def bus(self) -> TicketBus: ...


class LocalBus:
    """The in-process bus: news, health, dedupe and pause shared by what runs in one process.

    Args:
        kept: how many final states to remember for waits that begin later (least recently
            learned are forgotten first).
    """

    def __init__(self, *, kept: int = KEPT_IN_PROCESS) -> None:
        if not isinstance(kept, int) or kept < 0:
            raise ValueError(f"kept must be an integer >= 0, got {kept!r}")
        self._kept_size = kept
        # Each ticket maps to the one future waiting on it or, for several, a set of them.
        self._waiters: dict[uuid.UUID, _Waiters] = {}
        self._kept: collections.OrderedDict[uuid.UUID, KeptTicket] = collections.OrderedDict()
        self._healthy = False
        self._pause_until = 0.0
        self._pauses = 0
        #: News handed to this process's waits (published here or received).
        self.published = 0
        self._generation = 0
        #: Loop time of the last verified webhook news, in this process.
        self.last_webhook_at: float | None = None

    def __repr__(self) -> str:
        health = "webhooks arriving" if self._healthy else "polling"
        return f"<{type(self).__name__} {health}, {self.waiting()} waiting, {len(self._kept)} kept>"

    # -- ticket news ------------------------------------------------------------------------

    def publish(self, ticket: Ticket, *, webhook: bool = False) -> None:
        self._local_news(ticket, webhook)

    def _local_news(self, ticket: Ticket, webhook: bool) -> None:
        """Apply news to this process: keep a final state, note health, wake the waits."""
        if webhook:
            self.last_webhook_at = asyncio.get_running_loop().time()
            self._set_healthy(True)
        if ticket.is_final:
            self._keep(ticket, webhook)
        self.published += 1
        for fut in self._futures(ticket.ticket_id):
            if not fut.done():
                fut.set_result(ticket)

    def _keep(self, ticket: Ticket, webhook: bool) -> None:
        if self._kept_size == 0:
            return
        old = self._kept.get(ticket.ticket_id)
        # "A webhook brought it" is never taken back by a later GET of the same state.
        self._kept[ticket.ticket_id] = KeptTicket(ticket, webhook or bool(old and old.webhook))
        self._kept.move_to_end(ticket.ticket_id)
        while len(self._kept) > self._kept_size:
            self._kept.popitem(last=False)

    def kept_here(self, ticket_id: uuid.UUID) -> KeptTicket | None:
        """The final state kept in this process's memory, if any."""
        return self._kept.get(ticket_id)

    async def kept(self, ticket_id: uuid.UUID) -> KeptTicket | None:
        return self._kept.get(ticket_id)

    def add_waiter(self, ticket_id: uuid.UUID, waiter: asyncio.Future[Ticket | None]) -> None:
        current = self._waiters.get(ticket_id)
        if current is None:
            self._waiters[ticket_id] = waiter  # a lone waiter needs no set
        elif isinstance(current, set):
            current.add(waiter)
        else:
            self._waiters[ticket_id] = {current, waiter}
        # News that came while the wait was busy elsewhere (asking Redis, say) is not lost.
        known = self._kept.get(ticket_id)
        if known is not None and not waiter.done():
            waiter.set_result(known.ticket)

    def discard_waiter(self, ticket_id: uuid.UUID, waiter: asyncio.Future[Ticket | None]) -> None:
        current = self._waiters.get(ticket_id)
        if current is waiter:
            del self._waiters[ticket_id]
        elif isinstance(current, set):
            current.discard(waiter)
            if not current:
                del self._waiters[ticket_id]

    def _futures(self, ticket_id: uuid.UUID) -> list[asyncio.Future[Ticket | None]]:
        current = self._waiters.get(ticket_id)
        if current is None:
            return []
        return list(current) if isinstance(current, set) else [current]

    def waiting(self, ticket_id: uuid.UUID | None = None) -> int:
        if ticket_id is not None:
            return len(self._futures(ticket_id))
        return sum(len(f) if isinstance(f, set) else 1 for f in self._waiters.values())

    def close_waits(self, error: Callable[[], BaseException]) -> None:
        """Fail every waiter of this process with ``error()`` (the client that made this bus
        for itself was closed). The bus itself keeps working."""
        waiters, self._waiters = self._waiters, {}
        for current in waiters.values():
            for fut in current if isinstance(current, set) else (current,):
                if not fut.done():
                    fut.set_exception(error())

    @property
    def policy_generation(self) -> int:
        return self._generation

    def waiting_ids(self) -> list[uuid.UUID]:
        """The tickets that waits of this process sleep on."""
        return list(self._waiters)

    # -- webhook health ---------------------------------------------------------------------

    @property
    def webhooks_healthy(self) -> bool:
        return self._healthy

    def webhooks_expected(self) -> None:
        self._set_healthy(True, quiet=True)

    async def check_missed(self, ticket_id: uuid.UUID) -> bool:
        known = self._kept.get(ticket_id)
        if known is not None and known.webhook:
            return False  # a webhook did tell (it may have landed while the GET was out)
        self._set_healthy(False)
        return True

    def webhook_refused(self, why: str) -> None:
        self._set_healthy(False, why=why)

    def _set_healthy(
        self, healthy: bool, *, quiet: bool = False, why: str = "webhooks seem not to arrive"
    ) -> bool:
        """Change the health flag; True if it changed."""
        if healthy == self._healthy:
            return False
        self._healthy = healthy
        if healthy:
            if not quiet:
                log.info("webhooks arrive again; polling only as a slow fallback")
        else:
            log.info("%s; polling normally", why)
            self._policy_changed()
        return True

    def _policy_changed(self) -> None:
        """Wake every sleeping wait so that it reschedules under the current policy."""
        self._generation += 1
        for ticket_id in list(self._waiters):
            for fut in self._futures(ticket_id):
                if not fut.done():
                    fut.set_result(None)

    # -- webhook dedupe ---------------------------------------------------------------------

    async def claim(self, key: str) -> Claim:
        # In one process the receiver's own memory already de-duplicates deliveries.
        return Claim.RUN

    async def settle(self, key: str, delivered: bool) -> None:
        return None

    # -- the 429 pause ----------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        self._pause_for(seconds)

    def _pause_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._pause_until = max(self._pause_until, loop.time() + seconds)
        self._pauses += 1

    @property
    def pause_until(self) -> float:
        """Loop time until which requests are paused (in the past: no pause)."""
        return self._pause_until

    async def wait_pause(self, deadline: float | None) -> bool:
        loop = asyncio.get_running_loop()
        # A later 429 may push the end further while we sleep: check again on waking.
        while (delay := self._pause_until - loop.time()) > 0:
            if deadline is not None and self._pause_until > deadline:
                return False
            await asyncio.sleep(delay)
        return True

    @property
    def pauses(self) -> int:
        return self._pauses


_Waiters = Union["asyncio.Future[Ticket | None]", "set[asyncio.Future[Ticket | None]]"]
