"""``skala-tickets bulk``, the files it reads and writes: ``--validate-only``, the CSV's
delimiter, attachment paths, the uncertain file, files that cannot be read. Every run goes
against a sandbox on 127.0.0.1, and what it received (or that it received nothing) is
checked."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from skala_async.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    main,
)
from skala_async.cli.bulk import EXIT_INVALID_INPUT
from skala_async.testing import Fault, SkalaSandbox
from tests.helpers.bulk_files import HEADER, read_csv, write
from tests.helpers.cli import creds, threaded_sandbox

SECRET = "bulk-ops-secret-0123456789abcdef"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.02, client_secret=SECRET) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ validate-only


def test_validate_only_lists_every_problem_by_row_and_field_and_sends_nothing(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.pdf").write_bytes(b"%PDF-1.4")
    (data / "tool.exe").write_bytes(b"MZ")
    cid = sb.customer_id
    src = write(
        data / "in.csv",
        [
            HEADER,
            [cid, "Fine", "Fine too", "ok.pdf", "r1"],  # line 2: clean
            ["not-a-uuid", "", "x" * 5001, "", "r2"],  # line 3: three problems
            [cid, "Two files", "Body", "gone.pdf; tool.exe", "r3"],  # line 4: two
            [cid, "Again", "Body", "", "r1"],  # line 5: a repeated reference
            [cid, "Extra", "Body", "", "r5", "surplus"],  # line 6: more fields than the header
            [cid, "Line\nbreak", "Body", "", "r6"],  # lines 7-8: a summary of two lines
        ],
    )
    code = main(["bulk", str(src), *creds(sb), "--validate-only"])
    out, err = capsys.readouterr()
    assert code == EXIT_INVALID_INPUT
    assert err == ""
    lines = out.splitlines()
    assert lines[:-1] == [
        "row ending at line 3: customer_id: 'not-a-uuid' is not a UUID",
        "row ending at line 3: summary: must not be empty",
        "row ending at line 3: description: must be at most 5000 characters (got 5001)",
        f"row ending at line 4: attachments: file 1: 'gone.pdf' does not exist (looked for "
        f"{data.resolve() / 'gone.pdf'}; a relative path is read from the input file's folder)",
        "row ending at line 4: attachments: file 2: 'tool.exe' has .exe; allowed extensions "
        "are avi jpeg jpg mov mp4 pdf png webm webp",
        "row ending at line 5: reference: 'r1' is also the reference of the row ending at "
        "line 2: one reference is sent once, so this input would be rejected",
        "row ending at line 6: row: 6 fields, the header has 5 (an unquoted comma?)",
        "row ending at line 8: summary: must be a single line (no line breaks)",
    ]
    assert lines[-1] == "6 rows checked: 8 problem(s) in 5 row(s); nothing was sent"
    # Nothing on the wire, not even a token request; no file written beside the input.
    assert sb.requests == []
    assert sorted(p.name for p in data.iterdir()) == ["in.csv", "ok.pdf", "tool.exe"]


def test_validate_only_of_a_clean_file_exits_0_without_credentials(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[sb.customer_id, f"S{i}", "D", "", f"r{i}"] for i in range(3)]
    src = write(tmp_path / "in.csv", [HEADER, *rows])
    assert main(["bulk", str(src), "--validate-only"]) == EXIT_OK  # no credentials given
    assert capsys.readouterr().out == "3 rows checked: no problems found; nothing was sent\n"
    assert main(["--json", "bulk", str(src), "--validate-only"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "rows": 3,
        "rows_with_problems": 0,
        "problems": [],
        "delimiter": ",",
        "exit_code": 0,
    }
    assert sb.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_validate_only_jsonl_lists_every_field_of_a_row(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"customer_id": sb.customer_id, "summary": "S", "description": "D"}),
        # Three fields of the wrong type, and a customer id that is not a UUID either.
        json.dumps({"customer_id": "x", "summary": 5, "description": ["a"], "reference": True}),
        "not json",
        "",
        json.dumps({"customer_id": sb.customer_id, "summary": "S", "attachments": 7}),
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["--json", "bulk", str(src), *creds(sb), "--validate-only"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_INVALID_INPUT
    found = [(p["line"], p["field"], p["message"]) for p in doc["problems"]]
    assert found == [
        (2, "summary", "must be text, got a number"),
        (2, "description", "must be text, got a list"),
        (2, "reference", "must be text or a whole number, got a boolean"),
        (2, "customer_id", "'x' is not a UUID"),
        (3, "row", "not JSON (Expecting value)"),
        (5, "attachments", "must be text ('a.pdf;b.png') or a list of file names"),
        (5, "description", "must not be empty"),
    ]
    assert (doc["rows"], doc["rows_with_problems"], doc["delimiter"]) == (4, 3, None)
    assert sb.requests == []


def test_a_run_rejects_a_row_with_every_wrong_field_named(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"customer_id": 1, "summary": 2, "description": "D"}) + "\n")
    code = main(["bulk", str(src), *creds(sb), "--no-progress", "--no-journal"])
    capsys.readouterr()
    assert code == EXIT_REFUSED
    [row] = read_csv(tmp_path / "in.jsonl.results.csv")
    assert "customer_id must be text, got a number" in row["error"]
    assert "summary must be text, got a number" in row["error"]
    assert sb.count("create") == 0


# ------------------------------------------------------------------------------ delimiters


@pytest.mark.parametrize(("delimiter", "given"), [(";", None), ("\t", None), (";", ";")])
def test_a_semicolon_or_tab_csv_is_read_as_a_spreadsheet_wrote_it(
    sb: SkalaSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    delimiter: str,
    given: str | None,
) -> None:
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (tmp_path / "b.png").write_bytes(b"\x89PNG b")
    # Decimal commas in the text, and the attachments cell quoted by the spreadsheet
    # because it holds the delimiter.
    description = "Top-up of 1.250,50 ARS, charged twice"
    src = write(
        tmp_path / "in.csv",
        [HEADER, [sb.customer_id, "Top-up, twice", description, "a.pdf;b.png", "r1"]],
        delimiter,
    )
    extra = ["--delimiter", given] if given else []
    code = main(["--json", "bulk", str(src), *creds(sb), "--no-progress", *extra])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK, doc
    assert doc["delimiter"] == delimiter
    [create] = sb.requests_to("create")
    assert create.fields["summary"] == "Top-up, twice"
    assert create.fields["description"] == description
    assert [(f.filename, f.sha256) for f in create.files] == [
        ("a.pdf", hashlib.sha256(b"%PDF-1.4 a").hexdigest()),
        ("b.png", hashlib.sha256(b"\x89PNG b").hexdigest()),
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            "customer_id,summary;description",
            "reads as columns split at a comma and semicolon alike; pass --delimiter",
        ),
        ("customer_id:summary:description", "names none of the columns"),
        ("a;b,c", "names none of the columns"),
    ],
)
def test_a_delimiter_that_cannot_be_told_is_a_clear_error(
    sb: SkalaSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: str,
    message: str,
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(f"{header}\n{sb.customer_id},S,D\n", encoding="utf-8")
    for extra in ([], ["--validate-only"]):
        code = main(["bulk", str(src), *creds(sb), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE
        assert "in.csv: cannot tell how the columns are separated" in err
        assert message in err
    assert sb.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_delimiter_option_values(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "in.csv", [HEADER, [sb.customer_id, "S", "D", "", "r"]], "|")
    assert main(["bulk", str(src), "--validate-only"]) == EXIT_OK  # detected
    # Given wrongly: the columns are missing, read as separated by a semicolon.
    assert main(["bulk", str(src), "--validate-only", "--delimiter", "semicolon"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "missing column(s): customer_id, summary, description (read as separated by " in err
    assert "semicolon)" in err
    for bad in ("ab", '"', "x", " "):
        assert main(["bulk", str(src), "--validate-only", "--delimiter", bad]) == EXIT_USAGE
        assert "expected one character" in capsys.readouterr().err
    tabbed = write(tmp_path / "t.csv", [HEADER, [sb.customer_id, "S", "D", "", "r"]], "\t")
    assert main(["bulk", str(tabbed), "--validate-only", "--delimiter", "tab"]) == EXIT_OK
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("{}\n")
    assert main(["bulk", str(jsonl), "--validate-only", "--delimiter", ";"]) == EXIT_USAGE
    assert "--delimiter applies to CSV input" in capsys.readouterr().err
    assert sb.requests == []


def test_header_names_with_spaces_around_them_are_found(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        f"customer_id; summary; description\n{sb.customer_id};Spaced;Out\n", encoding="utf-8"
    )
    assert main(["bulk", str(src), *creds(sb), "--no-progress", "--no-journal"]) == EXIT_OK
    capsys.readouterr()
    assert sb.requests_to("create")[0].fields["summary"] == "Spaced"


# ------------------------------------------------------------------------------ attachments


def test_relative_attachments_are_read_from_the_csv_folder_and_a_missing_one_names_the_path(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "export"
    (data / "files").mkdir(parents=True)
    (data / "files" / "receipt.pdf").write_bytes(b"%PDF-1.4 receipt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "files").mkdir()  # the same relative path from the working folder
    (elsewhere / "files" / "receipt.pdf").write_bytes(b"%PDF-1.4 not this one")
    monkeypatch.chdir(elsewhere)
    src = write(
        data / "in.csv",
        [
            HEADER,
            [sb.customer_id, "Found", "D", "files/receipt.pdf", "r1"],
            [sb.customer_id, "Missing", "D", "files/missing.pdf", "r2"],
        ],
    )
    code = main(["bulk", str(src), *creds(sb), "--no-progress"])
    capsys.readouterr()
    assert code == EXIT_REFUSED
    [create] = sb.requests_to("create")
    assert create.files[0].sha256 == hashlib.sha256(b"%PDF-1.4 receipt").hexdigest()
    result = {r["reference"]: r for r in read_csv(data / "in.csv.results.csv")}
    tried = data.resolve() / "files" / "missing.pdf"
    assert f"'files/missing.pdf' does not exist (looked for {tried}" in result["r2"]["error"]


# ------------------------------------------------------------------------------ edges


def test_files_that_cannot_be_read_are_usage_errors_whichever_reader_finds_it(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin = tmp_path / "in.csv"
    latin.write_bytes(
        b"customer_id;summary;description\n" + sb.customer_id.encode() + b";Caf\xe9;D\n"
    )
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"summary": "Caf\xe9"}\n')
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for argv, message in [
        ([str(latin)], "in.csv: not UTF-8 text"),
        ([str(latin), "--delimiter", ";"], "in.csv: not UTF-8 text"),
        ([str(jsonl)], "in.jsonl: not UTF-8 text"),
        ([str(empty)], "empty.csv: missing column(s): customer_id, summary, description"),
    ]:
        for extra in ([], ["--validate-only"]):
            assert main(["bulk", *argv, *creds(sb), *extra]) == EXIT_USAGE
            assert message in capsys.readouterr().err
    assert sb.requests == []


def test_attachment_paths_that_are_not_files_keep_their_own_reason(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "folder.pdf").mkdir()
    src = tmp_path / "in.jsonl"
    attachments = ["a.pdf/inner.pdf", "nul\x00.pdf", "folder.pdf", str(tmp_path / "gone.pdf")]
    src.write_text(
        json.dumps(
            {
                "customer_id": sb.customer_id,
                "summary": "S",
                "description": "D",
                "attachments": attachments,
            }
        )
        + "\n"
    )
    assert main(["--json", "bulk", str(src), "--validate-only"]) == EXIT_INVALID_INPUT
    messages = [p["message"] for p in json.loads(capsys.readouterr().out)["problems"]]
    assert messages[0].startswith("file 1: 'inner.pdf' cannot be read (Not a directory)")
    assert messages[1] == "file 2: 'nul\\x00.pdf' is not a valid path (it contains a NUL character)"
    assert messages[2] == "file 3: 'folder.pdf' is not a regular file"
    # An absolute path: no word about the input's folder.
    assert (
        messages[3] == f"file 4: {str(tmp_path / 'gone.pdf')!r} does not exist (looked for "
        f"{tmp_path / 'gone.pdf'})"
    )


def test_library_messages_map_to_columns() -> None:
    from skala_async.cli.bulk import _field_problems

    assert _field_problems(
        ["files: at most 5 attachments (got 6)", "files[2]: 'x' has no extension", "odd"]
    ) == [
        ("attachments", "at most 5 attachments (got 6)"),
        ("attachments", "file 3: 'x' has no extension"),
        ("row", "odd"),
    ]


def test_journal_times_of_a_journal_that_is_gone(tmp_path: Path) -> None:
    from skala_async.cli.bulk import journal_sent_at

    assert journal_sent_at(tmp_path / "nowhere" / "j.sqlite", ["ref:a"]) == {}
    not_a_journal = tmp_path / "j.sqlite"
    not_a_journal.write_bytes(b"not sqlite at all" * 100)
    assert journal_sent_at(not_a_journal, ["ref:a"]) == {}


def test_a_rerun_with_wait_waits_for_tickets_an_earlier_run_created(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[sb.customer_id, f"T{i}", "D", "", f"r{i}"] for i in range(2)]
    src = write(tmp_path / "in.csv", [HEADER, *rows])
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_OK  # no wait
    code = main(["bulk", str(src), *creds(sb), "--wait", "--progress"])
    err = capsys.readouterr().err
    assert code == EXIT_OK
    assert sb.count("create") == 2  # nothing sent twice: the rerun only waited
    assert (
        "2/2 sent · accepted 2 · rejected 0 · uncertain 0 · failed 0 · waits done 2/2 "
        "(CREATED 2, FAILED 0, no outcome 0)" in err
    )
    assert {r["status"] for r in read_csv(tmp_path / "in.csv.results.csv")} == {"CREATED"}


def test_uncertain_list_beside_the_input_when_results_go_to_a_device_and_write_errors(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from skala_async.cli import bulk as _cli_bulk
    from skala_async.cli.bulk import _results

    src = write(tmp_path / "in.csv", [HEADER, [sb.customer_id, "S", "D", "", "r0"]])
    sb.inject("create", Fault.http(500))
    argv = ["bulk", str(src), *creds(sb), "--no-progress", "--no-journal"]
    assert main([*argv, "--results", os.devnull]) == EXIT_TRANSPORT
    capsys.readouterr()
    [item] = read_csv(tmp_path / "in.csv.uncertain.csv")
    assert item["reference"] == "r0"

    # A device, a folder or a missing folder is refused before anything is sent.
    (tmp_path / "dir").mkdir()
    sent = sb.count("create")
    for target, message in [
        (os.devnull, "exists and is not an uncertain file"),
        (str(tmp_path / "dir"), "exists and is not an uncertain file"),
        (str(tmp_path / "no" / "u.csv"), f"the folder {tmp_path / 'no'} is missing"),
    ]:
        assert main([*argv, "--uncertain-file", target]) == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert sb.count("create") == sent

    # A list that cannot be written (a full disk): said, with where else the inputs are.
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_results.os, "replace", full)
    sb.inject("create", Fault.http(500))
    assert main(argv) == _cli_bulk.EXIT_CANNOT_WRITE
    err = capsys.readouterr().err
    assert "cannot write the uncertain file" in err
    assert "No space left on device" in err
    assert "also in the results file" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_ctrl_c_while_validating_says_nothing_was_sent(
    sb: SkalaSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from skala_async.cli.bulk import _validate

    def interrupted(*args: object) -> Iterator[object]:
        raise KeyboardInterrupt
        yield  # a generator, like the real one

    monkeypatch.setattr(_validate, "validate_file", interrupted)
    src = write(tmp_path / "in.csv", [HEADER, [sb.customer_id, "S", "D", "", "r"]])
    assert main(["bulk", str(src), *creds(sb), "--validate-only"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err == "skala-tickets: error: interrupted while checking the file (nothing was sent)\n"
    assert sb.requests == []
