"""One bulk run (:func:`skala_async.bulk.submit_many`): workers that pull drafts, claim them
in the journal, send them, record and report their outcomes."""

from __future__ import annotations

import asyncio
import functools
import uuid
from asyncio import FIRST_COMPLETED
from typing import TYPE_CHECKING, Any

import attrs

from ._bulk_results import BulkOutcome, BulkResult, _error_text
from ._bulk_steps import (
    Inputs,
    _AdaptiveLimit,
    _aiter,
    _content_key,
    _is_account_wide,
    _outcome_for,
    _Submitter,
    _ticket_from_entry,
    log,
)
from ._journal import Journal, JournalEntry
from .errors import CreateOutcomeUnknownError, JournalError, SkalaError, ValidationError
from .models import Ticket, TicketDraft

if TYPE_CHECKING:
    from ._tracing import Tracing
    from ._waiting import TicketHandle


class _Run:
    """One bulk run: workers pull drafts, results go to a queue the caller reads."""

    def __init__(
        self,
        client: _Submitter,
        drafts: Inputs,
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

    async def claim(
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
            claim = await self.journal.claim_grouped(key, index, ref, seen, takeover=takeover)
            while claim is None:
                # Another run wrote this entry after we read it: it is theirs now. Never
                # take over what it may be sending; send again only what surely failed.
                seen = self.journal.get(key)
                takeover = False
                known = self.from_journal(index, key, ref, seen, takeover=False, raced=True)
                if known is not None:
                    return None, known
                claim = self.journal.claim(key, index, ref, seen, takeover=False)
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
                claim, result = await self.claim(index, key, ref, seen)
                if claim is not None:
                    result, handle = await self.submit_claimed(index, key, draft)
                    # Queued: committed with the next claims of the workers, or on its own.
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

    async def submit_claimed(
        self, index: int, key: str, draft: TicketDraft
    ) -> tuple[BulkResult, TicketHandle | None]:
        """Send a claimed input; its result, and its handle when created."""
        ref = draft.reference
        if self.stop_error is not None:  # found by another worker while the claim committed
            return BulkResult(index, key, ref, BulkOutcome.FAILED, error=self.stop_error), None
        try:
            handle = await self.client.submit(draft)
        except SkalaError as exc:
            if _is_account_wide(exc) and self.stop_error is None:
                self.stop_error = exc
                log.warning("bulk run stopped sending: %s", exc)
            return BulkResult(index, key, ref, _outcome_for(exc), error=exc), None
        created = BulkResult(index, key, ref, BulkOutcome.CREATED, handle.ticket_id, handle.ticket)
        return created, handle

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
