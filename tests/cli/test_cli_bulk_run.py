"""``skala-tickets bulk``: CSV/JSONL in, one result row per input out, resumable; the input
formats, and what a results file or an input that cannot be used does to a run."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from skala_async.testing import Fault, SkalaSandbox
from tests.helpers.bulk_files import jsonl_line
from tests.helpers.cli import creds, threaded_sandbox

SECRET = "bulk-cli-secret-0123456789abcdef"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.05, client_secret=SECRET) as sandbox:
        yield sandbox


def write_csv(path: Path, sb: SkalaSandbox, n: int, extra: list[list[str]] = ()) -> Path:  # type: ignore[assignment]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "attachments", "reference"])
        for i in range(n):
            w.writerow([sb.customer_id, f"Ticket {i}", f"Body {i}", "", f"r{i}"])
        for row in extra:
            w.writerow(row)
    return path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_bulk_csv_with_attachments_and_a_bad_row(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (tmp_path / "files" / "b.png").write_bytes(b"\x89PNG b")
    (tmp_path / "x.exe").write_bytes(b"MZ")
    src = write_csv(
        tmp_path / "in.csv",
        sb,
        5,
        [
            [sb.customer_id, "With files", "Two files", "files/a.pdf; files/b.png", "att"],
            [sb.customer_id, "Bad", "", "x.exe", "bad"],
        ],
    )
    code = main(["bulk", str(src), *creds(sb), "--wait", "--no-progress"])
    out = capsys.readouterr()
    assert code == 3  # one input rejected
    assert "created 6" in out.out
    assert "rejected 1" in out.out
    result = {r["reference"]: r for r in rows(tmp_path / "in.csv.results.csv")}
    assert len(result) == 7
    assert result["bad"]["outcome"] == "rejected"
    assert "x.exe" in result["bad"]["error"]
    assert result["att"]["status"] == "CREATED"
    assert result["att"]["issue_key"].startswith("SUP-")
    [att_req] = [r for r in sb.requests_to("create") if r.fields.get("summary") == "With files"]
    assert [f.filename for f in att_req.files] == ["a.pdf", "b.png"]
    assert SECRET not in out.out + out.err


def test_bulk_rerun_continues_from_the_journal(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 12)
    sb.inject("create", Fault.http(502))
    assert main(["bulk", str(src), *creds(sb), "--no-progress", "--concurrency", "1"]) == 4
    sent = sb.count("create")
    assert sent == 12
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == 4
    assert sb.count("create") == sent  # nothing resent
    again = rows(tmp_path / "in.csv.results.csv")
    assert {r["from_journal"] for r in again} == {"yes"}
    assert main(["bulk", str(src), *creds(sb), "--resend-uncertain", "--no-progress"]) == 0
    assert sb.count("create") == sent + 1
    capsys.readouterr()


def test_bulk_jsonl_json_output_and_results_jsonl(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"customerId": sb.customer_id, "summary": f"S{i}", "description": "D"})
        for i in range(3)
    ]
    src.write_text("\n".join([*lines, "not json", "[1, 2]"]) + "\n", encoding="utf-8")
    out_path = tmp_path / "out.jsonl"
    code = main(
        ["--json", "bulk", str(src), *creds(sb), "--results", str(out_path), "--no-journal"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 3
    assert doc["counts"] == {"created": 3, "rejected": 2, "uncertain": 0, "failed": 0}
    assert doc["journal"] is None
    results = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert len(results) == 5
    errors = [r["error"] for r in results if r["outcome"] == "rejected"]
    assert any("not JSON" in e for e in errors)
    assert any("JSON object" in e for e in errors)


def test_bulk_usage_errors(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bulk", str(tmp_path / "missing.csv"), *creds(sb)]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("summary,description\nx,y\n", encoding="utf-8")
    assert main(["bulk", str(bad), *creds(sb)]) == 2
    assert "customer_id" in capsys.readouterr().err
    good = write_csv(tmp_path / "in.csv", sb, 1)
    assert main(["bulk", str(good), *creds(sb), "--concurrency", "0"]) == 2
    assert sb.requests == []


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
