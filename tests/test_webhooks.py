"""Webhooks: signature and parsing (pure), the aiohttp and ASGI receivers over real HTTP on
127.0.0.1, the sandbox's webhook switches, and waits that end by webhook or by polling."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
from skala_async.cli import main
from skala_async.testing import FAST_POLL, SkalaSandbox, sandbox_client
from skala_async.webhooks import (
    SIGNATURE_HEADER,
    InvalidSignatureError,
    InvalidWebhookError,
    StaleWebhookError,
    WebhookReceiver,
    check_freshness,
    parse_event,
    sign_payload,
    verify_and_parse,
    verify_signature,
    webhook_handler,
)

SECRET = "whsec-test-ñ-0123456789"
TICKET_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
UTC = datetime.timezone.utc
ROOT = Path(__file__).resolve().parent.parent

# A short slow-fallback policy, so that "webhooks dropped" tests end quickly.
SHORT_FALLBACK = skala.PollPolicy(first_delay=0.3, min_interval=0.3, max_interval=0.5)


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_dict(
    ticket_id: str = TICKET_ID,
    status: str = "CREATED",
    issue_key: str | None = "SUP-1234",
    issued: str | None = None,
    **ticket_extra: Any,
) -> dict[str, Any]:
    return {
        "eventType": f"SUPPORT_TICKET.{status}",
        "issueDatetime": iso(datetime.datetime.now(UTC)) if issued is None else issued,
        "supportTicket": {
            "ticketId": ticket_id,
            "status": status,
            "issueKey": issue_key,
            **ticket_extra,
        },
    }


def wire(event: dict[str, Any]) -> bytes:
    """The body exactly as Ripio sends it (reference section 6.4)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def documented_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = SECRET, name: str = SIGNATURE_HEADER) -> dict[str, str]:
    return {"Content-Type": "application/json", name: documented_signature(body, secret)}


# ------------------------------------------------------------------------------ signatures


def test_documented_signature_verifies() -> None:
    body = wire(event_dict())
    verify_signature(body, {SIGNATURE_HEADER: documented_signature(body)}, SECRET)
    assert sign_payload(body, SECRET) == documented_signature(body)
    assert sign_payload(body, SECRET.encode()) == documented_signature(body)
    verify_signature(bytearray(body), [(SIGNATURE_HEADER, sign_payload(body, SECRET))], SECRET)


def test_every_single_byte_flip_is_rejected() -> None:
    body = wire(event_dict())
    headers = {SIGNATURE_HEADER: documented_signature(body)}
    for position in range(len(body)):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidSignatureError, match="does not match"):
            verify_signature(bytes(tampered), headers, SECRET)
    with pytest.raises(InvalidSignatureError):
        verify_signature(body + b" ", headers, SECRET)
    with pytest.raises(InvalidSignatureError):
        verify_signature(body[:-1], headers, SECRET)


def test_every_signature_character_matters() -> None:
    body = wire(event_dict())
    good = documented_signature(body)
    for position in range(len("sha256="), len(good)):
        flipped = "0" if good[position] != "0" else "1"
        bad = good[:position] + flipped + good[position + 1 :]
        with pytest.raises(InvalidSignatureError):
            verify_signature(body, {SIGNATURE_HEADER: bad}, SECRET)


def test_wrong_secret_missing_and_malformed_headers() -> None:
    body = wire(event_dict())
    with pytest.raises(InvalidSignatureError, match="does not match"):
        verify_signature(body, signed(body, "another-secret"), SECRET)
    with pytest.raises(InvalidSignatureError, match="missing"):
        verify_signature(body, {"Content-Type": "application/json"}, SECRET)
    with pytest.raises(InvalidSignatureError, match="missing"):
        verify_signature(body, {"X-Signature": documented_signature(body)}, SECRET)
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for value in ("", digest, "sha1=" + digest, "sha256:" + digest, "sha256=ñ" + digest[1:]):
        with pytest.raises(InvalidSignatureError):
            verify_signature(body, {SIGNATURE_HEADER: value}, SECRET)


