"""Tests of the sandbox itself, driven by a plain aiohttp client over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from skala_async.testing import (
    AUTHENTICATION_FAILED_CODE,
    CUSTOMER_DEACTIVATED_CODE,
    CUSTOMER_NOT_FOUND_CODE,
    CUSTOMER_WITHOUT_EMAIL_CODE,
    NOT_AUTHENTICATED_CODE,
    TICKET_NOT_FOUND_CODE,
    UNSUPPORTED_MEDIA_TYPE_CODE,
    VALIDATION_ERROR_CODE,
    Fault,
    RecordedFile,
    SkalaSandbox,
    WebhookDelivery,
    run_sandbox,
)
from skala_async.testing import _sandbox as sandbox_module

TOKEN = "/oauth2/token/"
CREATE = "/api/v1/supportTickets/"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@pytest.fixture
async def sb() -> AsyncIterator[SkalaSandbox]:
    async with SkalaSandbox(processing_delay=0.01) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    # aiohttp 3.14 deprecates BasicAuth; build the header by hand.
    raw = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def get_token(http: aiohttp.ClientSession, sb: SkalaSandbox) -> str:
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(sb.client_id, sb.client_secret),
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    return str(body["accessToken"])


def ticket_form(
    customer_id: str,
    *,
    summary: str | None = "Card top-up not credited",
    description: str | None = "I topped up 100 and nothing arrived.",
    files: Sequence[tuple[str | None, bytes, str]] = (),
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("customerId", customer_id)
    if summary is not None:
        form.add_field("summary", summary)
    if description is not None:
        form.add_field("description", description)
    for filename, content, content_type in files:
        # BytesIO, not bytes: aiohttp 3.14 warns on large bytes and on bytes without filename
        form.add_field("files", io.BytesIO(content), filename=filename, content_type=content_type)
    return form


async def create(
    http: aiohttp.ClientSession,
    sb: SkalaSandbox,
    token: str,
    form: aiohttp.FormData | None = None,
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    data = form if form is not None else ticket_form(sb.customer_id)
    async with http.post(
        sb.url + CREATE, data=data, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json(), resp.headers


async def get_ticket(
    http: aiohttp.ClientSession, sb: SkalaSandbox, token: str, ticket_id: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{sb.url}{CREATE}{ticket_id}/", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json()


# --- lifecycle and basics --------------------------------------------------------------------


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


# --- token endpoint --------------------------------------------------------------------------


async def test_token_success(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(sb.client_id, sb.client_secret),
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body) == {"accessToken", "expiresIn", "tokenType", "scope"}
    assert len(body["accessToken"]) == 30
    assert body["accessToken"].isalnum()
    assert body["expiresIn"] == 36000
    assert body["tokenType"] == "Bearer"
    assert body["scope"] == "read write"
    (record,) = sb.requests_to("token")
    assert record.status == 200
    assert record.authorization_scheme == "Basic"
    assert record.header("authorization") is None
    assert record.fields == {"grant_type": "client_credentials"}
    assert record.header("content-type") == "application/x-www-form-urlencoded"


async def test_token_failures(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(sb.client_id, "wrong"),
    ) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["code"] == AUTHENTICATION_FAILED_CODE
    assert body["type"] == "AuthenticationFailed"
    assert body["status"] == 401
    assert isinstance(body["detail"]["message"], str)

    async with http.post(sb.url + TOKEN, data={"grant_type": "client_credentials"}) as resp:
        assert resp.status == 401

    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "password"},
        headers=basic(sb.client_id, sb.client_secret),
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["code"] == VALIDATION_ERROR_CODE
    assert body["type"] == "ValidationError"
    assert sb.count("token") == 3
    assert sb.count("token", status=401) == 2


async def test_token_ttl_and_expire_tokens(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    sb.token_ttl = 120
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(sb.client_id, sb.client_secret),
    ) as resp:
        token = (await resp.json())["accessToken"]
        assert (await resp.json())["expiresIn"] == 120
    status, _ = await get_ticket(http, sb, token, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert status == 404
    sb.expire_tokens()
    status, body = await get_ticket(http, sb, token, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert status == 401
    assert body["code"] == NOT_AUTHENTICATED_CODE
    fresh = await get_token(http, sb)
    status, _ = await get_ticket(http, sb, fresh, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert status == 404


async def test_fixed_credentials() -> None:
    async with (
        SkalaSandbox(client_id="my-id", client_secret="my-secret") as sandbox,
        aiohttp.ClientSession() as http,
    ):
        assert (sandbox.client_id, sandbox.client_secret) == ("my-id", "my-secret")
        assert await get_token(http, sandbox)


# --- API auth and the 20061 switch -----------------------------------------------------------


async def test_bearer_required(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    url = f"{sb.url}{CREATE}3c90c3cc-0d44-4b50-8888-8dd25736052a/"
    async with http.get(url) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body == {
        "code": NOT_AUTHENTICATED_CODE,
        "type": "NotAuthenticated",
        "detail": {"message": body["detail"]["message"], "code": "not_authenticated"},
        "status": 401,
    }
    async with http.get(url, headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    async with http.get(url, headers=basic(sb.client_id, sb.client_secret)) as resp:
        assert resp.status == 401
    async with http.post(sb.url + CREATE, data=ticket_form(sb.customer_id)) as resp:
        assert resp.status == 401
    assert not sb.tickets
    schemes = [r.authorization_scheme for r in sb.requests]
    assert schemes == [None, "Bearer", "Basic", None]


async def test_support_tickets_not_enabled(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    sb.support_tickets_enabled = False
    # checked before validation: an invalid form still gets 20061
    status, body, _ = await create(http, sb, token, ticket_form("not-a-uuid", summary=None))
    assert status == 403
    assert body == {
        "code": 20061,
        "type": "SupportTicketsNotEnabledException",
        "detail": {"message": "Support tickets are not enabled for this partner."},
        "status": 403,
    }
    status, body = await get_ticket(http, sb, token, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert status == 403
    assert body["code"] == 20061
    # checked after authentication
    status, body = await get_ticket(http, sb, "bad-token", "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    assert status == 401
    sb.support_tickets_enabled = True
    status, _, _ = await create(http, sb, token)
    assert status == 202


# --- create: validation ----------------------------------------------------------------------


async def test_validation_errors_collected(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    # Built by hand: FormData always gives a file part a filename.
    with aiohttp.MultipartWriter("form-data") as body:
        fields = [("customerId", "not-a-uuid"), ("summary", "x" * 241 + "\nsecond line")]
        for name, value in fields:
            body.append(value).set_content_disposition("form-data", name=name)
        parts: list[tuple[str | None, bytes]] = [
            ("virus.exe", b"MZ"),
            (None, b"no filename"),
            ("ok.PDF", b"%PDF-1.7"),
        ]
        for filename, content in parts:
            part = body.append(content, {"Content-Type": "application/octet-stream"})
            if filename is None:
                part.set_content_disposition("form-data", name="files")
            else:
                part.set_content_disposition("form-data", name="files", filename=filename)
    async with http.post(
        sb.url + CREATE, data=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 400
        error = await resp.json()
    assert error["code"] == VALIDATION_ERROR_CODE
    assert error["type"] == "ValidationError"
    assert error["status"] == 400
    errors = error["detail"]["errors"]
    assert set(errors) == {"customerId", "summary", "description", "files"}
    assert len(errors["summary"]) == 2  # too long and not one line
    assert len(errors["files"]) == 2  # bad extension and missing filename
    assert any("exe" in message for message in errors["files"])
    assert not sb.tickets
    (record,) = sb.requests_to("create")
    assert record.status == 400
    assert [f.filename for f in record.files] == ["virus.exe", None, "ok.PDF"]
    assert record.files[1].size == len(b"no filename")


async def test_blank_fields_and_limits(
    sb: SkalaSandbox, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "MAX_FILE_BYTES", 10)
    monkeypatch.setattr(sandbox_module, "MAX_TOTAL_BYTES", 25)
    token = await get_token(http, sb)
    files = [(f"f{i}.png", b"x" * (11 if i == 0 else 3), "image/png") for i in range(6)]
    form = ticket_form(sb.customer_id, summary="  ", description="d" * 5001, files=files)
    status, body, _ = await create(http, sb, token, form)
    assert status == 400
    errors = body["detail"]["errors"]
    assert set(errors) == {"summary", "description", "files"}
    text = " ".join(errors["files"])
    assert "f0.png" in text  # one file too large
    assert "no more than 5 files" in text
    assert "total" in text  # 11 + 5 * 3 = 26 > 25


async def test_exact_limits_accepted(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    files = [(f"f{i}.{ext}", b"x", "image/png") for i, ext in enumerate(["jpg", "JPEG", "webp"])]
    form = ticket_form(sb.customer_id, summary="s" * 240, description="ñ" * 5000, files=files)
    status, body, _ = await create(http, sb, token, form)
    assert status == 202, body


async def test_not_multipart(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    async with http.post(
        sb.url + CREATE,
        json={"customerId": sb.customer_id, "summary": "s", "description": "d"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 415
        body = await resp.json()
    assert body["code"] == UNSUPPORTED_MEDIA_TYPE_CODE
    assert body["status"] == 415


async def test_customers(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)
    unknown = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    status, body, _ = await create(http, sb, token, ticket_form(unknown))
    assert (status, body["code"], body["type"]) == (
        400,
        CUSTOMER_NOT_FOUND_CODE,
        "CustomerNotFoundException",
    )
    no_email = sb.add_customer(email=None)
    status, body, _ = await create(http, sb, token, ticket_form(no_email))
    assert (status, body["code"]) == (400, CUSTOMER_WITHOUT_EMAIL_CODE)
    other = sb.add_customer(email="a@example.com", customer_id=unknown.upper())
    assert other == unknown
    status, _, _ = await create(http, sb, token, ticket_form(other))
    assert status == 202
    sb.deactivate_customer(other)
    status, body, _ = await create(http, sb, token, ticket_form(other))
    assert (status, body["code"]) == (404, CUSTOMER_DEACTIVATED_CODE)
    with pytest.raises(KeyError):
        sb.deactivate_customer("3c90c3cc-0d44-4b50-8888-000000000000")


# --- create: what is recorded ----------------------------------------------------------------


async def test_create_records_files(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    sb.processing_delay = None  # stays PENDING: 10 ms can pass before the last assert
    token = await get_token(http, sb)
    pdf = b"%PDF-1.7 " + bytes(range(256)) * 100
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 3000
    name = 'résumé 名前 "q".pdf'
    form = ticket_form(
        sb.customer_id,
        files=[(name, pdf, "application/pdf"), ("screen.png", png, "image/png")],
    )
    status, body, _ = await create(http, sb, token, form)
    assert status == 202
    assert body["status"] == "PENDING"
    assert body["issueKey"] is None
    ticket_id = body["ticketId"]

    (record,) = sb.requests_to("create")
    assert record.status == 202
    assert record.ticket_id == ticket_id
    assert record.authorization_scheme == "Bearer"
    assert record.fields == {
        "customerId": sb.customer_id,
        "summary": "Card top-up not credited",
        "description": "I topped up 100 and nothing arrived.",
    }
    assert record.files == (
        RecordedFile("files", name, "application/pdf", len(pdf), hashlib.sha256(pdf).hexdigest()),
        RecordedFile("files", "screen.png", "image/png", len(png), hashlib.sha256(png).hexdigest()),
    )
    assert record.content_length is not None
    assert record.content_length > len(pdf) + len(png)
    assert record.chunked is False

    ticket = sb.tickets[ticket_id]
    assert ticket.customer_id == sb.customer_id
    assert ticket.files == record.files
    # The 202 said PENDING; the fixture's sandbox processes tickets in 10 ms, so the stored
    # ticket may be final by now on a busy machine: only its recorded content is checked.


async def test_chunked_upload_detected(sb: SkalaSandbox, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, sb)

    async def stream() -> AsyncIterator[bytes]:
        yield b"%PDF-"
        yield b"1.7"

    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("customerId", sb.customer_id)
    form.add_field("summary", "s")
    form.add_field("description", "d")
    form.add_field("files", stream(), filename="a.pdf", content_type="application/pdf")
    status, _, _ = await create(http, sb, token, form)
    assert status == 202
    (record,) = sb.requests_to("create")
    assert record.chunked is True
    assert record.content_length is None
    assert record.files[0].size == 8
    assert record.files[0].sha256 == hashlib.sha256(b"%PDF-1.7").hexdigest()


# --- retrieve and processing -----------------------------------------------------------------


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


# --- faults ----------------------------------------------------------------------------------


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


# --- webhooks --------------------------------------------------------------------------------


class receiver:
    """A tiny aiohttp.web app on port 0 that runs ``handler`` for every POST."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handler)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


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


# --- standalone ------------------------------------------------------------------------------


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
