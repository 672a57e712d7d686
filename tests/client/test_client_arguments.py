"""Arguments checked before anything is sent: files, attachments, tokens, deadlines."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

import skala_async as skala
from skala_async.testing import Fault, SkalaSandbox, sandbox_client


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
