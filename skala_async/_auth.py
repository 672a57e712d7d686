"""Bearer tokens: OAuth2 client credentials (refreshed early, single-flight) or static.

The token endpoint (reference section 2) answers camelCase ``accessToken`` and
``expiresIn`` (seconds). No refresh token exists: a new token is requested a margin before
the old one expires. However many coroutines need a token at once, one request is made;
the others wait for it. When the API rejects a token (401, or 403 with a code other than
20061) the client calls :meth:`TokenProvider.invalidate` with the token that failed, and
only the first such call forces a refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ._protocol import TokenInfo

__all__ = ["ClientCredentials", "StaticToken", "TokenProvider"]

log = logging.getLogger("skala_async.auth")

FetchToken = Callable[[], Awaitable[TokenInfo]]


class TokenProvider:
    """Interface: something that hands out bearer tokens."""

    can_refresh: bool = False

    async def token(self) -> str:  # pragma: no cover - interface
        """A token that is valid now, fetching one if needed."""
        raise NotImplementedError

    def cached(self) -> str | None:
        """A token that is valid now without any I/O, if there is one."""
        return None

    def invalidate(self, token: str) -> None:
        """The API rejected ``token``: the next :meth:`token` call must not return it."""

    async def aclose(self) -> None:
        """Release anything in flight."""


def _retrieve(fut: asyncio.Future[str]) -> None:
    # Every waiter may have been cancelled; mark the outcome as seen so asyncio does not
    # log "exception was never retrieved" for a refresh nobody awaits any more.
    if not fut.cancelled():
        fut.exception()


class StaticToken(TokenProvider):
    """A bearer token the caller got elsewhere; never refreshed."""

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string")
        if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
            # It goes into an HTTP header: refuse it here, not as a failed request later.
            raise ValueError("token must be printable ASCII without spaces")
        self._token = token

    async def token(self) -> str:
        return self._token

    def cached(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(token='***')"


class ClientCredentials(TokenProvider):
    """Client-credentials tokens, refreshed ``margin`` before they expire.

    Args:
        fetch: coroutine function that performs the token request (with its own retries).
        margin: refresh this long before ``expiresIn`` runs out; for short-lived tokens at
            most half their lifetime is used as margin.
        clock: monotonic clock (tests pass a fake one).
    """

    can_refresh = True

    def __init__(
        self,
        fetch: FetchToken,
        *,
        margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._inflight: asyncio.Future[str] | None = None
        self.fetch_count = 0

    def __repr__(self) -> str:
        state = "valid" if self._token is not None and self._clock() < self._refresh_at else "none"
        return f"ClientCredentials(token={state})"

    def cached(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def token(self) -> str:
        if (token := self.cached()) is not None:
            return token
        if self._inflight is None:
            # Single flight: the first caller starts the request in a task of its own, so a
            # cancelled caller does not cancel the refresh the others are waiting for.
            self._inflight = asyncio.ensure_future(self._refresh())
            self._inflight.add_done_callback(_retrieve)
        return await asyncio.shield(self._inflight)

    async def aclose(self) -> None:
        """Cancel a refresh still in flight (the client is closing)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh(self) -> str:
        try:
            started = self._clock()
            self.fetch_count += 1
            try:
                info = await self._fetch()
            except Exception:
                # An early refresh failed, but the current token has not expired yet: keep
                # using it and try again a little later rather than failing the call.
                now = self._clock()
                if self._token is not None and now < self._expires_at:
                    log.debug("token refresh failed; the current token is still valid")
                    self._refresh_at = now + min(10.0, (self._expires_at - now) / 2)
                    return self._token
                raise
            margin = min(self._margin, info.expires_in / 2)
            self._token = info.access_token
            self._refresh_at = started + info.expires_in - margin
            self._expires_at = started + info.expires_in
            log.debug("got an access token valid for %d s", info.expires_in)
            return info.access_token
        finally:
            self._inflight = None

    def invalidate(self, token: str) -> None:
        if token == self._token:
            log.debug("access token rejected by the API; a new one will be requested")
            self._token = None
            self._refresh_at = 0.0
            self._expires_at = 0.0
