"""Fixtures shared by the client's upload tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts of every ``loop.sendfile`` call made by the running loop."""
    calls: list[int] = []
    loop = asyncio.get_event_loop_policy().get_event_loop()
    real = type(loop).sendfile

    async def spy(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> int:
        sent: int = await real(self, *args, **kwargs)
        calls.append(sent)
        return sent

    monkeypatch.setattr(type(loop), "sendfile", spy)
    return calls
