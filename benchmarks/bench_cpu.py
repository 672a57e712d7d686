"""CPU benchmark: client CPU seconds per created ticket, skala_async vs a bare aiohttp loop
sending the same multipart POSTs to the same out-of-process sandbox.

    .venv/bin/python benchmarks/bench_cpu.py [--quick] [--no-check] [-n 500] [--rounds 15]
        [--baseline DIR]

Two variants: no attachment, and one 10 KB attachment (a path; both sides read it from
disk for every request). Each round creates N tickets with the same number in flight (8)
for each implementation, interleaved (ABBA order), after a warm-up. CPU is
``time.process_time()`` of this process only (all its threads: the file reads in the
executor count); the server runs in another process. Budget: median CPU per ticket,
skala_async / bare <= 1.10 for each variant.

The bare loop does the minimum honest work: one token, then per ticket a
``FormData(quote_fields=False)`` with the three fields (and an open file), the POST with the
bearer token, reading the body and ``json.loads`` of it, checking for 202.

Two more clients run in the same rounds:

- ``skala_async + OTel SDK``: the same client made with ``tracing=`` an OpenTelemetry SDK
  ``TracerProvider`` whose batch processor hands spans to an exporter that drops them
  (the cost of making, not of shipping, spans). Reported, no budget. Skipped without the
  SDK installed.
- with ``--baseline DIR``: the ``skala_async`` package of another source tree (for example
  a checkout of the previous release), loaded beside this one under another module name.
  Budget: tracing off, CPU per ticket of this tree / the baseline's <= 1.02.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
#: This tree against the ``--baseline`` tree, tracing off.
BASELINE_RATIO = 1.02
BARE = "bare aiohttp"
TRACED = "skala_async + OTel SDK"
BASELINE = "skala_async baseline"
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


def client_sender(client: Any, files: list[Path]) -> Callable[[], Awaitable[None]]:
    async def send() -> None:
        await client.create_ticket(
            customer_id=CUSTOMER_ID, summary=SUMMARY, description=DESCRIPTION, files=files
        )

    return send


def tracer_provider() -> Any:
    """An OpenTelemetry SDK provider that makes and batches spans, then drops them."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


class _BaselineLoader(importlib.machinery.SourceFileLoader):
    """Loads a module of the baseline tree with its absolute ``skala_async`` imports
    pointed at ``skala_baseline``: otherwise they would reach this tree's modules, and the
    baseline would mix the two (its own classes failing its own isinstance checks)."""

    def source_to_code(  # type: ignore[override]
        self, data: bytes, path: str, *, _optimize: int = -1
    ) -> types.CodeType:
        text = importlib.util.decode_source(data)
        text = _ABSOLUTE.sub(r"\1\2 skala_baseline", text)
        return compile(text, path, "exec", dont_inherit=True, optimize=_optimize)


_ABSOLUTE = re.compile(r"^(\s*)(from|import) skala_async\b", re.MULTILINE)


