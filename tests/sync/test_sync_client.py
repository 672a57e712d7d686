"""The blocking facade: plain scripts, calls from inside a running loop, threads, cleanup,
``submit``, a sandbox that cannot start, closing a client while another thread waits on it,
and a client collected inside its own loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.bulk import BulkOutcome
from skala_async.sync import Sandbox, SkalaClient, SyncTicketHandle
from skala_async.testing import FAST_POLL, FAST_RETRY, Fault


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("skala-")]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(processing_delay=0.02) as sandbox:
        yield sandbox


@pytest.fixture
def client(sb: Sandbox) -> Iterator[SkalaClient]:
    with SkalaClient(
        sb.client_id, sb.client_secret, base_url=sb.url, poll=FAST_POLL, retry=FAST_RETRY
    ) as c:
        yield c


def _tasks_left(c: SkalaClient) -> list[asyncio.Task[object]]:
    """Tasks still running in the client's private loop (other than the one asking)."""

    def others() -> list[asyncio.Task[object]]:
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() if t is not me and not t.done()]

    return c._runner.call(others, "test")


# ---------------------------------------------------------------------------- plain code


def test_script_flow_create_wait_get(
    sb: Sandbox, client: SkalaClient, make_file: Callable[..., Path]
) -> None:
    receipt = make_file("receipt.pdf", 3000)
    handle = client.create_ticket(
        sb.customer_id, "Card top-up not credited", "Nothing arrived.", files=[receipt]
    )
    assert isinstance(handle, SyncTicketHandle)
    assert handle.status is skala.TicketStatus.PENDING
    assert repr(handle) == f"<TicketHandle {handle.ticket_id} PENDING>"

    ticket = handle.wait_until_created(timeout=10)
    assert ticket.status is skala.TicketStatus.CREATED
    assert str(ticket.issue_key).startswith("SUP-")
    assert handle.issue_key == ticket.issue_key
    assert handle.ticket == ticket
    assert (handle.elapsed or 0) > 0
    assert handle.polls >= 1
    assert "SUP-" in handle._repr_html_()

    assert client.get_ticket(ticket.ticket_id) == ticket
    rebuilt = client.ticket_handle(str(ticket.ticket_id))
    assert rebuilt.status is None
    assert rebuilt.refresh() == ticket

    [create] = sb.requests_to("create")
    assert create.files[0].filename == "receipt.pdf"
    assert create.files[0].sha256 == hashlib.sha256(receipt.read_bytes()).hexdigest()


def test_watch_is_a_plain_iterator(sb: Sandbox, client: SkalaClient) -> None:
    sb.processing_delay = 0.1
    handle = client.create_ticket(sb.customer_id, "Watch me", "Please.")
    statuses = [t.status.value for t in handle.watch(timeout=10)]
    assert statuses == ["PENDING", "CREATED"]


def test_leaving_watch_early_stops_polling(sb: Sandbox, client: SkalaClient) -> None:
    sb.processing_delay = None  # stays PENDING
    handle = client.create_ticket(sb.customer_id, "Watch me", "Please.")
    for ticket in handle.watch(timeout=10):
        assert ticket.status is skala.TicketStatus.PENDING
        break
    assert _tasks_left(client) == []
    assert client.aio.bus.waiting() == 0


def test_errors_are_raised_unchanged(sb: Sandbox, client: SkalaClient) -> None:
    with pytest.raises(skala.ValidationError) as invalid:
        client.create_ticket("nope", "two\nlines", "", files=["virus.exe"])
    assert len(invalid.value.problems) == 5  # virus.exe: missing and a bad extension
    assert sb.requests == []  # nothing was sent

    sb.support_tickets_enabled = False
    with pytest.raises(skala.SupportTicketsNotEnabledError) as off:
        client.create_ticket(sb.customer_id, "Hello", "Anyone?")
    assert off.value.code == 20061
    sb.support_tickets_enabled = True

    sb.processing_delay = None
    handle = client.create_ticket(sb.customer_id, "Slow", "One.")
    with pytest.raises(skala.WaitTimeoutError) as late:
        handle.wait_until_created(timeout=0.1)
    assert isinstance(late.value, TimeoutError)
    assert late.value.ticket is not None

    sb.complete(str(handle.ticket_id), "FAILED")
    with pytest.raises(skala.TicketFailedError) as failed:
        handle.wait_until_created(timeout=10)
    assert failed.value.ticket.status is skala.TicketStatus.FAILED
    assert handle.wait_until_created(raise_on_failure=False).status is skala.TicketStatus.FAILED


