"""Security checks: secrets stay secret, TLS stays verified, nothing local leaves the machine,
and a hostile server or webhook sender cannot make the client or the handler buffer without
bound.

* the client secret, every bearer token, the Basic credentials and the webhook secret are
  absent from every ``repr``/``str``/HTML of the objects a user holds, from every error of
  every class (tracebacks included), from every log record at DEBUG over a whole flow with
  retries, a token refresh and failures, and from the CLI's output with ``-v``;
* TLS verification is on, with no switch to turn it off; ``http://`` is refused off
  loopback;
* the filename sent is the basename, quoted so that no name can add a field or a header;
* response bodies are capped at 1 MiB: an endless body, a huge declared length and a
  compression bomb all end at once in ``UnexpectedResponseError``;
* a webhook body over the limit is refused before it is read.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import email.message
import inspect
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import traceback
import tracemalloc
import types
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
import skala_async.errors as errors_module
from skala_async import RetryPolicy, Timeouts
from skala_async._journal import Journal
from skala_async.cli import main
from skala_async.errors import (
    CreateOutcomeUnknownError,
    SkalaError,
    TransportError,
    UnexpectedResponseError,
)
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from skala_async.webhooks import (
    InvalidSignatureError,
    InvalidWebhookError,
    StaleWebhookError,
    WebhookReceiver,
    check_freshness,
    parse_event,
    sign_payload,
    verify_signature,
)
from tests.helpers.cli import threaded_sandbox

SECRET = "cs-Zebra-Quokka-Secret-991"
WRONG_SECRET = "cs-Wrong-Axolotl-Secret-202"
WH_SECRET = "whsec-Narwhal-Secret-314"
ENV_NAMES = ("SKALA_CLIENT_ID", "SKALA_CLIENT_SECRET", "SKALA_BASE_URL", "SKALA_WEBHOOK_SECRET")
PACKAGE = Path(skala.__file__).parent


def basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def assert_absent(secrets: set[str], texts: list[str]) -> None:
    assert all(len(s) >= 12 for s in secrets), "too short to search for reliably"
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into: {text[:300]!r}"


def texts_of(objects: list[object]) -> list[str]:
    texts = []
    for obj in objects:
        texts += [repr(obj), str(obj)]
        html = getattr(obj, "_repr_html_", None)
        if callable(html):
            texts.append(html())
    return texts


def texts_of_error(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    seen = exc
    while seen is not None:
        texts.append(repr(vars(seen)))  # status, headers, detail, cause ...
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return texts


#: Objects not searched: code, frames and tracebacks (their locals are out of scope),
#: classes, modules and functions (shared by everything, they hold no answer).
_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.TracebackType,
    asyncio.AbstractEventLoop,
)


def leaks_of(root: BaseException, secrets: set[str]) -> list[str]:
    """Every path from ``root`` to a string holding a secret, or to an aiohttp object.

    Walks everything reachable from the exception: ``args``, attributes (``__dict__`` and
    slots), ``__cause__``, ``__context__``, ``__notes__``, the members of an exception
    group, mapping keys and values, sequence items, recursively; and ``str``/``repr`` of
    every exception on the way. ``__traceback__`` (frames' locals) is out of scope.
    """
    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[object, str]] = [(root, type(root).__name__)]

    def check(text: str, where: str) -> None:
        found.extend(f"{where} holds a secret: {text[:200]!r}" for s in secrets if s in text)

    while stack:
        obj, where = stack.pop()
        if id(obj) in seen or isinstance(obj, (int, float, complex, type(None))):
            continue
        seen.add(id(obj))
        assert len(seen) < 50_000, f"too much is reachable from {type(root).__name__}"
        if isinstance(obj, str):
            check(obj, where)
            continue
        if isinstance(obj, (bytes, bytearray, memoryview)):
            check(bytes(obj).decode("latin-1"), where)
            continue
        if isinstance(obj, _OPAQUE):
            continue
        if type(obj).__module__.split(".")[0] == "aiohttp":
            found.append(f"{where} is an aiohttp object ({type(obj).__qualname__})")
        children: list[tuple[object, str]] = []
        if isinstance(obj, BaseException):
            for show in (str, repr):
                with contextlib.suppress(Exception):  # a broken __str__ shows nothing
                    check(show(obj), f"{show.__name__}({where})")
            children += [(obj.args, f"{where}.args"), (obj.__cause__, f"{where}.__cause__")]
            children.append((obj.__context__, f"{where}.__context__"))
            children.append((getattr(obj, "__notes__", None), f"{where}.__notes__"))
            children.append((getattr(obj, "exceptions", None), f"{where}.exceptions"))
        if isinstance(obj, Mapping) or callable(getattr(obj, "items", None)):
            with contextlib.suppress(Exception):
                for key, value in list(obj.items()):  # type: ignore[attr-defined]
                    children += [(key, f"{where} key"), (value, f"{where}[{key!r}]")]
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            children += [(item, f"{where}[{i}]") for i, item in enumerate(obj)]
        for name, value in (getattr(obj, "__dict__", None) or {}).items():
            if name != "__traceback__":
                children.append((value, f"{where}.{name}"))
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if isinstance(name, str) and hasattr(obj, name):
                    children.append((getattr(obj, name), f"{where}.{name}"))
        stack.extend(children)
    return found


def assert_nothing_reachable(errors: list[BaseException], secrets: set[str]) -> None:
    assert all(len(s) >= 12 for s in secrets), "too short to search for reliably"
    leaks = [leak for error in errors for leak in leaks_of(error, secrets)]
    assert leaks == [], "\n".join(leaks[:20])


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


PROXY_PASSWORD = "Pr0xy-Secret-Heron-5521"


@contextlib.asynccontextmanager
async def refusing_proxy() -> AsyncIterator[int]:
    """A proxy that answers every CONNECT with 407."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def spans_of_a_traced_flow(sb: SkalaSandbox) -> list[str]:
    """The names and attributes of the spans of a traced create, wait, refresh and error."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with sandbox_client(sb, tracing=provider) as client:
        handle = await client.create_ticket(sb.customer_id, "traced", "d")
        await handle.wait_until_created(timeout=5)
        sb.expire_tokens()
        await client.get_ticket(handle.ticket_id)
        with pytest.raises(skala.TicketNotFoundError):
            await client.get_ticket(uuid.uuid4())
    provider.shutdown()
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"skala.token", "skala.create_ticket", "POST", "GET"}
    return [f"{s.name} {dict(s.attributes or {})} {s.status} {s.events}" for s in spans]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ============================================================================ secrets


async def test_no_secret_in_any_repr_log_or_error_of_a_whole_flow(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """One flow that raises every error class, refreshes a token, retries, fails, takes
    webhooks (one with a wrong signature, one whose callback raises) and runs a bulk job;
    then every repr, error and DEBUG log record is searched for every secret."""
    caplog.set_level(logging.DEBUG)
    raised: list[BaseException] = []
    shown: list[object] = []
    tokens: set[str] = set()
    calls: list[skala.SupportTicketEvent] = []

    async def on_event(event: skala.SupportTicketEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError(f"callback failed for {event.ticket_id}")

    async def expect(awaitable: Awaitable[Any], cls: type[SkalaError]) -> None:
        with pytest.raises(cls) as caught:
            await awaitable
        raised.append(caught.value)

    attachment = tmp_path / "receipt.pdf"
    attachment.write_bytes(b"%PDF-1.4 receipt")
    retry = RetryPolicy(attempts=3, initial=0.01, cap=0.02, max_retry_after=0.2)
    once = RetryPolicy(attempts=1, max_retry_after=0.2)
    fast = Timeouts(connect=2, read=0.6, upload_read=0.6)  # the slow faults below take 1 s
    sandbox = SkalaSandbox(client_secret=SECRET, processing_delay=0.02, webhook_secret=WH_SECRET)
    async with sandbox as sb:  # noqa: SIM117 - the clients need sb
        async with (
            sandbox_client(sb, retry=retry) as client,
            sandbox_client(sb, retry=once, timeouts=fast) as single,
        ):
            app = web.Application()
            receiver_handler = client.webhook_handler(WH_SECRET, on_event)
            app.router.add_post("/hook", receiver_handler)
            async with serve(app) as port, aiohttp.ClientSession() as http:
                sb.webhook_url = f"http://127.0.0.1:{port}/hook"
                # the happy path, with a token, an upload, a webhook and a wait
                handle = await client.create_ticket(
                    sb.customer_id, "Card top-up not credited", "Top-up missing.", [attachment]
                )
                tokens.add(await client._auth.token())
                ticket = await handle.wait_until_created(timeout=5)
                # retries, then a refreshed token
                sb.inject("get", Fault.http(429, retry_after=0.01))
                sb.inject("get", Fault.http(500))
                await client.get_ticket(handle.ticket_id)
                tokens |= set(sb._tokens)
                sb.expire_tokens()
                await client.get_ticket(handle.ticket_id)
                tokens.add(await client._auth.token())
                # every error class
                sb.inject("create", Fault.http(500))
                await expect(
                    client.create_ticket(sb.customer_id, "s", "d"), CreateOutcomeUnknownError
                )
                sb.inject("create", Fault.drop())
                await expect(
                    client.create_ticket(sb.customer_id, "s", "d"), CreateOutcomeUnknownError
                )
                sb.inject("create", Fault.delay(1.0))
                await expect(
                    single.create_ticket(sb.customer_id, "s", "d"), CreateOutcomeUnknownError
                )
                sb.inject("get", Fault.http(503), times=3)
                await expect(client.get_ticket(handle.ticket_id), skala.ServerError)
                sb.inject("get", Fault.http(429, retry_after=3600))
                await expect(single.get_ticket(handle.ticket_id), skala.RateLimitedError)
                await asyncio.sleep(0.25)  # the 429 paused the client: let the pause end
                sb.inject("get", Fault.http(409))
                await expect(single.get_ticket(handle.ticket_id), skala.ApiError)
                sb.inject(
                    "get", Fault.http(200, body="<html>oops</html>", content_type="text/html")
                )
                await expect(single.get_ticket(handle.ticket_id), skala.UnexpectedResponseError)
                sb.inject("get", Fault.delay(1.0))
                await expect(single.get_ticket(handle.ticket_id), skala.RequestTimeoutError)
                await expect(client.get_ticket(uuid.uuid4()), skala.TicketNotFoundError)
                no_email = sb.add_customer(email=None)
                await expect(client.create_ticket(no_email, "s", "d"), skala.BadRequestError)
                sb.support_tickets_enabled = False
                await expect(
                    client.get_ticket(handle.ticket_id), skala.SupportTicketsNotEnabledError
                )
                sb.support_tickets_enabled = True
                await expect(
                    client.create_ticket(sb.customer_id, "two\nlines", ""), skala.ValidationError
                )

                def stop(sent: int, total: int) -> None:
                    raise RuntimeError(f"upload stopped by the caller at {sent} of {total}")

                await expect(
                    client.create_ticket(sb.customer_id, "s", "d", [attachment], progress=stop),
                    skala.UploadAbortedError,
                )
                sb.processing_delay = None
                pending = await client.create_ticket(sb.customer_id, "stays pending", "d")
                await expect(pending.wait_until_created(timeout=0.1), skala.WaitTimeoutError)
                sb.processing_delay, sb.outcome = 0.01, "FAILED"
                failing = await client.create_ticket(sb.customer_id, "will fail", "d")
                await expect(failing.wait_until_created(timeout=5), skala.TicketFailedError)
                sb.outcome = "CREATED"
                async with skala.SkalaClient(
                    sb.client_id, WRONG_SECRET, base_url=sb.url, retry=once
                ) as wrong:
                    await expect(wrong.get_ticket(handle.ticket_id), skala.AuthenticationError)
                    shown.append(wrong)
                async with skala.SkalaClient(
                    sb.client_id, SECRET, base_url=f"http://127.0.0.1:{free_port()}", retry=once
                ) as nowhere:
                    await expect(nowhere.get_ticket(handle.ticket_id), TransportError)
                # a proxy with a password in its URL, one that refuses and one not there
                dead_proxy = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{free_port()}"
                async with sandbox_client(sb, retry=once, proxy=dead_proxy) as proxied:
                    await expect(proxied.get_ticket(handle.ticket_id), TransportError)
                    shown.append(proxied)
                async with (
                    refusing_proxy() as proxy_port,
                    sandbox_client(
                        sb,
                        retry=once,
                        proxy=f"http://user:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}",
                    ) as proxied,
                ):
                    # plain http:// to the API: the proxy's own 407 is the answer
                    await expect(proxied.get_ticket(handle.ticket_id), skala.ApiError)
                # traced calls: every span attribute is searched too
                traced = await spans_of_a_traced_flow(sb)
                # webhooks: a wrong signature, and the callback failure above, both logged
                body = json.dumps({"eventType": "SUPPORT_TICKET.CREATED"}).encode()
                bad = {"Http-X-Wh-Signature-256": sign_payload(body, "whsec-not-the-one-123")}
                async with http.post(sb.webhook_url, data=body, headers=bad) as resp:
                    assert resp.status == 401
                await expect(_call(verify_signature, body, bad, WH_SECRET), InvalidSignatureError)
                await expect(_call(parse_event, b"{}"), InvalidWebhookError)
                long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
                await expect(_call(check_freshness, long_ago, 300), StaleWebhookError)
                # bulk, with an uncertain input
                sb.inject("create", Fault.http(502))
                report = await client.create_many(
                    [skala.TicketDraft(sb.customer_id, f"bulk {i}", "d") for i in range(3)],
                    concurrency=1,
                )
                # bulk journals: in use, not a journal, deleted during the run
                one = [skala.TicketDraft(sb.customer_id, "journaled", "d", reference="j")]
                held = tmp_path / "held.sqlite"
                holder = Journal(held)
                await expect(client.create_many(one, journal=held), skala.JournalInUseError)
                holder.close()
                garbage = tmp_path / "garbage.sqlite"
                garbage.write_bytes(b"not a database at all " * 300)
                await expect(client.create_many(one, journal=garbage), skala.JournalError)
                lost = tmp_path / "lost.sqlite"

                def deleting() -> Iterator[skala.TicketDraft]:
                    yield from one
                    lost.unlink()
                    yield skala.TicketDraft(sb.customer_id, "after", "d", reference="k")

                await expect(
                    client.create_many(deleting(), journal=lost, concurrency=1),
                    skala.JournalLostError,
                )
                sb.complete(str(pending.ticket_id))
                await sb.wait_until_processed(5)
                await sb.wait_for_webhooks(5)
                tokens |= set(sb._tokens)
                shown += [client, single, handle, pending, failing, ticket, client._auth]
                shown += [receiver_handler.__self__, report, *report.results]
                shown += [r.as_row() for r in report.results]
                shown += [sb, *sb.requests, *sb.webhook_deliveries, *sb.tickets.values()]
    assert any(d.result == 500 for d in sb.webhook_deliveries)  # the callback did fail once
    kinds = {type(e) for e in raised} | {type(e.__cause__) for e in raised if e.__cause__}
    every = {getattr(errors_module, name) for name in errors_module.__all__}
    every |= {InvalidSignatureError, InvalidWebhookError, StaleWebhookError}
    assert every - {SkalaError} <= kinds, every - kinds

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logs = [formatter.format(r) for r in caplog.records]
    assert any("retry" in line for line in logs)  # DEBUG logging really was on
    assert any("refreshing" in line or "rejected" in line for line in logs)
    texts = texts_of(shown) + logs + [t for e in raised for t in texts_of_error(e)] + traced
    secrets = {SECRET, WRONG_SECRET, WH_SECRET, basic(sb.client_id, SECRET), PROXY_PASSWORD}
    secrets |= {basic(sb.client_id, WRONG_SECRET), *tokens}
    assert len(tokens) >= 2
    assert_absent(secrets, texts)
    assert_nothing_reachable(raised, secrets)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def test_cli_output_with_v_never_shows_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    png = tmp_path / "screen.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    event = tmp_path / "event.json"
    event.write_bytes(b'{"eventType":"SUPPORT_TICKET.CREATED"}')
    output: list[str] = []
    tokens: set[str] = set()
    with threaded_sandbox(client_secret=SECRET, processing_delay=0.02) as sb:
        flags = ["--base-url", sb.url, "--client-id", sb.client_id]
        create = ["create", "--customer-id", sb.customer_id, "--summary", "s", "--description", "d"]

        def run(*argv: str) -> int:
            code = main(list(argv))
            out, err = capsys.readouterr()
            output.extend([out, err])
            tokens.update(list(sb._tokens))
            return code

        assert (
            run("-v", *create, *flags, "--client-secret", SECRET, "--file", str(png), "--wait") == 0
        )
        ticket_id = sb.requests_to("create")[-1].ticket_id
        assert ticket_id is not None
        monkeypatch.setenv("SKALA_CLIENT_SECRET", SECRET)  # the recommended way
        sb.inject("get", Fault.http(500))
        assert run("-v", "--json", "get", *flags, ticket_id) == 0
        assert run("-v", "wait", *flags, ticket_id) == 0
        sb.inject("create", Fault.http(504))
        assert run("-v", *create, *flags) != 0  # outcome unknown
        token = next(iter(sb._tokens))
        assert run("-v", "get", "--base-url", sb.url, "--token", token, ticket_id) == 0
        sb.expire_tokens()
        assert run("-v", "--json", "get", "--base-url", sb.url, "--token", token, ticket_id) != 0
        monkeypatch.delenv("SKALA_CLIENT_SECRET")
        assert run("-v", "get", *flags, "--client-secret", WRONG_SECRET, ticket_id) != 0
        assert run("-v", "get", "--base-url", "http://example.com", "--client-id", "x",
                   "--client-secret", SECRET, ticket_id) != 0  # fmt: skip
        assert run("-v", "webhooks", "sign", str(event), "--secret", WH_SECRET) == 0
        monkeypatch.setenv("SKALA_WEBHOOK_SECRET", WH_SECRET)
        assert run("-v", "--json", "webhooks", "sign", str(event)) == 0
    assert any("DEBUG" in text for text in output)  # -v did log
    assert any("sha256=" in text for text in output)  # sign printed the signature
    secrets = {SECRET, WRONG_SECRET, WH_SECRET, basic(sb.client_id, SECRET), *tokens}
    assert_absent(secrets, output)


# ============================================================================ error chains

HOSTILE_TOKEN = "hostile-test-token-1"  # what hostile_server hands out


async def content_length_abc(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}"
    )
    await writer.drain()


async def bad_status_line(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    writer.write(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()


async def bad_chunk(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    await writer.drain()


async def two_lengths(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    await writer.drain()


async def short_body(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")
    await writer.drain()


async def reset(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:  # an RST, not a FIN: SO_LINGER with a zero timeout
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    transport.abort()


async def silence(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    await asyncio.sleep(5)


MALFORMED = [content_length_abc, bad_status_line, bad_chunk, two_lengths, short_body, reset]


@pytest.mark.parametrize("endpoint", ["token", "get", "create"])
@pytest.mark.parametrize("respond", [*MALFORMED, silence], ids=lambda f: f.__name__)
async def test_no_secret_is_reachable_from_a_failed_exchange(
    endpoint: str, respond: Callable[..., Awaitable[None]]
) -> None:
    """A malformed answer, a reset or a timeout to the token request, a GET and a create:
    nothing reachable from the error (attributes, causes, context, notes, recursively)
    holds a secret or an aiohttp object, and the underlying error's class and message
    are kept. aiohttp's own exceptions carry the request's headers (``request_info``):
    ``Authorization: Basic <id:secret>`` or ``Bearer <token>``."""
    timeouts = Timeouts(connect=2, read=0.3, upload_read=0.3)
    async with hostile_server(respond) as (url, state):
        state["token_ok"] = endpoint != "token"
        async with skala.SkalaClient(
            "id", SECRET, base_url=url, retry=RetryPolicy(attempts=1), timeouts=timeouts
        ) as client:
            if endpoint == "create":
                call: Awaitable[Any] = client.create_ticket(str(uuid.uuid4()), "s", "d")
            else:
                call = client.get_ticket(uuid.uuid4())
            with pytest.raises(SkalaError) as caught:
                await asyncio.wait_for(call, 10)
    secrets = {SECRET, basic("id", SECRET), HOSTILE_TOKEN}
    assert_nothing_reachable([caught.value], secrets)
    assert_absent(secrets, texts_of_error(caught.value))
    error = caught.value
    if endpoint == "create":
        assert isinstance(error, CreateOutcomeUnknownError)  # it was sent: it may exist
        error = error.cause
    assert isinstance(error, TransportError), repr(error)
    assert error.path.endswith("/token/") is (endpoint == "token")
    assert error.__context__ is None
    # What aiohttp said survives as text: its class and message, scrubbed.
    cause = error.__cause__
    assert isinstance(cause, skala.UnderlyingError)
    if respond is silence:
        assert isinstance(error, skala.RequestTimeoutError)
    else:
        assert cause.type_name.startswith("aiohttp."), cause.type_name
    assert cause.type_name in str(cause)
    assert cause.type_name.rsplit(".", 1)[-1] in "".join(traceback.format_exception(caught.value))


def test_underlying_error_keeps_groups_and_notes_scrubbed() -> None:
    """Exception groups and notes are walked too (Python 3.11+)."""
    if not hasattr(BaseException, "add_note"):  # pragma: no cover - Python 3.10
        pytest.skip("no exception groups or notes before Python 3.11")
    from skala_async._transport import _secrets_of, underlying

    token = "group-token-Wombat-77"
    inner = ValueError(f"header Authorization: Bearer {token}")
    inner.add_note(f"while sending Bearer {token}")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError(f"cannot print {token}")

    members = [inner, OSError(f"reset ({token})"), Unprintable()]
    group = ExceptionGroup("two failures", members)  # noqa: F821
    try:
        raise RuntimeError(f"outer with {token}") from group
    except RuntimeError as exc:
        outer = exc
    summary = underlying(outer, _secrets_of({"Authorization": f"Bearer {token}"}))
    assert summary.type_name == "RuntimeError"
    assert summary.__cause__ is not None
    assert summary.__cause__.type_name.endswith("ExceptionGroup")
    assert "ValueError" in str(summary.__cause__)
    assert "OSError" in str(summary.__cause__)
    assert "Unprintable" in str(summary.__cause__)  # its class, when it has no message
    assert token not in "".join(traceback.format_exception(summary))
    assert_nothing_reachable([summary], {token})
    assert leaks_of(outer, {token})  # the walk does see what the original held


# ============================================================================ TLS and http://


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for ``localhost`` only, made at test time with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(
            "no openssl command to make a self-signed certificate (and neither "
            "cryptography nor trustme is installed); TLS verification not exercised"
        )
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(  # noqa: S603 - a fixed command line, the tool found on PATH
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_tls_is_verified_and_cannot_be_skipped_by_accident(
    self_signed: tuple[Path, Path],
) -> None:
    cert, key = self_signed
    hits: list[str] = []
    tid = str(uuid.uuid4())

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ticketId": tid, "status": "PENDING", "issueKey": None})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with serve(app, server_ctx) as port:
        # The client's own session: an untrusted certificate is refused before anything is
        # sent (so a create would be retried safely), by IP and by name.
        for host in ("127.0.0.1", "localhost"):
            async with skala.SkalaClient(
                token="tls-test-token-123456", base_url=f"https://{host}:{port}"
            ) as client:
                with pytest.raises(TransportError) as caught:
                    await client.get_ticket(tid)
                # Another attempt cannot fix a certificate: not retried.
                assert client.request_counts["get"] == 1
            assert caught.value.retryable is False
            assert caught.value.request_sent is False
            cause = caught.value.__cause__
            assert isinstance(cause, skala.UnderlyingError)
            assert "Certificate" in cause.type_name or "SSL" in cause.type_name
            assert "certificate" in str(caught.value).lower()
        assert hits == []
        # Control: trusting that certificate (the caller's session) works, so the refusal
        # above was verification; the host name is still checked.
        trusting = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as s:
            async with skala.SkalaClient(
                token="tls-test-token-123456", base_url=f"https://localhost:{port}", session=s
            ) as client:
                assert (await client.get_ticket(tid)).ticket_id == uuid.UUID(tid)
            async with skala.SkalaClient(
                token="tls-test-token-123456",
                base_url=f"https://127.0.0.1:{port}",
                session=s,
                retry=RetryPolicy(attempts=1),
            ) as client:
                with pytest.raises(TransportError, match=r"(?i)certificate|hostname|match"):
                    await client.get_ticket(tid)
        assert len(hits) == 1


def test_no_switch_turns_tls_verification_off() -> None:
    """No parameter, and no line of the package, disables certificate checks."""
    for cls in (skala.SkalaClient, skala.Timeouts):
        # ssl= takes a context that must verify (checked below)
        names = set(inspect.signature(cls).parameters) - {"ssl"}
        assert not {n for n in names if re.search(r"ssl|verify|cert|tls", n)}, names
    lax = ssl.create_default_context()
    lax.check_hostname = False
    with pytest.raises(ValueError, match="must verify"):
        skala.SkalaClient(token="t", ssl=lax)
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="must verify"):
        skala.SkalaClient(token="t", ssl=lax)
    with pytest.raises(TypeError):
        skala.SkalaClient(token="t", ssl=False)  # type: ignore[arg-type]
    forbidden = re.compile(
        r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False|"
        r"_create_unverified_context|ssl\.SSLContext\("
    )
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not forbidden.search(text), f"{path}: {forbidden.search(text)}"


REFUSED = [
    "http://example.com",
    "HTTP://SKALA.RIPIO.COM",
    "http://10.0.0.1:8000",
    "http://192.168.1.10",
    "http://0.0.0.0:8000",
    "http://127.0.0.1.nip.io",
    "http://localhost.evil.example",
    "http://127.0.0.1@evil.example",
    "http://user:pw@127.0.0.1",
    "https://user:pw@skala.ripio.com",
    "ftp://127.0.0.1",
    "ws://127.0.0.1:8000",
    "file:///etc/passwd",
    "127.0.0.1:8000",
    "https://",
]
ALLOWED = [
    "http://127.0.0.1:8000",
    "http://127.0.0.2",
    "http://localhost:8000",
    "http://LOCALHOST",
    "http://[::1]:8000",
    "https://example.com",
    skala.SANDBOX_URL,
    skala.PRODUCTION_URL,
]


@pytest.mark.parametrize("url", REFUSED)
def test_plain_http_and_odd_urls_are_refused_off_loopback(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"http|URL|credentials|query") as caught:
        skala.SkalaClient("id", SECRET, base_url=url)
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("SKALA_CLIENT_ID", "id")
    monkeypatch.setenv("SKALA_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("SKALA_BASE_URL", url)
    with pytest.raises(ValueError, match=r"http|URL|credentials|query"):
        skala.SkalaClient.from_env()


@pytest.mark.parametrize("url", ALLOWED)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    client = skala.SkalaClient("id", SECRET, base_url=url)
    assert client.base_url == url.rstrip("/")
    assert SECRET not in repr(client)


def test_http_off_loopback_only_with_an_explicit_opt_in() -> None:
    client = skala.SkalaClient(
        "id", SECRET, base_url="http://example.com", allow_insecure_http=True
    )
    assert client.base_url == "http://example.com"


# ============================================================================ filenames

PRIVATE = "alice-private-7f3a"
NESTED = "nested-dir-9c1e"
WORKDIR = "workdir-3b8d"


@contextlib.asynccontextmanager
async def capture_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that keeps every raw request and answers 202 with a ticket."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(match.group(1))) if match else b""
        received.append(head + body)
        answer = json.dumps({"ticketId": str(uuid.uuid4()), "status": "PENDING"}).encode()
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.close()
        await server.wait_closed()


def parts_of(raw: bytes) -> list[email.message.Message]:
    """The parts of a raw multipart request, their headers parsed by the email package
    (an RFC 2045/2231 parser independent of aiohttp's)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    boundary = re.search(rb'boundary="?([^";\r\n]+)"?', head)
    assert boundary is not None
    parts = []
    for chunk in body.split(b"--" + boundary.group(1))[1:-1]:
        headers = chunk.strip(b"\r\n").partition(b"\r\n\r\n")[0].decode("utf-8")
        msg = email.message.Message()
        for line in headers.split("\r\n"):
            name, _, value = line.partition(":")
            msg[name] = value.strip()
        parts.append(msg)
    return parts


