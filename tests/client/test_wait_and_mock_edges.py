"""A wait that polling cannot fix ends; the mock's token and queued errors."""

from __future__ import annotations

import uuid

import pytest

import skala_async as skala
from skala_async.testing import FAST_POLL, SkalaSandbox, mock_skala


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
