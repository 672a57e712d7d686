"""The API contract (``skala_async/testing/openapi.json``) and what is checked against it.

- The document is valid OpenAPI 3.1 and states the same limits, paths and codes as the code.
- ``_contract`` finds what breaks it (requests, answers, webhooks).
- The sandbox's hook (on for the whole suite, see ``conftest.py``) records violations and
  leaves deliberate faults alone.
- schemathesis fuzzes a live sandbox from the document: ``test_contract_fuzz.py``.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
from importlib import resources
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import skala_async as skala
from skala_async import _limits, _protocol
from skala_async.testing import (
    DEFAULT_SIGNATURE_HEADER,
    RecordedFile,
    _contract,
    sandbox,
)
from skala_async.testing._contract import ContractViolation

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
