"""The bulk journal under attack, with ``skala-tickets bulk`` run as real processes against
a sandbox on 127.0.0.1: a second run on a journal in use, two runs racing without the lock,
a journal deleted, replaced or truncated under a run, a journal that is not one, a folder
that cannot hold it and a full disk. Every case checks the sandbox's record: no input ever
has two tickets, and nothing is sent when the journal cannot be used.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import hashlib
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import skala_async as skala
from skala_async._journal import Journal
from skala_async.testing import Fault, SkalaSandbox, sandbox_client
from tests.helpers.bulk_files import write_csv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXIT_IN_USE, EXIT_CANNOT_WRITE, EXIT_LOST = 6, 7, 8


def results_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tickets_per_summary(sb: SkalaSandbox) -> collections.Counter[str]:
    return collections.Counter(t.summary for t in sb.tickets.values())


async def start(
    sb: SkalaSandbox, *args: str, helper: tuple[str, ...] = ()
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "SKALA_BASE_URL": sb.url,
        "SKALA_CLIENT_ID": sb.client_id,
        "SKALA_CLIENT_SECRET": sb.client_secret,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.helpers.bulk_cli",
        *helper,
        "bulk",
        *args,
        "--no-progress",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def bulk(sb: SkalaSandbox, *args: str, helper: tuple[str, ...] = ()) -> tuple[int, str, str]:
    return await finish(await start(sb, *args, helper=helper))


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "the condition never became true"
        await asyncio.sleep(0.01)


@pytest.fixture
async def sb() -> AsyncIterator[SkalaSandbox]:
    async with SkalaSandbox(processing_delay=0.01) as sandbox:
        yield sandbox


# ------------------------------------------------------------------------------ one run at a time


@pytest.mark.parametrize("journal_path", ["same path", "through a symlink"])
async def test_a_second_run_on_a_journal_in_use_is_refused_at_once(
    sb: SkalaSandbox, tmp_path: Path, journal_path: str
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 30)
    journal = tmp_path / "in.csv.journal.sqlite"
    first = await start(sb, str(src), "--concurrency", "2")
    await until(lambda: sb.count("create") >= 2)
    first.send_signal(signal.SIGSTOP)  # mid-run, holding the journal, however slow we are
    other = ["--journal", str(journal)]
    if journal_path == "through a symlink":
        link = tmp_path / "elsewhere" / "link.sqlite"
        link.parent.mkdir()
        link.symlink_to(journal)
        other = ["--journal", str(link)]
    code, out, err = await bulk(sb, str(src), *other, "--results", str(tmp_path / "second.csv"))
    assert code == EXIT_IN_USE, err
    assert "is in use by another run" in err
    assert "nothing was sent" in err
    assert not (tmp_path / "second.csv").exists()  # refused before it wrote anything
    # The default results path is the first run's: a refused run must not touch it either.
    code, _, err = await bulk(sb, str(src))
    assert code == EXIT_IN_USE, err
    first.send_signal(signal.SIGCONT)
    code, out, err = await finish(first)
    assert code == 0, err
    assert "30 inputs: created 30" in out
    rows = results_of(tmp_path / "in.csv.results.csv")
    assert sorted(r["reference"] for r in rows) == sorted(f"r{i}" for i in range(30))
    assert {r["outcome"] for r in rows} == {"created"}
    assert tickets_per_summary(sb) == {f"Ticket {i}": 1 for i in range(30)}
    assert sb.count("create") == 30
    # Once the first run has ended, the journal is free: a rerun reports from it.
    code, out, _ = await bulk(sb, str(src))
    assert code == 0
    assert sb.count("create") == 30


async def test_claims_alone_keep_racing_runs_from_sending_an_input_twice(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    """The issue's reproduction, with the lock taken away: two runs on one journal 0 to
    0.6 s apart while the server answers three 429s with ``Retry-After: 0.5``."""
    src = write_csv(tmp_path / "in.csv", sb, 40)
    for _ in range(3):
        sb.inject("create", Fault.http(429, retry_after=0.5))
    runs = []
    for name in ("a", "b"):
        runs.append(
            await start(
                sb, str(src), "--results", str(tmp_path / f"{name}.csv"), helper=("--no-lock",)
            )
        )
        await asyncio.sleep(0.3)
    ends = [await finish(p) for p in runs]
    assert tickets_per_summary(sb) == {f"Ticket {i}": 1 for i in range(40)}
    created = collections.Counter()
    for name, (code, _, err) in zip("ab", ends, strict=True):
        assert code in (0, 4), err
        for row in results_of(tmp_path / f"{name}.csv"):
            assert row["outcome"] in ("created", "uncertain"), row
            if row["outcome"] == "created" and not row["from_journal"]:
                created[row["reference"]] += 1
            elif row["outcome"] == "uncertain":  # the other run was sending it
                assert "CreateOutcomeUnknownError" in row["error"]
    assert created == {f"r{i}": 1 for i in range(40)}  # each sent by exactly one run


def test_a_claim_is_refused_when_another_run_changed_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skala_async import _journal

    monkeypatch.setattr(_journal, "fcntl", None)  # two handles on one file, as two runs
    path = tmp_path / "j.sqlite"
    a, b = Journal(path), Journal(path)
    try:
        assert a.get("k") is None  # both saw no entry
        assert b.get("k") is None
        claim = a.claim("k", 0, None, None, takeover=False)
        assert claim == 1
        assert b.claim("k", 0, None, None, takeover=False) is None  # too late
        seen = b.get("k")
        assert seen is not None
        assert seen.state == "sending"
        assert b.claim("k", 0, None, seen, takeover=False) is None  # not while it sends
        assert a.settle("k", claim, "failed")
        assert b.claim("k", 0, None, seen, takeover=True) is None  # stale: it changed
        failed = b.get("k")
        assert failed is not None
        assert failed.state == "failed"
        again = b.claim("k", 0, None, failed, takeover=False)  # surely not sent: resendable
        assert again is not None
        assert not a.settle("k", claim, "created", ticket_id=str(uuid.uuid4()))  # taken over
        assert b.settle("k", again, "created", ticket_id=str(uuid.uuid4()))
        done = a.get("k")
        assert done is not None
        assert a.claim("k", 0, None, done, takeover=True) is None  # never a created one
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------ a lost journal


def _damage(journal: Path, how: str) -> None:
    if how == "deleted":
        journal.unlink()
    elif how == "deleted with its -wal and -shm":
        for part in ("", "-wal", "-shm"):
            Path(f"{journal}{part}").unlink()
    elif how == "replaced":
        other = journal.with_name("other.sqlite")
        other.write_bytes(b"")
        os.replace(other, journal)
    elif how == "truncated":
        os.truncate(journal, 0)
    else:
        os.truncate(f"{journal}-wal", 0)


@pytest.mark.parametrize(
    "how", ["deleted", "deleted with its -wal and -shm", "replaced", "truncated", "-wal truncated"]
)
async def test_a_journal_that_vanishes_under_a_run_ends_it(
    sb: SkalaSandbox, tmp_path: Path, how: str
) -> None:
    journal = tmp_path / "in.csv.journal.sqlite"
    # An earlier run of the first 5 rows: its records are in the database file itself.
    code, _, err = await bulk(sb, str(write_csv(tmp_path / "in.csv", sb, 5)))
    assert code == 0, err
    assert journal.stat().st_size > 0
    src = write_csv(tmp_path / "in.csv", sb, 40)
    for _ in range(40):
        sb.inject("create", Fault.delay(0.05))
    proc = await start(sb, str(src), "--concurrency", "2")
    await until(lambda: sb.count("create") >= 10)
    _damage(journal, how)
    at_damage = sb.count("create")
    code, out, err = await finish(proc)
    assert code == EXIT_LOST, (out, err)
    reason = {"-wal truncated": "truncated", "deleted with its -wal and -shm": "deleted"}
    assert f"was {reason.get(how, how)}" in err
    assert "check with Ripio" in err
    assert "run the same command again to continue" not in out + err
    # Only the creates already claimed: the 2 in flight and the block claimed with them (2).
    assert sb.count("create") <= at_damage + 2 + 2
    assert sb.count("create") < 40
    assert max(tickets_per_summary(sb).values()) == 1
    rows = results_of(tmp_path / "in.csv.results.csv")
    sent = {t.summary for t in sb.tickets.values()}
    for row in rows:  # every ticket this run created is in the results, with its id
        if row["outcome"] == "created" and not row["from_journal"]:
            assert row["ticket_id"] in sb.tickets
    assert len(sent) == 5 + sum(
        1 for r in rows if r["outcome"] == "created" and not r["from_journal"]
    )


async def test_a_journal_lost_after_the_last_write_is_still_reported(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "job.sqlite"
    deleted = asyncio.Event()

    async def drafts() -> AsyncIterator[skala.TicketDraft]:
        yield skala.TicketDraft(sb.customer_id, "only one", "d", reference="one")
        await deleted.wait()  # the input ends only once the journal is gone

    seen = []

    async def consume(client: skala.SkalaClient) -> None:
        async for result in client.submit_many(drafts(), journal=journal, concurrency=1):
            seen.append(result)
            journal.unlink()
            deleted.set()

    async with sandbox_client(sb) as client:
        with pytest.raises(skala.JournalLostError) as caught:
            await consume(client)
    assert [r.outcome.value for r in seen] == ["created"]
    assert caught.value.reason == "deleted"
    assert caught.value.path == str(journal)
    assert sb.count("create") == 1


# ------------------------------------------------------------------------------ unusable journals


def _garbage(path: Path) -> None:
    path.write_bytes(hashlib.sha256(b"x").digest() * 200)


def _other_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id TEXT)")
    db.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, "is not a bulk journal (not an SQLite database)"),
        (_other_database, "is another SQLite database, not a bulk journal"),
        (lambda p: p.mkdir(), "cannot be opened or created"),
    ],
    ids=["garbage", "another database", "a directory"],
)
async def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(
    sb: SkalaSandbox, tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 3)
    journal = tmp_path / "job.sqlite"
    make(journal)
    before = journal.read_bytes() if journal.is_file() else None
    code, _, err = await bulk(sb, str(src), "--journal", str(journal))
    assert code == EXIT_CANNOT_WRITE, err
    assert message in err
    assert "nothing was sent" in err
    assert "internal error" not in err
    assert sb.count("create") == 0
    assert not (tmp_path / "in.csv.results.csv").exists()
    if before is not None:
        assert journal.read_bytes() == before


async def test_a_journal_that_cannot_be_created_is_refused(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 3)
    # A folder that cannot hold it: its parent is a file (a read-only folder is the same
    # error, but root may write anywhere).
    code, _, err = await bulk(sb, str(src), "--journal", str(src / "job.sqlite"))
    assert code == EXIT_CANNOT_WRITE, err
    assert "cannot be opened or created: Not a directory" in err
    assert sb.count("create") == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_a_journal_in_a_read_only_folder_is_refused(
    sb: SkalaSandbox, tmp_path: Path
) -> None:  # pragma: no cover - CI runs as root
    src = write_csv(tmp_path / "in.csv", sb, 3)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = await bulk(sb, str(src), "--journal", str(folder / "job.sqlite"))
    finally:
        folder.chmod(0o755)
    assert code == EXIT_CANNOT_WRITE, err
    assert "Permission denied" in err
    assert sb.count("create") == 0


async def test_a_full_disk_before_the_first_create_sends_nothing(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 3)
    code, _, err = await bulk(sb, str(src), helper=("--file-size-limit", "2000"))
    assert code == EXIT_CANNOT_WRITE, err
    assert "cannot be written" in err
    assert "nothing was sent" in err
    assert sb.count("create") == 0


async def test_a_disk_that_fills_during_a_run_stops_it_and_the_rerun_duplicates_nothing(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 60)
    code, out, err = await bulk(
        sb, str(src), "--concurrency", "2", helper=("--file-size-limit", str(48 * 1024))
    )
    assert code == EXIT_CANNOT_WRITE, (out, err)
    assert "cannot be written" in err
    assert "stopped sending" in err
    assert "internal error" not in err
    first = sb.count("create")
    assert 0 < first < 60
    code, out, err = await bulk(sb, str(src))
    assert code in (0, 4), err
    assert max(tickets_per_summary(sb).values()) == 1
    rows = results_of(tmp_path / "in.csv.results.csv")
    assert sorted(r["reference"] for r in rows) == sorted(f"r{i}" for i in range(60))
    for row in rows:
        summary = f"Ticket {row['reference'][1:]}"
        if row["outcome"] == "created":
            assert tickets_per_summary(sb)[summary] == 1
        else:  # claimed by the first run, its answer not recorded: never resent silently
            assert row["outcome"] == "uncertain", row


async def test_a_results_file_deleted_under_a_run_is_reported_and_rewritten_by_a_rerun(
    sb: SkalaSandbox, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", sb, 20)
    out = tmp_path / "in.csv.results.csv"
    for _ in range(20):
        sb.inject("create", Fault.delay(0.05))
    proc = await start(sb, str(src), "--concurrency", "2")
    await until(lambda: sb.count("create") >= 4)
    out.unlink()
    code, _, err = await finish(proc)
    assert code == EXIT_CANNOT_WRITE, err
    assert f"the results file {out} was deleted during the run" in err
    assert "run the same command again to write it again" in err
    code, _, err = await bulk(sb, str(src))
    assert code == 0, err
    assert sorted(r["reference"] for r in results_of(out)) == sorted(f"r{i}" for i in range(20))
    assert tickets_per_summary(sb) == {f"Ticket {i}": 1 for i in range(20)}


async def test_waits_still_running_when_the_journal_is_lost_are_reported_not_waited_for(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "job.sqlite"
    async with SkalaSandbox(processing_delay=None) as sb:  # tickets stay PENDING

        async def drafts() -> AsyncIterator[skala.TicketDraft]:
            for i in range(2):
                yield skala.TicketDraft(sb.customer_id, f"waited {i}", "d", reference=f"w{i}")
            await until(lambda: sb.count("create") == 2)
            journal.unlink()
            yield skala.TicketDraft(sb.customer_id, "never sent", "d", reference="w2")

        seen: list[skala.BulkResult] = []

        async def consume(client: skala.SkalaClient) -> None:
            async for result in client.submit_many(
                drafts(), journal=journal, concurrency=2, wait=True, wait_timeout=60
            ):
                seen.append(result)

        async with sandbox_client(sb) as client:
            with pytest.raises(skala.JournalLostError):
                await asyncio.wait_for(consume(client), 30)
        assert sorted(r.reference or "" for r in seen) == ["w0", "w1"]
        assert {r.outcome.value for r in seen} == {"created"}
        assert {r.ticket.status.value for r in seen if r.ticket} == {"PENDING"}
        assert sb.count("create") == 2


def test_journal_files_that_cannot_hold_a_journal(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(skala.JournalError, match="is not a regular file"):
        Journal(fifo)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE inputs (name TEXT)")
    db.close()
    with pytest.raises(skala.JournalError, match="has an 'inputs' table that is not"):
        Journal(foreign)


def test_a_journal_without_claim_versions_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema before claims had versions
        db.execute(
            "CREATE TABLE inputs (key TEXT PRIMARY KEY, position INTEGER NOT NULL,"
            " reference TEXT, state TEXT NOT NULL, ticket_id TEXT, status TEXT,"
            " issue_key TEXT, error TEXT, updated_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO inputs VALUES ('ref:a', 0, 'a', 'failed', NULL, NULL, NULL, 'x', 0)"
        )
    db.close()
    journal = Journal(path)
    try:
        assert repr(journal) == f"Journal({str(path)!r})"
        entry = journal.get("ref:a")
        assert entry is not None
        assert (entry.state, entry.version) == ("failed", 0)
        assert journal.claim("ref:a", 0, "a", entry, takeover=False) == 1
    finally:
        journal.close()
    journal.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        journal.get("ref:a")


async def test_a_run_that_cannot_start_closes_the_journal_it_opened(tmp_path: Path) -> None:
    """A journal opened by submit_many is closed on every path, also when the run fails
    before it starts (here: a submitter without a bus); not left to the garbage collector,
    which would hold its lock and warn (ResourceWarning, an error in this suite)."""
    from skala_async.bulk import submit_many

    path = tmp_path / "journal.sqlite"
    with pytest.raises(AttributeError):
        async for _ in submit_many(object(), [], journal=path):  # type: ignore[arg-type]
            pass  # pragma: no cover
    journal = Journal(path)  # not locked by the failed run
    journal.close()
