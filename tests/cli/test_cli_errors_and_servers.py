"""More of the ``skala-tickets`` command line: the error paths users meet, option parsing,
the auto progress bar, the ``sandbox`` and ``webhooks listen`` servers with their options,
and the exit codes of the rare cases (internal error, closed stdout, Ctrl-C).

Like ``tests/cli/test_cli_commands.py``, ``main()`` runs in the test's thread; the servers it starts
(``sandbox``, ``webhooks listen``) are driven from a helper thread, which ends them with
SIGTERM once it is done, as a service manager would.
"""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import skala_async as skala
import skala_async.bulk
import skala_async.testing
from skala_async import SkalaClient
from skala_async.cli import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    ProgressBar,
    main,
)
from skala_async.sync import SkalaClient as SyncClient
from skala_async.testing import FAST_POLL, FAST_RETRY, Fault, SkalaSandbox
from skala_async.webhooks import SIGNATURE_HEADER, sign_payload
from tests.helpers.cli import (
    create_args,
    creds,
    png,
    post_event,
    serve,
    signed_event,
    threaded_sandbox,
)

SECRET = "cli-more-secret-Zebra-0042"
WEBHOOK_SECRET = "cli-more-webhook-secret"


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SKALA_CLIENT_ID",
        "SKALA_CLIENT_SECRET",
        "SKALA_BASE_URL",
        "SKALA_WEBHOOK_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.05, client_secret=SECRET) as sandbox:
        yield sandbox


def error_body(errors: object) -> str:
    return json.dumps(
        {
            "code": 20000,
            "type": "ValidationError",
            "status": 400,
            "detail": {"message": "Invalid input.", "errors": errors},
        }
    )


# ------------------------------------------------------------------------------ API errors


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (
            {"summary": ["Too long.", "Not a line."], "files": "Bad file."},
            ["  - summary: Too long.", "  - summary: Not a line.", "  - files: Bad file."],
        ),
        (["first problem", "second problem"], ["  - first problem", "  - second problem"]),
    ],
    ids=["per-field", "list"],
)
def test_a_400_lists_the_servers_problems(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str], errors: object, expected: list[str]
) -> None:
    sb.inject("create", Fault.http(400, body=error_body(errors), content_type="application/json"))
    assert main(["--json", *create_args(sb)]) == EXIT_REFUSED
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("skala-tickets: error: the API rejected the request: HTTP 400")
    assert lines[1:] == expected
    record = json.loads(out)
    assert record["ticket_id"] is None
    assert record["error"]["exception"] == "BadRequestError"
    assert record["error"]["http_status"] == 400
    assert record["error"]["problems"] == [p.removeprefix("  - ") for p in expected]
    assert sb.tickets == {}


def test_another_4xx_is_refused_with_the_status(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sb.inject("get", Fault.http(409))
    assert main(["get", str(uuid.uuid4()), *creds(sb)]) == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("skala-tickets: error: the API refused the request: HTTP 409")
    assert sb.count("get") == 1  # a 409 is not retried


# ------------------------------------------------------------------------------ input


def test_description_from_stdin(
    sb: SkalaSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Piped in.\nSecond line.\n"))
    argv = create_args(sb)
    i = argv.index("--description")
    argv[i : i + 2] = ["--description-file", "-"]
    assert main(argv) == EXIT_OK
    ticket_id = capsys.readouterr().out.strip()
    assert sb.tickets[ticket_id].description == "Piped in.\nSecond line.\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file or directory"), (b"caf\xe9\n", "can't decode byte 0xe9")],
    ids=["missing", "not-utf8"],
)
def test_unreadable_description_file_is_a_usage_error(
    sb: SkalaSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    reason: str,
) -> None:
    path = tmp_path / "description.txt"
    if content is not None:
        path.write_bytes(content)
    argv = create_args(sb)
    i = argv.index("--description")
    argv[i : i + 2] = ["--description-file", str(path)]
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert f"cannot read --description-file {str(path)!r}" in err
    assert reason in err
    assert sb.requests == []


