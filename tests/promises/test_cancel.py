"""A cancel is never lost: cancelled at any loop turn, every call ends with CancelledError.

A small API server on 127.0.0.1 (token, create, retrieve, and the client's webhook handler)
signals the moment it answers. Each test starts a few calls, lets that event happen, lets
``k`` more turns of the event loop pass (k = 0 to 40), and cancels every call. A call whose
cancel was accepted (``task.cancel()`` returned True) must end cancelled, promptly: not
return a result it was about to get, and not go on polling. ``SETTLE`` bounds how long the
test waits for that: a bound on a hang, not a timing measurement.

The race this guards against: on Python 3.11 ``asyncio.wait_for`` returns the inner result
instead of raising ``CancelledError`` when the inner awaitable finished in the same turn as
the cancel; a wait cancelled just after its token request was answered went on polling
until its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import skala_async as skala
import skala_async._cancelsafe as cancelsafe
from skala_async.webhooks import SIGNATURE_HEADER, sign_payload

TURNS = range(41)
CALLS = 8
#: How long a cancelled call may take to end before the test calls it a hang.
SETTLE = 1.0
SECRET = "cancel-test-webhook-secret"
CUSTOMER = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
#: Deadline of every call: far beyond the test, so only a cancel can end it early.
FAR = 60.0


class Api:
    """Token, create and retrieve, each answer announced on ``answered[endpoint]``; the
    client's webhook handler at ``/hook``."""

    def __init__(self) -> None:
        self.answered = {name: asyncio.Event() for name in ("token", "get", "webhook")}
        self.counts = {"token": 0, "create": 0, "get": 0}
        self.url = ""
        self.hook: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    async def token(self, request: web.Request) -> web.Response:
        await request.read()
        self.counts["token"] += 1
        self.answered["token"].set()
        body = {"accessToken": uuid.uuid4().hex, "expiresIn": 3600, "tokenType": "Bearer"}
        return web.json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        await request.read()
        self.counts["create"] += 1
        return web.json_response(_ticket(uuid.uuid4()), status=202)

    async def get(self, request: web.Request) -> web.Response:
        self.counts["get"] += 1
        self.answered["get"].set()
        return web.json_response(_ticket(uuid.UUID(request.match_info["tid"])))

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        assert self.hook is not None
        return await self.hook(request)

    def on_event(self, event: skala.SupportTicketEvent) -> None:
        # Called in the same turn as the receiver wakes the waits.
        self.answered["webhook"].set()


