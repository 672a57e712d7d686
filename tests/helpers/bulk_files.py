"""Input files for the ``skala-tickets bulk`` tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from skala_async.testing import SkalaSandbox


def write_csv(path: Path, sb: SkalaSandbox, n: int) -> Path:
    """A CSV of ``n`` valid rows for ``sb``'s customer, references ``r0``, ``r1``..."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "summary", "description", "reference"])
        for i in range(n):
            w.writerow([sb.customer_id, f"Ticket {i}", f"Body {i}", f"r{i}"])
    return path


def jsonl_line(sb: SkalaSandbox, i: int) -> str:
    """One valid JSON Lines input for ``sb``'s customer."""
    return json.dumps({"customerId": sb.customer_id, "summary": f"S{i}", "description": "D"})


HEADER = ["customer_id", "summary", "description", "attachments", "reference"]


def write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    """A CSV of ``rows`` (the header included) written with ``delimiter``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """A results or uncertain file's rows, by column."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
