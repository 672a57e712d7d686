"""A bulk job run as its own process by the SIGKILL test (not a test module).

Usage: python -m tests.helpers.bulk_job BASE_URL CLIENT_ID CUSTOMER_ID COUNT JOURNAL RESULTS
The client secret comes from the environment (SKALA_CLIENT_SECRET), never the command line.
Writes one JSON line per input to RESULTS as each input finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import skala_async as skala


async def main(
    base_url: str, client_id: str, customer: str, count: int, journal: str, out: str
) -> None:
    drafts = (
        skala.TicketDraft(customer, f"bulk ticket {i}", f"input number {i}", reference=f"ref-{i}")
        for i in range(count)
    )
    async with skala.SkalaClient(
        client_id, os.environ["SKALA_CLIENT_SECRET"], base_url=base_url
    ) as client:
        with open(out, "a", encoding="utf-8") as f:
            async for r in client.submit_many(drafts, concurrency=8, journal=journal):
                f.write(json.dumps(r.as_row()) + "\n")
                f.flush()


if __name__ == "__main__":
    url, cid, customer, n, journal, out = sys.argv[1:7]
    asyncio.run(main(url, cid, customer, int(n), journal, out))
