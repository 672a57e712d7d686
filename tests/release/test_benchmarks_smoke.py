"""Smoke test of the benchmark scripts: each runs with ``--quick --no-check`` in a
subprocess, exits 0 and prints its Markdown tables. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.redis_server import require_binary

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "header"),
    [
        ("bench_upload.py", "| files"),
        ("bench_cpu.py", "| variant"),
        ("bench_import.py", "| import"),
        ("bench_bulk.py", "| implementation"),
        ("bench_wait.py", "| waiting"),
        ("bench_replicas.py", "| mode"),
    ],
)
def test_benchmark_quick_mode(script: str, header: str) -> None:
    if script == "bench_replicas.py":
        require_binary()  # its own redis-server
    result = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, str(BENCHMARKS / script), "--quick", "--no-check"],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard: a quick run takes well under a minute on an idle machine
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(header) for line in lines), result.stdout
    assert any(line.startswith("| budget") for line in lines), result.stdout
    assert any(line.startswith("|--") for line in lines), result.stdout
