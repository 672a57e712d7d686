"""``skala-tickets bulk``'s progress line (with and without ``--wait``) and its counts on
Ctrl-C, against a sandbox on 127.0.0.1."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async.bulk import BulkOutcome, BulkResult
from skala_async.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    main,
)
from skala_async.cli.bulk import BulkProgress, Tally, _progress
from skala_async.models import Ticket, TicketStatus
from skala_async.testing import SkalaSandbox
from tests.helpers.bulk_files import HEADER, write, write_csv
from tests.helpers.cli import creds, threaded_sandbox

SECRET = "bulk-ops-secret-0123456789abcdef"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.02, client_secret=SECRET) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ progress


def result(index: int, outcome: BulkOutcome) -> BulkResult:
    return BulkResult(index, f"ref:{index}", str(index), outcome)


def test_bulk_progress_bar_format_and_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    # The bar's own clock only (not the time module every thread shares).
    monkeypatch.setattr(_progress, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    stream = io.StringIO()
    bar = BulkProgress(stream, total=4, width=8)
    clock[0] = 101.0
    bar(result(0, BulkOutcome.CREATED))  # drawn: the first one
    clock[0] = 101.05
    bar(result(1, BulkOutcome.REJECTED))  # within 0.1 s of the last draw: skipped
    clock[0] = 102.0
    bar(result(2, BulkOutcome.UNCERTAIN))
    clock[0] = 102.01
    bar(result(3, BulkOutcome.CREATED))  # the last one is always drawn
    bar.finish()
    assert stream.getvalue() == (
        "\r[##......] 1/4 created 1 · rejected 0 · uncertain 0 · failed 0 · 1/s · ETA 3s "
        "\r[######..] 3/4 created 1 · rejected 1 · uncertain 1 · failed 0 · 2/s · ETA 1s "
        "\r[########] 4/4 created 2 · rejected 1 · uncertain 1 · failed 0 · 2/s · ETA 0s \n"
    )


def test_bulk_progress_of_an_empty_input_draws_nothing() -> None:
    stream = io.StringIO()
    bar = BulkProgress(stream, total=0)
    bar.finish()
    assert stream.getvalue() == ""


def test_bulk_progress_on_stderr(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 3)
    assert main(["bulk", str(src), *creds(sb), "--progress", "--no-journal"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err.startswith("\r[")
    assert "] 3/3 created 3 · rejected 0 · uncertain 0 · failed 0 · " in err
    assert err.endswith(" · ETA 0s \n")
    assert "3 inputs: created 3 · rejected 0 · uncertain 0 · failed 0" in out
    assert len(sb.tickets) == 3


# ------------------------------------------------------------------------------ progress


def created(index: int, ticket_id: uuid.UUID, status: TicketStatus | None) -> BulkResult:
    ticket = Ticket(ticket_id, status, None) if status is not None else None
    return BulkResult(index, f"ref:{index}", str(index), BulkOutcome.CREATED, ticket_id, ticket)


def test_wait_progress_counts_accepted_inputs_and_finished_waits_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    clock = [10.0]
    monkeypatch.setattr(_progress, "time", type("T", (), {"monotonic": lambda: clock[0]}))
    tally = Tally(total=4, wait=True)
    stream = io.StringIO()
    progress = BulkProgress(stream, 4, width=8, tally=tally)
    ids = [uuid.uuid4() for _ in range(3)]
    for tid in ids:
        clock[0] += 1
        tally.accept(tid)  # a 202: the wait begins
        progress.refresh()
    clock[0] += 1
    tally.add(BulkResult(3, "ref:3", "3", BulkOutcome.REJECTED))
    progress.refresh()
    clock[0] += 1
    tally.add(created(0, ids[0], TicketStatus.CREATED))
    progress.refresh()
    lines = stream.getvalue().split("\r")[1:]
    assert lines[2] == (
        "[######..] 3/4 sent · accepted 3 · rejected 0 · uncertain 0 · failed 0 · waits done "
        "0/3 (CREATED 0, FAILED 0, no outcome 0) · 1/s · ETA 1s "
    )
    assert lines[-1] == (
        "[########] 4/4 sent · accepted 3 · rejected 1 · uncertain 0 · failed 0 · waits done "
        "1/3 (CREATED 1, FAILED 0, no outcome 0) · 1/s · ETA 0s "
    )
    tally.add(created(1, ids[1], TicketStatus.FAILED))
    tally.add(created(2, ids[2], None))  # its wait ended without an outcome
    assert tally.text().endswith("waits done 3/3 (CREATED 1, FAILED 1, no outcome 1)")


def test_wait_progress_on_a_real_run(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[sb.customer_id, f"T{i}", "D", "", f"r{i}"] for i in range(3)]
    rows.append(["not-a-uuid", "Bad", "D", "", "bad"])
    src = write(tmp_path / "in.csv", [HEADER, *rows])
    code = main(["bulk", str(src), *creds(sb), "--wait", "--progress", "--no-journal"])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    last = err.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("[########################] 4/4 sent · accepted 3 · rejected 1 · ")
    assert "waits done 3/3 (CREATED 3, FAILED 0, no outcome 0)" in last


_WITH_CTRL_C = (
    # A background job of a non-interactive shell inherits SIGINT ignored: restore it.
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from skala_async.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_ctrl_c_during_bulk_wait_prints_the_counts(tmp_path: Path) -> None:
    # Tickets never finish: the waits are running when Ctrl-C comes.
    with threaded_sandbox(processing_delay=None, client_secret=SECRET) as sandbox:
        rows = [[sandbox.customer_id, f"T{i}", "D", "", f"r{i}"] for i in range(3)]
        rows.append([sandbox.customer_id, "", "D", "", "empty"])
        src = write(tmp_path / "in.csv", [HEADER, *rows])
        argv = ["bulk", str(src), "--base-url", sandbox.url, "--client-id", sandbox.client_id]
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-c", _WITH_CTRL_C, *argv, "--wait", "--progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SKALA_CLIENT_SECRET": SECRET},
        )
        try:
            # Each wait polls once its ticket was accepted: a GET of every ticket means the
            # command has seen the three 202s.
            def polled() -> int:
                return len({r.ticket_id for r in sandbox.requests_to("get")})

            deadline = time.monotonic() + 30
            while polled() < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert polled() == 3
            assert sandbox.count("create", status=202) == 3
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    # The progress line ends before the message, which gives both counts.
    expected = (
        "\nskala-tickets: error: interrupted after: accepted 3 · rejected 1 · uncertain 0 · "
        "failed 0 · waits done 0/3 (CREATED 0, FAILED 0, no outcome 0); run the same command "
        "again to continue from the journal"
    )
    assert expected in err
    assert SECRET not in out + err


async def test_a_change_too_soon_after_a_draw_is_drawn_a_moment_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    clock = [10.0]
    monkeypatch.setattr(_progress, "time", type("T", (), {"monotonic": lambda: clock[0]}))
    tally = Tally(total=5, wait=True)
    stream = io.StringIO()
    progress = BulkProgress(stream, 5, width=5, tally=tally)
    tally.accept(uuid.uuid4())
    progress.refresh()
    tally.accept(uuid.uuid4())
    progress.refresh()  # within 0.1 s of the last draw: drawn later, not lost
    assert stream.getvalue().count("\r") == 1
    clock[0] += 1
    deadline = asyncio.get_running_loop().time() + 10
    while stream.getvalue().count("\r") < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert "accepted 2 ·" in stream.getvalue().rsplit("\r", 1)[1]
    tally.accept(uuid.uuid4())
    progress.refresh()  # too soon again; then the run ends: nothing is drawn after the end
    progress.finish()
    await asyncio.sleep(0.15)
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("\n")
