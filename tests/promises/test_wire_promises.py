"""Promises on the wire: what counts as a refusal of a create, whose failure a cut-off upload
is, and that a URL's user-info is never shown.

* An answer to a create is a refusal only when it is a documented one (a 4xx in the API's
  error shape; a 429; a 503 with ``Retry-After``). Every other answer (a 1xx or 3xx as the
  final answer, a 2xx other than 202, a 4xx page that is not the API's) may come after
  the ticket was stored: ``CreateOutcomeUnknownError``, bulk ``uncertain``, CLI exit 4,
  never sent again. Redirects are never followed (a POST answered 303 would become a GET).
* A body that fails on our side before it is complete (an attachment that shrinks, grows
  or vanishes, a ``progress`` callback that raises) cannot have been processed:
  ``UploadAbortedError`` with the real cause, bulk ``failed`` (a rerun sends it).
* A refused ``base_url`` never echoes its password, nor does anything else that shows a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import skala_async as skala
from skala_async import RetryPolicy, cli, sync
from skala_async.bulk import _outcome_for
from skala_async.cli import EXIT_TRANSPORT, EXIT_USAGE, main
from skala_async.errors import (
    BadRequestError,
    CreateOutcomeUnknownError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UploadAbortedError,
)
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from skala_async.testing.mock import MockSkala
from tests.helpers.cli import threaded_sandbox

RETRY = RetryPolicy(attempts=3, initial=0.01, cap=0.02, max_retry_after=0.5)
TOKEN = "wire-test-token-Okapi-5150"
TID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
TICKET = json.dumps({"ticketId": TID, "status": "PENDING", "issueKey": None}).encode()
API_ERROR = json.dumps(
    {"code": 20000, "type": "ValidationError", "detail": {"message": "no"}, "status": 400}
).encode()


# ============================================================================ a hostile server


@contextlib.asynccontextmanager
async def answering(answer: bytes) -> AsyncIterator[tuple[str, list[str]]]:
    """A server that stores every create it reads in full, then answers ``answer`` (raw
    bytes after the status line's ``HTTP/1.1 ``); the token endpoint works. Yields its
    URL and the request lines it received, in order."""
    received: list[str] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                line = head.split(b"\r\n", 1)[0].decode()
                received.append(line)
                if line.startswith("POST /oauth2/token/"):
                    body = json.dumps({"accessToken": TOKEN, "expiresIn": 3600}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    writer.write(b"HTTP/1.1 " + answer)
                    await writer.drain()
                    break
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def reply(status: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [status, *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


JSON = "application/json"
HTML = "text/html"
ELSEWHERE = f"/api/v1/supportTickets/{TID}/"

#: Answers a create may get after the ticket was stored: none is a documented refusal.
AMBIGUOUS = {
    "101 final": b"101 Switching Protocols\r\nConnection: close\r\n\r\n",
    "301": reply("301 Moved Permanently", Location=ELSEWHERE, Connection="close"),
    "302": reply("302 Found", Location=ELSEWHERE, Connection="close"),
    "303": reply("303 See Other", TICKET, Content_Type=JSON, Location=ELSEWHERE),
    "304": b"304 Not Modified\r\nConnection: close\r\n\r\n",
    "307": reply("307 Temporary Redirect", Location="/api/v1/supportTickets/"),
    "308": reply("308 Permanent Redirect", Location="/api/v1/supportTickets/"),
    "200 with the ticket": reply("200 OK", TICKET, Content_Type=JSON),
    "201 with the ticket": reply("201 Created", TICKET, Content_Type=JSON),
    "204": b"204 No Content\r\n\r\n",
    "400 page of a proxy": reply("400 Bad Request", b"<h1>Bad Request</h1>", Content_Type=HTML),
    "404 page of a proxy": reply("404 Not Found", b"<h1>Not Found</h1>", Content_Type=HTML),
    "401 without the error shape": reply("401 Unauthorized", b"", WWW_Authenticate="Bearer"),
    "403 as DRF says it": reply(
        "403 Forbidden", b'{"detail": "You do not have permission."}', Content_Type=JSON
    ),
    "408": reply("408 Request Timeout", API_ERROR.replace(b"400", b"408"), Content_Type=JSON),
}


@pytest.mark.parametrize("answer", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
async def test_a_create_answered_other_than_documented_is_outcome_unknown(answer: bytes) -> None:
    async with answering(answer) as (url, received):  # noqa: SIM117 - the client needs url
        async with skala.SkalaClient("id", "secret-Lemur-123", base_url=url, retry=RETRY) as c:
            with pytest.raises(CreateOutcomeUnknownError) as caught:
                await asyncio.wait_for(c.create_ticket(str(uuid.uuid4()), "s", "d"), 10)
    # Sent once, never again: not after a token refresh, not to the Location (a POST that
    # aiohttp would turn into a GET for 301-303, or send again for 307/308).
    assert received == ["POST /oauth2/token/ HTTP/1.1", "POST /api/v1/supportTickets/ HTTP/1.1"]
    cause = caught.value.cause
    assert isinstance(cause, skala.ApiError)
    assert str(int(cause.status)) == answer[:3].decode()
    assert "Check with Ripio" in str(caught.value)


async def test_a_documented_refusal_of_a_create_stays_a_refusal() -> None:
    answer = reply("400 Bad Request", API_ERROR, Content_Type=JSON)
    async with answering(answer) as (url, received):  # noqa: SIM117 - the client needs url
        async with skala.SkalaClient(token=TOKEN, base_url=url, retry=RETRY) as client:
            with pytest.raises(BadRequestError) as caught:
                await client.create_ticket(str(uuid.uuid4()), "s", "d")
    assert caught.value.code == 20000
    assert received == ["POST /api/v1/supportTickets/ HTTP/1.1"]


@pytest.mark.parametrize(
    "status", ["301 Moved Permanently", "303 See Other", "307 Temporary Redirect"]
)
async def test_a_redirected_get_is_not_followed(status: str) -> None:
    """A GET is not retried nor followed: the token never travels to the Location."""
    answer = reply(status, Location="http://127.0.0.2:9/steal/", Connection="close")
    async with answering(answer) as (url, received):  # noqa: SIM117 - the client needs url
        async with skala.SkalaClient(token=TOKEN, base_url=url, retry=RETRY) as client:
            with pytest.raises(UnexpectedResponseError) as caught:
                await asyncio.wait_for(client.get_ticket(TID), 10)
    assert int(caught.value.status) == int(status[:3])
    assert received == [f"GET /api/v1/supportTickets/{TID}/ HTTP/1.1"]


async def test_a_ticket_stored_then_answered_303_is_uncertain_in_bulk_and_never_resent(
    tmp_path: Path,
) -> None:
    """The server stores the ticket, then answers 303: one ticket, however often the job
    runs with its journal."""
    journal = tmp_path / "run.sqlite"
    async with (
        SkalaSandbox(processing_delay=None) as sb,
        sandbox_client(sb, retry=RETRY) as client,
    ):
        drafts = [
            skala.TicketDraft(sb.customer_id, f"row {i}", "d", reference=f"row-{i}")
            for i in range(3)
        ]
        sb.inject("create", Fault.http(303, processed=True, headers={"Location": ELSEWHERE}))
        report = await client.create_many(drafts, concurrency=1, journal=journal)
        assert report.counts == {"created": 2, "rejected": 0, "uncertain": 1, "failed": 0}
        assert type(report.results[0].error) is CreateOutcomeUnknownError
        assert len(sb.tickets) == 3  # the first row's ticket exists
        again = await client.create_many(drafts, concurrency=1, journal=journal)
        assert again.counts == {"created": 2, "rejected": 0, "uncertain": 1, "failed": 0}
        assert all(r.from_journal for r in again.results)
        assert sb.count("create") == 3
        assert len(sb.tickets) == 3
        assert sb.count("get") == 0  # nothing followed the Location


def test_sync_and_cli_agree_that_a_303_is_outcome_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with threaded_sandbox(processing_delay=None) as sb:
        sb.inject("create", Fault.http(303, processed=True))
        with (
            sync.SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url) as client,
            pytest.raises(CreateOutcomeUnknownError),
        ):
            client.create_ticket(sb.customer_id, "s", "d")
        sb.inject("create", Fault.http(303, processed=True))
        argv = ["create", "--customer-id", sb.customer_id, "--summary", "s", "--description", "d"]
        argv += ["--base-url", sb.url, "--client-id", sb.client_id]
        argv += ["--client-secret", sb.client_secret]
        assert main(argv) == EXIT_TRANSPORT
        assert "outcome unknown" in capsys.readouterr().err
        assert len(sb.tickets) == 2
        assert sb.count("create") == 2


def test_bulk_outcomes_follow_the_clients_rule() -> None:
    """An ambiguous answer reaching bulk unwrapped is still uncertain; an error of the token
    request (the create was never sent) is failed, not rejected."""
    create = "/api/v1/supportTickets/"
    assert _outcome_for(ServerError(500, method="POST", path=create)).value == "uncertain"
    assert _outcome_for(UnexpectedResponseError(303, path=create)).value == "uncertain"
    assert _outcome_for(ServerError(503, retry_after=1.0, path=create)).value == "failed"
    assert _outcome_for(BadRequestError(400, code=1, type="t", path=create)).value == "rejected"
    assert _outcome_for(UnexpectedResponseError(200, path="/oauth2/token/")).value == "failed"
    refused = TransportError("x", method="POST", path=create, request_sent=False)
    assert _outcome_for(refused).value == "failed"
    assert _outcome_for(UploadAbortedError("x", method="POST", path=create)).value == "failed"


# ============================================================================ our own failures


def _shrink(path: Path) -> Callable[[int, int], None]:
    def progress(sent: int, total: int) -> None:
        path.write_bytes(b"")  # after the first chunk went out

    return progress


def _grow(path: Path) -> Callable[[int, int], None]:
    def progress(sent: int, total: int) -> None:
        with path.open("ab") as f:
            f.write(b"more")

    return progress


def _fail(path: Path) -> Callable[[int, int], None]:
    def progress(sent: int, total: int) -> None:
        raise KeyError("the progress bar broke")

    return progress


@pytest.mark.parametrize(
    ("change", "cause", "text"),
    [
        (_shrink, OSError, "became shorter"),
        (_grow, OSError, "became longer"),
        (_fail, KeyError, "the progress bar broke"),
        ("deleted", FileNotFoundError, "No such file"),
        ("grown before", OSError, "became longer"),
    ],
    ids=["shrinks", "grows", "progress raises", "deleted", "grew since measured"],
)
async def test_an_upload_cut_off_on_our_side_is_not_ambiguous(
    change: Any, cause: type[BaseException], text: str, tmp_path: Path
) -> None:
    path = tmp_path / "screen.mp4"
    path.write_bytes(bytes(3 * 1024 * 1024 + 5))  # several chunks and sendfile slices
    attachment = skala.Attachment.from_path(path)  # measured now
    progress = None
    if change == "deleted":
        path.unlink()
    elif change == "grown before":
        with path.open("ab") as f:
            f.write(b"x")
    else:
        progress = change(path)
    async with (
        SkalaSandbox(processing_delay=None) as sb,
        sandbox_client(sb, retry=RETRY) as client,
    ):
        with pytest.raises(UploadAbortedError) as caught:
            await client.create_ticket(sb.customer_id, "s", "d", [attachment], progress=progress)
        error = caught.value
        assert isinstance(error.__cause__, cause)
        assert text in str(error)
        assert "no ticket was created" in str(error)
        assert client.request_counts["create"] == 1  # not retried behind the caller's back
        for _ in range(500):  # the sandbox notices the cut-off body (if any of it came)
            if sb.count("create") or change in ("deleted", "grown before"):
                break
            await asyncio.sleep(0.01)
        assert sb.tickets == {}
        assert all(r.status != 202 for r in sb.requests_to("create"))
        # The client is still usable.
        handle = await client.create_ticket(sb.customer_id, "s", "d")
        assert str(handle.ticket_id) in sb.tickets


async def test_bulk_marks_an_upload_cut_off_on_our_side_failed_and_a_rerun_sends_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "receipt.pdf"
    path.write_bytes(b"%PDF" + bytes(600_000))
    content = path.read_bytes()
    journal = tmp_path / "run.sqlite"
    async with (
        SkalaSandbox(processing_delay=None) as sb,
        sandbox_client(sb, retry=RETRY) as client,
    ):
        drafts = [
            skala.TicketDraft(sb.customer_id, "with a file", "d", files=[path], reference="a"),
            skala.TicketDraft(sb.customer_id, "plain", "d", reference="b"),
        ]
        path.write_bytes(content[:1000])  # shrank after the draft measured it
        report = await client.create_many(drafts, concurrency=1, journal=journal)
        assert report.counts == {"created": 1, "rejected": 0, "uncertain": 0, "failed": 1}
        first = report.results[0]
        assert isinstance(first.error, UploadAbortedError)
        assert "became shorter" in first.as_row()["error"]
        assert len(sb.tickets) == 1
        path.write_bytes(content)
        again = await client.create_many(drafts, concurrency=1, journal=journal)
        assert again.counts["created"] == 2
        assert len(sb.tickets) == 2
        (stored,) = [t for t in sb.tickets.values() if t.summary == "with a file"]
        assert stored.files[0].size == len(content)


def test_cli_exits_2_when_a_file_shrinks_during_the_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "screen.mp4"
    path.write_bytes(bytes(3 * 1024 * 1024))
    draw = cli.ProgressBar.__call__

    def shrink_then_draw(self: cli.ProgressBar, sent: int, total: int) -> None:
        path.write_bytes(b"")  # someone truncates the file while it is being sent
        draw(self, sent, total)

    monkeypatch.setattr(cli.ProgressBar, "__call__", shrink_then_draw)
    with threaded_sandbox(processing_delay=None) as sb:
        argv = ["--json", "create", "--customer-id", sb.customer_id, "--summary", "s"]
        argv += ["--description", "d", "--file", str(path), "--progress"]
        argv += ["--base-url", sb.url, "--client-id", sb.client_id]
        argv += ["--client-secret", sb.client_secret]
        assert main(argv) == EXIT_USAGE
        out, err = capsys.readouterr()
        assert "upload cut off" in err
        assert "became shorter" in err
        assert "no ticket was created" in err
        assert json.loads(out)["error"]["exception"] == "UploadAbortedError"
        assert sb.tickets == {}


# ============================================================================ user-info in URLs

PASSWORD = "Hunter2-Capybara"
WITH_PASSWORD = [
    f"htps://svc:{PASSWORD}@skala.ripio.com",
    f"svc:{PASSWORD}@skala.ripio.com",
    f"https://svc:{PASSWORD}@skala.ripio.com",
    f"https://svc:{PASSWORD}/x@skala.ripio.com",
    f"https://:{PASSWORD}@skala.ripio.com",
    f"ftp://svc:{PASSWORD}@127.0.0.1",
    f"https://svc:{PASSWORD}@[::1",
    f"http://svc:{PASSWORD}@10.0.0.1",
]


def _shown(exc: BaseException) -> str:
    texts = ["".join(traceback.format_exception(exc)), repr(exc), repr(vars(exc))]
    while (exc := exc.__cause__ or exc.__context__) is not None:  # type: ignore[assignment]
        texts += [repr(exc), repr(vars(exc))]
    return "\n".join(texts)


@pytest.mark.parametrize("url", WITH_PASSWORD)
def test_a_refused_base_url_does_not_echo_its_password(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for make in (
        lambda: skala.SkalaClient("id", "secret-Lemur-123", base_url=url),
        lambda: sync.SkalaClient("id", "secret-Lemur-123", base_url=url),
    ):
        with pytest.raises(ValueError, match="base_url") as caught:
            make()
        assert PASSWORD not in _shown(caught.value)
    monkeypatch.setenv("SKALA_BASE_URL", url)
    with pytest.raises(ValueError, match="base_url") as caught:
        skala.SkalaClient.from_env(client_id="id", client_secret="secret-Lemur-123")
    assert PASSWORD not in _shown(caught.value)


async def test_cli_refuses_a_base_url_with_user_info_without_showing_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SkalaSandbox() as sb:
        host = sb.url.removeprefix("http://")
        loop = asyncio.get_running_loop()
        for url in (f"http://svc:{PASSWORD}@{host}", f"htps://svc:{PASSWORD}@{host}"):
            argv = ["-v", "--json", "get", TID, "--base-url", url, "--token", TOKEN]
            assert await loop.run_in_executor(None, main, argv) == EXIT_USAGE
            out, err = capsys.readouterr()
            assert PASSWORD not in out + err
            assert "base_url" in err or "base URL" in err
            monkeypatch.setenv("SKALA_BASE_URL", url)
            assert await loop.run_in_executor(None, main, ["get", TID, "--token", TOKEN]) == 2
            out, err = capsys.readouterr()
            assert PASSWORD not in out + err
            monkeypatch.delenv("SKALA_BASE_URL")
        assert sb.requests == []  # nothing was sent


async def test_the_sandbox_and_the_mock_hide_user_info(unused_tcp_port: int) -> None:
    hook = f"http://hook:{PASSWORD}@127.0.0.1:{unused_tcp_port}/hook"
    async with (
        SkalaSandbox(processing_delay=0.01, webhook_url=hook) as sb,
        sandbox_client(sb) as client,
    ):
        await client.create_ticket(sb.customer_id, "s", "d")
        await sb.wait_until_processed(5)
        await sb.wait_for_webhooks(5)
        (delivery,) = sb.webhook_deliveries
        assert isinstance(delivery.result, str)  # nobody listens there
        assert PASSWORD not in repr(sb.webhook_deliveries) + repr(sb) + sb._repr_html_()
    mock = MockSkala(base_url=f"https://svc:{PASSWORD}@skala.example")
    assert PASSWORD not in repr(mock)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://skala.ripio.com", "https://skala.ripio.com"),
        ("https://u:p@host/x", "https://***@host/x"),
        ("svc:pw@host", "***@host"),
        ("https://u:p/w@host", "https://***@host"),
        ("https://u:p@ss@host", "https://***@host"),
        ("weird@scheme://u:p@host", "***@host"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from skala_async._protocol import redact_url

    assert redact_url(url) == shown
