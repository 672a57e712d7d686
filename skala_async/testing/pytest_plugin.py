"""pytest fixtures for testing code that uses ``skala_async``.

Installed with the package and loaded by pytest automatically (entry point ``pytest11``).
Needs pytest-asyncio; without it the fixtures are simply not defined.

Fixtures:
    skala_sandbox: a running :class:`~skala_async.testing.SkalaSandbox` on 127.0.0.1.
    skala_client: a :class:`~skala_async.SkalaClient` connected to it, with fast polling and
        retry delays (:data:`~skala_async.testing.FAST_POLL`, ``FAST_RETRY``) so tests do not
        sleep for seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    pytest_asyncio = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from skala_async import SkalaClient
    from skala_async.testing import SkalaSandbox

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def skala_sandbox() -> AsyncIterator[SkalaSandbox]:
        """A fresh sandbox for one test, closed afterwards."""
        from skala_async.testing import SkalaSandbox

        async with SkalaSandbox() as sandbox:
            yield sandbox

    @pytest_asyncio.fixture
    async def skala_client(skala_sandbox: SkalaSandbox) -> AsyncIterator[SkalaClient]:
        """A client for ``skala_sandbox`` with test-speed polling and retries."""
        from skala_async.testing import sandbox_client

        async with sandbox_client(skala_sandbox) as client:
            yield client
