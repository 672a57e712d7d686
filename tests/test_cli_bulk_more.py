"""More of ``skala-tickets bulk``: the progress bar, ``--format``, JSON Lines details,
``--wait`` with FAILED tickets, and inputs or outputs that cannot be used."""

from __future__ import annotations

import csv
import io
import json
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async import _cli_bulk
from skala_async._cli_bulk import BulkProgress
from skala_async.bulk import BulkOutcome, BulkResult
from skala_async.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from skala_async.testing import SkalaSandbox
from tests.test_cli import creds, threaded_sandbox

SECRET = "bulk-cli-more-secret-0123456789"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.02, client_secret=SECRET) as sandbox:
        yield sandbox


def write_csv(path: Path, sb: SkalaSandbox, n: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "reference"])
        for i in range(n):
            w.writerow([sb.customer_id, f"Ticket {i}", f"Body {i}", f"r{i}"])
    return path


def jsonl_line(sb: SkalaSandbox, i: int) -> str:
    return json.dumps({"customerId": sb.customer_id, "summary": f"S{i}", "description": "D"})


# ------------------------------------------------------------------------------ progress


def result(index: int, outcome: BulkOutcome) -> BulkResult:
    return BulkResult(index, f"ref:{index}", str(index), outcome)


def test_bulk_progress_bar_format_and_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    # The bar's own clock only (not the time module every thread shares).
    monkeypatch.setattr(_cli_bulk, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
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


# ------------------------------------------------------------------------------ formats


def test_format_option_overrides_the_extension(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "export.txt"
    src.write_text("\n".join(jsonl_line(sb, i) for i in range(2)) + "\n", encoding="utf-8")
    # By its extension it is a CSV, without the columns a CSV needs.
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_USAGE
    assert "missing column(s): customer_id, summary, description" in capsys.readouterr().err
    assert sb.requests_to("create") == []

    args = ["--json", "bulk", str(src), *creds(sb), "--no-progress", "--format", "jsonl"]
    assert main(args) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["created"] == 2
    assert sorted(t.summary for t in sb.tickets.values()) == ["S0", "S1"]


def test_blank_jsonl_lines_are_not_inputs(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(f"{jsonl_line(sb, 0)}\n\n   \n{jsonl_line(sb, 1)}\n\n", encoding="utf-8")
    assert main(["--json", "bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["inputs"] == 2
    assert doc["counts"] == {"created": 2, "rejected": 0, "uncertain": 0, "failed": 0}
    with (tmp_path / "in.jsonl.results.csv").open(newline="", encoding="utf-8") as f:
        assert [r["index"] for r in csv.DictReader(f)] == ["0", "1"]


def test_blank_attachment_entries_are_ignored(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (tmp_path / "b.png").write_bytes(b"\x89PNG b")
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "attachments"])
        w.writerow([sb.customer_id, "Two files", "Sloppy list", " a.pdf ;; b.png; "])
    assert main(["bulk", str(src), *creds(sb), "--no-progress", "--no-journal"]) == EXIT_OK
    capsys.readouterr()
    [create] = sb.requests_to("create")
    assert [f.filename for f in create.files] == ["a.pdf", "b.png"]


def test_wait_with_failed_tickets_exits_1(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sb.outcome = lambda ticket_id, fields: (
        "FAILED" if fields["summary"] == "Ticket 1" else "CREATED"
    )
    src = write_csv(tmp_path / "in.csv", sb, 3)
    assert main(["bulk", str(src), *creds(sb), "--wait", "--no-progress"]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "3 inputs: created 3 · rejected 0 · uncertain 0 · failed 0" in out
    assert "1 ticket(s) ended FAILED" in out
    with (tmp_path / "in.csv.results.csv").open(newline="", encoding="utf-8") as f:
        statuses = {r["reference"]: r["status"] for r in csv.DictReader(f)}
    assert statuses == {"r0": "CREATED", "r1": "FAILED", "r2": "CREATED"}


# ------------------------------------------------------------------------------ unusable files


def test_results_file_that_cannot_be_written(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 1)
    target = tmp_path / "no-such-folder" / "out.csv"
    assert main(["bulk", str(src), *creds(sb), "--results", str(target)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot write {target}: No such file or directory" in err
    assert sb.requests == []


@pytest.mark.parametrize("where", ["header", "row"])
def test_input_that_is_not_utf8_is_a_usage_error(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    src = tmp_path / "in.csv"
    header = b"customer_id,summary,description" + (b",r\xe9f" if where == "header" else b"")
    row = f"{sb.customer_id},Caf".encode() + b"\xe9,Body" + (b"," if where == "header" else b"")
    src.write_bytes(header + b"\n" + row + b"\n")
    code = main(["bulk", str(src), *creds(sb), "--no-progress"])
    err = capsys.readouterr().err
    assert sb.requests_to("create") == []
    assert "in.csv: not UTF-8 text" in err
    assert code == EXIT_USAGE
