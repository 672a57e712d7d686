"""The aiohttp webhook receiver: status codes, limits, duplicates, callbacks."""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import skala_async as skala
from skala_async.webhooks import (
    SIGNATURE_HEADER,
    WebhookReceiver,
    webhook_handler,
)
from tests.helpers.webhooks import (
    SECRET,
    TICKET_ID,
    UTC,
    Recorder,
    event_dict,
    iso,
    post,
    serve,
    signed,
    wire,
)


async def test_handler_status_codes(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="skala_async")
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder, max_body_bytes=1024)
    receiver = handler.__self__  # type: ignore[attr-defined]
    body = wire(event_dict())
    async with serve(handler) as url:
        assert await post(http, url, body, signed(body)) == (200, "ok")
        assert await post(http, url, body, {}) == (401, "invalid signature")
        assert (await post(http, url, body, signed(body, "wrong")))[0] == 401
        assert (await post(http, url, body[:-1], signed(body)))[0] == 401
        # The signature is checked before anything is parsed.
        assert (await post(http, url, b"not json", {}))[0] == 401
        assert await post(http, url, b"not json", signed(b"not json")) == (400, "malformed event")
        big = b" " * 1025
        assert await post(http, url, big, signed(big)) == (413, "body too large")
        async with http.get(url) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
    assert [e.ticket_id for e in recorder.events] == [uuid.UUID(TICKET_ID)]
    assert receiver.counts["accepted"] == 1
    assert receiver.counts["invalid_signature"] == 4
    assert receiver.counts["malformed"] == 1
    assert receiver.counts["too_large"] == 1
    assert SECRET not in caplog.text
    assert "SUP-1234" not in caplog.text  # no body in the logs


async def test_oversized_chunked_body_is_cut_off(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder, max_body_bytes=4096)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1024
            yield b" " * 1024

    async with serve(handler) as url:
        async with http.post(url, data=chunks(), headers={SIGNATURE_HEADER: "x"}) as response:
            assert response.status == 413
        # A chunked body within the limit is fine.
        body = wire(event_dict())

        async def small() -> AsyncIterator[bytes]:
            yield body[:10]
            yield body[10:]

        assert await post(http, url, small(), signed(body)) == (200, "ok")
    assert handler.__self__.counts["too_large"] == 1  # type: ignore[attr-defined]
    assert len(recorder.events) == 1


async def test_duplicates_are_delivered_once(http: aiohttp.ClientSession) -> None:
    recorder = Recorder(delay=0.05)
    handler = webhook_handler(SECRET, recorder)
    created = wire(event_dict())
    failed = wire(event_dict(ticket_id=str(uuid.uuid4()), status="FAILED", issue_key=None))
    async with serve(handler) as url:
        # Concurrent copies (one waits for the first) and later ones, byte-identical or not.
        results = await asyncio.gather(
            *(post(http, url, created, signed(created)) for _ in range(5))
        )
        assert sorted(results) == [(200, "duplicate")] * 4 + [(200, "ok")]
        again = wire(event_dict(issued="2026-01-01T00:00:00Z"))  # a re-sent event, new time
        assert await post(http, url, again, signed(again)) == (200, "duplicate")
        assert await post(http, url, failed, signed(failed)) == (200, "ok")
        assert await post(http, url, failed, signed(failed)) == (200, "duplicate")
    assert recorder.calls == 2
    assert [e.status.value for e in recorder.events] == ["CREATED", "FAILED"]


async def test_dedupe_memory_is_bounded_and_can_be_off(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder, dedupe_size=2)
    bodies = [wire(event_dict(ticket_id=str(uuid.uuid4()))) for _ in range(3)]
    async with serve(handler) as url:
        for body in bodies:
            await post(http, url, body, signed(body))
        # The first pair was forgotten (least recently seen), the last two are remembered.
        assert (await post(http, url, bodies[0], signed(bodies[0])))[1] == "ok"
        assert (await post(http, url, bodies[2], signed(bodies[2])))[1] == "duplicate"
    assert recorder.calls == 4
    recorder = Recorder()
    async with serve(webhook_handler(SECRET, recorder, dedupe_size=0)) as url:
        for _ in range(3):
            assert (await post(http, url, bodies[0], signed(bodies[0])))[1] == "ok"
    assert recorder.calls == 3


