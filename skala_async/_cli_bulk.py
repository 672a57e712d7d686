"""``skala-tickets bulk FILE``: submit a CSV or JSONL export, with a journal and a report.

Input columns (CSV header or JSON keys): ``customer_id`` (or ``customerId``), ``summary``,
``description``, optional ``attachments`` (CSV: paths separated by ``;``; JSON: a list or a
string) and optional ``reference``. Relative attachment paths are taken relative to the
input file's folder (a missing file's problem names the path tried). Rows are read lazily:
a file of 100,000 rows never sits in memory. A CSV's delimiter (comma, semicolon, tab or
vertical bar) is told from its header line unless ``--delimiter`` gives it.

``--validate-only`` reads the whole file and lists every problem of every row (by row and
field), sending nothing and asking for no token.

By default a journal is kept beside the input (``FILE.journal.sqlite``), so running the same
command again after an interruption continues where it stopped: inputs already accepted are
not sent again, and inputs that were in flight are reported ``uncertain`` unless
``--resend-uncertain`` is given. A results file gets one row per input as it finishes, and
the inputs whose outcome is ``uncertain`` are listed at the end in an uncertain file
(customer, summary, reference, when sent, why): what to check with Ripio.

A row that cannot be read (not JSON, a number or nesting the parser refuses, a field of
the wrong type, a CSV field over the csv module's limit, more fields than the header) is
that row's ``rejected`` result; a file that cannot be read at all (not UTF-8, a quoted CSV
field that never closes) is a usage error before anything is sent. The journal is locked
for the whole run, and the files the command writes must not be the input or the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime
import json
import os
import re
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._journal import Journal
from ._protocol import validate_draft
from ._waiting import DEFAULT_WAIT_TIMEOUT
from .bulk import BulkOutcome, BulkResult, counts_text
from .cli import StatusLine, _positive_seconds, bar
from .errors import JournalError, JournalInUseError, JournalLostError, ValidationError
from .models import Attachment, TicketDraft

if TYPE_CHECKING:
    from ._waiting import TicketHandle
    from .bus import TicketBus
    from .cli import _Run
    from .client import SkalaClient

BULK_EPILOG = """\
input: CSV (with a header) or JSON Lines, one ticket per row, with the columns customer_id,
  summary, description, and optionally attachments (CSV: 'a.pdf;b.png') and reference.
  A CSV may be separated by commas, semicolons, tabs or vertical bars: the header line
  tells which (--delimiter to say it). Relative attachment paths are read from the input
  file's folder.

outputs: FILE.results.csv (one row per input) and, when some inputs are uncertain,
  FILE.uncertain.csv beside it: those inputs with their customer, summary, reference, when
  they were sent and why, to check with Ripio (then --resend-uncertain sends them again).

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
  9    with --validate-only: the file has problems (each one is listed; nothing was sent)
  130  interrupted: rerun the same command to continue from the journal (the counts so
       far are printed)
