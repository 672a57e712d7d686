"""``transport=`` and ``skala_async.testing.MockTransport``: answering requests in unit tests."""

from __future__ import annotations

import asyncio
import ssl
import uuid

import pytest

import skala_async as skala
from skala_async import Operation, RawResponse, Request, SkalaClient
from skala_async.testing import FAST_RETRY, MockTransport

CID = "0c5a2c7e-8d39-4b3f-9f8a-1f2d3c4b5a69"
TID = uuid.UUID("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
TOKEN = "sekrit-token-value"


def ticket(status: str = "PENDING", tid: uuid.UUID = TID) -> dict[str, object]:
    return {"ticketId": str(tid), "status": status, "issueKey": None}


def api(request: Request) -> RawResponse:
    """A well-behaved API: tokens, creates and reads."""
    if request.operation is Operation.TOKEN:
        return MockTransport.json(200, {"accessToken": TOKEN, "expiresIn": 3600})
    if request.operation is Operation.CREATE:
        return MockTransport.json(202, ticket())
    return MockTransport.json(200, ticket("CREATED", request.ticket_id or TID))


async def test_create_and_get_through_a_handler() -> None:
    mock = MockTransport(api)
    async with SkalaClient("id", "secret", transport=mock) as client:
        handle = await client.create_ticket(CID, "Card top-up", "It failed")
        got = await client.get_ticket(handle.ticket_id)
    assert handle.ticket_id == TID
    assert got.status is skala.TicketStatus.CREATED
    assert [r.operation for r in mock.requests] == [
        Operation.TOKEN,
        Operation.CREATE,
        Operation.GET,
    ]
    token, create, get = mock.requests
    assert token.headers["Authorization"].startswith("Basic ")
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"
    assert dict(create.fields) == {
        "customerId": CID,
        "summary": "Card top-up",
        "description": "It failed",
    }
    assert get.ticket_id == TID
    assert get.headers["Authorization"] == f"Bearer {TOKEN}"
    assert client.request_counts == {"token": 1, "create": 1, "get": 1}
    assert mock.closed  # the client's close() closes its transport


async def test_an_async_handler_and_files() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> RawResponse:
        seen.append(request)
        return MockTransport.json(202, ticket())

    progress: list[tuple[int, int]] = []
    async with SkalaClient(token="t", transport=MockTransport(handler)) as client:
        await client.create_ticket(
            CID,
            "s",
            "d",
            files=[skala.Attachment.from_bytes(b"%PDF-1.4 x", filename="a.pdf")],
            progress=lambda sent, total: progress.append((sent, total)),
        )
    (create,) = seen
    assert [(f.filename, f.size) for f in create.files] == [("a.pdf", 10)]
    assert progress == [(10, 10)]


async def test_a_transport_error_from_the_handler_is_retried_like_a_network_failure() -> None:
    calls = 0

    def flaky(request: Request) -> RawResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise skala.TransportError(
                "connection refused", method=request.method, path=request.path, request_sent=False
            )
        return MockTransport.json(200, ticket("CREATED"))

    mock = MockTransport(flaky)
    async with SkalaClient(token="t", transport=mock, retry=FAST_RETRY) as client:
        got = await client.get_ticket(TID)
    assert got.status is skala.TicketStatus.CREATED
    assert len(mock.requests) == 2


async def test_an_ambiguous_create_failure_is_never_resent() -> None:
    def lost(request: Request) -> RawResponse:
        raise skala.TransportError(
            "connection reset", method=request.method, path=request.path, request_sent=True
        )

    mock = MockTransport(lost)
    async with SkalaClient(token="t", transport=mock, retry=FAST_RETRY) as client:
        with pytest.raises(skala.CreateOutcomeUnknownError):
            await client.create_ticket(CID, "s", "d")
    assert len(mock.requests) == 1


async def test_a_get_answered_for_another_ticket_is_refused() -> None:
    other = uuid.uuid4()
    mock = MockTransport(lambda request: MockTransport.json(200, ticket("CREATED", other)))
    async with SkalaClient(token="t", transport=mock, retry=FAST_RETRY) as client:
        with pytest.raises(skala.UnexpectedResponseError, match=str(other)):
            await client.get_ticket(TID)


async def test_bad_input_sends_nothing() -> None:
    mock = MockTransport(api)
    async with SkalaClient(token="t", transport=mock) as client:
        with pytest.raises(skala.ValidationError):
            await client.create_ticket("not-a-uuid", "s", "d")
        with pytest.raises(skala.ValidationError):
            await client.get_ticket("nope")
    assert mock.requests == []


async def test_a_handler_answering_something_else_is_a_clear_error() -> None:
    mock = MockTransport(lambda request: {"status": 200})  # type: ignore[arg-type,return-value]
    async with SkalaClient(token="t", transport=mock) as client:
        with pytest.raises(TypeError, match="must return a RawResponse, got dict"):
            await client.get_ticket(TID)


async def test_a_closed_client_sends_nothing() -> None:
    mock = MockTransport(api)
    client = SkalaClient(token="t", transport=mock)
    await client.close()
    assert client.closed
    assert mock.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_ticket(TID)
    assert mock.requests == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"proxy": "http://proxy.example:3128"}, "proxy="),
        ({"ssl": ssl.create_default_context()}, "ssl="),
        ({"trust_env": False}, "trust_env="),
        ({"user_agent": "me/1"}, "user_agent="),
        ({"request_id_header": "X-Trace"}, "request_id_header="),
        ({"trace_configs": []}, "trace_configs="),
    ],
)
def test_transport_refuses_the_aiohttp_transport_arguments(
    kwargs: dict[str, object], named: str
) -> None:
    mock = MockTransport(api)
    with pytest.raises(ValueError, match=named):
        SkalaClient(token="t", transport=mock, **kwargs)  # type: ignore[arg-type]
    assert mock.requests == []


