"""The connection half of :class:`~skala_async.redis.RedisBus`: commands bounded by
``op_timeout``, the supervisor that (re)connects with capped, jittered backoff, the
subscriber, the liveness check, and the outbox of what this process sends to the others."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import secrets
import urllib.parse
import uuid
from collections.abc import Awaitable
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("skala_async.redis needs redis-py: pip install 'skala-async[redis]'") from exc

from skala_async._cancelsafe import within
from skala_async.bus import KEPT_IN_PROCESS, KeptTicket, LocalBus
from skala_async.models import Ticket, TicketStatus

log = logging.getLogger("skala_async.redis")

#: Default key and channel prefix.
DEFAULT_PREFIX = "skala:"
#: Default lifetime of kept final states and of "done" dedupe marks, in seconds (24 h).
DEFAULT_TTL = 24 * 3600.0

_DONE = b"done"
_MGET_CHUNK = 500
_OUTBOX_LIMIT = 100_000
_UNSYNCED_LIMIT = 10_000

# Raise a pause only if the new one ends later than the one in force (Redis's clock).
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""
# Claim a callback: run it (and hold the claim), or say it is done or in flight elsewhere.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'run'
end
if v == 'done' then return 'done' end
return 'busy'
"""
# Release a claim only if it is still ours (it may have expired and been taken since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_Trouble = (RedisError, OSError, asyncio.TimeoutError, EOFError)


class _RoundOver(Exception):
    """A loop of a connection round that has ended (it is being torn down)."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (it was logged or acted on already)."""
    if not task.cancelled():
        task.exception()


