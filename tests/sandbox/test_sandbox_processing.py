"""Tickets in the sandbox: from PENDING to an outcome, by timer or by hand, and retrieve."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from skala_async.testing import (
    TICKET_NOT_FOUND_CODE,
    SkalaSandbox,
    WebhookDelivery,
    sandbox_client,
)
from tests.helpers.sandbox_wire import (
    CREATE,
    TOKEN,
    create,
    get_ticket,
    get_token,
    receiver,
    ticket_form,
)


async def test_processing_to_created(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    # The first ticket waits for complete(), so the GET sees it PENDING however slow the
    # machine is; the second goes through the processing timer.
    sb.processing_delay = None
    ids = [(await create(http, sb, token))[1]["ticketId"]]
    status, body = await get_ticket(http, sb, token, ids[0])
    assert (status, body) == (200, {"ticketId": ids[0], "status": "PENDING", "issueKey": None})
    sb.processing_delay = 0.01
    ids.append((await create(http, sb, token))[1]["ticketId"])
    sb.complete(ids[0])
    await sb.wait_until_processed(timeout=5)
    keys = set()
    for ticket_id in ids:
        status, body = await get_ticket(http, sb, token, ticket_id)
        assert status == 200
        assert body["status"] == "CREATED"
        keys.add(body["issueKey"])
        assert sb.tickets[ticket_id].finished_at is not None
    assert keys == {"SUP-1000", "SUP-1001"}
    assert sb.count("get", status=200) == 3


async def test_processing_to_failed(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    sb.outcome = "FAILED"
    sb.processing_delay = (0.001, 0.02)
    token = await get_token(http, sb)
    ticket_id = (await create(http, sb, token))[1]["ticketId"]
    await sb.wait_until_processed(timeout=5)
    status, body = await get_ticket(http, sb, token, ticket_id)
    assert (status, body) == (200, {"ticketId": ticket_id, "status": "FAILED", "issueKey": None})


async def test_outcome_callable(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def outcome(ticket_id: str, fields: dict[str, str]) -> str:
        seen.append((ticket_id, fields))
        return "ARCHIVED" if fields["summary"] == "archive me" else "CREATED"

    sb.outcome = outcome
    token = await get_token(http, sb)
    first = (await create(http, sb, token, ticket_form(sb.customer_id, summary="archive me")))[1]
    second = (await create(http, sb, token))[1]
    await sb.wait_until_processed(timeout=5)
    assert (await get_ticket(http, sb, token, first["ticketId"]))[1]["status"] == "ARCHIVED"
    assert (await get_ticket(http, sb, token, second["ticketId"]))[1]["status"] == "CREATED"
    assert sb.tickets[first["ticketId"]].issue_key is None
    assert seen[0][1]["customerId"] == sb.customer_id


async def test_manual_completion(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    sb.processing_delay = None
    token = await get_token(http, sb)
    ticket_id = (await create(http, sb, token))[1]["ticketId"]
    with pytest.raises(TimeoutError):
        await sb.wait_until_processed(timeout=0.05)
    ticket = sb.complete(ticket_id, status="FAILED")
    assert ticket.status == "FAILED"
    await sb.wait_until_processed(timeout=1)
    with pytest.raises(ValueError, match="already"):
        sb.complete(ticket_id)
    with pytest.raises(KeyError):
        sb.complete("nope")


async def test_completing_by_hand_cancels_the_scheduled_outcome() -> None:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async with receiver(hook) as url, SkalaSandbox(processing_delay=0.05, webhook_url=url) as sb:
        async with sandbox_client(sb) as client:
            handle = await client.create_ticket(sb.customer_id, "Manual", "Done by hand.")
        ticket_id = str(handle.ticket_id)
        done = sb.complete(ticket_id, "FAILED")
        await asyncio.sleep(0.1)  # past the processing delay
        await sb.wait_for_webhooks(timeout=5)
        assert sb.tickets[ticket_id] == done  # the timer did not finish it again
        assert sb.tickets[ticket_id].status == "FAILED"
        assert sb.webhook_deliveries == [WebhookDelivery(ticket_id, "FAILED", 204)]


async def test_get_not_found_and_paths(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    status, body = await get_ticket(http, sb, token, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert (status, body["code"], body["type"]) == (
        404,
        TICKET_NOT_FOUND_CODE,
        "SupportTicketNotFoundException",
    )
    status, body = await get_ticket(http, sb, token, "not-a-uuid")
    assert (status, body["code"]) == (404, TICKET_NOT_FOUND_CODE)
    auth = {"Authorization": f"Bearer {token}"}
    ticket_id = (await create(http, sb, token))[1]["ticketId"]
    async with http.get(f"{sb.url}{CREATE}{ticket_id}", headers=auth) as resp:
        assert resp.status == 404
    async with http.post(sb.url + CREATE.rstrip("/"), headers=auth) as resp:
        assert resp.status == 404
    async with http.post(sb.url + TOKEN.rstrip("/"), data={"grant_type": "x"}) as resp:
        assert resp.status == 404
    async with http.get(sb.url + CREATE, headers=auth) as resp:
        assert resp.status == 405
    assert sb.count("other") == 4
    assert sb.count("get") == 2
    assert sb.requests_to("get")[1].ticket_id == "not-a-uuid"