def _ticket(ticket_id: uuid.UUID, status: str = "PENDING") -> dict[str, Any]:
    return {
        "ticketId": str(ticket_id),
        "status": status,
        "issueKey": "SUP-1" if status == "CREATED" else None,
    }


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Api]:
    api = Api()
    app = web.Application()
    app.router.add_post("/oauth2/token/", api.token)
    app.router.add_post("/api/v1/supportTickets/", api.create)
    app.router.add_get("/api/v1/supportTickets/{tid}/", api.get)
    app.router.add_post("/hook", api.webhook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield api
    finally:
        await runner.cleanup()


def _client(url: str) -> skala.SkalaClient:
    return skala.SkalaClient(
        client_id="cancel-test",
        client_secret="cancel-test-secret",
        base_url=url,
        poll=skala.PollPolicy(first_delay=0.02, min_interval=0.02, max_interval=0.05),
        webhook_poll=skala.PollPolicy(first_delay=30, min_interval=30, max_interval=30),
    )


async def _wait(client: skala.SkalaClient, handle: skala.TicketHandle) -> object:
    return await handle.wait_until_created(timeout=FAR)


async def _watch(client: skala.SkalaClient, handle: skala.TicketHandle) -> object:
    return [t async for t in handle.watch(timeout=FAR)]


async def _get(client: skala.SkalaClient, handle: skala.TicketHandle) -> object:
    return await client.get_ticket(handle.ticket_id, timeout=FAR)


async def _create(client: skala.SkalaClient, handle: skala.TicketHandle) -> object:
    return await client.create_ticket(CUSTOMER, "Cancelled", "At any turn.", timeout=FAR)


async def _bulk(client: skala.SkalaClient, handle: skala.TicketHandle) -> object:
    drafts = [skala.TicketDraft(CUSTOMER, f"bulk {i}", "At any turn.") for i in range(3)]
    return await client.create_many(drafts, concurrency=3, wait=True, wait_timeout=FAR)


CALLS_OF: dict[str, Callable[[skala.SkalaClient, skala.TicketHandle], Awaitable[object]]] = {
    "wait": _wait,
    "watch": _watch,
    "get": _get,
    "create": _create,
    "bulk": _bulk,
}

CASES = [
    *(("token", call) for call in ("wait", "watch", "get", "create", "bulk")),
    *(("get", call) for call in ("wait", "watch", "get")),
    *(("webhook", call) for call in ("wait", "watch")),
]


async def _round(api: Api, event: str, call: str, k: int) -> list[str]:
    """One round; returns what went wrong (nothing, when every cancel was honoured)."""
    problems: list[str] = []
    for answered in api.answered.values():
        answered.clear()
    async with _client(api.url) as client:
        tasks: list[asyncio.Task[object]] = []
        poster: asyncio.Task[int] | None = None
        ticket_id = uuid.uuid4()
        try:
            if event != "token":
                await client.get_ticket(ticket_id)  # the token is there already
                api.answered["get"].clear()
            if event == "webhook":
                # Mounted first: the waits poll only as a slow fallback, and sleep.
                api.hook = client.webhook_handler(SECRET, api.on_event)
            handles = [client.ticket_handle(ticket_id) for _ in range(CALLS)]
            gets = api.counts["get"]
            tasks = [asyncio.ensure_future(CALLS_OF[call](client, h)) for h in handles]
            if event == "webhook":
                # A rebuilt handle knows nothing: each wait asks once, then sleeps.
                while api.counts["get"] < gets + CALLS:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.01)
                poster = asyncio.ensure_future(_post_event(api.url + "/hook", ticket_id))
            await asyncio.wait_for(api.answered[event].wait(), 5)
            for _ in range(k):
                await asyncio.sleep(0)
            accepted = [t for t in tasks if t.cancel()]
            await asyncio.wait(tasks, timeout=SETTLE)
            for t in accepted:
                if not t.done():
                    problems.append(f"k={k}: still running {SETTLE:g} s after its cancel")
                elif not t.cancelled():
                    outcome = t.exception() or t.result()
                    problems.append(f"k={k}: ended with {outcome!r} instead of CancelledError")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if poster is not None:
                await poster
    return problems


async def _post_event(url: str, ticket_id: uuid.UUID) -> int:
    body = json.dumps(
        {
            "eventType": "SUPPORT_TICKET.CREATED",
            "issueDatetime": "2026-06-26T14:30:00.000Z",
            "supportTicket": _ticket(ticket_id, "CREATED"),
        },
        separators=(",", ":"),
    ).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(body, SECRET)}
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


#: The 3.10 way of bounding an await is tried on later Pythons too, in the cases where a
#: bounded await is on the path (the token request of a call with a deadline).
WAYS = ["native", "waiter"] if cancelsafe.NATIVE else ["waiter"]
CASES_WITH = [
    (way, event, call)
    for event, call in CASES
    for way in WAYS
    if way == WAYS[0] or event == "token"
]


@pytest.mark.parametrize(
    ("way", "event", "call"), CASES_WITH, ids=["-".join(case) for case in CASES_WITH]
)
async def test_a_cancel_at_any_turn_is_honoured(
    way: str, event: str, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if way == "waiter":
        monkeypatch.setattr(cancelsafe, "within", cancelsafe._within_by_waiter)
    problems: list[str] = []
    async with serve() as api:
        for k in TURNS:
            problems += await _round(api, event, call, k)
    assert not problems, f"{len(problems)} cancels lost:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("way", WAYS)
async def test_a_deadline_ends_the_await_and_leaves_nothing_running(way: str) -> None:
    within = cancelsafe._within_by_waiter if way == "waiter" else cancelsafe.within
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    with pytest.raises(TimeoutError):
        await within(forever(), loop.time() + 0.05)
    assert ended.is_set()  # unwound before the timeout was reported
    assert await within(asyncio.sleep(0, "no deadline"), None) == "no deadline"
    assert await within(asyncio.sleep(0, "in time"), loop.time() + 5) == "in time"
