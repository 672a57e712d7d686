"""Serve a Skala sandbox out of process for the benchmarks (127.0.0.1 only).

    python benchmarks/_server.py [--port 0] [--processing-delay 0.05|none]
        [--client-id ID] [--client-secret SECRET] [--customer-id UUID]

The first line on stdout holds the base URL (``Skala sandbox listening on http://...``,
printed by :func:`skala_async.testing.run_sandbox`). Request recording is off. The server
exits by itself when its parent process goes away, so a crashed benchmark leaves nothing
running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from skala_async.testing import run_sandbox


def _delay(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


async def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os._exit(0)


async def _main(args: argparse.Namespace) -> None:
    watchdog = asyncio.ensure_future(_watch_parent(os.getppid()))
    try:
        await run_sandbox(
            "127.0.0.1",
            args.port,
            client_id=args.client_id,
            client_secret=args.client_secret,
            customer_id=args.customer_id,
            processing_delay=args.processing_delay,
            recording=False,
        )
    finally:
        watchdog.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default="bench")
    parser.add_argument("--client-secret", default="bench-secret")
    parser.add_argument("--customer-id", default="6f1c1c3e-1f7a-4b1e-9f3a-0d6c2b7a9e10")
    parser.add_argument("--processing-delay", type=_delay, default=0.05)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
