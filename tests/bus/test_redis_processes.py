"""Several real processes sharing one Redis: 4 replicas, each with its own client and
webhook receiver, the sandbox delivering every webhook to one of them at random, and
waits spread over all four. Then the same with Redis killed and restarted, paused
(SIGSTOP) for longer than a poll interval, and its subscribers cut off (lost publishes).

Each run checks: every wait ends with the sandbox's outcome, every input was created once,
``on_event`` ran exactly once per ticket across the processes.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import uuid

import pytest

from skala_async.testing import SkalaSandbox
from tests.helpers.redis_server import RedisServer
from tests.helpers.replicas import RunReport, run_replicas

#: One redis-server per test process: with pytest -n 2 --dist loadgroup, on one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("redis")]

TICKETS_EACH = 25


def outcome(ticket_id: str, fields: dict[str, str]) -> str:
    # Decided by the ticket itself, so that every process can be checked against it.
    return "FAILED" if uuid.UUID(ticket_id).int % 5 == 0 else "CREATED"


def check(report: RunReport, sb: SkalaSandbox, processes: int = 4) -> None:
    expected = processes * TICKETS_EACH
    # No duplicate create: one ticket per input, each input sent once.
    assert sb.count("create") == expected
    summaries = collections.Counter(r.fields["summary"] for r in sb.requests_to("create"))
    assert len(summaries) == expected
    assert set(summaries.values()) == {1}
    # Waits spread over every process, each ending with the ticket's real outcome.
    assert set(report.per_process.values()) == {TICKETS_EACH}
    assert len(report.results) == expected
    for r in report.results:
        real = sb.tickets[r["ticket_id"]]
        assert r["status"] == real.status, r
        assert r["issue_key"] == real.issue_key, r
    # on_event exactly once per ticket, across all the processes.
    delivered = collections.Counter((e["ticket_id"], e["status"]) for e in report.events)
    assert len(delivered) == expected
    assert set(delivered.values()) == {1}
    # The webhooks really were spread: more than one process received some.
    assert len({e["by"] for e in report.events}) > 1


@pytest.fixture
def sandbox_for_replicas() -> SkalaSandbox:
    return SkalaSandbox(processing_delay=(0.3, 4.5), outcome=outcome, recording=True)


async def test_four_processes_share_news_without_a_single_get(
    redis_server: RedisServer, sandbox_for_replicas: SkalaSandbox
) -> None:
    async with sandbox_for_replicas as sb:
        report = await run_replicas(
            sb,
            tickets_each=TICKETS_EACH,
            redis_url=redis_server.url,
            prefix=f"mp{uuid.uuid4().hex[:8]}:",
            # Slow fallback far beyond the processing time: any GET is a wait the bus missed.
            webhook_poll={"first_delay": 20, "min_interval": 20, "max_interval": 20},
            wait_timeout=40,
        )
    check(report, sb)
    assert report.requests.get("get", 0) == 0
    assert sb.count("get") == 0


async def test_four_processes_through_redis_killed_paused_and_cut_off(
    own_redis: RedisServer, sandbox_for_replicas: SkalaSandbox
) -> None:
    async def faults() -> None:
        await asyncio.sleep(0.6)
        own_redis.kill()  # mid-run: news, claims and kept states in memory are gone
        await asyncio.sleep(1.0)
        own_redis.start()
        await asyncio.sleep(0.6)
        own_redis.stop()  # SIGSTOP, longer than a poll interval (0.5 s)
        await asyncio.sleep(1.2)
        own_redis.resume()
        await asyncio.sleep(0.4)
        # Cut every subscriber off: what is published until they resubscribe is lost to them.
        with socket.create_connection(("127.0.0.1", own_redis.port), timeout=5) as s:
            s.sendall(b"CLIENT KILL TYPE pubsub\r\n")
            s.recv(64)

    async with sandbox_for_replicas as sb:
        report = await run_replicas(
            sb,
            tickets_each=TICKETS_EACH,
            redis_url=own_redis.url,
            poll={"first_delay": 0.5, "min_interval": 0.5, "max_interval": 1.0},
            webhook_poll={"first_delay": 3, "min_interval": 2, "max_interval": 3},
            wait_timeout=40,
            during=faults,
        )
    check(report, sb)
