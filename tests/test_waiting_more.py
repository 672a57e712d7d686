"""More of waiting and of the client's request loop: handles that already know the outcome,
news that changes nothing, deadlines that end a request early, argument checks, the
bounded memory of webhook outcomes, and two waits sharing one handle."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest

import skala_async as skala
import skala_async.client
from skala_async.bus import LocalBus
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from skala_async.webhooks import SIGNATURE_HEADER, sign_payload
from tests.helpers.webhooks import serve

WEBHOOK_SECRET = "waiting-more-webhook-secret"


# ------------------------------------------------------------------------------ handles


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


# ------------------------------------------------------------------------------ deadlines


async def test_a_deadline_spent_on_the_token_sends_nothing(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("token", Fault.delay(0.3))
    with pytest.raises(skala.RequestTimeoutError, match="deadline reached") as exc:
        await skala_client.get_ticket(uuid.uuid4(), timeout=0.1)
    assert exc.value.request_sent is False
    # The shared refresh goes on for later callers; the GET itself was never sent.
    await asyncio.sleep(0.4)
    assert skala_sandbox.count("token") == 1
    assert skala_sandbox.count("get") == 0


async def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("get", Fault.http(503, retry_after=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(skala.ServerError) as exc:
        await skala_client.get_ticket(uuid.uuid4(), timeout=0.5)
    assert loop.time() - started < 0.4  # raised at once, not after sleeping to the deadline
    assert exc.value.status == 503
    assert exc.value.retry_after == 1
    assert skala_sandbox.count("get") == 1


async def test_a_create_whose_token_request_failed_was_surely_not_sent(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("token", Fault.http(500), times=4)  # every attempt of FAST_RETRY
    try:
        with pytest.raises(skala.ServerError) as exc:
            await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D")
        assert exc.value.path == "/oauth2/token/"
    finally:
        assert skala_sandbox.count("create") == 0  # nothing that could have opened a ticket


# ------------------------------------------------------------------------------ arguments


async def test_client_argument_checks() -> None:
    with pytest.raises(ValueError, match="base_url must be a URL"):
        skala.SkalaClient(token="t", base_url="")
    with pytest.raises(TypeError, match="must be strings"):
        skala.SkalaClient(client_id=b"id", client_secret="secret")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent_polls must be >= 1, got 0"):
        skala.SkalaClient(token="t", max_concurrent_polls=0)


async def test_request_timeouts_must_be_positive(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    with pytest.raises(ValueError, match="timeout must be > 0 seconds or None, got 0"):
        await skala_client.get_ticket(uuid.uuid4(), timeout=0)
    with pytest.raises(ValueError, match="got -1"):
        await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", timeout=-1)
    assert skala_sandbox.requests == []


# ------------------------------------------------------------------------------ webhooks


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
