"""The ``bulk`` run: journal, submission, results, summary."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from skala_async import bulk
from skala_async._journal import Journal
from skala_async.bulk import (
    BulkOutcome,
    BulkReport,
    BulkResult,
    counts_text,
)
from skala_async.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    _Failure,
    _make_client,
)
from skala_async.errors import JournalError, JournalInUseError, JournalLostError, ValidationError
from skala_async.models import TicketDraft

from ._constants import EXIT_CANNOT_WRITE, EXIT_JOURNAL_IN_USE, EXIT_JOURNAL_LOST
from ._input import InputError, _is_jsonl, check_header, count_rows, detect_delimiter, read_inputs
from ._progress import BulkProgress, Tally, _Watched
from ._results import _default_uncertain, _lost_message, _Results, check_outputs
from ._uncertain import _finish_uncertain, _Uncertain
from ._validate import _validate_only

if TYPE_CHECKING:
    from skala_async.cli._common import _Run
    from skala_async.client import SkalaClient


@attrs.frozen
class _Files:
    """What the checks settled before anything is opened or sent."""

    input: Path
    jsonl: bool
    delimiter: str
    total: int
    journal: Path | None
    results: Path
    uncertain: Path


async def cmd_bulk(run: _Run) -> int:
    """Run the ``bulk`` subcommand."""
    args = run.args
    path, jsonl, delimiter, total = _check_input(args)
    if args.validate_only:  # before the credentials: checking a file needs none
        return _validate_only(run, path, args.format, delimiter)
    files = _check_outputs(args, path, jsonl, delimiter, total)
    client = _make_client(args)  # credentials are checked before any file is touched
    tally = Tally(total, wait=args.wait)
    progress = BulkProgress(sys.stderr, total, tally=tally) if _show_progress(args) else None
    watched = _Watched(client, tally, progress.refresh if progress is not None else _nothing)
    uncertain = _Uncertain(watched)
    run.interrupted_note = tally.text
    sending = _Sending(files, watched, uncertain, tally, progress)
    try:
        await sending.run(args, client)
    except BaseException:
        # However the run ended, list what is uncertain so far (never hiding why it ended).
        items = uncertain.dated(files.journal)
        if items:
            with contextlib.suppress(_Failure):
                run.say(_finish_uncertain(files.uncertain, items, complete=False)[1] or "")
        raise
    written, note = _finish_uncertain(
        files.uncertain, uncertain.dated(files.journal), complete=True
    )
    return _summarize(
        run, files, bulk.report_of(sending.collected), sending.unfinished, written, note
    )


def _check_input(args: argparse.Namespace) -> tuple[Path, bool, str, int]:
    """The input file, whether it is JSON Lines, its delimiter and its number of rows."""
    path = Path(args.input)
    if not path.is_file():
        raise _Failure(EXIT_USAGE, f"input file not found: {args.input}")
    if args.concurrency < 1:
        raise _Failure(EXIT_USAGE, f"--concurrency must be >= 1, got {args.concurrency}")
    jsonl = _is_jsonl(path, args.format)
    if jsonl and args.delimiter is not None:
        raise _Failure(EXIT_USAGE, "--delimiter applies to CSV input, not JSON Lines")
    try:
        delimiter = args.delimiter or ("," if jsonl else detect_delimiter(path))
        check_header(path, args.format, delimiter)
        total = count_rows(path, args.format, delimiter)
    except InputError as exc:
        raise _Failure(EXIT_USAGE, str(exc)) from exc
    return path, jsonl, delimiter, total


def _check_outputs(
    args: argparse.Namespace, path: Path, jsonl: bool, delimiter: str, total: int
) -> _Files:
    """The journal, results and uncertain files, refused before anything is sent."""
    journal_path = None if args.no_journal else Path(args.journal or f"{path}.journal.sqlite")
    results_path = Path(args.results or f"{path}.results.csv")
    uncertain_path = Path(args.uncertain_file or _default_uncertain(path, results_path))
    problem = check_outputs(path, journal_path, results_path, uncertain_path)
    if problem is None and args.uncertain_file and not uncertain_path.parent.is_dir():
        # (The default sits beside the results file, whose own folder is checked when it
        # is opened.)
        problem = (
            f"--uncertain-file {uncertain_path}: the folder {uncertain_path.parent} is missing"
        )
    if problem is not None:
        raise _Failure(EXIT_USAGE, problem)
    return _Files(path, jsonl, delimiter, total, journal_path, results_path, uncertain_path)


def _show_progress(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress``, else whether stderr is a terminal."""
    if args.progress is not None:
        return bool(args.progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@attrs.define
class _Sending:
    """One run's submission: the journal and results file it opens, what came back."""

    files: _Files
    watched: _Watched
    uncertain: _Uncertain
    tally: Tally
    progress: BulkProgress | None
    journal: Journal | None = None
    results: _Results | None = None
    collected: list[BulkResult] = attrs.Factory(list)
    unfinished: int = 0

    def inputs(self, args: argparse.Namespace) -> Iterator[TicketDraft | ValidationError]:
        """The drafts (or row problems) read lazily, each noted before it is sent."""
        path = self.files.input
        try:
            for index, (where, item) in enumerate(
                read_inputs(path, args.format, self.files.delimiter)
            ):
                self.uncertain.given(index, where, item)
                yield item
        except UnicodeDecodeError as exc:
            raise _Failure(EXIT_USAGE, f"{path.name}: not UTF-8 text ({exc.reason})") from exc

    async def run(self, args: argparse.Namespace, client: SkalaClient) -> None:
        """Open the journal, then the results file, and send; every failure is a ``_Failure``."""
        try:
            self.open()
            assert self.results is not None
            async with client:
                async for result in bulk.submit_many(  # looked up at call time
                    self.watched,
                    self.inputs(args),
                    concurrency=args.concurrency,
                    journal=self.journal,
                    wait=args.wait,
                    wait_timeout=args.wait_timeout,
                    resend_uncertain=args.resend_uncertain,
                ):
                    self.record(result)
            self.check_results_kept()
        except JournalLostError as exc:
            message = _lost_message(exc, self.files.results, self.collected)
            raise _Failure(EXIT_JOURNAL_LOST, message) from None
        except JournalError as exc:
            raise _Failure(
                EXIT_CANNOT_WRITE,
                f"{exc}; stopped sending. Inputs already sent are recorded (those whose "
                "answer could not be recorded are reported uncertain by a rerun): fix the "
                "problem and run the same command again to continue",
            ) from None
        finally:
            await self.close(client)

    def open(self) -> None:
        """The journal first: a run refused because another one holds it touches nothing."""
        if self.files.journal is not None:
            try:
                self.journal = Journal(self.files.journal)
            except JournalInUseError as exc:
                raise _Failure(EXIT_JOURNAL_IN_USE, f"{exc}; nothing was sent") from None
            except JournalError as exc:
                raise _Failure(EXIT_CANNOT_WRITE, f"{exc}; nothing was sent") from None
        try:
            self.results = _Results(self.files.results)
        except OSError as exc:
            raise _Failure(
                EXIT_USAGE, f"cannot write {self.files.results}: {exc.strerror or exc}"
            ) from None

    def record(self, result: BulkResult) -> None:
        """One finished input: its results row, the counts and the progress line."""
        assert self.results is not None
        try:
            self.results.write(result)
        except OSError as exc:
            raise _Failure(
                EXIT_CANNOT_WRITE,
                f"cannot write {self.files.results}: {exc.strerror or exc}; stopped "
                "sending. The journal records every input sent so far (the ones "
                "in flight as uncertain): free the space and run the same command "
                "again to continue",
            ) from None
        if result.outcome is BulkOutcome.CREATED and result.error is not None:
            self.unfinished += 1  # created, but its wait ended without a final status
        self.collected.append(attrs.evolve(result, error=None))  # its text is in the file
        self.uncertain.done(result)
        self.tally.add(result)
        if self.progress is not None:
            self.progress.refresh()

    def check_results_kept(self) -> None:
        """Refuse a run whose results file was deleted or replaced under it."""
        assert self.results is not None
        lost = self.results.lost()
        if lost is None:
            return
        raise _Failure(
            EXIT_CANNOT_WRITE,
            f"the results file {self.files.results} was {lost} during the run, with its "
            "rows; "
            + (
                "every outcome is in the journal: run the same command again to "
                "write it again (nothing is sent twice)"
                if self.journal is not None
                else "without a journal they are lost: check with Ripio which "
                "tickets exist before sending anything again"
            ),
        )

    async def close(self, client: SkalaClient) -> None:
        """Each is closed whatever the one before raised (last in, first out)."""
        async with contextlib.AsyncExitStack() as closing:
            if not client.closed:  # the run ended before it used the client
                closing.push_async_callback(client.close)
            if self.journal is not None:
                closing.callback(self.journal.close)
            if self.results is not None:
                closing.callback(self.results.close)
            if self.progress is not None:
                closing.callback(self.progress.finish)


def _exit_code(counts: dict[str, int], unfinished: int, failed_tickets: int) -> int:
    """The worst outcome decides: transport, then refused, then timeout, then failed."""
    if counts["uncertain"] or counts["failed"]:
        return EXIT_TRANSPORT
    if counts["rejected"]:
        return EXIT_REFUSED
    if unfinished:
        return EXIT_TIMEOUT
    if failed_tickets:
        return EXIT_FAILED
    return EXIT_OK


def _summarize(
    run: _Run,
    files: _Files,
    report: BulkReport,
    unfinished: int,
    uncertain_written: str | None,
    uncertain_note: str | None,
) -> int:
    """Say and emit the summary; return the exit code."""
    counts = report.counts
    failed_tickets = sum(
        1 for r in report.results if r.ticket is not None and r.ticket.status.value == "FAILED"
    )
    code = _exit_code(counts, unfinished, failed_tickets)
    run.say(f"{len(report)} inputs: {counts_text(counts)}")
    if failed_tickets:
        run.say(f"{failed_tickets} ticket(s) ended FAILED")
    if unfinished:
        run.say(f"{unfinished} created ticket(s) without a final status yet (the wait ended)")
    run.say(f"results: {files.results}")
    if files.journal is not None:
        run.say(f"journal: {files.journal} (run the same command again to continue)")
    if uncertain_note:
        run.say(uncertain_note)
    run.emit(
        {
            "inputs": len(report),
            "counts": counts,
            "failed_tickets": failed_tickets,
            "unfinished_waits": unfinished,
            "results": str(files.results),
            "uncertain_file": uncertain_written,
            "journal": str(files.journal) if files.journal is not None else None,
            "delimiter": None if files.jsonl else files.delimiter,
            "exit_code": code,
        }
    )
    return code


def _nothing() -> None:
    pass
