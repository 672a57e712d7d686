"""The client against the sandbox over real HTTP on 127.0.0.1: what went over the wire."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

import skala_async as skala
from skala_async.testing import FAST_RETRY, Fault, SkalaSandbox, sandbox_client


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def create(client: skala.SkalaClient, sb: SkalaSandbox, **kw: object) -> skala.TicketHandle:
    args: dict[str, object] = {
        "customer_id": sb.customer_id,
        "summary": "Card top-up not credited",
        "description": "The customer topped up 100 USDC and sees nothing.",
    }
    args.update(kw)
    return await client.create_ticket(**args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- create


async def test_create_without_files_is_multipart_with_length(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    assert handle.status is skala.TicketStatus.PENDING
    assert handle.issue_key is None
    [req] = skala_sandbox.requests_to("create")
    assert req.status == 202
    assert req.authorization_scheme == "Bearer"
    assert (req.header("Content-Type") or "").startswith("multipart/form-data; boundary=")
    assert req.content_length is not None
    assert not req.chunked
    assert req.fields == {
        "customerId": skala_sandbox.customer_id,
        "summary": "Card top-up not credited",
        "description": "The customer topped up 100 USDC and sees nothing.",
    }
    assert req.files == ()
    assert str(handle.ticket_id) == req.ticket_id


@pytest.mark.parametrize("count", [1, 5])
async def test_create_streams_attachments_byte_exact(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    count: int,
) -> None:
    names = ["receipt.pdf", "screen.PNG", "clip.mp4", "photo.jpeg", "film.mov"][:count]
    paths = [make_file(n, size=300_000 + i * 7) for i, n in enumerate(names)]
    await create(skala_client, skala_sandbox, files=paths)
    [req] = skala_sandbox.requests_to("create")
    assert req.content_length is not None
    assert not req.chunked
    assert [f.field_name for f in req.files] == ["files"] * count
    assert [f.filename for f in req.files] == names
    assert [f.sha256 for f in req.files] == [sha(p) for p in paths]
    assert [f.size for f in req.files] == [p.stat().st_size for p in paths]
    types = {"pdf": "application/pdf", "png": "image/png", "mp4": "video/mp4"}
    for f in req.files:
        ext = (f.filename or "").rsplit(".", 1)[-1].lower()
        if ext in types:
            assert f.content_type == types[ext]
    ticket = skala_sandbox.tickets[req.ticket_id or ""]
    assert len(ticket.files) == count


async def test_non_ascii_filenames_arrive_unchanged(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    path = make_file('résumé 名前 "q".pdf', size=2048)
    emoji = skala.Attachment.from_bytes(b"\x89PNG fake", filename="captura 📸.png")
    await create(skala_client, skala_sandbox, files=[path, emoji])
    [req] = skala_sandbox.requests_to("create")
    assert [f.filename for f in req.files] == ['résumé 名前 "q".pdf', "captura 📸.png"]
    assert req.files[0].sha256 == sha(path)


async def test_only_the_basename_is_sent(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    path = make_file("deep.pdf")
    renamed = skala.Attachment.from_path(path, filename="C:\\Users\\ana\\private\\scan.pdf")
    mem = skala.Attachment.from_bytes(b"x" * 10, filename="/home/ana/secret/dir/log.png")
    await create(skala_client, skala_sandbox, files=[path, renamed, mem])
    [req] = skala_sandbox.requests_to("create")
    assert [f.filename for f in req.files] == ["deep.pdf", "scan.pdf", "log.png"]
    assert str(path.parent) not in repr(req)


async def test_file_object_is_streamed_and_left_open(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    buf = io.BytesIO(b"HEADER" + b"z" * 5000)
    buf.seek(6)
    att = skala.Attachment.from_file(buf, filename="z.pdf")
    await create(skala_client, skala_sandbox, files=[att])
    [req] = skala_sandbox.requests_to("create")
    assert req.files[0].size == 5000
    assert req.files[0].sha256 == hashlib.sha256(b"z" * 5000).hexdigest()
    assert not buf.closed


async def test_upload_progress_reaches_the_total(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    paths = [make_file("a.pdf", size=700_000), make_file("b.png", size=300_000)]
    seen: list[tuple[int, int]] = []
    await create(
        skala_client, skala_sandbox, files=paths, progress=lambda s, t: seen.append((s, t))
    )
    assert seen[-1] == (1_000_000, 1_000_000)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


# ----------------------------------------------------------------------------- validation


def _invalid_drafts(sb_customer: str, tmp: Path) -> dict[str, dict[str, object]]:
    big = tmp / "big.pdf"
    with big.open("wb") as f:
        f.truncate(25 * 1024 * 1024 + 1)
    halves = []
    for i in range(3):
        p = tmp / f"part{i}.pdf"
        with p.open("wb") as f:
            f.truncate(20 * 1024 * 1024)
        halves.append(p)
    exe = tmp / "tool.exe"
    exe.write_bytes(b"MZ")
    folder = tmp / "folder.pdf"
    folder.mkdir()
    six = []
    for i in range(6):
        ok = tmp / f"ok{i}.png"
        ok.write_bytes(b"png")
        six.append(ok)
    return {
        "customer_id not a UUID": {"customer_id": "customer-42"},
        "summary empty": {"summary": "   "},
        "summary too long": {"summary": "x" * 241},
        "summary two lines": {"summary": "first\nsecond"},
        "description empty": {"description": ""},
        "description too long": {"description": "y" * 5001},
        "six files": {"files": six},
        "file over 25 MiB": {"files": [big]},
        "over 50 MiB together": {"files": halves},
        "extension": {"files": [exe]},
        "missing path": {"files": [tmp / "nope.pdf"]},
        "a directory": {"files": [folder]},
    }


@pytest.mark.parametrize(
    "case",
    [
        "customer_id not a UUID",
        "summary empty",
        "summary too long",
        "summary two lines",
        "description empty",
        "description too long",
        "six files",
        "file over 25 MiB",
        "over 50 MiB together",
        "extension",
        "missing path",
        "a directory",
    ],
)
async def test_each_limit_is_checked_before_sending(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path, case: str
) -> None:
    kw = _invalid_drafts(skala_sandbox.customer_id, tmp_path)[case]
    with pytest.raises(skala.ValidationError) as info:
        await create(skala_client, skala_sandbox, **kw)
    assert len(info.value.problems) == 1, info.value.problems
    assert skala_sandbox.requests == []  # not even a token request


async def test_every_problem_is_reported_at_once(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    exe = tmp_path / "virus.exe"
    exe.write_bytes(b"MZ")
    with pytest.raises(skala.ValidationError) as info:
        await skala_client.create_ticket(
            customer_id="nope",
            summary="two\nlines",
            description="",
            files=[exe, tmp_path / "missing.pdf"],
        )
    problems = info.value.problems
    assert len(problems) == 5, problems
    for word in ("customer_id", "summary", "description", "virus.exe", "missing.pdf"):
        assert any(word in p for p in problems), word
    assert skala_sandbox.requests == []


# ----------------------------------------------------------------------------- API errors


async def test_20061_on_both_endpoints(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    skala_sandbox.support_tickets_enabled = False
    with pytest.raises(skala.SupportTicketsNotEnabledError) as info:
        await create(skala_client, skala_sandbox)
    assert info.value.code == 20061
    assert info.value.status == 403
    assert "Ripio" in str(info.value)
    with pytest.raises(skala.SupportTicketsNotEnabledError):
        await skala_client.get_ticket(handle.ticket_id)
    # 20061 is not an auth problem: no token refresh, no retry.
    assert skala_sandbox.count("token") == 1
    assert skala_sandbox.count("create", status=403) == 1
    assert skala_sandbox.count("get", status=403) == 1


async def test_customer_without_email_or_unknown_is_a_400(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    no_email = skala_sandbox.add_customer(email=None)
    with pytest.raises(skala.BadRequestError) as info:
        await create(skala_client, skala_sandbox, customer_id=no_email)
    assert info.value.status == 400
    assert info.value.code is not None
    assert info.value.server_message
    with pytest.raises(skala.BadRequestError):
        await create(skala_client, skala_sandbox, customer_id=str(uuid.uuid4()))
    assert skala_sandbox.count("create") == 2  # rejected, never retried


async def test_unknown_ticket_is_not_found(skala_client: skala.SkalaClient) -> None:
    with pytest.raises(skala.TicketNotFoundError) as info:
        await skala_client.get_ticket(uuid.uuid4())
    assert info.value.status == 404


async def test_html_502_gives_a_typed_error_with_excerpt(
    skala_sandbox: SkalaSandbox,
) -> None:
    async with sandbox_client(skala_sandbox, retry=skala.RetryPolicy(attempts=1)) as client:
        skala_sandbox.inject("get", Fault.http(502))
        with pytest.raises(skala.ServerError) as info:
            await client.get_ticket(uuid.uuid4())
    assert info.value.status == 502
    assert info.value.body_excerpt


# ----------------------------------------------------------------------------- tokens


async def test_one_token_request_for_fifty_concurrent_calls(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    await asyncio.gather(*(skala_client.get_ticket(handle.ticket_id) for _ in range(50)))
    assert skala_sandbox.count("token") == 1
    [token_req] = skala_sandbox.requests_to("token")
    assert token_req.authorization_scheme == "Basic"
    assert token_req.fields.get("grant_type") == "client_credentials"


async def test_token_fifty_concurrent_first_calls(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        results = await asyncio.gather(
            *(client.get_ticket(uuid.uuid4()) for _ in range(50)), return_exceptions=True
        )
    assert all(isinstance(r, skala.TicketNotFoundError) for r in results)
    assert skala_sandbox.count("token") == 1


async def test_token_refreshed_before_expiry(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.token_ttl = 1  # the client refreshes half-way for such short tokens
    async with sandbox_client(skala_sandbox) as client:
        handle = await create(client, skala_sandbox)
        await client.get_ticket(handle.ticket_id)
        assert skala_sandbox.count("token") == 1
        await asyncio.sleep(0.6)
        await client.get_ticket(handle.ticket_id)
    assert skala_sandbox.count("token") == 2
    assert skala_sandbox.count("get", status=401) == 0


async def test_401_refreshes_once_and_retries_once(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    skala_sandbox.expire_tokens()
    ticket = await skala_client.get_ticket(handle.ticket_id)
    assert ticket.ticket_id == handle.ticket_id
    assert skala_sandbox.count("token") == 2
    assert [r.status for r in skala_sandbox.requests_to("get")] == [401, 200]


async def test_second_401_is_an_authentication_error(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("get", Fault.http(401), times=2)
    with pytest.raises(skala.AuthenticationError) as info:
        await skala_client.get_ticket(uuid.uuid4())
    assert info.value.status == 401
    assert skala_sandbox.count("get") == 2
    assert skala_sandbox.count("token") == 2


async def test_403_other_code_is_treated_as_auth(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    body = '{"code": 40001, "type": "NotAuthenticated", "detail": {"message": "no"}, "status": 403}'
    skala_sandbox.inject("create", Fault.http(403, body=body, content_type="application/json"))
    handle = await create(skala_client, skala_sandbox)
    assert handle.status is skala.TicketStatus.PENDING
    assert [r.status for r in skala_sandbox.requests_to("create")] == [403, 202]


async def test_wrong_credentials(skala_sandbox: SkalaSandbox) -> None:
    async with skala.SkalaClient(
        client_id=skala_sandbox.client_id, client_secret="wrong", base_url=skala_sandbox.url
    ) as client:
        with pytest.raises(skala.AuthenticationError) as info:
            await client.get_ticket(uuid.uuid4())
    assert info.value.status == 401
    assert "wrong" not in str(info.value)
    assert skala_sandbox.count("get") == 0


async def test_static_token(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as creds_client:
        handle = await create(creds_client, skala_sandbox)
        token = await creds_client._auth.token()
    async with skala.SkalaClient(token=token, base_url=skala_sandbox.url) as client:
        ticket = await client.get_ticket(handle.ticket_id)
    assert ticket.ticket_id == handle.ticket_id
    assert skala_sandbox.count("token") == 1


# ----------------------------------------------------------------------------- retries


async def test_429_retry_after_is_honoured_on_create(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("create", Fault.http(429, retry_after=0.3))
    handle = await create(skala_client, skala_sandbox)
    first, second = skala_sandbox.requests_to("create")
    assert (first.status, second.status) == (429, 202)
    assert second.received_at - first.received_at >= 0.3
    assert len(skala_sandbox.tickets) == 1
    assert str(handle.ticket_id) == second.ticket_id


async def test_retry_after_pauses_every_request_of_the_client(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    skala_sandbox.inject("get", Fault.http(429, retry_after=0.4))
    await asyncio.gather(
        skala_client.get_ticket(handle.ticket_id),
        _later(0.05, create(skala_client, skala_sandbox)),
    )
    limited = next(r for r in skala_sandbox.requests if r.status == 429)
    after = [r for r in skala_sandbox.requests if r.received_at > limited.received_at]
    assert len(after) == 2
    assert all(r.received_at - limited.received_at >= 0.4 for r in after)


async def _later(delay: float, coro: object) -> object:
    await asyncio.sleep(delay)
    return await coro  # type: ignore[misc]


async def test_503_with_retry_after_is_resent_without_is_not(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("create", Fault.http(503, retry_after=0.05))
    await create(skala_client, skala_sandbox)
    assert [r.status for r in skala_sandbox.requests_to("create")] == [503, 202]
    skala_sandbox.inject("create", Fault.http(503))
    with pytest.raises(skala.CreateOutcomeUnknownError):
        await create(skala_client, skala_sandbox)
    assert skala_sandbox.count("create") == 3


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(500),
        Fault.http(502),
        Fault.http(504),
        Fault.drop_after_processing(),
        Fault.drop(),
    ],
    ids=["500", "502", "504", "dropped-after-processing", "dropped"],
)
async def test_ambiguous_create_failures_are_never_resent(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, fault: Fault
) -> None:
    skala_sandbox.inject("create", fault)
    with pytest.raises(skala.CreateOutcomeUnknownError) as info:
        await create(skala_client, skala_sandbox)
    assert isinstance(info.value.cause, skala.SkalaError)
    assert info.value.__cause__ is info.value.cause
    assert skala_sandbox.count("create") == 1


async def test_create_timeout_is_ambiguous_and_not_resent(skala_sandbox: SkalaSandbox) -> None:
    timeouts = skala.Timeouts(upload_read=0.3)
    async with sandbox_client(skala_sandbox, timeouts=timeouts) as client:
        skala_sandbox.inject("create", Fault.delay(1.0))
        with pytest.raises(skala.CreateOutcomeUnknownError) as info:
            await create(client, skala_sandbox)
        assert isinstance(info.value.cause, skala.RequestTimeoutError)
        assert skala_sandbox.count("create") <= 1
        await asyncio.sleep(1.0)  # the server finishes the slow request: the ticket exists
    assert skala_sandbox.count("create") == 1
    assert len(skala_sandbox.tickets) == 1


async def test_connection_refused_is_retried_then_reported(unused_tcp_port: int) -> None:
    async with skala.SkalaClient(
        token="t", base_url=f"http://127.0.0.1:{unused_tcp_port}", retry=FAST_RETRY
    ) as client:
        with pytest.raises(skala.TransportError) as info:
            await client.create_ticket(str(uuid.uuid4()), "s", "d")
    assert not isinstance(info.value, skala.CreateOutcomeUnknownError)
    assert info.value.request_sent is False
    cause = info.value.__cause__
    assert isinstance(cause, skala.UnderlyingError)
    assert cause.type_name == "aiohttp.client_exceptions.ClientConnectorError"
    assert client.request_counts["create"] == FAST_RETRY.attempts


async def test_get_is_retried_on_5xx_and_dropped_connections(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    for fault in (Fault.http(500), Fault.http(502), Fault.drop()):
        skala_sandbox.inject("get", fault)
    ticket = await skala_client.get_ticket(handle.ticket_id)
    assert ticket.ticket_id == handle.ticket_id
    assert [r.status for r in skala_sandbox.requests_to("get")] == [500, 502, None, 200]


async def test_get_gives_up_after_the_attempts(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.inject("get", Fault.http(500), times=10)
    with pytest.raises(skala.ServerError):
        await skala_client.get_ticket(uuid.uuid4())
    assert skala_sandbox.count("get") == FAST_RETRY.attempts


# ----------------------------------------------------------------------------- waiting


async def test_wait_until_created(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.2
    handle = await create(skala_client, skala_sandbox)
    ticket = await handle.wait_until_created(timeout=10)
    assert ticket.status is skala.TicketStatus.CREATED
    assert ticket.issue_key is not None
    assert ticket.issue_key.startswith("SUP-")
    assert handle.ticket == ticket
    assert handle.elapsed is not None
    assert handle.elapsed >= 0.2
    assert skala_sandbox.tickets[str(ticket.ticket_id)].issue_key == ticket.issue_key
    assert handle.polls == skala_sandbox.count("get")


async def test_wait_failed_raises_or_returns(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.outcome = "FAILED"
    handle = await create(skala_client, skala_sandbox)
    with pytest.raises(skala.TicketFailedError) as info:
        await handle.wait_until_created(timeout=10)
    assert info.value.ticket.status is skala.TicketStatus.FAILED
    assert info.value.ticket.issue_key is None
    gets = skala_sandbox.count("get")
    ticket = await handle.wait_until_created(timeout=10, raise_on_failure=False)
    assert ticket.status is skala.TicketStatus.FAILED
    assert skala_sandbox.count("get") == gets  # already final: no new GET


async def test_wait_deadline_carries_last_ticket(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None  # stays PENDING
    handle = await create(skala_client, skala_sandbox)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(skala.WaitTimeoutError) as info:
        await handle.wait_until_created(timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert info.value.ticket is not None
    assert info.value.ticket.status is skala.TicketStatus.PENDING
    assert loop.time() - started < 1.0  # did not sleep far past the deadline
    assert skala_sandbox.count("get") >= 2


async def test_wait_survives_transient_poll_failures(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.1
    handle = await create(skala_client, skala_sandbox)
    skala_sandbox.inject("get", Fault.http(500), times=6)
    ticket = await handle.wait_until_created(timeout=10)
    assert ticket.status is skala.TicketStatus.CREATED


async def test_wait_honours_retry_after(skala_sandbox: SkalaSandbox) -> None:
    poll = skala.PollPolicy(first_delay=0.01, min_interval=0.01, max_interval=0.5)
    retry = skala.RetryPolicy(attempts=1)
    async with sandbox_client(skala_sandbox, poll=poll, retry=retry) as client:
        skala_sandbox.processing_delay = 0.05
        handle = await create(client, skala_sandbox)
        skala_sandbox.inject("get", Fault.http(503, retry_after=0.3))
        await handle.wait_until_created(timeout=5)
    first, second = skala_sandbox.requests_to("get")[:2]
    assert first.status == 503
    assert second.received_at - first.received_at >= 0.3


async def test_huge_retry_after_is_clamped(skala_sandbox: SkalaSandbox) -> None:
    poll = skala.PollPolicy(first_delay=0.01, min_interval=0.01, max_interval=0.2)
    retry = skala.RetryPolicy(attempts=1, max_retry_after=0.4)
    async with sandbox_client(skala_sandbox, poll=poll, retry=retry) as client:
        skala_sandbox.processing_delay = 0.05
        handle = await create(client, skala_sandbox)
        skala_sandbox.inject("get", Fault.http(503, retry_after=3600))
        await handle.wait_until_created(timeout=5)
    first, second = skala_sandbox.requests_to("get")[:2]
    assert first.status == 503
    assert 0.4 <= second.received_at - first.received_at < 2.0


async def test_pause_past_the_deadline_fails_fast(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox, retry=skala.RetryPolicy(attempts=1)) as client:
        skala_sandbox.inject("get", Fault.http(429, retry_after=3))
        with pytest.raises(skala.RateLimitedError):
            await client.get_ticket(uuid.uuid4())
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(skala.RequestTimeoutError, match="pause"):
            await client.get_ticket(uuid.uuid4(), timeout=0.5)
        assert loop.time() - started < 0.4
    assert skala_sandbox.count("get") == 1


async def test_cancelled_wait_leaves_nothing_running(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    no_tasks_left: Callable[[], None],
) -> None:
    skala_sandbox.processing_delay = None
    handle = await create(skala_client, skala_sandbox)
    task = asyncio.ensure_future(handle.wait_until_created(timeout=30))
    await asyncio.sleep(0.2)
    assert skala_sandbox.count("get") >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    no_tasks_left()
    assert skala_client.bus.waiting() == 0
    gets = skala_sandbox.count("get")
    await asyncio.sleep(0.2)
    assert skala_sandbox.count("get") == gets


async def test_unknown_status_is_kept_not_a_crash(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.outcome = "ARCHIVED"
    handle = await create(skala_client, skala_sandbox)
    await skala_sandbox.wait_until_processed(timeout=5)
    ticket = await skala_client.get_ticket(handle.ticket_id)
    assert ticket.status.value == "ARCHIVED"
    assert not ticket.status.known
    assert not ticket.is_final
    with pytest.raises(skala.WaitTimeoutError) as info:
        await handle.wait_until_created(timeout=0.2)
    assert info.value.ticket is not None
    assert info.value.ticket.status.value == "ARCHIVED"


async def test_watch_yields_each_change(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = 0.15
    handle = await create(skala_client, skala_sandbox)
    seen = [t.status async for t in handle.watch(timeout=10)]
    assert seen == [skala.TicketStatus.PENDING, skala.TicketStatus.CREATED]


async def test_rebuilt_handle_polls_at_once(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    handle = await create(skala_client, skala_sandbox)
    await skala_sandbox.wait_until_processed(timeout=5)
    again = skala_client.ticket_handle(str(handle.ticket_id))
    assert again.ticket is None
    ticket = await again.wait_until_created(timeout=5)
    assert ticket.issue_key
    assert skala_sandbox.count("get") == 1


async def test_one_poll_wakes_every_handle_on_the_same_ticket(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    skala_sandbox.processing_delay = None
    handle = await create(skala_client, skala_sandbox)
    twins = [skala_client.ticket_handle(handle.ticket_id) for _ in range(3)]
    for t in twins:
        t.ticket = handle.ticket  # known PENDING: they sleep until the first poll is due
    slow = skala.PollPolicy(first_delay=30, min_interval=30, max_interval=30)
    waits = [asyncio.ensure_future(t.wait_until_created(timeout=10, poll=slow)) for t in twins]
    await asyncio.sleep(0.05)
    skala_sandbox.complete(str(handle.ticket_id))
    ticket = await handle.refresh()  # one GET publishes the news
    results = await asyncio.gather(*waits)
    assert all(r == ticket for r in results)
    assert skala_sandbox.count("get") == 1


# ----------------------------------------------------------------------------- hygiene


async def test_secrets_never_in_reprs_logs_or_errors(
    skala_sandbox: SkalaSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = skala_sandbox.client_secret
    texts: list[str] = []
    async with sandbox_client(skala_sandbox) as client:
        handle = await create(client, skala_sandbox)
        skala_sandbox.expire_tokens()
        skala_sandbox.inject("get", Fault.http(500))
        await handle.wait_until_created(timeout=5)
        token = await client._auth.token()
        skala_sandbox.inject("get", Fault.http(401), times=2)
        try:
            await client.get_ticket(handle.ticket_id)
        except skala.AuthenticationError as exc:
            texts += [str(exc), repr(exc)]
        texts += [repr(client), repr(client._auth), repr(handle), repr(handle.ticket)]
    texts += [repr(skala_sandbox), caplog.text]
    texts += [repr(r) for r in skala_sandbox.requests]
    blob = "\n".join(texts)
    assert "Bearer" not in caplog.text
    assert secret not in blob
    assert token not in blob


async def test_caller_session_is_used_and_left_open(skala_sandbox: SkalaSandbox) -> None:
    async with aiohttp.ClientSession() as session:
        async with sandbox_client(skala_sandbox, session=session) as client:
            await create(client, skala_sandbox)
        assert not session.closed
        assert client.closed


async def test_closed_client_refuses_work(skala_sandbox: SkalaSandbox) -> None:
    client = sandbox_client(skala_sandbox)
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await create(client, skala_sandbox)


def test_plain_http_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="unencrypted"):
        skala.SkalaClient(token="t", base_url="http://skala.example.com")
    skala.SkalaClient(token="t", base_url="http://skala.example.com", allow_insecure_http=True)
    skala.SkalaClient(token="t", base_url="http://127.0.0.1:8000")
    skala.SkalaClient(token="t", base_url="http://localhost:8000/")
    skala.SkalaClient(token="t", base_url="http://[::1]:8000")
    with pytest.raises(ValueError, match="http"):
        skala.SkalaClient(token="t", base_url="ftp://skala.example.com")


def test_credentials_are_required() -> None:
    with pytest.raises(ValueError, match="credentials missing"):
        skala.SkalaClient()
    with pytest.raises(ValueError, match="either"):
        skala.SkalaClient("id", "secret", token="t")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKALA_CLIENT_ID", "env-id")
    monkeypatch.setenv("SKALA_CLIENT_SECRET", "env-secret-value")
    monkeypatch.setenv("SKALA_BASE_URL", "http://127.0.0.1:9")
    client = skala.SkalaClient.from_env()
    assert client.base_url == "http://127.0.0.1:9"
    assert client.client_id == "env-id"
    assert "env-secret-value" not in repr(client)
    monkeypatch.delenv("SKALA_CLIENT_SECRET")
    with pytest.raises(ValueError, match="SKALA_CLIENT_SECRET"):
        skala.SkalaClient.from_env()
