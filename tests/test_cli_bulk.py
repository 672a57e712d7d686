"""``skala-tickets bulk``: CSV/JSONL in, one result row per input out, resumable."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async.cli import main
from skala_async.testing import Fault, SkalaSandbox
from tests.test_cli import creds, threaded_sandbox

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