def test_empty_token_is_a_usage_error(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["get", str(uuid.uuid4()), "--token", "", "--base-url", sb.url]
    assert main(argv) == EXIT_USAGE
    assert "--token must not be empty" in capsys.readouterr().err
    assert sb.requests == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["wait", str(uuid.uuid4()), "--timeout", "soon"], "not a number of seconds: 'soon'"),
        (["get", str(uuid.uuid4()), "--timeout", "nan"], "must be a positive number"),
        (["sandbox", "--delay", "fast"], "expected SECONDS or MIN,MAX, got 'fast'"),
        (["sandbox", "--delay", "2,1"], "with 0 <= MIN <= MAX: '2,1'"),
        (["sandbox", "--delay", "1,2,3"], "with 0 <= MIN <= MAX: '1,2,3'"),
        (["sandbox", "--port", "http"], "not a port number: 'http'"),
        (["sandbox", "--port", "70000"], "port must be 0 to 65535, got 70000"),
        (["webhooks", "listen", "--tolerance", "a minute"], "not a number of seconds"),
        (["webhooks", "listen", "--tolerance", "0"], "must be a positive number of seconds"),
        (["webhooks", "listen", "--tolerance", "inf"], "must be a positive number of seconds"),
    ],
)
def test_bad_option_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert "usage:" in err


# ------------------------------------------------------------------------------ progress


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("tty", "size", "flag", "drawn"),
    [
        (True, 1536 * 1024, None, True),  # a terminal and more than 1 MiB: a bar
        (True, 64, None, False),  # small attachments: no bar
        (False, 1536 * 1024, None, False),  # not a terminal: no bar
        (True, 1536 * 1024, "--no-progress", False),  # asked not to
    ],
    ids=["tty-big", "tty-small", "no-tty", "no-progress"],
)
def test_progress_bar_by_default_only_on_a_terminal_for_big_uploads(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tty: bool,
    size: int,
    flag: str | None,
    drawn: bool,
) -> None:
    stderr = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    shot = png(tmp_path / "screen.png", size=size)
    argv = create_args(sb, "--file", str(shot), *([flag] if flag else []))
    assert main(argv) == EXIT_OK
    ticket_id = capsys.readouterr().out.strip()
    assert [f.size for f in sb.tickets[ticket_id].files] == [size]
    if drawn:
        assert stderr.getvalue().startswith("\r[")
        assert stderr.getvalue().endswith("] 100% 1.5/1.5 MiB\n")
    else:
        assert stderr.getvalue() == ""


