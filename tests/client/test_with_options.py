"""``client.with_options(...)`` views, ``retry=`` and ``timeout=`` per call (deadlines that
end a request early, argument checks), against the sandbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import skala_async as skala
from skala_async import (
    PollPolicy,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    SkalaClient,
    Timeouts,
)
from skala_async.testing import FAST_POLL, Fault, SkalaSandbox, sandbox_client

ONE_TRY = RetryPolicy(attempts=1)
QUICK = RetryPolicy(attempts=3, initial=0.01, cap=0.02)


async def test_a_view_shares_session_token_and_counts() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        view = client.with_options(retry=ONE_TRY)
        handle = await view.create_ticket(sandbox.customer_id, "s", "d")
        await client.get_ticket(handle.ticket_id)
        await view.get_ticket(handle.ticket_id)
        assert sandbox.count("token") == 1  # one token for both
        assert view._transport is client._transport
        assert client._transport._session is not None
        assert client.request_counts == {"token": 1, "create": 1, "get": 2}
        assert view.request_counts is client.request_counts
        assert repr(view).endswith(" view>")
        assert view.retry_policy is ONE_TRY
        assert client.retry_policy is not ONE_TRY


async def test_retry_per_view_and_per_call() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, retry=QUICK) as client:
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        tid = handle.ticket_id
        sandbox.clear_requests()
        sandbox.inject("get", Fault.http(503), times=10)
        with pytest.raises(ServerError):
            await client.with_options(retry=ONE_TRY).get_ticket(tid)
        assert sandbox.count("get") == 1
        with pytest.raises(ServerError):
            await client.get_ticket(tid, retry=RetryPolicy(attempts=2, initial=0.01))
        assert sandbox.count("get") == 3
        with pytest.raises(ServerError):
            await client.get_ticket(tid)  # the client's own policy: 3 attempts
        assert sandbox.count("get") == 6
        sandbox.clear_faults()
        sandbox.inject("create", Fault.http(429, retry_after=0.01), times=10)
        with pytest.raises(Exception, match="429"):
            await client.create_ticket(sandbox.customer_id, "s", "d", retry=ONE_TRY)
        assert sandbox.count("create") == 1
        # a wait's GETs follow the wait's retry=
        sandbox.clear_faults()
        sandbox.inject("get", Fault.http(503), times=1)
        ticket = await client.ticket_handle(tid).wait_until_created(timeout=30, retry=QUICK)
        assert ticket.is_final


async def test_a_view_with_a_call_timeout_and_one_with_timeouts() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        sandbox.inject("get", Fault.delay(5), times=5)
        quick = client.with_options(timeout=0.2, retry=ONE_TRY)
        with pytest.raises(RequestTimeoutError):
            await quick.get_ticket(handle.ticket_id)
        # a per-call timeout still wins over the view's
        sandbox.clear_faults()
        ticket = await quick.get_ticket(handle.ticket_id, timeout=30)
        assert ticket.ticket_id == handle.ticket_id
        sandbox.inject("get", Fault.delay(5), times=5)
        short = client.with_options(timeout=Timeouts(read=0.2), retry=ONE_TRY)
        with pytest.raises(RequestTimeoutError):
            await short.get_ticket(handle.ticket_id)
        # the client itself keeps its own limits
        assert client._timeouts.read == Timeouts().read
        # and a view of a view keeps what it does not replace
        nested = quick.with_options(poll=FAST_POLL)
        assert nested._call_timeout == 0.2
        assert nested.retry_policy is ONE_TRY
        assert nested._root is client


async def test_a_view_shares_the_rate_gate_and_waits() -> None:
    slow_poll = PollPolicy(first_delay=60, min_interval=60, max_interval=60)
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, poll=slow_poll) as client,
    ):
        view = client.with_options(poll=FAST_POLL)
        # a 429 seen through the view pauses the client's requests too
        sandbox.inject("create", Fault.http(429, retry_after=0.3))
        handle = await view.create_ticket(sandbox.customer_id, "s", "d")
        assert client.bus.pauses == 1
        # a wait on a handle of the client (slow polling) is woken by the view's GET
        waiting = asyncio.ensure_future(
            client.ticket_handle(handle.ticket_id).wait_until_created(timeout=30)
        )
        await asyncio.sleep(0.05)  # the rebuilt handle asked once and now sleeps 60 s
        sandbox.complete(str(handle.ticket_id))
        fast = await handle.wait_until_created(timeout=30)  # the view's fast polling
        ticket = await asyncio.wait_for(waiting, 10)
        assert ticket == fast
        assert client.bus is view.bus


async def test_a_view_shares_webhook_state_set_later() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        view = client.with_options(retry=ONE_TRY)
        client.webhook_handler("whsec")
        assert view.bus.webhooks_healthy is True
        # a wait on the view found an outcome by its own GET: webhooks are missing
        assert await view.bus.check_missed(uuid.uuid4()) is True
        assert client.bus.webhooks_healthy is False


async def test_closing_the_client_ends_a_sleeping_wait_of_a_view() -> None:
    async with SkalaSandbox(processing_delay=None) as sandbox:
        client = sandbox_client(sandbox)
        view = client.with_options(
            poll=PollPolicy(first_delay=60, min_interval=60, max_interval=60)
        )
        handle = await view.create_ticket(sandbox.customer_id, "s", "d")
        waiting = asyncio.ensure_future(handle.wait_until_created(timeout=120))
        await asyncio.sleep(0.05)  # asleep until the view's first poll, 60 s away
        assert client.bus.waiting(handle.ticket_id) == 1
        await client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(waiting, 5)
        # a wait begun on the view after the close is refused the same way
        with pytest.raises(RuntimeError, match="closed"):
            await view.ticket_handle(handle.ticket_id).wait_until_created(timeout=5)


async def test_closing_a_view_closes_its_client() -> None:
    async with SkalaSandbox() as sandbox:
        client = sandbox_client(sandbox)
        async with client.with_options(retry=ONE_TRY) as view:
            await view.create_ticket(sandbox.customer_id, "s", "d")
        assert client.closed
        with pytest.raises(RuntimeError, match="closed"):
            await client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": 0}, ValueError),
        ({"timeout": -1.0}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": True}, TypeError),
        ({"timeout": "5"}, TypeError),
        ({"retry": 3}, TypeError),
        ({"poll": 1.0}, TypeError),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], error: type) -> None:
    client = SkalaClient(token="t", base_url="http://127.0.0.1:9")
    with pytest.raises(error):
        client.with_options(**kwargs)  # type: ignore[arg-type]


async def test_bad_retry_per_call_sends_nothing() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(TypeError, match="RetryPolicy"):
            await client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", retry=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="RetryPolicy"):
            await client.create_ticket(sandbox.customer_id, "s", "d", retry="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="RetryPolicy"):
            await client.ticket_handle("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d").wait_until_created(
                retry=1
            )  # type: ignore[arg-type]
        assert sandbox.requests == []


def test_the_blocking_client_takes_retry_per_call() -> None:
    from skala_async.sync import Sandbox
    from skala_async.sync import SkalaClient as BlockingClient

    with (
        Sandbox(processing_delay=0.02) as sb,
        BlockingClient(
            sb.client_id, sb.client_secret, base_url=sb.url, poll=FAST_POLL, retry=QUICK
        ) as client,
    ):
        handle = client.create_ticket(sb.customer_id, "s", "d", retry=ONE_TRY)
        sb.inject("get", Fault.http(503), times=10)
        with pytest.raises(ServerError):
            client.get_ticket(handle.ticket_id, retry=ONE_TRY)
        assert sb.count("get") == 1
        sb.clear_faults()
        assert handle.wait_until_created(timeout=30, retry=ONE_TRY).is_final
        assert [t.status for t in handle.watch(timeout=30, retry=ONE_TRY)][-1].value == "CREATED"


def test_the_blocking_client_has_views_too() -> None:
    import gc

    from skala_async.sync import Sandbox
    from skala_async.sync import SkalaClient as BlockingClient

    with Sandbox(processing_delay=0.02) as sb:
        client = BlockingClient(
            sb.client_id, sb.client_secret, base_url=sb.url, poll=FAST_POLL, retry=QUICK
        )
        view = client.with_options(retry=ONE_TRY, timeout=30)
        handle = view.create_ticket(sb.customer_id, "s", "d")
        sb.inject("get", Fault.http(503), times=10)
        with pytest.raises(ServerError):
            view.get_ticket(handle.ticket_id)
        assert sb.count("get") == 1
        with pytest.raises(ServerError):
            client.get_ticket(handle.ticket_id)  # the client's own 3 attempts
        assert sb.count("get") == 4
        assert sb.count("token") == 1
        del client  # the view keeps its client (and the loop thread) alive
        gc.collect()
        sb.clear_faults()
        assert view.get_ticket(handle.ticket_id).ticket_id == handle.ticket_id
        view.close()
        assert view.closed


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