def test_retries_work_through_the_facade(sb: Sandbox, client: SkalaClient) -> None:
    sb.inject("create", Fault.http(429, retry_after=0.05))
    handle = client.create_ticket(sb.customer_id, "Throttled once", "Then fine.")
    assert handle.wait_until_created(timeout=10).issue_key
    assert sb.count("create", status=429) == 1
    assert sb.count("create", status=202) == 1


def test_bulk_through_the_facade(sb: Sandbox, client: SkalaClient) -> None:
    drafts = [skala.TicketDraft(sb.customer_id, f"Bulk {i}", "Row.") for i in range(3)]
    drafts.append(skala.TicketDraft(sb.customer_id, "", "Empty summary."))
    report = client.create_many(drafts, wait=True, wait_timeout=10)
    assert report.counts[BulkOutcome.CREATED.value] == 3
    assert report.counts[BulkOutcome.REJECTED.value] == 1
    results = list(client.submit_many(drafts[:2]))
    assert [r.outcome for r in results] == [BulkOutcome.CREATED, BulkOutcome.CREATED]


def test_one_client_from_many_threads(sb: Sandbox, client: SkalaClient) -> None:
    def one(i: int) -> str:
        handle = client.create_ticket(sb.customer_id, f"Thread {i}", "Concurrent.")
        key = handle.wait_until_created(timeout=10).issue_key
        assert key is not None
        return key

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(one, range(8)))
    assert len(set(keys)) == 8


def test_progress_callback_runs_in_the_client_thread(
    sb: Sandbox, client: SkalaClient, make_file: Callable[..., Path]
) -> None:
    """A sync call from inside the private loop thread raises at once, never deadlocks."""
    errors: list[RuntimeError] = []

    def progress(sent: int, total: int) -> None:
        try:
            client.get_ticket(uuid.uuid4())
        except RuntimeError as exc:
            errors.append(exc)

    handle = client.create_ticket(
        sb.customer_id, "Progress", "Bytes.", files=[make_file("a.png", 1000)], progress=progress
    )
    assert handle.wait_until_created(timeout=10).issue_key
    assert errors
    assert "own event-loop thread" in str(errors[0])
    assert "get_ticket()" in str(errors[0])


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_cancels_the_wait_in_the_loop(sb: Sandbox, client: SkalaClient) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread only")
    sb.processing_delay = None
    handle = client.create_ticket(sb.customer_id, "Never done", "Until interrupted.")
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            handle.wait_until_created(timeout=30)
    finally:
        timer.cancel()
    assert _tasks_left(client) == []  # the wait was cancelled, nothing left running
    assert client.aio.bus.waiting() == 0
    # The client stays usable afterwards.
    sb.complete(str(handle.ticket_id))
    assert handle.wait_until_created(timeout=10).issue_key


# ------------------------------------------------------------------ inside a running loop


async def test_works_inside_a_running_event_loop(make_file: Callable[..., Path]) -> None:
    """As in Jupyter: a loop runs in this thread, where asyncio.run() would fail."""
    running = asyncio.get_running_loop()
    with (
        Sandbox(processing_delay=0.02) as sandbox,
        SkalaClient(
            sandbox.client_id, sandbox.client_secret, base_url=sandbox.url, poll=FAST_POLL
        ) as c,
    ):
        handle = c.create_ticket(
            sandbox.customer_id, "From a loop", "Sync.", files=[make_file("s.png")]
        )
        assert handle.wait_until_created(timeout=10).issue_key
        assert [t.status.value for t in c.ticket_handle(handle.ticket_id).watch()] == ["CREATED"]
        with pytest.raises(skala.ValidationError):
            c.create_ticket(sandbox.customer_id, "", "")
        sandbox.support_tickets_enabled = False
        with pytest.raises(skala.SupportTicketsNotEnabledError):
            c.get_ticket(handle.ticket_id)
        assert c._runner.loop is not running
    assert c.closed
    assert sandbox.closed


