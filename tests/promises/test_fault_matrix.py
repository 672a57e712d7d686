"""The fault matrix: every endpoint against every fault, over real HTTP to the sandbox.

Each cell states what the user sees (a result, or the exception class), how many requests
reached the sandbox, and whether a duplicate ticket could result; the test of the cell
checks all three, and for creates also compares the sandbox's tickets with what the client
reported. The "Fault matrix" table of docs/reliability.md is rendered from the same rows (``ROWS``,
``WEBHOOK_ROWS``) and a test fails when it differs, so the table cannot drift:

    .venv/bin/python -m tests.promises.test_fault_matrix  # the table for docs/reliability.md

Settings of every cell: ``RetryPolicy(attempts=4, max_retry_after=0.5)``, a 0.75 s read
timeout; faults hit the first request(s) of the endpoint only, unless the fault says
"every attempt". Bulk cells submit 3 inputs one at a time, the fault hitting the first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

import skala_async as skala
from skala_async import RetryPolicy, Timeouts
from skala_async.errors import (
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    SkalaError,
    TransportError,
    UnexpectedResponseError,
    UploadAbortedError,
    WaitTimeoutError,
)
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from skala_async.webhooks import WebhookReceiver, sign_payload

RETRY = RetryPolicy(attempts=4, initial=0.01, cap=0.05, max_retry_after=0.5)
TIMEOUTS = Timeouts(connect=5.0, read=0.75, upload_read=0.75)
#: How long a "slow" answer takes: well past the 0.75 s timeout.
SLOW = 1.5
#: The attachment of the "reset mid-upload" cells: the sandbox hangs up on it.
BIG = 8 * 1024 * 1024
WEBHOOK_SECRET = "whsec-fault-matrix-Quokka-42"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"


# ================================================================================= faults


@attrs.frozen
class FaultKind:
    label: str
    faults: tuple[Fault, ...] = ()


FAULTS: dict[str, FaultKind] = {
    "429_ra": FaultKind("429 with `Retry-After: 0.05`", (Fault.http(429, retry_after=0.05),)),
    "429": FaultKind("429 without `Retry-After`", (Fault.http(429),)),
    "429_long": FaultKind(
        "429 with `Retry-After: 3600` (over `max_retry_after`)",
        (Fault.http(429, retry_after=3600),),
    ),
    "429_always": FaultKind("429 on every attempt", (Fault.http(429),) * 4),
    "500": FaultKind("500", (Fault.http(500),)),
    "500_always": FaultKind("500 on every attempt", (Fault.http(500),) * 4),
    "502": FaultKind("502 (a proxy's HTML page)", (Fault.http(502),)),
    "503": FaultKind("503 without `Retry-After`", (Fault.http(503),)),
    "503_ra": FaultKind("503 with `Retry-After: 0.05`", (Fault.http(503, retry_after=0.05),)),
    "504": FaultKind("504", (Fault.http(504),)),
    "drop": FaultKind("connection dropped before the body is read", (Fault.drop(),)),
    "drop_after_body": FaultKind(
        "connection dropped after the body, unprocessed", (Fault.drop(after_body=True),)
    ),
    "lost_answer": FaultKind(
        "connection dropped after processing (answer lost)", (Fault.drop_after_processing(),)
    ),
    "slow": FaultKind(f"answer after {SLOW:g} s, past the 0.75 s timeout", (Fault.delay(SLOW),)),
    "reset_upload": FaultKind("connection reset mid-upload (8 MiB attachment)", (Fault.drop(),)),
    "expired": FaultKind("401: the token expired (all tokens revoked)"),
    "401": FaultKind("401: credentials refused", (Fault.http(401),)),
    # Answers that are neither the documented one nor a documented refusal.
    "303_stored": FaultKind(
        "303 See Other, after storing the ticket",
        (Fault.http(303, processed=True, headers={"Location": "/api/v1/supportTickets/"}),),
    ),
    "200_stored": FaultKind(
        "200 (not 202) with the ticket, after storing it", (Fault.http(200, processed=True),)
    ),
    "400_page": FaultKind(
        "400 page of a proxy (not the API's error shape)",
        (Fault.http(400, body="<h1>400 Bad Request</h1>", content_type="text/html"),),
    ),
    # Failures on our own side, before the body was complete.
    "shrunk": FaultKind("the attachment (8 MiB) shrinks during the upload"),
    "progress_raises": FaultKind("the `progress` callback raises during the upload"),
}
#: Faults that only a create has (an answer to a create, an upload).
CREATE_ONLY = {"303_stored", "200_stored", "400_page", "shrunk", "progress_raises"}

OK = "ok"


@attrs.frozen
class Row:
    """One cell: ``endpoint`` under ``fault``, and what must come of it."""

    endpoint: str  # create, get, token, bulk
    fault: str  # a key of FAULTS
    #: OK, or the exception class the call raises.
    outcome: Any
    #: Requests the sandbox received during the call, by endpoint.
    requests: dict[str, int]
    #: For CreateOutcomeUnknownError: the class of its cause.
    cause: type[BaseException] | None = None
    #: Tickets in the sandbox afterwards (create and bulk).
    tickets: int | None = None
    #: Bulk: the counts of the report (non-zero ones), and the first input's error class.
    counts: dict[str, int] | None = None
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.endpoint}-{self.fault}"


COU = CreateOutcomeUnknownError


def _create(fault: str, outcome: Any, n: int, tickets: int, **kw: Any) -> Row:
    return Row(
        "create", fault, outcome, {"create": n, **kw.pop("extra", {})}, tickets=tickets, **kw
    )


def _read(endpoint: str, fault: str, outcome: Any, n: int, **kw: Any) -> Row:
    requests = {endpoint: n, **kw.pop("extra", {})}
    if endpoint == "token" and outcome is OK:
        requests["get"] = 1
    return Row(endpoint, fault, outcome, requests, **kw)


def _bulk(fault: str, counts: dict[str, int], n: int, tickets: int, **kw: Any) -> Row:
    outcome = kw.pop("first", OK)
    return Row(
        "bulk",
        fault,
        outcome,
        {"create": n, **kw.pop("extra", {})},
        tickets=tickets,
        counts=counts,
        **kw,
    )


NO_SLEEP = "at once, without sleeping 3600 s"

ROWS: list[Row] = [
    # ---------------------------------------------------------------------------- create
    _create("429_ra", OK, 2, 1),
    _create("429", OK, 2, 1),
    _create("429_long", RateLimitedError, 1, 0, note=NO_SLEEP),
    _create("429_always", RateLimitedError, 4, 0),
    _create("500", COU, 1, 0, cause=ServerError),
    _create("502", COU, 1, 0, cause=ServerError),
    _create("503", COU, 1, 0, cause=ServerError),
    _create("503_ra", OK, 2, 1),
    _create("504", COU, 1, 0, cause=ServerError),
    _create("drop", COU, 1, 0, cause=TransportError),
    _create("drop_after_body", COU, 1, 0, cause=TransportError),
    _create("lost_answer", COU, 1, 1, cause=TransportError),
    _create("slow", COU, 1, 1, cause=RequestTimeoutError),
    _create("reset_upload", COU, 1, 0, cause=TransportError),
    _create("expired", OK, 2, 1, extra={"token": 1}),
    _create("303_stored", COU, 1, 1, cause=UnexpectedResponseError),
    _create("200_stored", COU, 1, 1, cause=UnexpectedResponseError),
    _create("400_page", COU, 1, 0, cause=BadRequestError),
    _create("shrunk", UploadAbortedError, 1, 0),
    _create("progress_raises", UploadAbortedError, 1, 0),
    # ---------------------------------------------------------------------------- get
    *(
        _read(endpoint, fault, OK, 2)
        for endpoint in ("get", "token")
        for fault in ("429_ra", "429", "500", "502", "503", "503_ra", "504")
    ),
    *(_read(ep, "429_long", RateLimitedError, 1, note=NO_SLEEP) for ep in ("get", "token")),
    *(_read(ep, "429_always", RateLimitedError, 4) for ep in ("get", "token")),
    *(_read(ep, "500_always", ServerError, 4) for ep in ("get", "token")),
    *(
        _read(endpoint, fault, OK, 2)
        for endpoint in ("get", "token")
        for fault in ("drop", "drop_after_body", "lost_answer", "slow")
    ),
    _read("get", "expired", OK, 2, extra={"token": 1}),
    _read("get", "303_stored", UnexpectedResponseError, 1, note="not followed"),
    _read("token", "401", AuthenticationError, 1),
    # ---------------------------------------------------------------------------- bulk
    _bulk("429_ra", {"created": 3}, 4, 3),
    _bulk("429", {"created": 3}, 4, 3),
    _bulk("429_long", {"created": 2, "failed": 1}, 3, 2, first=RateLimitedError),
    _bulk("429_always", {"created": 2, "failed": 1}, 6, 2, first=RateLimitedError),
    *(
        _bulk(fault, {"created": 2, "uncertain": 1}, 3, 2, first=COU)
        for fault in ("500", "502", "503", "504", "drop", "drop_after_body", "reset_upload")
    ),
    _bulk("503_ra", {"created": 3}, 4, 3),
    *(
        _bulk(fault, {"created": 2, "uncertain": 1}, 3, 3, first=COU)
        for fault in ("lost_answer", "slow")
    ),
    _bulk("expired", {"created": 3}, 4, 3, extra={"token": 1}),
    *(
        _bulk(fault, {"created": 2, "uncertain": 1}, 3, 3, first=COU)
        for fault in ("303_stored", "200_stored")
    ),
    _bulk("400_page", {"created": 2, "uncertain": 1}, 3, 2, first=COU),
    _bulk("shrunk", {"created": 2, "failed": 1}, 3, 2, first=UploadAbortedError),
]
ENDPOINT_ORDER = {"create": 0, "get": 1, "token": 2, "bulk": 3}
FAULT_ORDER = {key: i for i, key in enumerate(FAULTS)}
ROWS.sort(key=lambda r: (ENDPOINT_ORDER[r.endpoint], FAULT_ORDER[r.fault]))


# ================================================================================= the cells


def _inject(sb: SkalaSandbox, endpoint: str, fault: str) -> None:
    if fault == "expired":
        sb.expire_tokens()
        return
    if endpoint == "get" and fault == "303_stored":  # a GET has nothing to store
        sb.inject("get", Fault.http(303, headers={"Location": "/elsewhere/"}))
        return
    target = "create" if endpoint == "bulk" else endpoint
    for f in FAULTS[fault].faults:
        sb.inject(target, f)  # type: ignore[arg-type]


def _counts(sb: SkalaSandbox) -> dict[str, int]:
    counts = collections.Counter(r.endpoint for r in sb.requests)
    return {k: v for k, v in counts.items() if v}


def _client_counts(client: skala.SkalaClient) -> dict[str, int]:
    return dict(client.request_counts)


def _sent_since(client: skala.SkalaClient, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in client.request_counts.items() if v - before[k]}


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "screen-recording.mp4"
    with path.open("wb") as f:
        f.truncate(BIG)
    return path


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
async def test_fault_cell(row: Row, big_file: Path) -> None:
    loop = asyncio.get_running_loop()
    uploads = ("reset_upload", "shrunk", "progress_raises")
    files: list[Any] = [big_file] if row.fault in uploads else []
    progress = None
    if row.fault == "shrunk":
        if row.endpoint == "create":
            progress = _truncating(big_file)  # after the first chunk went out
        else:  # bulk has no progress callback: measured, then shrunk before it is sent
            files = [skala.Attachment.from_path(big_file)]
            os.truncate(big_file, BIG // 8)
    elif row.fault == "progress_raises":
        progress = _raising
    async with (
        SkalaSandbox(processing_delay=None) as sb,
        sandbox_client(sb, retry=RETRY, timeouts=TIMEOUTS) as client,
    ):
        if row.endpoint in ("create", "bulk"):
            await client._auth.token()
        elif row.endpoint == "get":
            handle = await client.create_ticket(sb.customer_id, "to read", "a ticket to GET")
        else:  # token: the ticket comes from another client, so this one has no token yet
            async with sandbox_client(sb) as other:
                handle = await other.create_ticket(sb.customer_id, "to read", "by another")
        sb.clear_requests()
        tickets_before = set(sb.tickets)
        sent_before = _client_counts(client)
        _inject(sb, row.endpoint, row.fault)
        started = loop.time()
        result: Any = None
        error: BaseException | None = None
        try:
            if row.endpoint == "create":
                result = await client.create_ticket(
                    sb.customer_id,
                    "fault matrix",
                    "One create under a fault.",
                    files=files,
                    progress=progress,
                )
            elif row.endpoint in ("get", "token"):
                result = await client.get_ticket(handle.ticket_id)
            else:
                drafts = [
                    skala.TicketDraft(
                        sb.customer_id,
                        f"bulk input {i}",
                        "Three inputs, the first under a fault.",
                        files=tuple(files) if i == 0 else (),
                        reference=f"input-{i}",
                    )
                    for i in range(3)
                ]
                result = await client.create_many(drafts, concurrency=1)
        except SkalaError as exc:
            error = exc
        elapsed = loop.time() - started
        if row.fault == "slow":  # the sandbox finishes (and records) the slow request later
            await asyncio.sleep(SLOW + 0.2 - elapsed)
        if row.fault in ("shrunk", "progress_raises"):  # it notices the cut-off body later
            for _ in range(500):
                if _counts(sb) == row.requests:
                    break
                await asyncio.sleep(0.01)

        # (a) what the user sees
        if row.endpoint == "bulk":
            assert error is None, error
            report: skala.BulkReport = result
            counts = {k: v for k, v in report.counts.items() if v}
            assert counts == row.counts
            first = report.results[0]
            if row.outcome is OK:
                assert first.outcome.value == "created"
            else:
                assert type(first.error) is row.outcome, first.error
        elif row.outcome is OK:
            assert error is None, f"{type(error).__name__}: {error}"
            wanted = skala.TicketHandle if row.endpoint == "create" else skala.Ticket
            assert isinstance(result, wanted)
        else:
            assert type(error) is row.outcome, f"{type(error).__name__}: {error}"
            if row.cause is not None:
                assert isinstance(error, CreateOutcomeUnknownError)
                assert type(error.cause) is row.cause, error.cause
        if row.note == NO_SLEEP:
            assert elapsed < 0.4, elapsed
            assert isinstance(error, RateLimitedError)
            assert error.retry_after == 3600

        # (b) the requests sent, as the sandbox received them. The client counts its own
        # attempts: the same for POSTs (create, token), which nothing sends twice behind
        # its back; aiohttp itself re-sends a GET once when a reused connection drops.
        assert _counts(sb) == row.requests
        attempts = _sent_since(client, sent_before)
        for endpoint, n in row.requests.items():
            assert attempts.get(endpoint, 0) == n or (
                endpoint == "get" and attempts.get(endpoint, 0) == n - 1
            ), (endpoint, attempts)

        # (c) duplicates: never two tickets for one input; success means exactly its ticket
        new = {tid: t for tid, t in sb.tickets.items() if tid not in tickets_before}
        if row.tickets is not None:
            assert len(new) == row.tickets
            per_input = collections.Counter(t.summary for t in new.values())
            assert all(n == 1 for n in per_input.values()), per_input
        if row.endpoint == "create" and row.outcome is OK:
            assert list(new) == [str(result.ticket_id)]
        if row.endpoint == "bulk":
            for r in report.created:
                assert str(r.ticket_id) in new
        if row.endpoint in ("get", "token"):
            assert new == {}


def _truncating(path: Path) -> Callable[[int, int], None]:
    def progress(sent: int, total: int) -> None:
        path.write_bytes(b"")

    return progress


def _raising(sent: int, total: int) -> None:
    raise RuntimeError("the progress bar broke")


# ================================================================================= webhooks


@attrs.frozen
class WebhookRow:
    fault: str
    label: str
    #: HTTP status of each POST, in order.
    statuses: tuple[int, ...]
    #: Calls of the callback (a failing call counts).
    callbacks: int
    #: Events the callback received without raising.
    delivered: int


WEBHOOK_ROWS = [
    WebhookRow("valid", "a valid, signed event", (200,), 1, 1),
    WebhookRow("wrong_signature", "wrong signature", (401,), 0, 0),
    WebhookRow("no_signature", "no signature header", (401,), 0, 0),
    WebhookRow("not_json", "signed body that is not JSON", (400,), 0, 0),
    WebhookRow("bad_field", "signed event, `ticketId` not a UUID", (400,), 0, 0),
    WebhookRow("stale", "signed event 1 h old (`tolerance=300`)", (400,), 0, 0),
    WebhookRow("other_family", "signed `ACCOUNT.CLOSED` event", (200,), 0, 0),
    WebhookRow(
        "too_large_length", "body over 64 KiB by `Content-Length`, never sent", (413,), 0, 0
    ),
    WebhookRow("too_large_chunked", "chunked body passing 64 KiB, then stalling", (413,), 0, 0),
    WebhookRow("callback_error", "callback raises, Ripio delivers again", (500, 200), 2, 1),
    WebhookRow("duplicate", "same event delivered twice", (200, 200), 1, 1),
    WebhookRow("duplicate_concurrent", "same event delivered 3 times at once", (200,) * 3, 1, 1),
]


def _event(ticket_id: str | None = None, **changes: Any) -> bytes:
    event: dict[str, Any] = {
        "eventType": "SUPPORT_TICKET.CREATED",
        "issueDatetime": datetime.datetime.now(datetime.timezone.utc).isoformat()[:23] + "Z",
        "supportTicket": {
            "ticketId": ticket_id or str(uuid.uuid4()),
            "status": "CREATED",
            "issueKey": "SUP-1234",
        },
    }
    event.update(changes)
    return json.dumps(event, separators=(",", ":")).encode()


def _signed(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Http-X-Wh-Signature-256": sign_payload(body, WEBHOOK_SECRET),
    }


@contextlib.asynccontextmanager
async def _serve(receiver: WebhookReceiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def _raw_post(url: str, head: bytes, body_part: bytes) -> int:
    """Send ``head`` and part of a body, never finishing it; the status of the answer."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body_part)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 2.0)
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.parametrize("row", WEBHOOK_ROWS, ids=lambda r: r.fault)
async def test_webhook_cell(row: WebhookRow) -> None:
    calls: list[skala.SupportTicketEvent] = []
    delivered: list[skala.SupportTicketEvent] = []
    fail_once = [row.fault == "callback_error"]

    async def on_event(event: skala.SupportTicketEvent) -> None:
        calls.append(event)
        await asyncio.sleep(0.05)  # copies arriving meanwhile must wait, not deliver again
        if fail_once[0]:
            fail_once[0] = False
            raise RuntimeError("the partner's database is down")
        delivered.append(event)

    receiver = WebhookReceiver(WEBHOOK_SECRET, on_event, tolerance=300)
    event = _event()
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    async with _serve(receiver) as url, aiohttp.ClientSession() as http:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            async with http.post(url, data=body, headers=headers) as resp:
                return resp.status

        started = loop.time()
        if row.fault in ("valid", "callback_error", "duplicate"):
            for _ in row.statuses:
                statuses.append(await post(event, _signed(event)))
        elif row.fault == "duplicate_concurrent":
            statuses += await asyncio.gather(*(post(event, _signed(event)) for _ in range(3)))
        elif row.fault == "wrong_signature":
            headers = _signed(event) | {"Http-X-Wh-Signature-256": "sha256=" + "0" * 64}
            statuses.append(await post(event, headers))
        elif row.fault == "no_signature":
            statuses.append(await post(event, {"Content-Type": "application/json"}))
        elif row.fault == "not_json":
            body = b'{"eventType": "SUPPORT_TICKET.CREATED", '
            statuses.append(await post(body, _signed(body)))
        elif row.fault == "bad_field":
            body = _event("not-a-uuid")
            statuses.append(await post(body, _signed(body)))
        elif row.fault == "stale":
            body = _event(issueDatetime="2020-01-01T00:00:00Z")
            statuses.append(await post(body, _signed(body)))
        elif row.fault == "other_family":
            body = json.dumps(
                {"eventType": "ACCOUNT.CLOSED", "issueDatetime": "2026-06-26T14:30:00Z"}
            ).encode()
            statuses.append(await post(body, _signed(body)))
        elif row.fault == "too_large_length":
            head = (
                b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\n\r\n"
            )
            statuses.append(await _raw_post(url, head, b"{" + b" " * 4096))
        elif row.fault == "too_large_chunked":
            head = (
                b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b" " * 8192
            body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(9))  # 72 KiB
            statuses.append(await _raw_post(url, head, body))
        else:  # pragma: no cover - every row is handled above
            raise AssertionError(row.fault)
        elapsed = loop.time() - started
    assert tuple(statuses) == row.statuses
    assert len(calls) == row.callbacks
    assert len(delivered) == row.delivered
    if row.fault.startswith("too_large"):
        assert elapsed < 2.0  # answered without waiting for a body that never ends
        assert receiver.counts["too_large"] == 1


