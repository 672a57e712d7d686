"""The results of a bulk run: one :class:`BulkResult` per input, a :class:`BulkReport` of
them all (re-exported by :mod:`skala_async.bulk`)."""

from __future__ import annotations

import enum
import html
import importlib
import uuid
from collections.abc import Iterator
from typing import Any

import attrs

from .models import Ticket


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