async def test_failing_callback_answers_500_and_redelivery_works(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(fail=1, delay=0.05)
    handler = webhook_handler(SECRET, recorder)
    body = wire(event_dict())
    async with serve(handler) as url:
        # The first delivery fails; a copy that waited for it then handles the event itself.
        results = await asyncio.gather(
            post(http, url, body, signed(body)), _later(post(http, url, body, signed(body)))
        )
        assert sorted(results) == [(200, "ok"), (500, "callback failed")]
        assert await post(http, url, body, signed(body)) == (200, "duplicate")
        recorder.fail = 1
        other = wire(event_dict(ticket_id=str(uuid.uuid4())))
        assert (await post(http, url, other, signed(other)))[0] == 500
        assert await post(http, url, other, signed(other)) == (200, "ok")  # Ripio retries
    assert recorder.calls == 4
    assert len(recorder.events) == 2
    assert "webhook callback failed" in caplog.text
    assert "database is down" in caplog.text
    assert SECRET not in caplog.text


async def _later(coro: Any, delay: float = 0.01) -> Any:
    await asyncio.sleep(delay)
    return await coro


async def test_sync_callback_and_no_callback(http: aiohttp.ClientSession) -> None:
    seen: list[skala.SupportTicketEvent] = []
    body = wire(event_dict())
    async with serve(webhook_handler(SECRET, seen.append)) as url:
        assert await post(http, url, body, signed(body)) == (200, "ok")
    assert len(seen) == 1
    async with serve(webhook_handler(SECRET, None)) as url:
        assert await post(http, url, body, signed(body)) == (200, "ok")


async def test_other_families_are_acknowledged_and_ignored(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder)
    account = wire(
        {
            "eventType": "ACCOUNT.CLOSED",
            "issueDatetime": "2026-06-26T14:30:00.000Z",
            "account": {"customerId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
        }
    )
    ramp = wire(
        {
            "eventType": "ON-RAMP.TRADE.COMPLETED",
            "issueDatetime": "2024-04-25T18:22:37Z",
            "transactionObject": {},
        }
    )
    async with serve(handler) as url:
        for body in (account, ramp):
            status, text = await post(http, url, body, signed(body))
            assert status == 200
            assert text.startswith("ignored")
        assert (await post(http, url, account, {}))[0] == 401  # still verified first
    assert recorder.calls == 0
    assert handler.__self__.counts["ignored"] == 2  # type: ignore[attr-defined]


async def test_stale_and_future_events_are_refused(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder, tolerance=60)
    now = datetime.datetime.now(UTC)
    old = wire(event_dict(issued=iso(now - datetime.timedelta(seconds=120))))
    future = wire(event_dict(issued=iso(now + datetime.timedelta(seconds=120))))
    fresh = wire(event_dict(issued=iso(now)))
    async with serve(handler) as url:
        assert await post(http, url, old, signed(old)) == (400, "stale event")
        assert await post(http, url, future, signed(future)) == (400, "stale event")
        assert await post(http, url, fresh, signed(fresh)) == (200, "ok")
    assert recorder.calls == 1


async def test_unexpected_errors_never_reach_aiohttp(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WebhookReceiver(SECRET)

    async def broken(body: bytes, headers: Any) -> tuple[int, str]:
        raise KeyError("bug")

    monkeypatch.setattr(receiver, "_process", broken)
    body = wire(event_dict())
    async with serve(receiver.handle) as url:
        assert await post(http, url, body, signed(body)) == (500, "internal error")
    assert await receiver.process(body, signed(body)) == (500, "internal error")
    assert receiver.counts["error"] == 2
    assert "unexpected error while handling a webhook" in caplog.text


async def test_process_for_other_frameworks() -> None:
    receiver = WebhookReceiver(SECRET, max_body_bytes=2048)
    body = wire(event_dict())
    assert await receiver.process(body, signed(body)) == (200, "ok")
    assert await receiver.process(b" " * 4096, {}) == (413, "body too large")
    assert await receiver.process(body, {}) == (401, "invalid signature")


# ------------------------------------------------------------------------------ ASGI
