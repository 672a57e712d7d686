"""``bulk --validate-only``: every problem of every row, nothing sent."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from skala_async._protocol import validate_draft
from skala_async.cli._common import EXIT_USAGE, _Failure

from ._constants import EXIT_INVALID_INPUT
from ._input import FieldProblem, RowError, _is_jsonl, _read_draft, read_rows

if TYPE_CHECKING:
    from skala_async.cli._common import _Run


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


def _validate_only(run: _Run, path: Path, fmt: str | None, delimiter: str) -> int:
    """``--validate-only``: list every problem of every row; nothing is sent."""

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
