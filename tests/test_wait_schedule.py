"""The poll schedule on the wire, and waits that end with the client.

Against the sandbox on 127.0.0.1: when the GETs of waits created together reach the
server, and what a wait does when its client is closed under it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import attrs
import pytest

import skala_async as skala
from skala_async.bus import LocalBus
from skala_async.testing import SkalaSandbox, sandbox_client

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