"""

EXIT_JOURNAL_IN_USE = 6
EXIT_CANNOT_WRITE = 7
EXIT_JOURNAL_LOST = 8
EXIT_INVALID_INPUT = 9

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

#: The delimiters a CSV's header line is tried with, and their names.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
#: The column names bulk reads (and their aliases).
_KNOWN_COLUMNS = frozenset(
    {"customer_id", "customerId", "summary", "description", "attachments", "files", "reference"}
    | {"ref"}
)
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def delimiter_arg(text: str) -> str:
    """``--delimiter``: one character (``tab`` or ``\\t`` for a tab)."""
    value = _DELIMITER_NAMES.get(text.lower(), text)
    if len(value) != 1 or value in '"\r\n' or value.isalnum() or value == " ":
        raise argparse.ArgumentTypeError(
            f"expected one character such as ',' ';' '|' or 'tab', got {text!r}"
        )
    return value


def delimiter_name(delimiter: str) -> str:
    """``'semicolon'``, ``'tab'``, ... or the character quoted."""
    return DELIMITERS.get(delimiter, repr(delimiter))


def detect_delimiter(path: Path) -> str:
    """The delimiter of a CSV input, told from its header line: the one that splits it
    into the most known column names (with none, the only one that splits it at all).
    :class:`InputError` when it cannot be told: two give different columns equally well,
    or no known name and no single delimiter that splits the line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            line = f.readline(64 * 1024).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    if not line.strip():
        return ","  # no header at all: the missing columns are reported
    splits: dict[str, tuple[int, tuple[str, ...]]] = {}
    for delimiter in DELIMITERS:  # one line, not strict: the csv module reads any of it
        fields = tuple(f.strip() for f in next(csv.reader([line], delimiter=delimiter)))
        splits[delimiter] = (sum(1 for f in fields if f in _KNOWN_COLUMNS), fields)
    best = max((known for known, _ in splits.values()), default=0)
    shown = line if len(line) <= 80 else line[:77] + "..."
    if best == 0:
        # No known name: the delimiter is the one character that splits the line at all
        # (the missing columns are reported next); none or several cannot be told apart.
        splitting = [d for d, (_, fields) in splits.items() if len(fields) > 1]
        if len(splitting) == 1:
            return splitting[0]
        raise InputError(
            f"{path.name}: cannot tell how the columns are separated: split at a comma, "
            f"semicolon, tab or vertical bar, the header line {shown!r} names none of the "
            "columns customer_id, summary, description; pass --delimiter (or fix the header)"
        )
    winners = [d for d, (known, _) in splits.items() if known == best]
    if len({splits[d][1] for d in winners}) > 1:
        names = " and ".join(delimiter_name(d) for d in winners)
        raise InputError(
            f"{path.name}: cannot tell how the columns are separated: the header line "
            f"{shown!r} reads as columns split at a {names} alike; pass --delimiter"
        )
    return winners[0]


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


def _header(reader: Any) -> list[str]:
    """The header record, names stripped of surrounding spaces (``'a; b'`` is a, b)."""
    return [name.strip() for name in _next_record(reader) or []]


def _column(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def _attachments(value: Any, base: Path) -> list[Attachment]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(";")
    attachments = []
    for item in items:
        text = str(item).strip()
        if text:
            p = Path(text).expanduser()
            full = p if p.is_absolute() else base / p
            attachments.append(_attachment(text, full, relative=not p.is_absolute()))
    return attachments


def _attachment(text: str, full: Path, *, relative: bool) -> Attachment:
    """The attachment at ``full``; a missing one says which path was tried."""
    attachment = Attachment.from_path(full)
    if attachment.problem is not None:
        try:
            os.stat(full)
        except FileNotFoundError:
            where = f"looked for {full}" + (
                "; a relative path is read from the input file's folder" if relative else ""
            )
            return attrs.evolve(attachment, problem=f"{text!r} does not exist ({where})")
        except (OSError, ValueError):
            pass
    return attachment


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "an object" if isinstance(value, dict) else "a value")


#: A problem of one row: the column it is about, and what is wrong.
FieldProblem = tuple[str, str]


def _read_draft(row: dict[str, Any], base: Path) -> tuple[TicketDraft, list[FieldProblem]]:
    """The draft of one row, and every field whose type is wrong (if any, the draft has
    those fields empty and must not be sent)."""
    problems: list[FieldProblem] = []

    def text(field: str, *aliases: str) -> str:
        value = _column(row, field, *aliases)
        if value is None:
            return ""
        if not isinstance(value, str):
            problems.append((field, f"must be text, got {_json_type(value)}"))
            return ""
        return value

    customer_id = text("customer_id", "customerId")
    summary = text("summary")
    description = text("description")
    reference = _column(row, "reference", "ref")
    if isinstance(reference, bool) or not isinstance(reference, (str, int, type(None))):
        problems.append(
            ("reference", f"must be text or a whole number, got {_json_type(reference)}")
        )
        reference = None
    files = _column(row, "attachments", "files")
    paths: list[Attachment] = []
    if not (
        files is None
        or isinstance(files, str)
        or (isinstance(files, list) and all(isinstance(f, str) for f in files))
    ):
        problems.append(("attachments", "must be text ('a.pdf;b.png') or a list of file names"))
    else:
        try:
            paths = _attachments(files, base)
        except RuntimeError as exc:  # '~nobody/a.pdf': no such home folder
            problems.append(("attachments", str(exc)))
    draft = TicketDraft(
        customer_id=customer_id,
        summary=summary,
        description=description,
        files=paths,
        reference=str(reference) if reference not in (None, "") else None,
    )
    return draft, problems


