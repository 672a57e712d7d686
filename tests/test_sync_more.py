"""More of the blocking facade: ``submit``, a sandbox that cannot start, closing a client
while another thread waits on it, and a client collected inside its own loop thread."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator

import pytest

import skala_async as skala
from skala_async.sync import Sandbox, SkalaClient, SyncTicketHandle
from skala_async.testing import FAST_POLL, FAST_RETRY


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("skala-")]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(processing_delay=0.02) as sandbox:
        yield sandbox


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
