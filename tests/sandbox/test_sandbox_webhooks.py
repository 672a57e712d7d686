"""The sandbox's webhooks: signed or not, header name, failures, several URLs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from skala_async.testing import (
    SkalaSandbox,
    WebhookDelivery,
    sandbox_client,
)
from tests.helpers.sandbox_wire import (
    CREATE,
    create,
    get_token,
    receiver,
)


async def test_webhooks_signed(http: aiohttp.ClientSession) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    secret = "wh-secret-ñ"
    async with receiver(handler) as url, SkalaSandbox(processing_delay=0.01) as sb:
        sb.webhook_url = url
        sb.webhook_secret = secret
        token = await get_token(http, sb)
        created = (await create(http, sb, token))[1]["ticketId"]
        sb.outcome = "FAILED"
        failed = (await create(http, sb, token))[1]["ticketId"]
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        assert sorted(sb.webhook_deliveries) == sorted(
            [WebhookDelivery(created, "CREATED", 204), WebhookDelivery(failed, "FAILED", 204)]
        )
    assert len(received) == 2
    events = {}
    for body, headers in received:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["Http-X-Wh-Signature-256"], expected)
        assert headers["Content-Type"] == "application/json"
        event = json.loads(body)
        assert body == json.dumps(event, separators=(",", ":")).encode()
        events[event["supportTicket"]["ticketId"]] = event
    assert events[created]["eventType"] == "SUPPORT_TICKET.CREATED"
    assert events[created]["supportTicket"] == {
        "ticketId": created,
        "status": "CREATED",
        "issueKey": "SUP-1000",
    }
    assert events[failed]["eventType"] == "SUPPORT_TICKET.FAILED"
    assert events[failed]["supportTicket"]["issueKey"] is None
    stamp = events[created]["issueDatetime"]
    assert len(stamp) == 24
    assert stamp.endswith("Z")
    assert stamp[19] == "."


async def test_webhook_header_name_and_failures(http: aiohttp.ClientSession) -> None:
    received: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=500)

    async with (
        receiver(handler) as url,
        SkalaSandbox(
            processing_delay=0.01,
            webhook_url=url,
            webhook_secret="s",
            webhook_signature_header="X-Wh-Signature-256",
        ) as sb,
    ):
        token = await get_token(http, sb)
        ticket_id = (await create(http, sb, token))[1]["ticketId"]
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        assert sb.webhook_deliveries == [(ticket_id, "CREATED", 500)]
        # nobody listening: recorded, never raised
        sb.webhook_url = "http://127.0.0.1:1/hook"
        second = (await create(http, sb, token))[1]["ticketId"]
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
    assert "X-Wh-Signature-256" in received[0]
    assert "Http-X-Wh-Signature-256" not in received[0]
    last = sb.webhook_deliveries[-1]
    assert last.ticket_id == second
    assert isinstance(last.result, str)


async def test_webhooks_without_a_secret_are_unsigned(http: aiohttp.ClientSession) -> None:
    received: list[dict[str, str]] = []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        await release.wait()
        return web.Response(status=200)

    async with receiver(hook) as url, SkalaSandbox(processing_delay=0.01, webhook_url=url) as sb:
        token = await get_token(http, sb)
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in (("customerId", sb.customer_id), ("summary", "S"), ("description", "D")):
            form.add_field(name, value)
        async with http.post(
            sb.url + CREATE, data=form, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 202
        await sb.wait_until_processed(timeout=5)
        with pytest.raises(TimeoutError, match="webhook deliveries still in flight"):
            await sb.wait_for_webhooks(timeout=0.05)
        release.set()
        await sb.wait_for_webhooks(timeout=5)
    assert len(received) == 1
    assert not any("signature" in name.lower() for name in received[0])


async def test_webhooks_to_several_urls_as_a_load_balancer() -> None:
    from aiohttp import web

    from tests.helpers.webhooks import serve

    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def receiver(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            got[name].append(json.loads(await request.read())["supportTicket"]["ticketId"])
            return web.Response(text="ok")

        return handle

    with pytest.raises(ValueError, match="webhook_balance"):
        SkalaSandbox(webhook_balance="sticky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty list"):
        SkalaSandbox(webhook_url=[])
    async with (
        serve(receiver("a")) as a,
        serve(receiver("b")) as b,
        serve(receiver("c")) as c,
        SkalaSandbox(
            webhook_url=[a, b, c], webhook_balance="round-robin", processing_delay=None
        ) as sb,
        sandbox_client(sb) as client,
    ):
        ids = [
            str((await client.create_ticket(sb.customer_id, f"T{i}", "D")).ticket_id)
            for i in range(6)
        ]
        for tid in ids:
            sb.complete(tid, "CREATED")
            await sb.wait_for_webhooks(timeout=10)  # one at a time: the order is the turn
        assert got == {"a": ids[0::3], "b": ids[1::3], "c": ids[2::3]}
        # At random, every delivery still reaches exactly one of them.
        sb.webhook_balance = "random"
        more = [
            str((await client.create_ticket(sb.customer_id, f"R{i}", "D")).ticket_id)
            for i in range(30)
        ]
        for tid in more:
            sb.complete(tid, "CREATED")
        await sb.wait_for_webhooks(timeout=10)
        landed = [tid for name in got for tid in got[name] if tid in more]
        assert sorted(landed) == sorted(more)
        assert all(any(t in more for t in got[name]) for name in got)  # 30 draws: all hit


def test_an_empty_webhook_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_secret must be a non-empty string"):
        SkalaSandbox(webhook_secret="")
    sandbox = SkalaSandbox(webhook_secret="s3cret")
    with pytest.raises(ValueError, match="webhook_secret") as caught:
        sandbox.webhook_secret = ""
    assert sandbox.webhook_secret == "s3cret"  # unchanged
    assert "s3cret" not in str(caught.value)