def _is_jsonl(path: Path, forced: str | None) -> bool:
    if forced:
        return forced == "jsonl"
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


class RowError(str):
    """Why a row cannot be read: that row is rejected with it, not the whole run."""


def read_rows(
    path: Path, fmt: str | None, delimiter: str = ","
) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    """``(where, row)`` for each row of ``path``, lazily; ``row`` is a dict, or a
    :class:`RowError` for a row that cannot be read."""
    if _is_jsonl(path, fmt):
        yield from _jsonl_rows(path)
    else:
        yield from _csv_rows(path, delimiter)


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


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = _header(reader)
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
                hint = f"an unquoted {delimiter_name(delimiter)}?"
                yield (
                    where,
                    RowError(f"{len(record)} fields, the header has {len(header)} ({hint})"),
                )
            else:
                yield where, dict(zip(header, record, strict=False))


def check_header(path: Path, fmt: str | None, delimiter: str = ",") -> None:
    """Raise :class:`InputError` if a CSV input lacks a required column."""
    if _is_jsonl(path, fmt):
        return
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = set(_header(csv.reader(f, delimiter=delimiter)))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    except (csv.Error, ValueError) as exc:
        raise InputError(f"{path.name}: the header line cannot be read ({exc})") from exc
    missing = [c for c in ("summary", "description") if c not in header]
    if not header & {"customer_id", "customerId"}:
        missing.insert(0, "customer_id")
    if missing:
        separated = (
            "" if delimiter == "," else f" (read as separated by {delimiter_name(delimiter)})"
        )
        raise InputError(f"{path.name}: missing column(s): {', '.join(missing)}{separated}")


def count_rows(path: Path, fmt: str | None, delimiter: str = ",") -> int:
    """How many rows the input has (a pass before anything is sent, for the progress bar's
    ETA); :class:`InputError` if the file cannot be read at all."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if _is_jsonl(path, fmt):
                return sum(1 for line in f if line.strip())
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            return max(0, _count_records(path, reader) - 1)
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


def read_inputs(
    path: Path, fmt: str | None, delimiter: str = ","
) -> Iterator[tuple[str, TicketDraft | ValidationError]]:
    """``(where, draft)`` for each row, or a :class:`ValidationError` naming every field
    of a row that cannot become a draft (rejected)."""
    base = path.resolve().parent
    for where, row in read_rows(path, fmt, delimiter):
        if isinstance(row, RowError):
            yield where, ValidationError([f"{where}: {row}"])
            continue
        draft, problems = _read_draft(row, base)
        if problems:
            yield where, ValidationError([f"{where}: {f} {m}" for f, m in problems])
        else:
            yield where, draft


# ------------------------------------------------------------------------------ validate


@attrs.frozen
class Problem:
    """One problem of one input row, found by ``--validate-only``."""

    where: str
    field: str
    message: str

    @property
    def line(self) -> int | None:
        """The line number in ``where``."""
        found = re.search(r"line (\d+)", self.where)
        return int(found.group(1)) if found else None

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


_LIBRARY_FIELD = re.compile(r"^(customer_id|summary|description|files(?:\[(\d+)\])?): (.*)$", re.S)


def _field_problems(messages: Sequence[str]) -> list[FieldProblem]:
    """The library's validation messages (``files[0]: ...``) by input column."""
    problems: list[FieldProblem] = []
    for message in messages:
        found = _LIBRARY_FIELD.match(message)
        if found is None:
            problems.append(("row", message))
        elif found.group(1).startswith("files"):
            number = found.group(2)
            prefix = f"file {int(number) + 1}: " if number is not None else ""
            problems.append(("attachments", prefix + found.group(3)))
        else:
            problems.append((found.group(1), found.group(3)))
    return problems