@pytest.mark.parametrize(
    "name",
    [
        "Http-X-Wh-Signature-256",
        "HTTP-X-WH-SIGNATURE-256",
        "http-x-wh-signature-256",
        "X-Wh-Signature-256",
        "x-wh-signature-256",
        "X-WH-SIGNATURE-256",
    ],
)
def test_both_header_names_in_any_case(name: str) -> None:
    body = wire(event_dict())
    verify_signature(body, {name: documented_signature(body)}, SECRET)


def test_header_value_variants() -> None:
    body = wire(event_dict())
    good = documented_signature(body)
    verify_signature(body, {SIGNATURE_HEADER: f"  {good.upper()}  "}, SECRET)
    # A proxy folded two headers into one, or sent both names: any valid one is enough.
    verify_signature(body, {SIGNATURE_HEADER: f"sha256={'0' * 64}, {good}"}, SECRET)
    verify_signature(
        body, [("X-Wh-Signature-256", "sha256=" + "0" * 64), (SIGNATURE_HEADER, good)], SECRET
    )


def test_rotation_accepts_any_listed_secret() -> None:
    body = wire(event_dict())
    old, new = "old-secret", "new-secret"
    for secret in (old, new):
        verify_signature(body, signed(body, secret), [new, old])
        verify_signature(body, signed(body, secret), (new.encode(), old))
    with pytest.raises(InvalidSignatureError):
        verify_signature(body, signed(body, "retired"), [new, old])


