"""A wait tells the truth: it never times out without asking, on every face of the library.

The fault matrix has the core cells (a short timeout, refused webhook deliveries); here are
the other ways a wait can reach its deadline: the CLI's ``wait`` and ``create --wait``,
``bulk --wait`` and ``create_many(wait=True)``, the sync facade, a ``watch()`` whose
consumer holds an item past the deadline, a server asking to pause beyond it, and the
deadline of the last poll itself. Every ticket here is done long before the deadline, and
the default ``PollPolicy`` would first ask only after it (1 s), so a wait that does not ask
before giving up fails these tests.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

import skala_async as skala
import skala_async.sync as sync
from skala_async.cli import main
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from skala_async.webhooks import WebhookReceiver
from tests.helpers.cli import create_args, creds, threaded_sandbox
from tests.helpers.webhooks import serve

#: Shorter than the default first poll (1 s after the 202).
SHORT = 0.7
DEFAULT_POLL = skala.PollPolicy()
HOUR = skala.PollPolicy(first_delay=3600, min_interval=3600, max_interval=3600)


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.05) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ CLI


def test_cli_create_wait_with_a_short_timeout_asks_before_giving_up(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(create_args(sb, "--wait", "--timeout", str(SHORT), "--json")) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "CREATED"
    assert sb.count("get") == 1  # the last poll before the deadline


def test_cli_wait_with_a_short_timeout_asks_again_before_giving_up(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sb.processing_delay = None
    assert main(create_args(sb)) == 0
    ticket_id = capsys.readouterr().out.strip()
    loop = sb._loop
    assert loop is not None

    def finish_after_the_first_get() -> None:
        for _ in range(1000):
            if sb.count("get"):
                loop.call_soon_threadsafe(sb.complete, ticket_id)
                return
            time.sleep(0.01)

    finisher = threading.Thread(target=finish_after_the_first_get)
    finisher.start()
    try:
        # A rebuilt handle asks at once (PENDING), then not again for 1 s: past the deadline.
        assert main(["wait", ticket_id, *creds(sb), "--timeout", str(SHORT), "--json"]) == 0
    finally:
        finisher.join()
    assert json.loads(capsys.readouterr().out)["status"] == "CREATED"
    assert sb.count("get") == 2


def test_cli_bulk_wait_with_a_short_wait_timeout(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "reference"])
        for i in range(4):
            w.writerow([sb.customer_id, f"Ticket {i}", f"Body {i}", f"r{i}"])
    argv = ["bulk", str(src), *creds(sb), "--wait", "--wait-timeout", str(SHORT)]
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    with (tmp_path / "in.csv.results.csv").open(newline="", encoding="utf-8") as f:
        assert {r["status"] for r in csv.DictReader(f)} == {"CREATED"}
    assert sb.count("get") == 4


# ------------------------------------------------------------------------------ library


async def test_create_many_wait_with_a_short_wait_timeout() -> None:
    async with (
        SkalaSandbox(processing_delay=0.05) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL) as client,
    ):
        drafts = [skala.TicketDraft(sandbox.customer_id, f"s{i}", "d") for i in range(5)]
        report = await client.create_many(drafts, wait=True, wait_timeout=SHORT)
        assert [r.error for r in report.results] == [None] * 5
        assert {r.ticket.status for r in report.results if r.ticket} == {skala.TicketStatus.CREATED}
        assert sandbox.count("get") == 5


def test_sync_wait_with_a_short_timeout() -> None:
    with (
        sync.Sandbox(processing_delay=0.05) as sandbox,
        sync.SkalaClient(
            client_id=sandbox.client_id,
            client_secret=sandbox.client_secret,
            base_url=sandbox.url,
        ) as client,
    ):
        handle = client.create_ticket(sandbox.customer_id, "Sync", "A short wait.")
        assert handle.wait_until_created(timeout=SHORT).status is skala.TicketStatus.CREATED
        assert [t.status.value for t in client.ticket_handle(handle.ticket_id).watch(SHORT)] == [
            "CREATED"
        ]


async def test_a_watch_held_past_its_deadline_asks_once_more() -> None:
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "Watched", "Slowly.")
        seen: list[str] = []
        async for ticket in handle.watch(timeout=0.3):
            seen.append(ticket.status.value)
            if ticket.status is skala.TicketStatus.PENDING:
                # The consumer holds the first item past the deadline; the ticket finishes.
                sandbox.complete(str(handle.ticket_id))
                await asyncio.sleep(0.5)
        assert seen == ["PENDING", "CREATED"]
        assert sandbox.count("get") == 1


async def test_a_watch_held_past_its_deadline_still_times_out_after_asking() -> None:
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "Watched", "Slowly.")
        watch = handle.watch(timeout=0.3)
        assert (await anext(watch)).status is skala.TicketStatus.PENDING
        await asyncio.sleep(0.5)
        with pytest.raises(skala.WaitTimeoutError, match=r"still PENDING after 0\.3 s"):
            await anext(watch)
        assert sandbox.count("get") == 1


async def test_the_last_poll_is_cut_to_the_deadline() -> None:
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL, retry=skala.RetryPolicy(attempts=1)) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "Slow", "GET.")
        sandbox.inject("get", Fault.delay(5.0))
        # Sent, and given up at the wait's deadline: not 5 s later (that would be a plain
        # TimeoutError from the bound on a hang here).
        with pytest.raises(skala.WaitTimeoutError):
            await asyncio.wait_for(handle.wait_until_created(timeout=SHORT), 3.0)
        assert client.request_counts["get"] == 1


async def test_a_pause_asked_past_the_deadline_is_honoured() -> None:
    """A 429 whose ``Retry-After`` outlasts the deadline is the server's last word: the last
    poll is not sent into the pause."""
    async with (
        SkalaSandbox(processing_delay=0.05) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "Paused", "By the server.")
        sandbox.inject("get", Fault.http(429, retry_after=30), times=10)
        with pytest.raises(skala.WaitTimeoutError):
            await handle.wait_until_created(timeout=2.0)
        assert sandbox.count("get") == 1  # the scheduled poll at 1 s; then the pause


# ------------------------------------------------------------------------------ webhooks


async def test_a_refused_delivery_is_logged_once_and_a_verified_one_restores_trust(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="skala_async")
    secret = "wait-truth-webhook-secret"
    async with (
        SkalaSandbox(processing_delay=0.05, webhook_secret=secret) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL, webhook_poll=HOUR) as client,
        serve(client.webhook_handler(secret)) as url,
    ):
        sandbox.webhook_url = url
        sandbox.webhook_wrong_signature = True
        handles = [await client.create_ticket(sandbox.customer_id, "s", "d") for _ in range(3)]
        tickets = await asyncio.wait_for(
            asyncio.gather(*(h.wait_until_created(timeout=None) for h in handles)), 30
        )
        assert {t.status for t in tickets} == {skala.TicketStatus.CREATED}
        await sandbox.wait_for_webhooks(timeout=5)
        assert [d.result for d in sandbox.webhook_deliveries] == [401] * 3
        refused = "a webhook delivery was refused (401 invalid signature); polling normally"
        assert caplog.text.count(refused) == 1
        assert client._wait_policy() is DEFAULT_POLL
        # The dashboard is fixed: the next verified delivery brings the slow fallback back.
        sandbox.webhook_wrong_signature = False
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        await asyncio.wait_for(handle.wait_until_created(timeout=None), 30)
        await sandbox.wait_for_webhooks(timeout=5)
        assert client._wait_policy() is HOUR
        assert "webhooks arrive again" in caplog.text


async def test_a_receiver_without_a_client_refuses_as_before() -> None:
    receiver = WebhookReceiver("a-secret")
    assert await receiver.process(b"{}", {}) == (401, "invalid signature")
    assert receiver.counts["invalid_signature"] == 1


async def test_a_probe_that_is_not_a_delivery_keeps_the_slow_fallback() -> None:
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL, webhook_poll=HOUR) as client,
    ):
        handler = client.webhook_handler("a-secret")
        app = web.Application()
        app.router.add_route("*", "/hook", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            await writer.wait_closed()
        finally:
            await runner.cleanup()
        assert status_line.split()[1] == b"405"
        assert client._wait_policy() is HOUR
        assert sandbox.requests == []


async def test_the_last_poll_does_not_queue_for_a_poll_slot() -> None:
    """Another wait's slow GET holds the only poll slot past this wait's deadline."""
    async with (
        SkalaSandbox(processing_delay=0.05) as sandbox,
        sandbox_client(sandbox, poll=DEFAULT_POLL, max_concurrent_polls=1) as client,
    ):
        slow = await client.create_ticket(sandbox.customer_id, "Slow", "Its GET hangs.")
        quick = await client.create_ticket(sandbox.customer_id, "Quick", "Done in 50 ms.")
        sandbox.inject("get", Fault.delay(5.0))
        holder = asyncio.ensure_future(
            client.ticket_handle(slow.ticket_id).wait_until_created(timeout=10)
        )
        while client.request_counts["get"] == 0 and not holder.done():
            await asyncio.sleep(0.01)  # the hanging GET is in flight, holding the slot
        try:
            ticket = await asyncio.wait_for(quick.wait_until_created(timeout=SHORT), 3.0)
            assert ticket.status is skala.TicketStatus.CREATED
        finally:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