def validate_file(
    path: Path, fmt: str | None, delimiter: str
) -> Iterator[tuple[str, list[Problem]]]:
    """Every row's problems, in order: ``(where, problems)`` for each row (the list is
    empty for a row that can be sent). Nothing is sent; attachments are looked at on
    disk (they must exist and be readable files within the limits)."""
    base = path.resolve().parent
    references: dict[str, str] = {}
    for where, row in read_rows(path, fmt, delimiter):
        if isinstance(row, RowError):
            yield where, [Problem(where, "row", str(row))]
            continue
        draft, found = _read_draft(row, base)
        wrong_type = {field for field, _ in found}
        found += [p for p in _field_problems(validate_draft(draft)) if p[0] not in wrong_type]
        if draft.reference is not None:
            earlier = references.setdefault(draft.reference, where)
            if earlier != where:
                found.append(
                    (
                        "reference",
                        f"{draft.reference!r} is also the reference of the {earlier}: "
                        "one reference is sent once, so this input would be rejected",
                    )
                )
        yield where, [Problem(where, field, message) for field, message in found]


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
        row["error"] = for_cli(row["error"])
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


def for_cli(text: str) -> str:
    """The library's advice in a message, in the command's terms."""
    return text.replace("pass resend_uncertain=True", "run again with --resend-uncertain")


UNCERTAIN_FIELDS = ["index", "row", "reference", "customer_id", "summary", "sent_at", "why"]


def _utc(moment: float | None) -> str:
    if moment is None:
        return ""
    when = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


@attrs.define
class _Input:
    """What the uncertain file needs of an input while its outcome is not known yet."""

    where: str
    customer_id: str
    summary: str
    draft_id: int


@attrs.frozen
class UncertainInput:
    """An input that may have created a ticket: one row of the uncertain file."""

    index: int
    row: str
    reference: str
    customer_id: str
    summary: str
    #: When its create was sent, UTC ISO 8601 ("" if not known).
    sent_at: str
    why: str

    def as_row(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in UNCERTAIN_FIELDS}


def journal_sent_at(path: Path, keys: Sequence[str]) -> dict[str, float]:
    """When an earlier run last sent each of ``keys`` (the journal's time of the claim or of
    its ambiguous answer), read from the closed journal; ``{}`` if it cannot be read."""
    found: dict[str, float] = {}
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:  # gone since the run closed it
        return found
    try:
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, updated_at FROM inputs WHERE key IN ({marks})",  # noqa: S608
                chunk,
            )
            found.update((str(k), float(t)) for k, t in rows)
    except (sqlite3.Error, TypeError, ValueError):
        return found
    finally:
        db.close()
    return found