async def test_async_client_in_the_same_loop_still_works_alongside() -> None:
    """The caller's loop keeps running its own work between blocking calls."""
    with Sandbox(processing_delay=0.02) as sandbox:
        async with skala.SkalaClient(
            sandbox.client_id, sandbox.client_secret, base_url=sandbox.url, poll=FAST_POLL
        ) as aio:
            with SkalaClient(sandbox.client_id, sandbox.client_secret, base_url=sandbox.url) as c:
                made = c.create_ticket(sandbox.customer_id, "Sync", "One.")
                ticket = await aio.ticket_handle(made.ticket_id).wait_until_created(timeout=10)
                assert ticket.issue_key


# ------------------------------------------------------------------------- lifecycle


def test_close_is_idempotent_and_joins_the_thread(sb: Sandbox) -> None:
    before = len(_loop_threads())
    c = SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url)
    assert len(_loop_threads()) == before + 1
    c.get_ticket  # noqa: B018 - attribute access does not need the loop
    c.close()
    c.close()
    assert c.closed
    assert len(_loop_threads()) == before
    assert "closed" in repr(c)
    with pytest.raises(RuntimeError, match="closed"):
        c.get_ticket(uuid.uuid4())


def test_close_from_the_loop_thread_is_refused(sb: Sandbox, client: SkalaClient) -> None:
    with pytest.raises(RuntimeError, match="own event-loop thread"):
        client._runner.call(client.close, "test")
    with pytest.raises(RuntimeError, match="own event-loop thread"):
        sb._runner.call(sb.close, "test")
    assert not client.closed
    assert not sb.closed


def test_a_forgotten_client_is_closed_when_collected(sb: Sandbox) -> None:
    before = len(_loop_threads())
    c = SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url)
    c.get_ticket  # noqa: B018
    runner = c._runner
    handle = c.create_ticket(sb.customer_id, "Forgotten", "Client.")
    del c, handle
    gc.collect()
    assert runner.stopped
    assert len(_loop_threads()) == before


def test_constructor_errors_are_raised_unchanged_and_leave_no_thread() -> None:
    before = len(_loop_threads())
    with pytest.raises(ValueError, match="credentials missing"):
        SkalaClient()
    with pytest.raises(ValueError, match="refusing plain http"):
        SkalaClient(token="t", base_url="http://example.com")
    with pytest.raises(ValueError, match="own HTTP session"):
        SkalaClient(token="t", session=object())
    assert len(_loop_threads()) == before