async def test_only_the_basename_leaves_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / PRIVATE / NESTED
    workdir = private / WORKDIR
    workdir.mkdir(parents=True)
    for name in ("receipt.pdf", "clip.mp4", "screen.png", "statement.PDF"):
        (private / name).write_bytes(b"content of " + name.encode())
    monkeypatch.chdir(workdir)
    with (private / "statement.PDF").open("rb") as opened:
        batches: list[tuple[list[Any], list[str]]] = [
            (
                [
                    str(private / "receipt.pdf"),  # absolute, as a string
                    private / "clip.mp4",  # absolute Path
                    "../screen.png",  # relative, with ..
                    opened,  # an open file: its name is a path too
                    skala.Attachment.from_path(
                        private / "receipt.pdf", filename="by/caller/inv.pdf"
                    ),
                ],
                ["receipt.pdf", "clip.mp4", "screen.png", "statement.PDF", "inv.pdf"],
            ),
            (
                [
                    skala.Attachment.from_bytes(b"1", filename="/home/alice/private/scan.jpg"),
                    skala.Attachment.from_bytes(
                        b"2", filename="C:\\Users\\alice\\Documents\\p.jpeg"
                    ),
                    skala.Attachment.from_bytes(b"3", filename="..\\..\\windows\\x.webp"),
                    skala.Attachment.from_bytes(b"4", filename="\\\\server\\share\\y.avi"),
                    skala.Attachment.from_bytes(b"5", filename="../../etc/z.mov"),
                ],
                ["scan.jpg", "p.jpeg", "x.webp", "y.avi", "z.mov"],
            ),
        ]
        directories = [PRIVATE, NESTED, WORKDIR, "alice", "Users", "Documents", "windows"]
        directories += ["server", "share", "caller", str(tmp_path)]
        async with capture_server() as (url, received):  # noqa: SIM117 - the client needs url
            async with skala.SkalaClient(token="capture-token-123456", base_url=url) as client:
                for files, _ in batches:
                    await client.create_ticket(str(uuid.uuid4()), "s", "d", files=files)
        for raw, (_, names) in zip(received, batches, strict=True):
            sent = [
                p.get_filename()
                for p in parts_of(raw)
                if p.get_param("name", header="content-disposition") == "files"
            ]
            assert sent == names
            for directory in directories:
                assert directory.encode() not in raw, directory
        # And as the sandbox records it.
        opened.seek(0)
        async with SkalaSandbox() as sb, sandbox_client(sb) as client:
            for files, names in batches:
                await client.create_ticket(sb.customer_id, "s", "d", files=files)
                record = sb.requests_to("create")[-1]
                assert [f.filename for f in record.files] == names
                for directory in directories:
                    assert directory not in repr(record)


