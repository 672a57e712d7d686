"""The webhook commands of the CLI (sign, listen) and the benchmark smoke run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from skala_async.cli import main
from tests.helpers.webhooks import (
    ROOT,
    SECRET,
    TICKET_ID,
    documented_signature,
    event_dict,
    post,
    signed,
    wire,
)


def test_cli_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = wire(event_dict())
    path = tmp_path / "event.json"
    path.write_bytes(body)
    assert main(["webhooks", "sign", str(path), "--secret", SECRET]) == 0
    assert capsys.readouterr().out == f"Http-X-Wh-Signature-256: {documented_signature(body)}\n"
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", SECRET)
    assert main(["webhooks", "sign", str(path), "--json", "--header", "X-Wh-Signature-256"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "header": "X-Wh-Signature-256",
        "value": documented_signature(body),
    }
    assert main(["webhooks", "sign", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["webhooks", "sign", str(path), "--secret", "a", "--secret", "b"]) == 2
    monkeypatch.delenv("SKALA_WEBHOOK_SECRET")
    assert main(["webhooks", "sign", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "SKALA_WEBHOOK_SECRET" in err
    assert SECRET not in out + err


_WITH_CTRL_C = (
    # A background job of a non-interactive shell inherits SIGINT ignored: restore it.
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from skala_async.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_cli_listen_prints_verified_events(
    http: aiohttp.ClientSession, stop: signal.Signals
) -> None:
    env = {**os.environ, "SKALA_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", _WITH_CTRL_C, "webhooks", "listen", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        body = wire(event_dict(customerId="3c90c3cc-0d44-4b50-8888-8dd25736052a"))
        assert await post(http, url + "any/path", body, signed(body)) == (200, "ok")
        assert await post(http, url, body, signed(body)) == (200, "duplicate")
        assert (await post(http, url, body, signed(body, "wrong")))[0] == 401
        record = json.loads(proc.stdout.readline())
        assert record == {
            "event_type": "SUPPORT_TICKET.CREATED",
            "issued_at": record["issued_at"],
            "ticket_id": TICKET_ID,
            "status": "CREATED",
            "issue_key": "SUP-1234",
            "extra": {"supportTicket": {"customerId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}},
        }
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == ""  # one line per event, and the duplicate was not printed
        assert "webhook refused (401)" in err
        assert "webhook listener stopped" in err
        assert "Traceback" not in err
        assert SECRET not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_listen_needs_a_secret_and_a_free_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKALA_WEBHOOK_SECRET", raising=False)
    assert main(["webhooks", "listen", "--port", "0"]) == 2
    assert "SKALA_WEBHOOK_SECRET" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["webhooks", "listen", "--port", str(port), "--secret", "s"]) == 4
    assert "cannot listen" in capsys.readouterr().err


# ------------------------------------------------------------------------------ benchmark


@pytest.mark.slow
def test_benchmark_smoke() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(ROOT / "benchmarks" / "bench_webhooks.py"), "--quick", "--no-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GETs per ticket" in result.stdout
    assert "webhooks dropped" in result.stdout
