"""Bulk benchmark: client CPU per created ticket with ``create_many`` against a bare aiohttp
loop sending the same multipart POSTs to the same out-of-process sandbox, and tickets/s.

    .venv/bin/python benchmarks/bench_bulk.py [--quick] [--no-check] [-n 1000] [--rounds 9]
        [--baseline DIR] [--throughput 10000]

Each round submits N drafts through ``client.create_many(drafts, concurrency=8)`` (bounded
concurrency, the shared rate gate, one outcome per input, a ``BulkReport``) and N bare POSTs
with 8 in flight (the same loop as ``bench_cpu.py``), interleaved in ABBA order after a
warm-up. A third line runs ``create_many`` with a journal (SQLite, a new file per round):
per input, the claim committed before the create is sent, and its outcome, committed in
the same transaction as the next claim. CPU is ``time.process_time()`` of this process
only. Budgets: median CPU per ticket, ``create_many`` / bare <= 1.10, and the same with the
journal <= 1.10.

``--baseline DIR`` adds ``create_many`` with a journal from the ``skala_async`` package of
another source tree (for example a checkout of the previous release), loaded beside this
one, to the same rounds. Reported, no budget.

``--throughput N`` then measures wall-clock throughput: N tickets through each of the bare
loop, ``create_many`` and ``create_many`` with a journal, 8 in flight, in two halves of N/2
in ABBA order; tickets/s of each over its two halves. Reported, no budget.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    CUSTOMER_ID,
    Budgets,
    Server,
    abba,
    bare_token,
    base_parser,
    machine_line,
    markdown_table,
    median,
    sandbox_server,
    timed,
    write_json,
)
from bench_cpu import DESCRIPTION, SUMMARY, bare_sender, load_baseline, run_workers

import skala_async

BARE = "bare aiohttp"
PLAIN = "create_many"
JOURNAL = "create_many + journal"
BASELINE = "create_many + journal, baseline"
IMPLS = (PLAIN, BARE, JOURNAL)
BUDGET_RATIO = 1.10
JOURNAL_BUDGET_RATIO = 1.10


async def measure(
    server: Server,
    n: int,
    rounds: int,
    concurrency: int,
    tmp: Path,
    impls: tuple[str, ...],
    baseline: Any,
    throughput: int,
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {i: {"cpu": [], "wall": []} for i in impls}
    journals = iter(range(10**6))
    creds = {
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "base_url": server.url,
    }

    def drafts(module: Any, count: int) -> list[Any]:
        return [module.TicketDraft(CUSTOMER_ID, SUMMARY, DESCRIPTION) for _ in range(count)]

    clients: dict[str, Any] = {PLAIN: skala_async.SkalaClient(**creds)}
    clients[JOURNAL] = clients[PLAIN]
    if baseline is not None:
        clients[BASELINE] = baseline.SkalaClient(**creds)
    try:
        async with aiohttp.ClientSession() as session:
            token = await bare_token(session, server)
            bare = bare_sender(session, server, token, [])

            async def run(impl: str, count: int) -> None:
                if impl == BARE:
                    await run_workers(bare, count, concurrency)
                    return
                client = clients[impl]
                module = baseline if impl == BASELINE else skala_async
                journal = tmp / f"j{next(journals)}.sqlite" if impl != PLAIN else None
                report = await client.create_many(
                    drafts(module, count), concurrency=concurrency, journal=journal
                )
                if report.counts["created"] != count:
                    raise RuntimeError(f"{impl}: {report!r}")

            for impl in impls:
                await run(impl, max(2 * concurrency, n // 5))
            for r in range(rounds):
                for impl in abba(impls, r):
                    await timed(results[impl], n // 2, run(impl, n // 2))
            if throughput:
                tp = (BARE, PLAIN, JOURNAL)
                for impl in tp:
                    results[f"{impl} throughput"] = {"cpu": [], "wall": []}
                for impl in abba(tp, 0):
                    await timed(
                        results[f"{impl} throughput"], throughput // 2, run(impl, throughput // 2)
                    )
    finally:
        for c in {id(c): c for c in clients.values()}.values():
            await c.close()
    return results


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per round and implementation (1000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9; quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="creates in flight (8)")
    parser.add_argument(
        "--baseline", metavar="DIR", help="source tree whose create_many + journal to add"
    )
    parser.add_argument(
        "--throughput",
        type=int,
        metavar="N",
        default=0,
        help="also N tickets per implementation for tickets/s (e.g. 10000; 0: skip)",
    )
    args = parser.parse_args()
    n = args.n or (60 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 9)
    baseline = load_baseline(args.baseline) if args.baseline else None
    impls = IMPLS + ((BASELINE,) if baseline is not None else ())
    print(f"# Bulk benchmark ({machine_line()})\n")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="skala-bench-") as tmp,
        sandbox_server(processing_delay="none") as server,
    ):
        results = asyncio.run(
            measure(
                server, n, rounds, args.concurrency, Path(tmp), impls, baseline, args.throughput
            )
        )
    cpu = {i: median(results[i]["cpu"]) for i in impls}
    wall = {i: median(results[i]["wall"]) for i in impls}
    print(
        f"{n} tickets per round and implementation, {args.concurrency} in flight, median of "
        f"{rounds} interleaved rounds; CPU of this process only (server out of process):\n"
    )
    base = cpu[BARE]
    print(
        markdown_table(
            ["implementation", "µs CPU/ticket", "CPU ratio to bare", "tickets/s"],
            [
                [i, f"{cpu[i] * 1e6:.0f}", f"{cpu[i] / base:.3f}", f"{1 / wall[i]:.0f}"]
                for i in impls
            ],
        )
    )
    if args.throughput:
        print(
            f"\nThroughput: {args.throughput} tickets per implementation, {args.concurrency} "
            "in flight, in two halves (ABBA):\n"
        )
        rows = []
        for impl in (BARE, PLAIN, JOURNAL):
            bucket = results[f"{impl} throughput"]
            seconds = sum(bucket["wall"]) * (args.throughput // 2)
            cpu_each = sum(bucket["cpu"]) / len(bucket["cpu"])
            rows.append(
                [
                    impl,
                    f"{args.throughput / seconds:.0f}",
                    f"{seconds:.1f}",
                    f"{cpu_each * 1e6:.0f}",
                ]
            )
        print(markdown_table(["implementation", "tickets/s", "wall s", "µs CPU/ticket"], rows))
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, results)
    budgets = Budgets()
    budgets.check("CPU per ticket create_many/bare", cpu[PLAIN] / base, BUDGET_RATIO)
    budgets.check(
        "CPU per ticket create_many + journal/bare", cpu[JOURNAL] / base, JOURNAL_BUDGET_RATIO
    )
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
