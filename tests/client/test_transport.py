"""The aiohttp module (``_transport``): aioresponses, plus a loopback server for wire facts."""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from skala_async import _transport
from skala_async._protocol import (
    MAX_RESPONSE_BYTES,
    create_request,
    get_request,
    token_request,
)
from skala_async._transport import AiohttpTransport, AttachmentPayload, Timeouts
from skala_async.errors import (
    RequestTimeoutError,
    SkalaError,
    TransportError,
    UnderlyingError,
)
from skala_async.models import Attachment, TicketDraft

BASE = "https://skala-sandbox.ripio.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


CID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
TID = "0b6f1c2e-7d39-4f5e-9a43-52c1f0e9d8a7"
TICKET_URL = f"{BASE}/api/v1/supportTickets/{TID}/"
TICKET_JSON = {"ticketId": TID, "status": "PENDING", "issueKey": None}


class CollectingWriter:
    """Enough of ``AbstractStreamWriter`` for a payload to write into."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.writes = 0

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.buf += bytes(chunk)
        self.writes += 1

    async def write_eof(self, chunk: bytes = b"") -> None:
        self.buf += chunk

    async def drain(self) -> None:
        pass


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    t = AiohttpTransport(BASE + "/")  # a trailing slash must not double up
    yield t
    await t.close()


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        yield m


def only_call(m: Any, method: str, url: str) -> Any:
    calls = m.requests[(method, URL(url))]
    assert len(calls) == 1
    return calls[0]


def _request_info() -> aiohttp.RequestInfo:
    url = URL(TICKET_URL)
    return aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)


def connector_error() -> aiohttp.ClientConnectorError:
    # ConnectionKey's fields differ between aiohttp releases (3.14.1 added server_hostname):
    # built by name, with None for those these tests do not care about.
    known = {"host": "skala-sandbox.ripio.com", "port": 443, "is_ssl": True, "ssl": True}
    key = ConnectionKey(**{field: known.get(field) for field in ConnectionKey._fields})
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


# =========================================================================== requests


async def test_get_url_and_headers(transport: AiohttpTransport, mocked: Any) -> None:
    mocked.get(TICKET_URL, status=200, payload=TICKET_JSON, headers={"X-Request-Id": "req-7"})
    resp = await transport.send(get_request(TID).with_headers(bearer("tok-abc")))
    assert resp.status == 200
    assert json.loads(resp.body) == TICKET_JSON
    assert resp.truncated is False
    assert resp.headers["x-request-id"] == "req-7"  # case-insensitive mapping
    call = only_call(mocked, "GET", TICKET_URL)
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok-abc"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("skala-async/")
    assert call.kwargs["allow_redirects"] is False
    assert call.kwargs["data"] is None
    assert call.kwargs["timeout"].total == Timeouts().read


async def test_no_token_no_authorization(transport: AiohttpTransport, mocked: Any) -> None:
    mocked.get(TICKET_URL, status=200, payload=TICKET_JSON)
    await transport.send(get_request(TID))
    assert "Authorization" not in only_call(mocked, "GET", TICKET_URL).kwargs["headers"]


async def test_token_request_form(transport: AiohttpTransport, mocked: Any) -> None:
    url = f"{BASE}/oauth2/token/"
    mocked.post(url, status=200, payload={"accessToken": "t", "expiresIn": 60})
    req = token_request("cid", "csecret")
    resp = await transport.send(req)
    assert resp.status == 200
    call = only_call(mocked, "POST", url)
    assert call.kwargs["data"] == b"grant_type=client_credentials"
    headers = call.kwargs["headers"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Authorization"] == req.headers["Authorization"]
    assert headers["Authorization"].startswith("Basic ")


async def test_create_sends_multipart_form(
    transport: AiohttpTransport, mocked: Any, tmp_path: pathlib.Path
) -> None:
    url = f"{BASE}/api/v1/supportTickets/"
    mocked.post(url, status=202, payload=TICKET_JSON)
    p = tmp_path / "résumé.pdf"
    p.write_bytes(b"%PDF-1.4 body")
    req = create_request(TicketDraft(CID, "Top-up", "Missing", files=[p]))
    resp = await transport.send(req.with_headers(bearer("tok")))
    assert resp.status == 202
    call = only_call(mocked, "POST", url)
    body = call.kwargs["data"]
    assert isinstance(body, aiohttp.payload.Payload)
    assert body.content_type.startswith("multipart/form-data; boundary=")
    assert body.size is not None  # known size: Content-Length, never chunked
    timeout = call.kwargs["timeout"]
    assert timeout.sock_read == Timeouts().upload_read
    assert timeout.total == pytest.approx(Timeouts().for_upload(len(b"%PDF-1.4 body")))


async def test_each_send_builds_a_fresh_form(transport: AiohttpTransport, mocked: Any) -> None:
    url = f"{BASE}/api/v1/supportTickets/"
    mocked.post(url, status=202, payload=TICKET_JSON, repeat=True)
    req = create_request(TicketDraft(CID, "s", "d"))
    await transport.send(req)
    await transport.send(req)
    first, second = mocked.requests[("POST", URL(url))]
    assert first.kwargs["data"] is not second.kwargs["data"]


def test_timeouts() -> None:
    t = Timeouts(connect=5, read=20, upload_read=100, upload_min_rate=1000)
    assert t.for_upload(0) == 105
    assert t.for_upload(50_000) == 155
    tr = AiohttpTransport(BASE, timeouts=t)
    get = tr._timeout(get_request(TID), None)
    assert (get.total, get.sock_read, get.connect) == (20, None, 5)
    capped = tr._timeout(get_request(TID), 2.5)
    assert capped.total == 2.5
    up = tr._timeout(create_request(TicketDraft(CID, "s", "d")), 30)
    assert (up.total, up.sock_read) == (30, 30)
    assert tr._timeout(get_request(TID), -1).total == 0.001


# =========================================================================== response body cap


async def test_body_at_the_cap_is_whole(transport: AiohttpTransport, mocked: Any) -> None:
    body = b"a" * MAX_RESPONSE_BYTES
    mocked.get(TICKET_URL, status=200, body=body)
    resp = await transport.send(get_request(TID))
    assert resp.truncated is False
    assert resp.body == body


async def test_body_over_the_cap_is_truncated(transport: AiohttpTransport, mocked: Any) -> None:
    mocked.get(TICKET_URL, status=502, body=b"b" * (MAX_RESPONSE_BYTES + 10))
    resp = await transport.send(get_request(TID))
    assert resp.status == 502
    assert resp.truncated is True
    assert len(resp.body) == MAX_RESPONSE_BYTES


async def test_declared_length_over_the_cap_is_not_read(
    transport: AiohttpTransport, mocked: Any
) -> None:
    headers = {"Content-Length": str(MAX_RESPONSE_BYTES + 1)}
    mocked.get(TICKET_URL, status=200, body=b"{}", headers=headers)
    resp = await transport.send(get_request(TID))
    assert resp.truncated is True
    assert resp.body == b""


# =========================================================================== error mapping


async def _send_raising(
    transport: AiohttpTransport, mocked: Any, exc: BaseException
) -> TransportError:
    mocked.get(TICKET_URL, exception=exc)
    with pytest.raises(TransportError) as info:
        await transport.send(get_request(TID).with_headers(bearer("tok-secret")))
    err = info.value
    # The cause is the original's class name and message only: aiohttp's exceptions carry
    # the request's headers, the token among them.
    cause = err.__cause__
    assert isinstance(cause, UnderlyingError)
    kind = type(exc)
    module = "" if kind.__module__ == "builtins" else kind.__module__ + "."
    assert cause.type_name == module + kind.__qualname__
    assert cause.message == str(exc).replace("tok-secret", "***")
    assert err.__context__ is None
    assert not isinstance(err, aiohttp.ClientError)
    assert isinstance(err, SkalaError)
    assert err.method == "GET"
    assert err.path == f"/api/v1/supportTickets/{TID}/"
    assert "tok-secret" not in str(err)
    return err


async def test_connector_error_not_sent(transport: AiohttpTransport, mocked: Any) -> None:
    exc = connector_error()
    err = await _send_raising(transport, mocked, exc)
    assert type(err) is TransportError
    assert err.request_sent is False
    assert "skala-sandbox.ripio.com:443" in str(err)
    assert "Connection refused" in str(err)


async def test_server_disconnected_may_have_been_sent(
    transport: AiohttpTransport, mocked: Any
) -> None:
    err = await _send_raising(transport, mocked, aiohttp.ServerDisconnectedError())
    assert type(err) is TransportError
    assert err.request_sent is True
    assert "closed the connection" in str(err)


async def test_asyncio_timeout_is_request_timeout(transport: AiohttpTransport, mocked: Any) -> None:
    err = await _send_raising(transport, mocked, asyncio.TimeoutError())
    assert isinstance(err, RequestTimeoutError)
    assert isinstance(err, TimeoutError)
    assert err.request_sent is True
    assert "timed out" in str(err)


async def test_connection_timeout_not_sent(transport: AiohttpTransport, mocked: Any) -> None:
    err = await _send_raising(transport, mocked, aiohttp.ConnectionTimeoutError("connect"))
    assert isinstance(err, RequestTimeoutError)
    assert err.request_sent is False


async def test_socket_read_timeout_sent(transport: AiohttpTransport, mocked: Any) -> None:
    err = await _send_raising(transport, mocked, aiohttp.SocketTimeoutError("read"))
    assert isinstance(err, RequestTimeoutError)
    assert err.request_sent is True


@pytest.mark.parametrize(
    ("exc", "sent"),
    [
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientConnectionResetError("reset"), True),
        (aiohttp.ClientPayloadError("bad chunk"), True),
        (aiohttp.ServerTimeoutError("t"), True),
        (aiohttp.ClientConnectionError("refused by mock"), True),
        (aiohttp.InvalidURL("http://[bad"), True),
        (aiohttp.ClientResponseError(_request_info(), (), status=400, message="bad"), True),
        (ConnectionResetError(104, "reset"), True),
        (OSError(5, "I/O error"), True),
        (ValueError("Newline or carriage return character detected in HTTP status"), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
async def test_no_aiohttp_exception_escapes(
    transport: AiohttpTransport, mocked: Any, exc: BaseException, sent: bool
) -> None:
    err = await _send_raising(transport, mocked, exc)
    assert err.request_sent is sent


async def test_cancellation_is_not_wrapped(transport: AiohttpTransport, mocked: Any) -> None:
    mocked.get(TICKET_URL, exception=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await transport.send(get_request(TID))


# =========================================================================== session ownership


async def test_caller_session_is_not_closed(mocked: Any) -> None:
    mocked.get(TICKET_URL, status=200, payload=TICKET_JSON)
    async with aiohttp.ClientSession() as session:
        t = AiohttpTransport(BASE, session=session)
        await t.send(get_request(TID))
        await t.close()
        assert t.closed
        assert not session.closed
    assert session.closed


async def test_own_session_is_closed(mocked: Any) -> None:
    mocked.get(TICKET_URL, status=200, payload=TICKET_JSON)
    t = AiohttpTransport(BASE)
    assert t._session is None  # made lazily, inside a running loop
    await t.send(get_request(TID))
    session = t._session
    assert session is not None
    assert not session.closed
    await t.close()
    assert session.closed
    await t.close()  # idempotent


async def test_close_before_use_makes_no_session() -> None:
    t = AiohttpTransport(BASE)
    await t.close()
    assert t._session is None
    assert t.closed


@pytest.mark.parametrize("caller_session", [False, True])
async def test_closed_transport_raises_runtime_error(caller_session: bool) -> None:
    async with aiohttp.ClientSession() as session:
        t = AiohttpTransport(BASE, session=session if caller_session else None)
        await t.close()
        with pytest.raises(RuntimeError, match="closed"):
            await t.send(get_request(TID))
        assert t._session is None


# =========================================================================== upload payloads


def test_attachment_payload_size_equals_file_size(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "clip.mp4"
    with p.open("wb") as f:
        f.truncate(3 * 1024 * 1024 + 7)
    payload = AttachmentPayload(Attachment.from_path(p))
    assert payload.size == p.stat().st_size
    assert payload.content_type == "video/mp4"
    assert AttachmentPayload(Attachment.from_bytes(b"12345", filename="a.png")).size == 5
    with pytest.raises(TypeError):
        payload.decode()


async def test_attachment_payload_streams_file_in_chunks(tmp_path: pathlib.Path) -> None:
    data = bytes(range(256)) * 3000  # 768000 bytes: three 256 KiB chunks, the last partial
    p = tmp_path / "scan.pdf"
    p.write_bytes(data)
    progress: list[int] = []
    payload = AttachmentPayload(Attachment.from_path(p), progress=progress.append)
    writer = CollectingWriter()
    await payload.write(writer)  # type: ignore[arg-type]
    assert bytes(writer.buf) == data
    assert writer.writes == 3
    assert sum(progress) == len(data)
    assert all(n <= _transport.CHUNK_SIZE for n in progress)
    # A second attempt reads the file again from the start.
    again = CollectingWriter()
    await payload.write(again)  # type: ignore[arg-type]
    assert bytes(again.buf) == data


async def test_attachment_payload_length_limit() -> None:
    payload = AttachmentPayload(Attachment.from_bytes(b"0123456789", filename="a.png"))
    writer = CollectingWriter()
    await payload.write_with_length(writer, 4)  # type: ignore[arg-type]
    assert bytes(writer.buf) == b"0123"


async def test_attachment_payload_keeps_caller_file_open(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "shot.png"
    p.write_bytes(b"HEADER" + b"x" * 1000)
    with p.open("rb") as f:
        f.seek(6)
        payload = AttachmentPayload(Attachment.from_file(f))
        writer = CollectingWriter()
        await payload.write(writer)  # type: ignore[arg-type]
        assert bytes(writer.buf) == b"x" * 1000
        assert not f.closed


async def test_file_that_shrank_is_an_os_error(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "log.pdf"
    p.write_bytes(b"z" * 1000)
    payload = AttachmentPayload(Attachment.from_path(p))
    p.write_bytes(b"z" * 10)
    with pytest.raises(OSError, match="became shorter"):
        await payload.write(CollectingWriter())  # type: ignore[arg-type]


async def test_form_has_known_size_and_raw_utf8_filename(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "résumé.pdf"
    p.write_bytes(b"%PDF-1.7 content")
    mem = Attachment.from_bytes(b"\x89PNG", filename="screen shot.png")
    req = create_request(TicketDraft(CID, "Café top-up", "Línea 1\nLínea 2", files=[p, mem]))
    seen: list[tuple[int, int]] = []
    multipart = _transport._form(req, lambda sent, total: seen.append((sent, total)))
    try:
        assert multipart.size is not None  # => aiohttp sends Content-Length, not chunked
        writer = CollectingWriter()
        await multipart.write(writer)  # type: ignore[arg-type]
    finally:
        await multipart.close()
    raw = bytes(writer.buf)
    assert len(raw) == multipart.size
    assert 'filename="résumé.pdf"'.encode() in raw
    assert b"r%C3%A9sum" not in raw
    assert b"filename*=" not in raw
    assert b'name="files"; filename="screen shot.png"' in raw
    assert raw.count(b'name="files"') == 2
    assert b"%PDF-1.7 content" in raw
    assert b"Content-Type: application/pdf" in raw
    assert CID.encode() in raw
    assert "Café top-up".encode() in raw
    assert seen[-1] == (len(b"%PDF-1.7 content") + 4, len(b"%PDF-1.7 content") + 4)


async def test_form_without_files_is_still_multipart() -> None:
    req = create_request(TicketDraft(CID, "No files", "Just text"))
    multipart = _transport._form(req, None)
    try:
        assert multipart.content_type.startswith("multipart/form-data; boundary=")
        assert multipart.size is not None
        writer = CollectingWriter()
        await multipart.write(writer)  # type: ignore[arg-type]
    finally:
        await multipart.close()
    raw = bytes(writer.buf)
    assert len(raw) == multipart.size
    assert b'form-data; name="customerId"' in raw
    assert b"filename=" not in raw


# =========================================================================== loopback wire facts


async def test_upload_on_the_wire_has_content_length(tmp_path: pathlib.Path) -> None:
    received: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        received["content_length"] = request.headers.get("Content-Length")
        received["transfer_encoding"] = request.headers.get("Transfer-Encoding")
        received["authorization"] = request.headers.get("Authorization")
        form = await request.post()
        received["fields"] = {k: v for k, v in form.items() if isinstance(v, str)}
        received["files"] = [
            (v.filename, v.content_type, v.file.read())
            for k, v in form.items()
            if k == "files" and isinstance(v, web.FileField)
        ]
        return web.json_response(TICKET_JSON, status=202)

    app = web.Application()
    app.router.add_post("/api/v1/supportTickets/", handler)
    p = tmp_path / "résumé.pdf"
    p.write_bytes(b"%PDF" + b"\0" * 300_000)
    req = create_request(TicketDraft(CID.upper(), "Top-up", "Desc", files=[p]))
    async with TestServer(app, host="127.0.0.1") as server:
        t = AiohttpTransport(str(server.make_url("")))
        try:
            resp = await t.send(req.with_headers(bearer("tok")))
        finally:
            await t.close()
    assert resp.status == 202
    assert received["transfer_encoding"] is None
    assert received["content_length"] is not None
    assert int(received["content_length"]) > 300_004
    assert received["authorization"] == "Bearer tok"
    assert received["fields"] == {"customerId": CID, "summary": "Top-up", "description": "Desc"}
    assert received["files"] == [("résumé.pdf", "application/pdf", p.read_bytes())]


async def test_dropped_connection_on_loopback() -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        return web.Response()  # pragma: no cover

    app = web.Application()
    app.router.add_get("/api/v1/supportTickets/{tid}/", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        t = AiohttpTransport(str(server.make_url("")))
        try:
            with pytest.raises(TransportError) as info:
                await t.send(get_request(uuid.UUID(TID)))
        finally:
            await t.close()
    assert info.value.request_sent is True
    cause = info.value.__cause__
    assert isinstance(cause, UnderlyingError)
    assert cause.type_name.startswith("aiohttp.")


async def test_refused_connection_on_loopback() -> None:
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = AiohttpTransport(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransportError) as info:
            await t.send(get_request(TID))
    finally:
        await t.close()
    assert info.value.request_sent is False
    cause = info.value.__cause__
    assert isinstance(cause, UnderlyingError)
    assert cause.type_name == "aiohttp.client_exceptions.ClientConnectorError"


async def test_a_file_a_cancelled_worker_thread_still_holds_is_closed_by_that_thread() -> None:
    # A cancelled run_in_executor leaves its thread running: what it opens or reads must be
    # closed when it is done, never left to the garbage collector (a ResourceWarning).
    import threading

    from skala_async._transport._upload import _ThreadHeld

    closed: list[str] = []
    inside, go_on = threading.Event(), threading.Event()

    def slow_read() -> bytes:
        inside.set()
        go_on.wait(5)
        return b"chunk"

    held = _ThreadHeld(lambda: closed.append(threading.current_thread().name))
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(loop.run_in_executor(None, held.run, slow_read))
    await asyncio.to_thread(inside.wait, 5)
    task.cancel()
    held.release()  # the thread is still reading: nothing closed yet, and no blocking
    assert closed == []
    go_on.set()
    for _ in range(500):
        if closed:
            break
        await asyncio.sleep(0.01)
    assert len(closed) == 1
    assert closed[0] != threading.current_thread().name  # the worker closed it
    # idle: release closes at once, on the caller's thread
    idle: list[int] = []
    _ThreadHeld(lambda: idle.append(1)).release()
    assert idle == [1]
