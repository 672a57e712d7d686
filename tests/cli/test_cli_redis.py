"""``skala-tickets webhooks listen --redis URL``: events published on the bus, printed once
across every listener sharing it."""

from __future__ import annotations

import json
import queue
import sys
import uuid

import pytest
import redis

from skala_async.cli import EXIT_OK, EXIT_USAGE, main
from tests.helpers.cli import post_event, serve, signed_event
from tests.helpers.redis_server import RedisServer

SECRET = "cli-redis-webhook-secret-0042"


def test_listen_publishes_each_event_on_the_redis_bus(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}:"
    tid = str(uuid.uuid4())
    done_elsewhere = str(uuid.uuid4())
    answers: list[int] = []
    raw = redis.Redis.from_url(redis_server.url)
    # Another listener sharing the bus already ran the callback for this one.
    raw.set(f"{prefix}d:{done_elsewhere}:CREATED", b"done", ex=60)
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", SECRET)

    def drive(first: str, lines: queue.Queue[str]) -> None:
        info = json.loads(first)
        assert info["redis"] == redis_server.url
        answers.append(post_event(info["url"], signed_event(tid, "CREATED", "SUP-9"), SECRET))
        answers.append(
            post_event(info["url"], signed_event(done_elsewhere, "CREATED", "SUP-8"), SECRET)
        )
        assert json.loads(lines.get(timeout=5))["ticket_id"] == tid

    argv = ["webhooks", "listen", "--port", "0", "--json", "--redis", redis_server.url]
    code, lines = serve([*argv, "--redis-prefix", prefix], monkeypatch, drive)
    assert code == EXIT_OK
    assert answers == [200, 200]
    assert len(lines) == 2  # the banner and one event: the other was printed elsewhere
    kept = json.loads(raw.get(f"{prefix}t:{tid}") or b"{}")
    assert kept == {"s": "CREATED", "k": "SUP-9", "w": 1}
    assert raw.get(f"{prefix}d:{tid}:CREATED") == b"done"
    raw.close()
    assert SECRET not in capsys.readouterr().err


def test_listen_redis_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKALA_WEBHOOK_SECRET", SECRET)
    argv = ["webhooks", "listen", "--port", "0", "--redis", "http://not-redis/"]
    assert main(argv) == EXIT_USAGE
    assert "--redis: not a usable Redis URL" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "skala_async.redis", None)  # the extra not installed
    monkeypatch.setenv("SKALA_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["webhooks", "listen", "--port", "0"]) == EXIT_USAGE
    assert "pip install 'skala-async[redis]'" in capsys.readouterr().err
