"""Behaviour pinned after a review: early exits, duplicate keys, deadlines, argument checks."""

from __future__ import annotations

import asyncio
import collections
import uuid
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.testing import FAST_POLL, Fault, SkalaSandbox, mock_skala, sandbox_client


def drafts(sb: SkalaSandbox, n: int, **kw: str) -> list[skala.TicketDraft]:
    return [
        skala.TicketDraft(sb.customer_id, f"t{i}", "d", reference=kw.get("ref", f"r{i}"))
        for i in range(n)
    ]


async def test_leaving_submit_many_early_returns_promptly(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    results = skala_client.submit_many(
        drafts(skala_sandbox, 300), concurrency=4, journal=tmp_path / "j.sqlite"
    )
    async for _ in results:
        await asyncio.sleep(0.3)  # let the workers fill the results queue behind us
        break
    await asyncio.wait_for(results.aclose(), 5)  # type: ignore[attr-defined]
    sent = skala_sandbox.count("create")
    await asyncio.sleep(0.1)
    assert skala_sandbox.count("create") == sent  # nothing goes on after the exit


async def test_cancelling_the_reader_of_submit_many_propagates(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox
) -> None:
    async def read_all() -> None:
        async for _ in skala_client.submit_many(drafts(skala_sandbox, 300), concurrency=2):
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_one_reference_one_ticket_even_when_concurrency_halves(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    skala_sandbox.inject("create", Fault.http(429, retry_after=0.05), times=3)
    twice = [*drafts(skala_sandbox, 40), *drafts(skala_sandbox, 40)]
    report = await skala_client.create_many(twice, concurrency=8, journal=tmp_path / "j.db")
    assert report.counts["created"] == 40
    assert report.counts["rejected"] == 40
    per_summary = collections.Counter(t.summary for t in skala_sandbox.tickets.values())
    assert len(per_summary) == 40
    assert max(per_summary.values()) == 1


async def test_rerun_with_a_row_added_on_top_keeps_the_earlier_tickets(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    first = await skala_client.create_many(drafts(skala_sandbox, 5), journal=journal)
    new = skala.TicketDraft(skala_sandbox.customer_id, "new", "d", reference="new")
    second = await skala_client.create_many([new, *drafts(skala_sandbox, 5)], journal=journal)
    assert second.counts == {"created": 6, "rejected": 0, "uncertain": 0, "failed": 0}
    assert [r.ticket_id for r in second.results[1:]] == [r.ticket_id for r in first]
    assert all(r.from_journal for r in second.results[1:])
    assert len(skala_sandbox.tickets) == 6


async def test_create_ticket_takes_a_single_file(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    pdf = tmp_path / "receipt.pdf"
    pdf.write_bytes(b"%PDF-1.4 one")
    for files in (str(pdf), pdf):
        await skala_client.create_ticket(skala_sandbox.customer_id, "s", "d", files=files)
    with pdf.open("rb") as f:
        await skala_client.create_ticket(skala_sandbox.customer_id, "s", "d", files=f)
        assert not f.closed
    received = [[x.filename for x in r.files] for r in skala_sandbox.requests_to("create")]
    assert received == [["receipt.pdf"]] * 3


async def test_a_deadline_also_bounds_the_token_request(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.inject("token", Fault.delay(2.0))
    async with sandbox_client(skala_sandbox) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(skala.RequestTimeoutError, match="token") as info:
            await client.get_ticket(uuid.uuid4(), timeout=0.3)
        assert loop.time() - started < 1.0
        assert info.value.request_sent is False
        with pytest.raises(skala.RequestTimeoutError):  # a create: surely not sent either
            await client.create_ticket(skala_sandbox.customer_id, "s", "d", timeout=0.3)
    assert skala_sandbox.count("get") == 0
    assert skala_sandbox.count("create") == 0


def test_attachments_need_one_consistent_source() -> None:
    with pytest.raises(ValueError, match="exactly one source"):
        skala.Attachment("a.pdf", "application/pdf", 10)
    with pytest.raises(ValueError, match="exactly one source"):
        skala.Attachment("a.pdf", "application/pdf", 3, path=Path("a.pdf"), data=b"abc")
    with pytest.raises(ValueError, match="does not match"):
        skala.Attachment("a.pdf", "application/pdf", 10, data=b"abc")


@pytest.mark.parametrize("token", ["abc\ndef", "two words", "tok\x00en", "tökën"])
def test_a_static_token_must_fit_in_a_header(token: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        skala.SkalaClient(token=token, base_url="http://127.0.0.1:9")


def test_from_env_token_wins_over_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKALA_CLIENT_ID", "env-id")
    monkeypatch.setenv("SKALA_CLIENT_SECRET", "env-secret")
    client = skala.SkalaClient.from_env(token="static-token", base_url="http://127.0.0.1:9")
    assert client.client_id is None
    assert "token" in repr(client)


async def test_a_wait_ends_on_an_error_polling_cannot_fix(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await skala_client.create_ticket(skala_sandbox.customer_id, "s", "d")

    async def untrusted(*args: object, **kwargs: object) -> skala.Ticket:
        raise skala.TransportError(
            "certificate verify failed", method="GET", path="/", request_sent=False, retryable=False
        )

    monkeypatch.setattr(skala_client, "_get", untrusted)
    with pytest.raises(skala.TransportError, match="certificate") as info:
        await handle.wait_until_created(timeout=None)
    assert info.value.retryable is False


async def test_mock_token_can_be_changed_and_errors_precede_states() -> None:
    with mock_skala() as api:
        api.token("tok-A")
        tid = uuid.uuid4()
        api.error("get", 503, retry_after=0.01)
        api.ticket_states(tid, "CREATED", issue_key="SUP-9")
        async with api.client(poll=FAST_POLL) as client:
            assert await client._auth.token() == "tok-A"
            ticket = await client.ticket_handle(tid).wait_until_created(timeout=5)
        assert ticket.issue_key == "SUP-9"
        assert api.count("get") == 2
