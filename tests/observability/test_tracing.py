"""OpenTelemetry spans (the ``[otel]`` extra) and aiohttp ``trace_configs``, over HTTP.

Spans go to the SDK's in-memory exporter; what the sandbox received (the ``traceparent``
header) is checked against them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from skala_async import (
    CreateOutcomeUnknownError,
    SkalaClient,
    SkalaError,
    TicketStatus,
    Timeouts,
    ValidationError,
    WaitTimeoutError,
)
from skala_async.testing import FAST_POLL, Fault, SkalaSandbox, sandbox_client

SECRET = "whsec-tracing-test"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    yield exp
    exp.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def traceparent_of(span: ReadableSpan) -> str:
    """``version-trace id-span id`` of the W3C header (the flags byte left out)."""
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"


async def test_create_get_and_token_spans_with_http_attributes_and_propagation(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_file: Any
) -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, tracing=provider) as client:
        files = [make_file("a.pdf", 1000), make_file("b.png", 234)]
        sandbox.inject("create", Fault.http(429, retry_after=0.01))
        handle = await client.create_ticket(sandbox.customer_id, "s", "d", files)
        await client.get_ticket(handle.ticket_id)
        received = {r.request_id: r for r in sandbox.requests}
    spans = exporter.get_finished_spans()
    (create,) = named(spans, "skala.create_ticket")
    assert create.attributes is not None
    assert create.attributes["skala.attachments.count"] == 2
    assert create.attributes["skala.attachments.bytes"] == 1234
    assert create.attributes["skala.outcome"] == "accepted"
    assert create.attributes["skala.ticket_id"] == str(handle.ticket_id)
    # the token request runs inside the first call that needed it
    (token,) = named(spans, "skala.token")
    assert token.parent is not None
    assert token.parent.span_id == create.context.span_id
    attempts = [s for s in children(spans, create) if s.name == "POST"]
    assert len(attempts) == 2  # the 429 and the 202
    assert [a.attributes["http.response.status_code"] for a in attempts] == [429, 202]
    first, second = attempts
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "429"
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    port = int(sandbox.url.rsplit(":", 1)[1])
    for attempt in attempts:
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.attributes["http.request.method"] == "POST"
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == port
        assert attempt.attributes["url.full"] == sandbox.url + "/api/v1/supportTickets/"
        assert attempt.attributes["url.template"] == "/api/v1/supportTickets/"
        # the request the server got carried this attempt's context
        rid = attempt.attributes["skala.request_id"]
        sent = received[rid].header("traceparent")
        assert sent is not None
        assert sent.rsplit("-", 1)[0] == traceparent_of(attempt)
    (get,) = named(spans, "skala.get_ticket")
    assert get.attributes["skala.ticket_id"] == str(handle.ticket_id)
    assert get.attributes["skala.ticket.status"] in ("PENDING", "CREATED")
    (get_attempt,) = children(spans, get)
    assert get_attempt.name == "GET"
    assert get_attempt.attributes["url.template"] == "/api/v1/supportTickets/{ticketId}/"
    assert get_attempt.attributes["http.response.status_code"] == 200
    # no span holds a secret
    for span in spans:
        text = json.dumps(dict(span.attributes or {}))
        assert sandbox.client_secret not in text
        assert "Bearer" not in text
        assert "Basic" not in text


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault.http(500), "uncertain"),
        (Fault.http(400), "rejected"),
        # refused before any work, retries ran out: surely not created
        (Fault.http(503, retry_after=0.01), "failed"),
    ],
)
async def test_create_span_outcome(
    fault: Fault, outcome: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, tracing=provider) as client:
        sandbox.inject("create", fault, times=10)
        with pytest.raises(SkalaError) as info:
            await client.create_ticket(sandbox.customer_id, "s", "d")
    (span,) = named(exporter.get_finished_spans(), "skala.create_ticket")
    assert span.attributes["skala.outcome"] == outcome, info.value
    assert span.status.status_code is StatusCode.ERROR
    if outcome == "uncertain":
        assert isinstance(info.value, CreateOutcomeUnknownError)


async def test_invalid_input_has_a_span_and_sends_nothing(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, tracing=provider) as client:
        with pytest.raises(ValidationError):
            await client.create_ticket("nope", "", "")
        assert sandbox.requests == []
    (span,) = exporter.get_finished_spans()
    assert span.name == "skala.create_ticket"
    assert span.attributes["skala.outcome"] == "invalid"
    assert span.attributes["error.type"] == "ValidationError"


async def test_wait_span_counts_gets_and_says_how_it_ended(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with (
        SkalaSandbox(processing_delay=0.05) as sandbox,
        sandbox_client(sandbox, tracing=provider) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        ticket = await handle.wait_until_created(timeout=30)
        gets = sandbox.count("get")
        # a wait that times out
        sandbox.processing_delay = None
        pending = await client.create_ticket(sandbox.customer_id, "s", "d")
        with pytest.raises(WaitTimeoutError):
            await pending.wait_until_created(timeout=0.05)
    assert ticket.status is TicketStatus.CREATED
    spans = exporter.get_finished_spans()
    done, timed_out = named(spans, "skala.wait")
    assert done.attributes["skala.outcome"] == "poll"
    assert done.attributes["skala.wait.gets"] == gets >= 1
    assert done.attributes["skala.ticket.status"] == "CREATED"
    assert len([s for s in children(spans, done) if s.name == "skala.get_ticket"]) == gets
    assert timed_out.attributes["skala.outcome"] == "timeout"
    assert timed_out.status.status_code is StatusCode.ERROR


async def webhook_app(client: SkalaClient) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", client.webhook_handler(SECRET))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def test_webhook_span_and_a_wait_ended_by_webhook(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with (
        SkalaSandbox(processing_delay=0.05) as sandbox,
        sandbox_client(sandbox, tracing=provider) as client,
    ):
        runner, url = await webhook_app(client)
        try:
            sandbox.webhook_url = url
            sandbox.webhook_secret = SECRET
            handle = await client.create_ticket(sandbox.customer_id, "s", "d")
            await handle.wait_until_created(timeout=30)
            # a forged delivery
            async with aiohttp.ClientSession() as session:
                body = b'{"event": "SUPPORT_TICKET"}'
                forged = hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
                async with session.post(
                    url, data=body, headers={"X-Wh-Signature-256": f"sha256={forged}"}
                ) as resp:
                    assert resp.status == 401
        finally:
            await runner.cleanup()
    spans = exporter.get_finished_spans()
    hooks = named(spans, "skala.webhook")
    verified = [s for s in hooks if s.attributes["skala.webhook.verified"]]
    refused = [s for s in hooks if not s.attributes["skala.webhook.verified"]]
    assert [s.attributes["skala.outcome"] for s in verified] == ["accepted"]
    assert [s.attributes["skala.outcome"] for s in refused] == ["invalid_signature"]
    assert refused[0].attributes["http.response.status_code"] == 401
    (wait,) = named(spans, "skala.wait")
    assert wait.attributes["skala.outcome"] == "webhook"
    assert wait.attributes["skala.wait.gets"] == 0


async def test_bulk_span_with_a_child_per_input(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from skala_async import TicketDraft

    async with (
        SkalaSandbox(processing_delay=0.02) as sandbox,
        sandbox_client(sandbox, tracing=provider) as client,
    ):
        drafts = [
            TicketDraft(sandbox.customer_id, "one", "d", reference="r1"),
            TicketDraft("not-a-uuid", "two", "d", reference="r2"),
            TicketDraft(sandbox.customer_id, "three", "d", reference="r3"),
        ]
        report = await client.create_many(drafts, wait=True, wait_timeout=30)
    assert report.counts["created"] == 2
    spans = exporter.get_finished_spans()
    (bulk,) = named(spans, "skala.bulk")
    assert bulk.attributes["skala.bulk.inputs"] == 3
    inputs = children(spans, bulk)
    assert sorted(s.attributes["skala.bulk.index"] for s in inputs) == [0, 1, 2]
    by_ref = {s.attributes.get("skala.bulk.reference"): s for s in inputs}
    assert by_ref["r1"].attributes["skala.outcome"] == "created"
    assert by_ref["r2"].attributes["skala.outcome"] == "rejected"
    for ref in ("r1", "r3"):
        kids = {s.name for s in children(spans, by_ref[ref])}
        assert {"skala.create_ticket", "skala.wait"} <= kids, kids
        # the input's span ends after its wait
        (wait,) = [s for s in children(spans, by_ref[ref]) if s.name == "skala.wait"]
        assert by_ref[ref].end_time >= wait.end_time


async def test_trace_configs_reach_aiohttp() -> None:
    seen: list[tuple[str, str]] = []

    async def on_start(
        session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        seen.append((params.method, params.url.path))

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, trace_configs=[config]) as client:
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        await client.get_ticket(handle.ticket_id)
    assert seen == [
        ("POST", "/oauth2/token/"),
        ("POST", "/api/v1/supportTickets/"),
        ("GET", f"/api/v1/supportTickets/{handle.ticket_id}/"),
    ]


async def test_trace_configs_or_ssl_with_a_caller_session_is_refused() -> None:
    import ssl

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match=r"your aiohttp\.ClientSession"):
            SkalaClient(token="t", session=session, trace_configs=[aiohttp.TraceConfig()])
        with pytest.raises(ValueError, match=r"your aiohttp\.ClientSession"):
            SkalaClient(token="t", session=session, ssl=ssl.create_default_context())


@pytest.mark.parametrize("value", [object(), "yes", 1])
def test_tracing_takes_true_or_a_provider(value: object) -> None:
    with pytest.raises(TypeError, match="TracerProvider"):
        SkalaClient(token="t", tracing=value)


def test_without_tracing_nothing_of_opentelemetry_is_imported() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        import skala_async
        from skala_async.testing import SkalaSandbox, sandbox_client

        async def main():
            async with SkalaSandbox(processing_delay=0.01) as sandbox:
                async with sandbox_client(sandbox) as client:
                    handle = await client.create_ticket(sandbox.customer_id, "s", "d")
                    await handle.wait_until_created(timeout=30)
                    await client.create_many([])

        asyncio.run(main())
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_tracing_without_the_extra_is_a_clear_error() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import skala_async
        try:
            skala_async.SkalaClient(token="t", tracing=True)
        except RuntimeError as exc:
            print(exc)
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'skala-async[otel]'" in done.stdout


async def test_tracing_true_uses_the_global_provider(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from opentelemetry import trace

    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: provider.get_tracer(*a, **k))
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, tracing=True) as client:
        await client.get_ticket(
            (await client.create_ticket(sandbox.customer_id, "s", "d")).ticket_id
        )
    assert {s.name for s in exporter.get_finished_spans()} >= {
        "skala.create_ticket",
        "skala.get_ticket",
        "skala.token",
    }


async def test_a_cancelled_wait_ends_its_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with (
        SkalaSandbox(processing_delay=None) as sandbox,
        sandbox_client(sandbox, tracing=provider, poll=FAST_POLL) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        task = asyncio.ensure_future(handle.wait_until_created(timeout=30))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (wait,) = named(exporter.get_finished_spans(), "skala.wait")
    assert wait.attributes["skala.outcome"] == "cancelled"


async def test_an_attempt_without_an_answer_names_the_failure(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with SkalaSandbox() as sandbox, sandbox_client(sandbox, tracing=provider) as client:
        handle = await client.create_ticket(sandbox.customer_id, "s", "d")
        sandbox.inject("get", Fault.delay(2))
        short = client.with_options(timeout=Timeouts(read=0.2))
        await short.get_ticket(handle.ticket_id)  # timed out once, then answered
    spans = exporter.get_finished_spans()
    (get,) = named(spans, "skala.get_ticket")
    failed, answered = children(spans, get)
    assert failed.attributes["error.type"] == "RequestTimeoutError"
    assert failed.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in failed.attributes
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.attributes["http.request.resend_count"] == 1
    assert get.status.status_code is not StatusCode.ERROR
