"""The poll schedule on the wire, handles, and waits that end with the client.

Against the sandbox on 127.0.0.1: when the GETs of waits created together reach the
server, what a wait does when its client is closed under it, handles that already know
the outcome, news that changes nothing, two waits sharing one handle, and the bounded
memory of webhook outcomes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict

import aiohttp
import attrs
import pytest

import skala_async as skala
from skala_async.bus import LocalBus
from skala_async.testing import SkalaSandbox, sandbox_client
from skala_async.webhooks import SIGNATURE_HEADER, sign_payload
from tests.helpers.webhooks import serve

WEBHOOK_SECRET = "waiting-more-webhook-secret"

# A scaled-down default policy: the same shape (1, 2, 3, 4, then x1.25), 20 times faster.
SCALED = skala.PollPolicy(first_delay=0.05, min_interval=0.05, max_interval=1.5, growth=0.25)


async def _gets_by_ticket(sb: SkalaSandbox) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = defaultdict(list)
    for req in sb.requests_to("get"):
        seen[req.path.rstrip("/").rsplit("/", 1)[-1]].append(req.received_at)
    return seen


async def test_waits_created_together_do_not_poll_together(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.processing_delay = 0.6
    async with sandbox_client(skala_sandbox, poll=SCALED) as client:
        handles = await asyncio.gather(
            *(client.create_ticket(skala_sandbox.customer_id, f"herd {i}", "x") for i in range(40))
        )
        await asyncio.wait_for(asyncio.gather(*(h.wait_until_created() for h in handles)), 60)
    gets = await _gets_by_ticket(skala_sandbox)
    created = {r.ticket_id: r.received_at for r in skala_sandbox.requests_to("create")}
    assert set(gets) == {str(h.ticket_id) for h in handles}
    # The first GET of each wait lands somewhere in one gap after its ticket's acceptance:
    # a herd is spread over the whole gap, not stacked on one instant.
    offsets = sorted(min(times) - created[tid] for tid, times in gets.items())
    assert offsets[0] >= SCALED.first_delay * 0.9
    assert offsets[-1] - offsets[0] > SCALED.min_interval * 0.5
    assert len({round(o, 3) for o in offsets}) > 20


async def test_without_phase_the_first_get_waits_first_delay(
    skala_sandbox: SkalaSandbox,
) -> None:
    # jitter=0: every wait is on the same schedule, its first GET first_delay after the
    # ticket was accepted (never before).
    skala_sandbox.processing_delay = 0.3
    fixed = attrs.evolve(SCALED, jitter=0.0, first_delay=0.2)
    async with sandbox_client(skala_sandbox, poll=fixed) as client:
        handles = await asyncio.gather(
            *(client.create_ticket(skala_sandbox.customer_id, f"herd {i}", "x") for i in range(5))
        )
        await asyncio.wait_for(asyncio.gather(*(h.wait_until_created() for h in handles)), 60)
    gets = await _gets_by_ticket(skala_sandbox)
    created = {r.ticket_id: r.received_at for r in skala_sandbox.requests_to("create")}
    offsets = [min(times) - created[tid] for tid, times in gets.items()]
    assert all(o >= fixed.first_delay * 0.9 for o in offsets)


async def test_closing_the_client_ends_sleeping_waits(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.processing_delay = 3600
    slow = skala.PollPolicy(first_delay=3600, min_interval=60, max_interval=3600)
    client = sandbox_client(skala_sandbox, poll=slow)
    handles = [await client.create_ticket(skala_sandbox.customer_id, "t", "x") for _ in range(3)]
    rebuilt = client.ticket_handle(handles[0].ticket_id)  # a second wait on one ticket
    waits = [asyncio.ensure_future(h.wait_until_created(timeout=None)) for h in handles]
    watch = rebuilt.watch(timeout=None)
    assert (await anext(watch)).status is skala.TicketStatus.PENDING
    watching = asyncio.ensure_future(anext(watch))
    while client.bus.waiting() < 4:
        await asyncio.sleep(0.01)
    gets = skala_sandbox.count("get")
    await client.close()
    done = await asyncio.wait_for(
        asyncio.gather(*waits, watching, return_exceptions=True), timeout=10
    )
    assert all(isinstance(r, RuntimeError) and "closed" in str(r) for r in done)
    assert client.bus.waiting() == 0
    assert skala_sandbox.count("get") == gets  # nothing sent after close
    await watch.aclose()
    # A wait begun on a closed client ends at once too, before any request.
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(client.ticket_handle(uuid.uuid4()).wait_until_created(), 10)
    assert skala_sandbox.count("get") == gets


async def test_wait_until_created_is_a_coroutine_for_create_task(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.05
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "task", "x")
    task = asyncio.create_task(handle.wait_until_created(timeout=30))
    ticket = await task
    assert ticket.status is skala.TicketStatus.CREATED
    # Bad input is still refused when awaited, and a coroutine never awaited is closed.
    bad = handle.wait_until_created(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        await bad


async def test_closing_one_client_of_a_shared_bus_ends_only_its_own_waits(
    skala_sandbox: SkalaSandbox,
) -> None:
    # Two clients on one bus, both waiting on the same ticket: closing the first ends its
    # wait, not the second's, and the bus keeps carrying news to the second.
    skala_sandbox.processing_delay = None  # PENDING until the test says otherwise
    slow = skala.PollPolicy(first_delay=3600, min_interval=60, max_interval=3600)
    bus = LocalBus()
    async with sandbox_client(skala_sandbox, poll=slow, bus=bus) as staying:
        leaving = sandbox_client(skala_sandbox, poll=slow, bus=bus)
        handle = await leaving.create_ticket(skala_sandbox.customer_id, "t", "x")
        mine = asyncio.ensure_future(handle.wait_until_created(timeout=None))
        theirs = asyncio.ensure_future(
            staying.ticket_handle(handle.ticket_id).wait_until_created(timeout=None)
        )
        other = await staying.create_ticket(skala_sandbox.customer_id, "u", "y")
        theirs_too = asyncio.ensure_future(other.wait_until_created(timeout=None))
        while bus.waiting() < 3:
            await asyncio.sleep(0.01)
        await leaving.close()
        with pytest.raises(RuntimeError, match="client was closed"):
            await asyncio.wait_for(mine, 10)
        assert bus.waiting() == 2
        assert not theirs.done()
        assert not theirs_too.done()
        # The same client closed twice, and a wait begun on it afterwards: still only its own.
        await leaving.close()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(leaving.ticket_handle(other.ticket_id).wait_until_created(), 10)
        assert bus.waiting() == 2
        # News still reaches the staying client's waits (here: its own GET's answer).
        skala_sandbox.complete(str(handle.ticket_id))
        await staying.get_ticket(handle.ticket_id)
        assert (await asyncio.wait_for(theirs, 10)).status is skala.TicketStatus.CREATED
        theirs_too.cancel()
        with pytest.raises(asyncio.CancelledError):
            await theirs_too
        assert bus.waiting() == 0


async def test_a_handle_that_knows_the_outcome_asks_nothing(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "Done", "Soon.")
    created = await handle.wait_until_created(timeout=10)
    gets = skala_sandbox.count("get")

    assert await handle.wait_until_created(timeout=10) == created
    assert [t async for t in handle.watch(timeout=10)] == [created]  # once, then the end
    assert skala_sandbox.count("get") == gets


@pytest.mark.parametrize("bad", [0, -1.0])
async def test_wait_and_watch_need_a_positive_timeout(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, bad: float
) -> None:
    handle = skala_client.ticket_handle(uuid.uuid4())
    with pytest.raises(ValueError, match="timeout must be > 0 seconds or None"):
        await handle.wait_until_created(timeout=bad)
    with pytest.raises(ValueError, match="timeout must be > 0 seconds or None"):
        await anext(handle.watch(timeout=bad))
    assert skala_sandbox.requests == []


async def test_news_without_a_status_change_yields_nothing(
    skala_sandbox: SkalaSandbox,
) -> None:
    skala_sandbox.processing_delay = None
    slow = skala.PollPolicy(first_delay=30.0, min_interval=30.0, max_interval=30.0)
    async with sandbox_client(skala_sandbox, poll=slow) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Watched", "Closely.")
        seen: list[skala.TicketStatus] = []

        async def watch() -> None:
            async for ticket in handle.watch(timeout=10):
                seen.append(ticket.status)

        async def asleep() -> None:  # until the watch sleeps on the bus, waiting for news
            while client.bus.waiting(handle.ticket_id) != 1:
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(asleep(), 5)
        # Another reader's GET tells the watch "still PENDING": it wakes, yields nothing.
        published = client.bus.published
        await client.get_ticket(handle.ticket_id)
        assert client.bus.published == published + 1
        await asyncio.sleep(0)  # the watch wakes ...
        await asyncio.wait_for(asleep(), 5)  # ... and goes back to sleep
        assert seen == [skala.TicketStatus.PENDING]
        skala_sandbox.complete(str(handle.ticket_id))
        await client.get_ticket(handle.ticket_id)  # the news that ends it
        await asyncio.wait_for(watcher, 5)
    assert seen == [skala.TicketStatus.PENDING, skala.TicketStatus.CREATED]
    assert handle.polls == 0  # the watch itself never polled: every state came as news


async def test_two_waits_on_one_handle_both_return_the_outcome(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "Awaited", "Twice.")
    first, second = await asyncio.gather(
        handle.wait_until_created(timeout=10), handle.wait_until_created(timeout=10)
    )
    assert first.status is skala.TicketStatus.CREATED
    assert second.status is skala.TicketStatus.CREATED


async def test_two_watches_on_one_handle_both_see_every_change(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.2
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "Watched", "Twice.")

    async def statuses() -> list[str]:
        return [t.status.value async for t in handle.watch(timeout=10)]

    first, second = await asyncio.gather(statuses(), statuses())
    assert first == second == ["PENDING", "CREATED"]


def _event(ticket_id: uuid.UUID, status: str) -> bytes:
    issue_key = "SUP-5" if status == "CREATED" else None
    return json.dumps(
        {
            "eventType": f"SUPPORT_TICKET.{status}",
            "issueDatetime": "2025-03-04T05:06:07.890Z",
            "supportTicket": {"ticketId": str(ticket_id), "status": status, "issueKey": issue_key},
        }
    ).encode()


async def test_webhook_outcomes_kept_are_bounded_and_pending_is_not_one(
    skala_sandbox: SkalaSandbox,
) -> None:
    skala_sandbox.processing_delay = None  # the sandbox itself keeps every ticket PENDING
    async with (
        sandbox_client(skala_sandbox, bus=LocalBus(kept=2)) as client,
        serve(client.webhook_handler(WEBHOOK_SECRET)) as url,
        aiohttp.ClientSession() as http,
    ):
        handles = [
            await client.create_ticket(skala_sandbox.customer_id, f"T{i}", "D") for i in range(4)
        ]
        ids = [h.ticket_id for h in handles]
        events = [*(_event(i, "CREATED") for i in ids[:3]), _event(ids[3], "PENDING")]
        for body in events:
            headers = {SIGNATURE_HEADER: sign_payload(body, WEBHOOK_SECRET)}
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 200

        # The two latest outcomes are known without asking the API.
        for ticket_id in ids[1:3]:
            fresh = client.ticket_handle(ticket_id)
            assert (await fresh.wait_until_created(timeout=1)).issue_key == "SUP-5"
            assert fresh.polls == 0
        # The oldest was forgotten, and PENDING is no outcome: both are asked for.
        for ticket_id in (ids[0], ids[3]):
            fresh = client.ticket_handle(ticket_id)
            with pytest.raises(skala.WaitTimeoutError):
                await fresh.wait_until_created(timeout=0.2)
            assert fresh.polls >= 1
            assert fresh.status is skala.TicketStatus.PENDING
