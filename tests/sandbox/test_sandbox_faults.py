"""Faults the sandbox injects: HTTP errors and their bodies, drops, delays."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from skala_async.testing import (
    Fault,
    SkalaSandbox,
)
from skala_async.testing.sandbox import FaultKind
from tests.helpers.sandbox_wire import (
    CREATE,
    DISCONNECTED,
    TOKEN,
    create,
    get_ticket,
    get_token,
    ticket_form,
)


async def test_fault_429_with_retry_after(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.inject("create", Fault.http(429, retry_after=1.5), times=2)
    for _ in range(2):
        status, body, headers = await create(http, sb, token)
        assert status == 429
        assert headers["Retry-After"] == "1.5"
        assert set(body) == {"code", "type", "detail", "status"}
        assert body["status"] == 429
    assert not sb.tickets
    status, _, _ = await create(http, sb, token)
    assert status == 202
    assert [r.fault for r in sb.requests_to("create")] == ["http:429", "http:429", None]
    assert sb.count("create", status=429) == 2


async def test_fault_5xx_bodies(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    ticket_id = (await create(http, sb, token))[1]["ticketId"]
    sb.inject("get", Fault.http(503, retry_after=0.2))
    sb.inject("get", Fault.http(500))
    sb.inject("get", Fault.http(502))
    sb.inject("get", Fault.http(504))
    url = f"{sb.url}{CREATE}{ticket_id}/"
    auth = {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=auth) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (503, "0.2")
        assert (await resp.json())["status"] == 503
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 500
        assert (await resp.json())["status"] == 500
        assert "Retry-After" not in resp.headers
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 502
        assert resp.content_type == "text/html"
        assert "<html>" in await resp.text()
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 504
        assert (await resp.json())["status"] == 504
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 200
    faults = [r.fault for r in sb.requests_to("get")]
    assert faults == ["http:503", "http:500", "http:502", "http:504", None]


async def test_fault_on_token(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    sb.inject("token", Fault.http(500))
    async with http.post(sb.url + TOKEN, data={"grant_type": "client_credentials"}) as resp:
        assert resp.status == 500
    assert await get_token(http, sb)
    assert [r.status for r in sb.requests_to("token")] == [500, 200]


async def test_fault_drop(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.inject("create", Fault.drop())
    sb.inject("create", Fault.drop(after_body=True))
    for _ in range(2):
        with pytest.raises(DISCONNECTED):
            await create(http, sb, token)
    assert not sb.tickets
    records = sb.requests_to("create")
    assert [(r.status, r.fault) for r in records] == [(None, "drop"), (None, "drop_after_body")]
    assert sb.count("create", status=None) == 2
    status, _, _ = await create(http, sb, token)
    assert status == 202


async def test_fault_drop_large_upload(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.inject("create", Fault.drop())
    big = [("big.mp4", b"\x00" * (8 * 1024 * 1024), "video/mp4")]
    with pytest.raises(DISCONNECTED):
        await create(http, sb, token, ticket_form(sb.customer_id, files=big))
    assert not sb.tickets


async def test_fault_drop_on_get_is_retried_by_aiohttp(
    sb: SkalaSandbox, http: aiohttp.ClientSession
) -> None:
    # aiohttp itself retries an idempotent request once after a disconnect.
    token = await get_token(http, sb)
    ticket_id = (await create(http, sb, token))[1]["ticketId"]
    sb.inject("get", Fault.drop())
    status, _ = await get_ticket(http, sb, token, ticket_id)
    assert status == 200
    assert [r.status for r in sb.requests_to("get")] == [None, 200]
    sb.inject("get", Fault.drop(), times=2)
    with pytest.raises(DISCONNECTED):
        await get_ticket(http, sb, token, ticket_id)


async def test_fault_drop_after_processing(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.inject("create", Fault.drop_after_processing())
    with pytest.raises(DISCONNECTED):
        await create(http, sb, token)
    (record,) = sb.requests_to("create")
    assert (record.status, record.fault) == (None, "drop_after_processing")
    assert record.ticket_id in sb.tickets
    await sb.wait_until_processed(timeout=5)
    assert sb.tickets[record.ticket_id].status == "CREATED"


async def test_fault_delay_and_clear(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.inject("create", Fault.delay(0.2))
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(create(http, sb, token), 0.05)
    # the ticket is still created after the delay, though the client gave up
    for _ in range(100):
        if sb.tickets:
            break
        await asyncio.sleep(0.01)
    assert len(sb.tickets) == 1
    assert time.monotonic() - started >= 0.2
    (record,) = sb.requests_to("create")
    assert record.fault == "delay:0.2"

    sb.inject("create", Fault.http(500), times=3)
    sb.clear_faults()
    status, _, _ = await create(http, sb, token)
    assert status == 202


def test_fault_validation() -> None:
    sandbox = SkalaSandbox()
    with pytest.raises(ValueError, match="endpoint"):
        sandbox.inject("other", Fault.drop())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        sandbox.inject("get", Fault.drop(), times=0)
    with pytest.raises(ValueError, match="HTTP status"):
        Fault.http(42)
    with pytest.raises(ValueError, match="range"):
        sandbox.processing_delay = (2.0, 1.0)
    with pytest.raises(ValueError, match="'nonsense' is not a valid FaultKind"):
        Fault("nonsense")  # type: ignore[arg-type]


def test_fault_kinds_read_as_the_strings_they_were() -> None:
    kinds = [Fault.http(500), Fault.drop(), Fault.drop_after_processing(), Fault.delay(1)]
    assert [f.kind for f in kinds] == ["http", "drop", "drop_after_processing", "delay"]
    assert [f.kind for f in kinds] == list(FaultKind)
    assert Fault("delay", seconds=2).label == "delay:2"  # a string is still accepted


async def test_fault_with_an_unknown_status_and_a_content_type(
    sb: SkalaSandbox, http: aiohttp.ClientSession
) -> None:
    sb.inject("get", Fault.http(599))
    sb.inject("get", Fault.http(500, content_type="text/plain"))
    token = await get_token(http, sb)
    url = f"{sb.url}{CREATE}{uuid.uuid4()}/"
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 599
        assert await resp.json() == {
            "code": 59900,
            "type": "Http",
            "detail": {"message": "HTTP 599"},
            "status": 599,
        }
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 500
        assert resp.content_type == "text/plain"  # the API's error body, mislabelled
        assert json.loads(await resp.text())["type"] == "InternalServerError"
    assert [r.fault for r in sb.requests_to("get")] == ["http:599", "http:500"]
