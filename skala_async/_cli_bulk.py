"""``skala-tickets bulk FILE``: submit a CSV or JSONL export, with a journal and a report.

Input columns (CSV header or JSON keys): ``customer_id`` (or ``customerId``), ``summary``,
``description``, optional ``attachments`` (CSV: paths separated by ``;``; JSON: a list or a
string) and optional ``reference``. Relative attachment paths are taken relative to the
input file's folder. Rows are read lazily: a file of 100,000 rows never sits in memory.

By default a journal is kept beside the input (``FILE.journal.sqlite``), so running the same
command again after an interruption continues where it stopped: inputs already accepted are
not sent again, and inputs that were in flight are reported ``uncertain`` unless
``--resend-uncertain`` is given. A results file gets one row per input as it finishes.

A row that cannot be read (not JSON, a number or nesting the parser refuses, a field of
the wrong type, a CSV field over the csv module's limit, more fields than the header) is
that row's ``rejected`` result; a file that cannot be read at all (not UTF-8, a quoted CSV
field that never closes) is a usage error before anything is sent. The journal is locked
for the whole run, and the files the command writes must not be the input or the journal.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._journal import Journal
from ._waiting import DEFAULT_WAIT_TIMEOUT
from .bulk import BulkOutcome, BulkResult, counts_text
from .cli import StatusLine, _positive_seconds, bar
from .errors import JournalError, JournalInUseError, JournalLostError, ValidationError
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
  6    the journal is in use by another run (nothing was sent)
  7    the journal or the results file cannot be used or written: not a journal, a
       read-only folder, a full disk, a results file deleted during the run (nothing
       more was sent; the message says what to do)
  8    the journal was deleted, replaced or truncated during the run: what it recorded
       is lost; check with Ripio which tickets exist before sending anything again
  130  interrupted: rerun the same command to continue from the journal
"""

EXIT_JOURNAL_IN_USE = 6
EXIT_CANNOT_WRITE = 7
EXIT_JOURNAL_LOST = 8

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


#: The csv module's field limit is lifted while a row is read, so that a long field is
#: that row's problem (reported with its line) rather than an error that ends the reader.
_NO_FIELD_LIMIT = 2**31 - 1


def _next_record(reader: Any) -> list[str] | None:
    """The next record of a csv reader, without its field size limit (``None`` at the end);
    a field over the limit raises ``ValueError`` naming it. csv.Error passes through."""
    limit = csv.field_size_limit(_NO_FIELD_LIMIT)
    try:
        record: list[str] = next(reader)
    except StopIteration:
        return None
    finally:
        csv.field_size_limit(limit)
    if any(len(field) > limit for field in record):
        raise ValueError(f"a field is longer than the csv module's limit ({limit} characters)")
    return record


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


def _text(row: dict[str, Any], *names: str) -> str:
    value = _column(row, *names)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{names[0]} must be text, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "an object" if isinstance(value, dict) else "a value")


def _draft(row: dict[str, Any], base: Path) -> TicketDraft:
    """The draft of one row; ``ValueError`` says why a row cannot be one (wrong types)."""
    reference = _column(row, "reference", "ref")
    if isinstance(reference, bool) or not isinstance(reference, (str, int, type(None))):
        raise ValueError(f"reference must be text or a whole number, got {_json_type(reference)}")
    files = _column(row, "attachments", "files")
    if not (
        files is None
        or isinstance(files, str)
        or (isinstance(files, list) and all(isinstance(f, str) for f in files))
    ):
        raise ValueError("attachments must be text ('a.pdf;b.png') or a list of file names")
    try:
        paths = _attachments(files, base)
    except RuntimeError as exc:  # '~nobody/a.pdf': no such home folder
        raise ValueError(f"attachments: {exc}") from None
    return TicketDraft(
        customer_id=_text(row, "customer_id", "customerId"),
        summary=_text(row, "summary"),
        description=_text(row, "description"),
        files=paths,
        reference=str(reference) if reference not in (None, "") else None,
    )


def _is_jsonl(path: Path, forced: str | None) -> bool:
    if forced:
        return forced == "jsonl"
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


class RowError(str):
    """Why a row cannot be read: that row is rejected with it, not the whole run."""


