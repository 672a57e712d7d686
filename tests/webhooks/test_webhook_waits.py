"""Webhooks end waits: the sandbox signs deliveries, the client wakes its handles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
from skala_async.testing import FAST_POLL, SkalaSandbox, sandbox_client
from skala_async.webhooks import (
    verify_and_parse,
    webhook_handler,
)
from tests.helpers.webhooks import (
    SECRET,
    SHORT_FALLBACK,
    Recorder,
    serve,
)


async def test_sandbox_deliveries_verify_and_parse(http: aiohttp.ClientSession) -> None:
    raw: list[tuple[bytes, dict[str, str]]] = []

    async def keep(request: web.Request) -> web.Response:
        raw.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    async with serve(keep) as url, SkalaSandbox(webhook_url=url, webhook_secret=SECRET) as sb:
        async with sandbox_client(sb) as client:
            handle = await client.create_ticket(sb.customer_id, "Ñandú", "descripción")
            await handle.wait_until_created(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
    [(body, headers)] = raw
    event = verify_and_parse(body, headers, SECRET, tolerance=30)
    assert event.ticket_id == handle.ticket_id
    assert event.ticket == handle.ticket
    assert body.isascii()


async def test_sandbox_switches(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder)
    async with (
        serve(handler) as url,
        SkalaSandbox(processing_delay=None, webhook_url=url, webhook_secret=SECRET) as sb,
    ):
        async with sandbox_client(sb) as client:
            ids = [
                str((await client.create_ticket(sb.customer_id, "s", "d")).ticket_id)
                for _ in range(6)
            ]

        async def finish(ticket_id: str, status: str = "CREATED") -> list[Any]:
            before = len(sb.webhook_deliveries)
            sb.complete(ticket_id, status)
            await sb.wait_for_webhooks(timeout=5)
            return [d.result for d in sb.webhook_deliveries[before:]]

        sb.webhook_duplicates = 3
        sb.webhook_out_of_order = 0.05
        assert sorted(await finish(ids[0]), key=str) == [200, 200, 200, 200]
        sb.webhook_duplicates = 0
        sb.webhook_out_of_order = False
        sb.webhook_wrong_signature = True
        assert await finish(ids[1]) == [401]
        sb.webhook_wrong_signature = False
        sb.webhook_drop = True
        assert await finish(ids[2]) == ["dropped"]
        sb.webhook_drop = 0.0
        sb.webhook_delay = 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await finish(ids[3], "FAILED") == [200]
        assert loop.time() - started >= 0.2
        sb.webhook_delay = (0.0, 0.01)
        sb.webhook_drop = 0.5
        sb.webhook_duplicates = 19
        results = await finish(ids[4])
        assert len(results) == 20
        assert set(results) <= {200, "dropped"}
        sb.webhook_drop = False
        sb.webhook_duplicates = 0
        sb.webhook_secret = None
        sb.webhook_wrong_signature = True  # a wrong signature even without a secret
        assert await finish(ids[5]) == [401]
    # Four copies and up to twenty copies: each (ticket, status) reached the callback once.
    delivered = [str(e.ticket_id) for e in recorder.events]
    assert delivered[:2] == [ids[0], ids[3]]
    assert len(delivered) == len(set(delivered)) >= 2


def test_sandbox_switch_validation() -> None:
    sb = SkalaSandbox()
    for name, value in [
        ("webhook_duplicates", -1),
        ("webhook_duplicates", 1.5),
        ("webhook_duplicates", True),
        ("webhook_delay", -1),
        ("webhook_delay", (2, 1)),
        ("webhook_delay", None),
        ("webhook_drop", 1.5),
        ("webhook_drop", "yes"),
        ("webhook_out_of_order", -0.1),
    ]:
        with pytest.raises(ValueError, match=name):
            setattr(sb, name, value)
    sb.webhook_delay = (0, 1)
    assert sb.webhook_delay == (0.0, 1.0)


# ------------------------------------------------------------------------------ waiting


@asynccontextmanager
async def webhook_setup(
    processing_delay: Any = (0.05, 0.2), **client_options: Any
) -> AsyncIterator[tuple[SkalaSandbox, skala.SkalaClient, Recorder]]:
    """A sandbox POSTing to a client's webhook handler, over HTTP on 127.0.0.1."""
    recorder = Recorder()
    async with (
        SkalaSandbox(processing_delay=processing_delay, webhook_secret=SECRET) as sb,
        sandbox_client(sb, **client_options) as client,
        serve(client.webhook_handler(SECRET, recorder)) as url,
    ):
        sb.webhook_url = url
        yield sb, client, recorder


async def create(client: skala.SkalaClient, sb: SkalaSandbox, n: int) -> list[skala.TicketHandle]:
    return await asyncio.gather(*(client.create_ticket(sb.customer_id, "s", "d") for _ in range(n)))


async def test_waits_end_by_webhook_with_zero_gets() -> None:
    async with webhook_setup() as (sb, client, recorder):
        loop = asyncio.get_running_loop()
        handles = await create(client, sb, 10)
        tickets = await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        returned = loop.time()
        assert {t.status for t in tickets} == {skala.TicketStatus.CREATED}
        assert sb.count("get") == 0
        assert client.request_counts["get"] == 0
        assert all(h.polls == 0 for h in handles)
        finished = max(sb.tickets[str(t.ticket_id)].finished_at or 0 for t in tickets)
        assert returned - finished < 0.5
        assert len(recorder.events) == 10
        assert client.bus.webhooks_healthy