async def test_transport_refuses_a_session_too() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="session="):
            SkalaClient(token="t", transport=MockTransport(api), session=session)


def test_transport_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match=r"skala_async.Transport .*got object"):
        SkalaClient(token="t", transport=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler must be callable"):
        MockTransport("not a function")  # type: ignore[arg-type]


def test_the_protocol_is_public_and_mock_transport_implements_it() -> None:
    assert isinstance(MockTransport(api), skala.Transport)
    assert {"Transport", "Request", "RawResponse", "Operation"} <= set(skala.__all__)


async def test_a_request_repr_never_shows_the_token() -> None:
    mock = MockTransport(api)
    async with SkalaClient("id", "client-secret-value", transport=mock) as client:
        await client.get_ticket(TID)
    for request in mock.requests:
        text = repr(request)
        assert TOKEN not in text
        assert "client-secret-value" not in text
        assert "Authorization" not in text
    assert "Accept" in repr(mock.requests[-1])  # the other headers are shown
    assert repr(mock) == "<MockTransport requests=2 closed>"


async def test_timeouts_reach_the_transport() -> None:
    got: list[object] = []

    class Recording(MockTransport):
        async def send(
            self,
            request: Request,
            *,
            time_limit: float | None = None,
            timeouts: skala.Timeouts | None = None,
            progress: object = None,
        ) -> RawResponse:
            got.append((time_limit, timeouts))
            return await super().send(request)

    limits = skala.Timeouts(read=3.0)
    async with SkalaClient(token="t", transport=Recording(api), timeouts=limits) as client:
        await client.get_ticket(TID)
        await client.with_options(timeout=skala.Timeouts(read=1.0)).get_ticket(TID, timeout=50)
    assert got[0] == (None, limits)
    limit, view_limits = got[1]  # type: ignore[misc]
    assert isinstance(limit, float)
    assert 0 < limit <= 50
    assert view_limits == skala.Timeouts(read=1.0)


async def test_a_handler_slower_than_the_call_timeout_is_a_request_timeout() -> None:
    release = asyncio.Event()

    async def silent(request: Request) -> RawResponse:
        await release.wait()  # never set: a server that never answers
        return MockTransport.json(200, ticket("CREATED"))

    mock = MockTransport(silent)
    async with SkalaClient(token="t", transport=mock, retry=FAST_RETRY) as client:
        with pytest.raises(skala.RequestTimeoutError) as info:
            await asyncio.wait_for(client.get_ticket(TID, timeout=0.05), 30)
        with pytest.raises(skala.CreateOutcomeUnknownError):
            await asyncio.wait_for(client.create_ticket(CID, "s", "d", timeout=0.05), 30)
    assert info.value.request_sent
    assert mock.requests[-1].operation is Operation.CREATE  # the create was not re-sent
    assert [r.operation for r in mock.requests].count(Operation.CREATE) == 1
