"""The results file and the uncertain file: their rows, headers and checks before a run."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs

from skala_async.bulk import BulkOutcome, BulkResult
from skala_async.errors import JournalLostError

from ._constants import RESULT_FIELDS
from ._input import _is_jsonl

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


def _starts_with(path: Path, fields: Sequence[str]) -> bool:
    """Whether the file's first line is the CSV header or a JSON object of ``fields``
    (raises :class:`OSError` when it cannot be read)."""
    with path.open("rb") as f:
        first = f.readline(4096).decode("utf-8", "replace").strip()
    if first == ",".join(fields):
        return True
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and list(obj) == list(fields)


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
        return _starts_with(path, UNCERTAIN_FIELDS)
    except OSError:
        return False


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
        return _starts_with(path, RESULT_FIELDS)
    except OSError:
        return None  # opening it for writing reports the problem


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
