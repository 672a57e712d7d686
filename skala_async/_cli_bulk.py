"""``skala-tickets bulk FILE``: submit a CSV or JSONL export, with a journal and a report.

Input columns (CSV header or JSON keys): ``customer_id`` (or ``customerId``), ``summary``,
``description``, optional ``attachments`` (CSV: paths separated by ``;``; JSON: a list or a
string) and optional ``reference``. Relative attachment paths are taken relative to the
input file's folder. Rows are read lazily: a file of 100,000 rows never sits in memory.

By default a journal is kept beside the input (``FILE.journal.sqlite``), so running the same
command again after an interruption continues where it stopped: inputs already accepted are
not sent again, and inputs that were in flight are reported ``uncertain`` unless
``--resend-uncertain`` is given. A results file gets one row per input as it finishes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._waiting import DEFAULT_WAIT_TIMEOUT
from .bulk import BulkOutcome, BulkResult, counts_text
from .cli import StatusLine, _positive_seconds, bar
from .errors import ValidationError
from .models import TicketDraft

if TYPE_CHECKING:
    from .cli import _Run

BULK_EPILOG = """\
input: CSV (with a header) or JSON Lines, one ticket per row, with the columns customer_id,
  summary, description, and optionally attachments (CSV: 'a.pdf;b.png') and reference.

exit codes (bulk):
  0    every input was created (with --wait: and none ended FAILED)
  1    with --wait: some tickets ended FAILED
  2    usage error (unreadable input file, missing columns)
  3    some inputs were rejected (validation or a 4xx; see the results file)
  4    some inputs are uncertain or failed (see the results file; rerun to continue)
  5    with --wait: some created tickets had no final status when their wait ended
  130  interrupted: rerun the same command to continue from the journal
