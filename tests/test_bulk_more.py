"""More of bulk submission: inputs of the wrong type, connection failures, the journal with
attachments and with ``wait=True``, waits that time out, and the report's views."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.bulk import BulkOutcome, BulkReport
from skala_async.testing import SkalaSandbox, sandbox_client


def draft(sb: SkalaSandbox, i: int, **kw: object) -> skala.TicketDraft:
    return skala.TicketDraft(sb.customer_id, f"ticket {i}", f"body {i}", **kw)  # type: ignore[arg-type]


def journal_rows(path: Path) -> list[tuple[str, str | None]]:
    # closing(): a connection's own `with` ends a transaction but leaves it open.
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT state, status FROM inputs ORDER BY position").fetchall()


async def test_an_input_that_is_not_a_draft_is_rejected_in_its_place(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    items = [draft(skala_sandbox, 0), {"summary": "a dict"}, draft(skala_sandbox, 2)]
    report = await skala_client.create_many(items, concurrency=2)  # type: ignore[arg-type]
    assert [r.outcome for r in report] == [
        BulkOutcome.CREATED,
        BulkOutcome.REJECTED,
        BulkOutcome.CREATED,
    ]
    error = report.results[1].error
    assert isinstance(error, skala.ValidationError)
    assert error.problems == ("input 1: expected a TicketDraft, got dict",)
    assert len(skala_sandbox.tickets) == 2
    assert f"{report.results[1].outcome}" == "rejected"  # str() of an outcome is its value


async def test_refused_connections_are_failed_not_uncertain(skala_sandbox: SkalaSandbox) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with skala.SkalaClient(
        token="t", base_url=f"http://127.0.0.1:{port}", retry=skala.RetryPolicy(attempts=1)
    ) as client:
        report = await client.create_many([draft(skala_sandbox, i) for i in range(3)])
    assert report.counts == {"created": 0, "rejected": 0, "uncertain": 0, "failed": 3}
    for r in report:
        assert isinstance(r.error, skala.TransportError)
        assert r.error.request_sent is False  # surely never reached a server: safe to resend


async def test_journal_keys_by_content_including_attachments(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    receipt = tmp_path / "receipt.pdf"
    receipt.write_bytes(b"%PDF-1.4 first version")
    journal = tmp_path / "j.sqlite"
    items = [draft(skala_sandbox, 0, files=[receipt])]

    first = await skala_client.create_many(items, journal=journal)
    assert first.counts["created"] == 1
    again = await skala_client.create_many(items, journal=journal)
    assert [r.from_journal for r in again] == [True]  # same content: not sent again
    assert again.results[0].ticket_id == first.results[0].ticket_id

    receipt.write_bytes(b"%PDF-1.4 second version")  # same name, other bytes: another input
    changed = await skala_client.create_many(
        [draft(skala_sandbox, 0, files=[receipt])], journal=journal
    )
    assert [r.from_journal for r in changed] == [False]
    assert len(skala_sandbox.tickets) == 2
    assert changed.results[0].key != first.results[0].key


async def test_rerun_with_wait_waits_for_tickets_from_the_journal(
    skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    skala_sandbox.processing_delay = None  # PENDING until completed by hand
    journal = tmp_path / "run.sqlite"
    items = [draft(skala_sandbox, i, reference=f"r{i}") for i in range(3)]
    async with sandbox_client(skala_sandbox) as client:
        first = await client.create_many(items, journal=journal)
        assert {r.ticket.status for r in first.created} == {skala.TicketStatus.PENDING}  # type: ignore[union-attr]
        assert journal_rows(journal) == [("created", "PENDING")] * 3

        for ticket_id in list(skala_sandbox.tickets):
            skala_sandbox.complete(ticket_id)
        second = await client.create_many(items, journal=journal, wait=True, wait_timeout=10)
        assert all(r.from_journal for r in second)
        assert {r.ticket.status for r in second} == {skala.TicketStatus.CREATED}  # type: ignore[union-attr]
        assert all(r.issue_key for r in second)
        assert journal_rows(journal) == [("created", "CREATED")] * 3  # the outcome is kept

        gets = skala_sandbox.count("get")
        third = await client.create_many(items, journal=journal, wait=True, wait_timeout=10)
        assert [r.issue_key for r in third] == [r.issue_key for r in second]
        assert skala_sandbox.count("get") == gets  # final in the journal: no GET needed
    assert skala_sandbox.count("create") == 3


async def test_a_wait_that_times_out_keeps_the_ticket_created(
    skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    skala_sandbox.processing_delay = None
    journal = tmp_path / "run.sqlite"
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(
            [draft(skala_sandbox, 0, reference="slow")],
            journal=journal,
            wait=True,
            wait_timeout=0.1,
        )
    [r] = report.results
    assert r.outcome is BulkOutcome.CREATED
    assert isinstance(r.error, skala.WaitTimeoutError)
    assert r.ticket is not None
    assert r.ticket.status is skala.TicketStatus.PENDING
    assert r.as_row()["error"].startswith("WaitTimeoutError: ")
    assert journal_rows(journal) == [("created", "PENDING")]  # not final: not recorded as such


@pytest.mark.parametrize("bad", [0, -1.0])
async def test_wait_timeout_must_be_positive(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, bad: float
) -> None:
    with pytest.raises(ValueError, match="wait_timeout must be > 0"):
        await skala_client.create_many([draft(skala_sandbox, 0)], wait=True, wait_timeout=bad)
    assert skala_sandbox.requests == []


async def test_report_views_of_a_clean_run(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    report = await skala_client.create_many([draft(skala_sandbox, i) for i in range(2)])
    assert isinstance(report, BulkReport)
    assert report.not_created == []
    assert len(report.created) == 2
    page = report._repr_html_()
    assert "<p>2 inputs</p>" in page
    assert "skala-bulk-failures" not in page  # no failure table when nothing failed
    assert "<th style='text-align:left'>created</th><td>2</td>" in page


async def test_report_html_lists_at_most_50_failures(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    bad = [skala.TicketDraft(skala_sandbox.customer_id, "", "d") for _ in range(53)]
    report = await skala_client.create_many(bad)
    page = report._repr_html_()
    assert page.count("<td>rejected</td>") == 50
    assert "<p>… and 3 more</p>" in page
    assert skala_sandbox.requests == []
