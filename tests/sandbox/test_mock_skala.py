"""The aioresponses-based stand-in shipped for users' unit tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.testing import FAST_POLL, FAST_RETRY
from skala_async.testing.mock import MockSkala, mock_skala


async def test_create_then_wait_through_scripted_states(tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.pdf"
    receipt.write_bytes(b"%PDF-1.4 receipt")
    with mock_skala() as api:
        tid = api.accept_create()
        api.ticket_states(tid, "PENDING", "PENDING", "CREATED", issue_key="SUP-7")
        async with api.client(poll=FAST_POLL) as client:
            handle = await client.create_ticket(
                str(uuid.uuid4()), "Escalation: card top-up", "Details.", files=[receipt]
            )
            assert handle.ticket_id == tid
            ticket = await handle.wait_until_created(timeout=5)
        assert ticket.issue_key == "SUP-7"
        assert api.count("create") == 1
        assert api.count("get") == 3
        assert api.count("token") == 1
        [sent] = api.sent_fields()
        assert sent["summary"] == "Escalation: card top-up"
        assert sent["description"] == "Details."
        assert sent["files"] == [("receipt.pdf", "application/pdf", 16)]
        assert "create=1" in repr(api)


async def test_scripted_errors_reach_the_client_typed() -> None:
    with mock_skala("https://skala.example.test") as api:
        api.not_enabled("create")
        api.error("create", 400, code=20063, type="CustomerWithoutEmailException")
        api.error("get", 429, retry_after=0.01, times=2)
        tid = uuid.uuid4()
        api.ticket_states(tid, "FAILED")
        async with api.client(retry=FAST_RETRY) as client:
            with pytest.raises(skala.SupportTicketsNotEnabledError):
                await client.create_ticket(str(uuid.uuid4()), "s", "d")
            with pytest.raises(skala.BadRequestError) as info:
                await client.create_ticket(str(uuid.uuid4()), "s", "d")
            assert info.value.code == 20063
            ticket = await client.get_ticket(tid)  # two 429s, retried, then the state
        assert ticket.status is skala.TicketStatus.FAILED
        assert api.count("get") == 3
        assert api.count("create") == 2


async def test_a_500_on_create_is_outcome_unknown_and_not_resent() -> None:
    with mock_skala() as api:
        api.error("create", 500)
        async with api.client(token="static") as client:
            with pytest.raises(skala.CreateOutcomeUnknownError):
                await client.create_ticket(str(uuid.uuid4()), "s", "d")
        assert api.count("create") == 1
        assert api.count("token") == 0


def test_arguments_are_checked() -> None:
    api = MockSkala()
    with pytest.raises(ValueError, match="endpoint"):
        api.error("tickets", 500)
    with pytest.raises(ValueError, match="status"):
        api.ticket_states(uuid.uuid4())
