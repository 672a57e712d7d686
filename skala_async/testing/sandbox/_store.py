"""The sandbox's state: customers, tickets, and their processing from PENDING to an outcome."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Callable, Mapping, Sequence

import attrs

from skala_async import _cancelsafe
from skala_async.testing.sandbox._values import (
    Delay,
    Outcome,
    RecordedFile,
    SandboxTicket,
    normalise_uuid,
    validate_delay,
)

__all__ = ["Customer", "TicketStore", "wait_idle"]

_FIRST_ISSUE_NUMBER = 1000


@attrs.define
class Customer:
    email: str | None
    active: bool = True


class TicketStore:
    """Customers and tickets; a ticket leaves ``PENDING`` after ``processing_delay`` (or at
    :meth:`complete`) and ``on_finished`` hears of it (the webhook sender)."""

    def __init__(
        self,
        processing_delay: Delay,
        outcome: Outcome,
        on_finished: Callable[[SandboxTicket], None],
    ) -> None:
        self.processing_delay = processing_delay
        self.outcome: Outcome = outcome
        #: Every ticket created, by ticket id.
        self.tickets: dict[str, SandboxTicket] = {}
        self.customers: dict[str, Customer] = {}
        self._on_finished = on_finished
        self._outcomes: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending = 0
        self._issue_numbers = itertools.count(_FIRST_ISSUE_NUMBER)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None

    @property
    def processing_delay(self) -> Delay:
        return self._processing_delay

    @processing_delay.setter
    def processing_delay(self, value: Delay) -> None:
        self._processing_delay = validate_delay(value)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._idle = asyncio.Event()
        self._update_idle()

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # -- customers ---------------------------------------------------------------------------

    def add_customer(self, email: str | None, customer_id: str | None) -> str:
        if customer_id is None:
            cid = str(uuid.uuid4())
        else:
            normalised = normalise_uuid(customer_id)
            if normalised is None:
                raise ValueError(f"customer_id must be a UUID: {customer_id!r}")
            cid = normalised
        self.customers[cid] = Customer(email=email)
        return cid

    def customer(self, customer_id: str) -> Customer | None:
        """The customer with this id (any spelling of the UUID), or None."""
        cid = normalise_uuid(customer_id)
        return None if cid is None else self.customers.get(cid)

    def ticket(self, ticket_id: str) -> SandboxTicket | None:
        """The ticket with this id (any spelling of the UUID), or None."""
        tid = normalise_uuid(ticket_id)
        return None if tid is None else self.tickets.get(tid)

    # -- tickets -----------------------------------------------------------------------------

    def create(
        self, customer_id: str, fields: Mapping[str, str], files: Sequence[RecordedFile]
    ) -> SandboxTicket:
        """Store a new PENDING ticket and schedule its outcome."""
        assert self._loop is not None
        ticket_id = str(uuid.uuid4())
        outcome = self.outcome
        # The outcome in effect when the ticket is created decides how it ends.
        status = outcome(ticket_id, dict(fields)) if callable(outcome) else outcome
        ticket = SandboxTicket(
            ticket_id=ticket_id,
            customer_id=customer_id,
            summary=fields["summary"],
            description=fields["description"],
            files=tuple(files),
            status="PENDING",
            issue_key=None,
            created_at=self._loop.time(),
        )
        self.tickets[ticket_id] = ticket
        self._outcomes[ticket_id] = str(status)
        self._pending += 1
        self._update_idle()
        self._schedule(ticket_id)
        return ticket

    def complete(self, ticket_id: str, status: str) -> SandboxTicket:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise KeyError(ticket_id)
        if ticket.status != "PENDING":
            raise ValueError(f"ticket {ticket_id} is already {ticket.status}")
        return self._finish(ticket_id, status)

    async def wait_until_processed(self, deadline: float | None) -> None:
        await wait_idle(self._idle, deadline, lambda: f"{self._pending} ticket(s) still PENDING")

    def _update_idle(self) -> None:
        if self._idle is not None:
            if self._pending:
                self._idle.clear()
            else:
                self._idle.set()

    def _schedule(self, ticket_id: str) -> None:
        delay = self._processing_delay
        if delay is None or self._loop is None:
            return
        seconds = random.uniform(*delay) if isinstance(delay, tuple) else delay
        self._timers[ticket_id] = self._loop.call_later(seconds, self._on_due, ticket_id)

    def _on_due(self, ticket_id: str) -> None:
        self._timers.pop(ticket_id, None)
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.status != "PENDING":
            return
        self._finish(ticket_id, self._outcomes.get(ticket_id, "CREATED"))

    def _finish(self, ticket_id: str, status: str) -> SandboxTicket:
        handle = self._timers.pop(ticket_id, None)
        if handle is not None:
            handle.cancel()
        old = self.tickets[ticket_id]
        issue_key = f"SUP-{next(self._issue_numbers)}" if status == "CREATED" else None
        now = self._loop.time() if self._loop is not None else None
        ticket = attrs.evolve(old, status=status, issue_key=issue_key, finished_at=now)
        self.tickets[ticket_id] = ticket
        self._outcomes.pop(ticket_id, None)
        if old.status == "PENDING" and status != "PENDING":
            self._pending -= 1
            self._update_idle()
            self._on_finished(ticket)
        return ticket


async def wait_idle(
    idle: asyncio.Event | None, deadline: float | None, what: Callable[[], str]
) -> None:
    """Wait for ``idle`` until ``deadline``; TimeoutError says ``what()`` is still going on."""
    if idle is None:
        raise RuntimeError("the sandbox is not running")
    try:
        await _cancelsafe.within(idle.wait(), deadline)
    except TimeoutError:
        raise TimeoutError(what()) from None
