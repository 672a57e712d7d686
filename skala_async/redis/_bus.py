"""``RedisBus``: the bus's operations (news, webhook health, dedupe, the 429 pause) on Redis."""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType
from typing import Any

from skala_async._cancelsafe import within
from skala_async.bus import Claim, KeptTicket
from skala_async.models import Ticket

from ._link import (
    _DONE,
    _UNSYNCED_LIMIT,
    DEFAULT_PREFIX,
    _Link,
    _retrieve,
    _Trouble,
    log,
)


class RedisBus(_Link):
    """The bus on Redis: news, webhook health, dedupe and the 429 pause for every process.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
            ``unix:///path/to/redis.sock``. The password never appears in a repr or a log.
        prefix: put in front of every key and channel (several services or environments
            can share one Redis).
        ttl: seconds final states and "done" dedupe marks are kept (24 h).
        claim_ttl: seconds a running callback's claim lasts if its process dies (300).
        claim_wait: seconds a copy of an event waits while another process runs its
            callback, before it is answered ``503`` to be delivered again (5).
        op_timeout: seconds any Redis operation may take before Redis counts as away (1).
        ping_interval: seconds between liveness checks of the connection (1).
        reconnect: ``(first, largest)`` delay between reconnection attempts, seconds.
        kept: final states also kept in this process's memory.
        **redis_options: passed to ``redis.asyncio.Redis.from_url`` (``ssl_ca_certs``...).

    Use it as ``async with``, or call :meth:`start` and :meth:`close`; it binds to the event
    loop that starts it. Neither fails when Redis is unreachable.
    """

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> RedisBus:
        """A bus on the Redis at ``url`` (see the class for the keyword arguments)."""
        return cls(url, prefix=prefix, **kwargs)

    def __repr__(self) -> str:
        state = "connected" if self._up else "closed" if self._closed else "away"
        health = "webhooks arriving" if self.webhooks_healthy else "polling"
        return (
            f"<RedisBus {self._display} prefix={self.prefix!r} {state}, {health}, "
            f"{self.waiting()} waiting>"
        )

    @property
    def url(self) -> str:
        """The Redis URL, without a user name or password."""
        return self._display

    @property
    def connected(self) -> bool:
        """Whether Redis answers right now (otherwise this process runs on its own view)."""
        return self._up

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> RedisBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, timeout: float | None = None) -> None:
        """Connect (in the background) and wait up to ``timeout`` (default: twice
        ``op_timeout``) for it; an unreachable Redis is not an error."""
        if self._closed:
            raise RuntimeError("this RedisBus is closed")
        self._ensure_started()
        assert self._connected is not None
        limit = 2 * self.op_timeout if timeout is None else timeout
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter}, timeout=limit)
        finally:
            waiter.cancel()

    async def close(self) -> None:
        """Stop, after sending what is still queued (within ``op_timeout``); close the
        connections. Waits sleeping on the bus carry on polling."""
        if self._closed:
            return
        self._closed = True
        was_up, self._up = self._up, False
        task, self._task = self._task, None
        self._serving += 1
        if task is not None:
            task.add_done_callback(_retrieve)
            task.cancel()
            await asyncio.wait({task}, timeout=3 * self.op_timeout)
        if was_up and self._outbox:
            try:
                await within(self._flush(), self._loop_deadline())
            except _Trouble:
                log.info("Redis bus closed with %d messages unsent", len(self._outbox))
        await self._redis.aclose()
        await self._sub_redis.aclose()

    # -- ticket news ------------------------------------------------------------------------

    def publish(self, ticket: Ticket, *, webhook: bool = False) -> None:
        was_healthy = self._healthy
        self._local_news(ticket, webhook)
        if webhook and not was_healthy:
            self._send(("health", True))
        # Only final states travel: PENDING is the answer to every create, news to no one.
        if ticket.is_final:
            self._send(("news", (ticket, webhook)))

    async def kept(self, ticket_id: uuid.UUID) -> KeptTicket | None:
        known = self.kept_here(ticket_id)
        if known is not None or not self._up:
            return known
        raw = await self._ask(self._redis.get(self._ticket_key(ticket_id)))
        found = self._kept_from(ticket_id, raw)
        if found is not None:
            self._keep(found.ticket, found.webhook)
        return found

    # -- webhook health ---------------------------------------------------------------------

    @property
    def webhooks_healthy(self) -> bool:
        # Without Redis, news from other processes cannot arrive: poll normally.
        return self._healthy and self._up

    async def check_missed(self, ticket_id: uuid.UUID) -> bool:
        known = self.kept_here(ticket_id)
        if known is not None and known.webhook:
            return False
        if self._up:
            raw = await self._ask(self._redis.get(self._ticket_key(ticket_id)))
            found = self._kept_from(ticket_id, raw)
            if found is not None and found.webhook:
                self._keep(found.ticket, True)
                return False  # it reached another process
        self._unhealthy("webhooks seem not to arrive")
        return True

    def webhook_refused(self, why: str) -> None:
        self._unhealthy(why)

    # -- webhook dedupe ---------------------------------------------------------------------

    async def claim(self, key: str) -> Claim:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        self._claim_serial += 1
        token = f"run:{self._origin}:{self._claim_serial}"
        give_up = loop.time() + self.claim_wait
        pause = 0.02
        while self._up:
            verdict = await self._ask(
                self._claim_script(
                    keys=[self._claim_key(key)],
                    args=[token, int(self.claim_ttl * 1000)],
                )
            )
            if verdict == b"run":
                self._claims[key] = token
                return Claim.RUN
            if verdict == _DONE:
                return Claim.DONE
            if verdict is None:  # Redis went away: on our own from here
                break
            if loop.time() + pause > give_up:
                return Claim.BUSY
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        # Without Redis: this process's receiver de-duplicates on its own; the claim is
        # written to Redis when it is back.
        self._claims.pop(key, None)
        return Claim.RUN

    async def settle(self, key: str, delivered: bool) -> None:
        token = self._claims.pop(key, None)
        if delivered:
            if self._up:
                done = await self._ask(
                    self._redis.set(self._claim_key(key), _DONE, ex=int(self.ttl))
                )
                if done is not None:
                    return
            self._unsynced_done[key] = None
            while len(self._unsynced_done) > _UNSYNCED_LIMIT:
                self._unsynced_done.popitem(last=False)
        elif token is not None and self._up:
            await self._ask(self._release_script(keys=[self._claim_key(key)], args=[token]))

    # -- the 429 pause ----------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        self._pause_for(seconds)
        self._send(("pause", seconds))
