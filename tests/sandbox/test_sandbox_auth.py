"""The sandbox's token endpoint and bearer checks, and the 20061 switch."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from skala_async.testing import (
    AUTHENTICATION_FAILED_CODE,
    NOT_AUTHENTICATED_CODE,
    PARSE_ERROR_CODE,
    VALIDATION_ERROR_CODE,
    SkalaSandbox,
)
from tests.helpers.sandbox_wire import (
    CREATE,
    TOKEN,
    basic,
    create,
    get_ticket,
    get_token,
    ticket_form,
)


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


async def test_token_requests_that_cannot_be_read(
    sb: SkalaSandbox, http: aiohttp.ClientSession
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    auth = basic(sb.client_id, sb.client_secret)

    body = b"grant_type=client_credentials&pad=" + b"x" * (16 * 1024)
    async with http.post(sb.url + TOKEN, data=body, headers={**auth, **form}) as resp:
        assert resp.status == 400
        answer = await resp.json()
    assert answer["code"] == PARSE_ERROR_CODE
    assert answer["detail"]["message"] == "Request body too large."

    body = b"grant_type=client_credentials&note=caf\xe9"  # not UTF-8: no field is read
    async with http.post(sb.url + TOKEN, data=body, headers={**auth, **form}) as resp:
        assert resp.status == 400
        answer = await resp.json()
    assert answer["code"] == VALIDATION_ERROR_CODE
    assert answer["detail"]["errors"] == {"grant_type": ["grant_type is required."]}
    assert [r.fields for r in sb.requests_to("token")] == [{}, {}]


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:secret").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Bearer " + base64.b64encode(b"id:secret").decode(),
    ],
    ids=["bad-base64", "not-utf8", "no-colon", "not-basic"],
)
async def test_malformed_basic_auth_is_401(
    sb: SkalaSandbox, http: aiohttp.ClientSession, authorization: str
) -> None:
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="api"'
    assert sb.count("token", status=401) == 1
