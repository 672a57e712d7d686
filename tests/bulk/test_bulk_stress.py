"""Stress: two and three ``skala-tickets bulk`` processes on one journal, with 429s
(``Retry-After``), slow answers, SIGKILLs and a rerun, over randomised trials.

Every trial checks the sandbox's record: no input has two tickets, and the rerun accounts
for every input (created with the ticket the sandbox holds, or uncertain because a killed
run was sending it). Some trials take the journal's lock away (``--no-lock``), so runs
really race and only the conditional claims keep them apart; with the lock, a run started
while another holds the journal is refused at once (exit 6).

The seed is random per run and printed with any failure; ``BULK_STRESS_SEED=N`` replays it.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import os
import random
import signal
from pathlib import Path

import pytest
from test_bulk_journal import EXIT_IN_USE, finish, start, until, write_csv

from skala_async.testing import Fault, SkalaSandbox

pytestmark = pytest.mark.slow

TRIALS = 10
#: Exit codes a run of a trial may end with: all created, some uncertain (a killed run was
#: sending them, or a racing run was), refused (the journal was in use), killed.
ENDINGS = {0, 4, EXIT_IN_USE, -signal.SIGKILL}


async def _trial(rng: random.Random, folder: Path, label: str) -> None:
    folder.mkdir()
    n = rng.randint(10, 24)
    runs = rng.choice([2, 3])
    helper = ("--no-lock",) if rng.random() < 0.4 else ()
    async with SkalaSandbox(processing_delay=0.01) as sb:
        src = write_csv(folder / "in.csv", sb, n)
        faults = [Fault.http(429, retry_after=rng.choice([0.1, 0.2, 0.3]))] * rng.randint(1, 3)
        faults += [Fault.delay(rng.uniform(0.01, 0.06)) for _ in range(rng.randint(0, n))]
        rng.shuffle(faults)
        for fault in faults:
            sb.inject("create", fault)
        procs = []
        for i in range(runs):
            concurrency = str(rng.randint(1, 8))
            out = str(folder / f"run{i}.csv")
            procs.append(
                await start(
                    sb, str(src), "--concurrency", concurrency, "--results", out, helper=helper
                )
            )
            await asyncio.sleep(rng.uniform(0, 0.3))
        if rng.random() < 0.7:  # SIGKILL one of them part-way
            victim = procs[rng.randrange(runs)]
            target = rng.randint(1, n)
            await until(lambda: sb.count("create") >= target or victim.returncode is not None)
            if victim.returncode is None:
                victim.send_signal(signal.SIGKILL)
        for proc in procs:
            code, _, err = await finish(proc)
            assert code in ENDINGS, (label, code, err)
        await asyncio.sleep(0.1)  # creates a killed run left in flight end server-side
        code, out, err = await finish(
            await start(sb, str(src), "--results", str(folder / "final.csv"), helper=helper)
        )
        assert code in (0, 4), (label, code, out, err)

        per_summary = collections.Counter(t.summary for t in sb.tickets.values())
        assert max(per_summary.values()) == 1, (label, per_summary.most_common(3))
        with (folder / "final.csv").open(newline="", encoding="utf-8") as f:
            rows = {r["reference"]: r for r in csv.DictReader(f)}
        assert sorted(rows) == sorted(f"r{i}" for i in range(n)), label
        for ref, row in rows.items():
            summary = f"Ticket {ref[1:]}"
            if row["outcome"] == "created":
                assert sb.tickets[row["ticket_id"]].summary == summary, (label, row)
            else:  # a killed (or racing) run was sending it: never resent silently
                assert row["outcome"] == "uncertain", (label, row)
        created = sum(1 for r in rows.values() if r["outcome"] == "created")
        assert created <= len(sb.tickets) <= n, label


async def test_runs_on_one_journal_never_send_an_input_twice(tmp_path: Path) -> None:
    seed = int(os.environ.get("BULK_STRESS_SEED") or random.randrange(2**32))
    # Two trials at a time (each with its own sandbox): one waits while the other works.
    for first in range(0, TRIALS, 2):
        await asyncio.gather(
            *(
                _trial(
                    random.Random(f"{seed}-{trial}"),
                    tmp_path / f"trial{trial}",
                    f"BULK_STRESS_SEED={seed} trial {trial}",
                )
                for trial in range(first, min(first + 2, TRIALS))
            )
        )


def test_docs_state_the_number_of_trials() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
    assert f"**stress**: {TRIALS} randomised trials per run" in page.read_text(encoding="utf-8")
