"""Collecting the inputs whose outcome is uncertain and writing them at the end of a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from skala_async.bulk import BulkOutcome, BulkResult
from skala_async.cli._common import _Failure
from skala_async.errors import ValidationError
from skala_async.models import TicketDraft

from ._constants import EXIT_CANNOT_WRITE
from ._progress import _Watched
from ._results import (
    UncertainInput,
    _Input,
    _utc,
    for_cli,
    journal_sent_at,
    uncertain_header,
    write_uncertain,
)


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
