"""Bulk submission: many drafts, bounded concurrency, a definite outcome for every input.

Every input ends in exactly one :class:`BulkOutcome`:

``created``
    the API accepted it (202); ``ticket_id`` is set. With ``wait=True`` the result also
    carries the final ticket (CREATED or FAILED), or the ``WaitTimeoutError``.
``rejected``
    it was refused without creating anything: a :class:`ValidationError` (nothing sent)
    or a 4xx answer in the API's error shape (unknown customer, 20061 ...).
``uncertain``
    the create may have happened (timeout after sending, 500/502/504, a dropped
    connection, a redirect or any other answer that is neither the 202 nor a documented
    refusal, or a previous run that died while sending it). It is never resent silently.
``failed``
    the server surely did not get it and retries ran out (429s, 503 with ``Retry-After``,
    connections refused), its body was cut off on this side (an attachment changed while
    it was sent: :class:`UploadAbortedError`), or it was not sent because the run hit an
    account-wide error first (authentication, 20061: every further create would fail the
    same way).

Drafts are consumed lazily, so an input of 100,000 rows never sits in memory. Workers
share the client's rate gate: a 429 or 503 with ``Retry-After`` pauses every request of the
client until that time, and the number of creates in flight is then halved and grows back
by about one per round trip (additive increase, multiplicative decrease).

With ``journal="run.sqlite"`` every step is recorded (see :mod:`skala_async._journal`):
running the same job again with the same journal does not resend inputs that were
accepted, reports them from the journal, and reports inputs that were in flight when the
process died (and those of the last block claimed, see below) as ``uncertain`` unless
``resend_uncertain=True``. One run at a time: a second run on a journal in use raises
:class:`~skala_async.errors.JournalInUseError` before it sends anything, and each input is
claimed in the journal (atomically, only if still unsent) before it is sent, so no two
runs can send it twice. Inputs are claimed a block at a time (``concurrency`` of them, 16
at most, in one transaction); a run that ends without sending some of its claims (a
reader that leaves, a cancel) gives them back, so only a killed process leaves them
``uncertain``. A journal that cannot be used raises :class:`~skala_async.errors.JournalError`
before the first create; one that is deleted, replaced or truncated during the run raises
:class:`~skala_async.errors.JournalLostError` once the creates in flight have ended, and
nothing more is sent.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sized
from typing import Any

from ._backoff import check_timeout
from ._bulk_results import RECORD_FIELDS as RECORD_FIELDS  # importable from here, as before
from ._bulk_results import BulkOutcome, BulkReport, BulkResult
from ._bulk_run import _Run
from ._bulk_steps import Inputs, _check_concurrency, _Submitter
from ._bulk_steps import _outcome_for as _outcome_for  # importable from here, as before
from ._journal import Journal
from ._waiting import DEFAULT_WAIT_TIMEOUT

__all__ = ["BulkInputs", "BulkOutcome", "BulkReport", "BulkResult", "submit_many"]

for _public in (BulkOutcome, BulkReport, BulkResult):
    _public.__module__ = __name__  # the path users import them from (reprs, pickles, docs)

BulkInputs = Inputs
"""What bulk submission takes: drafts, sync or async, consumed lazily. A
:class:`ValidationError` in the stream stands for an input its reader could not parse: it
is reported ``rejected`` with that error, in its place."""

log = logging.getLogger("skala_async.bulk")


async def submit_many(
    client: _Submitter,
    drafts: BulkInputs,
    *,
    concurrency: int = 8,
    journal: str | os.PathLike[str] | Journal | None = None,
    wait: bool = False,
    wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    resend_uncertain: bool = False,
) -> AsyncIterator[BulkResult]:
    """Submit many drafts; yield a :class:`BulkResult` for each as it finishes.

    See :meth:`SkalaClient.submit_many` for the arguments. ``journal`` may also be a
    :class:`~skala_async._journal.Journal` already open (and locked) by the caller, who
    closes it.
    """
    concurrency = _check_concurrency(concurrency)
    check_timeout(wait_timeout, "wait_timeout")
    owned = journal is not None and not isinstance(journal, Journal)
    jr = journal if journal is None or isinstance(journal, Journal) else Journal(journal)
    try:
        run = _Run(
            client,
            drafts,
            concurrency=concurrency,
            journal=jr,
            wait=wait,
            wait_timeout=wait_timeout,
            resend_uncertain=resend_uncertain,
        )
        runner = asyncio.ensure_future(run.run())
    except BaseException:
        if owned and jr is not None:
            jr.close()  # opened here: never left to the garbage collector
        raise
    try:
        while (result := await run.results.get()) is not None:
            yield result
        await runner  # re-raise an unexpected error of the run itself
    finally:
        if not runner.done():
            runner.cancel()
            # gather, not a suppressed await: a cancel aimed at the caller still propagates
            await asyncio.gather(runner, return_exceptions=True)
        if owned and jr is not None:
            jr.close()


def report_of(results: Iterable[BulkResult]) -> BulkReport:
    """A :class:`BulkReport` of ``results`` in input order."""
    return BulkReport(tuple(sorted(results, key=lambda r: r.index)))


def check_progress(progress: object) -> bool:
    """Refuse a ``progress=`` that is not a bool (before anything is sent)."""
    if not isinstance(progress, bool):
        raise TypeError(
            f"progress must be True or False, got {type(progress).__name__}: it shows a "
            "progress bar when tqdm is installed"
        )
    return progress


def progress_bar(drafts: object) -> Any:
    """A ``tqdm.auto`` bar for a bulk run, or ``None`` when tqdm is not installed.

    ``tqdm.auto`` draws a widget in Jupyter (with ipywidgets) and text on stderr
    elsewhere. Its total is ``len(drafts)`` when the inputs have a length.
    """
    try:
        with warnings.catch_warnings():
            # In Jupyter without ipywidgets tqdm warns and falls back to a text bar.
            warnings.filterwarnings("ignore", message="IProgress not found")
            auto = importlib.import_module("tqdm.auto")
    except ImportError:
        log.debug("progress=True: tqdm is not installed, so no progress bar is shown")
        return None
    total = len(drafts) if isinstance(drafts, Sized) else None
    return auto.tqdm(total=total, desc="tickets", unit="input", dynamic_ncols=True)


async def collect(results: AsyncIterator[BulkResult], bar: Any = None) -> BulkReport:
    """Every result of a run in a :class:`BulkReport`, advancing ``bar`` as each ends."""
    collected: list[BulkResult] = []
    counts = {o.value: 0 for o in BulkOutcome}
    try:
        async for result in results:
            collected.append(result)
            if bar is not None:
                counts[result.outcome.value] += 1
                bar.set_postfix(counts, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report_of(collected)


def counts_text(counts: Mapping[str, int]) -> str:
    """``created 12 · rejected 1 · uncertain 0 · failed 0``."""
    return " · ".join(f"{k} {v}" for k, v in counts.items())