"""

RESULT_FIELDS = [
    "index",
    "reference",
    "outcome",
    "ticket_id",
    "status",
    "issue_key",
    "error",
    "from_journal",
]


class InputError(Exception):
    """The input file cannot be used at all (exit 2)."""


def _column(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def _attachments(value: Any, base: Path) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(";")
    paths = []
    for item in items:
        text = str(item).strip()
        if text:
            p = Path(text).expanduser()
            paths.append(str(p if p.is_absolute() else base / p))
    return paths


def _draft(row: dict[str, Any], base: Path) -> TicketDraft:
    reference = _column(row, "reference", "ref")
    return TicketDraft(
        customer_id=str(_column(row, "customer_id", "customerId") or ""),
        summary=str(_column(row, "summary") or ""),
        description=str(_column(row, "description") or ""),
        files=_attachments(_column(row, "attachments", "files"), base),
        reference=str(reference) if reference not in (None, "") else None,
    )


def _is_jsonl(path: Path, forced: str | None) -> bool:
    if forced:
        return forced == "jsonl"
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def read_rows(path: Path, fmt: str | None) -> Iterator[dict[str, Any]]:
    """The rows of ``path`` as dicts, lazily (a JSON line that is not an object is kept as
    ``{"_error": ...}`` so that row is rejected, not the whole run)."""
    if _is_jsonl(path, fmt):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"_error": f"line {number}: not JSON ({exc.msg})"}
                    continue
                if not isinstance(obj, dict):
                    yield {"_error": f"line {number}: expected a JSON object"}
                    continue
                yield obj
        return
    with path.open(encoding="utf-8-sig", newline="") as f:
        yield from csv.DictReader(f)


def check_header(path: Path, fmt: str | None) -> None:
    """Raise :class:`InputError` if a CSV input lacks a required column."""
    if _is_jsonl(path, fmt):
        return
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = set(next(csv.reader(f), []))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    missing = [c for c in ("summary", "description") if c not in header]
    if not header & {"customer_id", "customerId"}:
        missing.insert(0, "customer_id")
    if missing:
        raise InputError(f"{path.name}: missing column(s): {', '.join(missing)}")


def count_rows(path: Path, fmt: str | None) -> int:
    """How many rows the input has (a quick pass, for the progress bar's ETA)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if _is_jsonl(path, fmt):
                return sum(1 for line in f if line.strip())
            return max(0, sum(1 for _ in csv.reader(f)) - 1)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc


def drafts_from(path: Path, fmt: str | None) -> Iterator[TicketDraft | dict[str, Any]]:
    """Drafts, or the raw row when it cannot become one (reported as rejected)."""
    base = path.resolve().parent
    for row in read_rows(path, fmt):
        if "_error" in row:
            yield row
            continue
        yield _draft(row, base)


class _Results:
    """Writes one row per finished input (CSV or JSON Lines by extension)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jsonl = _is_jsonl(path, None)
        self._f: TextIO = path.open("w", encoding="utf-8", newline="")
        self._csv = None if self.jsonl else csv.DictWriter(self._f, RESULT_FIELDS)
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, result: BulkResult) -> None:
        row = result.as_row()
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class BulkProgress(StatusLine):
    """``[####....] 412/1000 created 400 · rejected 3 · uncertain 1 · failed 0 · 35/s · ETA 17s``"""

    def __init__(self, stream: TextIO, total: int, width: int = 24) -> None:
        super().__init__(stream)
        self.total = total
        self.width = width
        self.started = time.monotonic()
        self.counts = {o.value: 0 for o in BulkOutcome}
        self._last = 0.0

    def __call__(self, result: BulkResult) -> None:
        self.counts[result.outcome.value] += 1
        now = time.monotonic()
        done = sum(self.counts.values())
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 and self.total >= done else 0.0
        counts = counts_text(self.counts)
        self.draw(
            f"[{bar(self.width, done, self.total)}] {done}/{self.total} {counts} · "
            f"{rate:.0f}/s · ETA {eta:.0f}s "
        )


def add_parser(
    add: Callable[[str, str, list[argparse.ArgumentParser]], argparse.ArgumentParser],
    creds: argparse.ArgumentParser,
) -> None:
    """Register the ``bulk`` subcommand."""
    bulk = add("bulk", "submit many tickets from a CSV or JSONL file, crash-safely", [creds])
    bulk.epilog = BULK_EPILOG
    bulk.add_argument("input", metavar="FILE", help="CSV (with a header) or .jsonl file")
    bulk.add_argument("--format", choices=["csv", "jsonl"], help="default: by extension")
    bulk.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="creates in flight (default 8)"
    )
    bulk.add_argument(
        "--journal",
        metavar="PATH",
        help="SQLite journal for resuming (default: FILE.journal.sqlite beside the input)",
    )
    bulk.add_argument("--no-journal", action="store_true", help="keep no journal")
    bulk.add_argument(
        "--results",
        metavar="PATH",
        help="one row per input, CSV or .jsonl (default: FILE.results.csv beside the input)",
    )
    bulk.add_argument("--wait", action="store_true", help="also wait for CREATED or FAILED")
    bulk.add_argument(
        "--wait-timeout",
        type=_positive_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --wait: deadline of each wait (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    bulk.add_argument(
        "--resend-uncertain",
        action="store_true",
        help="send again inputs an earlier run may have created (see the journal)",
    )
    bulk.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    bulk.set_defaults(handler=cmd_bulk)


async def cmd_bulk(run: _Run) -> int:
    """Run the ``bulk`` subcommand."""
    from .bulk import report_of
    from .cli import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_REFUSED,
        EXIT_TIMEOUT,
        EXIT_TRANSPORT,
        EXIT_USAGE,
        _Failure,
    )
    from .cli import _make_client as make_client

    args = run.args
    path = Path(args.input)
    if not path.is_file():  # noqa: ASYNC240 - one stat before anything starts
        raise _Failure(EXIT_USAGE, f"input file not found: {args.input}")
    if args.concurrency < 1:
        raise _Failure(EXIT_USAGE, f"--concurrency must be >= 1, got {args.concurrency}")
    journal = None if args.no_journal else (args.journal or f"{path}.journal.sqlite")
    results_path = Path(args.results or f"{path}.results.csv")
    try:
        check_header(path, args.format)
        total = count_rows(path, args.format)
    except InputError as exc:
        raise _Failure(EXIT_USAGE, str(exc)) from exc
    show = args.progress
    if show is None:
        try:
            show = sys.stderr.isatty()
        except (AttributeError, ValueError):
            show = False
    progress = BulkProgress(sys.stderr, total) if show else None

    rows = drafts_from(path, args.format)

    def inputs() -> Iterator[TicketDraft | ValidationError]:
        try:
            for item in rows:
                if isinstance(item, dict):  # a row that could not become a draft
                    yield ValidationError([str(item["_error"])])
                else:
                    yield item
        except UnicodeDecodeError as exc:
            raise _Failure(EXIT_USAGE, f"{path.name}: not UTF-8 text ({exc.reason})") from exc

    try:
        results = _Results(results_path)
    except OSError as exc:
        raise _Failure(EXIT_USAGE, f"cannot write {results_path}: {exc.strerror}") from exc
    collected: list[BulkResult] = []
    unfinished = 0
    try:
        async with make_client(args) as client:
            async for result in client.submit_many(
                inputs(),
                concurrency=args.concurrency,
                journal=journal,
                wait=args.wait,
                wait_timeout=args.wait_timeout,
                resend_uncertain=args.resend_uncertain,
            ):
                results.write(result)
                if result.outcome is BulkOutcome.CREATED and result.error is not None:
                    unfinished += 1  # created, but its wait ended without a final status
                collected.append(attrs.evolve(result, error=None))  # its text is in the file
                if progress is not None:
                    progress(result)
    finally:
        if progress is not None:
            progress.finish()
        results.close()
    report = report_of(collected)
    counts = report.counts
    failed_tickets = sum(
        1 for r in report.results if r.ticket is not None and r.ticket.status.value == "FAILED"
    )
    if counts["uncertain"] or counts["failed"]:
        code = EXIT_TRANSPORT
    elif counts["rejected"]:
        code = EXIT_REFUSED
    elif unfinished:
        code = EXIT_TIMEOUT
    elif failed_tickets:
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    summary = counts_text(counts)
    run.say(f"{len(report)} inputs: {summary}")
    if failed_tickets:
        run.say(f"{failed_tickets} ticket(s) ended FAILED")
    if unfinished:
        run.say(f"{unfinished} created ticket(s) without a final status yet (the wait ended)")
    run.say(f"results: {results_path}")
    if journal is not None:
        run.say(f"journal: {journal} (run the same command again to continue)")
    run.emit(
        {
            "inputs": len(report),
            "counts": counts,
            "failed_tickets": failed_tickets,
            "unfinished_waits": unfinished,
            "results": str(results_path),
            "journal": str(journal) if journal is not None else None,
            "exit_code": code,
        }
    )
    return code