def test_bad_arguments_are_caller_errors() -> None:
    body = wire(event_dict())
    headers = signed(body)
    with pytest.raises(TypeError, match="raw request body as bytes"):
        verify_signature(body.decode(), headers, SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        verify_signature(body, headers, "")
    with pytest.raises(ValueError, match="no webhook secret"):
        verify_signature(body, headers, [])
    with pytest.raises(TypeError, match="str or bytes"):
        verify_signature(body, headers, [SECRET, 42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str or bytes"):
        verify_signature(body, headers, 42)  # type: ignore[arg-type]


def test_non_ascii_payload_verifies_over_raw_bytes() -> None:
    event = event_dict(customerName="Ñandú Muñoz")
    body = wire(event)
    assert b"\\u00d1and\\u00fa Mu\\u00f1oz" in body  # ASCII-escaped, as Ripio sends it
    parsed = verify_and_parse(body, signed(body), SECRET)
    assert parsed.extra == {"supportTicket": {"customerName": "Ñandú Muñoz"}}
    # The same event as raw UTF-8 is different bytes: it verifies only with its own signature.
    utf8 = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    assert utf8 != body
    with pytest.raises(InvalidSignatureError):
        verify_signature(utf8, signed(body), SECRET)
    assert verify_and_parse(utf8, signed(utf8), SECRET) == parsed


def test_secret_never_in_errors_or_repr() -> None:
    body = wire(event_dict())
    messages = []
    for headers in ({}, signed(body, "other"), {SIGNATURE_HEADER: "junk"}):
        with pytest.raises(InvalidSignatureError) as info:
            verify_signature(body, headers, SECRET)
        messages.append(str(info.value))
    receiver = WebhookReceiver([SECRET, "second-secret"], tolerance=60)
    messages.append(repr(receiver))
    text = "\n".join(messages)
    assert SECRET not in text
    assert "second-secret" not in text
    assert documented_signature(body) not in text
    assert "2 secrets" in repr(receiver)


def test_package_exports_load_the_module_lazily() -> None:
    from skala_async import webhooks

    assert skala.WebhookError is webhooks.WebhookError
    assert skala.webhooks is webhooks
    assert issubclass(skala.InvalidSignatureError, skala.SkalaError)
    assert {"WebhookReceiver", "StaleWebhookError"} <= set(dir(skala))
    with pytest.raises(AttributeError):
        _ = skala.NoSuchName  # type: ignore[attr-defined]
    code = "import sys, skala_async; print('skala_async.webhooks' in sys.modules)"
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------ parsing


def test_parse_event_fields() -> None:
    event = parse_event(wire(event_dict(issued="2026-06-26T14:30:00.000Z")))
    assert event.event_type == "SUPPORT_TICKET.CREATED"
    assert event.issued_at == datetime.datetime(2026, 6, 26, 14, 30, tzinfo=UTC)
    assert event.issued_at.tzinfo is not None
    assert event.ticket == skala.Ticket(
        uuid.UUID(TICKET_ID), skala.TicketStatus.CREATED, "SUP-1234"
    )
    assert event.status is skala.TicketStatus.CREATED
    assert event.ticket_id == uuid.UUID(TICKET_ID)
    assert event.extra == {}
    with pytest.raises(AttributeError):
        event.event_type = "x"  # type: ignore[misc]
    body = wire(event_dict(status="FAILED", issue_key=None))  # one timestamp for both
    failed = parse_event(body)
    assert failed.status is skala.TicketStatus.FAILED
    assert failed.ticket.issue_key is None
    assert hash(failed) == hash(parse_event(body))


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-06-26T14:30:05Z", datetime.datetime(2026, 6, 26, 14, 30, 5, tzinfo=UTC)),
        ("2026-06-26T14:30:05+00:00", datetime.datetime(2026, 6, 26, 14, 30, 5, tzinfo=UTC)),
        ("2026-06-26T14:30:05.1Z", datetime.datetime(2026, 6, 26, 14, 30, 5, 100000, tzinfo=UTC)),
        ("2026-06-26T14:30:05.123Z", datetime.datetime(2026, 6, 26, 14, 30, 5, 123000, tzinfo=UTC)),
        (
            "2026-06-26T14:30:05.123456+00:00",
            datetime.datetime(2026, 6, 26, 14, 30, 5, 123456, tzinfo=UTC),
        ),
        ("2024-04-25T18:22:37Z", datetime.datetime(2024, 4, 25, 18, 22, 37, tzinfo=UTC)),
    ],
)
def test_issue_datetime_formats(stamp: str, expected: datetime.datetime) -> None:
    assert parse_event(wire(event_dict(issued=stamp))).issued_at == expected


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-06-26T14:30:05",  # no zone
        "2026-06-26T14:30:05.1234567Z",  # 7 digits
        "2026-06-26T14:30:05.Z",
        "2026-06-26T14:30:05+01:00",  # not UTC
        "2026-06-26 14:30:05Z",
        "2026-13-26T14:30:05Z",  # month 13
        "2026-02-30T14:30:05Z",
        "2026-06-26T14:30:05Z ",
        "٢٠٢٦-06-26T14:30:05Z",  # non-ASCII digits
        "",
    ],
)
def test_bad_issue_datetime(stamp: str) -> None:
    with pytest.raises(InvalidWebhookError, match="issueDatetime"):
        parse_event(wire(event_dict(issued=stamp)))


def test_unknown_fields_are_kept() -> None:
    data = event_dict(customerId="3c90c3cc-0d44-4b50-8888-8dd25736052a")
    data["deliveryId"] = "d-1"
    event = parse_event(wire(data))
    assert event.extra == {
        "deliveryId": "d-1",
        "supportTicket": {"customerId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
    }


def test_status_from_event_type_and_unknown_statuses() -> None:
    data = event_dict()
    del data["supportTicket"]["status"]
    assert parse_event(wire(data)).status is skala.TicketStatus.CREATED
    archived = parse_event(wire(event_dict(status="ARCHIVED", issue_key=None)))
    assert archived.status.value == "ARCHIVED"
    assert not archived.status.known
    # A future event type with a supportTicket object is still a ticket event.
    data = event_dict()
    data["eventType"] = "SUPPORT_TICKETS_V2.UPDATED"
    assert parse_event(wire(data)).status is skala.TicketStatus.CREATED


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "not an object"),
        (b'"x"', "not an object"),
        (b"{}", "eventType"),
        (b'{"eventType":5}', "eventType"),
        (b'{"eventType":"SUPPORT_TICKET.CREATED"}', "without a supportTicket"),
        (b'{"eventType":"ACCOUNT.CLOSED","account":{}}', "another Ripio family"),
        (
            b'{"eventType":"SUPPORT_TICKET.","supportTicket":{},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "names no status",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":[],'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not an object",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{"ticketId":"x"},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not a ticket",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{"status":"CREATED"},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not a ticket",
        ),
        (b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{}}', "issueDatetime"),
        (b"[" * 100000, "not valid JSON"),
    ],
)
def test_malformed_bodies(body: bytes, match: str) -> None:
    with pytest.raises(InvalidWebhookError, match=match):
        parse_event(body)