def test_auto_progress_with_a_missing_file_reports_it_and_draws_nothing(
    sb: SkalaSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    big = png(tmp_path / "big.png", size=1536 * 1024)
    argv = create_args(sb, "--file", str(big), "--file", str(tmp_path / "gone.png"))
    assert main(argv) == EXIT_USAGE
    assert not stderr.getvalue().startswith("\r[")
    assert "gone.png" in stderr.getvalue()
    assert sb.requests == []


def test_progress_bar_ignores_an_empty_total() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(0, 0)
    bar.finish()  # nothing was drawn: no newline either
    assert stream.getvalue() == ""
    bar(5, 4)  # clamped to the total
    bar.finish()
    bar.finish()  # only once
    assert stream.getvalue() == "\r[##########] 100% 0.0/0.0 MiB\n"


# ------------------------------------------------------------------------------ rare exits


def test_interrupt_during_get_and_during_bulk(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SkalaClient, "get_ticket", interrupt)
    assert main(["--json", "get", str(uuid.uuid4()), *creds(sb)]) == EXIT_INTERRUPTED
    out, err = capsys.readouterr()
    assert err == "skala-tickets: error: interrupted\n"
    assert json.loads(out)["error"]["exception"] == "Interrupted"

    def interrupt_bulk(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(skala_async.bulk, "submit_many", interrupt_bulk)
    src = tmp_path / "in.csv"
    src.write_text(f"customer_id,summary,description\n{sb.customer_id},S,D\n", encoding="utf-8")
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "run the same command again to continue from the journal" in err
    assert sb.count("create") == 0


def test_an_unexpected_exception_is_exit_70_without_a_traceback(
    sb: SkalaSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nwith two lines")

    monkeypatch.setattr(SkalaClient, "get_ticket", boom)
    assert main(["--json", "get", str(uuid.uuid4()), *creds(sb)]) == EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert err == (
        "skala-tickets: error: internal error (RuntimeError: boom with two lines); "
        "please report it (run with -v for details)\n"
    )
    record = json.loads(out)
    assert record["exit_code"] == EXIT_INTERNAL
    assert record["error"]["exception"] == "RuntimeError"


@pytest.mark.slow
def test_a_closed_stdout_exits_0_quietly(tmp_path: Path) -> None:
    payload = tmp_path / "event.json"
    payload.write_bytes(b'{"eventType": "SUPPORT_TICKET.CREATED"}')
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `skala-tickets ... | head -c0`: nobody reads
    try:
        result = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "skala_async", "webhooks", "sign", str(payload)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "SKALA_WEBHOOK_SECRET": WEBHOOK_SECRET},
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == EXIT_OK
    assert result.stderr == b""


# ------------------------------------------------------------------------------ demo


def test_demo_exits_non_zero_when_the_sandbox_misbehaves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo checks its own outcomes: tickets that end otherwise than intended fail it."""

    class Disabled(SkalaSandbox):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.support_tickets_enabled = False

    monkeypatch.setattr(skala_async.testing, "SkalaSandbox", Disabled)
    assert main(["demo"]) == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert "ticket id" not in out  # no table: nothing was created
    assert "Summary: 0 created, 0 failed, 0 rejected as intended" in out
    lines = err.splitlines()
    assert len(lines) == 6
    assert all("20061" in line for line in lines)
    assert lines[0].startswith("skala-tickets: error: demo ticket 'Card top-up not credited': ")

    class Failing(SkalaSandbox):
        def __init__(self, **options: Any) -> None:
            super().__init__(**{**options, "processing_delay": 0.01})
            self.outcome = "FAILED"

    monkeypatch.setattr(skala_async.testing, "SkalaSandbox", Failing)
    assert main(["demo"]) == 1
    out, err = capsys.readouterr()
    assert "Summary: 0 created, 5 failed, 1 rejected as intended" in out
    assert err.count("ended FAILED, not as intended") == 5


# ------------------------------------------------------------------------------ servers


def test_sandbox_command_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def drive(first: str, lines: queue.Queue[str]) -> None:
        info = json.loads(first)
        seen.update(info)
        assert (info["client_id"], info["client_secret"]) == ("my-id", "my-secret")
        with SyncClient(
            "my-id", "my-secret", base_url=info["url"], poll=FAST_POLL, retry=FAST_RETRY
        ) as client:
            handle = client.create_ticket(info["customer_id"], "Hello", "From the CLI sandbox.")
            ticket = handle.wait_until_created(timeout=10, raise_on_failure=False)
            seen["status"] = ticket.status
            seen["issue_key"] = ticket.issue_key

    argv = ["sandbox", "--port", "0", "--json", "--client-id", "my-id"]
    argv += ["--client-secret", "my-secret", "--outcome", "FAILED", "--delay", "0.01,0.02"]
    code, lines = serve(argv, monkeypatch, drive)
    assert code == EXIT_OK
    assert len(lines) == 1  # --json: the one object, nothing else on stdout
    assert seen["status"] is skala.TicketStatus.FAILED
    assert seen["issue_key"] is None
    assert capsys.readouterr().err == "sandbox stopped\n"


def test_sandbox_command_can_disable_support_tickets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused: list[skala.SupportTicketsNotEnabledError] = []

    def drive(first: str, lines: queue.Queue[str]) -> None:
        assert first.startswith("Sandbox listening on http://127.0.0.1:")
        banner = dict(
            line.strip().split("=", 1) for line in (lines.get(timeout=5) for _ in range(3))
        )
        customer = lines.get(timeout=5).rsplit(" ", 1)[1]
        with SyncClient(
            banner["SKALA_CLIENT_ID"],
            banner["SKALA_CLIENT_SECRET"],
            base_url=banner["SKALA_BASE_URL"],
            retry=FAST_RETRY,
        ) as client:
            try:
                client.create_ticket(customer, "Hello", "Anyone?")
            except skala.SupportTicketsNotEnabledError as exc:
                refused.append(exc)

    code, lines = serve(["sandbox", "--port", "0", "--disable-support-tickets"], monkeypatch, drive)
    assert code == EXIT_OK
    assert [exc.code for exc in refused] == [20061]
    assert lines[-1] == "Press Ctrl-C to stop."
    assert "sandbox stopped" in capsys.readouterr().err


def test_webhooks_listen_prints_one_line_per_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    created, failed = str(uuid.uuid4()), str(uuid.uuid4())
    answers: list[int] = []

    def drive(first: str, lines: queue.Queue[str]) -> None:
        prefix = "Listening for webhooks on "
        assert first.startswith(prefix)
        url = first.removeprefix(prefix).split(" ", 1)[0]
        answers.append(
            post_event(url + "hooks/skala", signed_event(created, "CREATED", "SUP-77"), SECRET)
        )
        answers.append(post_event(url, signed_event(failed, "FAILED", None), SECRET))
        answers.append(post_event(url, signed_event(failed, "FAILED", None), "not-the-secret"))
        assert lines.get(timeout=5)  # both events printed before stopping
        assert lines.get(timeout=5)

    code, lines = serve(
        ["webhooks", "listen", "--port", "0", "--secret", "old", "--secret", SECRET],
        monkeypatch,
        drive,
    )
    assert code == EXIT_OK
    assert answers == [200, 200, 401]
    assert lines[1:] == [
        f"2025-03-04T05:06:07.890000Z SUPPORT_TICKET.CREATED {created} CREATED SUP-77",
        f"2025-03-04T05:06:07.890000Z SUPPORT_TICKET.FAILED {failed} FAILED",
    ]
    err = capsys.readouterr().err
    assert err.count("skala-tickets: webhook refused (401)") == 1
    assert err.endswith("webhook listener stopped\n")
    assert SECRET not in err


def test_webhooks_listen_verbose_logs_refusals_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", SECRET)

    def drive(first: str, lines: queue.Queue[str]) -> None:
        url = json.loads(first)["url"]
        assert post_event(url, signed_event(str(uuid.uuid4()), "CREATED", "SUP-1"), "wrong") == 401

    code, lines = serve(["webhooks", "listen", "--port", "0", "--json", "-v"], monkeypatch, drive)
    assert code == EXIT_OK
    assert len(lines) == 1
    err = capsys.readouterr().err
    refusals = [line for line in err.splitlines() if "webhook refused (401)" in line]
    assert len(refusals) == 1  # -v logs it; the plain refusal line is not added twice
    assert " skala_async.webhooks WARNING " in refusals[0]


def test_webhooks_listen_refuses_stale_events_with_a_tolerance(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: list[int] = []

    def drive(first: str, lines: queue.Queue[str]) -> None:
        url = json.loads(first)["url"]
        answers.append(post_event(url, signed_event(str(uuid.uuid4()), "CREATED", "SUP-1"), SECRET))

    argv = ["webhooks", "listen", "--port", "0", "--json", "--secret", SECRET, "--tolerance", "300"]
    code, lines = serve(argv, monkeypatch, drive)
    assert code == EXIT_OK
    assert answers == [400]  # signed correctly, but issued in 2025: outside 5 minutes
    assert len(lines) == 1  # the URL only: no event printed
    assert "skala-tickets: webhook refused (400)" in capsys.readouterr().err


def test_webhooks_sign_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = signed_event(str(uuid.uuid4()), "CREATED", "SUP-9") + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert main(["webhooks", "sign", "-", "--secret", WEBHOOK_SECRET]) == EXIT_OK
    assert capsys.readouterr().out == f"{SIGNATURE_HEADER}: {sign_payload(body, WEBHOOK_SECRET)}\n"
