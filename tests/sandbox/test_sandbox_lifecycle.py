"""The sandbox's life: construction without a loop, start and close, its knobs read back
and checked, serving on IPv6 loopback, and ``run_sandbox``."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
from skala_async.testing import (
    Fault,
    SkalaSandbox,
    run_sandbox,
    sandbox_client,
)
from tests.helpers.sandbox_wire import (
    create,
    get_token,
    receiver,
)


def test_construction_needs_no_loop_and_hides_secrets() -> None:
    sandbox = SkalaSandbox(client_secret="s3cr3t-value", webhook_secret="wh-s3cr3t")
    with pytest.raises(RuntimeError):
        _ = sandbox.url
    text = repr(sandbox)
    assert "s3cr3t-value" not in text
    assert "wh-s3cr3t" not in text
    assert sandbox.client_id in text


async def test_no_task_left_after_exit(http: aiohttp.ClientSession) -> None:
    before = asyncio.all_tasks()
    release = asyncio.Event()
    receiver_hits: list[bytes] = []

    async def slow_receiver(request: web.Request) -> web.Response:
        receiver_hits.append(await request.read())
        await release.wait()
        return web.Response()

    async with receiver(slow_receiver) as hook_url:
        async with SkalaSandbox(
            processing_delay=0.01, webhook_url=hook_url, webhook_secret="x"
        ) as sandbox:
            token = await get_token(http, sandbox)
            await create(http, sandbox, token)
            sandbox.processing_delay = 60
            await create(http, sandbox, token)  # still pending at exit
            sandbox.inject("create", Fault.delay(60))
            stuck = asyncio.create_task(create(http, sandbox, token))  # in flight at exit
            for _ in range(100):
                if receiver_hits and sandbox.count("create") == 2:
                    break
                await asyncio.sleep(0.01)
            assert receiver_hits  # a webhook delivery is in flight at exit
        with pytest.raises(aiohttp.ClientError):
            await stuck
        # what is left now is the receiver's handler, still waiting for `release`
        release.set()
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() == before
    (stuck_record,) = [r for r in sandbox.requests_to("create") if r.fault]
    assert stuck_record.status is None


async def test_close_is_idempotent_and_start_only_once() -> None:
    sandbox = SkalaSandbox()
    await sandbox.start()
    assert sandbox.url.startswith("http://127.0.0.1:")
    await sandbox.close()
    await sandbox.close()
    with pytest.raises(RuntimeError):
        await sandbox.start()


def test_knobs_read_back_normalised() -> None:
    sandbox = SkalaSandbox(
        processing_delay=2,
        webhook_duplicates=2,
        webhook_drop=0.5,
        webhook_out_of_order=True,
        webhook_delay=(0, 1),
    )
    assert sandbox.processing_delay == 2.0
    assert isinstance(sandbox.processing_delay, float)
    sandbox.processing_delay = (1, 3)
    assert sandbox.processing_delay == (1.0, 3.0)
    sandbox.processing_delay = None
    assert sandbox.processing_delay is None
    assert sandbox.webhook_duplicates == 2
    assert sandbox.webhook_drop == 0.5
    assert sandbox.webhook_out_of_order is True
    assert sandbox.webhook_delay == (0.0, 1.0)


async def test_argument_checks() -> None:
    sandbox = SkalaSandbox()
    with pytest.raises(ValueError, match="processing_delay must be >= 0"):
        sandbox.processing_delay = -0.5
    with pytest.raises(ValueError, match="delay must be >= 0"):
        Fault.delay(-1)
    with pytest.raises(ValueError, match="customer_id must be a UUID: 'cust-42'"):
        sandbox.add_customer(customer_id="cust-42")
    with pytest.raises(RuntimeError, match="not running"):
        await sandbox.wait_until_processed(timeout=1)
    with pytest.raises(RuntimeError, match="not running"):
        await sandbox.wait_for_webhooks(timeout=1)
    upper = str(uuid.uuid4()).upper()
    assert sandbox.add_customer(customer_id=upper) == upper.lower()  # stored normalised


async def test_serves_on_ipv6_loopback() -> None:
    try:
        sandbox = SkalaSandbox(host="::1", port=0)
        await sandbox.start()
    except OSError as exc:  # a host without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert sandbox.url.startswith("http://[::1]:")
        async with sandbox_client(sandbox) as client:
            with pytest.raises(skala.TicketNotFoundError):
                await client.get_ticket(uuid.uuid4())
        assert sandbox.count("get", status=404) == 1
    finally:
        await sandbox.close()


async def test_run_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_sandbox(port=0, client_id="cid", client_secret="csecret"))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if "SKALA_CLIENT_SECRET" in capsys.readouterr().out:
            break
    else:
        pytest.fail("run_sandbox printed nothing")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
