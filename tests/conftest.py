"""Shared fixtures: the shipped pytest plugin gives ``skala_sandbox`` and ``skala_client``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers.redis_server import RedisServer, require_binary

# CI runs the property tests derandomized: the same generated cases on every run, so a
# red build is reproducible. Locally they explore new cases each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

# The shipped plugin is registered through the package's entry point; make sure it is
# active even when the package is imported from a source tree.
pytest_plugins: list[str] = []
if "skala_async.testing.pytest_plugin" not in os.environ.get("PYTEST_PLUGINS", ""):
    try:
        from importlib.metadata import entry_points

        _registered = any(
            ep.value == "skala_async.testing.pytest_plugin" for ep in entry_points(group="pytest11")
        )
    except Exception:  # pragma: no cover
        _registered = False
    if not _registered:  # pragma: no cover - only without an installed package
        pytest_plugins.append("skala_async.testing.pytest_plugin")


@pytest.fixture(autouse=True)
def _api_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Check every exchange of every in-process sandbox against the OpenAPI contract.

    Every request a sandbox answers with 2xx (the client's, in practice) and every answer
    it sends must conform to ``skala_async/testing/openapi.json``; a test during which any
    sandbox recorded a violation fails.
    """
    from skala_async.testing import SkalaSandbox, _contract

    monkeypatch.setattr(SkalaSandbox, "contract_checks", True)
    _contract.take_violations()
    yield
    violations = _contract.take_violations()
    assert not violations, "\n".join(str(v) for v in violations)


_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients follow HTTPS_PROXY/NO_PROXY: a proxy set on the machine must not carry the
    suite's loopback traffic. Tests of proxies set these themselves."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("SKALA_LOG", raising=False)


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a file of ``size`` pseudo-random bytes (or ``content``) and return its path."""
    counter = 0

    def make(name: str, size: int = 1000, content: bytes | None = None) -> Path:
        nonlocal counter
        counter += 1
        path = tmp_path / f"{counter}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            content = os.urandom(size)
        path.write_bytes(content)
        return path

    return make


@pytest.fixture
def no_tasks_left() -> Callable[[], None]:
    """Assert that no task other than the current one is still running."""

    def check() -> None:
        current = asyncio.current_task()
        others = [
            t
            for t in asyncio.all_tasks()
            if t is not current
            and not t.done()
            # the in-process sandbox's own connection handlers are not the client's
            and "RequestHandler" not in t.get_coro().__qualname__  # type: ignore[union-attr]
        ]
        assert others == [], others

    return check


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real ``redis-server`` for the whole run, on a free port in a temporary directory
    (skipped without the binary, a failure under ``CI``). Tests use their own prefixes."""
    server = RedisServer(require_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own, for tests that kill or pause it."""
    server = RedisServer(require_binary(), tmp_path / "redis")
    server.start()
    yield server
    server.close()
