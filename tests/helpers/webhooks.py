"""Shared pieces of the webhook tests: signed events, a local server, a recording callback."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import skala_async as skala
from skala_async.webhooks import (
    SIGNATURE_HEADER,
)

SECRET = "whsec-test-ñ-0123456789"
TICKET_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
UTC = datetime.timezone.utc
ROOT = Path(__file__).resolve().parent.parent.parent

# A short slow-fallback policy, so that "webhooks dropped" tests end quickly.
SHORT_FALLBACK = skala.PollPolicy(first_delay=0.3, min_interval=0.3, max_interval=0.5)


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_dict(
    ticket_id: str = TICKET_ID,
    status: str = "CREATED",
    issue_key: str | None = "SUP-1234",
    issued: str | None = None,
    **ticket_extra: Any,
) -> dict[str, Any]:
    return {
        "eventType": f"SUPPORT_TICKET.{status}",
        "issueDatetime": iso(datetime.datetime.now(UTC)) if issued is None else issued,
        "supportTicket": {
            "ticketId": ticket_id,
            "status": status,
            "issueKey": issue_key,
            **ticket_extra,
        },
    }


def wire(event: dict[str, Any]) -> bytes:
    """The body exactly as Ripio sends it (reference section 6.4)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def documented_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = SECRET, name: str = SIGNATURE_HEADER) -> dict[str, str]:
    return {"Content-Type": "application/json", name: documented_signature(body, secret)}


# ------------------------------------------------------------------------------ signatures


@asynccontextmanager
async def serve(handler: Any, path: str = "/hook") -> AsyncIterator[str]:
    """Serve ``handler`` for every method on ``path`` on 127.0.0.1; yield its URL."""
    app = web.Application()
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


class Recorder:
    """An async callback that records events (optionally failing or slow)."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.events: list[skala.SupportTicketEvent] = []
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def __call__(self, event: skala.SupportTicketEvent) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database is down")
        self.events.append(event)
