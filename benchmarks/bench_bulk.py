"""Bulk benchmark: client CPU per created ticket with ``create_many`` against a bare aiohttp
loop sending the same multipart POSTs to the same out-of-process sandbox, and tickets/s.

    .venv/bin/python benchmarks/bench_bulk.py [--quick] [--no-check] [-n 1000] [--rounds 9]

Each round submits N drafts through ``client.create_many(drafts, concurrency=8)`` (bounded
concurrency, the shared rate gate, one outcome per input, a ``BulkReport``) and N bare POSTs
with 8 in flight (the same loop as ``bench_cpu.py``), interleaved in ABBA order after a
warm-up. A third line runs ``create_many`` with a journal (SQLite, two commits per input).
CPU is ``time.process_time()`` of this process only. Budget: median CPU per ticket,
``create_many`` / bare <= 1.10.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

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
from bench_cpu import DESCRIPTION, SUMMARY, bare_sender, run_workers

import skala_async

IMPLS = ("create_many", "bare aiohttp", "create_many + journal")
BUDGET_RATIO = 1.10


async def measure(
    server: Server, n: int, rounds: int, concurrency: int, tmp: Path
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {i: {"cpu": [], "wall": []} for i in IMPLS}
    journals = iter(range(10**6))

    def drafts(count: int) -> list[skala_async.TicketDraft]:
        return [skala_async.TicketDraft(CUSTOMER_ID, SUMMARY, DESCRIPTION) for _ in range(count)]

    async with (
        skala_async.SkalaClient(
            client_id=server.client_id, client_secret=server.client_secret, base_url=server.url
        ) as client,
        aiohttp.ClientSession() as session,
    ):
        token = await bare_token(session, server)
        bare = bare_sender(session, server, token, [])

        async def run(impl: str, count: int) -> None:
            if impl == "bare aiohttp":
                await run_workers(bare, count, concurrency)
                return
            journal = tmp / f"j{next(journals)}.sqlite" if "journal" in impl else None
            report = await client.create_many(
                drafts(count), concurrency=concurrency, journal=journal
            )
            if report.counts["created"] != count:
                raise RuntimeError(f"{impl}: {report!r}")

        for impl in IMPLS:
            await run(impl, max(2 * concurrency, n // 5))
        for r in range(rounds):
            for impl in abba(IMPLS, r):
                await timed(results[impl], n // 2, run(impl, n // 2))
    return results


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per round and implementation (1000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9; quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="creates in flight (8)")
    args = parser.parse_args()
    n = args.n or (60 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 9)
    print(f"# Bulk benchmark ({machine_line()})\n")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="skala-bench-") as tmp,
        sandbox_server(processing_delay="none") as server,
    ):
        results = asyncio.run(measure(server, n, rounds, args.concurrency, Path(tmp)))
    cpu = {i: median(results[i]["cpu"]) for i in IMPLS}
    wall = {i: median(results[i]["wall"]) for i in IMPLS}
    print(
        f"{n} tickets per round and implementation, {args.concurrency} in flight, median of "
        f"{rounds} interleaved rounds; CPU of this process only (server out of process):\n"
    )
    base = cpu["bare aiohttp"]
    print(
        markdown_table(
            ["implementation", "µs CPU/ticket", "CPU ratio to bare", "tickets/s"],
            [
                [i, f"{cpu[i] * 1e6:.0f}", f"{cpu[i] / base:.3f}", f"{1 / wall[i]:.0f}"]
                for i in IMPLS
            ],
        )
    )
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, results)
    budgets = Budgets()
    budgets.check("CPU per ticket create_many/bare", cpu["create_many"] / base, BUDGET_RATIO)
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    raise SystemExit(main())
