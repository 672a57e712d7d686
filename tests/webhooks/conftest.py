"""Fixtures of the webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for posting to the receivers under test."""
    async with aiohttp.ClientSession() as session:
        yield session
