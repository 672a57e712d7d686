"""The sandbox's webhook sender: one signed POST per outcome, with the webhook faults."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import random
import secrets
from collections.abc import Sequence
from typing import Literal
from urllib.parse import unquote

import aiohttp

from skala_async._protocol import redact_url
from skala_async.testing.sandbox._store import wait_idle
from skala_async.testing.sandbox._values import (
    DEFAULT_SIGNATURE_HEADER,
    SandboxTicket,
    WebhookDelivery,
)
from skala_async.webhooks import sign_payload

__all__ = ["WebhookSender"]

Balance = Literal["random", "round-robin"]
_OUT_OF_ORDER_WINDOW = 0.25  # seconds, for webhook_out_of_order=True


class WebhookSender:
    """Sends each finished ticket's event to ``url`` (one of several, see ``balance``),
    signed with ``secret``; its knobs are the sandbox's ``webhook_*`` attributes."""

    def __init__(self) -> None:
        self.url: str | list[str] | None = None
        self.balance: Balance = "random"
        self.secret: str | None = None
        self.signature_header = DEFAULT_SIGNATURE_HEADER
        self.timeout = 10.0
        self.duplicates = 0
        self.delay: float | tuple[float, float] = 0.0
        self.drop: bool | float = False
        self.wrong_signature = False
        self.out_of_order: bool | float = False
        #: Every delivery attempt, in order of completion.
        self.deliveries: list[WebhookDelivery] = []
        self._turn = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None

    # -- knobs with validation ---------------------------------------------------------------

    @property
    def url(self) -> str | list[str] | None:
        return self._url

    @url.setter
    def url(self, value: str | Sequence[str] | None) -> None:
        if value is None or isinstance(value, str):
            self._url: str | list[str] | None = value
            return
        urls = list(value)
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ValueError("webhook_url must be a URL, a non-empty list of URLs, or None")
        self._url = urls

    @property
    def secret(self) -> str | None:
        return self._secret

    @secret.setter
    def secret(self, value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            # sign_payload refuses an empty key: say so here, not in a delivery later.
            raise ValueError("webhook_secret must be a non-empty string, or None (unsigned)")
        self._secret = value

    @property
    def balance(self) -> Balance:
        return self._balance

    @balance.setter
    def balance(self, value: Balance) -> None:
        if value not in ("random", "round-robin"):
            raise ValueError(f"webhook_balance must be 'random' or 'round-robin', got {value!r}")
        self._balance = value

    @property
    def duplicates(self) -> int:
        return self._duplicates

    @duplicates.setter
    def duplicates(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"webhook_duplicates must be an integer >= 0, got {value!r}")
        self._duplicates = value

    @property
    def delay(self) -> float | tuple[float, float]:
        return self._delay

    @delay.setter
    def delay(self, value: float | tuple[float, float]) -> None:
        self._delay: float | tuple[float, float]
        if isinstance(value, tuple):
            low, high = value
            if not 0 <= low <= high:
                raise ValueError("webhook_delay range must be (min, max) with 0 <= min <= max")
            self._delay = (float(low), float(high))
        elif isinstance(value, (int, float)) and value >= 0:
            self._delay = float(value)
        else:
            raise ValueError(f"webhook_delay must be >= 0 or a (min, max) tuple, got {value!r}")

    @property
    def drop(self) -> bool | float:
        return self._drop

    @drop.setter
    def drop(self, value: bool | float) -> None:
        if not isinstance(value, (bool, int, float)) or not 0 <= value <= 1:
            raise ValueError(f"webhook_drop must be a bool or a chance in [0, 1], got {value!r}")
        self._drop = value

    @property
    def out_of_order(self) -> bool | float:
        return self._out_of_order

    @out_of_order.setter
    def out_of_order(self, value: bool | float) -> None:
        if not isinstance(value, (bool, int, float)) or value < 0:
            raise ValueError(
                f"webhook_out_of_order must be a bool or a window >= 0 s, got {value!r}"
            )
        self._out_of_order = value

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._idle = asyncio.Event()
        self._idle.set()

    def stop(self) -> None:
        """Start no delivery any more (those under way go on until :meth:`close`)."""
        self._loop = None

    async def close(self) -> None:
        self.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def wait(self, deadline: float | None) -> None:
        await wait_idle(self._idle, deadline, lambda: "webhook deliveries still in flight")

    # -- sending -----------------------------------------------------------------------------

    def send(self, ticket: SandboxTicket) -> None:
        """Start the deliveries of ``ticket``'s outcome (none when no URL is set)."""
        urls = self.url
        if not urls or self._loop is None:
            return
        body = _event_body(ticket)
        headers = {"Content-Type": "application/json"}
        secret = self.secret
        if self.wrong_signature:
            secret = "wrong-" + (secret or secrets.token_hex(8))
        if secret is not None:
            headers[self.signature_header] = sign_payload(body, secret)
        for _ in range(1 + self._duplicates):
            if self._drops():
                self.deliveries.append(WebhookDelivery(ticket.ticket_id, ticket.status, "dropped"))
                continue
            url = self._pick_url(urls)
            coro = self._deliver(url, ticket, body, headers, self._hold())
            task = self._loop.create_task(coro)
            self._tasks.add(task)
            assert self._idle is not None
            self._idle.clear()
            task.add_done_callback(self._done)

    def _drops(self) -> bool:
        drop = self._drop
        return drop is True or (drop is not False and random.random() < drop)

    def _hold(self) -> float:
        """Seconds before a copy is sent: the delay plus the out-of-order window."""
        delay = self._delay
        seconds = random.uniform(*delay) if isinstance(delay, tuple) else delay
        window = _OUT_OF_ORDER_WINDOW if self._out_of_order is True else float(self._out_of_order)
        if window > 0:
            seconds += random.uniform(0, window)
        return seconds

    def _pick_url(self, urls: str | list[str]) -> str:
        if isinstance(urls, str):
            return urls
        if self._balance == "round-robin":
            return urls[next(self._turn) % len(urls)]
        return random.choice(urls)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks and self._idle is not None:
            self._idle.set()

    async def _deliver(
        self, url: str, ticket: SandboxTicket, body: bytes, headers: dict[str, str], delay: float
    ) -> None:
        result: int | str
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if self._session is None:  # made on the first delivery: no webhooks, no session
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout)
                )
            async with self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                result = response.status
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result = _hide_userinfo(text, url)
        self.deliveries.append(WebhookDelivery(ticket.ticket_id, ticket.status, result))


def _event_body(ticket: SandboxTicket) -> bytes:
    """The event as Ripio sends it: compact, ASCII-escaped JSON (reference section 6.4)."""
    event = {
        "eventType": f"SUPPORT_TICKET.{ticket.status}",
        "issueDatetime": _now_iso(),
        "supportTicket": {
            "ticketId": ticket.ticket_id,
            "status": ticket.status,
            "issueKey": ticket.issue_key,
        },
    }
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _now_iso() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _hide_userinfo(text: str, url: str) -> str:
    """``text`` (an error about ``url``) without the user-info ``url`` may carry."""
    text = text.replace(url, redact_url(url))
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    for secret in sorted({userinfo, password, unquote(userinfo), unquote(password)}, key=len)[::-1]:
        if secret:
            text = text.replace(secret, "***")
    return text
