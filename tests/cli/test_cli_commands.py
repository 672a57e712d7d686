"""Tests of the ``skala-tickets`` command line.

``main()`` runs its own event loop (``asyncio.run``), so these tests are synchronous: the
sandbox serves from a background thread with a loop of its own, and ``main()`` runs in the
test's thread against it, over 127.0.0.1. The ``sandbox`` subcommand and ``python -m
skala_async`` run in subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async import SkalaClient, TicketHandle
from skala_async.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    ProgressBar,
    main,
)
from skala_async.testing import Fault, SkalaSandbox
from tests.helpers.cli import WITH_CTRL_C, create_args, creds, png, threaded_sandbox

SECRET = "s3cr3t-Zebra-Quokka-7781"
ENV_NAMES = ("SKALA_CLIENT_ID", "SKALA_CLIENT_SECRET", "SKALA_BASE_URL")


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.05, client_secret=SECRET) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ demo


def test_demo_prints_a_table_with_issue_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert len(re.findall(r"\bCREATED\s+SUP-\d+", out)) == 5
    assert "seconds to outcome" in out
    assert re.search(r"CREATED\s+SUP-\d+\s+\d+\.\d\d\s+2$", out, re.MULTILINE)  # 2 attachments
    assert "no email" in out
    assert "20063" in out
    assert "Summary: 5 created, 0 failed, 1 rejected as intended" in out
    assert err == ""


def test_demo_json_is_one_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == EXIT_OK
    out, _ = capsys.readouterr()
    rows = json.loads(out)
    assert isinstance(rows, list)
    assert len(rows) == 6
    created = [r for r in rows if r["status"] == "CREATED"]
    assert len(created) == 5
    assert all(r["issue_key"].startswith("SUP-") for r in created)
    assert all(r["elapsed_seconds"] > 0 for r in created)
    assert sorted(r["attachments"] for r in created) == [0, 0, 0, 0, 2]
    (rejected,) = [r for r in rows if r["expected_rejection"]]
    assert rejected["ticket_id"] is None
    assert rejected["error"]["exception"] == "BadRequestError"
    assert rejected["error"]["code"] == 20063
    assert all(r["as_intended"] for r in rows)


# ------------------------------------------------------------------------------ create


def test_create_and_wait_prints_id_then_outcome(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = png(tmp_path / "screen.png", size=1536 * 1024)
    code = main(create_args(sb, "--file", str(big), "--wait", "--progress"))
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    ticket_id, outcome = out.splitlines()
    assert outcome.startswith("CREATED SUP-")
    received = sb.tickets[str(uuid.UUID(ticket_id))]
    assert [(f.filename, f.size) for f in received.files] == [("screen.png", 1536 * 1024)]
    # The progress bar: redrawn in place on stderr, ends at 100 % with a newline.
    assert err.startswith("\r[")
    assert err.endswith("] 100% 1.5/1.5 MiB\n")


def test_create_without_wait_json(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", *create_args(sb)]) == EXIT_OK
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["status"] == "PENDING"
    assert record["exit_code"] == 0
    assert record["error"] is None
    assert record["ticket_id"] in sb.tickets
    assert err == ""


def test_create_description_file(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "description.txt"
    text.write_text("Línea uno\nLínea dos\n", encoding="utf-8")
    argv = create_args(sb)
    i = argv.index("--description")
    argv[i : i + 2] = ["--description-file", str(text)]
    assert main(argv) == EXIT_OK
    ticket_id = capsys.readouterr().out.strip()
    assert sb.tickets[ticket_id].description == "Línea uno\nLínea dos\n"


def test_validation_lists_every_problem_and_sends_nothing(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ")
    argv = create_args(sb, "--file", str(exe))
    argv[argv.index("Card top-up not credited")] = "two\nlines"
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid input (2 problems)" in err
    assert "summary: must be a single line" in err
    assert "'setup.exe' has .exe" in err
    assert "Traceback" not in err
    assert sb.count("create") == 0


def test_validation_error_json(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = create_args(sb, "--file", str(tmp_path / "missing.pdf"), "--json")
    assert main(argv) == EXIT_USAGE
    out, _ = capsys.readouterr()
    record = json.loads(out)
    assert record["exit_code"] == EXIT_USAGE
    assert record["error"]["exception"] == "ValidationError"
    assert len(record["error"]["problems"]) == 1


def test_support_tickets_not_enabled(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    sb.support_tickets_enabled = False
    assert main(create_args(sb, "--wait")) == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == ""
    assert "20061" in err
    assert "ask your Ripio contact" in err
    assert len(err.strip().splitlines()) == 1


def test_customer_without_email_is_refused(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    no_email = sb.add_customer(email=None)
    assert main(create_args(sb, customer_id=no_email)) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "400" in err
    assert "no email" in err


def test_failed_ticket_exits_1(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    sb.outcome = "FAILED"
    assert main(create_args(sb, "--wait")) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "FAILED"
    assert "FAILED" in err


def test_wait_timeout_exits_5_and_says_how_to_resume(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sb.processing_delay = 60
    assert main(create_args(sb, "--wait", "--timeout", "0.3", "--json")) == EXIT_TIMEOUT
    out, err = capsys.readouterr()
    record = json.loads(out)  # --json: the one object, with the ticket id to resume from
    assert record["status"] == "PENDING"
    assert record["error"]["exception"] == "WaitTimeoutError"
    assert f"wait {record['ticket_id']}" in err


def test_create_outcome_unknown_exits_4(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sb.inject("create", Fault.http(500))
    assert main(create_args(sb)) == EXIT_TRANSPORT
    err = capsys.readouterr().err
    assert "may or may not have opened a ticket" in err
    assert "do not simply run this command again" in err
    assert sb.count("create") == 1  # never re-sent


def test_connection_refused_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["get", str(uuid.uuid4()), "--base-url", f"http://127.0.0.1:{port}"]
    argv += ["--client-id", "x", "--client-secret", "y", "--timeout", "0.5"]
    assert main(argv) == EXIT_TRANSPORT
    err = capsys.readouterr().err
    assert "network error" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ get / wait


def test_get_and_wait(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(create_args(sb)) == EXIT_OK
    ticket_id = capsys.readouterr().out.strip()

    assert main(["wait", ticket_id, *creds(sb), "--json"]) == EXIT_OK
    record = json.loads(capsys.readouterr().out)
    assert record["ticket_id"] == ticket_id
    assert record["status"] == "CREATED"
    assert record["issue_key"].startswith("SUP-")

    assert main(["get", ticket_id, *creds(sb)]) == EXIT_OK
    assert capsys.readouterr().out == f"CREATED {record['issue_key']}\n"


def test_get_unknown_ticket_and_malformed_id(
    sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", str(uuid.uuid4()), *creds(sb)]) == EXIT_REFUSED
    assert "not found" in capsys.readouterr().err
    assert main(["get", "not-a-uuid", *creds(sb)]) == EXIT_USAGE
    assert "is not a UUID" in capsys.readouterr().err


def test_credentials_from_environment(
    sb: SkalaSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKALA_BASE_URL", sb.url)
    monkeypatch.setenv("SKALA_CLIENT_ID", sb.client_id)
    monkeypatch.setenv("SKALA_CLIENT_SECRET", sb.client_secret)
    assert main(["get", str(uuid.uuid4())]) == EXIT_REFUSED  # authenticated, then 404
    assert "not found" in capsys.readouterr().err


def test_missing_credentials_and_insecure_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", str(uuid.uuid4())]) == EXIT_USAGE
    assert "credentials missing" in capsys.readouterr().err
    argv = ["get", str(uuid.uuid4()), "--token", "t", "--base-url", "http://example.com"]
    assert main(argv) == EXIT_USAGE
    assert "--allow-insecure-http" in capsys.readouterr().err
    assert main(["get", str(uuid.uuid4()), "--token", "t", "--client-id", "x"]) == EXIT_USAGE
    assert "either --token" in capsys.readouterr().err


def test_secrets_never_printed(sb: SkalaSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", *create_args(sb, "--wait")]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "POST /api/v1/supportTickets/" in err  # -v logs the requests ...
    assert SECRET not in out + err  # ... and never the secret
    # A wrong secret: refused, and neither secret is shown.
    argv = [*create_args(sb, "--wait", "-v"), "--client-secret", "wrong-" + SECRET]
    assert main(argv) == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert "authentication failed" in err
    assert SECRET not in out + err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ usage


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "--customer-id", str(uuid.uuid4())]) == EXIT_USAGE
    assert "required" in capsys.readouterr().err
    assert main(["wait", str(uuid.uuid4()), "--timeout", "-1"]) == EXIT_USAGE
    assert main([]) == EXIT_USAGE
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "130" in out


def test_interrupt_during_create_and_during_wait(
    sb: SkalaSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(SkalaClient, "create_ticket", interrupt)
        assert main(create_args(sb)) == EXIT_INTERRUPTED
    assert "may or may not exist" in capsys.readouterr().err

    monkeypatch.setattr(TicketHandle, "wait_until_created", interrupt)
    assert main(create_args(sb, "--wait")) == EXIT_INTERRUPTED
    out, err = capsys.readouterr()
    assert f"wait {out.strip()}" in err


def test_progress_bar_format() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    total = 25 * 1024 * 1024
    bar(0, total)
    bar(int(total * 0.42), total)
    bar(int(total * 0.42) + 1, total)  # same percent: not redrawn
    bar(total, total)
    bar.finish()
    assert stream.getvalue() == (
        "\r[..........] 0% 0.0/25.0 MiB"
        "\r[####......] 42% 10.5/25.0 MiB"
        "\r[##########] 100% 25.0/25.0 MiB\n"
    )


# ------------------------------------------------------------------------------ subprocesses


def test_sandbox_command_serves_until_ctrl_c() -> None:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", WITH_CTRL_C, "sandbox", "--port", "0", "--delay", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"Sandbox listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first
        banner: dict[str, str] = {}
        while len(banner) < 4:
            line = proc.stdout.readline().strip()
            if "=" in line:
                key, value = line.split("=", 1)
                banner[key] = value
            elif line.startswith("customer id (has an email):"):
                banner["customer"] = line.rsplit(" ", 1)[1]
        assert banner["SKALA_BASE_URL"] == match.group(1)
        env = {**os.environ, **{k: v for k, v in banner.items() if k.startswith("SKALA_")}}
        command = [sys.executable, "-m", "skala_async", "--json", "create", "--wait"]
        command += ["--customer-id", banner["customer"], "--summary", "Hi", "--description", "x"]
        result = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert result.returncode == EXIT_OK, result.stderr
        assert json.loads(result.stdout)["issue_key"].startswith("SUP-")
        assert banner["SKALA_CLIENT_SECRET"] not in result.stdout + result.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == EXIT_OK
        assert "sandbox stopped" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sandbox_command_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "skala_async", "sandbox", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"].startswith("http://127.0.0.1:")
        assert {"client_id", "client_secret", "customer_id", "customer_without_email_id"} <= set(
            info
        )
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == EXIT_OK
        assert out == ""
        assert "sandbox stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sandbox_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["sandbox", "--port", str(port), "--json"]) == EXIT_TRANSPORT
    out, err = capsys.readouterr()
    assert "cannot listen on" in err
    assert json.loads(out)["exit_code"] == EXIT_TRANSPORT
