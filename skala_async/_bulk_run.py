"""One bulk run (:func:`skala_async.bulk.submit_many`): workers that pull drafts, claim them
in the journal, send them, record and report their outcomes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any

import attrs

from ._bulk_results import BulkOutcome, BulkResult, _error_text
from ._bulk_steps import (
    CLAIM_BLOCK,
    Inputs,
    _AdaptiveLimit,
    _aiter,
    _Input,
    _is_account_wide,
    _Keys,
    _known_from_journal,
    _outcome_for,
    _Submitter,
    log,
)
from ._journal import Journal
from .errors import JournalError, SkalaError, ValidationError
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
        #: Inputs read and claimed a block at a time (one at a time from an asynchronous
        #: source: its next input may be long to come).
        self.block = 1 if isinstance(drafts, AsyncIterable) else min(concurrency, CLAIM_BLOCK)
        self.ready: collections.deque[_Input] = collections.deque()
        #: Inputs claimed and not sent yet, by index: given back if the run ends first.
        self.unsent: dict[int, _Input] = {}
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
        self.keys = _Keys(with_journal=journal is not None)
        self.waits: set[asyncio.Task[None]] = set()
        #: Waits that ended in an unexpected error, and what wakes the run when a wait ends
        #: (asyncio.wait over all the running waits, per ending, would be quadratic).
        self.waits_failed: list[asyncio.Task[None]] = []
        self.wake: asyncio.Future[None] | None = None
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

    async def next_input(self) -> _Input | None:
        """The next input, prepared: claimed in the journal (a block at a time), or known
        without a send (rejected, or from the journal). ``None``: no more."""
        async with self.pull_lock:
            if not self.ready and not self.exhausted and self.fatal is None:
                await self.fill()
            if self.fatal is not None or not self.ready:
                return None
            return self.ready.popleft()

    async def fill(self) -> None:
        """Read the next block of inputs (one from an asynchronous source, which may be slow
        to give the next), prepare them and claim in one transaction those to send."""
        block: list[_Input] = []
        while len(block) < self.block and not self.exhausted:
            try:
                draft = await self.source.__anext__()
            except StopAsyncIteration:
                self.exhausted = True
                break
            block.append(_Input(self.next_index, draft))
            self.next_index += 1
        await self.prepare(block)
        self.claim_block([i for i in block if i.result is None and i.claim is None])
        self.ready.extend(block)

    async def prepare(self, block: list[_Input]) -> None:
        """Give each input of ``block`` its key, and its result when it is known without a
        send: not a draft, a key already seen in this run, the journal's record."""
        drafts: list[_Input] = []
        for item in block:
            if isinstance(item.draft, ValidationError):  # an input its reader could not parse
                item.result = BulkResult(
                    item.index, "", None, BulkOutcome.REJECTED, error=item.draft
                )
            elif not isinstance(item.draft, TicketDraft):
                message = (
                    f"input {item.index}: expected a TicketDraft, got {type(item.draft).__name__}"
                )
                error = ValidationError([message])
                item.result = BulkResult(item.index, "", None, BulkOutcome.REJECTED, error=error)
            else:
                item.ref = item.draft.reference
                drafts.append(item)
        keys = await self.keys.of([i.draft for i in drafts])  # type: ignore[misc]
        for item, key in zip(drafts, keys, strict=True):
            item.key = key
            self.known(item)

    def known(self, item: _Input) -> None:
        """Set the result of ``item`` if it is known without a send; read its entry."""
        index, key, ref = item.index, item.key, item.ref
        if self.journal is None or not key:
            item.claim = 0  # nothing to claim: sent as it comes
        else:
            # Claimed before any other await: two inputs with one key never both send.
            if key in self.claimed:
                error = ValidationError(
                    [f"input {index}: same key as an earlier input ({key}); not sent twice"]
                )
                item.result = BulkResult(index, key, ref, BulkOutcome.REJECTED, error=error)
                return
            self.claimed.add(key)
            if not self.fresh:
                try:
                    item.seen = self.journal.get(key)
                except JournalError as exc:
                    self.journal_failed(exc)
                    return
        item.result = _known_from_journal(
            index, key, ref, item.seen, takeover=self.resend_uncertain
        )
        if item.result is None and self.stop_error is not None:
            item.result = BulkResult(index, key, ref, BulkOutcome.FAILED, error=self.stop_error)

    async def worker(self) -> None:
        while (item := await self.next_input()) is not None:
            if self.tracing is None:
                await self.one(item)
                continue
            span = self.tracing.span("skala.bulk.input", {"skala.bulk.index": item.index})
            self.spans[item.index] = span
            # Current while the input is sent; a wait started for it inherits it too. The
            # span ends when the input's result is emitted.
            with self.tracing.use(span):
                await self.one(item)

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
        if not settling.done() and self.journal is not None:
            self.journal.commit_queued()  # the reader is slow: no reason to wait for more
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

    async def one(self, item: _Input) -> None:
        if item.result is not None:
            await self.report(item.result)
        elif item.claim is not None:  # else the journal failed first: it is not sent
            await self.send(item)

    def claim_block(self, items: list[_Input]) -> None:
        """Claim ``items`` in the journal, in one transaction with the outcomes queued so
        far, before the first of them is sent. An input whose entry another run changed
        since it was read gets that run's outcome instead (never a second send); when the
        journal fails, none is claimed and nothing more is sent."""
        if not items or self.journal is None or self.fatal is not None:
            return
        takeover = self.resend_uncertain
        claims = [(i.key, i.index, i.ref, i.seen, takeover) for i in items]
        try:
            versions = self.journal.claim_many(claims)
            for item, version in zip(items, versions, strict=True):
                item.claim = version if version is not None else self.reclaim(item)
                if item.claim is not None:
                    self.unsent[item.index] = item
        except JournalError as exc:
            self.journal_failed(exc)

    def reclaim(self, item: _Input) -> int | None:
        """Another run wrote ``item``'s entry after we read it: it is theirs now. Never take
        over what it may be sending; claim again only what surely failed. The claim, or
        ``None`` with ``item.result`` set to that run's outcome."""
        assert self.journal is not None
        while True:
            item.seen = self.journal.get(item.key)
            item.result = _known_from_journal(
                item.index, item.key, item.ref, item.seen, takeover=False, raced=True
            )
            if item.result is not None:
                return None
            claim = self.journal.claim(item.key, item.index, item.ref, item.seen, takeover=False)
            if claim is not None:
                return claim

    def release_unsent(self) -> None:
        """Give back the claims of the inputs the run ended without sending."""
        unsent, self.unsent = list(self.unsent.values()), {}
        if self.journal is None or not unsent:
            return
        with contextlib.suppress(JournalError):  # failed: a rerun reports them uncertain
            self.journal.release([(i.key, i.claim or 0, i.seen) for i in unsent])

    async def send(self, item: _Input) -> None:
        assert item.claim is not None
        index, key, draft = item.index, item.key, item.draft
        assert isinstance(draft, TicketDraft)
        handle: TicketHandle | None = None
        result: BulkResult | None = None
        settling: asyncio.Future[int | JournalError] | None = None
        await self.limit.acquire()
        try:
            if self.fatal is not None:
                return  # the run ends with the journal's error; this input was not sent
            self.unsent.pop(index, None)
            result, handle = await self.submit_claimed(index, key, draft)
            # Queued: committed with the next block of claims, or on its own soon after.
            settling = self.settle(result, item.claim)
        finally:
            await self.limit.release()
        if settling is not None:
            if not self.results.full():
                self.report_when_settled(settling, result, handle)
                return
            await self.settled(settling)  # recorded before it is reported
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
        task.add_done_callback(self.wait_finished)
        return True

    def wait_finished(self, task: asyncio.Task[None]) -> None:
        self.waits.discard(task)
        self.waiting.pop(task, None)
        if task.cancelled() or task.exception() is not None:
            self.waits_failed.append(task)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

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
            if self.journal is not None:
                self.journal.commit_queued()  # the last outcomes: no claim will carry them
            while self.reporting:  # their reports: on the loop's next pass
                await asyncio.wait(list(self.reporting))
            loop = asyncio.get_running_loop()
            while True:
                for task in self.waits_failed:
                    task.result()  # an unexpected error ends the run
                if not self.waits or self.fatal is not None:
                    break
                self.wake = loop.create_future()
                await self.wake
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
            self.release_unsent()
            if self._cancelled:
                for put in self.puts:
                    put.cancel()
            await asyncio.gather(*self.puts, return_exceptions=True)
            if not self._cancelled:
                await self.results.put(None)
