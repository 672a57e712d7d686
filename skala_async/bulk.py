"""Bulk submission: many drafts, bounded concurrency, a definite outcome for every input.

Every input ends in exactly one :class:`BulkOutcome`:

``created``
    the API accepted it (202); ``ticket_id`` is set. With ``wait=True`` the result also
    carries the final ticket (CREATED or FAILED), or the ``WaitTimeoutError``.
``rejected``
    it was refused without creating anything: a :class:`ValidationError` (nothing sent)
    or a 4xx answer in the API's error shape (unknown customer, 20061 ...).
``uncertain``
    the create may have happened (timeout after sending, 500/502/504, a dropped
    connection, a redirect or any other answer that is neither the 202 nor a documented
    refusal, or a previous run that died while sending it). It is never resent silently.
``failed``
    the server surely did not get it and retries ran out (429s, 503 with ``Retry-After``,
    connections refused), its body was cut off on this side (an attachment changed while
    it was sent: :class:`UploadAbortedError`), or it was not sent because the run hit an
    account-wide error first (authentication, 20061: every further create would fail the
    same way).

Drafts are consumed lazily, so an input of 100,000 rows never sits in memory. Workers
share the client's rate gate: a 429 or 503 with ``Retry-After`` pauses every request of the
client until that time, and the number of creates in flight is then halved and grows back
by about one per round trip (additive increase, multiplicative decrease).

With ``journal="run.sqlite"`` every step is recorded (see :mod:`skala_async._journal`):
running the same job again with the same journal does not resend inputs that were
accepted, reports them from the journal, and reports inputs that were in flight when the
process died as ``uncertain`` unless ``resend_uncertain=True``. One run at a time: a
second run on a journal in use raises :class:`~skala_async.errors.JournalInUseError` before
it sends anything, and each input is claimed in the journal (atomically, only if still
unsent) after its send slot is acquired and before it is sent, so no two runs can send it
twice. A journal that cannot be used raises :class:`~skala_async.errors.JournalError`
before the first create; one that is deleted, replaced or truncated during the run raises
:class:`~skala_async.errors.JournalLostError` once the creates in flight have ended, and
nothing more is sent.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import html
import importlib
import json
import logging
import os
import uuid
import warnings
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._backoff import check_timeout
from ._journal import Journal, JournalEntry
from ._limits import CREATE_PATH
from ._protocol import create_may_be_resent, create_refused
from ._waiting import DEFAULT_WAIT_TIMEOUT
from .errors import (
    ApiError,
    AuthenticationError,
    CreateOutcomeUnknownError,
    JournalError,
    SkalaError,
    SupportTicketsNotEnabledError,
    ValidationError,
)
from .models import Ticket, TicketDraft, TicketStatus

if TYPE_CHECKING:
    from ._tracing import Tracing
    from ._waiting import TicketHandle
    from .bus import TicketBus


class _Submitter(Protocol):
    """What a bulk run needs of a :class:`~skala_async.SkalaClient`."""

    @property
    def bus(self) -> TicketBus: ...

    async def submit(self, draft: TicketDraft) -> TicketHandle: ...

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> TicketHandle: ...


__all__ = ["BulkInputs", "BulkOutcome", "BulkReport", "BulkResult", "submit_many"]

BulkInputs = Iterable[TicketDraft | ValidationError] | AsyncIterable[TicketDraft | ValidationError]
"""What bulk submission takes: drafts, sync or async, consumed lazily. A
:class:`ValidationError` in the stream stands for an input its reader could not parse: it
is reported ``rejected`` with that error, in its place."""

log = logging.getLogger("skala_async.bulk")


class BulkOutcome(str, enum.Enum):
    """How one input of a bulk run ended (see :mod:`skala_async.bulk`)."""

    CREATED = "created"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class BulkResult:
    """The outcome of one input.

    Attributes:
        index: position of the input (0-based).
        key: the journal key: the input's ``reference``, or a hash of its content.
        reference: the caller's reference, if the draft had one.
        outcome: created, rejected, uncertain or failed.
        ticket_id: the ticket's id when created (also from a journal).
        ticket: the last state seen: PENDING from the 202, or the final ticket when waited.
        error: why it was not created, or why its wait ended without a final status.
        from_journal: reported from the journal of an earlier run, not sent again.
    """

    index: int
    key: str
    reference: str | None
    outcome: BulkOutcome
    ticket_id: uuid.UUID | None = None
    ticket: Ticket | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    from_journal: bool = False

    @property
    def issue_key(self) -> str | None:
        """The issue key, once known."""
        return self.ticket.issue_key if self.ticket is not None else None

    def as_row(self) -> dict[str, str]:
        """A flat row for CSV/JSON output."""
        return {
            "index": str(self.index),
            "reference": self.reference or "",
            "outcome": self.outcome.value,
            "ticket_id": str(self.ticket_id) if self.ticket_id else "",
            "status": self.ticket.status.value if self.ticket else "",
            "issue_key": self.issue_key or "",
            "error": _error_text(self.error),
            "from_journal": "yes" if self.from_journal else "",
        }

    def to_dict(self) -> dict[str, Any]:
        """One flat, JSON-ready record of this input (see :meth:`BulkReport.to_records`)."""
        ticket = self.ticket
        error = self.error
        code = getattr(error, "code", None)
        return {
            "index": self.index,
            "reference": self.reference,
            "outcome": self.outcome.value,
            "ticket_id": str(self.ticket_id) if self.ticket_id is not None else None,
            "status": ticket.status.value if ticket is not None else None,
            "issue_key": ticket.issue_key if ticket is not None else None,
            "error_type": type(error).__name__ if error is not None else None,
            "error_message": _error_message(error),
            "error_code": code if isinstance(code, (int, str)) else None,
            "from_journal": self.from_journal,
        }


#: The keys of :meth:`BulkResult.to_dict`, in order: the columns of ``to_dataframe()``.
RECORD_FIELDS = (
    "index",
    "reference",
    "outcome",
    "ticket_id",
    "status",
    "issue_key",
    "error_type",
    "error_message",
    "error_code",
    "from_journal",
)


def _error_message(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return " ".join(str(error).split()) or None


def _error_text(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).replace("\n", " ").strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.frozen
class BulkReport:
    """All results of a bulk run, in input order, with counts per outcome."""

    results: tuple[BulkResult, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Number of inputs per outcome (every outcome present, zeros included)."""
        counts = {o.value: 0 for o in BulkOutcome}
        for r in self.results:
            counts[r.outcome.value] += 1
        return counts

    def of(self, outcome: BulkOutcome | str) -> list[BulkResult]:
        """The results with one outcome."""
        wanted = BulkOutcome(outcome)
        return [r for r in self.results if r.outcome is wanted]

    @property
    def created(self) -> list[BulkResult]:
        """Inputs the API accepted."""
        return self.of(BulkOutcome.CREATED)

    @property
    def not_created(self) -> list[BulkResult]:
        """Inputs that were rejected, uncertain or failed."""
        return [r for r in self.results if r.outcome is not BulkOutcome.CREATED]

    def to_records(self) -> list[dict[str, Any]]:
        """One flat, JSON-ready dict per input, in input order.

        Keys (snake_case, as :meth:`Ticket.to_dict <skala_async.Ticket.to_dict>`):
        ``index`` (int), ``reference``, ``outcome`` (``created``, ``rejected``,
        ``uncertain``, ``failed``), ``ticket_id`` (string), ``status``, ``issue_key``,
        ``error_type`` (the exception's class name), ``error_message`` (its text on one
        line), ``error_code`` (the API's error code, such as ``20061``) and
        ``from_journal`` (bool). What is unknown is ``None``, never ``""``.
        ``json.dumps(report.to_records())`` works as is.
        """
        return [r.to_dict() for r in self.results]

    def to_dataframe(self) -> Any:
        """The records of :meth:`to_records` as a ``pandas.DataFrame`` indexed by ``index``.

        Needs pandas (``pip install pandas``); it is imported only when this is called.
        An empty report gives an empty frame with the same columns.

        Raises:
            ImportError: pandas is not installed.
        """
        try:
            pandas = importlib.import_module("pandas")
        except ImportError as exc:
            raise ImportError(
                "BulkReport.to_dataframe() needs pandas, which is not installed: "
                "pip install pandas (or use report.to_records(), a list of dicts)"
            ) from exc
        frame = pandas.DataFrame.from_records(self.to_records(), columns=list(RECORD_FIELDS))
        return frame.set_index("index")

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[BulkResult]:
        return iter(self.results)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"<BulkReport {len(self.results)} inputs: {counts}>"

    def _repr_html_(self) -> str:
        e = html.escape
        counts = "".join(
            f"<tr><th style='text-align:left'>{e(k)}</th><td>{v}</td></tr>"
            for k, v in self.counts.items()
        )
        rows = []
        for r in self.not_created[:50]:
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{e(v)}</td>"
                    for v in (
                        str(r.index),
                        r.reference or "",
                        r.outcome.value,
                        str(r.ticket_id or ""),
                        _error_text(r.error),
                    )
                )
                + "</tr>"
            )
        failed = ""
        if rows:
            more = len(self.not_created) - len(rows)
            failed = (
                "<table class='skala-bulk-failures'><tr><th>#</th><th>reference</th>"
                "<th>outcome</th><th>ticket id</th><th>error</th></tr>"
                + "".join(rows)
                + "</table>"
                + (f"<p>… and {more} more</p>" if more > 0 else "")
            )
        return (
            f"<div class='skala-bulk-report'><p>{len(self.results)} inputs</p>"
            f"<table class='skala-bulk-counts'>{counts}</table>{failed}</div>"
        )


