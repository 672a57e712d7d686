"""The journal's group commits, seen from the wire and from the journal file itself.

A run claims its inputs a block at a time (as many as its concurrency, 16 at most), in one
transaction with the outcomes queued since, and reports a result only once its outcome is
committed. These tests put a small recording
proxy between the client and a sandbox: when a create reaches it, it reads the journal
through a separate read-only SQLite connection, as another process would after a crash,
and records what the journal said at that instant.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
from skala_async._journal import Journal
from skala_async.bulk import BulkOutcome
from skala_async.testing import FAST_POLL, Fault, SkalaSandbox, sandbox_client

SUMMARY = re.compile(rb"bulk ticket (\d+)")


def journal_states(path: Path) -> dict[str, tuple[str, str | None]]:
    """{key: (state, ticket_id)} read through a connection of its own (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {k: (s, t) for k, s, t in db.execute("SELECT key, state, ticket_id FROM inputs")}
    finally:
        db.close()


def drafts(sb: SkalaSandbox, n: int) -> list[skala.TicketDraft]:
    return [
        skala.TicketDraft(sb.customer_id, f"bulk ticket {i}", f"input {i}", reference=f"r{i}")
        for i in range(n)
    ]


class Recorder:
    """A proxy to the sandbox that reads the journal whenever a create arrives."""

    def __init__(self, sb: SkalaSandbox, journal: Path) -> None:
        self.sb = sb
        self.journal = journal
        #: For each create received: (its input number, the journal at that instant).
        self.seen: list[tuple[int, dict[str, tuple[str, str | None]]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path.startswith("/api/v1/supportTickets"):
            match = SUMMARY.search(body)
            assert match is not None
            self.seen.append((int(match.group(1)), journal_states(self.journal)))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.sb.url + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            payload = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=payload,
                headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
            )


@pytest.fixture
async def sb() -> AsyncIterator[SkalaSandbox]:
    async with SkalaSandbox(processing_delay=0.01) as sandbox:
        yield sandbox


@pytest.fixture
async def recorder(sb: SkalaSandbox, tmp_path: Path) -> AsyncIterator[Recorder]:
    rec = Recorder(sb, tmp_path / "run.sqlite")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


def client_via(rec: Recorder) -> skala.SkalaClient:
    sb = rec.sb
    return skala.SkalaClient(
        sb.client_id, sb.client_secret, base_url=rec.url, poll=FAST_POLL, trust_env=False
    )


async def create_all_via(recorder: Recorder, n: int, concurrency: int) -> None:
    """Send ``n`` drafts through the recorder with a journal; all must be created."""
    async with client_via(recorder) as client:
        report = await client.create_many(
            drafts(recorder.sb, n), concurrency=concurrency, journal=recorder.journal
        )
    assert report.counts["created"] == n


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_every_create_reaches_the_server_after_its_claim_is_committed(
    recorder: Recorder, concurrency: int
) -> None:
    n = 40
    await create_all_via(recorder, n, concurrency)
    assert sorted(i for i, _ in recorder.seen) == list(range(n))  # each sent once
    for i, journal in recorder.seen:
        # Its claim was on disk (seen by another connection) when the create arrived.
        assert journal[f"ref:r{i}"][0] == "sending", (i, journal.get(f"ref:r{i}"))
        # No entry of the run is missing: inputs not yet claimed have none.
        assert {int(k[5:]) for k in journal} >= {i}
    # The earlier outcomes were committed along the way, not only at the end.
    assert any(state == "created" for _, journal in recorder.seen for state, _ in journal.values())
    final = journal_states(recorder.journal)
    assert {k: s for k, (s, _) in final.items()} == {f"ref:r{i}": "created" for i in range(n)}
    assert {t for _, t in final.values()} == set(recorder.sb.tickets)


async def test_a_result_is_reported_only_once_its_outcome_is_committed(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "run.sqlite"
    items = drafts(sb, 60)
    items[7] = skala.TicketDraft("not-a-customer", "bulk ticket 7", "x", reference="r7")
    seen = 0
    async with sandbox_client(sb) as client:
        async for result in client.submit_many(items, concurrency=8, journal=journal):
            state, ticket_id = journal_states(journal)[result.key]
            assert state == result.outcome.value, result
            assert ticket_id == (str(result.ticket_id) if result.ticket_id else None)
            seen += 1
    assert seen == 60


async def test_a_slow_reader_gets_every_result_once(sb: SkalaSandbox, tmp_path: Path) -> None:
    """Results pile up while the reader is away: more outcomes are committed than the
    results queue holds; each is still reported exactly once."""
    journal = tmp_path / "run.sqlite"
    n = 300
    indexes: list[int] = []
    async with sandbox_client(sb) as client:
        async for result in client.submit_many(drafts(sb, n), concurrency=24, journal=journal):
            if not indexes:  # let the workers fill the queue, and then some
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while sb.count("create") < 140 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)
            assert result.outcome is BulkOutcome.CREATED, result
            indexes.append(result.index)
    assert sorted(indexes) == list(range(n))
    assert sb.count("create") == n
    assert collections.Counter(s for s, _ in journal_states(journal).values()) == {"created": n}


async def test_a_reader_that_leaves_early_leaves_a_journal_that_duplicates_nothing(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "run.sqlite"
    n = 80
    async with sandbox_client(sb) as client:
        got = 0
        # aclosing: the run ends (and closes its journal) when the reader leaves, not
        # whenever the abandoned generator is collected.
        async with contextlib.aclosing(
            client.submit_many(drafts(sb, n), concurrency=8, journal=journal)
        ) as results:
            async for _ in results:
                got += 1
                if got == 10:
                    break
        states = journal_states(journal)  # closed: every outcome queued was committed
        for ticket_id, ticket in sb.tickets.items():
            key = f"ref:r{ticket.summary.split()[-1]}"
            state, recorded = states[key]
            # created with this ticket, or claimed when the reader left (its answer lost)
            assert (state, recorded) in (("created", ticket_id), ("sending", None)), key
        assert sum(1 for s, _ in states.values() if s == "created") >= 10
        again = await client.create_many(drafts(sb, n), concurrency=8, journal=journal)
    per_summary = collections.Counter(t.summary for t in sb.tickets.values())
    assert max(per_summary.values()) == 1  # no input created twice
    assert again.counts["created"] + again.counts["uncertain"] == n
    for result in again.not_created:  # only inputs whose claim was left sending
        assert states[result.key][0] == "sending"


async def test_an_outcome_queued_is_committed_with_the_next_claim(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    try:
        claim = journal.claim("a", 0, None, None, takeover=False)
        assert claim == 1
        settled = journal.settle_grouped("a", claim, "created", ticket_id="t-a")
        assert journal_states(path)["a"] == ("sending", None)  # queued, not yet committed
        assert journal.claim("b", 1, None, None, takeover=False) == 1  # commits both
        assert settled.done()
        assert settled.result() == 1
        assert journal_states(path) == {"a": ("created", "t-a"), "b": ("sending", None)}
        alone = journal.settle_grouped("b", 1, "failed", error="x")
        assert await alone == 1  # no claim came: committed FLUSH_DELAY later
        assert journal_states(path)["b"] == ("failed", None)
        stale = journal.settle_grouped("b", 1, "created", ticket_id="t-b")
        assert await stale == 0  # the claim's version moved on: nothing changed
        last = journal.settle_grouped("b", 2, "created", ticket_id="t-b")
    finally:
        journal.close()  # commits what is still queued
    assert last.result() == 1
    assert journal_states(path)["b"] == ("created", "t-b")
    late = journal.settle_grouped("a", 2, "failed")
    outcome = await late
    assert isinstance(outcome, skala.JournalError)
    assert "is closed" in str(outcome)
    with pytest.raises(skala.JournalError, match="is closed"):
        journal.claim("c", 2, None, None, takeover=False)


@pytest.mark.parametrize(
    ("concurrency", "block", "claimed_first"),
    [(1, 1, 1), (4, 4, 4), (24, 16, 32)],  # 24 workers: a second block before any answer
)
async def test_inputs_are_claimed_a_block_at_a_time_before_the_first_is_sent(
    recorder: Recorder, concurrency: int, block: int, claimed_first: int
) -> None:
    n = 40
    await create_all_via(recorder, n, concurrency)
    # The first create to arrive finds whole blocks claimed, and nothing else written yet.
    _, first = recorder.seen[0]
    assert first == {f"ref:r{i}": ("sending", None) for i in range(claimed_first)}
    # Never more claimed ahead than a block beyond the creates in flight.
    for _, journal in recorder.seen:
        assert sum(1 for state, _ in journal.values() if state == "sending") <= concurrency + block


async def test_claims_not_sent_when_the_reader_leaves_are_given_back(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "run.sqlite"
    n = 40
    for _ in range(n):
        sb.inject("create", Fault.delay(0.2))
    async with sandbox_client(sb) as client:
        async with contextlib.aclosing(
            client.submit_many(drafts(sb, n), concurrency=4, journal=journal)
        ) as results:
            async for _ in results:
                break
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            rows = {k: (s, e) for k, s, e in db.execute("SELECT key, state, error FROM inputs")}
        finally:
            db.close()
        again = await client.create_many(drafts(sb, n), concurrency=4, journal=journal)
    given_back = {int(k[5:]) for k, (s, _) in rows.items() if s == "failed"}
    in_flight = {int(k[5:]) for k, (s, _) in rows.items() if s == "sending"}
    assert given_back  # the block claimed with the last creates was not all sent
    for i in given_back:
        assert rows[f"ref:r{i}"][1] == "claimed, never sent: the run ended first"
    sends = collections.Counter(
        int(r.fields["summary"].split()[-1]) for r in sb.requests_to("create")
    )
    assert max(sends.values()) == 1  # no input sent twice, by either run
    assert {r.index for r in again.created} >= given_back  # sent by the rerun only
    # Not created by the rerun: only inputs whose create the first run had sent.
    assert {r.index for r in again.not_created} == in_flight
    assert all(sends[i] == 1 for i in in_flight)


async def test_an_asynchronous_source_is_not_read_ahead(sb: SkalaSandbox, tmp_path: Path) -> None:
    """The next input of an asynchronous source may be long to come: the inputs already
    given are claimed and sent without waiting for it."""
    items = drafts(sb, 3)
    seen_before: list[int] = []

    async def source() -> AsyncIterator[skala.TicketDraft]:
        loop = asyncio.get_running_loop()
        for i, draft in enumerate(items):
            if i:  # wait until the previous input reached the server (bounded: no hang)
                deadline = loop.time() + 10
                while sb.count("create") < i and loop.time() < deadline:
                    await asyncio.sleep(0.005)
            seen_before.append(sb.count("create"))
            yield draft

    async with sandbox_client(sb) as client:
        report = await client.create_many(source(), concurrency=8, journal=tmp_path / "j.sqlite")
    assert report.counts["created"] == 3
    assert seen_before == [0, 1, 2]


async def test_claims_made_before_an_account_wide_refusal_are_settled_failed(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    """Support tickets are turned off once the first create is answered: the block claimed
    then waits for send slots behind slow creates, which end in 20061; its inputs are never
    sent, and their entries say ``failed``, not ``sending``."""
    journal = tmp_path / "run.sqlite"
    n = 30
    sb.inject("create", Fault.delay(0))
    for _ in range(n):
        sb.inject("create", Fault.delay(0.3))

    async def turn_off() -> None:
        while sb.count("create") < 1:
            await asyncio.sleep(0.005)
        sb.support_tickets_enabled = False

    async with sandbox_client(sb) as client:
        switch = asyncio.ensure_future(asyncio.wait_for(turn_off(), 30))
        first = await client.create_many(drafts(sb, n), concurrency=4, journal=journal)
        await switch
        assert first.counts["created"] == 1
        rows = journal_states(journal)
        states = collections.Counter(s for s, _ in rows.values())
        assert "sending" not in states  # claimed, then not sent: recorded as failed
        assert states["failed"] >= 1
        failed = {r.key for r in first if r.outcome is BulkOutcome.FAILED}
        assert {k for k, (s, _) in rows.items() if s == "failed"} <= failed
        sb.support_tickets_enabled = True
        again = await client.create_many(drafts(sb, n), concurrency=4, journal=journal)
    assert again.counts["created"] == n
    assert sum(1 for r in again if r.from_journal) == 1  # the one created at first
    assert max(collections.Counter(t.summary for t in sb.tickets.values()).values()) == 1
    assert len(sb.tickets) == n


def test_release_gives_back_what_the_entry_said_before_the_claim(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    try:
        assert journal.claim("new", 0, None, None, takeover=False) == 1
        journal.settle("new", 1, "uncertain", error="502 Bad Gateway")
        seen = journal.get("new")
        assert seen is not None
        assert seen.version == 2
        taken = journal.claim("new", 0, None, seen, takeover=True)  # resend_uncertain
        assert taken == 3
        assert journal.claim("other", 1, None, None, takeover=False) == 1
        assert journal.claim("moved", 2, None, None, takeover=False) == 1
        journal.settle("moved", 1, "created", ticket_id="t-moved")  # sent after all
        released = journal.release([("new", 3, seen), ("other", 1, None), ("moved", 1, None)])
        assert released == 2
        new, other, moved = journal.get("new"), journal.get("other"), journal.get("moved")
        assert new is not None
        assert (new.state, new.error) == ("uncertain", "502 Bad Gateway")
        assert other is not None
        assert other.state == "failed"
        assert moved is not None
        assert (moved.state, moved.ticket_id) == ("created", "t-moved")
    finally:
        journal.close()
