"""Waiting for many tickets: GETs per ticket, detection lag, and the cost of idle waits.

    python benchmarks/bench_wait.py            # full run, about 45 s
    python benchmarks/bench_wait.py --quick    # smoke run, a few seconds

Part 1, polling. An out-of-process sandbox processes each ticket in a uniformly random
1 to 30 s. 2,000 tickets are created and each is waited for from its creation with
``handle.wait_until_created()`` (default :class:`PollPolicy`). In the same run, against the
same server, 500 more tickets are waited for by a naive fixed 1-second loop per ticket
(``get_ticket`` then ``sleep(1)``). Reported: GETs per ticket, and the detection lag (the
client seeing the final status minus the server finishing the ticket; the two processes
share ``CLOCK_MONOTONIC``) against the allowance ``max(1 s, 25 % of the ticket's
processing time)``. Budgets: at most 10 GETs per ticket on average, and the 95th percentile
of lag / allowance at most 1.

Part 2, idle waits. 10,000 handles wait at once on tickets that do not change, in a window
where no poll is due (the slow fallback schedule a client uses while webhooks flow):
the extra RSS and the CPU share of the waiting itself. Budgets: at most 40 MiB and 5 % of a
core. Beside it, 10,000 naive loops that wake every second (sleep only, no GETs), to show
what a per-handle timer loop costs even before it sends anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    Budgets,
    base_parser,
    machine_line,
    markdown_table,
    median,
    proc_status_kib,
    write_json,
)

import skala_async as skala  # noqa: E402

SERVE = "--serve"
IDLE = "--idle"
IDLE_NAIVE = "--idle-naive"


# ---------------------------------------------------------------------------- the server


async def _serve(delay_min: float, delay_max: float) -> None:
    """Run a sandbox; print its URL and credentials; on 'dump' print ticket timings."""
    from skala_async.testing import SkalaSandbox

    async with SkalaSandbox(processing_delay=(delay_min, delay_max), recording=False) as sb:
        print(
            json.dumps(
                {
                    "url": sb.url,
                    "id": sb.client_id,
                    "secret": sb.client_secret,
                    "customer": sb.customer_id,
                }
            ),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"dump":
                data = {t.ticket_id: [t.created_at, t.finished_at] for t in sb.tickets.values()}
                print(json.dumps(data), flush=True)
            elif line.strip() == b"stop":
                break


class _Server:
    def __init__(self, delay_min: float, delay_max: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", __file__, SERVE, str(delay_min), str(delay_max)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url: str = info["url"]
        self.client_id: str = info["id"]
        self.client_secret: str = info["secret"]
        self.customer: str = info["customer"]

    def timings(self) -> dict[str, list[float | None]]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"dump\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---------------------------------------------------------------------------- part 1


async def _naive_wait(client: skala.SkalaClient, ticket_id: uuid.UUID) -> tuple[float, int]:
    gets = 0
    while True:
        ticket = await client.get_ticket(ticket_id)
        gets += 1
        if ticket.is_final:
            return asyncio.get_running_loop().time(), gets
        await asyncio.sleep(1.0)


async def _polling(count: int, naive_count: int, delay: tuple[float, float]) -> dict[str, object]:
    server = _Server(*delay)
    try:
        async with skala.SkalaClient(
            server.client_id,
            server.client_secret,
            base_url=server.url,
            max_concurrent_polls=64,
        ) as client:
            smart: dict[str, float] = {}
            naive: dict[str, tuple[float, int]] = {}

            async def one(i: int) -> None:
                handle = await client.create_ticket(
                    server.customer, f"wait bench {i}", "processing takes a while"
                )
                if i in naive_ids:
                    naive[str(handle.ticket_id)] = await _naive_wait(client, handle.ticket_id)
                else:
                    await handle.wait_until_created(timeout=120)
                    assert handle.finished_at is not None
                    smart[str(handle.ticket_id)] = handle.finished_at

            total = count + naive_count
            order = list(range(total))
            naive_ids = set(random.Random(1).sample(order, naive_count))
            gets_before = client.request_counts["get"]
            sem = asyncio.Semaphore(64)  # creation pace: all created within a few seconds

            async def paced(i: int) -> None:
                async with sem:
                    task = asyncio.ensure_future(one(i))
                    await asyncio.sleep(0)
                await task

            started = time.monotonic()
            await asyncio.gather(*(paced(i) for i in order))
            seconds = time.monotonic() - started
            total_gets = client.request_counts["get"] - gets_before
        timings = server.timings()
    finally:
        server.close()
    naive_gets = sum(g for _, g in naive.values())
    smart_gets = total_gets - naive_gets

    def lags(seen: dict[str, float]) -> list[float]:
        ratios = []
        for tid, at in seen.items():
            created, finished = timings[tid]
            assert created is not None
            assert finished is not None
            allowance = max(1.0, 0.25 * (finished - created))
            ratios.append((at - finished) / allowance)
        return sorted(ratios)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    smart_r = lags(smart)
    naive_r = lags({k: v[0] for k, v in naive.items()})
    smart_abs = sorted(
        smart[t] - timings[t][1]
        for t in smart  # type: ignore[operator]
    )
    naive_abs = sorted(
        naive[t][0] - timings[t][1]
        for t in naive  # type: ignore[operator]
    )
    return {
        "seconds": seconds,
        "smart": {
            "tickets": len(smart),
            "gets_per_ticket": smart_gets / max(1, len(smart)),
            "p95_lag_over_allowance": pct(smart_r, 0.95),
            "within_allowance": sum(r <= 1 for r in smart_r) / max(1, len(smart_r)),
            "p50_lag_s": median(smart_abs),
            "p95_lag_s": pct(smart_abs, 0.95),
        },
        "naive": {
            "tickets": len(naive),
            "gets_per_ticket": naive_gets / max(1, len(naive)),
            "p95_lag_over_allowance": pct(naive_r, 0.95),
            "within_allowance": sum(r <= 1 for r in naive_r) / max(1, len(naive_r)),
            "p50_lag_s": median(naive_abs),
            "p95_lag_s": pct(naive_abs, 0.95),
        },
    }


# ---------------------------------------------------------------------------- part 2


def _rss_mib() -> float:
    return proc_status_kib("VmRSS") / 1024


async def _cost_of(
    start: Callable[[], list[Coroutine[Any, Any, object]]], settle: float, window: float
) -> tuple[float, float]:
    """Extra RSS (MiB) of running what ``start`` makes, and its CPU share over ``window``."""
    await asyncio.sleep(0.2)
    rss0 = _rss_mib()
    tasks = [asyncio.ensure_future(c) for c in start()]
    await asyncio.sleep(settle)
    rss1 = _rss_mib()
    cpu0 = time.process_time()
    await asyncio.sleep(window)
    cpu = (time.process_time() - cpu0) / window
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rss1 - rss0, cpu


async def _idle(count: int, window: float) -> dict[str, float]:
    """Measured in a fresh process, so memory freed by earlier work does not hide growth."""
    client = skala.SkalaClient(token="unused", base_url="http://127.0.0.1:9")
    loop = asyncio.get_running_loop()
    slow = skala.PollPolicy(first_delay=3600, min_interval=60, max_interval=3600)
    handles = []
    for _ in range(count):
        h = client.ticket_handle(uuid.uuid4())
        h.ticket = skala.Ticket(h.ticket_id, skala.TicketStatus.PENDING)
        h.accepted_at = loop.time()
        handles.append(h)
    rss, cpu = await _cost_of(
        lambda: [h.wait_until_created(timeout=None, poll=slow) for h in handles], 0.5, window
    )
    await client.close()
    return {"handles": count, "extra_rss_mib": rss, "cpu_share": cpu}


async def _idle_naive(count: int, window: float) -> dict[str, float]:
    async def naive_loop() -> None:
        while True:
            await asyncio.sleep(1.0)

    rss, cpu = await _cost_of(lambda: [naive_loop() for _ in range(count)], 1.5, window)
    return {"naive_extra_rss_mib": rss, "naive_cpu_share": cpu}


def _in_child(mode: str, count: int, window: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, mode, str(count), str(window)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- main


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        asyncio.run(_serve(float(sys.argv[2]), float(sys.argv[3])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] in (IDLE, IDLE_NAIVE):
        func = _idle if sys.argv[1] == IDLE else _idle_naive
        print(json.dumps(asyncio.run(func(int(sys.argv[2]), float(sys.argv[3])))))
        return 0
    parser = base_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    if args.quick:
        count, naive_count, delay, idle_count, window = 60, 20, (0.5, 3.0), 2000, 1.0
    else:
        count, naive_count, delay, idle_count, window = 2000, 500, (1.0, 30.0), 10_000, 5.0
    print(f"# bench_wait ({machine_line()})\n")
    polling = asyncio.run(_polling(count, naive_count, delay))
    idle = {
        **_in_child(IDLE, idle_count, window),
        **_in_child(IDLE_NAIVE, idle_count, window),
    }
    smart, naive = polling["smart"], polling["naive"]
    assert isinstance(smart, dict)
    assert isinstance(naive, dict)
    print(
        f"Part 1: {count} + {naive_count} tickets processed in {delay[0]:g} to {delay[1]:g} s, "
        f"each waited for from its creation ({polling['seconds']:.0f} s run)\n"
    )
    print(
        markdown_table(
            [
                "waiting",
                "tickets",
                "GETs per ticket",
                "lag p50",
                "lag p95",
                "within max(1 s, 25 %)",
                "p95 lag / allowance",
            ],
            [
                [
                    name,
                    d["tickets"],
                    f"{d['gets_per_ticket']:.2f}",
                    f"{d['p50_lag_s']:.2f} s",
                    f"{d['p95_lag_s']:.2f} s",
                    f"{d['within_allowance']:.1%}",
                    f"{d['p95_lag_over_allowance']:.2f}",
                ]
                for name, d in (("wait_until_created()", smart), ("naive 1 s loop", naive))
            ],
        )
    )
    print(f"\nPart 2: {idle_count} waits on tickets that do not change, {window:g} s window\n")
    print(
        markdown_table(
            ["waiting", "extra RSS", "CPU while idle"],
            [
                [
                    "wait_until_created()",
                    f"{idle['extra_rss_mib']:.1f} MiB",
                    f"{idle['cpu_share']:.2%}",
                ],
                [
                    "naive loop (sleep(1), no GETs)",
                    f"{idle['naive_extra_rss_mib']:.1f} MiB",
                    f"{idle['naive_cpu_share']:.2%}",
                ],
            ],
        )
    )
    write_json(args.json, {"polling": polling, "idle": idle})
    budgets = Budgets()
    budgets.check("GETs per ticket", float(smart["gets_per_ticket"]), 10.0, "{:.2f}")
    budgets.check("p95 lag / allowance", float(smart["p95_lag_over_allowance"]), 1.0, "{:.2f}")
    budgets.check(
        f"extra RSS, {idle_count} idle waits (MiB)", idle["extra_rss_mib"], 40.0, "{:.1f}"
    )
    budgets.check("CPU share while idle", idle["cpu_share"], 0.05, "{:.3f}")
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