@pytest.mark.parametrize(
    ("filename", "sent"),
    [
        ('a"; name="customerId.png', 'a"; name="customerId.png'),
        ("evil\r\nX-Injected: yes\r\n.png", "evilX-Injected: yes.png"),
        (
            'x"\r\nContent-Type: text-html\r\n\r\n<s>.pdf',
            'x"Content-Type: text-html<s>.pdf',
        ),
        ("tab\tand\x00nul.jpg", "tabandnul.jpg"),
        ("résumé ✓.pdf", "résumé ✓.pdf"),
        ("back\\slash.png", "slash.png"),
    ],
)
async def test_a_filename_cannot_add_a_field_or_a_header(filename: str, sent: str) -> None:
    async with capture_server() as (url, received):  # noqa: SIM117 - the client needs url
        async with skala.SkalaClient(token="capture-token-123456", base_url=url) as client:
            attachment = skala.Attachment.from_bytes(b"x", filename=filename)
            await client.create_ticket(str(uuid.uuid4()), "s", "d", files=[attachment])
    [raw] = received
    parts = parts_of(raw)
    names = [p.get_param("name", header="content-disposition") for p in parts]
    assert names == ["customerId", "summary", "description", "files"]
    assert parts[-1].get_filename() == sent
    assert b"\r\nX-Injected" not in raw
    assert b"\r\nContent-Type: text-html" not in raw


