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

import attrs

from ._bulk_results import BulkOutcome, BulkResult
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


#: Inputs claimed in one transaction, at most (a process killed mid-run leaves up to this
#: many claimed and not yet sent, which a rerun reports ``uncertain``).
CLAIM_BLOCK = 16


@attrs.define(slots=True, eq=False)
class _Input:
    """One input of a run as a worker gets it: claimed (``claim``: its version, 0 with no
    journal) or with its ``result`` known without a send."""

    index: int
    draft: object
    key: str = ""
    ref: str | None = None
    seen: JournalEntry | None = None
    claim: int | None = None
    result: BulkResult | None = None


class _Keys:
    """The journal keys of a run's drafts: ``ref:`` and the reference, or the content hash
    (``#n`` added for its n-th repeat in the run); no key without a journal or reference."""

    def __init__(self, *, with_journal: bool) -> None:
        self.with_journal = with_journal
        self.occurrences: dict[str, int] = {}

    async def of(self, drafts: list[TicketDraft]) -> list[str]:
        """The keys of ``drafts``, in their order."""
        hashed = [d for d in drafts if d.reference is None and self.with_journal]
        if len(hashed) > 1 and any(d.files for d in hashed):  # file hashes: in threads, at once
            bases = iter(await asyncio.gather(*map(_content_key, hashed)))
        else:
            bases = iter([await _content_key(d) for d in hashed])
        keys = []
        for draft in drafts:
            if draft.reference is not None or not self.with_journal:
                keys.append("" if draft.reference is None else f"ref:{draft.reference}")
                continue
            base = next(bases)
            n = self.occurrences.get(base, 0)
            self.occurrences[base] = n + 1
            keys.append(base if n == 0 else f"{base}#{n}")
        return keys


def _known_from_journal(
    index: int,
    key: str,
    ref: str | None,
    entry: JournalEntry | None,
    *,
    takeover: bool,
    raced: bool = False,
) -> BulkResult | None:
    """What the journal says of the input, or ``None``: it may be sent. ``raced``: the
    entry was written by another run after this one first read it."""
    if entry is None:
        return None
    if entry.state == "created" and entry.ticket_id:
        ticket = _ticket_from_entry(entry)
        return BulkResult(
            index,
            key,
            ref,
            BulkOutcome.CREATED,
            uuid.UUID(entry.ticket_id),
            ticket,
            from_journal=True,
        )
    if entry.state in ("rejected", "failed") or takeover:
        return None
    if raced and entry.state == "sending":
        message = (
            "another run was sending this input at the same time; its outcome is in that "
            "run's results (not sent twice)"
        )
    else:
        message = (
            "an earlier run may have created this ticket (it was being sent when that "
            "run ended, or the answer was ambiguous); pass resend_uncertain=True to send "
            "it again"
        )
    error = CreateOutcomeUnknownError(
        message, cause=RuntimeError(entry.error or "interrupted while sending")
    )
    return BulkResult(index, key, ref, BulkOutcome.UNCERTAIN, error=error, from_journal=True)
