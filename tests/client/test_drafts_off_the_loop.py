"""A create call's files given by path are measured (``stat``, read access) in a worker
thread, never on the event loop; the checks and their errors stay what they were."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import skala_async as skala
from skala_async.testing import SkalaSandbox, sandbox_client


@pytest.fixture
def measured_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the threads that checked a file's read access."""
    threads: list[str] = []
    real = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        threads.append(threading.current_thread().name)
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return threads


def _png(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 56)
    return path


@pytest.mark.parametrize("as_generator", [False, True])
async def test_paths_are_measured_off_the_event_loop(
    skala_sandbox: SkalaSandbox, tmp_path: Path, measured_on: list[str], as_generator: bool
) -> None:
    paths = [_png(tmp_path / "a.png"), _png(tmp_path / "b.png")]
    files = (p for p in paths) if as_generator else paths
    loop_thread = threading.current_thread().name
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "s", "d", files=files)
        ticket = await handle.wait_until_created(timeout=30)
    assert ticket.issue_key
    assert measured_on
    assert loop_thread not in measured_on
    (sent,) = skala_sandbox.requests_to("create")
    assert [f.filename for f in sent.files] == ["a.png", "b.png"]


async def test_create_and_wait_measures_a_single_path_off_the_loop(
    skala_sandbox: SkalaSandbox, tmp_path: Path, measured_on: list[str]
) -> None:
    loop_thread = threading.current_thread().name
    async with sandbox_client(skala_sandbox) as client:
        ticket = await client.create_and_wait(
            skala_sandbox.customer_id, "s", "d", files=_png(tmp_path / "one.png"), timeout=30
        )
    assert ticket.issue_key
    assert measured_on
    assert loop_thread not in measured_on


async def test_a_missing_file_is_the_same_error_and_nothing_is_sent(
    skala_sandbox: SkalaSandbox, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.pdf"
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.ValidationError, match="does not exist") as caught:
            await client.create_ticket(skala_sandbox.customer_id, "s", "d", files=[missing])
    assert "gone.pdf" in str(caught.value)
    assert skala_sandbox.requests_to("create") == []