# ============================================================================ response cap


@contextlib.asynccontextmanager
async def hostile_server(
    respond: Callable[[asyncio.StreamWriter, dict[str, Any]], Awaitable[None]],
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Answers the token endpoint properly and every other request with ``respond``."""
    state: dict[str, Any] = {"sent": 0, "finished": False}
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if match:
                await reader.readexactly(int(match.group(1)))
            if state.get("token_ok") and head.startswith(b"POST /oauth2/token/"):
                body = b'{"accessToken": "hostile-test-token-1", "expiresIn": 3600}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
            await respond(writer, state)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.close()
        for task in handlers:  # a hostile answer still being sent: stop it
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def endless(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    """A chunked JSON body that never ends (64 MiB, 64 KiB at a time, then it would)."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    for _ in range(1024):
        writer.write(frame)
        await writer.drain()
        state["sent"] += len(chunk)
        await asyncio.sleep(0.002)
    state["finished"] = True


async def huge_length(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    """A declared 2 GiB body, trickling."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n"
    )
    for _ in range(200):
        writer.write(b" " * 1024)
        await writer.drain()
        state["sent"] += 1024
        await asyncio.sleep(0.01)
    state["finished"] = True


BOMB = zlib.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", 9)


async def bomb(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    """64 MiB of JSON deflated to 64 KiB, with an honest Content-Length (of the 64 KiB)."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: deflate\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BOMB), BOMB)
    )
    await writer.drain()
    state["sent"] += len(BOMB)
    state["finished"] = True


@pytest.mark.parametrize("endpoint", ["get", "create", "token"])
@pytest.mark.parametrize("respond", [endless, huge_length, bomb], ids=lambda f: f.__name__)
async def test_a_hostile_body_is_cut_at_the_cap(
    endpoint: str, respond: Callable[..., Awaitable[None]]
) -> None:
    async with hostile_server(respond) as (url, state):
        state["token_ok"] = endpoint != "token"
        async with skala.SkalaClient(
            "id", SECRET, base_url=url, retry=RetryPolicy(attempts=1)
        ) as client:
            if endpoint == "create":
                call = client.create_ticket(str(uuid.uuid4()), "s", "d")
            else:
                call = client.get_ticket(uuid.uuid4())
            tracemalloc.start()
            try:
                with pytest.raises(SkalaError) as caught:
                    await asyncio.wait_for(call, 10)
                _, peak = tracemalloc.get_traced_memory()
                at_return = dict(state)  # what the server had sent when the call ended
            finally:
                tracemalloc.stop()
    error = caught.value
    if endpoint == "create":
        assert isinstance(error, CreateOutcomeUnknownError)  # a 200 that cannot be read
        error = error.cause
    # aiohttp 3.13 inflated a compressed chunk whole, up to its own 32 MiB limit (64 MiB
    # peak here), before the cap could act: hence aiohttp>=3.14.2 in pyproject.toml.
    assert isinstance(error, UnexpectedResponseError), error
    assert "larger than 1048576 bytes" in str(error)
    assert SECRET not in str(error)
    # cut: the client stopped reading before the server had written its whole answer
    assert not at_return["finished"] or respond is bomb
    assert at_return["sent"] < 24 * 1024 * 1024  # kernel buffers at most, not the stream
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while reading a hostile body"


async def trickle(writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
    """A slow-loris answer: headers, then one byte every 50 ms, under the cap, for 30 s."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 600\r\n\r\n"
    )
    for _ in range(600):
        writer.write(b" ")
        await writer.drain()
        state["sent"] += 1
        await asyncio.sleep(0.05)
    state["finished"] = True


@pytest.mark.parametrize("endpoint", ["get", "create", "token"])
async def test_a_trickling_answer_ends_at_the_timeout(endpoint: str) -> None:
    """Bytes that keep arriving do not keep a call alive: the whole exchange is bounded."""
    loop = asyncio.get_running_loop()
    timeouts = Timeouts(connect=0.5, read=0.5, upload_read=0.5)
    async with hostile_server(trickle) as (url, state):
        state["token_ok"] = endpoint != "token"
        async with skala.SkalaClient(
            "id", SECRET, base_url=url, retry=RetryPolicy(attempts=1), timeouts=timeouts
        ) as client:
            if endpoint == "create":
                call = client.create_ticket(str(uuid.uuid4()), "s", "d")
            else:
                call = client.get_ticket(uuid.uuid4())
            started = loop.time()
            with pytest.raises(SkalaError) as caught:
                await asyncio.wait_for(call, 10)
            elapsed = loop.time() - started
            finished = state["finished"]
    error = caught.value
    if endpoint == "create":
        assert isinstance(error, CreateOutcomeUnknownError)  # it was sent: may exist
        error = error.cause
    assert isinstance(error, skala.RequestTimeoutError), error
    assert elapsed < 2.5, elapsed  # connect + upload_read for a create, read otherwise
    assert not finished


# ============================================================================ webhook limit


class AsgiBody:
    """An ASGI ``receive`` that streams a body forever, counting what was asked of it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b" " * 8192, "more_body": True}


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_asgi_webhook_over_the_limit_is_refused_before_it_is_read(declared: bool) -> None:
    """The aiohttp handler's cells are in the fault matrix; the ASGI app is checked here."""
    called: list[object] = []
    receiver = WebhookReceiver(WH_SECRET, called.append, max_body_bytes=64 * 1024)
    body = AsgiBody()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    if declared:
        headers.append((b"content-length", b"1073741824"))
    scope = {"type": "http", "method": "POST", "path": "/hook", "headers": headers}
    await asyncio.wait_for(receiver.asgi(scope, body, send), 2)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert body.calls == (0 if declared else 9)  # 9 x 8 KiB passes 64 KiB: no more asked
    assert called == []
    assert receiver.counts["too_large"] == 1