def uncertain_header(path: Path) -> bool | None:
    """Whether an existing file is an uncertain file (``None``: nothing there, or an empty
    file; ``False`` for anything else, a folder or a device included)."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return False  # never replaced: os.replace() would put a file where /dev/null was
    if st.st_size == 0:
        return None
    try:
        with path.open("rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return False
    if first == ",".join(UNCERTAIN_FIELDS):
        return True
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and list(obj) == UNCERTAIN_FIELDS


def write_uncertain(path: Path, items: Sequence[UncertainInput]) -> None:
    """Write the uncertain file (CSV, or JSON Lines by extension), whole, in input order.
    Written beside and renamed over, so a reader never sees half a list."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if _is_jsonl(path, None):
                for item in sorted(items, key=lambda i: i.index):
                    f.write(json.dumps(item.as_row(), ensure_ascii=False) + "\n")
            else:
                writer = csv.DictWriter(f, UNCERTAIN_FIELDS)
                writer.writeheader()
                for item in sorted(items, key=lambda i: i.index):
                    writer.writerow({k: spreadsheet_safe(v) for k, v in item.as_row().items()})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class Tally:
    """What a bulk run has done so far, for the progress line and for Ctrl-C: outcomes,
    inputs Ripio accepted (a 202, or created in an earlier run), creates in flight, and
    with ``--wait`` the waits that ended."""

    def __init__(self, total: int, wait: bool) -> None:
        self.total = total
        self.wait = wait
        self.counts = {o.value: 0 for o in BulkOutcome}
        self.in_flight = 0
        #: Tickets accepted whose result is not out yet (their wait runs).
        self.waiting: set[uuid.UUID] = set()
        self.finals = {"CREATED": 0, "FAILED": 0, "no outcome": 0}

    @property
    def accepted(self) -> int:
        """Inputs Ripio accepted so far (waits done or not)."""
        return self.counts[BulkOutcome.CREATED.value] + len(self.waiting)

    @property
    def sent(self) -> int:
        """Inputs whose create has an answer (or that needed none): accepted or not."""
        return sum(self.counts.values()) + len(self.waiting)

    def accept(self, ticket_id: uuid.UUID) -> None:
        self.waiting.add(ticket_id)

    def add(self, result: BulkResult) -> None:
        self.counts[result.outcome.value] += 1
        if result.ticket_id is not None:
            self.waiting.discard(result.ticket_id)
        if self.wait and result.outcome is BulkOutcome.CREATED:
            ticket = result.ticket
            status = ticket.status.value if ticket is not None else ""
            key = status if status in ("CREATED", "FAILED") else "no outcome"
            self.finals[key] += 1

    def text(self) -> str:
        """``accepted 790 · rejected 3 · uncertain 1 · failed 1 · waits done 412/790 ...``"""
        c = self.counts
        parts = [
            f"accepted {self.accepted}",
            f"rejected {c['rejected']}",
            f"uncertain {c['uncertain']}",
            f"failed {c['failed']}",
        ]
        if self.in_flight:
            parts.append(f"in flight {self.in_flight}")
        if self.wait:
            finals = ", ".join(f"{k} {v}" for k, v in self.finals.items())
            parts.append(f"waits done {c['created']}/{self.accepted} ({finals})")
        return " · ".join(parts)


