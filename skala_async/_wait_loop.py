"""The pieces of a wait's polling loop: where it stands in its schedule, and how it ends."""

from __future__ import annotations

from ._backoff import PollPolicy
from .bus import TicketBus
from .errors import TicketFailedError
from .models import Ticket, TicketStatus

__all__ = ["LAST_POLL_LEAD", "LAST_POLL_SHARE", "Plan", "outcome", "told_by"]

#: A wait never times out without asking: its last poll starts at most this many seconds
#: (and at most ``LAST_POLL_SHARE`` of the timeout) before the deadline, whatever the
#: schedule says, and its own timeout is cut to the deadline.
LAST_POLL_LEAD = 1.0
LAST_POLL_SHARE = 0.25


async def told_by(bus: TicketBus, ticket: Ticket, otherwise: str) -> str:
    """For a span: ``webhook`` if a verified webhook brought this final state, else
    ``otherwise`` (asked only of traced waits: it may be a round trip to the bus)."""
    if ticket.is_final:
        known = await bus.kept(ticket.ticket_id)
        if known is not None and known.webhook and known.ticket.status is ticket.status:
            return "webhook"
    return otherwise


def outcome(ticket: Ticket, raise_on_failure: bool) -> Ticket:
    if ticket.status is TicketStatus.FAILED and raise_on_failure:
        raise TicketFailedError(ticket)
    return ticket


class Plan:
    """Where a wait stands in its schedule (times are event-loop seconds)."""

    __slots__ = ("asked_at", "deadline", "lead", "next_poll", "scheduled", "shown", "start")

    def __init__(
        self,
        deadline: float | None,
        lead: float,
        start: float,
        scheduled: float,
        next_poll: float,
    ) -> None:
        self.deadline = deadline
        #: The last poll starts at least this long before the deadline.
        self.lead = lead
        #: When this wait's latest GET began (the last poll is the one at ``deadline -
        #: lead`` or later).
        self.asked_at: float | None = None
        #: Acceptance of the ticket: the schedule's origin.
        self.start = start
        #: The schedule's current point, in seconds since ``start``.
        self.scheduled = scheduled
        self.next_poll = next_poll
        #: The status a watch last yielded.
        self.shown: TicketStatus | None = None

    @classmethod
    def until(
        cls, timeout: float | None, now: float, start: float, scheduled: float, next_poll: float
    ) -> Plan:
        """The plan of a wait of ``timeout`` seconds from ``now``: its last poll (no
        ``WaitTimeoutError`` unless a GET of the wait began at ``deadline - lead`` or
        later) leads the deadline by ``LAST_POLL_LEAD``, or ``LAST_POLL_SHARE`` of a
        shorter timeout."""
        deadline = None if timeout is None else now + timeout
        lead = 0.0 if timeout is None else min(LAST_POLL_LEAD, LAST_POLL_SHARE * timeout)
        return cls(deadline, lead, start, scheduled, next_poll)

    def advance(self, policy: PollPolicy, now: float, retry_after: float | None) -> None:
        """After a poll: the schedule's next point after ``now``."""
        self.scheduled = policy.next_poll(self.scheduled, now - self.start, retry_after)
        self.next_poll = self.start + self.scheduled

    def reschedule(self, policy: PollPolicy, now: float) -> None:
        """The client's policy changed: poll no later than ``policy`` would from now."""
        fresh = policy.next_poll(policy.first_poll(), now - self.start)
        self.scheduled = min(self.next_poll - self.start, fresh)
        self.next_poll = self.start + self.scheduled