class _BaselineFinder(importlib.abc.MetaPathFinder):
    """Finds ``skala_baseline.*`` in the baseline tree, loaded by :class:`_BaselineLoader`."""

    def find_spec(
        self, name: str, path: Any, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith("skala_baseline.") or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            spec.loader = _BaselineLoader(name, spec.origin)
        return spec


def load_baseline(tree: str) -> types.ModuleType:
    """The ``skala_async`` package of another source tree, as module ``skala_baseline``."""
    init = Path(tree) / "skala_async" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline: no skala_async package in {tree}")
    sys.meta_path.insert(0, _BaselineFinder())
    spec = importlib.util.spec_from_file_location(
        "skala_baseline",
        init,
        loader=_BaselineLoader("skala_baseline", str(init)),
        submodule_search_locations=[str(init.parent)],
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["skala_baseline"] = module
    spec.loader.exec_module(module)
    return module


async def measure(
    server: Server,
    variants: dict[str, list[Path]],
    n: int,
    rounds: int,
    concurrency: int,
    impls: list[str],
    baseline: types.ModuleType | None,
    provider: Any,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{variant: {impl: {"cpu": [...], "wall": [...]}}}, per round."""
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        v: {i: {"cpu": [], "wall": []} for i in impls} for v in variants
    }
    creds = {
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "base_url": server.url,
    }
    clients: dict[str, Any] = {"skala_async": skala_async.SkalaClient(**creds)}
    if TRACED in impls:
        clients[TRACED] = skala_async.SkalaClient(**creds, tracing=provider)
    if baseline is not None:
        clients[BASELINE] = baseline.SkalaClient(**creds)
    try:
        async with aiohttp.ClientSession() as session:
            token = await bare_token(session, server)
            senders = {
                v: {
                    BARE: bare_sender(session, server, token, files),
                    **{name: client_sender(c, files) for name, c in clients.items()},
                }
                for v, files in variants.items()
            }
            warm = max(2 * concurrency, n // 5)
            for v in variants:
                for impl in impls:
                    await run_workers(senders[v][impl], warm, concurrency)
            for r in range(rounds):
                for v in variants:
                    for impl in abba(impls, r):  # two half-rounds each
                        work = run_workers(senders[v][impl], n // 2, concurrency)
                        await timed(results[v][impl], n // 2, work)
    finally:
        for c in clients.values():
            await c.close()
    return results


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="tickets per round and implementation (500)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    parser.add_argument(
        "--baseline", metavar="DIR", help="source tree whose skala_async to compare against"
    )
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    provider = tracer_provider()
    impls = ["skala_async", BARE]
    if provider is not None:
        impls.append(TRACED)
    if baseline is not None:
        impls.append(BASELINE)
    n = args.n or (60 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 15)
    print(f"# CPU benchmark ({machine_line()})\n")
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="skala-bench-") as tmp:
        shot = Path(tmp) / "screenshot.png"
        shot.write_bytes(os.urandom(10_000))
        variants = {"no files": [], "one 10 KB file": [shot]}
        with sandbox_server(processing_delay="none") as server:
            results = asyncio.run(
                measure(server, variants, n, rounds, args.concurrency, impls, baseline, provider)
            )
        if provider is not None:
            provider.shutdown()

    print(
        f"Client CPU per created ticket (this process only; server out of process), "
        f"{args.concurrency} in flight, {n} tickets per round and implementation, "
        f"median of {rounds} interleaved rounds (each as two ABBA halves):\n"
    )
    rows = []
    budgets = Budgets()
    ratios: dict[str, float] = {}
    against_baseline: dict[str, float] = {}
    for v in variants:
        cpu = {i: median(results[v][i]["cpu"]) for i in impls}
        wall = {i: median(results[v][i]["wall"]) for i in impls}
        ratios[v] = cpu["skala_async"] / cpu[BARE]
        if baseline is not None:
            against_baseline[v] = cpu["skala_async"] / cpu[BASELINE]
        for impl in impls:
            rows.append(
                [
                    v,
                    impl,
                    f"{cpu[impl] * 1e6:.0f}",
                    f"{cpu[impl] / cpu[BARE]:.3f}",
                    f"{cpu['skala_async'] / cpu[impl]:.3f}" if impl != "skala_async" else "",
                    f"{1 / wall[impl]:.0f}",
                ]
            )
    print(
        markdown_table(
            [
                "variant",
                "client",
                "µs CPU/ticket",
                "CPU / bare",
                "skala_async CPU / this",
                "tickets/s",
            ],
            rows,
        )
    )
    for v in variants:
        budgets.check(f"CPU per ticket skala/bare, {v}", ratios[v], BUDGET_RATIO)
    for v, ratio in against_baseline.items():
        budgets.check(f"CPU per ticket skala/baseline (tracing off), {v}", ratio, BASELINE_RATIO)
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, results)
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
