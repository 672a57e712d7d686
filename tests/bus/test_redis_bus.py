"""RedisBus against a real redis-server: several buses on one Redis stand for several
processes (each with its own client), and the sandbox checks what went over the wire.

The multi-process runs (real subprocesses) are in ``test_redis_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

import skala_async as skala
from skala_async.bus import Claim, LocalBus, TicketBus
from skala_async.redis import RedisBus
from skala_async.testing import SkalaSandbox, sandbox_client
from skala_async.webhooks import SIGNATURE_HEADER, WebhookReceiver, sign_payload
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.webhooks import event_dict, serve

SECRET = "whsec-redis-test"
#: Waits that would take 30 s to poll: anything faster came from the bus.
NO_POLL = skala.PollPolicy(first_delay=30, min_interval=30, max_interval=30)
QUICK = {"op_timeout": 0.3, "ping_interval": 0.2, "reconnect": (0.05, 0.3)}

#: One redis-server per test process: with pytest -n 2 --dist loadgroup, on one worker.
pytestmark = pytest.mark.xdist_group("redis")


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (generously bounded) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def replicas(
    sb: SkalaSandbox, url: str, count: int, pfx: str | None = None, **client_kwargs: Any
) -> AsyncIterator[list[tuple[RedisBus, skala.SkalaClient]]]:
    """``count`` (bus, client) pairs on one Redis, as ``count`` processes would have."""
    pfx = pfx or prefix()
    async with AsyncExitStack() as stack:
        pairs = []
        for _ in range(count):
            bus = await stack.enter_async_context(RedisBus.from_url(url, prefix=pfx, **QUICK))
            client = await stack.enter_async_context(sandbox_client(sb, bus=bus, **client_kwargs))
            pairs.append((bus, client))
        yield pairs


def event_body(ticket_id: str, status: str = "CREATED", issue_key: str | None = "SUP-1") -> bytes:
    return json.dumps(event_dict(ticket_id, status, issue_key)).encode()


async def deliver(http: aiohttp.ClientSession, url: str, body: bytes) -> int:
    headers = {SIGNATURE_HEADER: sign_payload(body, SECRET)}
    async with http.post(url, data=body, headers=headers) as response:
        return response.status


# ------------------------------------------------------------------------------ the protocol


def test_both_buses_implement_the_protocol(redis_server: RedisServer) -> None:
    assert isinstance(LocalBus(), TicketBus)
    assert isinstance(RedisBus(redis_server.url), TicketBus)


async def test_bad_arguments_are_clear_errors(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        RedisBus("")
    with pytest.raises(ValueError, match="Redis URL"):
        RedisBus("http://127.0.0.1:1/")
    for name in ("ttl", "claim_ttl", "claim_wait", "op_timeout", "ping_interval"):
        with pytest.raises(ValueError, match=name):
            RedisBus(redis_server.url, **{name: 0})
    with pytest.raises(ValueError, match="reconnect"):
        RedisBus(redis_server.url, reconnect=(0.1, -1))
    with pytest.raises(TypeError, match="prefix"):
        RedisBus(redis_server.url, prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kept"):
        LocalBus(kept=-1)
    with pytest.raises(TypeError, match="TicketBus"):
        skala.SkalaClient(token="t", bus=object())  # type: ignore[arg-type]
    client = skala.SkalaClient(token="t")
    with pytest.raises(ValueError, match="not both"):
        WebhookReceiver(SECRET, client=client, bus=LocalBus())
    bus = RedisBus(redis_server.url)
    await bus.close()
    with pytest.raises(RuntimeError, match="closed"):
        await bus.start()
    await client.close()


async def test_the_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    bus = RedisBus(f"redis://user:hunter2-secret@127.0.0.1:{port}/0", **QUICK)
    async with bus:
        await bus.kept(uuid.uuid4())
        assert "hunter2" not in repr(bus)
        assert f"127.0.0.1:{port}" in repr(bus)
        assert not bus.connected
    assert "hunter2" not in caplog.text
    assert "unreachable" in caplog.text


# ------------------------------------------------------------------------------ ticket news


async def test_a_webhook_in_one_process_ends_a_wait_in_another_without_a_get(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None  # tickets end only when the test says
    async with (
        replicas(skala_sandbox, redis_server.url, 3, webhook_poll=NO_POLL, poll=NO_POLL) as pairs,
        serve(pairs[0][1].webhook_handler(SECRET)) as hook,
    ):
        (_bus_a, _), (bus_b, client_b), (_, client_c) = pairs
        skala_sandbox.webhook_url = hook
        skala_sandbox.webhook_secret = SECRET
        handle = await client_b.create_ticket(skala_sandbox.customer_id, "S", "D")
        wait = asyncio.ensure_future(handle.wait_until_created(timeout=20))
        await until(lambda: bus_b.waiting(handle.ticket_id) == 1)
        skala_sandbox.complete(str(handle.ticket_id), "CREATED")
        ticket = await wait
        assert ticket.status is skala.TicketStatus.CREATED
        assert ticket.issue_key == skala_sandbox.tickets[str(handle.ticket_id)].issue_key
        # Webhooks arrive somewhere: every process polls only as a slow fallback.
        await until(lambda: bus_b.webhooks_healthy)
        # A wait that begins later, in a third process, ends at once from the kept state.
        late = client_c.ticket_handle(handle.ticket_id)
        assert (await late.wait_until_created(timeout=5)).issue_key == ticket.issue_key
        assert late.polls == 0
        assert handle.polls == 0
    assert skala_sandbox.count("get") == 0
    assert skala_sandbox.count("create") == 1


async def test_a_get_in_one_process_wakes_waits_in_the_others(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None
    async with replicas(skala_sandbox, redis_server.url, 2, poll=NO_POLL) as pairs:
        (_, client_a), (bus_b, client_b) = pairs
        handle = await client_a.create_ticket(skala_sandbox.customer_id, "S", "D")
        waiter = client_b.ticket_handle(handle.ticket_id)
        waiter.ticket = handle.ticket  # known PENDING: its first poll is 30 s away
        wait = asyncio.ensure_future(waiter.wait_until_created(timeout=20, raise_on_failure=False))
        await until(lambda: bus_b.waiting(handle.ticket_id) == 1)
        skala_sandbox.complete(str(handle.ticket_id), "FAILED")
        assert (await client_a.get_ticket(handle.ticket_id)).status is skala.TicketStatus.FAILED
        assert (await wait).status is skala.TicketStatus.FAILED
        assert waiter.polls == 0
    assert skala_sandbox.count("get") == 1


async def test_closing_one_client_of_a_shared_redis_bus_leaves_the_others_waiting(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    # Two clients of one process on one RedisBus, waiting on one ticket: closing the first
    # ends its wait only; the bus stays connected and the other process's GET still wakes
    # the second.
    skala_sandbox.processing_delay = None
    async with replicas(skala_sandbox, redis_server.url, 2, poll=NO_POLL) as pairs:
        (bus_a, client_a), (_, client_b) = pairs
        leaving = sandbox_client(skala_sandbox, bus=bus_a, poll=NO_POLL)
        handle = await leaving.create_ticket(skala_sandbox.customer_id, "S", "D")
        mine = asyncio.ensure_future(handle.wait_until_created(timeout=20))
        staying = client_a.ticket_handle(handle.ticket_id)
        staying.ticket = handle.ticket  # known PENDING: its first poll is 30 s away
        theirs = asyncio.ensure_future(staying.wait_until_created(timeout=20))
        await until(lambda: bus_a.waiting(handle.ticket_id) == 2)
        await leaving.close()
        with pytest.raises(RuntimeError, match="client was closed"):
            await asyncio.wait_for(mine, 10)
        assert bus_a.waiting(handle.ticket_id) == 1
        assert not theirs.done()
        skala_sandbox.complete(str(handle.ticket_id))
        assert (await client_b.get_ticket(handle.ticket_id)).status is skala.TicketStatus.CREATED
        assert (await asyncio.wait_for(theirs, 10)).status is skala.TicketStatus.CREATED
        assert staying.polls == 0
    assert skala_sandbox.count("get") == 1


async def test_a_lost_publish_is_recovered_from_the_kept_state_at_the_next_poll(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    import redis.asyncio as aioredis

    skala_sandbox.processing_delay = None
    quick = skala.PollPolicy(first_delay=0.2, min_interval=0.2, max_interval=0.2)
    pfx = prefix()
    async with replicas(skala_sandbox, redis_server.url, 1, pfx, poll=quick) as pairs:
        [(_, client)] = pairs
        handle = await client.create_ticket(skala_sandbox.customer_id, "S", "D")
        skala_sandbox.complete(str(handle.ticket_id), "CREATED")
        # Another process kept the outcome, but its message never arrived here.
        raw = aioredis.Redis.from_url(redis_server.url)
        state = {"s": "CREATED", "k": "SUP-77", "w": 1}
        await raw.set(f"{pfx}t:{handle.ticket_id}", json.dumps(state), ex=60)
        await raw.aclose()
        ticket = await handle.wait_until_created(timeout=10)
        assert ticket.issue_key == "SUP-77"  # from the bus, not from a GET
        assert handle.polls == 0
    assert skala_sandbox.count("get") == 0


async def test_without_news_or_kept_state_the_wait_ends_by_its_get(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.05
    async with replicas(skala_sandbox, redis_server.url, 2) as pairs:
        (_bus_a, client_a), (bus_b, _) = pairs
        handle = await client_a.create_ticket(skala_sandbox.customer_id, "S", "D")
        ticket = await handle.wait_until_created(timeout=10)
        assert handle.polls >= 1
        # What the GET learned reaches every process, and is kept.
        await until(lambda: bus_b.kept_here(handle.ticket_id) is not None)
        kept = await bus_b.kept(handle.ticket_id)
        assert kept is not None
        assert kept.ticket == ticket
        assert not kept.webhook


# ------------------------------------------------------------------------------ health


async def test_a_missed_webhook_anywhere_puts_every_process_back_on_normal_polling(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    short = skala.PollPolicy(first_delay=0.3, min_interval=0.3, max_interval=0.5)
    skala_sandbox.processing_delay = 0.05
    async with (
        replicas(skala_sandbox, redis_server.url, 2, webhook_poll=short) as pairs,
        serve(pairs[0][1].webhook_handler(SECRET)) as hook,
        aiohttp.ClientSession() as http,
    ):
        (bus_a, client_a), (bus_b, client_b) = pairs
        # A verified webhook in A: B's waits use the slow fallback too.
        assert await deliver(http, hook, event_body(str(uuid.uuid4()))) == 200
        await until(lambda: bus_b.webhooks_healthy)
        assert client_b._wait_policy() is short
        # B's own GET finds an outcome no webhook brought (webhooks are dropped).
        skala_sandbox.webhook_url = None
        handle = await client_b.create_ticket(skala_sandbox.customer_id, "S", "D")
        await handle.wait_until_created(timeout=10)
        await until(lambda: not bus_a.webhooks_healthy)
        assert client_a._wait_policy() is client_a.poll_policy
        # A refused delivery is evidence too (the receiver tells the bus).
        assert await deliver(http, hook, event_body(str(uuid.uuid4()))) == 200
        await until(lambda: bus_b.webhooks_healthy)
        body = event_body(str(uuid.uuid4()))
        async with http.post(hook, data=body, headers={SIGNATURE_HEADER: "sha256=00"}) as r:
            assert r.status == 401
        await until(lambda: not bus_b.webhooks_healthy)  # refused in A: B polls normally
    assert "webhooks seem not to arrive" in caplog.text
    assert "a webhook delivery was refused (401 invalid signature)" in caplog.text


async def test_a_webhook_elsewhere_during_a_get_is_not_taken_for_a_missed_one(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None
    async with (
        replicas(skala_sandbox, redis_server.url, 2) as pairs,
        serve(pairs[0][1].webhook_handler(SECRET)) as hook,
        aiohttp.ClientSession() as http,
    ):
        (bus_a, _), (bus_b, client_b) = pairs
        handle = await client_b.create_ticket(skala_sandbox.customer_id, "S", "D")
        skala_sandbox.complete(str(handle.ticket_id), "CREATED")
        issue_key = skala_sandbox.tickets[str(handle.ticket_id)].issue_key
        body = event_body(str(handle.ticket_id), "CREATED", issue_key)
        assert await deliver(http, hook, body) == 200
        await until(lambda: bus_b.webhooks_healthy)
        # B's GET and the webhook's message raced: the kept state says a webhook told.
        assert not await bus_b.check_missed(handle.ticket_id)
        assert bus_a.webhooks_healthy
        assert bus_b.webhooks_healthy


# ------------------------------------------------------------------------------ dedupe


async def test_on_event_runs_once_across_processes_and_again_after_a_failure(
    redis_server: RedisServer,
) -> None:
    calls: list[tuple[str, str]] = []
    fail_next = [True]

    def on_event(event: skala.SupportTicketEvent) -> None:
        calls.append((str(event.ticket_id), event.status.value))
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("database down")

    pfx = prefix()
    async with (
        RedisBus.from_url(redis_server.url, prefix=pfx, **QUICK) as bus_a,
        RedisBus.from_url(redis_server.url, prefix=pfx, **QUICK) as bus_b,
        serve(WebhookReceiver(SECRET, on_event, bus=bus_a).handle) as hook_a,
        serve(WebhookReceiver(SECRET, on_event, bus=bus_b).handle) as hook_b,
        aiohttp.ClientSession() as http,
    ):
        tid = str(uuid.uuid4())
        body = event_body(tid)
        assert await deliver(http, hook_a, body) == 500  # failed: the claim is released
        assert await deliver(http, hook_b, body) == 200  # the redelivery runs it, elsewhere
        assert await deliver(http, hook_a, body) == 200  # and never again, anywhere
        assert await deliver(http, hook_b, body) == 200
        assert calls == [(tid, "CREATED"), (tid, "CREATED")]
        # Copies landing on both at once: one runs, the other waits for it.
        calls.clear()
        slow_body = event_body(str(uuid.uuid4()), "FAILED", None)
        statuses = await asyncio.gather(
            *(deliver(http, hook, slow_body) for hook in (hook_a, hook_b, hook_a, hook_b))
        )
        assert statuses == [200, 200, 200, 200]
        assert len(calls) == 1


async def test_a_copy_is_answered_503_while_another_process_runs_the_callback(
    redis_server: RedisServer,
) -> None:
    release = asyncio.Event()
    calls = 0

    async def slow(event: skala.SupportTicketEvent) -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    pfx = prefix()
    async with (
        RedisBus.from_url(redis_server.url, prefix=pfx, claim_wait=0.2, **QUICK) as bus_a,
        RedisBus.from_url(redis_server.url, prefix=pfx, claim_wait=0.2, **QUICK) as bus_b,
    ):
        receiver_a = WebhookReceiver(SECRET, slow, bus=bus_a)
        receiver_b = WebhookReceiver(SECRET, slow, bus=bus_b)
        body = event_body(str(uuid.uuid4()))
        headers = {SIGNATURE_HEADER: sign_payload(body, SECRET)}
        first = asyncio.ensure_future(receiver_a.process(body, headers))
        await until(lambda: calls == 1)
        assert await receiver_b.process(body, headers) == (503, "being handled elsewhere")
        assert receiver_b.counts["busy"] == 1
        release.set()
        assert await first == (200, "ok")
        assert await receiver_b.process(body, headers) == (200, "duplicate")
        assert calls == 1
        assert await bus_b.claim("x:CREATED") is Claim.RUN
        await bus_b.settle("x:CREATED", delivered=False)
        assert await bus_a.claim("x:CREATED") is Claim.RUN  # released: free again


# ------------------------------------------------------------------------------ 429 pause


async def test_a_retry_after_in_one_process_pauses_the_others(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    from skala_async.testing import Fault

    async with replicas(skala_sandbox, redis_server.url, 2) as pairs:
        (_, client_a), (bus_b, client_b) = pairs
        skala_sandbox.inject("get", Fault.http(429, retry_after=30))
        with pytest.raises(skala.RateLimitedError):
            await client_a.get_ticket(uuid.uuid4(), timeout=1)
        await until(lambda: bus_b.pauses == 1)
        sent = len(skala_sandbox.requests)
        # B sends nothing while the pause lasts: a call that cannot outlive it fails now.
        with pytest.raises(skala.RequestTimeoutError, match="pause"):
            await client_b.get_ticket(uuid.uuid4(), timeout=2)
        assert len(skala_sandbox.requests) == sent
    # A process that starts during the pause learns it from Redis.
    pfx = next(iter({b.prefix for b, _ in pairs}))
    async with RedisBus.from_url(redis_server.url, prefix=pfx, **QUICK) as late:
        assert late.pauses == 1
        assert not await late.wait_pause(asyncio.get_running_loop().time() + 1)


# ------------------------------------------------------------------------------ Redis away


async def test_no_redis_at_all_is_one_warning_and_normal_polling(
    skala_sandbox: SkalaSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="skala_async")
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with (
        RedisBus.from_url(url, **QUICK) as bus,
        sandbox_client(skala_sandbox, bus=bus) as client,
    ):
        handle = await client.create_ticket(skala_sandbox.customer_id, "S", "D")
        receiver = WebhookReceiver(SECRET, None, client=client)
        assert not bus.webhooks_healthy  # no Redis: other processes' news cannot come
        assert (await handle.wait_until_created(timeout=10)).status is skala.TicketStatus.CREATED
        body = event_body(str(uuid.uuid4()))
        headers = {SIGNATURE_HEADER: sign_payload(body, SECRET)}
        assert await receiver.process(body, headers) == (200, "ok")
        assert await receiver.process(body, headers) == (200, "duplicate")
        await asyncio.sleep(0.5)  # several reconnection attempts
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert skala_sandbox.count("create") == 1


async def test_redis_killed_and_restarted_mid_wait(
    own_redis: RedisServer, skala_sandbox: SkalaSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skala_async")
    skala_sandbox.processing_delay = None
    slow = skala.PollPolicy(first_delay=3, min_interval=3, max_interval=3)
    async with (
        replicas(skala_sandbox, own_redis.url, 2, poll=slow, webhook_poll=NO_POLL) as pairs,
        serve(pairs[0][1].webhook_handler(SECRET)) as hook,
        aiohttp.ClientSession() as http,
    ):
        (bus_a, _), (bus_b, client_b) = pairs
        handles = [
            await client_b.create_ticket(skala_sandbox.customer_id, f"S{i}", "D") for i in range(3)
        ]
        waits = [asyncio.ensure_future(h.wait_until_created(timeout=30)) for h in handles]
        await until(lambda: bus_b.waiting() == 3)
        own_redis.kill()
        await until(lambda: not bus_a.connected and not bus_b.connected)
        # Outcomes arrive at A while Redis is away: A queues them.
        for h in handles:
            skala_sandbox.complete(str(h.ticket_id), "CREATED")
            key = skala_sandbox.tickets[str(h.ticket_id)].issue_key
            assert await deliver(http, hook, event_body(str(h.ticket_id), "CREATED", key)) == 200
        own_redis.start()  # same port, empty
        tickets = await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert [t.issue_key for t in tickets] == [
            skala_sandbox.tickets[str(h.ticket_id)].issue_key for h in handles
        ]
        await until(lambda: bus_a.connected and bus_b.connected)
        assert bus_b.reconnects >= 2
    assert skala_sandbox.count("create") == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, caplog.text  # one per bus
    assert "is back" in caplog.text


async def test_redis_paused_longer_than_a_poll_interval(
    own_redis: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None
    quick = skala.PollPolicy(first_delay=0.3, min_interval=0.3, max_interval=0.3)
    async with replicas(skala_sandbox, own_redis.url, 2, poll=quick, webhook_poll=NO_POLL) as pairs:
        (bus_a, client_a), (bus_b, client_b) = pairs
        bus_a.webhooks_expected()
        handle = await client_b.create_ticket(skala_sandbox.customer_id, "S", "D")
        wait = asyncio.ensure_future(handle.wait_until_created(timeout=30))
        own_redis.stop()
        try:
            await until(lambda: not bus_b.connected)
            skala_sandbox.complete(str(handle.ticket_id), "CREATED")
            # B polls normally while Redis does not answer: the wait ends by its GET.
            ticket = await asyncio.wait_for(wait, 20)
            assert ticket.issue_key is not None
            # A create and a wait in A are not held up by the stalled Redis either.
            other = await client_a.create_ticket(skala_sandbox.customer_id, "S2", "D")
            skala_sandbox.complete(str(other.ticket_id), "CREATED")
            assert (await other.wait_until_created(timeout=20)).issue_key is not None
        finally:
            own_redis.resume()
        await until(lambda: bus_a.connected and bus_b.connected)
    assert skala_sandbox.count("create") == 2


def test_redis_is_imported_only_by_skala_async_redis() -> None:
    import subprocess
    import sys

    code = (
        "import sys, skala_async, skala_async.bus, skala_async.webhooks, skala_async.cli, "
        "skala_async.testing, skala_async.sync; print('redis' in sys.modules)"
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


async def test_hostile_content_in_redis_is_ignored_not_trusted(
    redis_server: RedisServer, skala_sandbox: SkalaSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio as aioredis

    skala_sandbox.processing_delay = 0.05
    pfx = prefix()
    raw = aioredis.Redis.from_url(redis_server.url)
    async with replicas(skala_sandbox, redis_server.url, 1, pfx) as pairs:
        [(bus, client)] = pairs
        handle = await client.create_ticket(skala_sandbox.customer_id, "S", "D")
        # A PENDING "final state", garbage, wrong types: none of them ends a wait.
        for junk in (b'{"s":"PENDING","k":null}', b"\xff{not json", b'{"s":"CREATED","k":5}'):
            await raw.set(f"{pfx}t:{handle.ticket_id}", junk)
            assert await bus.kept(handle.ticket_id) is None
        for message in (b"garbage", b'{"t":"not-a-uuid","s":"CREATED"}', b"[1,2]"):
            await raw.publish(f"{pfx}news", message)
        await raw.publish(f"{pfx}news", json.dumps({"t": str(handle.ticket_id), "s": "PENDING"}))
        ticket = await handle.wait_until_created(timeout=10)
        assert ticket.status is skala.TicketStatus.CREATED
        assert handle.polls >= 1  # it asked Ripio: nothing in Redis was taken for an answer
        assert ticket.issue_key == skala_sandbox.tickets[str(handle.ticket_id)].issue_key
    await raw.aclose()
    assert "unreadable" in caplog.text


async def test_a_cancel_reaches_a_wait_that_is_asking_a_stalled_redis(
    own_redis: RedisServer, skala_sandbox: SkalaSandbox
) -> None:
    async with (
        RedisBus.from_url(own_redis.url, op_timeout=5) as bus,
        sandbox_client(skala_sandbox, bus=bus) as client,
    ):
        own_redis.stop()
        try:
            handle = client.ticket_handle(uuid.uuid4())  # rebuilt: it asks the bus first
            wait = asyncio.ensure_future(handle.wait_until_created(timeout=30))
            await asyncio.sleep(0.3)  # inside the Redis GET, which would take 5 s
            wait.cancel()
            done, _ = await asyncio.wait({wait}, timeout=2)
            assert done, "the cancel did not reach the wait"
            assert wait.cancelled()
        finally:
            own_redis.resume()
    assert skala_sandbox.count("get") == 0