# ================================================================================= waits


@attrs.frozen
class WaitRow:
    """A wait for one ticket (done 50 ms after its creation) under a fault.

    The client polls on ``PollPolicy(jitter=0)`` (first GET exactly 1 s after the 202); with a
    webhook handler mounted, its slow fallback polls only after an hour, so nothing but a
    webhook, or a refused delivery, can end such a wait early.
    """

    fault: str
    label: str
    call: str  # "wait" (wait_until_created) or "watch"
    timeout: float | None
    #: The statuses returned (wait) or yielded (watch), or the exception class raised.
    outcome: Any
    #: How the outcome was learnt, as the documentation says it.
    how: str
    gets: int
    #: With a handler mounted: whether the client still trusts webhooks afterwards.
    trusted: bool | None = None


LAST_POLL = "by one last poll before the deadline"
NORMAL_PACE = "by polling at the normal pace from the refused delivery on"

WAIT_ROWS = [
    WaitRow(
        "short_timeout",
        "`timeout=0.7`, shorter than the first scheduled poll (1 s)",
        "wait",
        0.7,
        ("CREATED",),
        LAST_POLL,
        1,
    ),
    WaitRow(
        "short_timeout_watch",
        "`watch(timeout=0.7)`, shorter than the first scheduled poll (1 s)",
        "watch",
        0.7,
        ("PENDING", "CREATED"),
        LAST_POLL,
        1,
    ),
    WaitRow(
        "get_500",
        "every GET answered 500, `timeout=2` (ticket never seen done)",
        "wait",
        2.0,
        WaitTimeoutError,
        "after the scheduled poll and one last poll before the deadline, 4 attempts each",
        8,
    ),
    *(
        WaitRow(fault, label, "wait", None, ("CREATED",), NORMAL_PACE, 1, False)
        for fault, label in (
            ("wrong_secret", "webhooks signed with another secret (401), no `timeout`"),
            ("no_signature", "a delivery without a signature (401), no `timeout`"),
            ("stale", "a signed delivery 1 h old, `tolerance=300` (400), no `timeout`"),
            ("not_json", "a signed delivery that is not JSON (400), no `timeout`"),
            ("too_large", "a delivery over 64 KiB by `Content-Length` (413), no `timeout`"),
        )
    ),
    WaitRow(
        "other_family",
        "a signed `ACCOUNT.CLOSED` (200, ignored), then the ticket's webhook",
        "wait",
        None,
        ("CREATED",),
        "by its webhook; webhooks still trusted",
        0,
        True,
    ),
]
#: Faults whose request the test itself sends to the handler.
_HOSTILE = {"no_signature", "stale", "not_json", "too_large", "other_family"}
#: The slow fallback of the wait cells: an hour, longer than any test.
HOUR = skala.PollPolicy(first_delay=3600, min_interval=3600, max_interval=3600)
#: A bound on a hang, never reached when the wait behaves.
HANG = 30.0


