"""Fixtures of the sandbox tests: a running sandbox and a plain aiohttp session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from skala_async.testing import (
    SkalaSandbox,
)


@pytest.fixture
async def sb() -> AsyncIterator[SkalaSandbox]:
    async with SkalaSandbox(processing_delay=0.01) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
