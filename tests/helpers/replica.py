"""One process of a replicated service, run by the multi-process tests and the benchmark.

Usage: python -m tests.helpers.replica CONFIG_JSON   (the client secret in SKALA_CLIENT_SECRET)

It serves ``client.webhook_handler`` on 127.0.0.1 (a port of its own), prints
``ready <url>``, and on a line ``go`` on stdin creates ``count`` tickets, waits for all of
them at once, and prints ``done <json>``: each ticket's outcome, its GETs, the requests sent
and when each wait ended. Each ``on_event`` call goes to ``events_file`` as a JSON line with
the time its delivery arrived (one file for all the processes, O_APPEND). It keeps
serving webhooks for the other processes' tickets until ``stop`` (or end of input).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import time
from typing import Any

from aiohttp import web

import skala_async as skala

ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)


def _policy(spec: dict[str, float] | None) -> skala.PollPolicy | None:
    return None if spec is None else skala.PollPolicy(**spec)


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(config: dict[str, Any]) -> None:
    events_fd = os.open(config["events_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    name = config["name"]

    def on_event(event: skala.SupportTicketEvent) -> None:
        line = {
            "ticket_id": str(event.ticket_id),
            "status": event.status.value,
            "by": name,
            "at": ARRIVED.get(),  # when the delivery reached this process
        }
        os.write(events_fd, (json.dumps(line) + "\n").encode())

    bus: Any = None
    if config.get("redis_url"):
        from skala_async.redis import RedisBus

        bus = RedisBus.from_url(
            config["redis_url"],
            prefix=config["prefix"],
            op_timeout=config.get("op_timeout", 1.0),
            ping_interval=0.25,
            reconnect=(0.05, 0.5),
        )
        await bus.start(timeout=5)
    client = skala.SkalaClient(
        config["client_id"],
        os.environ["SKALA_CLIENT_SECRET"],
        base_url=config["base_url"],
        poll=_policy(config.get("poll")),
        webhook_poll=_policy(config.get("webhook_poll")),
        bus=bus,
    )
    handler = client.webhook_handler(config["secret"], on_event)

    async def hook(request: web.Request) -> web.StreamResponse:
        ARRIVED.set(time.time())
        return await handler(request)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready http://127.0.0.1:{port}/hook", flush=True)
    stdin = await _lines()
    try:
        if (await stdin.readline()).strip() == b"go":
            report = await _run(client, config)
            print("done " + json.dumps(report), flush=True)
            await stdin.readline()  # "stop", or the end of input
    finally:
        await runner.cleanup()
        await client.close()
        if bus is not None:
            await bus.close()
        os.close(events_fd)


async def _run(client: skala.SkalaClient, config: dict[str, Any]) -> dict[str, Any]:
    name = config["name"]

    async def wait(handle: skala.TicketHandle) -> dict[str, Any]:
        try:
            ticket = await handle.wait_until_created(
                timeout=config["wait_timeout"], raise_on_failure=False
            )
            status: str | None = ticket.status.value
            key = ticket.issue_key
        except skala.WaitTimeoutError:
            status, key = "TIMEOUT", None
        return {
            "name": name,
            "ticket_id": str(handle.ticket_id),
            "status": status,
            "issue_key": key,
            "polls": handle.polls,
            "ended_at": time.time(),
        }

    waits = []
    pace = config.get("pace", 0.0)  # seconds between two creates, as requests would come
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(config["count"]):  # each wait begins as soon as its ticket is accepted
        if pace:
            await asyncio.sleep(max(0.0, start + i * pace - loop.time()))
        handle = await client.create_ticket(config["customer_id"], f"{name} ticket {i}", "r")
        waits.append(asyncio.ensure_future(wait(handle)))
    results = await asyncio.gather(*waits)
    return {"name": name, "results": results, "requests": dict(client.request_counts)}


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
