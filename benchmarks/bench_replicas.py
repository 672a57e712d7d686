"""Several processes, one view: waits across 4 replica processes, with and without RedisBus.

    python benchmarks/bench_replicas.py            # full run, about 3 minutes
    python benchmarks/bench_replicas.py --quick    # smoke run, under a minute

Needs ``redis-server`` (Debian's package) and the ``[redis]`` extra; the script starts its
own Redis on a free port in a temporary directory.

Waiting: 4 processes (``tests/helpers/replica.py``), each with its own client and
``client.webhook_handler`` on 127.0.0.1; an in-process sandbox processes each ticket in a
uniformly random 0.2 to 2 s and POSTs its signed webhook to one of the 4 at random (a load
balancer). Each process creates its share of N tickets (2,000), one every 20 ms (as
requests to a service would come: 200 tickets/s over the 4), and waits for each from its
creation, with the client's default policies. Modes, each with a fresh sandbox and fresh
processes:

- **RedisBus**: every process's client on one ``RedisBus``;
- **in-process (no bus)**: the same without it, each process on its own view, as before
  the bus existed: a webhook that lands in another process never reaches the wait;
- **RedisBus, Redis killed 10 s**: tickets processed in 1 to 25 s, Redis killed 4 s after
  the start and restarted (empty) 10 s later.

Reported per mode: waits ended, GETs per ticket (all processes), the wake-up lag from the
webhook reaching any process to the wait on its ticket returning (p50 / p95 / max, wall
clocks of one machine; also p95 split by whether the webhook landed in the waiting process
or another, which tells the bus's hop from the machine's scheduling), and ``on_event`` calls
beyond one per ticket.

Create path: client CPU per created ticket with a ``RedisBus`` against the same client
without one, to the same out-of-process sandbox, 8 in flight, interleaved ABBA rounds.

Budgets: RedisBus 0.00 GETs per ticket, wake-up p95 <= 50 ms, no duplicate ``on_event``,
every wait ends (also with Redis killed), and create CPU <= 1.05 x without the bus.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.helpers: the replica process and Redis server

from _common import (  # noqa: E402
    CUSTOMER_ID,
    Budgets,
    abba,
    base_parser,
    machine_line,
    markdown_table,
    median,
    sandbox_server,
    timed,
    write_json,
)

import skala_async as skala  # noqa: E402
from skala_async.redis import RedisBus  # noqa: E402
from skala_async.testing import SkalaSandbox  # noqa: E402
from tests.helpers.redis_server import RedisServer  # noqa: E402
from tests.helpers.replicas import RunReport, run_replicas  # noqa: E402

PROCESSES = 4
LAG_BUDGET = 0.050
CPU_BUDGET = 1.05
IMPLS = ["RedisBus", "no bus"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(value: float) -> str:
    if value != value:
        return "—"
    return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"


async def run_mode(
    redis: RedisServer,
    name: str,
    n: int,
    delay: tuple[float, float],
    *,
    shared: bool,
    pace: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    async with SkalaSandbox(processing_delay=delay, recording=False) as sb:
        report: RunReport = await run_replicas(
            sb,
            processes=PROCESSES,
            tickets_each=n // PROCESSES,
            redis_url=redis.url if shared else None,
            prefix=f"bench{int(time.time() * 1000)}:",
            wait_timeout=600,
            pace=pace,
            during=during,
            start_timeout=120,
        )
        creates = sum(1 for t in sb.tickets.values())
    lags = report.lags()
    return {
        "mode": name,
        "tickets": len(report.results),
        "created": creates,
        "ended": report.ended,
        "gets_per_ticket": report.gets_per_ticket,
        "lag_p50": percentile(lags, 0.5),
        "lag_p95": percentile(lags, 0.95),
        "lag_max": max(lags, default=float("nan")),
        "lag_p95_same": percentile(report.lags("same"), 0.95),
        "lag_p95_other": percentile(report.lags("other"), 0.95),
        "duplicate_events": report.duplicate_events,
        "events": len(report.events),
        "wall": time.perf_counter() - started,
    }


async def measure_cpu(redis: RedisServer, n: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Client CPU per created ticket, with and without a RedisBus (ABBA rounds)."""
    results: dict[str, dict[str, list[float]]] = {i: {"cpu": [], "wall": []} for i in IMPLS}
    with sandbox_server() as server:
        async with (
            RedisBus.from_url(redis.url, prefix="benchcpu:") as bus,
            skala.SkalaClient(
                server.client_id, server.client_secret, base_url=server.url, bus=bus
            ) as with_bus,
            skala.SkalaClient(
                server.client_id, server.client_secret, base_url=server.url
            ) as without,
        ):
            clients = {"RedisBus": with_bus, "no bus": without}

            async def create_many(client: skala.SkalaClient, count: int) -> None:
                left = count

                async def worker() -> None:
                    nonlocal left
                    while left > 0:
                        left -= 1
                        await client.create_ticket(CUSTOMER_ID, "Replica benchmark", "CPU")

                await asyncio.gather(*(worker() for _ in range(8)))

            for impl in IMPLS:  # warm-up
                await create_many(clients[impl], max(16, n // 5))
            for r in range(rounds):
                for impl in abba(IMPLS, r):
                    await timed(results[impl], n // 2, create_many(clients[impl], n // 2))
    return results


async def main_async(args: Any, redis: RedisServer) -> dict[str, Any]:
    n = args.n or (80 if args.quick else 2000)
    delay = (0.05, 0.5) if args.quick else (0.2, 2.0)
    outage = 1.0 if args.quick else 10.0
    long_delay = (0.5, 4.0) if args.quick else (1.0, 25.0)

    async def kill_redis() -> None:
        await asyncio.sleep(1.0 if args.quick else 4.0)
        redis.kill()
        await asyncio.sleep(outage)
        redis.start()

    pace = args.pace if args.pace is not None else (0.005 if args.quick else 0.02)
    wanted = set(args.modes.split(","))
    modes = []
    if "bus" in wanted:
        modes.append(await run_mode(redis, "RedisBus", n, delay, shared=True, pace=pace))
    if "nobus" in wanted and not args.quick:  # it waits out the 60 s slow fallback
        modes.append(
            await run_mode(redis, "in-process (no bus)", n, delay, shared=False, pace=pace)
        )
    if "killed" in wanted:
        modes.append(
            await run_mode(
                redis,
                f"RedisBus, Redis killed {outage:g} s",
                n,
                long_delay,
                shared=True,
                pace=pace,
                during=kill_redis,
            )
        )
    cpu = None
    if "cpu" in wanted:
        cpu = await measure_cpu(redis, args.cpu_n or (200 if args.quick else 1000), args.rounds)
    return {
        "modes": modes,
        "cpu": cpu,
        "n": n,
        "pace": pace,
        "delay": delay,
        "long_delay": long_delay,
    }


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per mode, all processes (2000; quick 80)")
    parser.add_argument("--cpu-n", type=int, help="creates per CPU round (1000; quick 200)")
    parser.add_argument("--rounds", type=int, default=None, help="CPU rounds (9; quick 1)")
    parser.add_argument("--pace", type=float, help="seconds between creates (0.02; quick 0.005)")
    parser.add_argument(
        "--modes", default="bus,nobus,killed,cpu", help="what to run (default all of them)"
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 9)
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is needed (Debian: apt-get install redis-server)")
        return 2
    print(f"# Several processes, one view ({machine_line()})\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis = RedisServer(binary, Path(tmp))
        redis.start()
        try:
            data = asyncio.run(main_async(args, redis))
        finally:
            redis.close()
    delay, long_delay = data["delay"], data["long_delay"]
    print(
        f"{data['n']} tickets per mode over {PROCESSES} processes (each creating one every "
        f"{data['pace'] * 1000:g} ms), processed in {delay[0]:g} to {delay[1]:g} s "
        f"({long_delay[0]:g} to {long_delay[1]:g} s with Redis killed), each "
        "waited for from its creation with the default policies; webhooks to one process at "
        "random. Wake-up: the wait returning minus its webhook reaching any process.\n"
    )
    rows = [
        [
            m["mode"],
            f"{m['ended']}/{m['tickets']}",
            f"{m['created']}",
            f"{m['gets_per_ticket']:.2f}",
            ms(m["lag_p50"]),
            ms(m["lag_p95"]),
            ms(m["lag_max"]),
            f"{ms(m['lag_p95_same'])} / {ms(m['lag_p95_other'])}",
            f"{m['events']} ({m['duplicate_events']} extra)",
            f"{m['wall']:.0f}",
        ]
        for m in data["modes"]
    ]
    print(
        markdown_table(
            [
                "mode",
                "waits ended",
                "tickets created",
                "GETs per ticket",
                "wake-up p50",
                "wake-up p95",
                "wake-up max",
                "p95 same / other process",
                "on_event calls",
                "wall s",
            ],
            rows,
        )
    )
    budgets = Budgets()
    cpu = data["cpu"]
    if cpu is not None:
        ratio = median(cpu["RedisBus"]["cpu"]) / median(cpu["no bus"]["cpu"])
        print()
        print(
            markdown_table(
                ["create path", "client CPU per ticket", "ratio"],
                [
                    [
                        impl,
                        f"{median(cpu[impl]['cpu']) * 1e6:.0f} µs",
                        f"{ratio:.3f}" if i == 0 else "",
                    ]
                    for i, impl in enumerate(IMPLS)
                ],
            )
        )
        budgets.check("create CPU with RedisBus / without", ratio, CPU_BUDGET, "{:.3f}")
    for bus_mode in data["modes"][:1]:
        if bus_mode["mode"] != "RedisBus":
            break
        budgets.check("GETs per ticket, RedisBus", bus_mode["gets_per_ticket"], 0.0, "{:.2f}")
        budgets.check(
            "wake-up p95 after the webhook reached any process (ms)",
            bus_mode["lag_p95"] * 1000,
            LAG_BUDGET * 1000,
            "{:.1f}",
        )
    for m in data["modes"]:
        budgets.check(f"waits not ended, {m['mode']}", m["tickets"] - m["ended"], 0, "{:.0f}")
        if m["mode"].startswith("RedisBus"):
            budgets.check(f"extra on_event calls, {m['mode']}", m["duplicate_events"], 0, "{:.0f}")
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, data)
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
