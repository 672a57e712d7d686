"""Waiting for many tickets: GETs per ticket, detection lag, and the cost of idle waits.

    python benchmarks/bench_wait.py            # full run, about 45 s
    python benchmarks/bench_wait.py --quick    # smoke run, a few seconds

Part 1, polling. An out-of-process sandbox processes each ticket in a uniformly random
1 to 30 s. 2,000 tickets are created and each is waited for from its creation with
``handle.wait_until_created()`` (default :class:`PollPolicy`). Then, against a fresh server,
500 tickets are waited for by a naive fixed 1-second loop per ticket (``get_ticket`` then
``sleep(1)``), the yardstick. Reported: GETs per ticket, and the detection lag (the client
seeing the final status minus the server finishing the ticket; the two processes share
``CLOCK_MONOTONIC``) against the allowance ``max(1 s, 25 % of the ticket's processing
time)``. Budgets: at most 9.6 GETs per ticket on average, and the 95th percentile of lag /
allowance at most 1. Each run also reports how busy the machine was (client and server CPU
over the run, as a share of the cores): the schedule keeps no slack beyond the allowance
(its gap is the allowance), so on a saturated machine, where GETs queue, the lag measures
the machine. The naive loops used to run beside the 2,000 waits, in the same client and
against the same server: 25 % more GETs, sent first (a plain ``get_ticket`` takes no poll
slot), which saturated a 2-core machine; they now run on their own.

Part 2, idle waits. 10,000 and then 100,000 tasks wait at once (``wait_until_created()``)
on tickets that do not change, in a window where no poll is due, each case in fresh
processes: their live Python memory (tracemalloc, the tasks included) and RSS against as
many bare ``while True: await asyncio.sleep(...)`` tasks, the CPU share while they sleep,
and the time ``close()`` takes to end them all. Budgets: memory per wait at most 1.2 x a
bare task's, bytes per wait at 100,000 at most 1.1 x those at 10,000, at most 2 % of a core
while idle, ``close()`` within 2 s. Beside them, as many naive loops that wake every second
(sleep only, no GETs), to show what a per-handle timer loop costs before it sends anything.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
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
BUDGET_GETS = 9.6
IDLE = "--idle"
BUDGET_MEMORY_RATIO = 1.2
BUDGET_SCALING = 1.1
BUDGET_IDLE_CPU = 0.02
BUDGET_CLOSE_SECONDS = 2.0


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


async def _naive_wait(client: skala.SkalaClient, ticket_id: uuid.UUID) -> float:
    """``get_ticket`` then ``sleep(1)`` until final; when it was seen final."""
    while True:
        ticket = await client.get_ticket(ticket_id)
        if ticket.is_final:
            return asyncio.get_running_loop().time()
        await asyncio.sleep(1.0)


async def _polling(count: int, delay: tuple[float, float], naive: bool) -> dict[str, object]:
    """``count`` tickets created at once (64 creates in flight), each waited for from its
    creation: with ``wait_until_created()``, or with the naive loop if ``naive``."""
    server = _Server(*delay)
    try:
        async with skala.SkalaClient(
            server.client_id,
            server.client_secret,
            base_url=server.url,
            max_concurrent_polls=64,
        ) as client:
            seen: dict[str, float] = {}

            async def one(i: int) -> None:
                handle = await client.create_ticket(
                    server.customer, f"wait bench {i}", "processing takes a while"
                )
                if naive:
                    seen[str(handle.ticket_id)] = await _naive_wait(client, handle.ticket_id)
                else:
                    await handle.wait_until_created(timeout=120)
                    assert handle.finished_at is not None
                    seen[str(handle.ticket_id)] = handle.finished_at

            gets_before = client.request_counts["get"]
            sem = asyncio.Semaphore(64)  # creation pace: all created within a few seconds

            async def paced(i: int) -> None:
                async with sem:
                    task = asyncio.ensure_future(one(i))
                    await asyncio.sleep(0)
                await task

            load = _Load(server)
            await asyncio.gather(*(paced(i) for i in range(count)))
            seconds, busy = load.stop()
            total_gets = client.request_counts["get"] - gets_before
        timings = server.timings()
    finally:
        server.close()
    return {"seconds": seconds, "cpu_share": busy, "waits": _summary(seen, total_gets, timings)}


class _Load:
    """CPU of this process and the server's over a run, as a share of the machine's cores
    (Linux): near 1, the lag measures a saturated machine rather than the schedule."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._wall = time.monotonic()
        self._cpu = time.process_time() + self._server_cpu()

    def _server_cpu(self) -> float:
        try:
            with open(f"/proc/{self._server.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> tuple[float, float]:
        """Seconds since the start, and the CPU share of the machine they used."""
        seconds = time.monotonic() - self._wall
        cpu = time.process_time() + self._server_cpu() - self._cpu
        return seconds, cpu / (seconds * (os.cpu_count() or 1))


async def _bulk_polling(count: int, delay: tuple[float, float]) -> dict[str, object]:
    """The second measurement: ``submit_many(..., concurrency=32, wait=True)``.

    Each ticket is created by the client with 32 creates in flight and waited for from its
    202 while the others are still being created, all through the bulk path and the
    client's default settings (32 GETs in flight), against a fresh server of its own.
    """
    server = _Server(*delay)
    try:
        async with skala.SkalaClient(
            server.client_id, server.client_secret, base_url=server.url
        ) as client:
            loop = asyncio.get_running_loop()
            seen: dict[str, float] = {}
            drafts = (
                skala.TicketDraft(server.customer, f"bulk wait {i}", "processing takes a while")
                for i in range(count)
            )
            gets_before = client.request_counts["get"]
            load = _Load(server)
            async for result in client.submit_many(
                drafts, concurrency=32, wait=True, wait_timeout=120
            ):
                if result.ticket is not None and result.ticket.is_final:
                    seen[str(result.ticket_id)] = loop.time()
            seconds, busy = load.stop()
            gets = client.request_counts["get"] - gets_before
        timings = server.timings()
    finally:
        server.close()
    return {"seconds": seconds, "cpu_share": busy, "waits": _summary(seen, gets, timings)}


def _summary(
    seen: dict[str, float], gets: int, timings: dict[str, list[float | None]]
) -> dict[str, float]:
    """GETs per ticket and lag figures of waits that saw their ticket final at ``seen``."""
    ratios: list[float] = []
    lags: list[float] = []
    for tid, at in seen.items():
        created, finished = timings[tid]
        assert created is not None
        assert finished is not None
        ratios.append((at - finished) / max(1.0, 0.25 * (finished - created)))
        lags.append(at - finished)
    ratios.sort()
    lags.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {
        "tickets": len(seen),
        "gets_per_ticket": gets / max(1, len(seen)),
        "p95_lag_over_allowance": pct(ratios, 0.95),
        "within_allowance": sum(r <= 1 for r in ratios) / max(1, len(ratios)),
        "p50_lag_s": median(lags),
        "p95_lag_s": pct(lags, 0.95),
    }


# ---------------------------------------------------------------------------- part 2


async def _idle(mode: str, count: int, window: float, trace: bool) -> dict[str, float]:
    """One measurement, in a fresh process so memory freed by earlier work hides nothing.

    ``wait``: ``count`` tasks ``asyncio.create_task(h.wait_until_created(...))`` on PENDING
    tickets with no poll due (the handles exist beforehand, as they would after the
    creates). ``bare``: ``count`` tasks ``while True: await asyncio.sleep(3600)``.
    ``naive``: the same with ``sleep(1)``, a per-task timer loop. With ``trace`` only the
    live Python memory of the tasks (tracemalloc) is taken; otherwise RSS, the CPU share
    over ``window`` and the time to end them (closing the client for ``wait``,
    cancelling for the others).
    """
    loop = asyncio.get_running_loop()
    client = skala.SkalaClient(token="unused", base_url="http://127.0.0.1:9")
    slow = skala.PollPolicy(first_delay=3600, min_interval=60, max_interval=3600)
    handles = []
    if mode == "wait":
        for _ in range(count):
            h = client.ticket_handle(uuid.uuid4())
            h.ticket = skala.Ticket(h.ticket_id, skala.TicketStatus.PENDING)
            h.accepted_at = loop.time()
            handles.append(h)

    async def sleeper(seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)

    def start() -> list[asyncio.Task[Any]]:
        if mode == "wait":
            return [
                asyncio.create_task(h.wait_until_created(timeout=None, poll=slow)) for h in handles
            ]
        seconds = 3600.0 if mode == "bare" else 1.0
        return [asyncio.create_task(sleeper(seconds)) for _ in range(count)]

    await asyncio.sleep(0.1)
    gc.collect()
    out: dict[str, float] = {"count": count}
    if trace:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = start()
        await asyncio.sleep(0.2)  # every task has run up to its sleep
        gc.collect()
        out["traced_bytes"] = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    else:
        rss0 = proc_status_kib("VmRSS")
        tasks = start()
        await asyncio.sleep(0.5)
        gc.collect()
        out["rss_bytes"] = (proc_status_kib("VmRSS") - rss0) * 1024.0
        cpu0 = time.process_time()
        await asyncio.sleep(window)
        out["cpu_share"] = (time.process_time() - cpu0) / window
    gathered = asyncio.gather(*tasks, return_exceptions=True)  # the caller awaiting them
    started = time.perf_counter()
    if mode == "wait":
        await client.close()  # ends every sleeping wait
    else:
        for t in tasks:
            t.cancel()
    ended = await gathered
    out["end_seconds"] = time.perf_counter() - started
    if mode == "wait":
        assert all(isinstance(r, RuntimeError) for r in ended), "a wait outlived its client"
    await client.close()
    return out


def _in_child(mode: str, count: int, window: float, trace: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, IDLE, mode, str(count), str(window)]
    out = subprocess.run(
        [*cmd, "trace"] if trace else cmd, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _idle_rounds(counts: list[int], window: float, rounds: int) -> dict[str, Any]:
    """Per count: bytes per task (tracemalloc and RSS), medians of ``rounds`` fresh
    processes per mode, the modes alternating (ABBA) in each round; CPU and end time."""
    modes = ["wait", "bare"]
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    for count in counts:
        raw[str(count)] = {m: [] for m in (*modes, "naive")}
        for r in range(rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                raw[str(count)][mode].append(
                    {
                        **_in_child(mode, count, window, True),
                        **_in_child(mode, count, window, False),
                    }
                )
        raw[str(count)]["naive"].append(_in_child("naive", count, window, False))
    summary: dict[str, Any] = {}
    for count_text, by_mode in raw.items():
        count = int(count_text)

        def med(mode: str, key: str, by_mode: dict[str, list[dict[str, float]]] = by_mode) -> float:
            return median([m[key] for m in by_mode[mode] if key in m])

        summary[count_text] = {
            "wait_traced_per_task": med("wait", "traced_bytes") / count,
            "bare_traced_per_task": med("bare", "traced_bytes") / count,
            "wait_rss_per_task": med("wait", "rss_bytes") / count,
            "bare_rss_per_task": med("bare", "rss_bytes") / count,
            "wait_cpu_share": med("wait", "cpu_share"),
            "bare_cpu_share": med("bare", "cpu_share"),
            "naive_cpu_share": med("naive", "cpu_share"),
            "wait_close_seconds": med("wait", "end_seconds"),
            "bare_cancel_seconds": med("bare", "end_seconds"),
        }
    return {"raw": raw, "summary": summary}


# ---------------------------------------------------------------------------- main


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        asyncio.run(_serve(float(sys.argv[2]), float(sys.argv[3])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == IDLE:
        mode, count, window = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        trace = sys.argv[5:] == ["trace"]
        print(json.dumps(asyncio.run(_idle(mode, count, window, trace))))
        return 0
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("1", "2"), help="run only part 1 (polling) or part 2 (idle waits)"
    )
    parser.add_argument("--idle-rounds", type=int, help="fresh processes per case (default 3)")
    parser.add_argument(
        "--tickets",
        type=int,
        help="part 1: tickets per setup (default 2000; the naive loop gets a quarter)",
    )
    args = parser.parse_args()
    if args.quick:
        count, naive_count, delay, idle_counts, window = 60, 20, (0.5, 3.0), [2000], 1.0
    else:
        count, naive_count, delay, idle_counts, window = (
            2000,
            500,
            (1.0, 30.0),
            [10_000, 100_000],
            5.0,
        )
    idle_rounds = args.idle_rounds or (1 if args.quick else 3)
    if args.tickets:
        count, naive_count = args.tickets, max(1, args.tickets // 4)
    print(f"# bench_wait ({machine_line()})\n")
    budgets = Budgets()
    results: dict[str, object] = {}
    if args.part in (None, "1"):
        polling = asyncio.run(_polling(count, delay, naive=False))
        naive = asyncio.run(_polling(naive_count, delay, naive=True))
        bulk = asyncio.run(_bulk_polling(count, delay))
        results.update(polling=polling, naive=naive, bulk=bulk)
        _report_polling(budgets, delay, polling, naive, bulk)
    if args.part in (None, "2"):
        idle = _idle_rounds(idle_counts, window, idle_rounds)
        results["idle"] = idle
        _report_idle(budgets, idle["summary"], window, idle_rounds)
    write_json(args.json, results)
    return budgets.report(check=not args.no_check)


def _report_polling(
    budgets: Budgets,
    delay: tuple[float, float],
    polling: dict[str, Any],
    naive: dict[str, Any],
    bulk: dict[str, Any],
) -> None:
    print(
        f"Part 1: tickets processed in {delay[0]:g} to {delay[1]:g} s, each waited for from "
        "its creation; three runs, each with a fresh server\n"
    )
    runs = (
        ("wait_until_created()", polling),
        ("naive 1 s loop", naive),
        ("submit_many(concurrency=32, wait=True)", bulk),
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
                "run",
                "CPU busy",
            ],
            [
                [
                    name,
                    d["waits"]["tickets"],
                    f"{d['waits']['gets_per_ticket']:.2f}",
                    f"{d['waits']['p50_lag_s']:.2f} s",
                    f"{d['waits']['p95_lag_s']:.2f} s",
                    f"{d['waits']['within_allowance']:.1%}",
                    f"{d['waits']['p95_lag_over_allowance']:.2f}",
                    f"{d['seconds']:.0f} s",
                    f"{d['cpu_share']:.0%}",
                ]
                for name, d in runs
            ],
        )
    )
    print(
        "\nThe first two runs create all their tickets at once (64 creates in flight); the "
        "last is the second measurement, each ticket created by the client with 32 creates "
        "in flight and waited for from its 202. CPU busy: this process and the server's "
        "together, as a share of the machine's cores over the run."
    )
    for name, d in (("", polling["waits"]), (", submit_many", bulk["waits"])):
        budgets.check(f"GETs per ticket{name}", float(d["gets_per_ticket"]), BUDGET_GETS, "{:.2f}")
        budgets.check(
            f"p95 lag / allowance{name}", float(d["p95_lag_over_allowance"]), 1.0, "{:.2f}"
        )


def _report_idle(
    budgets: Budgets, summary: dict[str, dict[str, float]], window: float, rounds: int
) -> None:
    print(
        f"\nPart 2: sleeping waits (no poll due) against bare `while True: await "
        f"asyncio.sleep(3600)` tasks, per task, the caller's task included; median of "
        f"{rounds} fresh processes per case, alternating; CPU over a {window:g} s window\n"
    )
    rows = []
    for count, d in summary.items():
        rows.append(
            [
                f"{int(count):,}",
                f"{d['wait_traced_per_task']:.0f} B",
                f"{d['bare_traced_per_task']:.0f} B",
                f"{d['wait_traced_per_task'] / d['bare_traced_per_task']:.3f}",
                f"{d['wait_rss_per_task']:.0f} B",
                f"{d['bare_rss_per_task']:.0f} B",
                f"{d['wait_cpu_share']:.2%}",
                f"{d['naive_cpu_share']:.2%}",
                f"{d['wait_close_seconds']:.2f} s",
                f"{d['bare_cancel_seconds']:.2f} s",
            ]
        )
    print(
        markdown_table(
            [
                "tasks",
                "wait (tracemalloc)",
                "bare sleep (tracemalloc)",
                "wait / bare",
                "wait (RSS)",
                "bare sleep (RSS)",
                "wait CPU idle",
                "sleep(1) loops CPU",
                "close() ends all",
                "cancelling the bare tasks",
            ],
            rows,
        )
    )
    counts = list(summary)
    for count in counts:
        d = summary[count]
        budgets.check(
            f"memory per wait / bare sleep task, {int(count):,}",
            d["wait_traced_per_task"] / d["bare_traced_per_task"],
            BUDGET_MEMORY_RATIO,
        )
    if len(counts) > 1:
        small, big = summary[counts[0]], summary[counts[-1]]
        budgets.check(
            f"bytes per wait, {int(counts[-1]):,} / {int(counts[0]):,} waits",
            big["wait_traced_per_task"] / small["wait_traced_per_task"],
            BUDGET_SCALING,
        )
    last = summary[counts[-1]]
    budgets.check(
        f"CPU share while idle, {int(counts[-1]):,} waits", last["wait_cpu_share"], BUDGET_IDLE_CPU
    )
    budgets.check(
        f"close() under {int(counts[-1]):,} waits (s)",
        last["wait_close_seconds"],
        BUDGET_CLOSE_SECONDS,
        "{:.2f}",
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
