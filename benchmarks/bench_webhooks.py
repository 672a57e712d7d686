"""Webhook-first waiting: GETs per ticket and wake-up latency, webhooks vs polling.

    python benchmarks/bench_webhooks.py            # full run, about 70 s
    python benchmarks/bench_webhooks.py --quick    # smoke run, a few seconds

An in-process sandbox processes each ticket in a uniformly random 0.2 to 2 s and POSTs its
signed webhook to an aiohttp app on 127.0.0.1 that mounts ``client.webhook_handler``.
N tickets (200) are created and each is waited for from its creation with
``handle.wait_until_created()``, with the client's default policies, in three modes, each
with a fresh sandbox and client:

- **webhooks**: events arrive; polling only as the slow fallback (first GET after 60 s);
- **polling**: no handler mounted, the default :class:`PollPolicy`;
- **webhooks dropped**: a handler is mounted but the sandbox drops every webhook, so every
  wait must still end, by its fallback poll (the first after 60 s; ``--quick`` uses a
  1 s fallback so the smoke run stays short).

Reported per mode: GETs per ticket, and the wake-up latency as the wait returning minus
the sandbox finishing the ticket (p50 / p95 / max), plus, for webhooks, the wait returning
minus the handler receiving the request. Sandbox, handler and client share one event loop
(in process: the figures are counts and latencies, not CPU). Budgets: 0 GETs per ticket
and a p95 receipt-to-return latency of at most 50 ms with webhooks; every wait ends when
webhooks are dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Budgets, base_parser, machine_line, markdown_table, write_json  # noqa: E402
from aiohttp import web  # noqa: E402

import skala_async as skala  # noqa: E402
from skala_async.testing import SkalaSandbox  # noqa: E402

SECRET = "bench-webhook-secret"  # a local sandbox's made-up secret
MODES = ("webhooks", "polling", "webhooks dropped")
GETS_BUDGET = 0.0
LATENCY_BUDGET = 0.050

_received_at: contextvars.ContextVar[float] = contextvars.ContextVar("received_at")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@web.middleware
async def _stamp(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Note when each webhook request reached the app (before its body is read)."""
    _received_at.set(asyncio.get_running_loop().time())
    return await handler(request)


async def run_mode(
    mode: str, n: int, delay: tuple[float, float], fallback: skala.PollPolicy | None
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    receipts: dict[uuid.UUID, float] = {}

    def on_event(event: skala.SupportTicketEvent) -> None:
        receipts.setdefault(event.ticket_id, _received_at.get())

    async with SkalaSandbox(processing_delay=delay, webhook_secret=SECRET) as sb:
        options: dict[str, Any] = {} if fallback is None else {"webhook_poll": fallback}
        async with skala.SkalaClient(
            client_id=sb.client_id, client_secret=sb.client_secret, base_url=sb.url, **options
        ) as client:
            runner: web.AppRunner | None = None
            if mode != "polling":
                app = web.Application(middlewares=[_stamp])
                app.router.add_post("/webhooks/skala", client.webhook_handler(SECRET, on_event))
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                sb.webhook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/skala"
                sb.webhook_drop = mode == "webhooks dropped"
            try:
                slots = asyncio.Semaphore(16)

                async def one() -> tuple[skala.TicketHandle, float, bool]:
                    async with slots:
                        handle = await client.create_ticket(sb.customer_id, "Bench", "bench")
                    try:
                        await handle.wait_until_created(timeout=600)
                    except skala.SkalaError:
                        return handle, loop.time(), False
                    return handle, loop.time(), True

                started = time.perf_counter()
                gets_before = client.request_counts["get"]
                results = await asyncio.gather(*(one() for _ in range(n)))
                wall = time.perf_counter() - started
                gets = client.request_counts["get"] - gets_before
            finally:
                if runner is not None:
                    await runner.cleanup()
    finish_lag: list[float] = []
    receipt_lag: list[float] = []
    ended = 0
    for handle, returned, ok in results:
        ended += ok
        finished = sb.tickets[str(handle.ticket_id)].finished_at
        if ok and finished is not None:
            finish_lag.append(returned - finished)
        if handle.ticket_id in receipts:
            receipt_lag.append(returned - receipts[handle.ticket_id])
    return {
        "mode": mode,
        "tickets": n,
        "ended": ended,
        "gets": gets,
        "gets_per_ticket": gets / n,
        "sandbox_gets": sb.count("get"),
        "finish_lag": finish_lag,
        "receipt_lag": receipt_lag,
        "wall": wall,
    }


async def measure(
    n: int, delay: tuple[float, float], fallback: skala.PollPolicy | None
) -> list[Any]:
    return [await run_mode(mode, n, delay, fallback) for mode in MODES]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}" if value == value else "—"


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per mode (200; quick 30)")
    args = parser.parse_args()
    n = args.n or (30 if args.quick else 200)
    delay = (0.05, 0.3) if args.quick else (0.2, 2.0)
    fallback = (
        skala.PollPolicy(first_delay=1.0, min_interval=0.5, max_interval=1.0)
        if args.quick
        else None
    )
    print(f"# Webhook-first waiting ({machine_line()})\n")
    started = time.perf_counter()
    results = asyncio.run(measure(n, delay, fallback))
    fallback_text = (
        "the default slow fallback (first GET after 60 s, then every 30 to 120 s)"
        if fallback is None
        else f"a {fallback.first_delay:g} s fallback (--quick)"
    )
    print(
        f"{n} tickets per mode, processed in {delay[0]:g} to {delay[1]:g} s, each waited for "
        f"from its creation; webhook modes poll on {fallback_text}. Latency: the wait "
        "returning minus the sandbox finishing the ticket (finish), or minus the handler "
        "receiving the webhook (receipt), in ms.\n"
    )
    rows = []
    for r in results:
        finish, receipt = r["finish_lag"], r["receipt_lag"]
        rows.append(
            [
                r["mode"],
                f"{r['ended']}/{r['tickets']}",
                f"{r['gets_per_ticket']:.2f}",
                ms(percentile(finish, 0.5)),
                ms(percentile(finish, 0.95)),
                ms(max(finish, default=float("nan"))),
                ms(percentile(receipt, 0.5)),
                ms(percentile(receipt, 0.95)),
                ms(max(receipt, default=float("nan"))),
                f"{r['wall']:.1f}",
            ]
        )
    print(
        markdown_table(
            [
                "mode",
                "waits ended",
                "GETs per ticket",
                "finish p50",
                "finish p95",
                "finish max",
                "receipt p50",
                "receipt p95",
                "receipt max",
                "wall s",
            ],
            rows,
        )
    )
    by_mode = {r["mode"]: r for r in results}
    budgets = Budgets()
    hooks = by_mode["webhooks"]
    budgets.check("GETs per ticket, webhooks", hooks["gets_per_ticket"], GETS_BUDGET, "{:.2f}")
    budgets.check(
        "wake-up p95 after receipt, webhooks (ms)",
        percentile(hooks["receipt_lag"], 0.95) * 1000,
        LATENCY_BUDGET * 1000,
        "{:.1f}",
    )
    dropped = by_mode["webhooks dropped"]
    budgets.check(
        "waits not ended, webhooks dropped",
        dropped["tickets"] - dropped["ended"],
        0,
        "{:.0f}",
    )
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, results)
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
