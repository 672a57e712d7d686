"""pytest fixtures for testing code that uses ``skala_async``.

Installed with the package and loaded by pytest automatically (entry point ``pytest11``).
Needs pytest-asyncio; without it the fixtures are simply not defined.

Fixtures:
    skala_sandbox: a running :class:`~skala_async.testing.SkalaSandbox` on 127.0.0.1.
    skala_client: a :class:`~skala_async.SkalaClient` connected to it, with fast polling and
        retry delays (:data:`~skala_async.testing.FAST_POLL`, ``FAST_RETRY``) so tests do not
        sleep for seconds.

It also adds one warnings filter: aiohttp's multipart reader (which the sandbox reads creates
with) calls its own deprecated ``unread_data()`` when an upload arrives in uneven pieces, and
under ``filterwarnings = error`` that warning would fail a create at random. Only that
warning, from ``aiohttp.multipart``, is ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    pytest_asyncio = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import pytest

    from skala_async import SkalaClient
    from skala_async.testing import SkalaSandbox

# The same filter as skala_async.testing.sandbox._forms installs at import (kept equal by a
# test); written out here so that loading the plugin does not import aiohttp.
UNREAD_FILTER = r"ignore:unread_data\(\) is deprecated:DeprecationWarning:aiohttp\.multipart"


def pytest_configure(config: pytest.Config) -> None:
    """Add the filter for aiohttp's own ``unread_data()`` warning (see the module docstring)."""
    config.addinivalue_line("filterwarnings", UNREAD_FILTER)


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