async def test_failed_by_webhook_and_watch() -> None:
    async with webhook_setup() as (sb, client, _):
        sb.outcome = "FAILED"
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        with pytest.raises(skala.TicketFailedError):
            await handle.wait_until_created(timeout=5)
        sb.outcome = "CREATED"
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        statuses = [t.status.value async for t in handle.watch(timeout=5)]
        assert statuses == ["PENDING", "CREATED"]
        assert sb.count("get") == 0


async def test_webhook_before_the_wait_begins() -> None:
    async with webhook_setup(processing_delay=0.0) as (sb, client, _):
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        ticket = await asyncio.wait_for(handle.wait_until_created(), 0.5)
        assert ticket.issue_key is not None
        rebuilt = client.ticket_handle(handle.ticket_id)  # e.g. after a restart
        assert await asyncio.wait_for(rebuilt.wait_until_created(), 0.5) == ticket
        assert sb.count("get") == 0


async def test_dropped_webhooks_fall_back_to_polling(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="skala_async")
    async with webhook_setup(poll=FAST_POLL, webhook_poll=SHORT_FALLBACK) as (sb, client, _):
        assert client._wait_policy() is SHORT_FALLBACK
        sb.webhook_drop = True
        handles = await create(client, sb, 5)
        tickets = await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        assert {t.status for t in tickets} == {skala.TicketStatus.CREATED}
        assert sb.count("get") >= 5
        assert all(h.polls >= 1 for h in handles)
        # Webhooks are now taken to have stopped: polling is back to the normal policy.
        assert not client.bus.webhooks_healthy
        assert client._wait_policy() is FAST_POLL
        assert caplog.text.count("webhooks seem not to arrive; polling normally") == 1
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        assert handle.polls >= 1
        # Webhooks come back: the next verified one restores the slow fallback.
        sb.webhook_drop = False
        sb.processing_delay = 0.01  # well inside the 0.3 s fallback, even on a loaded machine
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        # The wait may end by its own GET before the webhook lands: let the delivery finish.
        await sb.wait_for_webhooks(timeout=5)
        assert client.bus.webhooks_healthy
        assert client._wait_policy() is SHORT_FALLBACK
        assert "webhooks arrive again" in caplog.text
        gets = sb.count("get")
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        assert handle.polls == 0
        assert sb.count("get") == gets


async def test_demotion_wakes_waits_asleep_on_the_slow_schedule() -> None:
    slow = skala.PollPolicy(first_delay=30, min_interval=30, max_interval=60)
    async with webhook_setup(processing_delay=None, poll=FAST_POLL, webhook_poll=slow) as (
        sb,
        client,
        _,
    ):
        assert client._wait_policy() is slow
        sb.webhook_drop = True
        first, second = await create(client, sb, 2)
        sleeping = asyncio.ensure_future(second.wait_until_created(timeout=10))
        await asyncio.sleep(0.05)
        assert second.polls == 0  # asleep until the slow first poll, 30 s away
        sb.complete(str(first.ticket_id))
        sb.complete(str(second.ticket_id))
        # A wait with its own fast policy learns the outcome by GET: webhooks have stopped.
        await first.wait_until_created(timeout=5, poll=FAST_POLL)
        assert not client.bus.webhooks_healthy
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await asyncio.wait_for(sleeping, 5)
        assert ticket.status is skala.TicketStatus.CREATED
        assert loop.time() - started < 1.0  # rescheduled at once, not after 30 s
        assert second.polls >= 1


async def test_wrong_signature_means_polling() -> None:
    async with webhook_setup(poll=FAST_POLL, webhook_poll=SHORT_FALLBACK) as (sb, client, rec):
        sb.webhook_wrong_signature = True
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        ticket = await handle.wait_until_created(timeout=5)
        assert ticket.status is skala.TicketStatus.CREATED
        assert handle.polls >= 1
        await sb.wait_for_webhooks(timeout=5)
        assert [d.result for d in sb.webhook_deliveries] == [401]
        assert rec.calls == 0


async def test_duplicated_out_of_order_webhooks_wake_once() -> None:
    async with webhook_setup(processing_delay=(0.0, 0.05)) as (sb, client, recorder):
        sb.webhook_duplicates = 2
        sb.webhook_out_of_order = True
        handles = await create(client, sb, 10)
        await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        await sb.wait_for_webhooks(timeout=5)
        assert sb.count("get") == 0
        assert len(recorder.events) == 10
        assert len(sb.webhook_deliveries) == 30


async def test_client_handler_counts_and_no_tasks_left(
    no_tasks_left: Callable[[], None],
) -> None:
    async with webhook_setup() as (sb, client, _):
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        waiting = asyncio.ensure_future(handle.wait_until_created(timeout=5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert client.bus.waiting() == 0
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        assert client.bus.last_webhook_at is not None
    no_tasks_left()


# ------------------------------------------------------------------------------ CLI
