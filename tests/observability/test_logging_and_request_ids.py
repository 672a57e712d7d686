"""Logging (logger names, levels, ``SKALA_LOG``) and the server's request ids, over HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid

import pytest
from aiohttp import web

from skala_async import (
    ApiError,
    CreateOutcomeUnknownError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    SkalaClient,
    TicketNotFoundError,
    Timeouts,
    ValidationError,
)
from skala_async._logging import setup_from_env
from skala_async.testing import Fault, SkalaSandbox, sandbox_client

CID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
TICKET_RE = re.compile(r"ticket=([0-9a-f-]{36}|\(new\)|-)")


def http_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "skala_async.http"]


async def test_every_request_line_names_ticket_attempt_reason_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="skala_async")
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        sandbox.inject("create", Fault.http(429, retry_after=0.01))
        handle = await client.create_ticket(
            sandbox.customer_id, "Top-up missing", "Card top-up not credited."
        )
        sandbox.inject("get", Fault.http(503))
        await client.get_ticket(handle.ticket_id)
        creates = sandbox.requests_to("create")
        gets = sandbox.requests_to("get")
    records = http_lines(caplog)
    assert records
    for record in records:
        text = record.getMessage()
        assert TICKET_RE.search(text), text
        assert re.search(r"attempt=\d", text), text
    lines = [r.getMessage() for r in records]
    tid = handle.ticket_id
    # the refused create: INFO, reason, the server's request id, the retry
    retry_create = next(line for line in lines if "retry in" in line and line.startswith("POST"))
    assert "ticket=(new) attempt=1 failed: HTTP 429" in retry_create
    assert f"request_id={creates[0].request_id}" in retry_create
    accepted = next(line for line in lines if line.startswith("POST") and "-> 202" in line)
    assert f"ticket={tid} attempt=2 request_id={creates[1].request_id}" in accepted
    retry_get = next(line for line in lines if "retry in" in line and line.startswith("GET"))
    assert f"ticket={tid} attempt=1 failed: HTTP 503" in retry_get
    assert f"request_id={gets[0].request_id}" in retry_get
    for record in records:  # failures and retries are INFO, answers DEBUG
        expected = logging.INFO if " failed: " in record.getMessage() else logging.DEBUG
        assert record.levelno == expected, record.getMessage()


async def test_a_request_that_is_not_retried_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="skala_async")
    tid = uuid.uuid4()
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(TicketNotFoundError) as info:
            await client.get_ticket(tid)
        sandbox.inject("get", Fault.http(503), times=5)
        with pytest.raises(ServerError):
            await client.get_ticket(tid, retry=RetryPolicy(attempts=2, initial=0.01))
        sandbox.clear_faults()
        sandbox.inject("get", Fault.delay(2))
        short = client.with_options(timeout=Timeouts(read=0.2), retry=RetryPolicy(attempts=1))
        with pytest.raises(RequestTimeoutError):
            await short.get_ticket(tid)
        sandbox.inject("create", Fault.http(500))
        with pytest.raises(CreateOutcomeUnknownError, match="may or may not"):
            await client.create_ticket(sandbox.customer_id, "s", "d")
    lines = [r.getMessage() for r in http_lines(caplog)]
    assert any(
        f"ticket={tid} attempt=1 failed: HTTP 404" in line
        and f"request_id={info.value.request_id}" in line
        and "not retried: the answer is final" in line
        for line in lines
    ), lines
    assert any("attempt=2 failed: HTTP 503" in x and "2 attempts made" in x for x in lines)
    assert f"ticket={tid} attempt=1 failed: timed out; not retried: 1 attempt made" in lines[-2]
    assert any(
        "ticket=(new) attempt=1 failed: HTTP 500" in line
        and "not retried: the server may have processed it" in line
        for line in lines
    ), lines


async def test_request_id_is_on_the_error_in_its_text_and_from_the_named_header() -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        tid = uuid.uuid4()
        with pytest.raises(TicketNotFoundError) as info:
            await client.get_ticket(tid)
        recorded = sandbox.requests_to("get")[-1].request_id
        assert recorded is not None
        assert recorded.startswith("req-")
        assert info.value.request_id == recorded
        assert f"(request id {recorded})" in str(info.value)
        # a server that names it otherwise: the client is told the header's name
        sandbox.inject("get", Fault.http(404, headers={"X-Amzn-Trace": "Root=1-abc"}))
        async with sandbox_client(sandbox, request_id_header="x-amzn-trace") as other:
            with pytest.raises(TicketNotFoundError) as info:
                await other.get_ticket(tid)
        assert info.value.request_id == "Root=1-abc"
        assert "(request id Root=1-abc)" in str(info.value)


async def test_no_request_id_header_means_none_and_no_mention() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"code": 1, "type": "X", "detail": {"message": "no"}}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with SkalaClient(token="t0k3n", base_url=f"http://127.0.0.1:{port}") as client:
            with pytest.raises(ApiError) as info:
                await client.get_ticket(uuid.uuid4())
    finally:
        await runner.cleanup()
    assert info.value.request_id is None
    assert "request id" not in str(info.value)


async def raw_server(header: bytes) -> tuple[asyncio.Server, int]:
    """A server answering every request with a 400 in the API's shape and ``header``
    written as raw bytes (no library in between to refuse it)."""
    body = b'{"code": 1, "type": "X", "detail": {"message": "no"}}'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                b"Connection: close\r\n" + header + b"\r\n\r\n" + body
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"X-Request-Id: abc\r\nX-Forged: 1", "abc"),  # a line break ends the header
        (b"X-Request-Id: id\x1b[31mred\x7f", "id?[31mred?"),
        ("X-Request-Id: é-unicode".encode(), "?-unicode"),  # decoded as UTF-8: one character
        (b"X-Request-Id: " + b"x" * 300, "x" * 128 + "…"),
        (b"X-Request-Id:    ", None),
    ],
)
async def test_a_hostile_request_id_cannot_forge_log_lines_or_flood(
    header: bytes, kept: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """What a server sends as its request id is printable ASCII, at most 128 characters,
    in the error, its text and the log."""
    caplog.set_level(logging.DEBUG, logger="skala_async")
    server, port = await raw_server(header)
    try:
        async with SkalaClient(token="t0k3n", base_url=f"http://127.0.0.1:{port}") as client:
            with pytest.raises(ApiError) as info:
                await client.get_ticket(uuid.uuid4())
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.request_id == kept
    for text in [str(info.value)] + [r.getMessage() for r in caplog.records]:
        assert "\n" not in text
        assert "\x1b" not in text
        assert "X-Forged" not in text
        assert len(text) < 600


@pytest.mark.parametrize("name", ["", "X Request", "X-Id:", "Ид", 7])
def test_request_id_header_must_be_a_header_name(name: object) -> None:
    with pytest.raises(ValueError, match="request_id_header"):
        SkalaClient(token="t", request_id_header=name)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ SKALA_LOG

SCRIPT = textwrap.dedent(
    """
    import asyncio, uuid
    import skala_async
    from skala_async.testing import Fault, SkalaSandbox, sandbox_client

    async def main():
        async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
            sandbox.inject("get", Fault.http(503))
            handle = await client.create_ticket(sandbox.customer_id, "s", "d")
            await client.get_ticket(handle.ticket_id)
            print(handle.ticket_id, sandbox.client_secret)

    asyncio.run(main())
    """
)


def run_with(value: str | None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SKALA_LOG"}
    if value is not None:
        env["SKALA_LOG"] = value
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout, done.stderr


@pytest.mark.slow
def test_skala_log_debug_info_and_off() -> None:
    out, err = run_with("debug")
    tid, secret = out.split()
    assert f"skala_async.http DEBUG POST /api/v1/supportTickets/ -> 202 ticket={tid}" in err
    assert f"skala_async.http INFO GET /api/v1/supportTickets/{tid}/ ticket={tid} " in err
    assert "attempt=1 failed: HTTP 503" in err
    assert "skala_async.auth DEBUG got an access token" in err
    assert secret not in err
    out, err = run_with("INFO")  # any case
    tid, _ = out.split()
    assert "attempt=1 failed: HTTP 503" in err
    assert " DEBUG " not in err
    for value in (None, "", "verbose", "1"):
        out, err = run_with(value)
        assert err == ""


def test_setup_from_env_installs_one_handler_only() -> None:
    logger = logging.getLogger("skala_async")
    before = list(logger.handlers)
    level = logger.level
    try:
        assert setup_from_env({"SKALA_LOG": " Debug "}) is True
        assert setup_from_env({"SKALA_LOG": "info"}) is False  # already installed
        assert logger.level == logging.DEBUG
        assert len(logger.handlers) == len(before) + 1
        assert setup_from_env({"SKALA_LOG": "loud"}) is False
    finally:
        for handler in logger.handlers[len(before) :]:
            logger.removeHandler(handler)
        logger.setLevel(level)


async def test_validation_failures_send_nothing_and_log_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="skala_async")
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox) as client:
        with pytest.raises(ValidationError):
            await client.create_ticket("not-a-uuid", "", "")
        assert sandbox.requests == []
    assert http_lines(caplog) == []


@pytest.mark.slow
def test_skala_log_and_cli_verbose_log_each_line_once() -> None:
    """``skala-tickets -v`` with ``SKALA_LOG=info`` set: DEBUG lines, none of them twice."""
    script = textwrap.dedent(
        """
        import sys
        from skala_async.cli import main
        sys.exit(main(["get", "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "-v", "--token", "t",
                       "--base-url", "http://127.0.0.1:9"]))
        """
    )
    env = {**os.environ, "SKALA_LOG": "info"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 4
    lines = [x for x in done.stderr.splitlines() if "skala_async.http" in x]
    assert lines
    assert any(" INFO " in x for x in lines)
    messages = [x.split(" skala_async.http ", 1)[1] for x in lines]
    assert len(messages) == len(set(messages)), lines
