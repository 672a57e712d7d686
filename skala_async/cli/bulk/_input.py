"""Reading a bulk input file: CSV or JSONL, delimiter detection, one draft or problem per row."""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from skala_async.errors import ValidationError
from skala_async.models import Attachment, TicketDraft


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
