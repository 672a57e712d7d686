"""Shared helpers for the benchmark scripts: the out-of-process server, a bare aiohttp
baseline, medians, Markdown tables and budget checks.

Only the standard library and aiohttp are imported here, so the baseline code never
depends on ``skala_async``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "_server.py"

CLIENT_ID = "bench"
CLIENT_SECRET = "bench-secret"
CUSTOMER_ID = "6f1c1c3e-1f7a-4b1e-9f3a-0d6c2b7a9e10"
TOKEN_PATH = "/oauth2/token/"
CREATE_PATH = "/api/v1/supportTickets/"

KIB = 1024
MIB = 1024 * 1024


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None = None
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    customer_id: str = CUSTOMER_ID


@contextlib.contextmanager
def sandbox_server(processing_delay: str = "0.05", start_timeout: float = 30.0) -> Iterator[Server]:
    """Start ``_server.py`` in a subprocess, yield its URL, and stop it afterwards."""
    cmd = [
        sys.executable,
        "-u",
        str(SERVER_SCRIPT),
        "--port",
        "0",
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--customer-id",
        CUSTOMER_ID,
        "--processing-delay",
        processing_delay,
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
        try:
            assert proc.stdout is not None
            line = _read_line(proc, start_timeout)
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match is None:
                stderr.seek(0)
                raise RuntimeError(
                    f"the sandbox server did not print its URL (got {line!r}); stderr:\n"
                    + stderr.read().decode(errors="replace")
                )
            yield Server(match.group(0), proc)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError("the sandbox server did not start in time")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the sandbox server exited (code {proc.wait()})")
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0].decode()


# --------------------------------------------------------------------------- bare aiohttp


async def bare_token(session: aiohttp.ClientSession, server: Server) -> str:
    """A bearer token from the token endpoint, the way any aiohttp user would get one."""
    async with session.post(
        server.url + TOKEN_PATH,
        data={"grant_type": "client_credentials"},
        auth=aiohttp.BasicAuth(server.client_id, server.client_secret),
    ) as resp:
        resp.raise_for_status()
        return str((await resp.json())["accessToken"])


# --------------------------------------------------------------------------- memory


def proc_status_kib(field_name: str) -> int:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, ``clear_refs`` value 5); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- measuring


def abba(impls: Sequence[str], round_number: int) -> list[str]:
    """The order of one interleaved round: A B B A, starting with B on odd rounds."""
    order = list(impls if round_number % 2 == 0 else impls[::-1])
    return order + order[::-1]


async def timed(bucket: dict[str, list[float]], count: int, work: Awaitable[object]) -> None:
    """Await ``work`` (``count`` items); append CPU and wall seconds per item to ``bucket``."""
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await work
    bucket["cpu"].append((time.process_time() - cpu0) / count)
    bucket["wall"].append((time.perf_counter() - wall0) / count)


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


@dataclass
class Budgets:
    """Budget checks collected while a benchmark runs; printed as a table at the end."""

    rows: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def check(self, name: str, value: float, limit: float, fmt: str = "{:.3f}") -> bool:
        ok = value <= limit
        self.rows.append((name, fmt.format(value), "≤ " + fmt.format(limit), ok))
        return ok

    @property
    def failed(self) -> list[str]:
        return [name for name, _, _, ok in self.rows if not ok]

    def report(self, *, check: bool) -> int:
        """Print the budget table; the exit status (1 if a budget is missed and checked)."""
        table = markdown_table(
            ["budget", "measured", "limit", "result"],
            [(n, v, lim, "ok" if ok else "**MISSED**") for n, v, lim, ok in self.rows],
        )
        print()
        print(table)
        failed = self.failed
        if not failed:
            print("\nall budgets met")
            return 0
        print(f"\nbudget missed: {', '.join(failed)}")
        if not check:
            print("(--no-check: reporting only, exit status 0)")
            return 0
        return 1


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: a few seconds, figures not meaningful"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="report only; exit 0 even if a budget is missed"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures as JSON")
    return parser


def write_json(path: str | None, data: object) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))


def machine_line() -> str:
    import platform

    return (
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
