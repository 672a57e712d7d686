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

    def lags(self, where: str = "any") -> list[float]:
        """Seconds from each ticket's webhook reaching a process to its wait ending:
        ``where`` the webhook landed: ``any``, ``same`` (the waiting process), ``other``."""
        arrived = {e["ticket_id"]: (e["at"], e["by"]) for e in self.events}
        lags = []
        for r in self.results:
            if r["ticket_id"] not in arrived:
                continue
            at, by = arrived[r["ticket_id"]]
            if where == "any" or (where == "same") == (by == r["name"]):
                lags.append(r["ended_at"] - at)
        return sorted(lags)

    @property
    def duplicate_events(self) -> int:
        """``on_event`` calls beyond the first for a (ticket, status)."""
        return len(self.events) - len({(e["ticket_id"], e["status"]) for e in self.events})

    @property
    def ended(self) -> int:
        """Waits that ended with a final status (not by their deadline)."""
        return sum(r["status"] in ("CREATED", "FAILED") for r in self.results)


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
    pace: float = 0.0,
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
                    "pace": pace,
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
                        limit=64 * 1024 * 1024,  # the report is one line of JSON
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
                assert await asyncio.wait_for(p.wait(), 60) == 0
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