def test_contradicting_status_and_wrong_types() -> None:
    data = event_dict()
    data["supportTicket"]["status"] = "FAILED"
    with pytest.raises(InvalidWebhookError, match="contradicts") as info:
        parse_event(wire(data))
    assert info.value.event_type == "SUPPORT_TICKET.CREATED"
    data = event_dict()
    data["supportTicket"]["issueKey"] = 1234
    with pytest.raises(InvalidWebhookError, match=r"@ supportTicket\.issueKey"):
        parse_event(wire(data))
    with pytest.raises(TypeError):
        parse_event(json.dumps(event_dict()))  # type: ignore[arg-type]


def test_other_families_name_their_event_type() -> None:
    body = wire({"eventType": "ACCOUNT.CLOSED", "issueDatetime": "2026-06-26T14:30:00Z"})
    with pytest.raises(InvalidWebhookError) as info:
        parse_event(body)
    assert info.value.event_type == "ACCOUNT.CLOSED"


# ------------------------------------------------------------------------------ freshness


def test_freshness_window_both_directions() -> None:
    now = datetime.datetime(2026, 6, 26, 14, 30, tzinfo=UTC)
    for offset in (-299, 0, 299):
        issued = iso(now + datetime.timedelta(seconds=offset))
        parse_event(wire(event_dict(issued=issued)), tolerance=300, now=now)
    stale = iso(now - datetime.timedelta(seconds=301))
    with pytest.raises(StaleWebhookError, match="ago") as info:
        parse_event(wire(event_dict(issued=stale)), tolerance=300, now=now)
    assert info.value.age == pytest.approx(301)
    assert info.value.tolerance == 300
    future = iso(now + datetime.timedelta(seconds=301))
    with pytest.raises(StaleWebhookError, match="future") as info:
        parse_event(
            wire(event_dict(issued=future)), tolerance=datetime.timedelta(minutes=5), now=now
        )
    assert info.value.age == pytest.approx(-301)
    # Without a window, any time is accepted.
    parse_event(wire(event_dict(issued="2001-01-01T00:00:00Z")))
    # Against the real clock.
    check_freshness(datetime.datetime.now(UTC), 5)
    with pytest.raises(StaleWebhookError):
        check_freshness(datetime.datetime.now(UTC) - datetime.timedelta(seconds=10), 5)


@pytest.mark.parametrize(
    "tolerance", [0, -1, 0.0, float("nan"), float("inf"), datetime.timedelta()]
)
def test_non_positive_window_is_an_error(tolerance: Any) -> None:
    body = wire(event_dict())
    with pytest.raises(ValueError, match="positive"):
        parse_event(body, tolerance=tolerance)
    with pytest.raises(ValueError, match="positive"):
        check_freshness(datetime.datetime.now(UTC), tolerance)
    with pytest.raises(ValueError, match="positive"):
        WebhookReceiver(SECRET, tolerance=tolerance)


def test_window_type_and_naive_now() -> None:
    with pytest.raises(TypeError):
        check_freshness(datetime.datetime.now(UTC), "60")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_freshness(datetime.datetime.now(UTC), True)
    with pytest.raises(ValueError, match="aware"):
        check_freshness(datetime.datetime.now(UTC), 60, now=datetime.datetime.now())


