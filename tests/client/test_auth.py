"""Token providers (``_auth``): single-flight refresh, early refresh, invalidation, cancellation."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from skala_async._auth import ClientCredentials, StaticToken, TokenProvider
from skala_async._protocol import TokenInfo
from skala_async.errors import TransportError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """A token endpoint stand-in: counts calls, can be held open, can fail."""

    def __init__(self, expires_in: int = 100, clock: FakeClock | None = None) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.gate: asyncio.Event | None = None
        self.fail_with: BaseException | None = None
        self.cancelled = False
        self.started = asyncio.Event()
        self.clock = clock
        self.advance_during_fetch = 0.0

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    async def __call__(self) -> TokenInfo:
        self.calls += 1
        n = self.calls
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.clock is not None:
            self.clock.now += self.advance_during_fetch
        if self.fail_with is not None:
            raise self.fail_with
        return TokenInfo(f"SECRET-TOKEN-{n}", self.expires_in)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# =========================================================================== single flight


async def test_concurrent_callers_share_one_fetch() -> None:
    fetch = FakeFetch()
    gate = fetch.hold()
    provider = ClientCredentials(fetch)
    tasks = [asyncio.create_task(provider.token()) for _ in range(50)]
    await settle()
    assert fetch.calls == 1
    assert not any(t.done() for t in tasks)  # all 50 are really waiting on the one fetch
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert tokens == ["SECRET-TOKEN-1"] * 50
    assert fetch.calls == 1
    assert provider.fetch_count == 1
    # And later callers get the cached token.
    assert await provider.token() == "SECRET-TOKEN-1"
    assert fetch.calls == 1


async def test_cached_until_margin_then_refreshed() -> None:
    clock = FakeClock()
    fetch = FakeFetch(expires_in=100)
    provider = ClientCredentials(fetch, margin=10, clock=clock)
    start = clock.now
    assert await provider.token() == "SECRET-TOKEN-1"
    clock.now = start + 89.99
    assert await provider.token() == "SECRET-TOKEN-1"
    assert fetch.calls == 1
    clock.now = start + 90.0  # expires_in - margin
    assert await provider.token() == "SECRET-TOKEN-2"
    assert fetch.calls == 2
    clock.now = start + 179.0
    assert await provider.token() == "SECRET-TOKEN-2"
    clock.now = start + 180.0
    assert await provider.token() == "SECRET-TOKEN-3"


async def test_short_lived_token_uses_half_its_life_as_margin() -> None:
    clock = FakeClock()
    fetch = FakeFetch(expires_in=10)
    provider = ClientCredentials(fetch, margin=60, clock=clock)
    start = clock.now
    await provider.token()
    clock.now = start + 4.9
    assert await provider.token() == "SECRET-TOKEN-1"
    clock.now = start + 5.0
    assert await provider.token() == "SECRET-TOKEN-2"


async def test_lifetime_counted_from_request_start() -> None:
    # A slow token endpoint: the token's lifetime started when we asked, not when it arrived.
    clock = FakeClock()
    fetch = FakeFetch(expires_in=100, clock=clock)
    fetch.advance_during_fetch = 50.0
    provider = ClientCredentials(fetch, margin=10, clock=clock)
    start = clock.now
    await provider.token()
    clock.now = start + 89.0
    assert await provider.token() == "SECRET-TOKEN-1"
    clock.now = start + 90.0
    assert await provider.token() == "SECRET-TOKEN-2"


# =========================================================================== invalidate


async def test_invalidate_forces_one_refresh_only_for_the_current_token() -> None:
    fetch = FakeFetch()
    provider = ClientCredentials(fetch)
    old = await provider.token()
    provider.invalidate(old)
    new = await provider.token()
    assert new == "SECRET-TOKEN-2"
    assert fetch.calls == 2
    # A request that used the old token fails late and reports it: no new refresh.
    provider.invalidate(old)
    assert await provider.token() == new
    assert fetch.calls == 2
    provider.invalidate("some-token-we-never-issued")
    assert await provider.token() == new
    assert fetch.calls == 2
    provider.invalidate(new)
    assert await provider.token() == "SECRET-TOKEN-3"
    assert fetch.calls == 3


async def test_many_concurrent_invalidations_of_same_token_refresh_once() -> None:
    fetch = FakeFetch()
    provider = ClientCredentials(fetch)
    old = await provider.token()
    gate = fetch.hold()

    async def rejected_then_retry() -> str:
        provider.invalidate(old)
        return await provider.token()

    tasks = [asyncio.create_task(rejected_then_retry()) for _ in range(20)]
    await settle()
    gate.set()
    assert set(await asyncio.gather(*tasks)) == {"SECRET-TOKEN-2"}
    assert fetch.calls == 2


# =========================================================================== failures


async def test_fetch_error_reaches_every_waiter_and_next_call_retries() -> None:
    fetch = FakeFetch()
    gate = fetch.hold()
    boom = TransportError("refused", method="POST", path="/oauth2/token/", request_sent=False)
    fetch.fail_with = boom
    provider = ClientCredentials(fetch)
    tasks = [asyncio.create_task(provider.token()) for _ in range(10)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is boom for r in results)
    assert fetch.calls == 1

    fetch.fail_with = None
    assert await provider.token() == "SECRET-TOKEN-2"
    assert fetch.calls == 2


async def test_cancelling_one_waiter_does_not_cancel_the_fetch() -> None:
    fetch = FakeFetch()
    gate = fetch.hold()
    provider = ClientCredentials(fetch)
    first = asyncio.create_task(provider.token())  # this one starts the fetch
    await settle()
    others = [asyncio.create_task(provider.token()) for _ in range(3)]
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    assert not fetch.cancelled
    gate.set()
    assert await asyncio.gather(*others) == ["SECRET-TOKEN-1"] * 3
    assert fetch.calls == 1
    assert not fetch.cancelled


async def test_error_with_every_waiter_cancelled_is_not_logged_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch = FakeFetch()
    gate = fetch.hold()
    fetch.fail_with = RuntimeError("token endpoint exploded")
    provider = ClientCredentials(fetch)
    waiter = asyncio.create_task(provider.token())
    await settle()
    waiter.cancel()
    await settle()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gate.set()
        await settle()
        gc.collect()
        await settle()
    assert "never retrieved" not in caplog.text
    assert waiter.cancelled()


async def test_aclose_cancels_inflight_fetch() -> None:
    fetch = FakeFetch()
    fetch.hold()  # never released
    provider = ClientCredentials(fetch)
    waiter = asyncio.create_task(provider.token())
    await fetch.started.wait()
    await provider.aclose()
    assert fetch.cancelled
    (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    await provider.aclose()  # idempotent


async def test_aclose_without_fetch_is_noop() -> None:
    provider = ClientCredentials(FakeFetch())
    await provider.aclose()
    assert await provider.token() == "SECRET-TOKEN-1"


# =========================================================================== secrets


async def test_reprs_never_show_the_token(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    provider = ClientCredentials(FakeFetch(), clock=clock)
    assert "none" in repr(provider)
    with caplog.at_level(logging.DEBUG, logger="skala_async"):
        token = await provider.token()
        provider.invalidate(token)
        await provider.token()
    assert "valid" in repr(provider)
    assert "SECRET-TOKEN" not in repr(provider)
    assert "SECRET-TOKEN" not in caplog.text
    assert caplog.records  # the debug logs exist, they just hold no token

    static = StaticToken("SECRET-STATIC")
    assert "SECRET-STATIC" not in repr(static)
    assert "SECRET-STATIC" not in str(static)
    assert "SECRET-TOKEN" not in repr(TokenInfo("SECRET-TOKEN-9", 10))


# =========================================================================== static


async def test_static_token() -> None:
    static = StaticToken("abc")
    assert await static.token() == "abc"
    static.invalidate("abc")  # cannot refresh: still the same token
    assert await static.token() == "abc"
    assert static.can_refresh is False
    assert ClientCredentials(FakeFetch()).can_refresh is True
    assert isinstance(static, TokenProvider)
    await static.aclose()


@pytest.mark.parametrize("bad", ["", " ", "\t\n", None, 123, b"abc"])
def test_static_token_rejects_empty_or_non_string(bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        StaticToken(bad)  # type: ignore[arg-type]


async def test_failed_early_refresh_keeps_the_still_valid_token() -> None:
    clock = FakeClock()
    fetch = FakeFetch(expires_in=100)
    provider = ClientCredentials(fetch, margin=10, clock=clock)
    start = clock.now
    assert await provider.token() == "SECRET-TOKEN-1"
    clock.now = start + 95.0  # inside the margin: refresh due, old token not expired
    fetch.fail_with = OSError("token endpoint down")
    assert await provider.token() == "SECRET-TOKEN-1"
    assert fetch.calls == 2
    assert await provider.token() == "SECRET-TOKEN-1"  # no new attempt right away
    assert fetch.calls == 2
    clock.now = start + 100.0  # expired now: the failure surfaces
    with pytest.raises(OSError, match="down"):
        await provider.token()
    fetch.fail_with = None
    assert await provider.token() == "SECRET-TOKEN-4"
