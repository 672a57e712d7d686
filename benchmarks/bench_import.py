"""Import-time benchmark: ``import skala_async`` vs ``import aiohttp``, each in a fresh
interpreter, interleaved with ``python -c pass``.

    .venv/bin/python benchmarks/bench_import.py [--quick] [--no-check] [--rounds 25]

The net import time of a module is the wall time of ``python -c "import X"`` minus that of
``python -c pass`` in the same round (median over rounds). Budget: net(skala_async) /
net(aiohttp) <= 1.2. ``python -X importtime`` runs are reported beside it (cumulative
microseconds of the top-level import, median), with the slowest modules skala_async pulls
in on top of aiohttp, to show where the difference goes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import defaultdict

from _common import Budgets, base_parser, machine_line, markdown_table, median, write_json

BUDGET_RATIO = 1.2
CASES = {"baseline": "pass", "aiohttp": "import aiohttp", "skala_async": "import skala_async"}
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)\s*$")


def run(code: str, *flags: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed:\n{out.stderr}")
    return elapsed, out.stderr


def parse_importtime(stderr: str) -> tuple[dict[str, int], dict[str, int]]:
    """({top-level module: cumulative µs}, {module: self µs}) from ``-X importtime``."""
    top: dict[str, int] = {}
    self_us: dict[str, int] = {}
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m is None:
            continue
        own, cumulative, indent, name = int(m[1]), int(m[2]), m[3], m[4]
        self_us[name] = own
        if len(indent) <= 1:
            top[name] = cumulative
    return top, self_us


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 25; quick 3)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 25)
    print(f"# Import benchmark ({machine_line()})\n")
    started = time.perf_counter()

    names = list(CASES)
    for name in names:  # warm-up: .pyc files written, page cache filled
        run(CASES[name])
    wall: dict[str, list[float]] = defaultdict(list)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            wall[name].append(run(CASES[name])[0])
    net = {
        name: [wall[name][i] - wall["baseline"][i] for i in range(rounds)]
        for name in ("aiohttp", "skala_async")
    }

    it_rounds = max(3, rounds // 3)
    cumulative: dict[str, list[int]] = defaultdict(list)
    own: dict[str, dict[str, list[int]]] = {"aiohttp": defaultdict(list), "skala_async": {}}
    own["skala_async"] = defaultdict(list)
    for r in range(it_rounds):
        for name in ("aiohttp", "skala_async")[:: 1 if r % 2 == 0 else -1]:
            top, self_us = parse_importtime(run(CASES[name], "-X", "importtime")[1])
            cumulative[name].append(top[name])
            for mod, us in self_us.items():
                own[name][mod].append(us)

    ratio = median(net["skala_async"]) / median(net["aiohttp"])
    it_ratio = median(cumulative["skala_async"]) / median(cumulative["aiohttp"])
    print(
        f"Net import time (wall of `python -c 'import X'` minus `python -c pass`), median of "
        f"{rounds} interleaved rounds; `-X importtime` cumulative, median of {it_rounds}:\n"
    )
    rows = [
        [
            "`python -c pass`",
            f"{median(wall['baseline']) * 1e3:.1f} (total)",
            "",
            "",
        ],
        [
            "`import aiohttp`",
            f"{median(net['aiohttp']) * 1e3:.1f}",
            f"{median(cumulative['aiohttp']) / 1e3:.1f}",
            "1.00",
        ],
        [
            "`import skala_async`",
            f"{median(net['skala_async']) * 1e3:.1f}",
            f"{median(cumulative['skala_async']) / 1e3:.1f}",
            f"{ratio:.2f} (importtime {it_ratio:.2f})",
        ],
    ]
    print(markdown_table(["import", "net wall ms", "-X importtime ms", "ratio"], rows))

    extra = {
        mod: median(v)
        for mod, v in own["skala_async"].items()
        if mod not in own["aiohttp"] and mod != "skala_async"
    }
    heaviest = sorted(extra.items(), key=lambda kv: -kv[1])[:8]
    print("\nSlowest modules imported by skala_async on top of aiohttp (self time):\n")
    print(
        markdown_table(["module", "self ms"], [[f"`{m}`", f"{us / 1e3:.1f}"] for m, us in heaviest])
    )

    budgets = Budgets()
    budgets.check("import skala_async / import aiohttp", ratio, BUDGET_RATIO, "{:.2f}")
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    write_json(args.json, {"wall": wall, "importtime_cumulative_us": cumulative})
    return budgets.report(check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
