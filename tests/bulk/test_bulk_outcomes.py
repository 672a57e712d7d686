"""Bulk submission against the sandbox: one definite outcome per input, journal, faults."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import skala_async as skala
from skala_async._transport import AiohttpTransport
from skala_async.bulk import BulkOutcome, BulkReport
from skala_async.testing import Fault, SkalaSandbox, sandbox_client


def drafts(sb: SkalaSandbox, n: int, *, start: int = 0) -> list[skala.TicketDraft]:
    return [
        skala.TicketDraft(sb.customer_id, f"ticket {i}", f"body {i}", reference=f"ref-{i}")
        for i in range(start, start + n)
    ]


def tickets_by_summary(sb: SkalaSandbox) -> collections.Counter[str]:
    return collections.Counter(t.summary for t in sb.tickets.values())


async def test_every_input_gets_one_outcome_in_input_order(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    items = drafts(skala_sandbox, 10)
    items[3] = skala.TicketDraft(skala_sandbox.customer_id, "two\nlines", "x", reference="bad")
    no_email = skala_sandbox.add_customer(email=None)
    items[7] = skala.TicketDraft(no_email, "no email", "x", reference="no-email")
    report = await skala_client.create_many(items, concurrency=4)
    assert [r.index for r in report] == list(range(10))
    assert report.counts == {"created": 8, "rejected": 2, "uncertain": 0, "failed": 0}
    assert isinstance(report.results[3].error, skala.ValidationError)
    assert isinstance(report.results[7].error, skala.BadRequestError)
    for r in report.created:
        assert r.ticket is not None
        assert r.ticket.status is skala.TicketStatus.PENDING
        assert str(r.ticket_id) in skala_sandbox.tickets
        assert r.reference == f"ref-{r.index}"
    assert len(skala_sandbox.tickets) == 8
    assert "created=8" in repr(report)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "4"])
async def test_concurrency_must_be_a_positive_integer(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, bad: object
) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await skala_client.create_many(drafts(skala_sandbox, 2), concurrency=bad)  # type: ignore[arg-type]
    assert skala_sandbox.requests == []


async def test_inputs_are_consumed_lazily(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    pulled = 0

    def endless() -> Iterator[skala.TicketDraft]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield skala.TicketDraft(skala_sandbox.customer_id, f"t{i}", "d")
            i += 1

    results = skala_client.submit_many(endless(), concurrency=2)
    assert isinstance(results, AsyncIterator)
    seen = [await results.__anext__() for _ in range(5)]
    await results.aclose()  # type: ignore[attr-defined]
    assert len(seen) == 5
    assert pulled <= 5 + 2 + 1  # what was yielded, what was in flight, one being pulled


async def test_async_iterable_input_and_wait(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.outcome = lambda tid, fields: "FAILED" if "3" in fields["summary"] else "CREATED"

    async def source() -> AsyncIterator[skala.TicketDraft]:
        for d in drafts(skala_sandbox, 6):
            await asyncio.sleep(0)
            yield d

    report = await skala_client.create_many(source(), concurrency=3, wait=True, wait_timeout=10)
    assert report.counts["created"] == 6
    finals = {r.index: r.ticket.status for r in report if r.ticket is not None}
    assert finals[3] is skala.TicketStatus.FAILED
    assert all(finals[i] is skala.TicketStatus.CREATED for i in (0, 1, 2, 4, 5))
    assert all(r.issue_key for r in report if r.index != 3)


async def test_account_wide_error_stops_sending(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.support_tickets_enabled = False
    report = await skala_client.create_many(drafts(skala_sandbox, 30), concurrency=2)
    assert len(report) == 30
    assert report.counts["created"] == 0
    sent = skala_sandbox.count("create")
    assert sent <= 2  # the first answers; nothing new is sent afterwards
    assert report.counts["rejected"] == sent
    assert report.counts["failed"] == 30 - sent
    assert all(isinstance(r.error, skala.SupportTicketsNotEnabledError) for r in report)


async def test_ambiguous_failures_are_uncertain_never_resent(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("create", Fault.http(500))
    skala_sandbox.inject("create", Fault.drop_after_processing())
    report = await skala_client.create_many(drafts(skala_sandbox, 5), concurrency=1)
    assert report.counts == {"created": 3, "rejected": 0, "uncertain": 2, "failed": 0}
    assert skala_sandbox.count("create") == 5
    assert len(skala_sandbox.tickets) == 4  # the dropped answer did create its ticket


async def test_journal_rerun_does_not_resend(skala_sandbox: SkalaSandbox, tmp_path: Path) -> None:
    journal = tmp_path / "run.sqlite"
    items = drafts(skala_sandbox, 6)
    async with sandbox_client(skala_sandbox) as client:
        skala_sandbox.inject("create", Fault.http(502))  # input 0: uncertain
        first = await client.create_many(items, concurrency=1, journal=journal)
        assert first.counts == {"created": 5, "rejected": 0, "uncertain": 1, "failed": 0}
        sent = skala_sandbox.count("create")

        second = await client.create_many(items, concurrency=3, journal=journal)
        assert skala_sandbox.count("create") == sent  # nothing sent again
        assert [r.outcome for r in second] == [r.outcome for r in first]
        assert all(r.from_journal for r in second)
        assert [r.ticket_id for r in second.created] == [r.ticket_id for r in first.created]

        third = await client.create_many(
            items, concurrency=3, journal=journal, resend_uncertain=True
        )
        assert skala_sandbox.count("create") == sent + 1
        assert third.counts["created"] == 6
    assert max(tickets_by_summary(skala_sandbox).values()) == 1  # 502 created nothing here


async def test_journal_keys_by_content_without_reference(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    same = skala.TicketDraft(skala_sandbox.customer_id, "same", "same")
    journal = tmp_path / "j.sqlite"
    first = await skala_client.create_many([same, same], journal=journal)
    assert first.counts["created"] == 2  # two identical inputs are two inputs
    second = await skala_client.create_many([same, same, same], journal=journal)
    assert [r.from_journal for r in second] == [True, True, False]
    assert len(skala_sandbox.tickets) == 3


async def test_duplicate_reference_is_rejected_with_a_journal(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    a = skala.TicketDraft(skala_sandbox.customer_id, "a", "a", reference="x")
    b = skala.TicketDraft(skala_sandbox.customer_id, "b", "b", reference="x")
    report = await skala_client.create_many([a, b], concurrency=1, journal=tmp_path / "j.db")
    assert [r.outcome for r in report] == [BulkOutcome.CREATED, BulkOutcome.REJECTED]
    assert len(skala_sandbox.tickets) == 1


async def test_a_thousand_drafts_with_faults(skala_sandbox: SkalaSandbox) -> None:
    rng = random.Random(7)
    skala_sandbox.processing_delay = None
    faults = [
        Fault.http(429, retry_after=0.2),
        Fault.http(503, retry_after=0.2),
        Fault.http(500),
        Fault.http(502),
        Fault.drop(),
        Fault.drop_after_processing(),
        Fault.delay(0.6),
    ]
    # ~10 % of the creates get a fault, spread out: a fault then 9 clean requests on average.
    plan = [rng.choice(faults) if rng.random() < 0.1 else None for _ in range(1300)]
    for fault in plan:
        if fault is None:
            skala_sandbox.inject("create", Fault.delay(0))
        else:
            skala_sandbox.inject("create", fault)
    timeouts = skala.Timeouts(upload_read=0.3)
    loop = asyncio.get_running_loop()
    sends: list[float] = []
    pauses: list[tuple[float, float]] = []
    limited_answers: list[int] = []
    transport = AiohttpTransport(skala_sandbox.url, trust_env=False)

    class Recording:  # a Transport around the default one, noting when requests start
        async def send(self, request: skala.Request, **kwargs: Any) -> skala.RawResponse:
            sends.append(loop.time())
            response = await transport.send(request, **kwargs)
            if response.status in (429, 503):
                limited_answers.append(response.status)
            return response

        async def close(self) -> None:
            await transport.close()

    # trust_env=True: the default, not refused with transport= (the transport has its own).
    client = sandbox_client(skala_sandbox, timeouts=timeouts, trust_env=True, transport=Recording())
    async with client:
        pause = client.bus.pause

        def recording_pause(seconds: float) -> None:
            pause(seconds)
            pauses.append((loop.time(), client.bus.pause_until))  # type: ignore[attr-defined]

        client.bus.pause = recording_pause  # type: ignore[method-assign]
        report = await client.create_many(drafts(skala_sandbox, 1000), concurrency=8)
    await asyncio.sleep(0.7)  # let the slow requests finish on the server
    assert len(report) == 1000
    assert [r.index for r in report] == list(range(1000))
    counts = report.counts
    assert sum(counts.values()) == 1000
    assert counts["rejected"] == 0
    created_refs = collections.Counter(t.summary for t in skala_sandbox.tickets.values())
    assert max(created_refs.values()) == 1  # no input created twice
    for r in report.created:
        assert created_refs[f"ticket {r.index}"] == 1
    really_created_uncertain = sum(
        1 for r in report.of("uncertain") if created_refs[f"ticket {r.index}"]
    )
    assert len(skala_sandbox.tickets) == counts["created"] + really_created_uncertain
    for r in report.of("failed"):
        assert created_refs[f"ticket {r.index}"] == 0
    # No request was sent while a Retry-After pause was in force (measured where requests
    # start, in the client: arrival times at the server also depend on machine load).
    assert pauses
    for began, until in pauses:
        inside = [t for t in sends if began < t < until]
        assert inside == [], (began, until, inside[:3])
    # Each 429 or 503 with Retry-After that reached the client paused it. (The server may
    # have answered more: on a busy machine an answer can come after the client's
    # upload_read timeout of 0.3 s gave up on it.)
    limited = [r for r in skala_sandbox.requests if r.status in (429, 503) and r.fault]
    assert len(limited_answers) == len(pauses)
    assert 0 < len(pauses) <= len(limited)


async def test_sigkill_and_rerun_loses_nothing_and_duplicates_nothing(
    skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "job.sqlite"
    results = tmp_path / "results.jsonl"
    count = 80
    skala_sandbox.processing_delay = None
    for _ in range(count):  # every create is slow: kill certainly lands mid-flight
        skala_sandbox.inject("create", Fault.delay(0.05))
    env = {**os.environ, "SKALA_CLIENT_SECRET": skala_sandbox.client_secret}
    args = [
        sys.executable,
        "-m",
        "tests.helpers.bulk_job",
        skala_sandbox.url,
        skala_sandbox.client_id,
        skala_sandbox.customer_id,
        str(count),
        str(journal),
        str(results),
    ]
    cwd = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=cwd)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while skala_sandbox.count("create") < 25 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL
    sent_before_kill = skala_sandbox.count("create")
    assert 0 < sent_before_kill < count
    await asyncio.sleep(0.2)  # requests the dead process left in flight finish server-side

    results.write_text("")
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=cwd)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    by_ref = {row["reference"]: row for row in rows}
    assert sorted(by_ref) == sorted(f"ref-{i}" for i in range(count))  # all accounted for
    assert len(rows) == count
    created = collections.Counter(t.summary for t in skala_sandbox.tickets.values())
    assert max(created.values()) == 1  # no input created twice
    for i in range(count):
        row = by_ref[f"ref-{i}"]
        summary = f"bulk ticket {i}"
        if row["outcome"] == "created":
            assert created[summary] == 1
            assert row["ticket_id"] in skala_sandbox.tickets
        else:
            assert row["outcome"] == "uncertain", row  # died in flight: not resent
            assert created[summary] <= 1
    assert any(row["from_journal"] for row in rows)
    # At most 8 + 8 uncertain: the 8 in flight, and the block claimed with them (those not
    # sent yet, and those answered since the journal's last commit).
    assert sum(1 for row in rows if row["outcome"] == "created") >= count - 16


async def test_report_html_escapes(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    bad = skala.TicketDraft(
        skala_sandbox.customer_id, "x" * 300, "d", reference="<script>x</script>"
    )
    report = await skala_client.create_many([bad])
    page = report._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert str(uuid.UUID(int=0)) not in page


# ------------------------------------------------------------ inputs, waits and report views


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


async def test_waits_ending_in_any_order_are_each_reported_once(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    # Processing times drawn at random: the run wakes once per wait that ends, whatever
    # the order, and reports each input once.
    skala_sandbox.processing_delay = (0.01, 0.5)
    seen = []
    async with contextlib.aclosing(
        skala_client.submit_many(drafts(skala_sandbox, 40), concurrency=8, wait=True)
    ) as results:
        async for result in results:
            assert result.ticket is not None
            assert result.ticket.status is skala.TicketStatus.CREATED
            seen.append(result.index)
    assert sorted(seen) == list(range(40))


@pytest.mark.parametrize("failing", [0, 5])
async def test_an_unexpected_error_in_a_wait_ends_the_run(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    monkeypatch: pytest.MonkeyPatch,
    failing: int,
) -> None:
    # A wait that fails with something other than a SkalaError is a bug to surface, even
    # when it fails while inputs are still being sent (failing=0: the first wait, with
    # the other five still to create).
    from skala_async._waiting import TicketHandle

    real = TicketHandle.wait_until_created
    ids: dict[str, int] = {}

    def wait(self: TicketHandle, *args: Any, **kwargs: Any) -> Any:
        if ids.setdefault(str(self.ticket_id), len(ids)) == failing:

            async def boom() -> None:
                raise RuntimeError("not a SkalaError")

            return boom()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TicketHandle, "wait_until_created", wait)
    with pytest.raises(RuntimeError, match="not a SkalaError"):
        await skala_client.create_many(drafts(skala_sandbox, 6), concurrency=1, wait=True)
    assert len(skala_sandbox.tickets) == 6  # the inputs still to send were sent first
