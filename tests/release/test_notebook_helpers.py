"""For notebook users: JSON-ready dicts, records and data frames, and a progress bar.

``Ticket.to_dict()``, ``BulkReport.to_records()`` / ``to_dataframe()`` and
``create_many(progress=True)`` against the sandbox, with pandas and tqdm installed and
with each of them blocked (``sys.modules[name] = None``, or a subprocess).
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import uuid

import pytest

import skala_async as skala
from skala_async import sync
from skala_async.bulk import RECORD_FIELDS, BulkReport
from skala_async.testing import Fault, SkalaSandbox, sandbox_client

UNKNOWN_CUSTOMER = "0b0b0b0b-0000-4000-8000-000000000000"


def _drafts(sb: SkalaSandbox) -> list[skala.TicketDraft | skala.ValidationError]:
    return [
        skala.TicketDraft(sb.customer_id, "First", "Body", reference="a-1"),
        skala.TicketDraft("not-a-uuid", "", "Body", reference="a-2"),  # rejected, unsent
        skala.TicketDraft(UNKNOWN_CUSTOMER, "Unknown", "Body", reference="a-3"),  # 400
        skala.TicketDraft(sb.customer_id, "Fourth", "Body"),  # created, no reference
    ]


# ------------------------------------------------------------------ Ticket.to_dict


def test_ticket_to_dict_is_json_ready() -> None:
    tid = uuid.uuid4()
    assert skala.Ticket(tid, skala.TicketStatus.CREATED, "SUP-7").to_dict() == {
        "ticket_id": str(tid),
        "status": "CREATED",
        "issue_key": "SUP-7",
    }
    pending = skala.Ticket(tid, skala.TicketStatus.PENDING).to_dict()
    assert json.loads(json.dumps(pending)) == {
        "ticket_id": str(tid),
        "status": "PENDING",
        "issue_key": None,
    }
    # A status this version does not know is kept as sent.
    assert skala.Ticket(tid, skala.TicketStatus("ARCHIVED")).to_dict()["status"] == "ARCHIVED"


def test_event_to_dict_is_json_ready() -> None:
    tid = uuid.uuid4()
    event = skala.SupportTicketEvent(
        "SUPPORT_TICKET.CREATED",
        datetime.datetime(2026, 11, 20, 12, 30, tzinfo=datetime.timezone.utc),
        skala.Ticket(tid, skala.TicketStatus.CREATED, "SUP-9"),
        {"supportTicket": {"customerId": "c-1"}},
    )
    as_dict = event.to_dict()
    assert as_dict == {
        "event_type": "SUPPORT_TICKET.CREATED",
        "issued_at": "2026-11-20T12:30:00+00:00",
        "ticket_id": str(tid),
        "status": "CREATED",
        "issue_key": "SUP-9",
        "extra": {"supportTicket": {"customerId": "c-1"}},
    }
    assert json.loads(json.dumps(as_dict)) == as_dict


async def test_ticket_to_dict_from_the_wire(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Dict", "Body")
        ticket = await handle.wait_until_created(timeout=20)
    stored = skala_sandbox.tickets[str(handle.ticket_id)]
    assert ticket.to_dict() == {
        "ticket_id": str(handle.ticket_id),
        "status": "CREATED",
        "issue_key": stored.issue_key,
    }


# ------------------------------------------------------------------ records and frames


async def test_records_one_flat_dict_per_input(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.inject("create", Fault.http(500))  # the first create sent: uncertain
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(_drafts(skala_sandbox), concurrency=1, wait=True)
    records = report.to_records()
    assert json.loads(json.dumps(records)) == records
    assert [tuple(r) for r in records] == [RECORD_FIELDS] * 4
    first, invalid, unknown, created = records
    assert first["index"] == 0
    assert first["reference"] == "a-1"
    assert first["outcome"] == "uncertain"
    assert first["ticket_id"] is None
    assert first["error_type"] == "CreateOutcomeUnknownError"
    assert invalid["outcome"] == "rejected"
    assert invalid["error_type"] == "ValidationError"
    assert "\n" not in invalid["error_message"]
    assert "customer_id" in invalid["error_message"]
    assert unknown["outcome"] == "rejected"
    assert unknown["error_type"] == "BadRequestError"
    assert unknown["error_code"] == report.results[2].error.code  # type: ignore[union-attr]
    assert created["reference"] is None
    assert created["outcome"] == "created"
    ticket_id = created["ticket_id"]
    assert ticket_id in skala_sandbox.tickets
    assert created["status"] == "CREATED"
    assert created["issue_key"] == skala_sandbox.tickets[ticket_id].issue_key
    assert created["error_type"] is None
    assert created["error_message"] is None
    assert created["from_journal"] is False
    # The server got the two creates of valid drafts with a known customer, and the 400's.
    assert len(skala_sandbox.requests_to("create")) == 3


async def test_records_from_a_journal(skala_sandbox: SkalaSandbox, tmp_path: object) -> None:
    journal = f"{tmp_path}/run.sqlite"
    drafts = [skala.TicketDraft(skala_sandbox.customer_id, "J", "B", reference="j-1")]
    async with sandbox_client(skala_sandbox) as client:
        await client.create_many(drafts, journal=journal)
        again = await client.create_many(drafts, journal=journal)
    (record,) = again.to_records()
    assert record["from_journal"] is True
    assert record["outcome"] == "created"
    assert len(skala_sandbox.requests_to("create")) == 1


async def test_dataframe(skala_sandbox: SkalaSandbox) -> None:
    pandas = pytest.importorskip("pandas")
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(_drafts(skala_sandbox), wait=True)
    frame = report.to_dataframe()
    assert isinstance(frame, pandas.DataFrame)
    assert frame.index.name == "index"
    assert list(frame.index) == [0, 1, 2, 3]
    assert list(frame.columns) == list(RECORD_FIELDS[1:])
    assert list(frame["outcome"]) == ["created", "rejected", "rejected", "created"]
    assert frame.loc[0, "issue_key"] == report.results[0].issue_key
    assert (frame["outcome"] == "created").sum() == report.counts["created"]
    empty = BulkReport(()).to_dataframe()
    assert len(empty) == 0
    assert list(empty.columns) == list(RECORD_FIELDS[1:])


def test_dataframe_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    report = BulkReport(())
    with pytest.raises(ImportError, match=r"pip install pandas"):
        report.to_dataframe()
    assert report.to_records() == []


def test_neither_pandas_nor_tqdm_is_imported_by_the_library() -> None:
    code = (
        "import sys, skala_async, skala_async.bulk, skala_async.sync\n"
        "print(sorted(m for m in ('pandas', 'tqdm', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ progress bar


async def test_progress_bar_counts_every_input(
    skala_sandbox: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(_drafts(skala_sandbox), progress=True)
    err = capsys.readouterr().err
    assert "tickets: 100%" in err
    assert "4/4" in err
    assert "created=2" in err
    assert "rejected=2" in err
    assert report.counts["created"] == 2


async def test_progress_bar_of_an_iterator_has_no_total(
    skala_sandbox: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    drafts = (skala.TicketDraft(skala_sandbox.customer_id, f"G{i}", "B") for i in range(3))
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(drafts, progress=True)
    err = capsys.readouterr().err
    assert "tickets: 3input " in err  # a count, no total nor percentage
    assert len(report) == 3


async def test_progress_bar_closed_when_the_run_fails(
    skala_sandbox: SkalaSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")

    def broken() -> object:
        yield skala.TicketDraft(skala_sandbox.customer_id, "Before", "B")
        raise RuntimeError("the input file went away")

    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(RuntimeError, match="went away"):
            await client.create_many(broken(), progress=True)  # type: ignore[arg-type]
    assert "tickets:" in capsys.readouterr().err


async def test_progress_without_tqdm_shows_nothing(
    skala_sandbox: SkalaSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    caplog.set_level(logging.DEBUG, logger="skala_async.bulk")
    async with sandbox_client(skala_sandbox) as client:
        report = await client.create_many(_drafts(skala_sandbox), progress=True)
    assert report.counts["created"] == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""
    assert [r.message for r in caplog.records if "tqdm" in r.message] == [
        "progress=True: tqdm is not installed, so no progress bar is shown"
    ]


@pytest.mark.parametrize("bad", ["yes", 1, None, print])
async def test_progress_must_be_a_bool(skala_sandbox: SkalaSandbox, bad: object) -> None:
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(TypeError, match="progress must be True or False"):
            await client.create_many(_drafts(skala_sandbox), progress=bad)  # type: ignore[arg-type]
    assert skala_sandbox.requests == []


def test_sync_create_many_with_progress(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    with (
        sync.Sandbox() as sb,
        sync.SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url) as client,
    ):
        drafts = [skala.TicketDraft(sb.customer_id, f"S{i}", "B") for i in range(2)]
        report = client.create_many(drafts, progress=True)
    assert [r["outcome"] for r in report.to_records()] == ["created", "created"]
    assert "2/2" in capsys.readouterr().err
