"""Bulk runs: leaving or cancelling submit_many early, one ticket per reference, reruns."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.testing import Fault, SkalaSandbox


def drafts(sb: SkalaSandbox, n: int, **kw: str) -> list[skala.TicketDraft]:
    return [
        skala.TicketDraft(sb.customer_id, f"t{i}", "d", reference=kw.get("ref", f"r{i}"))
        for i in range(n)
    ]


async def test_leaving_submit_many_early_returns_promptly(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    results = skala_client.submit_many(
        drafts(skala_sandbox, 300), concurrency=4, journal=tmp_path / "j.sqlite"
    )
    async for _ in results:
        await asyncio.sleep(0.3)  # let the workers fill the results queue behind us
        break
    await asyncio.wait_for(results.aclose(), 5)  # type: ignore[attr-defined]
    sent = skala_sandbox.count("create")
    await asyncio.sleep(0.1)
    assert skala_sandbox.count("create") == sent  # nothing goes on after the exit


async def test_cancelling_the_reader_of_submit_many_propagates(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    async def read_all() -> None:
        async for _ in skala_client.submit_many(drafts(skala_sandbox, 300), concurrency=2):
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_one_reference_one_ticket_even_when_concurrency_halves(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    skala_sandbox.inject("create", Fault.http(429, retry_after=0.05), times=3)
    twice = [*drafts(skala_sandbox, 40), *drafts(skala_sandbox, 40)]
    report = await skala_client.create_many(twice, concurrency=8, journal=tmp_path / "j.db")
    assert report.counts["created"] == 40
    assert report.counts["rejected"] == 40
    per_summary = collections.Counter(t.summary for t in skala_sandbox.tickets.values())
    assert len(per_summary) == 40
    assert max(per_summary.values()) == 1


async def test_rerun_with_a_row_added_on_top_keeps_the_earlier_tickets(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    first = await skala_client.create_many(drafts(skala_sandbox, 5), journal=journal)
    new = skala.TicketDraft(skala_sandbox.customer_id, "new", "d", reference="new")
    second = await skala_client.create_many([new, *drafts(skala_sandbox, 5)], journal=journal)
    assert second.counts == {"created": 6, "rejected": 0, "uncertain": 0, "failed": 0}
    assert [r.ticket_id for r in second.results[1:]] == [r.ticket_id for r in first]
    assert all(r.from_journal for r in second.results[1:])
    assert len(skala_sandbox.tickets) == 6
