"""The contract against live sandboxes: the hook that checks every exchange, and the
sandbox's webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

import skala_async as skala
from skala_async import _limits, _protocol
from skala_async.testing import (
    DEFAULT_SIGNATURE_HEADER,
    Fault,
    SkalaSandbox,
    _contract,
    sandbox,
)
from skala_async.testing._contract import ContractViolation
from skala_async.testing._contract import _document as contract_document
from skala_async.testing.sandbox import _handlers as sandbox_handlers

TICKET_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
JSON = {"Content-Type": "application/json; charset=utf-8"}


# --------------------------------------------------------------------------------------------
# The sandbox's hook


async def test_the_hook_checks_every_exchange_of_the_client(
    skala_sandbox: SkalaSandbox,
    skala_client: skala.SkalaClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, int]] = []
    check = _contract.check_exchange

    def spy(**kw: Any) -> list[ContractViolation]:
        seen.append((kw["method"], kw["status"]))
        return check(**kw)

    monkeypatch.setattr(_contract, "check_exchange", spy)
    handle = await skala_client.create_ticket(
        skala_sandbox.customer_id,
        "Summary",
        "Description",
        files=[skala.Attachment.from_bytes(b"%PDF-1.4", filename="r.pdf")],
    )
    await handle.wait_until_created(timeout=10)
    await skala_client.get_ticket(handle.ticket_id)
    assert ("POST", 200) in seen  # the token
    assert ("POST", 202) in seen
    assert ("GET", 200) in seen
    assert skala_sandbox.contract_violations == []


async def test_the_hook_catches_a_sandbox_that_accepts_bad_input(
    skala_sandbox: SkalaSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No public seam: a sandbox that accepts bad input is one with its validation removed.
    monkeypatch.setattr(sandbox_handlers, "validate_fields", lambda fields, problems: None)
    async with aiohttp.ClientSession() as http:
        token = await _token(http, skala_sandbox)
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("customerId", skala_sandbox.customer_id)
        form.add_field("summary", "two\nlines")
        form.add_field("description", "d")
        async with http.post(
            skala_sandbox.url + "/api/v1/supportTickets/",
            data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 202
    [violation] = skala_sandbox.contract_violations
    assert violation.kind == "request"
    assert "/summary: 'two\\nlines' must not match" in str(violation)
    assert _contract.take_violations() == [violation]


async def test_the_hook_catches_a_bad_answer(
    skala_sandbox: SkalaSandbox, skala_client: skala.SkalaClient
) -> None:
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D")
    await skala_sandbox.wait_until_processed(timeout=10)
    tid = str(handle.ticket_id)
    skala_sandbox.tickets[tid] = attrs.evolve(skala_sandbox.tickets[tid], issue_key=None)
    ticket = await skala_client.get_ticket(tid)
    assert ticket.status is skala.TicketStatus.CREATED
    [violation] = _contract.take_violations()
    assert violation.kind == "response"
    assert violation.status == 200
    assert "/issueKey: None is not of type 'string'" in str(violation)
    assert skala_sandbox.contract_violations == [violation]


async def test_a_status_the_sandbox_was_told_to_emit_is_no_violation(
    skala_sandbox: SkalaSandbox, skala_client: skala.SkalaClient
) -> None:
    skala_sandbox.outcome = "ARCHIVED"
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D")
    await skala_sandbox.wait_until_processed(timeout=10)
    ticket = await skala_client.get_ticket(handle.ticket_id)
    assert ticket.status == "ARCHIVED"
    assert skala_sandbox.contract_violations == []


async def test_injected_faults_and_their_exemptions(
    skala_sandbox: SkalaSandbox, skala_client: skala.SkalaClient
) -> None:
    custom = (
        '{"code": 40001, "type": "NotAuthenticated", "detail": {"message": "no"}, "status": 403}'
    )
    for fault in (
        Fault.http(502),  # a proxy's HTML page: outside the contract
        Fault.http(503, retry_after=0.01),  # the API's error shape: checked, conforms
        Fault.http(429, retry_after="0"),
        Fault.http(418),  # not a status of the operation: exempt when injected
        Fault.http(403, body=custom, content_type="application/json"),
        Fault.http(400, body="not json", content_type="application/json"),
    ):
        skala_sandbox.inject("get", fault)
    async with aiohttp.ClientSession() as http:
        token = await _token(http, skala_sandbox)
        for _ in range(6):
            async with http.get(
                f"{skala_sandbox.url}/api/v1/supportTickets/{uuid.uuid4()}/",
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                await response.read()
    statuses = [r.status for r in skala_sandbox.requests_to("get")]
    assert statuses == [502, 503, 429, 418, 403, 400]
    assert skala_sandbox.contract_violations == []


async def test_what_the_fuzzing_found_in_the_sandbox(skala_sandbox: SkalaSandbox) -> None:
    """Each was a mismatch between the sandbox and the contract, found by schemathesis."""
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {await _token(http, skala_sandbox)}"}

        async def create(*extra: tuple[str, bytes], summary: str = "S") -> int:
            fields = [
                ("customerId", skala_sandbox.customer_id.encode()),
                ("summary", summary.encode()),
                ("description", b"D"),
                *extra,
            ]
            with aiohttp.MultipartWriter("form-data") as form:
                for name, value in fields:
                    part = form.append(value, {"Content-Type": "text/plain; charset=utf-8"})
                    part.set_content_disposition("form-data", name=name)
            url = skala_sandbox.url + _limits.CREATE_PATH
            async with http.post(url, data=form, headers=auth) as response:
                return response.status

        # 1. Every line break the client refuses is refused, not only \n and \r.
        for c in _protocol._LINE_BREAKS:
            assert await create(summary=f"a{c}b") == 400, repr(c)
        # 2. A field the form does not declare is ignored, also twice or undecodable.
        assert await create(("extra", b"1"), ("extra", b"2"), ("other", b"\xff")) == 202
        # 3. A path with an encoded line break gets the API's error shape, not aiohttp's.
        url = f"{skala_sandbox.url}/api/v1/supportTickets/a%0Ab/"
        async with http.get(url, headers=auth) as response:
            assert response.status == 404
            assert (await response.json())["code"] == sandbox.TICKET_NOT_FOUND_CODE
    assert skala_sandbox.contract_violations == []


def test_a_check_that_cannot_run_is_a_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(pointer: str) -> None:
        raise ModuleNotFoundError("No module named 'openapi_schema_validator'")

    monkeypatch.setattr(contract_document, "_validator", missing)
    [violation] = _contract.check_exchange(
        method="GET",
        path=f"/api/v1/supportTickets/{TICKET_ID}/",
        request_headers={},
        fields={},
        files=(),
        status=404,
        response_headers=JSON,
        body=b"{}",
    )
    assert violation.kind == "check"
    assert "openapi_schema_validator" in str(violation)
    assert "pip install 'skala-async[test]'" in str(violation)
    assert _contract.take_violations() == [violation]


async def test_checks_off_cost_nothing(
    skala_sandbox: SkalaSandbox,
    skala_client: skala.SkalaClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(**kw: Any) -> list[ContractViolation]:
        raise AssertionError("checked while off")

    monkeypatch.setattr(_contract, "check_exchange", fail)
    skala_sandbox.contract_checks = False
    await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D")


def test_the_environment_turns_checks_on() -> None:
    code = "from skala_async.testing import SkalaSandbox; print(SkalaSandbox.contract_checks)"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = {"SKALA_SANDBOX_CONTRACT": value, "PATH": ""}
        out = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


async def _token(http: aiohttp.ClientSession, sb: SkalaSandbox) -> str:
    async with http.post(
        sb.url + "/oauth2/token/",
        data={"grant_type": "client_credentials"},
        headers={
            "Authorization": _protocol.token_request(sb.client_id, sb.client_secret).headers[
                "Authorization"
            ]
        },
    ) as response:
        token: str = (await response.json())["accessToken"]
        return token


# --------------------------------------------------------------------------------------------
# Webhooks


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_the_sandboxs_webhooks_conform(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    outcomes = iter(["CREATED", "FAILED", "ESCALATED"])
    async with SkalaSandbox(
        webhook_url=url,
        webhook_secret="s3cret",
        outcome=lambda ticket_id, fields: next(outcomes),
        processing_delay=0.01,
    ) as sb:
        async with skala.SkalaClient(
            client_id=sb.client_id, client_secret=sb.client_secret, base_url=sb.url
        ) as client:
            for _ in range(3):
                await client.create_ticket(sb.customer_id, "Ñandú ☃", "D")
        await sb.wait_until_processed(timeout=10)
        await sb.wait_for_webhooks(timeout=10)
    assert len(received) == 3
    events = {}
    for headers, body in received:
        event = json.loads(body)
        events[event["supportTicket"]["status"]] = event
        tolerated = {"ESCALATED"}
        _contract.check_webhook(headers, body, secret="s3cret", tolerated_statuses=tolerated)
    assert set(events) == {"CREATED", "FAILED", "ESCALATED"}
    headers, body = received[0]
    with pytest.raises(ContractViolation, match="not the HMAC-SHA256"):
        _contract.check_webhook(headers, body, secret="other")
    unsigned = {k: v for k, v in headers.items() if k != DEFAULT_SIGNATURE_HEADER}
    with pytest.raises(ContractViolation, match="header Http-X-Wh-Signature-256 is required"):
        _contract.check_webhook(unsigned, body)
    spaced = json.dumps(json.loads(body)).encode()
    with pytest.raises(ContractViolation, match="not compact, ASCII-escaped JSON"):
        _contract.check_webhook(headers, spaced)


def test_webhook_payload_rules() -> None:
    event = {
        "eventType": "SUPPORT_TICKET.CREATED",
        "issueDatetime": "2026-06-26T14:30:00.000Z",
        "supportTicket": {"ticketId": TICKET_ID, "status": "CREATED", "issueKey": "SUP-1"},
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    digest = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "http-x-wh-signature-256": f"sha256={digest}"}
    _contract.check_webhook(headers, body, secret="k")
    for change, expected in (
        ({"eventType": "SUPPORT_TICKET.FAILED"}, "'FAILED' was expected"),
        ({"issueDatetime": "2026-06-26 14:30:00"}, "/issueDatetime"),
        ({"supportTicket": {"ticketId": TICKET_ID, "status": "CREATED"}}, "'issueKey' is a"),
    ):
        changed = json.dumps({**event, **change}, separators=(",", ":")).encode()
        with pytest.raises(ContractViolation, match=re.escape(expected)):
            _contract.check_webhook({**headers, "http-x-wh-signature-256": "sha256=0"}, changed)
    with pytest.raises(ContractViolation) as info:
        _contract.check_webhook({**headers, "content-type": "text/plain"}, b"<html>")
    assert info.value.problems == (
        "Content-Type 'text/plain', expected application/json",
        "body is not JSON",
    )