def test_receiver_arguments() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        WebhookReceiver(SECRET, max_body_bytes=0)
    with pytest.raises(ValueError, match="dedupe_size"):
        WebhookReceiver(SECRET, dedupe_size=-1)
    with pytest.raises(TypeError, match="callable"):
        WebhookReceiver(SECRET, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        WebhookReceiver(b"")


# ------------------------------------------------------------------------------ aiohttp handler


@asynccontextmanager
async def serve(handler: Any, path: str = "/hook") -> AsyncIterator[str]:
    """Serve ``handler`` for every method on ``path`` on 127.0.0.1; yield its URL."""
    app = web.Application()
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


class Recorder:
    """An async callback that records events (optionally failing or slow)."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.events: list[skala.SupportTicketEvent] = []
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def __call__(self, event: skala.SupportTicketEvent) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database is down")
        self.events.append(event)


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


class AsgiCall:
    """Drive an ASGI app with one request; collect what it sends."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str], method: str = "POST") -> None:
        self.messages = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.scope = {
            "type": "http",
            "method": method,
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop(0) if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any) -> tuple[int | None, bytes]:
        await app(self.scope, self.receive, self.send)
        if not self.sent:
            return None, b""
        return self.sent[0]["status"], b"".join(m.get("body", b"") for m in self.sent[1:])


async def test_asgi_app() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(SECRET, recorder, max_body_bytes=2048)
    body = wire(event_dict())
    assert await AsgiCall([body[:20], body[20:]], signed(body)).run(receiver.asgi) == (200, b"ok")
    assert (await AsgiCall([body], signed(body)).run(receiver.asgi))[1] == b"duplicate"
    assert (await AsgiCall([body], {}).run(receiver.asgi))[0] == 401
    assert (await AsgiCall([b"x"], signed(b"x")).run(receiver.asgi))[0] == 400
    length = {"Content-Length": "999999", **signed(body)}
    assert (await AsgiCall([body], length).run(receiver.asgi))[0] == 413
    assert (await AsgiCall([b" " * 1500] * 2, {}).run(receiver.asgi))[0] == 413
    assert (await AsgiCall([body], {"Content-Length": "x"}).run(receiver.asgi))[0] == 400
    call = AsgiCall([], {}, method="GET")
    assert (await call.run(receiver.asgi))[0] == 405
    assert (b"allow", b"POST") in call.sent[0]["headers"]
    # The client went away mid-body: nothing is answered, nothing is delivered.
    gone = AsgiCall([body[:10]], signed(body))
    gone.messages[0]["more_body"] = True
    assert await gone.run(receiver.asgi) == (None, b"")
    assert recorder.calls == 1


async def test_asgi_lifespan_and_other_scopes() -> None:
    receiver = WebhookReceiver(SECRET)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await receiver.asgi({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await receiver.asgi({"type": "websocket"}, receive, send)
    assert len(sent) == 2


# ------------------------------------------------------------------------------ the sandbox


async def test_sandbox_deliveries_verify_and_parse(http: aiohttp.ClientSession) -> None:
    raw: list[tuple[bytes, dict[str, str]]] = []

    async def keep(request: web.Request) -> web.Response:
        raw.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    async with serve(keep) as url, SkalaSandbox(webhook_url=url, webhook_secret=SECRET) as sb:
        async with sandbox_client(sb) as client:
            handle = await client.create_ticket(sb.customer_id, "Ñandú", "descripción")
            await handle.wait_until_created(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
    [(body, headers)] = raw
    event = verify_and_parse(body, headers, SECRET, tolerance=30)
    assert event.ticket_id == handle.ticket_id
    assert event.ticket == handle.ticket
    assert body.isascii()


async def test_sandbox_switches(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    handler = webhook_handler(SECRET, recorder)
    async with (
        serve(handler) as url,
        SkalaSandbox(processing_delay=None, webhook_url=url, webhook_secret=SECRET) as sb,
    ):
        async with sandbox_client(sb) as client:
            ids = [
                str((await client.create_ticket(sb.customer_id, "s", "d")).ticket_id)
                for _ in range(6)
            ]

        async def finish(ticket_id: str, status: str = "CREATED") -> list[Any]:
            before = len(sb.webhook_deliveries)
            sb.complete(ticket_id, status)
            await sb.wait_for_webhooks(timeout=5)
            return [d.result for d in sb.webhook_deliveries[before:]]

        sb.webhook_duplicates = 3
        sb.webhook_out_of_order = 0.05
        assert sorted(await finish(ids[0]), key=str) == [200, 200, 200, 200]
        sb.webhook_duplicates = 0
        sb.webhook_out_of_order = False
        sb.webhook_wrong_signature = True
        assert await finish(ids[1]) == [401]
        sb.webhook_wrong_signature = False
        sb.webhook_drop = True
        assert await finish(ids[2]) == ["dropped"]
        sb.webhook_drop = 0.0
        sb.webhook_delay = 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await finish(ids[3], "FAILED") == [200]
        assert loop.time() - started >= 0.2
        sb.webhook_delay = (0.0, 0.01)
        sb.webhook_drop = 0.5
        sb.webhook_duplicates = 19
        results = await finish(ids[4])
        assert len(results) == 20
        assert set(results) <= {200, "dropped"}
        sb.webhook_drop = False
        sb.webhook_duplicates = 0
        sb.webhook_secret = None
        sb.webhook_wrong_signature = True  # a wrong signature even without a secret
        assert await finish(ids[5]) == [401]
    # Four copies and up to twenty copies: each (ticket, status) reached the callback once.
    delivered = [str(e.ticket_id) for e in recorder.events]
    assert delivered[:2] == [ids[0], ids[3]]
    assert len(delivered) == len(set(delivered)) >= 2


def test_sandbox_switch_validation() -> None:
    sb = SkalaSandbox()
    for name, value in [
        ("webhook_duplicates", -1),
        ("webhook_duplicates", 1.5),
        ("webhook_duplicates", True),
        ("webhook_delay", -1),
        ("webhook_delay", (2, 1)),
        ("webhook_delay", None),
        ("webhook_drop", 1.5),
        ("webhook_drop", "yes"),
        ("webhook_out_of_order", -0.1),
    ]:
        with pytest.raises(ValueError, match=name):
            setattr(sb, name, value)
    sb.webhook_delay = (0, 1)
    assert sb.webhook_delay == (0.0, 1.0)


# ------------------------------------------------------------------------------ waiting


@asynccontextmanager
async def webhook_setup(
    processing_delay: Any = (0.05, 0.2), **client_options: Any
) -> AsyncIterator[tuple[SkalaSandbox, skala.SkalaClient, Recorder]]:
    """A sandbox POSTing to a client's webhook handler, over HTTP on 127.0.0.1."""
    recorder = Recorder()
    async with (
        SkalaSandbox(processing_delay=processing_delay, webhook_secret=SECRET) as sb,
        sandbox_client(sb, **client_options) as client,
        serve(client.webhook_handler(SECRET, recorder)) as url,
    ):
        sb.webhook_url = url
        yield sb, client, recorder


async def create(client: skala.SkalaClient, sb: SkalaSandbox, n: int) -> list[skala.TicketHandle]:
    return await asyncio.gather(*(client.create_ticket(sb.customer_id, "s", "d") for _ in range(n)))


async def test_waits_end_by_webhook_with_zero_gets() -> None:
    async with webhook_setup() as (sb, client, recorder):
        loop = asyncio.get_running_loop()
        handles = await create(client, sb, 10)
        tickets = await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        returned = loop.time()
        assert {t.status for t in tickets} == {skala.TicketStatus.CREATED}
        assert sb.count("get") == 0
        assert client.request_counts["get"] == 0
        assert all(h.polls == 0 for h in handles)
        finished = max(sb.tickets[str(t.ticket_id)].finished_at or 0 for t in tickets)
        assert returned - finished < 0.5
        assert len(recorder.events) == 10
        assert client.bus.webhooks_healthy


async def test_failed_by_webhook_and_watch() -> None:
    async with webhook_setup() as (sb, client, _):
        sb.outcome = "FAILED"
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        with pytest.raises(skala.TicketFailedError):
            await handle.wait_until_created(timeout=5)
        sb.outcome = "CREATED"
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        statuses = [t.status.value async for t in handle.watch(timeout=5)]
        assert statuses == ["PENDING", "CREATED"]
        assert sb.count("get") == 0


async def test_webhook_before_the_wait_begins() -> None:
    async with webhook_setup(processing_delay=0.0) as (sb, client, _):
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        ticket = await asyncio.wait_for(handle.wait_until_created(), 0.5)
        assert ticket.issue_key is not None
        rebuilt = client.ticket_handle(handle.ticket_id)  # e.g. after a restart
        assert await asyncio.wait_for(rebuilt.wait_until_created(), 0.5) == ticket
        assert sb.count("get") == 0


async def test_dropped_webhooks_fall_back_to_polling(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="skala_async")
    async with webhook_setup(poll=FAST_POLL, webhook_poll=SHORT_FALLBACK) as (sb, client, _):
        assert client._wait_policy() is SHORT_FALLBACK
        sb.webhook_drop = True
        handles = await create(client, sb, 5)
        tickets = await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        assert {t.status for t in tickets} == {skala.TicketStatus.CREATED}
        assert sb.count("get") >= 5
        assert all(h.polls >= 1 for h in handles)
        # Webhooks are now taken to have stopped: polling is back to the normal policy.
        assert not client.bus.webhooks_healthy
        assert client._wait_policy() is FAST_POLL
        assert caplog.text.count("webhooks seem not to arrive; polling normally") == 1
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        assert handle.polls >= 1
        # Webhooks come back: the next verified one restores the slow fallback.
        sb.webhook_drop = False
        sb.processing_delay = 0.01  # well inside the 0.3 s fallback, even on a loaded machine
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        # The wait may end by its own GET before the webhook lands: let the delivery finish.
        await sb.wait_for_webhooks(timeout=5)
        assert client.bus.webhooks_healthy
        assert client._wait_policy() is SHORT_FALLBACK
        assert "webhooks arrive again" in caplog.text
        gets = sb.count("get")
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        await handle.wait_until_created(timeout=5)
        assert handle.polls == 0
        assert sb.count("get") == gets


async def test_demotion_wakes_waits_asleep_on_the_slow_schedule() -> None:
    slow = skala.PollPolicy(first_delay=30, min_interval=30, max_interval=60)
    async with webhook_setup(processing_delay=None, poll=FAST_POLL, webhook_poll=slow) as (
        sb,
        client,
        _,
    ):
        assert client._wait_policy() is slow
        sb.webhook_drop = True
        first, second = await create(client, sb, 2)
        sleeping = asyncio.ensure_future(second.wait_until_created(timeout=10))
        await asyncio.sleep(0.05)
        assert second.polls == 0  # asleep until the slow first poll, 30 s away
        sb.complete(str(first.ticket_id))
        sb.complete(str(second.ticket_id))
        # A wait with its own fast policy learns the outcome by GET: webhooks have stopped.
        await first.wait_until_created(timeout=5, poll=FAST_POLL)
        assert not client.bus.webhooks_healthy
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await asyncio.wait_for(sleeping, 5)
        assert ticket.status is skala.TicketStatus.CREATED
        assert loop.time() - started < 1.0  # rescheduled at once, not after 30 s
        assert second.polls >= 1


async def test_wrong_signature_means_polling() -> None:
    async with webhook_setup(poll=FAST_POLL, webhook_poll=SHORT_FALLBACK) as (sb, client, rec):
        sb.webhook_wrong_signature = True
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        ticket = await handle.wait_until_created(timeout=5)
        assert ticket.status is skala.TicketStatus.CREATED
        assert handle.polls >= 1
        await sb.wait_for_webhooks(timeout=5)
        assert [d.result for d in sb.webhook_deliveries] == [401]
        assert rec.calls == 0


async def test_duplicated_out_of_order_webhooks_wake_once() -> None:
    async with webhook_setup(processing_delay=(0.0, 0.05)) as (sb, client, recorder):
        sb.webhook_duplicates = 2
        sb.webhook_out_of_order = True
        handles = await create(client, sb, 10)
        await asyncio.gather(*(h.wait_until_created(timeout=5) for h in handles))
        await sb.wait_for_webhooks(timeout=5)
        assert sb.count("get") == 0
        assert len(recorder.events) == 10
        assert len(sb.webhook_deliveries) == 30


async def test_client_handler_counts_and_no_tasks_left(
    no_tasks_left: Callable[[], None],
) -> None:
    async with webhook_setup() as (sb, client, _):
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        waiting = asyncio.ensure_future(handle.wait_until_created(timeout=5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert client.bus.waiting() == 0
        await sb.wait_until_processed(timeout=5)
        await sb.wait_for_webhooks(timeout=5)
        assert client.bus.last_webhook_at is not None
    no_tasks_left()


# ------------------------------------------------------------------------------ CLI


def test_cli_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = wire(event_dict())
    path = tmp_path / "event.json"
    path.write_bytes(body)
    assert main(["webhooks", "sign", str(path), "--secret", SECRET]) == 0
    assert capsys.readouterr().out == f"Http-X-Wh-Signature-256: {documented_signature(body)}\n"
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", SECRET)
    assert main(["webhooks", "sign", str(path), "--json", "--header", "X-Wh-Signature-256"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "header": "X-Wh-Signature-256",
        "value": documented_signature(body),
    }
    assert main(["webhooks", "sign", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["webhooks", "sign", str(path), "--secret", "a", "--secret", "b"]) == 2
    monkeypatch.delenv("SKALA_WEBHOOK_SECRET")
    assert main(["webhooks", "sign", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "SKALA_WEBHOOK_SECRET" in err
    assert SECRET not in out + err


_WITH_CTRL_C = (
    # A background job of a non-interactive shell inherits SIGINT ignored: restore it.
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from skala_async.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_cli_listen_prints_verified_events(
    http: aiohttp.ClientSession, stop: signal.Signals
) -> None:
    env = {**os.environ, "SKALA_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", _WITH_CTRL_C, "webhooks", "listen", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        body = wire(event_dict(customerId="3c90c3cc-0d44-4b50-8888-8dd25736052a"))
        assert await post(http, url + "any/path", body, signed(body)) == (200, "ok")
        assert await post(http, url, body, signed(body)) == (200, "duplicate")
        assert (await post(http, url, body, signed(body, "wrong")))[0] == 401
        record = json.loads(proc.stdout.readline())
        assert record == {
            "event_type": "SUPPORT_TICKET.CREATED",
            "issued_at": record["issued_at"],
            "ticket_id": TICKET_ID,
            "status": "CREATED",
            "issue_key": "SUP-1234",
            "extra": {"supportTicket": {"customerId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}},
        }
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == ""  # one line per event, and the duplicate was not printed
        assert "webhook refused (401)" in err
        assert "webhook listener stopped" in err
        assert "Traceback" not in err
        assert SECRET not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_listen_needs_a_secret_and_a_free_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKALA_WEBHOOK_SECRET", raising=False)
    assert main(["webhooks", "listen", "--port", "0"]) == 2
    assert "SKALA_WEBHOOK_SECRET" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["webhooks", "listen", "--port", str(port), "--secret", "s"]) == 4
    assert "cannot listen" in capsys.readouterr().err


# ------------------------------------------------------------------------------ benchmark


@pytest.mark.slow
def test_benchmark_smoke() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(ROOT / "benchmarks" / "bench_webhooks.py"), "--quick", "--no-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GETs per ticket" in result.stdout
    assert "webhooks dropped" in result.stdout