# ------------------------------------------------------------------------------- helpers


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


async def _aiter(drafts: BulkInputs) -> AsyncIterator[object]:
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


class _Run:
    """One bulk run: workers pull drafts, results go to a queue the caller reads."""

    def __init__(
        self,
        client: _Submitter,
        drafts: BulkInputs,
        *,
        concurrency: int,
        journal: Journal | None,
        wait: bool,
        wait_timeout: float | None,
        resend_uncertain: bool,
    ) -> None:
        self.client = client
        self.source = _aiter(drafts)
        self.limit = _AdaptiveLimit(concurrency, client)
        self.workers = concurrency
        self.journal = journal
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.resend_uncertain = resend_uncertain
        self.results: asyncio.Queue[BulkResult | None] = asyncio.Queue(
            maxsize=max(64, 4 * concurrency)
        )
        self.next_index = 0
        self.pull_lock = asyncio.Lock()
        self.stop_error: BaseException | None = None
        self.occurrences: dict[str, int] = {}
        self.waits: set[asyncio.Task[None]] = set()
        self.exhausted = False
        self._cancelled = False
        #: A journal that can no longer be trusted or written: nothing more is sent.
        self.fatal: JournalError | None = None
        #: Created inputs whose wait is running, by wait task.
        self.waiting: dict[asyncio.Future[None], BulkResult] = {}
        #: Keys of this run's inputs so far (with a journal): one key, one ticket.
        self.claimed: set[str] = set()
        #: With tracing: the open skala.bulk.input span of each input, by index.
        # A SkalaClient's tracing, when on (a submitter of another kind has none).
        self.tracing: Tracing | None = getattr(client, "_tracing", None)
        self.spans: dict[int, Any] = {}
        self.emitted = 0
        #: The journal had no entry when the run began: an input's entry is not read before
        #: it is claimed (keys are unique within a run, and the claim, an INSERT only if
        #: there is no entry, fails if another run wrote one since).
        self.fresh = False
        #: Outcomes queued for the next commit whose results are reported once committed.
        self.reporting: set[asyncio.Future[int | JournalError]] = set()
        #: Results reported while the queue was full, waiting for room.
        self.puts: set[asyncio.Future[None]] = set()
        #: The run was cancelled or ended: results still being settled are not reported.
        self.ended = False

    async def pull(self) -> tuple[int, object] | None:
        async with self.pull_lock:
            if self.exhausted or self.fatal is not None:
                return None
            try:
                draft = await self.source.__anext__()
            except StopAsyncIteration:
                self.exhausted = True
                return None
            index = self.next_index
            self.next_index += 1
            return index, draft

    async def key_for(self, draft: TicketDraft) -> str:
        if draft.reference is not None:
            return f"ref:{draft.reference}"
        if self.journal is None:
            return ""
        base = await _content_key(draft)
        n = self.occurrences.get(base, 0)
        self.occurrences[base] = n + 1
        return base if n == 0 else f"{base}#{n}"

    async def worker(self) -> None:
        while (item := await self.pull()) is not None:
            index, draft = item
            if self.tracing is None:
                await self.one(index, draft)
                continue
            span = self.tracing.span("skala.bulk.input", {"skala.bulk.index": index})
            self.spans[index] = span
            # Current while the input is sent; a wait started for it inherits it too. The
            # span ends when the input's result is emitted.
            with self.tracing.use(span):
                await self.one(index, draft)

    def emitting(self, result: BulkResult) -> None:
        """Count ``result`` as emitted and end its span; the caller queues it."""
        self.emitted += 1
        if self.tracing is not None and (span := self.spans.pop(result.index, None)):
            if result.reference is not None:
                span.set_attribute("skala.bulk.reference", result.reference)
            if result.ticket_id is not None:
                span.set_attribute("skala.ticket_id", str(result.ticket_id))
            span.set_attribute("skala.bulk.from_journal", result.from_journal)
            self.tracing.ended(span, result.outcome.value, result.error)
            span.end()

    async def emit(self, result: BulkResult) -> None:
        self.emitting(result)
        await self.results.put(result)

    def report_when_settled(
        self,
        settling: asyncio.Future[int | JournalError],
        result: BulkResult,
        handle: TicketHandle | None,
    ) -> None:
        """Report ``result`` once its outcome is committed, without holding the worker: its
        next claim, made meanwhile, commits both in one transaction."""
        self.reporting.add(settling)
        settling.add_done_callback(functools.partial(self._settled_report, result, handle))

    def _settled_report(
        self,
        result: BulkResult,
        handle: TicketHandle | None,
        settling: asyncio.Future[int | JournalError],
    ) -> None:
        self.reporting.discard(settling)
        if self.ended:  # the run was cancelled: nobody reads results any more
            return
        outcome = settling.result()
        if isinstance(outcome, JournalError):  # the claim stays: a rerun reports it uncertain
            self.journal_failed(outcome)
        if result.outcome is BulkOutcome.CREATED and self.start_wait(result, handle):
            return
        self.emitting(result)
        try:
            self.results.put_nowait(result)
        except asyncio.QueueFull:  # filled since the worker looked: queue it when there is room
            put = asyncio.ensure_future(self.results.put(result))
            self.puts.add(put)
            put.add_done_callback(self.puts.discard)

    def journal_failed(self, exc: JournalError) -> None:
        """Stop sending: the journal cannot record what happens any more."""
        if self.fatal is None:
            self.fatal = exc
            log.info("bulk run stopped sending: %s", exc)

    def settle(self, result: BulkResult, claim: int) -> asyncio.Future[int | JournalError] | None:
        """Queue the record of how the send of a claimed input ended, for the next commit;
        the result is reported only once that is done (:meth:`report_when_settled`, or
        :meth:`settled` first when the results queue is full)."""
        if self.journal is None or not result.key:
            return None
        ticket = result.ticket
        return self.journal.settle_grouped(
            result.key,
            claim,
            result.outcome.value,
            ticket_id=str(result.ticket_id) if result.ticket_id else None,
            status=ticket.status.value if ticket else None,
            issue_key=ticket.issue_key if ticket else None,
            error=_error_text(result.error) or None,
        )

    async def settled(self, settling: asyncio.Future[int | JournalError]) -> None:
        outcome = await settling
        if isinstance(outcome, JournalError):  # the claim stays: a rerun reports it uncertain
            self.journal_failed(outcome)

    async def note_final(self, result: BulkResult) -> None:
        """Record the final status of a created input's ticket."""
        ticket = result.ticket
        if self.journal is None or not result.key or ticket is None or not ticket.is_final:
            return
        try:
            await self.journal.note_ticket_grouped(
                result.key, str(ticket.ticket_id), ticket.status.value, ticket.issue_key
            )
        except JournalError as exc:
            self.journal_failed(exc)

    def from_journal(
        self,
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

    async def one(self, index: int, draft: object) -> None:
        error: SkalaError
        if isinstance(draft, ValidationError):  # an input its reader could not parse
            await self.emit(BulkResult(index, "", None, BulkOutcome.REJECTED, error=draft))
            return
        if not isinstance(draft, TicketDraft):
            error = ValidationError(
                [f"input {index}: expected a TicketDraft, got {type(draft).__name__}"]
            )
            await self.emit(BulkResult(index, "", None, BulkOutcome.REJECTED, error=error))
            return
        key = await self.key_for(draft)
        ref = draft.reference
        if self.journal is not None and key:
            # Claimed before any other await: two inputs with one key never both send.
            if key in self.claimed:
                error = ValidationError(
                    [f"input {index}: same key as an earlier input ({key}); not sent twice"]
                )
                await self.emit(BulkResult(index, key, ref, BulkOutcome.REJECTED, error=error))
                return
            self.claimed.add(key)
        entry: JournalEntry | None = None
        if self.journal is not None and key and not self.fresh:
            try:
                entry = self.journal.get(key)
            except JournalError as exc:
                self.journal_failed(exc)
                return
        known = self.from_journal(index, key, ref, entry, takeover=self.resend_uncertain)
        if known is not None:
            await self.report(known)
            return
        if self.stop_error is not None:
            await self.emit(BulkResult(index, key, ref, BulkOutcome.FAILED, error=self.stop_error))
            return
        await self.send(index, key, draft, entry)

    def claim(
        self, index: int, key: str, ref: str | None, seen: JournalEntry | None
    ) -> tuple[int | None, BulkResult | None]:
        """Claim the input in the journal after its send slot was acquired.

        Returns ``(claim, None)`` to send it, or ``(None, result)`` when another run changed
        its entry since it was read (that run's outcome, never a second send), or
        ``(None, None)`` when the journal failed (nothing is sent any more). The claim is
        committed (with the outcomes queued by other workers) before this returns.
        """
        if self.journal is None or not key:
            return 0, None
        takeover = self.resend_uncertain
        try:
            while (claim := self.journal.claim(key, index, ref, seen, takeover=takeover)) is None:
                # Another run wrote this entry after we read it: it is theirs now. Never
                # take over what it may be sending; send again only what surely failed.
                seen = self.journal.get(key)
                takeover = False
                known = self.from_journal(index, key, ref, seen, takeover=False, raced=True)
                if known is not None:
                    return None, known
        except JournalError as exc:
            self.journal_failed(exc)
            return None, None
        return claim, None

    async def send(
        self, index: int, key: str, draft: TicketDraft, seen: JournalEntry | None
    ) -> None:
        ref = draft.reference
        handle: TicketHandle | None = None
        result: BulkResult | None
        settling: asyncio.Future[int | JournalError] | None = None
        await self.limit.acquire()
        try:
            if self.fatal is not None:
                return  # the run ends with the journal's error; this input was not sent
            if self.stop_error is not None:
                result = BulkResult(index, key, ref, BulkOutcome.FAILED, error=self.stop_error)
            else:
                claim, result = self.claim(index, key, ref, seen)
                if claim is not None:
                    try:
                        handle = await self.client.submit(draft)
                    except SkalaError as exc:
                        if _is_account_wide(exc) and self.stop_error is None:
                            self.stop_error = exc
                            log.warning("bulk run stopped sending: %s", exc)
                        result = BulkResult(index, key, ref, _outcome_for(exc), error=exc)
                    else:
                        result = BulkResult(
                            index, key, ref, BulkOutcome.CREATED, handle.ticket_id, handle.ticket
                        )
                    # Queued: committed with the next claim of any worker, or on its own.
                    settling = self.settle(result, claim)
        finally:
            await self.limit.release()
        if settling is not None:
            assert result is not None
            if not self.results.full():
                self.report_when_settled(settling, result, handle)
                return
            await self.settled(settling)  # recorded before it is reported
        if result is not None:
            await self.report(result, handle)

    async def report(self, result: BulkResult, handle: TicketHandle | None = None) -> None:
        if result.outcome is BulkOutcome.CREATED:
            await self.finish_created(result, handle)
        else:
            await self.emit(result)

    async def finish_created(self, result: BulkResult, handle: TicketHandle | None = None) -> None:
        if not self.start_wait(result, handle):
            await self.emit(result)

    def start_wait(self, result: BulkResult, handle: TicketHandle | None) -> bool:
        """Start the wait of a created input, when asked for; ``False``: report it now."""
        if not self.wait or (result.ticket is not None and result.ticket.is_final):
            return False
        if self.fatal is not None:  # no waits begin once the run is ending
            return False
        if handle is None:  # from the journal: a handle rebuilt from the id
            assert result.ticket_id is not None
            handle = self.client.ticket_handle(result.ticket_id)
            handle.ticket = result.ticket
        task = asyncio.ensure_future(self.wait_for(result, handle))
        self.waits.add(task)
        self.waiting[task] = result
        task.add_done_callback(self.waits.discard)
        task.add_done_callback(self.waiting.pop)
        return True

    async def wait_for(self, result: BulkResult, handle: TicketHandle) -> None:
        error: BaseException | None = None
        ticket: Ticket | None
        try:
            ticket = await handle.wait_until_created(self.wait_timeout, raise_on_failure=False)
        except SkalaError as exc:  # WaitTimeoutError, or the GETs were refused
            ticket = handle.ticket
            error = exc
        done = attrs.evolve(result, ticket=ticket, error=error)
        await self.note_final(done)
        await self.emit(done)

    async def end_waits(self) -> None:
        """The run is ending on a journal error: report the inputs still waiting as they
        are (created, final status unknown) rather than wait for them."""
        pending = dict(self.waiting)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task, result in pending.items():
            if task.cancelled():
                await self.emit(result)

    async def run(self) -> None:
        if self.tracing is None:
            await self._run()
            return
        with self.tracing.current("skala.bulk", {"skala.bulk.concurrency": self.workers}) as span:
            try:
                await self._run()
            finally:
                span.set_attribute("skala.bulk.inputs", self.emitted)
                for open_span in self.spans.values():  # inputs cut short by a cancel
                    self.tracing.ended(open_span, "cancelled")
                    open_span.end()
                self.spans.clear()

    async def _run(self) -> None:
        if self.journal is not None:
            try:
                self.fresh = self.journal.is_empty()
            except JournalError as exc:
                self.journal_failed(exc)
        workers = [asyncio.ensure_future(self.worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*workers)
            while self.reporting:  # the last outcomes: committed on the loop's next pass
                await asyncio.wait(list(self.reporting))
            while self.waits and self.fatal is None:
                done, _ = await asyncio.wait(list(self.waits), return_when=FIRST_COMPLETED)
                for task in done:
                    task.result()  # an unexpected error ends the run
            if self.fatal is not None:
                await self.end_waits()
            if self.journal is not None:
                try:
                    self.journal.check()  # lost after the last write: still lost
                except JournalError as exc:
                    self.journal_failed(exc)
            if self.fatal is not None:
                raise self.fatal
        except asyncio.CancelledError:
            # The reader is gone (it left the loop early, or was cancelled): nobody will
            # take an end marker from a full queue, so do not wait to put one.
            self._cancelled = True
            raise
        finally:
            self.ended = True
            for task in workers + list(self.waits):
                task.cancel()
            await asyncio.gather(*workers, *self.waits, return_exceptions=True)
            if self._cancelled:
                for put in self.puts:
                    put.cancel()
            await asyncio.gather(*self.puts, return_exceptions=True)
            if not self._cancelled:
                await self.results.put(None)


async def submit_many(
    client: _Submitter,
    drafts: BulkInputs,
    *,
    concurrency: int = 8,
    journal: str | os.PathLike[str] | Journal | None = None,
    wait: bool = False,
    wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    resend_uncertain: bool = False,
) -> AsyncIterator[BulkResult]:
    """Submit many drafts; yield a :class:`BulkResult` for each as it finishes.

    See :meth:`SkalaClient.submit_many` for the arguments. ``journal`` may also be a
    :class:`~skala_async._journal.Journal` already open (and locked) by the caller, who
    closes it.
    """
    concurrency = _check_concurrency(concurrency)
    check_timeout(wait_timeout, "wait_timeout")
    owned = journal is not None and not isinstance(journal, Journal)
    jr = journal if journal is None or isinstance(journal, Journal) else Journal(journal)
    try:
        run = _Run(
            client,
            drafts,
            concurrency=concurrency,
            journal=jr,
            wait=wait,
            wait_timeout=wait_timeout,
            resend_uncertain=resend_uncertain,
        )
        runner = asyncio.ensure_future(run.run())
    except BaseException:
        if owned and jr is not None:
            jr.close()  # opened here: never left to the garbage collector
        raise
    try:
        while (result := await run.results.get()) is not None:
            yield result
        await runner  # re-raise an unexpected error of the run itself
    finally:
        if not runner.done():
            runner.cancel()
            # gather, not a suppressed await: a cancel aimed at the caller still propagates
            await asyncio.gather(runner, return_exceptions=True)
        if owned and jr is not None:
            jr.close()


def report_of(results: Iterable[BulkResult]) -> BulkReport:
    """A :class:`BulkReport` of ``results`` in input order."""
    return BulkReport(tuple(sorted(results, key=lambda r: r.index)))


def check_progress(progress: object) -> bool:
    """Refuse a ``progress=`` that is not a bool (before anything is sent)."""
    if not isinstance(progress, bool):
        raise TypeError(
            f"progress must be True or False, got {type(progress).__name__}: it shows a "
            "progress bar when tqdm is installed"
        )
    return progress


def progress_bar(drafts: object) -> Any:
    """A ``tqdm.auto`` bar for a bulk run, or ``None`` when tqdm is not installed.

    ``tqdm.auto`` draws a widget in Jupyter (with ipywidgets) and text on stderr
    elsewhere. Its total is ``len(drafts)`` when the inputs have a length.
    """
    try:
        with warnings.catch_warnings():
            # In Jupyter without ipywidgets tqdm warns and falls back to a text bar.
            warnings.filterwarnings("ignore", message="IProgress not found")
            auto = importlib.import_module("tqdm.auto")
    except ImportError:
        log.debug("progress=True: tqdm is not installed, so no progress bar is shown")
        return None
    total = len(drafts) if isinstance(drafts, Sized) else None
    return auto.tqdm(total=total, desc="tickets", unit="input", dynamic_ncols=True)


async def collect(results: AsyncIterator[BulkResult], bar: Any = None) -> BulkReport:
    """Every result of a run in a :class:`BulkReport`, advancing ``bar`` as each ends."""
    collected: list[BulkResult] = []
    counts = {o.value: 0 for o in BulkOutcome}
    try:
        async for result in results:
            collected.append(result)
            if bar is not None:
                counts[result.outcome.value] += 1
                bar.set_postfix(counts, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report_of(collected)


def counts_text(counts: Mapping[str, int]) -> str:
    """``created 12 · rejected 1 · uncertain 0 · failed 0``."""
    return " · ".join(f"{k} {v}" for k, v in counts.items())