async def _hostile_delivery(url: str, fault: str) -> int:
    if fault == "too_large":
        head = (
            b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        return await _raw_post(url, head, b"{")
    body = _event()
    headers = _signed(body)
    if fault == "no_signature":
        del headers["Http-X-Wh-Signature-256"]
    elif fault == "stale":
        body = _event(issueDatetime="2020-01-01T00:00:00Z")
        headers = _signed(body)
    elif fault == "not_json":
        body = b'{"eventType": "SUPPORT_TICKET.CREATED", '
        headers = _signed(body)
    elif fault == "other_family":
        body = json.dumps(
            {"eventType": "ACCOUNT.CLOSED", "issueDatetime": "2026-06-26T14:30:00Z"}
        ).encode()
        headers = _signed(body)
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


@pytest.mark.parametrize("row", WAIT_ROWS, ids=lambda r: r.fault)
async def test_wait_cell(row: WaitRow) -> None:
    handler = row.trusted is not None
    async with (
        SkalaSandbox(processing_delay=0.05, webhook_secret=WEBHOOK_SECRET) as sb,
        sandbox_client(
            sb, retry=RETRY, timeouts=TIMEOUTS, poll=skala.PollPolicy(jitter=0.0), webhook_poll=HOUR
        ) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        url = ""
        if handler:
            receiver = WebhookReceiver(WEBHOOK_SECRET, client=client, tolerance=300)
            url = await stack.enter_async_context(_serve(receiver))
            if row.fault not in _HOSTILE or row.fault == "other_family":
                sb.webhook_url = url
            sb.webhook_wrong_signature = row.fault == "wrong_secret"
        if row.fault == "get_500":
            sb.inject("get", Fault.http(500), times=100)
        handle = await client.create_ticket(sb.customer_id, "wait matrix", "One wait.")
        sb.clear_requests()

        async def call() -> tuple[str, ...]:
            if row.call == "watch":
                return tuple([t.status.value async for t in handle.watch(timeout=row.timeout)])
            return ((await handle.wait_until_created(timeout=row.timeout)).status.value,)

        task = asyncio.ensure_future(call())
        if row.fault in _HOSTILE:
            await _hostile_delivery(url, row.fault)
        error: BaseException | None = None
        result: Any = None
        try:
            result = await asyncio.wait_for(task, HANG)
        except SkalaError as exc:
            error = exc
        await sb.wait_for_webhooks(timeout=HANG)

        if isinstance(row.outcome, tuple):
            assert error is None, f"{type(error).__name__}: {error}"
            assert result == row.outcome
        else:
            assert type(error) is row.outcome, error
            assert isinstance(error, WaitTimeoutError)
            assert error.ticket is not None
            assert error.ticket.status is skala.TicketStatus.PENDING
        assert _counts(sb) == ({"get": row.gets} if row.gets else {})
        assert handle.polls == (row.gets if row.fault != "get_500" else 0)
        if handler:
            assert client._wait_policy() is (HOUR if row.trusted else client.poll_policy)


# ================================================================================= the table

_ENDPOINT_NAMES = {
    "create": "create",
    "get": "get",
    "token": "token (then a get)",
    "bulk": "bulk (3 inputs)",
}


def _requests_text(requests: dict[str, int]) -> str:
    order = ["create", "get", "token"]
    return ", ".join(f"{requests[k]} {k}" for k in order if requests.get(k))


def _sees(row: Row) -> str:
    if row.endpoint == "bulk":
        counts = row.counts or {}
        parts = [f"{k} {counts[k]}" for k in ("created", "uncertain", "failed") if counts.get(k)]
        text = ", ".join(parts)
        if row.outcome is not OK:
            text += f" (first input: `{row.outcome.__name__}`)"
        return text
    if row.outcome is OK:
        text = "`TicketHandle` (PENDING)" if row.endpoint == "create" else "`Ticket`"
        retries = (row.requests.get(row.endpoint, 1) - 1) if row.fault != "expired" else 0
        if row.fault == "expired":
            text += ", after one token refresh"
        elif retries:
            text += f", after {retries} retr{'y' if retries == 1 else 'ies'}"
        return text
    text = f"`{row.outcome.__name__}`"
    if row.cause is not None:
        text += f" (cause: `{row.cause.__name__}`)"
    if row.note:
        text += f", {row.note}"
    return text


def _duplicate(row: Row) -> str:
    if row.endpoint in ("get", "token"):
        return "no (reads only)"
    ambiguous = row.outcome is COU
    if row.endpoint == "bulk":
        ambiguous = bool((row.counts or {}).get("uncertain"))
        created = (row.counts or {}).get("created", 0)
        exists = (row.tickets or 0) > created
    else:
        exists = bool(row.tickets) and row.outcome is not OK
    if not ambiguous:
        return "no"
    if exists:
        return "no; the ticket **exists**: re-creating it would duplicate it"
    return "no; the ticket may exist: check before re-creating"


def render_table() -> str:
    lines = [
        "| endpoint | fault | what the user sees | requests sent | duplicate possible? |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        lines.append(
            f"| {_ENDPOINT_NAMES[row.endpoint]} | {FAULTS[row.fault].label} | {_sees(row)} "
            f"| {_requests_text(row.requests)} | {_duplicate(row)} |"
        )
    for w in WEBHOOK_ROWS:
        statuses = ", ".join(str(s) for s in w.statuses)
        if w.callbacks == 0:
            callback = "callback not called"
        elif w.callbacks == w.delivered:
            callback = "callback ran once"
        else:
            callback = f"callback ran {w.callbacks} times, succeeded once"
        duplicate = "no: delivered once" if len(w.statuses) > 1 else "no"
        lines.append(
            f"| webhook handler | {w.label} | HTTP {statuses}; {callback} "
            f"| {len(w.statuses)} POST | {duplicate} |"
        )
    for r in WAIT_ROWS:
        if r.call == "watch":
            sees = "yields " + ", then ".join(r.outcome)
        elif isinstance(r.outcome, tuple):
            sees = f"`Ticket` ({r.outcome[0]})"
        else:
            sees = f"`{r.outcome.__name__}` (last seen: PENDING)"
        requests = f"{r.gets} get" if r.gets else "none"
        lines.append(f"| {r.call} | {r.label} | {sees}, {r.how} | {requests} | no (reads only) |")
    return "\n".join(lines)


def page_table() -> str | None:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.DOTALL)
    return match.group(1) if match else None


def test_documented_table_is_the_tested_matrix() -> None:
    assert page_table() == render_table(), (
        "docs/reliability.md's fault matrix differs from the tested rows: paste the output of "
        "'.venv/bin/python -m tests.promises.test_fault_matrix' between the fault-matrix markers"
    )


def test_every_endpoint_meets_every_fault() -> None:
    """The matrix is complete: each endpoint has a cell for each fault that applies."""
    cells: dict[str, set[str]] = collections.defaultdict(set)
    for row in ROWS:
        cells[row.endpoint].add(row.fault)
    http_faults = set(FAULTS) - {"reset_upload", "expired", "401", "500_always"} - CREATE_ONLY
    assert cells["create"] >= http_faults | {"reset_upload", "expired"} | CREATE_ONLY
    assert cells["get"] >= http_faults | {"expired", "500_always", "303_stored"}
    assert cells["token"] >= http_faults | {"401", "500_always"}
    assert cells["bulk"] >= http_faults | {"reset_upload", "expired"} | CREATE_ONLY - {
        "progress_raises"  # bulk has no progress callback
    }
    assert len({r.id for r in ROWS}) == len(ROWS)


def _main(write: Callable[[str], object] = sys.stdout.write) -> None:
    write(render_table() + "\n")


if __name__ == "__main__":
    _main()
