"""The parts of a bulk run that hold no state of the run: the submitter it drives, the
adaptive limit of creates in flight, the outcome of an error, the content key of a draft."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Protocol

from ._bulk_results import BulkOutcome
from ._journal import JournalEntry
from ._limits import CREATE_PATH
from ._protocol import create_may_be_resent, create_refused
from .errors import (
    ApiError,
    AuthenticationError,
    CreateOutcomeUnknownError,
    SupportTicketsNotEnabledError,
    ValidationError,
)
from .models import Ticket, TicketDraft, TicketStatus

if TYPE_CHECKING:
    from ._waiting import TicketHandle
    from .bus import TicketBus

log = logging.getLogger("skala_async.bulk")

#: What bulk submission takes (:data:`skala_async.bulk.BulkInputs`).
Inputs = Iterable[TicketDraft | ValidationError] | AsyncIterable[TicketDraft | ValidationError]


class _Submitter(Protocol):
    """What a bulk run needs of a :class:`~skala_async.SkalaClient`."""

    @property
    def bus(self) -> TicketBus: ...

    async def submit(self, draft: TicketDraft) -> TicketHandle: ...

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> TicketHandle: ...


def _check_concurrency(concurrency: object) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    return concurrency


class _AdaptiveLimit:
    """Creates in flight: halved when the client is told to back off, then +1 per round."""

    def __init__(self, maximum: int, client: _Submitter) -> None:
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self._client = client
        self._seen_pauses = client.bus.pauses
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            self.in_flight += 1

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            pauses = self._client.bus.pauses
            if pauses != self._seen_pauses:
                self._seen_pauses = pauses
                self.limit = max(1.0, self.limit / 2)
                log.debug("server asked to back off: at most %d creates in flight", self.limit)
            else:
                self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._cond.notify_all()


def _outcome_for(error: BaseException) -> BulkOutcome:
    """The outcome of an input whose create raised ``error``; the client's rule decides.

    ``rejected`` only for a documented refusal of the create (a 4xx in the API's error
    shape) or invalid input; ``failed`` when it surely was not created and may be sent
    again (429 or 503 + ``Retry-After`` until retries ran out, a connection that never
    opened, a body cut off on our side, a token request that failed first); anything
    else about the create is ``uncertain``.
    """
    if isinstance(error, CreateOutcomeUnknownError):
        return BulkOutcome.UNCERTAIN
    if isinstance(error, ValidationError):
        return BulkOutcome.REJECTED
    if getattr(error, "path", None) == CREATE_PATH:
        if not create_refused(error):  # the client raises these as outcome-unknown already
            return BulkOutcome.UNCERTAIN
        if isinstance(error, ApiError) and not create_may_be_resent(error):
            return BulkOutcome.REJECTED
    return BulkOutcome.FAILED


def _is_account_wide(error: BaseException) -> bool:
    return isinstance(error, (SupportTicketsNotEnabledError, AuthenticationError))


async def _content_key(draft: TicketDraft) -> str:
    """A stable hash of what the draft would send (files by name, size and content)."""
    files = []
    for att in draft.files:
        try:
            digest = await asyncio.to_thread(att.sha256) if att.problem is None else att.problem
        except (OSError, ValueError) as exc:  # gone or changed since: validation reports it
            digest = f"unreadable: {exc}"
        files.append([att.filename, att.size, digest])
    payload = json.dumps(
        [str(draft.customer_id).strip().lower(), draft.summary, draft.description, files],
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


async def _aiter(drafts: Inputs) -> AsyncIterator[object]:
    if isinstance(drafts, AsyncIterable):
        async for d in drafts:
            yield d
    else:
        for d in drafts:
            yield d


def _ticket_from_entry(entry: JournalEntry) -> Ticket | None:
    if entry.ticket_id is None or entry.status is None:
        return None
    return Ticket(uuid.UUID(entry.ticket_id), TicketStatus(entry.status), entry.issue_key)


# ------------------------------------------------------------------------------- the run
