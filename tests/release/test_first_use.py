"""What a new user meets first: the README's examples as written, file names, and a sync
client called on the event loop that serves its server.

README snippets are taken from README.md (or a page under docs/) by a line they contain,
and run as they stand: a change to an example that breaks it fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
from skala_async import Timeouts, _loopguard
from skala_async.cli import main
from skala_async.sync import Sandbox
from skala_async.sync import SkalaClient as SyncClient
from skala_async.testing import FAST_POLL, FAST_RETRY, SkalaSandbox, sandbox_client

ROOT = Path(__file__).resolve().parents[2]
#: Where the user-facing text lives (the README, and docs pages when there are some).
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: A blocking call that should fail at once must not hang the suite if it does not.
HANG_LIMIT = 30.0


def blocks(marker: str) -> list[tuple[str, str]]:
    """Every fenced block (language, text) of the document holding ``marker``, in order,
    starting with the block that contains it."""
    fence = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        found = [(m.group(1), m.group(2)) for m in fence.finditer(text)]
        for i, (_, body) in enumerate(found):
            if marker in body:
                return found[i:]
    raise AssertionError(f"no example containing {marker!r} in {[p.name for p in DOC_FILES]}")


# ================================================================ ValidationError, printed


def test_validation_error_prints_as_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code_lang, code), (_, shown), *_ = blocks("print(exc.problems)")
    assert code_lang == "python"
    monkeypatch.chdir(tmp_path)  # where virus.exe does not exist, as the README says

    async def run() -> None:
        async with SkalaSandbox() as sb, sandbox_client(sb) as client:
            body = textwrap.indent(code, "    ")
            namespace: dict[str, Any] = {"skala": skala}
            exec(f"async def example(client):\n{body}", namespace)  # noqa: S102
            await namespace["example"](client)
            assert sb.requests == []  # nothing sent, not even a token request

    asyncio.run(run())
    assert capsys.readouterr().out == shown


def test_problems_print_one_a_line_and_compare_as_a_tuple() -> None:
    exc = skala.ValidationError(["summary: must not be empty", "files[0]: 'x' does not exist"])
    assert str(exc.problems) == "summary: must not be empty\nfiles[0]: 'x' does not exist"
    assert exc.problems == ("summary: must not be empty", "files[0]: 'x' does not exist")
    assert repr(exc.problems) == (
        "Problems((\n    'summary: must not be empty',\n    \"files[0]: 'x' does not exist\",\n))"
    )
    assert str(exc) == (
        "invalid ticket (2 problems):\n"
        "  - summary: must not be empty\n"
        "  - files[0]: 'x' does not exist"
    )
    # One sentence is one problem, not its characters.
    assert skala.ValidationError("ticket_id: bad").problems == ("ticket_id: bad",)
    assert repr(skala.ValidationError([]).problems) == "Problems()"


def test_a_file_name_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="filename must be a string, not int"):
        skala.Attachment.from_bytes(b"x", filename=7)  # type: ignore[arg-type]


def test_validation_error_survives_pickling() -> None:
    import pickle

    exc = skala.ValidationError(["a: b", "c: d"])
    back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert type(back) is skala.ValidationError
    assert back.problems == exc.problems
    assert str(back) == str(exc)


# ================================================================ the pytest examples


def test_readme_pytest_examples_pass_in_strict_mode(tmp_path: Path) -> None:
    """Both examples of "Testing your own code", run by pytest in pytest-asyncio's default
    (strict) mode, with the user code they call written the obvious way."""
    (_, sandbox_example), *_ = blocks("async def test_my_escalation_flow")
    (_, mock_example), *_ = blocks("async def test_escalation_waits_for_the_issue_key")
    user_code = textwrap.dedent(
        """
        import hashlib

        import skala_async as skala

        REPORT = b"%PDF-1.4 escalation report"
        expected_sha = hashlib.sha256(REPORT).hexdigest()


        async def my_code_that_escalates(client, customer_id):
            return await client.create_ticket(
                customer_id,
                "Escalation: card top-up not credited",
                "Escalated by the on-call rota.",
                files=[skala.Attachment.from_bytes(REPORT, filename="report.pdf")],
            )


        async def escalate(client):
            handle = await my_code_that_escalates(
                client, customer_id="3c90c3cc-0d44-4b50-8888-8dd25736052a"
            )
            ticket = await handle.wait_until_created(timeout=5)
            return ticket.issue_key
        """
    )
    (tmp_path / "user_code.py").write_text(user_code, encoding="utf-8")
    header = "from user_code import escalate, expected_sha, my_code_that_escalates\n"
    (tmp_path / "test_sandbox_example.py").write_text(header + sandbox_example, "utf-8")
    (tmp_path / "test_mock_example.py").write_text(header + mock_example, "utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(  # noqa: S603 - this interpreter, our own files
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


# ================================================================ aiohttp app, sample webhook


def test_readme_aiohttp_app_accepts_the_sample_webhook_signed_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's aiohttp app (with its web.AppKey; warnings are errors here) answers the
    README's sample event, signed by ``skala-tickets webhooks sign``, as the README says:
    200 and one on_event call, then 200 and no call for the same event again."""
    (_, app_code), *_ = blocks('SKALA = web.AppKey("skala", skala.SkalaClient)  # typed key')
    (sample_lang, sample), *_ = blocks('"eventType": "SUPPORT_TICKET.CREATED", "issueDatetime"')
    assert sample_lang == "json"
    event_file = tmp_path / "event.json"
    event_file.write_text(sample, encoding="utf-8")  # as an editor saves it
    secret = "correct horse battery staple"
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", secret)
    capsys.readouterr()
    assert main(["webhooks", "sign", str(event_file)]) == 0
    name, _, value = capsys.readouterr().out.strip().partition(": ")

    seen: list[tuple[object, str, str | None]] = []

    async def save(ticket_id: object, status: str, issue_key: str | None) -> None:
        seen.append((ticket_id, status, issue_key))

    async def run() -> list[int]:
        async with SkalaSandbox() as sb:
            monkeypatch.setenv("SKALA_CLIENT_ID", sb.client_id)
            monkeypatch.setenv("SKALA_CLIENT_SECRET", sb.client_secret)
            monkeypatch.setenv("SKALA_BASE_URL", sb.url)
            namespace: dict[str, Any] = {"__name__": "readme_app", "save": save}
            exec(app_code, namespace)  # noqa: S102
            app = await namespace["make_app"]()
            assert isinstance(app[namespace["SKALA"]], skala.SkalaClient)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            statuses = []
            try:
                async with aiohttp.ClientSession() as session:
                    for _ in range(2):
                        async with session.post(
                            f"http://127.0.0.1:{port}/webhooks/skala",
                            data=event_file.read_bytes(),
                            headers={name: value, "Content-Type": "application/json"},
                        ) as response:
                            statuses.append(response.status)
            finally:
                await runner.cleanup()
            return statuses

    assert asyncio.run(asyncio.wait_for(run(), HANG_LIMIT)) == [200, 200]
    assert [(str(t), s, k) for t, s, k in seen] == [
        ("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "CREATED", "SUP-1234")
    ]


def test_the_sample_event_parses_as_described() -> None:
    (_, sample), *_ = blocks('"eventType": "SUPPORT_TICKET.CREATED", "issueDatetime"')
    event = skala.webhooks.parse_event(sample.encode())
    assert event.status is skala.TicketStatus.CREATED
    assert event.ticket.issue_key == "SUP-1234"
    assert json.loads(sample)["supportTicket"]["ticketId"] == str(event.ticket_id)
    # A receiver with a freshness window refuses it, as the README warns.
    with pytest.raises(skala.webhooks.StaleWebhookError):
        skala.webhooks.parse_event(sample.encode(), tolerance=300)


# ================================================================ file names on the wire


async def test_a_backslash_in_a_local_file_name_is_sent_as_it_is(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    if os.sep != "/":  # pragma: no cover - Windows
        pytest.skip("a backslash separates directories on Windows")
    odd = tmp_path / "a\\b.pdf"
    plain = tmp_path / "b.pdf"
    odd.write_bytes(b"%PDF odd")
    plain.write_bytes(b"%PDF plain")
    await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", files=[odd, plain])
    [req] = skala_sandbox.requests_to("create")
    assert [(f.filename, f.sha256) for f in req.files] == [
        ("a\\b.pdf", hashlib.sha256(b"%PDF odd").hexdigest()),
        ("b.pdf", hashlib.sha256(b"%PDF plain").hexdigest()),
    ]


async def test_two_attachments_of_one_name_are_refused_before_sending(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    for folder in ("june", "july"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "statement.pdf").write_bytes(folder.encode())
    files = [tmp_path / "june" / "statement.pdf", tmp_path / "july" / "statement.pdf"]
    with pytest.raises(skala.ValidationError) as caught:
        await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", files=files)
    assert caught.value.problems == (
        "files[1]: 'statement.pdf' is also the name of files[0] (names are compared "
        "ignoring case); give each attachment its own name with "
        'Attachment.from_path(path, filename="receipt.pdf")',
    )
    assert skala_sandbox.requests == []
    # Renamed as the message says, both arrive under their names.
    renamed = [files[0], skala.Attachment.from_path(files[1], filename="statement-july.pdf")]
    await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", files=renamed)
    [req] = skala_sandbox.requests_to("create")
    assert [f.filename for f in req.files] == ["statement.pdf", "statement-july.pdf"]


async def test_a_nameless_file_object_is_told_how_to_name_it(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    buffer = io.BytesIO(b"%PDF in memory")
    with pytest.raises(skala.ValidationError) as caught:
        await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", files=[buffer])
    assert caught.value.problems == (
        "files[0]: needs a file name; give one with "
        'Attachment.from_file(f, filename="receipt.pdf")',
    )
    assert skala_sandbox.requests == []
    named = skala.Attachment.from_file(buffer, filename="receipt.pdf")
    await skala_client.create_ticket(skala_sandbox.customer_id, "S", "D", files=[named])
    [req] = skala_sandbox.requests_to("create")
    assert [(f.filename, f.size) for f in req.files] == [("receipt.pdf", 14)]
    assert not buffer.closed


# ================================================================ sync calls on a serving loop


def _sync_calls(customer_id: str) -> dict[str, Callable[[SyncClient], object]]:
    ticket_id = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    draft = skala.TicketDraft(customer_id, "S", "D")
    return {
        "create_ticket()": lambda c: c.create_ticket(customer_id, "S", "D"),
        "submit()": lambda c: c.submit(draft),
        "get_ticket()": lambda c: c.get_ticket(ticket_id),
        "refresh()": lambda c: c.ticket_handle(ticket_id).refresh(),
        "wait_until_created()": lambda c: c.ticket_handle(ticket_id).wait_until_created(5),
        "watch()": lambda c: list(c.ticket_handle(ticket_id).watch(5)),
        "create_many()": lambda c: c.create_many([draft]),
        "submit_many()": lambda c: list(c.submit_many([draft])),
    }


CALLS = list(_sync_calls("x"))


async def _blocking_in_thread_guarded(fn: Callable[[], object]) -> BaseException | None:
    """Call ``fn`` on this loop's own thread (it blocks the loop, as a user's code would),
    returning what it raised."""
    try:
        fn()
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize("call", CALLS)
async def test_sync_client_on_the_loop_of_an_async_sandbox_fails_at_once(call: str) -> None:
    async with SkalaSandbox() as sb:
        with SyncClient(
            sb.client_id,
            sb.client_secret,
            base_url=sb.url,
            poll=FAST_POLL,
            retry=FAST_RETRY,
            timeouts=Timeouts(connect=2, read=2, upload_read=2),
        ) as client:
            error = await _blocking_in_thread_guarded(
                lambda: _sync_calls(sb.customer_id)[call](client)
            )
        assert isinstance(error, RuntimeError), error
        message = str(error)
        assert message.startswith(f"{call} would block this thread's event loop")
        assert sb.url.removeprefix("http://") in message
        assert "SkalaSandbox" in message
        assert "skala_async.sync.Sandbox" in message
        await asyncio.sleep(0.05)  # the loop runs again: anything sent would arrive now
        assert sb.requests == []


async def test_the_same_client_works_once_the_sandbox_runs_elsewhere() -> None:
    """No false alarm: in a coroutine, a sync client talking to a sandbox on another
    thread works, and so does one whose own sandbox on this loop has closed."""
    with Sandbox(processing_delay=0.01) as sb:
        with SyncClient(sb.client_id, sb.client_secret, base_url=sb.url, poll=FAST_POLL) as c:
            ticket = c.create_ticket(sb.customer_id, "S", "D").wait_until_created(timeout=10)
        assert ticket.status is skala.TicketStatus.CREATED
    async with SkalaSandbox() as closed:
        url = closed.url
    assert _loopguard._blocked_server([url]) is None


@contextlib.asynccontextmanager
async def plain_server() -> AsyncIterator[int]:
    """Any aiohttp server on this loop (not the sandbox): its port."""
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_any_server_on_the_loop_is_found(host: str) -> None:
    async with plain_server() as port:
        with SyncClient(token="t0k3n-value", base_url=f"http://{host}:{port}") as client:
            error = await _blocking_in_thread_guarded(
                lambda: client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
            )
    assert isinstance(error, RuntimeError), error
    assert f"serves {host}:{port} (a server on this event loop)" in str(error)


async def test_a_proxy_served_by_the_loop_is_found_and_its_password_not_shown() -> None:
    async with plain_server() as port:
        # The API is elsewhere (a port nothing here serves), the proxy on this loop.
        with SyncClient(
            token="t0k3n-value",
            base_url="http://127.0.0.1:9",
            proxy=f"http://user:hunter2-pw@127.0.0.1:{port}",
        ) as client:
            error = await _blocking_in_thread_guarded(
                lambda: client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
            )
    assert isinstance(error, RuntimeError), error
    assert f"serves 127.0.0.1:{port} (a server on this event loop)" in str(error)
    assert "hunter2" not in str(error)
    assert "t0k3n" not in str(error)


class _SlottedLoop:
    """Stands for a loop that cannot be weakly referenced (uvloop's, say) and has no
    selector to look into."""

    __slots__ = ()


def test_a_loop_without_weak_references_or_selector_is_handled() -> None:
    loop: Any = _SlottedLoop()
    stopped = _loopguard.serving(loop, "http://127.0.0.1:8123", "the SkalaSandbox there")
    assert _loopguard._servers_of(loop) == {("127.0.0.1", 8123): "the SkalaSandbox there"}
    assert list(_loopguard._listening_ports(loop)) == []
    stopped()
    assert _loopguard._servers_of(loop) is None  # nothing kept once its server stopped
    with pytest.raises(ValueError, match="not a URL with a host"):
        _loopguard.serving(loop, "no-host", "x")


async def test_connections_and_other_hosts_are_not_taken_for_a_server_here() -> None:
    """A loopback connection the loop holds (not a listener), and a destination on another
    host, are no reason to refuse."""
    async with plain_server() as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            local_port = writer.get_extra_info("sockname")[1]
            assert _loopguard._blocked_server([f"http://127.0.0.1:{local_port}"]) is None
            assert _loopguard._blocked_server([f"https://api.example.com:{port}"]) is None
            assert _loopguard._blocked_server(["http://[::1]:bad", None, ""]) is None
            assert _loopguard._blocked_server([f"http://127.0.0.1:{port}"]) is not None
        finally:
            writer.close()
            await writer.wait_closed()