def read_rows(path: Path, fmt: str | None) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    """``(where, row)`` for each row of ``path``, lazily; ``row`` is a dict, or a
    :class:`RowError` for a row that cannot be read."""
    if _is_jsonl(path, fmt):
        yield from _jsonl_rows(path)
    else:
        yield from _csv_rows(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, RowError(f"not JSON ({exc.msg})")
            except (ValueError, RecursionError) as exc:  # 5000 digits; nested 100,000 deep
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                yield where, RowError(f"cannot be read ({reason})")
            else:
                yield where, obj if isinstance(obj, dict) else RowError("expected a JSON object")


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = _next_record(reader) or []
        while True:
            try:
                record = _next_record(reader)
            except (csv.Error, ValueError) as exc:
                yield f"row ending at line {reader.line_num}", RowError(f"cannot be read ({exc})")
                continue
            if record is None:
                return
            where = f"row ending at line {reader.line_num}"
            if any(field.strip() for field in record[len(header) :]):
                yield (
                    where,
                    RowError(
                        f"{len(record)} fields, the header has {len(header)} (an unquoted comma?)"
                    ),
                )
            else:
                yield where, dict(zip(header, record, strict=False))


def check_header(path: Path, fmt: str | None) -> None:
    """Raise :class:`InputError` if a CSV input lacks a required column."""
    if _is_jsonl(path, fmt):
        return
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = set(_next_record(csv.reader(f)) or [])
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    except (csv.Error, ValueError) as exc:
        raise InputError(f"{path.name}: the header line cannot be read ({exc})") from exc
    missing = [c for c in ("summary", "description") if c not in header]
    if not header & {"customer_id", "customerId"}:
        missing.insert(0, "customer_id")
    if missing:
        raise InputError(f"{path.name}: missing column(s): {', '.join(missing)}")


def count_rows(path: Path, fmt: str | None) -> int:
    """How many rows the input has (a pass before anything is sent, for the progress bar's
    ETA); :class:`InputError` if the file cannot be read at all."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if _is_jsonl(path, fmt):
                return sum(1 for line in f if line.strip())
            return max(0, _count_records(path, csv.reader(f, strict=True)) - 1)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc


def _count_records(path: Path, reader: Any) -> int:
    count = 0
    while True:
        start = reader.line_num + 1
        try:
            if _next_record(reader) is None:
                return count
        except ValueError:
            pass  # a field over the limit: that row is rejected when it is read
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):  # EOF inside a quoted field
                raise InputError(
                    f"{path.name}: broken CSV: the quoted field opened in the row at line "
                    f"{start} never closes, so every line after it would be read as part of "
                    "that field"
                ) from None
            # Other malformed quoting: the row reader decides for that row alone.
        count += 1


def drafts_from(path: Path, fmt: str | None) -> Iterator[TicketDraft | ValidationError]:
    """Drafts, or a :class:`ValidationError` for a row that cannot become one (rejected)."""
    base = path.resolve().parent
    for where, row in read_rows(path, fmt):
        try:
            if isinstance(row, RowError):
                raise ValueError(row)
            draft = _draft(row, base)
        except ValueError as exc:
            yield ValidationError([f"{where}: {exc}"])
        else:
            yield draft


#: Cells a spreadsheet would run as a formula (OWASP's list): written with a leading ``'``.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """``value``, with a ``'`` in front if a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


class _Results:
    """Writes one row per finished input (CSV or JSON Lines by extension). CSV cells that
    a spreadsheet would run as a formula get a leading ``'``; JSON Lines are exact."""

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
            self._csv.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
        else:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def lost(self) -> str | None:
        """What happened to the file if it is no longer at its path (deleted, replaced)."""
        held = os.fstat(self._f.fileno())
        try:
            now = os.stat(self.path)
        except OSError:
            return "deleted" if stat.S_ISREG(held.st_mode) else None
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return "replaced by another file"
        return None

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


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same inode (hard links, symlinks), or the
    same path once symlinks are resolved (for files not created yet)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        pass
    else:
        if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
            return True
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the paths as given
        return os.path.abspath(a) == os.path.abspath(b)


def _results_header(path: Path) -> bool | None:
    """Whether an existing file starts like a results file (``None``: empty, or not a
    regular file such as ``/dev/stdout``)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with path.open("rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None  # opening it for writing reports the problem
    if first == ",".join(RESULT_FIELDS):
        return True
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and list(obj) == RESULT_FIELDS


def check_outputs(path: Path, journal: Path | None, results: Path) -> str | None:
    """Why the files the command writes cannot be used (``None``: they can): neither the
    results nor the journal may be the input, nor the results the journal (or its -wal or
    -shm file), and an existing results file must be one this command wrote."""
    if journal is not None and _same_file(journal, path):
        return f"--journal {journal} is the input file: the journal must be a file of its own"
    if _same_file(results, path):
        return f"--results {results} is the input file: writing results would destroy it"
    if journal is not None:
        for part in ("", "-wal", "-shm"):
            if _same_file(results, Path(f"{journal}{part}")):
                return (
                    f"--results {results} is the journal{' ' + part[1:] if part else ''} file: "
                    "writing results would destroy the record of what was sent"
                )
    if _results_header(results) is False:
        return (
            f"--results {results} exists and is not a results file of this command: "
            "refusing to overwrite it (choose another path, or remove it first)"
        )
    return None


def _lost_message(exc: JournalLostError, results: Path, done: list[BulkResult]) -> str:
    created = sum(1 for r in done if r.outcome is BulkOutcome.CREATED and not r.from_journal)
    uncertain = sum(1 for r in done if r.outcome is BulkOutcome.UNCERTAIN)
    return (
        f"{exc}. This run created {created} ticket(s) and left {uncertain} uncertain; they "
        f"are listed with their ticket ids in {results}, but earlier runs' records are gone "
        "with the journal. Do not run the same command again as it is: check with Ripio "
        "which tickets exist for these customers (the ticket ids in the results file, and "
        "the tickets opened since the first run), then send only the inputs that have none."
    )


async def cmd_bulk(run: _Run) -> int:
    """Run the ``bulk`` subcommand."""
    from .bulk import report_of, submit_many
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
    journal_path = None if args.no_journal else Path(args.journal or f"{path}.journal.sqlite")
    results_path = Path(args.results or f"{path}.results.csv")
    problem = check_outputs(path, journal_path, results_path)
    if problem is not None:
        raise _Failure(EXIT_USAGE, problem)
    try:
        check_header(path, args.format)
        total = count_rows(path, args.format)
    except InputError as exc:
        raise _Failure(EXIT_USAGE, str(exc)) from exc
    client = make_client(args)  # credentials are checked before any file is touched
    show = args.progress
    if show is None:
        try:
            show = sys.stderr.isatty()
        except (AttributeError, ValueError):
            show = False

    rows = drafts_from(path, args.format)

    def inputs() -> Iterator[TicketDraft | ValidationError]:
        try:
            yield from rows
        except UnicodeDecodeError as exc:
            raise _Failure(EXIT_USAGE, f"{path.name}: not UTF-8 text ({exc.reason})") from exc

    journal: Journal | None = None
    results: _Results | None = None
    collected: list[BulkResult] = []
    unfinished = 0
    progress: BulkProgress | None = None
    try:
        # The journal first: a run refused because another one holds it touches nothing.
        if journal_path is not None:
            try:
                journal = Journal(journal_path)
            except JournalInUseError as exc:
                raise _Failure(EXIT_JOURNAL_IN_USE, f"{exc}; nothing was sent") from None
            except JournalError as exc:
                raise _Failure(EXIT_CANNOT_WRITE, f"{exc}; nothing was sent") from None
        try:
            results = _Results(results_path)
        except OSError as exc:
            raise _Failure(
                EXIT_USAGE, f"cannot write {results_path}: {exc.strerror or exc}"
            ) from None
        progress = BulkProgress(sys.stderr, total) if show else None
        async with client:
            async for result in submit_many(
                client,
                inputs(),
                concurrency=args.concurrency,
                journal=journal,
                wait=args.wait,
                wait_timeout=args.wait_timeout,
                resend_uncertain=args.resend_uncertain,
            ):
                try:
                    results.write(result)
                except OSError as exc:
                    raise _Failure(
                        EXIT_CANNOT_WRITE,
                        f"cannot write {results_path}: {exc.strerror or exc}; stopped sending. "
                        "The journal records every input sent so far (the ones in flight as "
                        "uncertain): free the space and run the same command again to "
                        "continue",
                    ) from None
                if result.outcome is BulkOutcome.CREATED and result.error is not None:
                    unfinished += 1  # created, but its wait ended without a final status
                collected.append(attrs.evolve(result, error=None))  # its text is in the file
                if progress is not None:
                    progress(result)
        lost = results.lost()
        if lost is not None:
            raise _Failure(
                EXIT_CANNOT_WRITE,
                f"the results file {results_path} was {lost} during the run, with its rows; "
                + (
                    "every outcome is in the journal: run the same command again to write it "
                    "again (nothing is sent twice)"
                    if journal is not None
                    else "without a journal they are lost: check with Ripio which tickets "
                    "exist before sending anything again"
                ),
            )
    except JournalLostError as exc:
        raise _Failure(EXIT_JOURNAL_LOST, _lost_message(exc, results_path, collected)) from None
    except JournalError as exc:
        raise _Failure(
            EXIT_CANNOT_WRITE,
            f"{exc}; stopped sending. Inputs already sent are recorded (those whose answer "
            "could not be recorded are reported uncertain by a rerun): fix the problem and "
            "run the same command again to continue",
        ) from None
    finally:
        # Each is closed whatever the one before raised (last in, first out).
        async with contextlib.AsyncExitStack() as closing:
            if not client.closed:  # the run ended before it used the client
                closing.push_async_callback(client.close)
            if journal is not None:
                closing.callback(journal.close)
            if results is not None:
                closing.callback(results.close)
            if progress is not None:
                closing.callback(progress.finish)
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
    if journal_path is not None:
        run.say(f"journal: {journal_path} (run the same command again to continue)")
    run.emit(
        {
            "inputs": len(report),
            "counts": counts,
            "failed_tickets": failed_tickets,
            "unfinished_waits": unfinished,
            "results": str(results_path),
            "journal": str(journal_path) if journal_path is not None else None,
            "exit_code": code,
        }
    )
    return code
