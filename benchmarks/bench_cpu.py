"""CPU benchmark: client CPU seconds per created ticket, skala_async vs a bare aiohttp loop
sending the same multipart POSTs to the same out-of-process sandbox.

    .venv/bin/python benchmarks/bench_cpu.py [--quick] [--no-check] [-n 500] [--rounds 15]

Two variants: no attachment, and one 10 KB attachment (a path; both sides read it from
disk for every request). Each round creates N tickets with the same number in flight (8)
for each implementation, interleaved (ABBA order), after a warm-up. CPU is
``time.process_time()`` of this process only (all its threads: the file reads in the
executor count); the server runs in another process. Budget: median CPU per ticket,
skala_async / bare <= 1.10 for each variant.

The bare loop does the minimum honest work: one token, then per ticket a
``FormData(quote_fields=False)`` with the three fields (and an open file), the POST with the
bearer token, reading the body and ``json.loads`` of it, checking for 202.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from _common import (
    CREATE_PATH,
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

import skala_async

BUDGET_RATIO = 1.10
IMPLS = ("skala_async", "bare aiohttp")
SUMMARY = "Cannot withdraw to my bank account"
DESCRIPTION = (
    "Since yesterday every withdrawal to my bank account fails with a generic error. "
    "I have attached a screenshot of the error screen."
)


async def run_workers(send: Callable[[], Awaitable[None]], n: int, concurrency: int) -> None:
    """Call ``send`` ``n`` times with ``concurrency`` calls in flight."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def bare_sender(
    session: aiohttp.ClientSession, server: Server, token: str, files: list[Path]
) -> Callable[[], Awaitable[None]]:
    url = server.url + CREATE_PATH
    headers = {"Authorization": f"Bearer {token}"}

    async def send() -> None:
        # multipart also without files, as the endpoint documents (and the client sends)
        form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        form.add_field("customerId", CUSTOMER_ID)
        form.add_field("summary", SUMMARY)
        form.add_field("description", DESCRIPTION)
        for path in files:
            # aiohttp reads the file in its executor and closes it after sending
            f = open(path, "rb")  # noqa: SIM115
            form.add_field("files", f, filename=path.name, content_type="image/png")
        async with session.post(url, data=form, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 202:
                raise RuntimeError(f"bare: HTTP {resp.status}: {body[:200]!r}")
        json.loads(body)

    return send


def client_sender(
    client: skala_async.SkalaClient, files: list[Path]
) -> Callable[[], Awaitable[None]]:
    async def send() -> None:
        await client.create_ticket(
            customer_id=CUSTOMER_ID, summary=SUMMARY, description=DESCRIPTION, files=files
        )

    return send


async def measure(
    server: Server, variants: dict[str, list[Path]], n: int, rounds: int, concurrency: int
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{variant: {impl: {"cpu": [...], "wall": [...]}}}, per round."""
    results = {v: {i: {"cpu": [], "wall": []} for i in IMPLS} for v in variants}
    async with (
        skala_async.SkalaClient(
            client_id=server.client_id,
            client_secret=server.client_secret,
            base_url=server.url,
        ) as client,
        aiohttp.ClientSession() as session,
    ):
        token = await bare_token(session, server)
        senders = {
            v: {
                "skala_async": client_sender(client, files),
                "bare aiohttp": bare_sender(session, server, token, files),
            }
            for v, files in variants.items()
        }
        warm = max(2 * concurrency, n // 5)
        for v in variants:
            for impl in IMPLS:
                await run_workers(senders[v][impl], warm, concurrency)
        for r in range(rounds):
            for v in variants:
                for impl in abba(IMPLS, r):  # two half-rounds each
                    work = run_workers(senders[v][impl], n // 2, concurrency)
                    await timed(results[v][impl], n // 2, work)
    return results


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per round and implementation (500)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    args = parser.parse_args()
    n = args.n or (60 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 15)
    print(f"# CPU benchmark ({machine_line()})\n")
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="skala-bench-") as tmp:
        shot = Path(tmp) / "screenshot.png"
        shot.write_bytes(os.urandom(10_000))
        variants = {"no files": [], "one 10 KB file": [shot]}
        with sandbox_server(processing_delay="none") as server:
            results = asyncio.run(measure(server, variants, n, rounds, args.concurrency))

    print(
        f"Client CPU per created ticket (this process only; server out of process), "
        f"{args.concurrency} in flight, {n} tickets per round and implementation, "
        f"median of {rounds} interleaved rounds (each as two ABBA halves):\n"
    )
    rows = []
    budgets = Budgets()
    ratios = {}
    for v in variants:
        cpu = {i: median(results[v][i]["cpu"]) for i in IMPLS}
        wall = {i: median(results[v][i]["wall"]) for i in IMPLS}
        ratios[v] = cpu["skala_async"] / cpu["bare aiohttp"]
        rows.append(
            [
                v,
                f"{cpu['skala_async'] * 1e6:.0f}",
                f"{cpu['bare aiohttp'] * 1e6:.0f}",
                f"{ratios[v]:.3f}",
                f"{1 / wall['skala_async']:.0f}",
                f"{1 / wall['bare aiohttp']:.0f}",
            ]
        )
    print(
        markdown_table(
            [
                "variant",
                "skala_async µs CPU/ticket",
                "bare aiohttp µs CPU/ticket",
                "CPU ratio",
                "skala_async tickets/s",
                "bare tickets/s",
            ],
            rows,
        )
    )
    for v in variants:
        budgets.check(f"CPU per ticket skala/bare, {v}", ratios[v], BUDGET_RATIO)
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, results)
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
