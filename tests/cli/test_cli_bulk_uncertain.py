"""``skala-tickets bulk``'s uncertain file: what to check with Ripio, listed as the run
ends (or is interrupted) and kept in step with reruns, against a sandbox on 127.0.0.1."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async.bulk import BulkResult
from skala_async.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    main,
)
from skala_async.testing import Fault, SkalaSandbox
from tests.helpers.bulk_files import HEADER, read_csv, write
from tests.helpers.cli import creds, threaded_sandbox

SECRET = "bulk-ops-secret-0123456789abcdef"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.02, client_secret=SECRET) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ uncertain


def test_uncertain_inputs_are_listed_with_what_to_check_and_the_list_follows_reruns(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[sb.customer_id, f"Ticket {i}", f"Body {i}", "", f"r{i}"] for i in range(4)]
    rows.append([sb.customer_id, "No reference", "Body", "", ""])
    src = write(tmp_path / "in.csv", [HEADER, *rows])
    listed = tmp_path / "in.csv.uncertain.csv"
    sb.inject("create", Fault.http(502), times=2)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    code = main(["bulk", str(src), *creds(sb), "--no-progress", "--concurrency", "1"])
    after = datetime.datetime.now(datetime.timezone.utc)
    out = capsys.readouterr().out
    assert code == EXIT_TRANSPORT
    first = read_csv(listed)
    assert [(r["index"], r["row"], r["reference"]) for r in first] == [
        ("0", "row ending at line 2", "r0"),
        ("1", "row ending at line 3", "r1"),
    ]
    for r in first:
        assert r["customer_id"] == sb.customer_id
        assert r["summary"] == f"Ticket {r['index']}"
        sent = datetime.datetime.fromisoformat(r["sent_at"].replace("Z", "+00:00"))
        assert before <= sent <= after
        assert r["why"].startswith("CreateOutcomeUnknownError: ")
        assert "502" in r["why"]
    assert f"2 input(s) may have created a ticket: listed in {listed}" in out
    assert "--resend-uncertain" in out

    # A rerun reports them from the journal, with the time the first run sent them, and
    # says what to pass in the command's terms (results file and uncertain file alike).
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_TRANSPORT
    capsys.readouterr()
    again = read_csv(listed)
    assert [(r["reference"], r["sent_at"]) for r in again] == [
        (r["reference"], r["sent_at"]) for r in first
    ]
    results = read_csv(tmp_path / "in.csv.results.csv")
    texts = [r["why"] for r in again] + [r["error"] for r in results]
    assert all("resend_uncertain=True" not in t for t in texts)
    assert sum("run again with --resend-uncertain" in t for t in texts) == 4
    assert sb.count("create") == 5

    # Once they are sent again, nothing is uncertain: the old list goes, and it is said.
    assert main(["bulk", str(src), *creds(sb), "--no-progress", "--resend-uncertain"]) == 0
    out = capsys.readouterr().out
    assert not listed.exists()
    assert f"no uncertain inputs: nothing to check with Ripio (removed the old {listed})" in out
    assert sb.count("create") == 7


def test_no_uncertain_file_when_there_are_none_and_jsonl_when_asked(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "in.csv", [HEADER, [sb.customer_id, "S", "D", "", "r0"]])
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "no uncertain inputs: nothing to check with Ripio (no uncertain file written)" in out
    assert not (tmp_path / "in.csv.uncertain.csv").exists()

    src2 = write(tmp_path / "in2.csv", [HEADER, [sb.customer_id, "S2", "D", "", "r0"]])
    target = tmp_path / "out" / "check.jsonl"
    target.parent.mkdir()
    sb.inject("create", Fault.drop(after_body=True))
    argv = ["--json", "bulk", str(src2), *creds(sb), "--no-progress", "--no-journal"]
    assert main([*argv, "--uncertain-file", str(target)]) == EXIT_TRANSPORT
    doc = json.loads(capsys.readouterr().out)
    assert doc["uncertain_file"] == str(target)
    [item] = [json.loads(line) for line in target.read_text().splitlines()]
    assert item["summary"] == "S2"
    assert item["reference"] == "r0"
    assert item["sent_at"].endswith("Z")


def test_an_uncertain_path_over_another_file_is_refused(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "in.csv", [HEADER, [sb.customer_id, "S", "D", "", "r0"]])
    notes = tmp_path / "notes.csv"
    notes.write_text("my own notes\n")
    for target, message in [
        (notes, "exists and is not an uncertain file of this command"),
        (src, "is the input file"),
        (tmp_path / "in.csv.results.csv", "is the results file"),
        (tmp_path / "in.csv.journal.sqlite", "is the journal file"),
    ]:
        code = main(["bulk", str(src), *creds(sb), "--uncertain-file", str(target)])
        assert code == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert notes.read_text() == "my own notes\n"
    assert sb.requests == []


def test_an_interrupted_run_lists_what_is_uncertain_so_far_and_keeps_an_old_list(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from skala_async.cli import bulk as _cli_bulk
    from skala_async.cli.bulk import _results

    rows = [[sb.customer_id, f"T{i}", "D", "", f"r{i}"] for i in range(3)]
    src = write(tmp_path / "in.csv", [HEADER, *rows])
    listed = tmp_path / "in.csv.uncertain.csv"
    listed.write_text(",".join(_cli_bulk.UNCERTAIN_FIELDS) + "\n0,x,r9,c,s,,why\n")
    real = _results._Results.write

    def stop_after_two(self: _results._Results, result: BulkResult) -> None:
        real(self, result)
        if result.index == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_results._Results, "write", stop_after_two)
    argv = ["bulk", str(src), *creds(sb), "--no-progress", "--concurrency", "1"]
    assert main(argv) == EXIT_INTERRUPTED  # nothing uncertain yet: the old list stays
    err = capsys.readouterr().err
    assert "interrupted after: accepted 2 · rejected 0 · uncertain 0 · failed 0" in err
    assert "r9" in listed.read_text()
    sb.inject("create", Fault.http(504), times=1)
    monkeypatch.setattr(_results._Results, "write", stop_after_two)
    (tmp_path / "in.csv.journal.sqlite").unlink()
    Path(f"{tmp_path / 'in.csv.journal.sqlite'}-wal").unlink(missing_ok=True)
    Path(f"{tmp_path / 'in.csv.journal.sqlite'}-shm").unlink(missing_ok=True)
    assert main(argv) == EXIT_INTERRUPTED
    capsys.readouterr()
    assert [r["reference"] for r in read_csv(listed)] == ["r0"]
