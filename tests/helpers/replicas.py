"""Run N replica processes (``tests.helpers.replica``) against an in-process sandbox that
delivers each webhook to one of them at random; used by the tests and the benchmark."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skala_async.testing import SkalaSandbox

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "whsec-replicas"


@dataclass
class RunReport:
    """What the processes reported, and what the sandbox saw."""

    results: list[dict[str, Any]]  # one per ticket: ticket_id, status, issue_key, polls, ...
    events: list[dict[str, Any]]  # one per on_event call: ticket_id, status, by, at
    requests: dict[str, int]  # requests sent by all the processes, by kind
    per_process: dict[str, int] = field(default_factory=dict)  # tickets waited on by each

    @property
    def gets_per_ticket(self) -> float:
        return self.requests.get("get", 0) / max(1, len(self.results))

    def lags(self) -> list[float]:
        """Seconds from a webhook reaching any process to the wait on it ending."""
        arrived = {e["ticket_id"]: e["at"] for e in self.events}
        return sorted(
            r["ended_at"] - arrived[r["ticket_id"]]
            for r in self.results
            if r["ticket_id"] in arrived and r["polls"] == 0
        )


async def run_replicas(
    sandbox: SkalaSandbox,
    *,
    processes: int = 4,
    tickets_each: int,
    redis_url: str | None,
    prefix: str = "skala:",
    poll: dict[str, float] | None = None,
    webhook_poll: dict[str, float] | None = None,
    wait_timeout: float = 60.0,
    during: Callable[[], Awaitable[None]] | None = None,
    start_timeout: float = 60.0,
) -> RunReport:
    """Start the processes, point the sandbox's webhooks at them, let each create and wait
    for ``tickets_each`` tickets (``during()`` runs meanwhile), and collect the reports."""
    with tempfile.TemporaryDirectory(prefix="skala-replicas-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        env = {**os.environ, "SKALA_CLIENT_SECRET": sandbox.client_secret}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i in range(processes):
                config = {
                    "name": f"p{i}",
                    "base_url": sandbox.url,
                    "client_id": sandbox.client_id,
                    "customer_id": sandbox.customer_id,
                    "secret": SECRET,
                    "redis_url": redis_url,
                    "prefix": prefix,
                    "count": tickets_each,
                    "poll": poll,
                    "webhook_poll": webhook_poll,
                    "wait_timeout": wait_timeout,
                    "events_file": str(events_file),
                }
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.helpers.replica",
                        json.dumps(config),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        cwd=str(ROOT),
                        env=env,
                    )
                )
            urls = [await asyncio.wait_for(_expect(p, "ready"), start_timeout) for p in procs]
            sandbox.webhook_url = urls
            sandbox.webhook_balance = "random"
            sandbox.webhook_secret = SECRET
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            fault = asyncio.ensure_future(during()) if during is not None else None
            reports = await asyncio.wait_for(
                asyncio.gather(*(_expect(p, "done") for p in procs)), wait_timeout + 60
            )
            if fault is not None:
                await fault
            await sandbox.wait_for_webhooks(timeout=30)
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"stop\n")
                await p.stdin.drain()
                p.stdin.close()
            for p in procs:
                assert await asyncio.wait_for(p.wait(), 30) == 0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line]
    results: list[dict[str, Any]] = []
    requests: dict[str, int] = {}
    per_process: dict[str, int] = {}
    for data in map(json.loads, reports):
        results.extend(data["results"])
        per_process[data["name"]] = len(data["results"])
        for kind, n in data["requests"].items():
            requests[kind] = requests.get(kind, 0) + n
    return RunReport(results, events, requests, per_process)


async def _expect(proc: asyncio.subprocess.Process, word: str) -> str:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a replica process ended before saying {word!r}")
        text = line.decode().strip()
        if text.startswith(word + " "):
            return text[len(word) + 1 :]
