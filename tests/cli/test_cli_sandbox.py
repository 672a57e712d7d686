"""``skala-tickets sandbox`` shows and keeps what it received: ``-v`` logs each request,
``--record FILE`` writes the record as JSON when it stops (SIGTERM or Ctrl-C), and
``--customer-id`` keeps one customer across restarts."""

from __future__ import annotations

import datetime
import hashlib
import json
import queue
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from skala_async.cli import EXIT_OK, EXIT_USAGE, main
from skala_async.sync import SkalaClient as SyncClient
from skala_async.testing import FAST_POLL, FAST_RETRY
from tests.helpers.cli import WITH_CTRL_C, serve

CUSTOMER = "5d0c7a52-3f1e-4c61-9a7e-2b8f0e6d4c11"
SECRET = "sandbox-ops-secret-4b1d9e"


def test_sandbox_logs_each_request_with_v_and_records_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "record.json"
    pdf = tmp_path / "receipt.pdf"
    pdf.write_bytes(b"%PDF-1.4 receipt")
    seen: dict[str, str] = {}

    def drive(first: str, lines: queue.Queue[str]) -> None:
        info = json.loads(first)
        assert info["customer_id"] == CUSTOMER
        with SyncClient(
            info["client_id"], SECRET, base_url=info["url"], poll=FAST_POLL, retry=FAST_RETRY
        ) as client:
            handle = client.create_ticket(CUSTOMER, "Hello", "From the CLI sandbox.", [pdf])
            ticket = handle.wait_until_created(timeout=10)
            seen["ticket_id"] = str(ticket.ticket_id)
            seen["issue_key"] = ticket.issue_key or ""

    argv = ["-v", "sandbox", "--port", "0", "--json", "--customer-id", CUSTOMER]
    argv += ["--record", str(record), "--client-secret", SECRET, "--delay", "0.01"]
    code, lines = serve(argv, monkeypatch, drive)
    err = capsys.readouterr().err
    assert code == EXIT_OK
    assert len(lines) == 1
    log = [line for line in err.splitlines() if "skala_async.testing.sandbox" in line]
    assert any(" INFO POST /oauth2/token/ 200 token req-" in line for line in log), log
    created = [line for line in log if "POST /api/v1/supportTickets/ 202 create" in line]
    assert len(created) == 1
    assert (
        f"customerId='{CUSTOMER}' summary='Hello' files=['receipt.pdf' 16 B] "
        f"ticket={seen['ticket_id']} req-" in created[0]
    )
    assert any(f"GET /api/v1/supportTickets/{seen['ticket_id']}/ 200 get" in x for x in log)
    count = len(json.loads(record.read_text())["requests"])
    assert f"record of {count} request(s) written to {record}" in err
    assert err.rstrip().endswith("sandbox stopped")

    text = record.read_text(encoding="utf-8")
    assert SECRET not in text + err
    data = json.loads(text)
    kinds = [r["endpoint"] for r in data["requests"]]
    assert kinds[:2] == ["token", "create"]
    assert set(kinds[2:]) == {"get"}
    token, create = data["requests"][:2]
    assert token["fields"] == {"grant_type": "client_credentials"}
    assert token["authorization_scheme"] == "Basic"
    assert "Authorization" not in token["headers"]
    assert create["fields"] == {
        "customerId": CUSTOMER,
        "summary": "Hello",
        "description": "From the CLI sandbox.",
    }
    assert create["files"] == [
        {
            "field_name": "files",
            "filename": "receipt.pdf",
            "content_type": "application/pdf",
            "size": 16,
            "sha256": hashlib.sha256(b"%PDF-1.4 receipt").hexdigest(),
        }
    ]
    assert create["status"] == 202
    received = datetime.datetime.fromisoformat(create["received_at"].replace("Z", "+00:00"))
    assert received.tzinfo is not None
    [ticket] = data["tickets"]
    assert (ticket["ticket_id"], ticket["customer_id"]) == (seen["ticket_id"], CUSTOMER)
    assert (ticket["status"], ticket["issue_key"]) == ("CREATED", seen["issue_key"])
    assert ticket["created_at"] <= ticket["finished_at"]


def test_the_customer_id_survives_a_restart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys: list[str] = []

    def drive(first: str, lines: queue.Queue[str]) -> None:
        info = json.loads(first)
        with SyncClient(
            "ops-id", SECRET, base_url=info["url"], poll=FAST_POLL, retry=FAST_RETRY
        ) as client:
            ticket = client.create_ticket(CUSTOMER, "Again", "Same customer").wait_until_created(
                timeout=10
            )
            keys.append(ticket.issue_key or "")

    argv = ["sandbox", "--port", "0", "--json", "--customer-id", CUSTOMER.upper()]
    argv += ["--client-id", "ops-id", "--client-secret", SECRET, "--delay", "0.01"]
    for _ in range(2):  # two runs: a sandbox restarted with the same options
        code, lines = serve(argv, monkeypatch, drive)
        assert code == EXIT_OK
        assert json.loads(lines[0])["customer_id"] == CUSTOMER
    assert len(keys) == 2
    assert all(k.startswith("SUP-") for k in keys)
    capsys.readouterr()


def test_sandbox_options_that_cannot_work_fail_before_it_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sandbox", "--port", "0", "--customer-id", "not-a-uuid"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "--customer-id: customer_id must be a UUID: 'not-a-uuid'" in captured.err
    assert captured.out == ""
    missing = tmp_path / "no-such-folder" / "record.json"
    assert main(["sandbox", "--port", "0", "--record", str(missing)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert f"--record: cannot write {str(missing)!r}: No such file or directory" in captured.err
    assert captured.out == ""


def test_ctrl_c_writes_the_record(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    argv = ["sandbox", "--port", "0", "--json", "--record", str(record)]
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", WITH_CTRL_C, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/v1/supportTickets/", timeout=10)  # noqa: S310
        assert refused.value.code == 405
        refused.value.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_OK, err
    assert "Traceback" not in err
    [request] = json.loads(record.read_text())["requests"]
    assert (request["method"], request["path"], request["status"]) == (
        "GET",
        "/api/v1/supportTickets/",
        405,
    )
    assert f"record of 1 request(s) written to {record}" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_record_that_cannot_be_written_is_said(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def drive(first: str, lines: queue.Queue[str]) -> None:
        assert json.loads(first)["url"].startswith("http://127.0.0.1:")

    argv = ["sandbox", "--port", "0", "--json", "--record", "/dev/full"]
    code, _ = serve(argv, monkeypatch, drive)
    err = capsys.readouterr().err
    assert code == EXIT_OK  # the sandbox itself stopped as asked
    assert (
        "skala-tickets: error: --record: cannot write '/dev/full': No space left on device" in err
    )
    assert "sandbox stopped" in err
