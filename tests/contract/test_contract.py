"""The API contract (``skala_async/testing/openapi.json``) and what is checked against it.

- The document is valid OpenAPI 3.1 and states the same limits, paths and codes as the code.
- ``_contract`` finds what breaks it (requests, answers, webhooks).
- The sandbox's hook (on for the whole suite, see ``conftest.py``) records violations and
  leaves deliberate faults alone.
- schemathesis fuzzes a live sandbox from the document: ``test_contract_fuzz.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import skala_async as skala
from skala_async import _limits, _protocol
from skala_async.testing import (
    DEFAULT_SIGNATURE_HEADER,
    Fault,
    RecordedFile,
    SkalaSandbox,
    _contract,
    sandbox,
)
from skala_async.testing._contract import ContractViolation
from skala_async.testing._contract import _document as contract_document
from skala_async.testing.sandbox import _handlers as sandbox_handlers

DOC = _contract.document()
CREATE = DOC["paths"]["/api/v1/supportTickets/"]["post"]
FORM = DOC["components"]["schemas"]["CreateSupportTicketForm"]
MULTIPART = CREATE["requestBody"]["content"]["multipart/form-data"]
TICKET_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
CUSTOMER_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"  # the documentation's sample id
JSON = {"Content-Type": "application/json; charset=utf-8"}
MULTIPART_HEADERS = {"Authorization": "Bearer abc", "Content-Type": "multipart/form-data; b=x"}


def _file(name: str | None, size: int = 10, field: str = "files") -> RecordedFile:
    return RecordedFile(field, name, "application/pdf", size, "0" * 64)


def _body(data: Any) -> bytes:
    return json.dumps(data).encode()


# --------------------------------------------------------------------------------------------
# The document


def test_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC, cls=OpenAPIV31SpecValidator)


def test_document_ships_in_the_package() -> None:
    text = resources.files("skala_async.testing").joinpath("openapi.json").read_text("utf-8")
    assert json.loads(text) == DOC
    copy = _contract.document()
    copy["paths"].clear()
    assert _contract.document() == DOC  # callers get a copy


def test_document_states_the_clients_limits() -> None:
    props = FORM["properties"]
    assert props["summary"]["maxLength"] == _limits.MAX_SUMMARY_CHARS
    assert props["description"]["maxLength"] == _limits.MAX_DESCRIPTION_CHARS
    assert props["files"]["maxItems"] == _limits.MAX_FILES
    limits = MULTIPART["x-skala-limits"]
    assert limits["maxFileBytes"] == _limits.MAX_FILE_BYTES
    assert limits["maxTotalBytes"] == _limits.MAX_TOTAL_BYTES
    assert limits["allowedExtensions"] == sorted(_limits.ALLOWED_EXTENSIONS)
    media_types = MULTIPART["encoding"]["files"]["contentType"].split(", ")
    assert sorted(media_types) == sorted(set(_limits.CONTENT_TYPES.values()))
    for number in (_limits.MAX_FILE_BYTES, _limits.MAX_TOTAL_BYTES):
        assert str(number) in props["files"]["description"]


def test_document_states_the_clients_paths_servers_and_names() -> None:
    assert set(DOC["paths"]) == {
        _limits.TOKEN_PATH,
        _limits.CREATE_PATH,
        _limits.TICKET_PATH.format(ticket_id="{ticketId}"),
    }
    assert [s["url"] for s in DOC["servers"]] == [skala.SANDBOX_URL, skala.PRODUCTION_URL]
    statuses = DOC["components"]["schemas"]["TicketStatus"]["enum"]
    assert statuses == [s.value for s in skala.TicketStatus]
    forbidden = DOC["components"]["responses"]["SupportTicketsNotEnabled"]
    assert str(_limits.SUPPORT_TICKETS_NOT_ENABLED_CODE) in json.dumps(forbidden)
    webhook = DOC["webhooks"]["supportTicketEvent"]["post"]
    assert webhook["parameters"][0]["name"] == DEFAULT_SIGNATURE_HEADER


def test_line_breaks_and_blanks_are_the_clients() -> None:
    """Spelled-out classes, so that Python's and ECMA-262's regular expressions agree."""
    summary = FORM["properties"]["summary"]
    breaking = re.compile(summary["not"]["pattern"])
    not_blank = re.compile(summary["pattern"])
    assert FORM["properties"]["description"]["pattern"] == summary["pattern"]
    everything = [chr(c) for c in range(0x3001)]  # every whitespace is below U+3001
    breaks = {c for c in everything if len(f"a{c}b".splitlines()) > 1}
    assert breaks == set(_protocol._LINE_BREAKS)
    for c in everything:
        assert bool(breaking.search(c)) == (c in breaks), repr(c)
        assert bool(not_blank.search(c)) == (not c.isspace()), repr(c)
    assert not_blank.search("\ufeff")  # whitespace to ECMA-262, not to str.strip()


def test_every_sandbox_error_code_is_in_the_document() -> None:
    text = json.dumps(DOC)
    codes = [
        name
        for name in sandbox.__all__
        if name.endswith("_CODE") and name != "METHOD_NOT_ALLOWED_CODE"  # 405: no operation
    ]
    assert len(codes) >= 10
    for name in codes:
        assert str(getattr(sandbox, name)) in text, name


def test_undocumented_answers_are_marked_as_the_sandboxs() -> None:
    """Only what the pages document is unmarked; the rest says ``x-skala-sandbox``."""
    unmarked = set()
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if "$ref" in response:
                    response = DOC["components"]["responses"][response["$ref"].rsplit("/")[-1]]
                if not response.get("x-skala-sandbox"):
                    unmarked.add(f"{method.upper()} {path} {status}")
    assert unmarked == {
        "POST /oauth2/token/ 200",
        "POST /api/v1/supportTickets/ 202",
        "POST /api/v1/supportTickets/ 400",  # customer missing or without email
        "POST /api/v1/supportTickets/ 403",
        "GET /api/v1/supportTickets/{ticketId}/ 200",
        "GET /api/v1/supportTickets/{ticketId}/ 403",
    }


# --------------------------------------------------------------------------------------------
# _contract


def test_find_operation() -> None:
    found = _contract.find_operation("get", f"/api/v1/supportTickets/{TICKET_ID}/")
    assert found is not None
    assert found[0].operation_id == "retrieveSupportTicket"
    assert found[1] == {"ticketId": TICKET_ID}
    assert _contract.find_operation("GET", f"/api/v1/supportTickets/{TICKET_ID}") is None
    assert _contract.find_operation("DELETE", "/api/v1/supportTickets/") is None
    assert _contract.find_operation("GET", "/api/v1/supportTickets/a/b/") is None


def test_a_conforming_create_request() -> None:
    _contract.check_request(
        "POST",
        "/api/v1/supportTickets/",
        MULTIPART_HEADERS,
        fields={"customerId": CUSTOMER_ID, "summary": "One line", "description": "Two\nlines"},
        files=[_file("a.PDF"), _file("b.webm", _limits.MAX_FILE_BYTES)],
    )


def test_a_create_request_that_breaks_everything() -> None:
    with pytest.raises(ContractViolation) as info:
        _contract.check_request(
            "POST",
            "/api/v1/supportTickets/",
            {"Authorization": "Basic eDp5", "Content-Type": "multipart/form-data; b=x"},
            fields={"customerId": "nope", "summary": "a\u2028b", "description": " "},
            files=[
                *[_file("a.exe")] * 5,
                _file(None),
                _file("big.pdf", _limits.MAX_FILE_BYTES + 1),
                _file("big.mp4", _limits.MAX_FILE_BYTES + 1),
                _file("x.pdf", field="summary"),
            ],
        )
    problems = "\n".join(info.value.problems)
    for expected in (
        "security: Authorization scheme 'Basic', bearer expected",
        "extension 'exe', not allowed",
        "file part 'files' has no filename",
        f"is {_limits.MAX_FILE_BYTES + 1} bytes",
        "files total",
        "part 'summary' is sent as a file",
        "/customerId: 'nope' is not a 'uuid'",
        "/summary: 'a\\u2028b' must not match",
        "/description: ' ' does not match",
        "/files: [",
    ):
        assert expected in problems
    assert problems.count("extension 'exe'") == 1  # the same finding once
    assert isinstance(info.value, AssertionError)
    assert str(info.value).startswith("request breaks the API contract (POST /api/v1/")


def test_token_and_get_requests() -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(b"id:secret").decode()}
    form = {**basic, "Content-Type": "application/x-www-form-urlencoded"}
    _contract.check_request(
        "POST", "/oauth2/token/", form, form={"grant_type": "client_credentials"}
    )
    _contract.check_request(
        "GET", f"/api/v1/supportTickets/{TICKET_ID}/", {"Authorization": "Bearer t"}
    )
    cases: list[tuple[str, str, dict[str, str], str]] = [
        ("POST", "/oauth2/token/", form, "'password' is not one of ['client_credentials']"),
        ("POST", "/oauth2/token/", {"Content-Type": form["Content-Type"]}, "no Authorization"),
        ("POST", "/oauth2/token/", {**form, "Authorization": "Basic !!"}, "not base64"),
        ("POST", "/oauth2/token/", {**form, "Authorization": "Basic eHk="}, "not 'id:secret'"),
        ("POST", "/oauth2/token/", basic, "Content-Type '(none)'"),
        ("GET", f"/api/v1/supportTickets/{TICKET_ID}/", {"Authorization": "Bearer "}, "empty"),
        (
            "GET",
            "/api/v1/supportTickets/12/",
            {"Authorization": "Bearer t"},
            "'12' is not a 'uuid'",
        ),
        ("GET", "/nowhere/", {}, "no such operation"),
    ]
    for method, path, headers, expected in cases:
        with pytest.raises(ContractViolation, match=re.escape(expected)):
            _contract.check_request(method, path, headers, form={"grant_type": "password"})


def test_responses() -> None:
    path = f"/api/v1/supportTickets/{TICKET_ID}/"
    created = {"ticketId": TICKET_ID, "status": "CREATED", "issueKey": "SUP-1"}
    _contract.check_response("GET", path, 200, JSON, _body(created))
    _contract.check_response("GET", path, 200, JSON, None)  # status and headers only
    error = {"code": 42900, "type": "Throttled", "detail": {"message": "m"}, "status": 429}
    _contract.check_response("GET", path, 429, {**JSON, "Retry-After": "1.5"}, _body(error))
    _contract.check_response("GET", path, 503, JSON, _body({**error, "status": 503}))
    cases: list[tuple[int, dict[str, str], bytes, str]] = [
        (200, JSON, _body({**created, "issueKey": None}), "/issueKey: None is not of type"),
        (200, JSON, _body({**created, "status": "PENDING"}), "/issueKey: 'SUP-1' is not of"),
        (200, JSON, _body({**created, "status": "DONE"}), "'DONE' is not one of"),
        (200, {"Content-Type": "text/html"}, b"<html>", "Content-Type 'text/html'"),
        (200, JSON, b"{", "body is not JSON"),
        (418, JSON, b"{}", "status 418 is not documented"),
        (403, JSON, _body(error), "does not repeat"),
        (403, JSON, _body({**error, "code": 20061, "status": 403}), "was expected"),
        (401, JSON, _body({"detail": "no"}), "'code' is a required property"),
        (429, {**JSON, "Retry-After": ""}, _body(error), "header Retry-After"),
    ]
    for status, headers, body, expected in cases:
        with pytest.raises(ContractViolation, match=re.escape(expected)) as info:
            _contract.check_response("GET", path, status, headers, body)
        assert info.value.status == status
    with pytest.raises(ContractViolation, match="no such operation"):
        _contract.check_response("PUT", path, 200, JSON, b"{}")


def test_created_ticket_is_pending_without_issue_key() -> None:
    body = {"ticketId": TICKET_ID, "status": "PENDING", "issueKey": None}
    _contract.check_response("POST", "/api/v1/supportTickets/", 202, JSON, _body(body))
    with pytest.raises(ContractViolation, match="'PENDING' was expected"):
        _contract.check_response(
            "POST", "/api/v1/supportTickets/", 202, JSON, _body({**body, "status": "FAILED"})
        )


def test_an_unknown_status_can_be_tolerated() -> None:
    path = f"/api/v1/supportTickets/{TICKET_ID}/"
    body = _body({"ticketId": TICKET_ID, "status": "ARCHIVED", "issueKey": None})
    _contract.check_response("GET", path, 200, JSON, body, tolerated_statuses={"ARCHIVED"})
    with pytest.raises(ContractViolation, match="'ARCHIVED' is not one of"):
        _contract.check_response("GET", path, 200, JSON, body, tolerated_statuses={"OTHER"})


def test_violations_pickle() -> None:
    violation = ContractViolation("response", "GET", "/x/", ["a", "b"], status=500)
    copy = pickle.loads(pickle.dumps(violation))  # noqa: S301 - our own bytes
    assert (copy.kind, copy.method, copy.path, copy.problems, copy.status) == (
        "response",
        "GET",
        "/x/",
        ("a", "b"),
        500,
    )
    assert str(copy) == str(violation)


def test_check_exchange_rules() -> None:
    path = f"/api/v1/supportTickets/{TICKET_ID}/"
    bad = {"Authorization": "Token x"}
    error = _body({"code": 40001, "type": "T", "detail": {"message": "m"}, "status": 401})

    def check(status: int, body: bytes, **kw: Any) -> list[ContractViolation]:
        headers = kw.pop("headers", JSON)
        return _contract.check_exchange(
            method="GET",
            path=path,
            request_headers=bad,
            fields={},
            files=(),
            status=status,
            response_headers=headers,
            body=body,
            **kw,
        )

    assert check(401, error) == []  # a rejected request is not checked
    ticket = _body({"ticketId": TICKET_ID, "status": "PENDING", "issueKey": None})
    [found] = check(200, ticket)  # an accepted one is
    assert found.kind == "request"
    html = {"Content-Type": "text/html"}
    assert check(502, b"<html>", headers=html, injected=True) == []
    assert check(418, b"{}", injected=True) == []
    assert check(403, b'{"a": 1}', injected=True, custom_body=True) == []
    [found] = check(503, b"{}", injected=True)  # an injected JSON error must conform
    assert found.kind == "response"
    assert check(418, b"{}")[0].problems == (
        "status 418 is not documented (documented: 200, 401, 403, 404, 429, 5XX)",
    )
    assert len(_contract.take_violations()) == 3
    assert _contract.take_violations() == []
    assert check(200, b"{}", headers=JSON) != []
    _contract.take_violations()
    assert (
        _contract.check_exchange(
            method="GET",
            path="/elsewhere/",
            request_headers={},
            fields={},
            files=(),
            status=200,
            response_headers={},
            body=b"",
        )
        == []
    )


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