class _Watched:
    """The client as a bulk run sees it, telling a :class:`Tally` when Ripio accepts an
    input, and noting when each input's create was sent."""

    def __init__(self, client: SkalaClient, tally: Tally, changed: Callable[[], None]) -> None:
        self._client = client
        self._tally = tally
        self._changed = changed
        #: The index of each draft given to the run, by ``id()``, until it is sent.
        self.index_of: dict[int, int] = {}
        #: When each input's create was sent, by index.
        self.sent_at: dict[int, float] = {}

    @property
    def bus(self) -> TicketBus:
        return self._client.bus

    async def submit(self, draft: TicketDraft) -> TicketHandle:
        index = self.index_of.pop(id(draft), None)
        if index is not None:
            self.sent_at[index] = time.time()
        self._tally.in_flight += 1
        try:
            handle = await self._client.submit(draft)
        finally:
            self._tally.in_flight -= 1
        self._tally.accept(handle.ticket_id)
        self._changed()
        return handle

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> TicketHandle:
        handle = self._client.ticket_handle(ticket_id)  # created earlier, waited for now
        self._tally.accept(handle.ticket_id)
        self._changed()
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class BulkProgress(StatusLine):
    """``[####....] 412/1000 created 400 · rejected 3 · uncertain 1 · failed 0 · 35/s · ETA 17s``

    With ``--wait`` the bar counts inputs Ripio answered, and the line shows the waits that
    ended beside them: ``[######..] 795/1000 sent · accepted 790 · rejected 3 · uncertain 1
    · failed 1 · waits done 412/790 (CREATED 410, FAILED 2, no outcome 0) · 35/s · ETA 6s``.
    """

    def __init__(
        self, stream: TextIO, total: int, width: int = 24, *, tally: Tally | None = None
    ) -> None:
        super().__init__(stream)
        self.total = total
        self.width = width
        self.started = time.monotonic()
        self.tally = tally if tally is not None else Tally(total, wait=False)
        self._own = tally is None
        self._last = 0.0
        self._later: asyncio.TimerHandle | None = None

    def __call__(self, result: BulkResult) -> None:
        if self._own:
            self.tally.add(result)
        self.refresh()

    def refresh(self) -> None:
        """Redraw (at most every 0.1 s, and always once everything is done). A change that
        comes too soon after the last draw is drawn 0.1 s later, so the line never stays
        behind while the run waits."""
        now = time.monotonic()
        tally = self.tally
        done = tally.sent if tally.wait else sum(tally.counts.values())
        finished = sum(tally.counts.values()) >= self.total
        if now - self._last < 0.1 and not finished:
            if self._later is None:
                with contextlib.suppress(RuntimeError):  # no loop: the next change draws it
                    self._later = asyncio.get_running_loop().call_later(0.1, self._deferred)
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 and self.total >= done else 0.0
        counts = f"sent · {tally.text()}" if tally.wait else counts_text(tally.counts)
        self.draw(
            f"[{bar(self.width, done, self.total)}] {done}/{self.total} {counts} · "
            f"{rate:.0f}/s · ETA {eta:.0f}s "
        )

    def _deferred(self) -> None:
        self._later = None
        self.refresh()

    def finish(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        super().finish()


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
        "--delimiter",
        type=delimiter_arg,
        metavar="CHAR",
        help="the CSV's delimiter: ',' ';' 'tab' '|' ... (default: told from the header line)",
    )
    bulk.add_argument(
        "--validate-only",
        action="store_true",
        help="read the whole file and list every problem by row and field; send nothing "
        "(no credentials needed; exit 0 when clean, 9 when not)",
    )
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
    bulk.add_argument(
        "--uncertain-file",
        metavar="PATH",
        help="where the inputs that may have created a ticket are listed, CSV or .jsonl, "
        "when there are any (default: FILE.uncertain.csv beside the results)",
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


def check_outputs(
    path: Path, journal: Path | None, results: Path, uncertain: Path | None = None
) -> str | None:
    """Why the files the command writes cannot be used (``None``: they can): neither the
    results, the uncertain file nor the journal may be the input, nor the results or the
    uncertain file the journal (or its -wal or -shm file) or each other, and an existing
    results or uncertain file must be one this command wrote."""
    if journal is not None and _same_file(journal, path):
        return f"--journal {journal} is the input file: the journal must be a file of its own"
    outputs = [("--results", results)]
    if uncertain is not None:
        outputs.append(("--uncertain-file", uncertain))
    for option, output in outputs:
        if _same_file(output, path):
            return f"{option} {output} is the input file: writing it would destroy the input"
        if journal is not None:
            for part in ("", "-wal", "-shm"):
                if _same_file(output, Path(f"{journal}{part}")):
                    return (
                        f"{option} {output} is the journal{' ' + part[1:] if part else ''} "
                        "file: writing it would destroy the record of what was sent"
                    )
    if uncertain is not None and _same_file(uncertain, results):
        return f"--uncertain-file {uncertain} is the results file: they must be two files"
    if _results_header(results) is False:
        return (
            f"--results {results} exists and is not a results file of this command: "
            "refusing to overwrite it (choose another path, or remove it first)"
        )
    if uncertain is not None and uncertain_header(uncertain) is False:
        return (
            f"--uncertain-file {uncertain} exists and is not an uncertain file of this "
            "command: refusing to overwrite it (choose another path, or remove it first)"
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


def _default_uncertain(path: Path, results: Path) -> Path:
    """``FILE.uncertain.csv`` beside the results file (beside the input when the results
    go to something that is not a regular file, such as ``/dev/stdout``)."""
    folder = results.parent
    if results.exists() and not results.is_file():
        folder = path.parent
    return folder / f"{path.name}.uncertain.csv"


def _validate_only(run: _Run, path: Path, fmt: str | None, delimiter: str) -> int:
    """``--validate-only``: list every problem of every row; nothing is sent."""
    from .cli import EXIT_USAGE, _Failure

    rows = bad_rows = count = 0
    listed: list[dict[str, Any]] = []
    try:
        for _, found in validate_file(path, fmt, delimiter):
            rows += 1
            bad_rows += bool(found)
            count += len(found)
            for problem in found:
                run.say(str(problem))  # as found: a long file shows its problems at once
                if run.json:
                    listed.append(
                        {
                            "where": problem.where,
                            "line": problem.line,
                            "field": problem.field,
                            "message": problem.message,
                        }
                    )
    except UnicodeDecodeError as exc:
        raise _Failure(EXIT_USAGE, f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    code = EXIT_INVALID_INPUT if bad_rows else 0
    if bad_rows:
        run.say(f"{rows} rows checked: {count} problem(s) in {bad_rows} row(s); nothing was sent")
    else:
        run.say(f"{rows} rows checked: no problems found; nothing was sent")
    run.emit(
        {
            "rows": rows,
            "rows_with_problems": bad_rows,
            "problems": listed,
            "delimiter": None if _is_jsonl(path, fmt) else delimiter,
            "exit_code": code,
        }
    )
    return code


class _Uncertain:
    """Collects the inputs whose outcome is uncertain, with what to check with Ripio."""

    def __init__(self, watched: _Watched) -> None:
        self.watched = watched
        #: The inputs given to the run whose result is not out yet, by index.
        self.pending: dict[int, _Input] = {}
        self.items: list[UncertainInput] = []
        #: Journal keys of inputs an earlier run sent, by index: their time is read after.
        self.from_journal: dict[int, str] = {}

    def given(self, index: int, where: str, item: TicketDraft | ValidationError) -> None:
        if isinstance(item, TicketDraft):
            self.watched.index_of[id(item)] = index
            self.pending[index] = _Input(
                where, str(item.customer_id), item.summary, draft_id=id(item)
            )
        else:
            self.pending[index] = _Input(where, "", "", draft_id=0)

    def done(self, result: BulkResult) -> None:
        info = self.pending.pop(result.index, None)
        if info is not None and self.watched.index_of.get(info.draft_id) == result.index:
            del self.watched.index_of[info.draft_id]
        sent = self.watched.sent_at.pop(result.index, None)
        if result.outcome is not BulkOutcome.UNCERTAIN:
            return
        if result.from_journal and result.key:
            self.from_journal[result.index] = result.key
        self.items.append(
            UncertainInput(
                index=result.index,
                row=info.where if info is not None else "",
                reference=result.reference or "",
                customer_id=info.customer_id if info is not None else "",
                summary=info.summary if info is not None else "",
                sent_at=_utc(sent),
                why=for_cli(_why(result.error)),
            )
        )

    def dated(self, journal: Path | None) -> list[UncertainInput]:
        """The items, those sent by an earlier run dated from its journal."""
        if journal is None or not self.from_journal:
            return self.items
        times = journal_sent_at(journal, sorted(set(self.from_journal.values())))
        dated = []
        for item in self.items:
            key = self.from_journal.get(item.index)
            if key is not None:  # not sent by this run: no time of its own
                item = attrs.evolve(item, sent_at=_utc(times.get(key)))
            dated.append(item)
        return dated


def _why(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _finish_uncertain(
    target: Path, items: Sequence[UncertainInput], *, complete: bool
) -> tuple[str | None, str | None]:
    """Write the uncertain file when there are uncertain inputs; when there are none and
    the run read every input, remove a list an earlier run left. Returns the path written
    and what to tell the user."""
    from .cli import _Failure

    if items:
        try:
            write_uncertain(target, items)
        except OSError as exc:
            raise _Failure(
                EXIT_CANNOT_WRITE,
                f"cannot write the uncertain file {target}: {exc.strerror or exc}; the "
                "uncertain inputs are also in the results file (outcome 'uncertain'): check "
                "those with Ripio before sending anything again",
            ) from None
        return str(target), (
            f"{len(items)} input(s) may have created a ticket: listed in {target} (customer, "
            "summary, reference, when sent, why). Ask Ripio which of them exist, then run "
            "again with --resend-uncertain to send the others (first take out of the input "
            "the ones Ripio has)"
        )
    if not complete:
        return None, None
    if uncertain_header(target):
        try:
            target.unlink()
        except OSError:
            pass
        else:
            return (
                None,
                f"no uncertain inputs: nothing to check with Ripio (removed the old {target})",
            )
    return None, "no uncertain inputs: nothing to check with Ripio (no uncertain file written)"


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
    jsonl = _is_jsonl(path, args.format)
    if jsonl and args.delimiter is not None:
        raise _Failure(EXIT_USAGE, "--delimiter applies to CSV input, not JSON Lines")
    try:
        delimiter = args.delimiter or ("," if jsonl else detect_delimiter(path))
        check_header(path, args.format, delimiter)
        total = count_rows(path, args.format, delimiter)
    except InputError as exc:
        raise _Failure(EXIT_USAGE, str(exc)) from exc
    if args.validate_only:  # before the credentials: checking a file needs none
        return _validate_only(run, path, args.format, delimiter)
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
    client = make_client(args)  # credentials are checked before any file is touched
    show = args.progress
    if show is None:
        try:
            show = sys.stderr.isatty()
        except (AttributeError, ValueError):
            show = False

    tally = Tally(total, wait=args.wait)
    progress = BulkProgress(sys.stderr, total, tally=tally) if show else None
    watched = _Watched(client, tally, progress.refresh if progress is not None else _nothing)
    uncertain = _Uncertain(watched)
    run.interrupted_note = tally.text
    rows = read_inputs(path, args.format, delimiter)

    def inputs() -> Iterator[TicketDraft | ValidationError]:
        try:
            for index, (where, item) in enumerate(rows):
                uncertain.given(index, where, item)
                yield item
        except UnicodeDecodeError as exc:
            raise _Failure(EXIT_USAGE, f"{path.name}: not UTF-8 text ({exc.reason})") from exc

    journal: Journal | None = None
    results: _Results | None = None
    collected: list[BulkResult] = []
    unfinished = 0
    try:
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
            async with client:
                async for result in submit_many(
                    watched,
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
                            f"cannot write {results_path}: {exc.strerror or exc}; stopped "
                            "sending. The journal records every input sent so far (the ones "
                            "in flight as uncertain): free the space and run the same command "
                            "again to continue",
                        ) from None
                    if result.outcome is BulkOutcome.CREATED and result.error is not None:
                        unfinished += 1  # created, but its wait ended without a final status
                    collected.append(attrs.evolve(result, error=None))  # its text is in the file
                    uncertain.done(result)
                    tally.add(result)
                    if progress is not None:
                        progress.refresh()
            lost = results.lost()
            if lost is not None:
                raise _Failure(
                    EXIT_CANNOT_WRITE,
                    f"the results file {results_path} was {lost} during the run, with its "
                    "rows; "
                    + (
                        "every outcome is in the journal: run the same command again to "
                        "write it again (nothing is sent twice)"
                        if journal is not None
                        else "without a journal they are lost: check with Ripio which "
                        "tickets exist before sending anything again"
                    ),
                )
        except JournalLostError as exc:
            raise _Failure(EXIT_JOURNAL_LOST, _lost_message(exc, results_path, collected)) from None
        except JournalError as exc:
            raise _Failure(
                EXIT_CANNOT_WRITE,
                f"{exc}; stopped sending. Inputs already sent are recorded (those whose "
                "answer could not be recorded are reported uncertain by a rerun): fix the "
                "problem and run the same command again to continue",
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
    except BaseException:
        # However the run ended, list what is uncertain so far (never hiding why it ended).
        items = uncertain.dated(journal_path)
        if items:
            with contextlib.suppress(_Failure):
                run.say(_finish_uncertain(uncertain_path, items, complete=False)[1] or "")
        raise
    uncertain_written, uncertain_note = _finish_uncertain(
        uncertain_path, uncertain.dated(journal_path), complete=True
    )
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
    if uncertain_note:
        run.say(uncertain_note)
    run.emit(
        {
            "inputs": len(report),
            "counts": counts,
            "failed_tickets": failed_tickets,
            "unfinished_waits": unfinished,
            "results": str(results_path),
            "uncertain_file": uncertain_written,
            "journal": str(journal_path) if journal_path is not None else None,
            "delimiter": None if jsonl else delimiter,
            "exit_code": code,
        }
    )
    return code


def _nothing() -> None:
    pass