def _safe_url(url: str) -> str:
    """The URL without a password or user name (for reprs and logs)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class _Link(LocalBus):
    """Redis as one process sees it: up or away, and what is still to be sent.

    :class:`RedisBus` adds the bus's operations on top; the arguments are documented there.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = DEFAULT_TTL,
        claim_ttl: float = 300.0,
        claim_wait: float = 5.0,
        op_timeout: float = 1.0,
        ping_interval: float = 1.0,
        reconnect: tuple[float, float] = (0.1, 5.0),
        kept: int = KEPT_IN_PROCESS,
        **redis_options: Any,
    ) -> None:
        super().__init__(kept=kept)
        if not isinstance(url, str) or not url:
            raise ValueError("url must be a Redis URL such as redis://127.0.0.1:6379/0")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a string")
        self.ttl = _positive("ttl", ttl)
        self.claim_ttl = _positive("claim_ttl", claim_ttl)
        self.claim_wait = _positive("claim_wait", claim_wait)
        self.op_timeout = _positive("op_timeout", op_timeout)
        self.ping_interval = _positive("ping_interval", ping_interval)
        first, largest = reconnect
        self._backoff = (_positive("reconnect", first), _positive("reconnect", largest))
        self.prefix = prefix
        self._url = url
        self._display = _safe_url(url)
        # Commands fail fast (op_timeout); the subscriber's connection waits for messages.
        common: dict[str, Any] = {
            "socket_connect_timeout": self.op_timeout,
            "retry": Retry(NoBackoff(), 0),
            **redis_options,
        }
        try:
            self._redis = aioredis.Redis.from_url(url, socket_timeout=self.op_timeout, **common)
            self._sub_redis = aioredis.Redis.from_url(url, socket_timeout=None, **common)
        except ValueError as exc:
            raise ValueError(f"not a usable Redis URL ({exc})") from None
        self._channel = (prefix + "news").encode()
        self._origin = secrets.token_hex(8)
        self._claim_serial = 0
        self._up = False
        self._ever_up = False
        self._warned = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._serving = 0
        self._connected: asyncio.Event | None = None
        self._outbox: collections.deque[tuple[str, Any]] = collections.deque(maxlen=_OUTBOX_LIMIT)
        self._outbox_ready: asyncio.Event | None = None
        self._unsynced_done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._claims: dict[str, str] = {}
        self._claim_script = self._redis.register_script(_CLAIM)
        self._release_script = self._redis.register_script(_RELEASE)
        #: Times the bus lost Redis, and times it connected (the first time included).
        self.outages = 0
        self.reconnects = 0

    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._connected = asyncio.Event()
            self._outbox_ready = asyncio.Event()
            if self._outbox:
                self._outbox_ready.set()
            self._task = loop.create_task(self._supervise(), name="skala-redis-bus")

    def _loop_deadline(self, times: float = 1.0) -> float:
        return asyncio.get_running_loop().time() + times * self.op_timeout

    # -- keys -------------------------------------------------------------------------------

    def _ticket_key(self, ticket_id: uuid.UUID | str) -> str:
        return f"{self.prefix}t:{ticket_id}"

    def _claim_key(self, key: str) -> str:
        return f"{self.prefix}d:{key}"

    @staticmethod
    def _kept_from(ticket_id: uuid.UUID, raw: object) -> KeptTicket | None:
        if not isinstance(raw, bytes):
            return None
        try:
            data = json.loads(raw)
            key = data.get("k")
            ticket = Ticket(ticket_id, TicketStatus(data["s"]), key)
            if not ticket.is_final or not (key is None or isinstance(key, str)):
                raise ValueError("not a final state")
            return KeptTicket(ticket, bool(data.get("w")))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable kept state of ticket %s in Redis; ignored", ticket_id)
            return None

    def _unhealthy(self, why: str) -> None:
        self._set_healthy(False, why=why)
        self._send(("health", False))

    # -- talking to Redis -------------------------------------------------------------------

    async def _ask(self, command: Awaitable[Any]) -> Any:
        """Run one command; ``None`` if it fails or is slow. A lost connection marks Redis
        away at once; a slow answer alone does not (a busy machine can stall this process
        for a moment): the liveness check decides."""
        try:
            return await command
        except (RedisTimeoutError, asyncio.TimeoutError) as exc:
            log.debug("Redis bus: no answer within %g s (%s)", self.op_timeout, exc)
            return None
        except _Trouble as exc:
            self._away(exc)
            return None

    def _send(self, item: tuple[str, Any]) -> None:
        self._outbox.append(item)
        self._ensure_started()
        if self._up and self._outbox_ready is not None:
            self._outbox_ready.set()

    def _away(self, exc: BaseException | None) -> None:
        if not self._up or self._closed:
            return
        self._up = False
        self.outages += 1
        if self._connected is not None:
            self._connected.clear()
        reason = type(exc).__name__ if exc is not None else "no answer"
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis bus %s is unreachable (%s): carrying on with this process's view "
                "and normal polling; reconnecting in the background",
                self._display,
                reason,
            )
        else:
            log.info("Redis bus %s is unreachable again (%s)", self._display, reason)
        # Waits asleep on the slow fallback schedule adopt the normal one now.
        if self._healthy:
            self._policy_changed()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # the supervisor starts over
            self._task = None
            self._ensure_started()

    async def _supervise(self) -> None:
        first, largest = self._backoff
        delay = first
        while True:
            reconnects = self.reconnects
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._away(exc)
                if not self._ever_up and not self._warned:
                    self._warned = True
                    log.warning(
                        "Redis bus %s is unreachable (%s): carrying on with this process's "
                        "view and normal polling; connecting in the background",
                        self._display,
                        type(exc).__name__,
                    )
            if self.reconnects != reconnects:
                delay = first  # it was connected: the next attempt starts the backoff over
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(largest, delay * 2)

    async def _serve(self) -> None:
        pubsub = self._sub_redis.pubsub()
        try:
            await within(pubsub.subscribe(self._channel), self._loop_deadline())
            await within(self._recover(), self._loop_deadline(4))
            was_away = self._ever_up
            self._up = True
            self._ever_up = True
            self.reconnects += 1
            if was_away:
                log.info("Redis bus %s is back; shared view restored", self._display)
            assert self._connected is not None
            assert self._outbox_ready is not None
            self._connected.set()
            self._outbox_ready.set()
            self._serving += 1
            serving = self._serving
            tasks = [
                asyncio.ensure_future(self._listen(pubsub, serving)),
                asyncio.ensure_future(self._ping(serving)),
                asyncio.ensure_future(self._sender(serving)),
            ]
            for task in tasks:
                task.add_done_callback(_retrieve)
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raise what ended it
            finally:
                # The loops also stop by themselves when the round they belong to is over:
                # a client library may turn a cancel into an error of its own, and nothing
                # here may then wait forever.
                self._serving += 1
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=self.op_timeout)
        finally:
            try:
                await within(pubsub.aclose(), self._loop_deadline())  # type: ignore[no-untyped-call]
            except (*_Trouble, RuntimeError):
                pass

    async def _recover(self) -> None:
        """After (re)connecting: health, pause, and the news this process missed."""
        r = self._redis
        health = await r.get(self.prefix + "webhooks")
        if health == b"up":
            self._set_healthy(True, quiet=True)
        elif health == b"down":
            self._set_healthy(False)
        left = await r.pttl(self.prefix + "pause")
        if isinstance(left, int) and left > 0:
            self._pause_for(left / 1000)
        ids = self.waiting_ids()
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            values = await r.mget([self._ticket_key(t) for t in chunk])
            for ticket_id, raw in zip(chunk, values, strict=True):
                found = self._kept_from(ticket_id, raw)
                if found is not None:
                    self._local_news(found.ticket, False)
                    self._keep(found.ticket, found.webhook)
        if self._unsynced_done:
            pipe = r.pipeline(transaction=False)
            for key in self._unsynced_done:
                pipe.set(self._claim_key(key), _DONE, ex=int(self.ttl))
            await pipe.execute()
            self._unsynced_done.clear()

    async def _listen(self, pubsub: Any, serving: int) -> None:
        while serving == self._serving:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is not None and message.get("type") == "message":
                self._on_message(message.get("data"))
        raise _RoundOver

    def _on_message(self, data: object) -> None:
        try:
            msg = json.loads(data)  # type: ignore[arg-type]
            if msg.get("o") == self._origin:
                return
            if "t" in msg:
                found = self._kept_from(uuid.UUID(msg["t"]), json.dumps(msg).encode())
                if found is None:
                    return
                self._local_news(found.ticket, found.webhook)
            elif "h" in msg:
                self._set_healthy(bool(msg["h"]))
            elif "p" in msg:
                self._pause_for(float(msg["p"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable message on the Redis bus; ignored")

    async def _ping(self, serving: int) -> None:
        slow = 0
        while serving == self._serving:
            await asyncio.sleep(self.ping_interval)
            try:
                await self._redis.ping()
                slow = 0
            except (RedisTimeoutError, asyncio.TimeoutError):
                # Twice in a row: Redis is stalled (paused, overloaded, cut off), not this
                # process for a moment.
                slow += 1
                if slow >= 2:
                    raise
        raise _RoundOver

    async def _sender(self, serving: int) -> None:
        assert self._outbox_ready is not None
        slow = 0
        while serving == self._serving:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            try:
                await self._flush()
                slow = 0
            except (RedisTimeoutError, asyncio.TimeoutError):
                # As for the liveness check: twice in a row is Redis, once may be us. What
                # was not confirmed stays queued (sending it twice is harmless: news and
                # marks are idempotent).
                slow += 1
                if slow >= 2:
                    raise
                self._outbox_ready.set()
        raise _RoundOver

    async def _flush(self) -> None:
        while self._outbox:
            batch = list(self._outbox)
            pipe = self._redis.pipeline(transaction=False)
            for kind, value in batch:
                self._stage(pipe, kind, value)
            await pipe.execute()
            for _ in batch:  # sent: only now leave the outbox
                self._outbox.popleft()

    def _stage(self, pipe: Any, kind: str, value: Any) -> None:
        msg: dict[str, Any] = {"o": self._origin}
        if kind == "news":
            ticket, webhook = value
            tid = str(ticket.ticket_id)
            state = {"s": ticket.status.value, "k": ticket.issue_key, "w": int(webhook)}
            # A webhook's word replaces a GET's; a GET's never replaces what is there.
            pipe.set(self._ticket_key(tid), json.dumps(state), ex=int(self.ttl), nx=not webhook)
            msg.update(t=tid, **state)
        elif kind == "health":
            pipe.set(self.prefix + "webhooks", b"up" if value else b"down", ex=int(self.ttl))
            msg["h"] = int(value)
        else:
            pipe.eval(_PAUSE, 1, self.prefix + "pause", max(1, int(value * 1000)))
            msg["p"] = value
        pipe.publish(self._channel, json.dumps(msg))