def test_from_env(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKALA_CLIENT_ID", sb.client_id)
    monkeypatch.setenv("SKALA_CLIENT_SECRET", sb.client_secret)
    monkeypatch.setenv("SKALA_BASE_URL", sb.url)
    with SkalaClient.from_env(poll=FAST_POLL) as c:
        assert c.base_url == sb.url
        assert c.client_id == sb.client_id
        assert sb.client_secret not in repr(c)
        assert c.create_ticket(sb.customer_id, "Env", "Vars.").wait_until_created().issue_key


def test_sandbox_wrapper_passthrough() -> None:
    with Sandbox(processing_delay=None, token_ttl=100) as sandbox:
        assert sandbox.token_ttl == 100
        sandbox.outcome = "FAILED"
        assert sandbox.sandbox.outcome == "FAILED"
        no_email = sandbox.add_customer(None)
        assert no_email != sandbox.customer_id
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert sandbox.client_secret not in repr(sandbox)
        assert repr(sandbox).startswith("<sync.SkalaSandbox url='http://127.0.0.1:")
        with SkalaClient(sandbox.client_id, sandbox.client_secret, base_url=sandbox.url) as c:
            handle = c.create_ticket(sandbox.customer_id, "Pending", "Until completed.")
            with pytest.raises(TimeoutError):
                sandbox.wait_until_processed(timeout=0.05)  # a coroutine method, blocking
            sandbox.complete(str(handle.ticket_id))
            sandbox.wait_until_processed(timeout=5)
        assert "skala-sandbox" in sandbox._repr_html_()
        with pytest.raises(AttributeError):
            sandbox._private  # noqa: B018
    # The record stays readable after close.
    assert sandbox.closed
    assert sandbox.count("create", status=202) == 1
    assert next(iter(sandbox.tickets.values())).status == "CREATED"
    with pytest.raises(RuntimeError, match="closed"):
        sandbox.wait_until_processed()


FORGOTTEN_SYNC = """
from skala_async.sync import Sandbox, SkalaClient

sb = Sandbox(processing_delay=0.01)
c = SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url)
print(c.create_ticket(sb.customer_id, "Summary", "Text").wait_until_created(timeout=10).issue_key)
# neither is closed
"""


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["-W", "default"]], ids=["plain", "warnings-shown"])
def test_a_script_that_never_closes_exits_quietly(flags: list[str]) -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, *flags, "-c", textwrap.dedent(FORGOTTEN_SYNC)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUP-")
    assert result.stderr == ""


def test_submit_a_draft(sb: Sandbox) -> None:
    with SkalaClient(
        sb.client_id, sb.client_secret, base_url=sb.url, poll=FAST_POLL, retry=FAST_RETRY
    ) as client:
        draft = skala.TicketDraft(sb.customer_id, "From a draft", "Submitted.", reference="d-1")
        handle = client.submit(draft)
        assert isinstance(handle, SyncTicketHandle)
        assert isinstance(handle.handle, skala.TicketHandle)  # the async handle underneath
        assert handle.handle.ticket_id == handle.ticket_id
        assert handle.wait_until_created(timeout=10).issue_key
    [create] = sb.requests_to("create")
    assert create.fields["summary"] == "From a draft"


def test_a_sandbox_that_cannot_listen_raises_and_leaves_no_thread() -> None:
    before = len(_loop_threads())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match="address already in use"):
            Sandbox(port=port)
    assert len(_loop_threads()) == before


def test_closing_from_another_thread_ends_a_blocked_wait(sb: Sandbox) -> None:
    sb.processing_delay = None  # stays PENDING
    slow = skala.PollPolicy(first_delay=30.0, min_interval=30.0, max_interval=30.0)
    client = SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url, poll=slow)
    handle = client.create_ticket(sb.customer_id, "Never done", "Until the client closes.")
    closer = threading.Timer(0.1, client.close)
    closer.start()
    try:
        # Ended by the async client's close (or, had it been mid-request, by the
        # facade cancelling it): either way a RuntimeError that says why.
        with pytest.raises(RuntimeError, match=r"did not finish: the client was closed"):
            handle.wait_until_created(timeout=20)
    finally:
        closer.join(10)
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        handle.refresh()


def test_a_client_collected_in_its_own_loop_thread_shuts_down(sb: Sandbox) -> None:
    """The last reference dropped inside the client's own thread (a callback, say): the
    client closes itself there without waiting for itself, and its thread ends."""
    before = len(_loop_threads())
    holder = [SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url, retry=FAST_RETRY)]
    assert holder[0].create_ticket(sb.customer_id, "Opens", "A session.").ticket_id
    runner = holder[0]._runner
    aio = holder[0].aio

    def drop_last_reference() -> None:
        holder.clear()
        gc.collect()

    runner.call(drop_last_reference, "test")
    runner._thread.join(10)
    assert runner.stopped
    assert aio.closed
    assert len(_loop_threads()) == before
