"""What ticket handles need from the client that made them: its bus, its GETs, its
policies, and the set of its sleeping waits (so that closing it ends them)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._backoff import PollPolicy, RetryPolicy
from .bus import LocalBus, TicketBus
from .models import Ticket

if TYPE_CHECKING:
    from ._tracing import Tracing

__all__ = ["Waits", "brief", "wake"]


class Waits:
    """What handles need from the client that made them.

    Attributes:
        bus: where news of tickets arrives and the webhook health is read.
        fetch: one GET of a wait (``ticket_id``, loop-time ``deadline``, whether to take
            one of the client's poll slots, the :class:`RetryPolicy` of its attempts); it
            publishes what it learns on the bus.
        get: one GET now (:meth:`TicketHandle.refresh`).
        policy: the client's poll policy right now (slow while webhooks arrive).
        retry: the retry policy of a wait given its ``retry=`` argument (the client's when
            ``None``).
        tracing: the client's tracing, if on (a wait is then a ``skala.wait`` span).
        own_bus: ``bus`` again if the client made it for itself (``None``: the bus is the
            caller's, perhaps shared with other clients or processes, and the client keeps
            a set of its own sleeping waits, so that closing it ends those and no one
            else's).
    """

    __slots__ = (
        "_own_bus",
        "_root",
        "_sleeping",
        "bus",
        "closed",
        "fetch",
        "get",
        "policy",
        "retry",
        "tracing",
    )

    def __init__(
        self,
        *,
        bus: TicketBus,
        fetch: Callable[[uuid.UUID, float | None, bool, RetryPolicy], Awaitable[Ticket]],
        get: Callable[[uuid.UUID], Awaitable[Ticket]],
        policy: Callable[[], PollPolicy],
        retry: Callable[[RetryPolicy | None], RetryPolicy],
        tracing: Tracing | None,
        own_bus: LocalBus | None,
    ) -> None:
        self.bus = bus
        self.fetch = fetch
        self.get = get
        self.policy = policy
        self.retry = retry
        self.tracing = tracing
        self.closed = False
        self._own_bus = own_bus
        # With a bus of its own the client ends its waits through the bus (no set: a
        # sleeping wait costs one entry in the bus's map and nothing here).
        self._sleeping: set[asyncio.Future[Ticket | None]] | None = (
            None if own_bus is not None else set()
        )
        #: The client's own ``Waits`` when this one belongs to a ``with_options()`` view.
        self._root = self

    def view(
        self,
        *,
        fetch: Callable[[uuid.UUID, float | None, bool, RetryPolicy], Awaitable[Ticket]],
        get: Callable[[uuid.UUID], Awaitable[Ticket]],
        policy: Callable[[], PollPolicy],
        retry: Callable[[RetryPolicy | None], RetryPolicy],
    ) -> Waits:
        """The same waits seen from a ``with_options()`` view: the view's options, this
        client's bus, sleeping waits and closed state."""
        other = Waits(
            bus=self.bus,
            fetch=fetch,
            get=get,
            policy=policy,
            retry=retry,
            tracing=self.tracing,
            own_bus=self._own_bus,
        )
        other._sleeping = self._sleeping
        other._root = self._root
        return other

    def add(self, ticket_id: uuid.UUID, fut: asyncio.Future[Ticket | None]) -> None:
        """Register a sleeping wait's future (on the bus, and here for a shared bus)."""
        if self._root.closed:
            raise _closed_error()
        self.bus.add_waiter(ticket_id, fut)
        if self._sleeping is not None:
            self._sleeping.add(fut)

    def discard(self, ticket_id: uuid.UUID, fut: asyncio.Future[Ticket | None]) -> None:
        self.bus.discard_waiter(ticket_id, fut)
        if self._sleeping is not None:
            self._sleeping.discard(fut)

    def close(self) -> None:
        """End every sleeping wait of this client with a ``RuntimeError``; later waits
        raise it instead of sleeping. A shared bus stays open for everyone else."""
        self._root.closed = True
        if self._own_bus is not None:
            self._own_bus.close_waits(_closed_error)
        # Emptied in place: with_options() views share the set.
        sleeping = list(self._sleeping or ())
        if self._sleeping is not None:
            self._sleeping.clear()
        for fut in sleeping:
            if not fut.done():
                fut.set_exception(_closed_error())


def _closed_error() -> RuntimeError:
    return RuntimeError("the wait did not finish: the client was closed meanwhile")


def brief(exc: BaseException) -> str:
    """An error in one line for a log, with the server's request id when there is one."""
    rid = getattr(exc, "request_id", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if not rid or rid in text else f"{text} (request id {rid})"


def wake(fut: asyncio.Future[Ticket | None]) -> None:
    if not fut.done():
        fut.set_result(None)
