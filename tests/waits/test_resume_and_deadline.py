"""For services: resume tokens, ``handle.done()`` and one deadline for a whole job.

Against the sandbox on 127.0.0.1: what the server received when a wait is resumed by
another client or another process, and when ``create_and_wait`` runs out of its budget
in the token request, a ``Retry-After``, a slow create or a slow ticket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import textwrap
import time
import urllib.parse
import uuid

import attrs
import pytest

import skala_async as skala
from skala_async import sync
from skala_async._resume_token import MAX_RESUME_TOKEN, encode_resume_token
from skala_async.testing import Fault, SkalaSandbox, sandbox_client

# Jitter 0: a fixed schedule. Polls at 0.05 s after acceptance, then 20.05 s.
FAR = skala.PollPolicy(first_delay=0.05, min_interval=0.05, max_interval=20, growth=400, jitter=0)
# Would wait 30 s before its first GET: a resumed wait that polls sooner kept its schedule.
SLOW = skala.PollPolicy(first_delay=30, min_interval=30, max_interval=60, jitter=0)


def _fields(token: str) -> dict[str, object]:
    data = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))))


def _gets(sb: SkalaSandbox, ticket_id: uuid.UUID) -> int:
    return sum(1 for r in sb.requests_to("get") if str(ticket_id) in r.path)


# ------------------------------------------------------------------ resume tokens


async def test_token_is_url_safe_versioned_and_holds_no_secret(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Token", "Body")
        token = handle.resume_token()
        access_token = client._auth.cached()
    assert token.startswith("skw1.")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", token)
    assert urllib.parse.quote(token, safe="") == token
    assert len(token) < MAX_RESUME_TOKEN
    assert access_token
    assert access_token not in token
    decoded = json.dumps(_fields(token))
    for secret in (skala_sandbox.client_secret, access_token):
        assert secret not in decoded
        assert secret not in token
    fields = _fields(token)
    assert fields["id"] == str(handle.ticket_id)
    assert fields["st"] == "PENDING"
    assert isinstance(fields["at"], float)
    assert abs(fields["at"] - time.time()) < 600


async def test_resumed_wait_continues_the_schedule_not_the_first_poll(
    skala_sandbox: SkalaSandbox,
) -> None:
    """The next point (20 s after acceptance) is kept: the resumed wait does not poll at
    once, only its last GET before its own deadline."""
    skala_sandbox.processing_delay = None  # pending until completed by the test
    async with sandbox_client(skala_sandbox, poll=FAR) as first:
        handle = await first.create_ticket(skala_sandbox.customer_id, "Resume", "Body")
        with pytest.raises(skala.WaitTimeoutError) as caught:
            await handle.wait_until_created(timeout=0.5)
        # the error carries the wait's resume token (a string: no live object, no secret)
        assert caught.value.resume_token == handle.resume_token()
        token = handle.resume_token()
    assert _fields(token)["next"] == pytest.approx(20.05)
    before = _gets(skala_sandbox, handle.ticket_id)
    # Another client, on a bus of its own, with a fast policy of its own.
    async with sandbox_client(skala_sandbox) as second:
        resumed = second.resume(token)
        assert resumed.ticket_id == handle.ticket_id
        assert resumed.status is skala.TicketStatus.PENDING
        with pytest.raises(skala.WaitTimeoutError):
            await resumed.wait_until_created(timeout=1.0)
        assert _gets(skala_sandbox, handle.ticket_id) - before == 1  # the last GET only
        # Rebuilt from the id instead, the same wait polls at once and on the fast policy.
        rebuilt = second.ticket_handle(handle.ticket_id)
        with pytest.raises(skala.WaitTimeoutError):
            await rebuilt.wait_until_created(timeout=1.0)
        assert _gets(skala_sandbox, handle.ticket_id) - before > 3


async def test_a_scheduled_point_that_passed_is_polled_at_once(
    skala_sandbox: SkalaSandbox,
) -> None:
    skala_sandbox.processing_delay = None
    fast = attrs.evolve(FAR, growth=1.0)  # points 0.05, 0.1, 0.2, 0.4 ...
    async with sandbox_client(skala_sandbox, poll=fast) as first:
        handle = await first.create_ticket(skala_sandbox.customer_id, "Passed", "Body")
        with pytest.raises(skala.WaitTimeoutError):
            await handle.wait_until_created(timeout=0.3)
        token = handle.resume_token()
    next_point = _fields(token)["next"]
    assert isinstance(next_point, float)
    await asyncio.sleep(next_point + 0.2)  # the process was down past the next point
    skala_sandbox.complete(str(handle.ticket_id))
    before = _gets(skala_sandbox, handle.ticket_id)
    # A fresh wait on SLOW would make its first GET 30 s after acceptance.
    async with sandbox_client(skala_sandbox, poll=SLOW) as second:
        resumed = second.resume(token)
        ticket = await asyncio.wait_for(resumed.wait_until_created(timeout=25), 20)
    assert ticket.status is skala.TicketStatus.CREATED
    assert _gets(skala_sandbox, handle.ticket_id) - before == 1
    # Acceptance came from the token: the time to outcome counts from the real 202.
    assert resumed.elapsed is not None
    assert resumed.elapsed >= next_point


async def test_a_final_state_in_the_token_ends_the_wait_without_a_request(
    skala_sandbox: SkalaSandbox,
) -> None:
    async with sandbox_client(skala_sandbox) as first:
        handle = await first.create_ticket(skala_sandbox.customer_id, "Final", "Body")
        done = await handle.wait_until_created(timeout=20)
        token = handle.resume_token()
    count = len(skala_sandbox.requests)
    async with sandbox_client(skala_sandbox) as second:
        resumed = second.resume(token)
        assert resumed.done()
        assert await resumed.wait_until_created(timeout=5) == done
        assert resumed.resume_token() == token  # a resumed handle saves the same token
    assert len(skala_sandbox.requests) == count  # not even a token request


@pytest.mark.parametrize(
    ("status", "issue_key", "kept"),
    [
        ("CREATED", "SUP-" + "9" * 252, True),  # the longest issue key a token keeps
        ("ÉTAT_INCONNU" * 5, "ñ" * 256, True),  # escaped in the JSON: the longest token
        ("CREATED", "SUP-" + "9" * 253, False),
        ("X" * 65, None, False),
        ("CREATED", "SUP-1\x00", False),
    ],
)
async def test_any_state_seen_gives_a_token_that_resumes(
    skala_sandbox: SkalaSandbox, status: str, issue_key: str | None, kept: bool
) -> None:
    """A server's status or issue key no token can hold is left out, never a token that
    resume() would refuse."""
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "State", "Body")
        handle.ticket = skala.Ticket(handle.ticket_id, skala.TicketStatus(status), issue_key)
        token = handle.resume_token()
        assert len(token) <= MAX_RESUME_TOKEN
        resumed = client.resume(token)
    assert resumed.ticket == (handle.ticket if kept else None)


async def test_token_of_a_rebuilt_handle_polls_at_once(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Rebuilt", "Body")
        await skala_sandbox.wait_until_processed(timeout=20)
        rebuilt = client.ticket_handle(handle.ticket_id)
        token = rebuilt.resume_token()
        assert _fields(token) == {
            "id": str(handle.ticket_id),
            "at": None,
            "st": None,
            "key": None,
            "next": None,
        }
    async with sandbox_client(skala_sandbox, poll=SLOW) as second:
        resumed = second.resume(token)
        assert not resumed.done()
        ticket = await asyncio.wait_for(resumed.wait_until_created(timeout=25), 20)
    assert ticket.issue_key


async def test_resume_in_another_process(skala_sandbox: SkalaSandbox) -> None:
    """The token crosses a process boundary; the wait there keeps the schedule."""
    skala_sandbox.processing_delay = None
    async with sandbox_client(skala_sandbox, poll=FAR) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Process", "Body")
        with pytest.raises(skala.WaitTimeoutError):
            await handle.wait_until_created(timeout=0.5)
        token = handle.resume_token()
    before = _gets(skala_sandbox, handle.ticket_id)
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        import skala_async as skala
        from skala_async.testing import FAST_POLL

        async def main():
            async with skala.SkalaClient(
                os.environ["SKALA_CLIENT_ID"], os.environ["SKALA_CLIENT_SECRET"],
                base_url=os.environ["SKALA_BASE_URL"], poll=FAST_POLL, trust_env=False,
            ) as client:
                handle = client.resume(sys.argv[1])
                try:
                    await handle.wait_until_created(timeout=1.0)
                except skala.WaitTimeoutError as exc:
                    print("timeout", exc.ticket.status, handle.polls)

        asyncio.run(main())
        """
    )
    env = dict(
        os.environ,
        SKALA_CLIENT_ID=skala_sandbox.client_id,
        SKALA_CLIENT_SECRET=skala_sandbox.client_secret,
        SKALA_BASE_URL=skala_sandbox.url,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        token,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["timeout", "PENDING", "1"]
    assert _gets(skala_sandbox, handle.ticket_id) - before == 1


def _token(**overrides: object) -> str:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "at": round(time.time() - 10, 3),
        "st": "PENDING",
        "key": None,
        "next": 12.5,
    }
    fields.update(overrides)
    return encode_resume_token(fields)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


GOOD = _token()
HOSTILE = {
    "empty": "",
    "plain text": "hello",
    "a uuid": str(uuid.uuid4()),
    "a jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "base64 garbage": "skw1." + _b64(os.urandom(64)) + "." + _b64(os.urandom(6)),
    "not base64": "skw1.!!!!.????",
    "padding": GOOD + "==",
    "whitespace": " " + GOOD,
    "truncated": GOOD[:-3],
    "data cut short": GOOD.split(".")[0] + "." + GOOD.split(".")[1][:-4] + "." + GOOD.split(".")[2],
    "one character changed": GOOD[:10] + ("A" if GOOD[10] != "A" else "B") + GOOD[11:],
    "huge": "skw1." + "A" * 100_000 + ".AAAAAAAA",
    "extra part": GOOD + ".AAAA",
    "future acceptance": _token(at=time.time() + 3600),
    "negative acceptance": _token(at=-1.0),
    "negative schedule": _token(next=-5),
    "not finite": _token(next=float("nan")),
    "infinite": _token(at=float("inf")),
    "schedule beyond reason": _token(next=1e12),
    "bool for a number": _token(at=True),
    "string for a number": _token(at="1700000000"),
    "not a uuid": _token(id="ticket-1"),
    "uuid not canonical": _token(id=str(uuid.uuid4()).upper()),
    "int for the id": _token(id=12),
    "empty status": _token(st=""),
    "status not printable": _token(st="PEND\nING"),
    "huge status": _token(st="X" * 65),
    "key without status": _token(st=None, key="SUP-1"),
    "schedule without acceptance": _token(at=None),
    "missing field": encode_resume_token({"id": str(uuid.uuid4())}),
    "extra field": encode_resume_token(
        {"id": str(uuid.uuid4()), "at": None, "st": None, "key": None, "next": None, "x": 1}
    ),
    "a list": encode_resume_token([1, 2]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("token", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_tokens_are_a_clear_value_error(
    skala_sandbox: SkalaSandbox, token: str
) -> None:
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(ValueError, match="resume token") as caught:
            client.resume(token)
    assert len(str(caught.value)) < 200  # the message does not echo a huge token
    assert skala_sandbox.requests == []


@pytest.mark.parametrize("version", ["skw2", "skw0", "skw10"])
async def test_another_version_says_so(skala_sandbox: SkalaSandbox, version: str) -> None:
    token = version + GOOD[len("skw1") :]
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(ValueError, match=rf"version {version[3:]} is not one"):
            client.resume(token)


async def test_a_resume_token_must_be_a_string(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(TypeError, match="str"):
            client.resume(GOOD.encode())  # type: ignore[arg-type]


async def test_small_clock_skew_is_tolerated(skala_sandbox: SkalaSandbox) -> None:
    """A token from a machine whose clock is a minute ahead: accepted 'now', not later."""
    async with sandbox_client(skala_sandbox, poll=SLOW) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Skew", "Body")
        await skala_sandbox.wait_until_processed(timeout=20)
        token = _token(id=str(handle.ticket_id), at=time.time() + 60, next=0.0)
        resumed = client.resume(token)
        ticket = await asyncio.wait_for(resumed.wait_until_created(timeout=25), 20)
    assert ticket.issue_key
    assert resumed.elapsed is not None
    assert resumed.elapsed >= 0


# ------------------------------------------------------------------ done()


async def test_done_never_makes_a_request(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.processing_delay = None
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Done", "Body")
        count = len(skala_sandbox.requests)
        assert handle.done() is False
        skala_sandbox.complete(str(handle.ticket_id))
        assert handle.done() is False  # completed on the server, not known here
        assert len(skala_sandbox.requests) == count
        # Another handle's GET publishes the news: this one knows without asking.
        other = client.ticket_handle(handle.ticket_id)
        await other.refresh()
        assert handle.done() is True
        assert handle.ticket is not None
        assert handle.ticket.issue_key
        assert handle.finished_at is not None
        assert handle.polls == 0
        assert len(skala_sandbox.requests) == count + 1


async def test_done_after_failed(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.outcome = "FAILED"
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Fails", "Body")
        ticket = await handle.wait_until_created(timeout=20, raise_on_failure=False)
    assert ticket.status is skala.TicketStatus.FAILED
    assert handle.done()


async def test_done_with_a_bus_that_keeps_nothing_here(skala_sandbox: SkalaSandbox) -> None:
    """A bus of the caller's without an in-process view: done() tells what the handle saw."""

    class Minimal:
        def __init__(self) -> None:
            self._inner = skala.bus.LocalBus()

        def __getattr__(self, name: str) -> object:
            if name == "kept_here":
                raise AttributeError(name)
            return getattr(self._inner, name)

    bus = Minimal()
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, "Minimal", "Body")
    handle._waits.bus = bus  # type: ignore[assignment]
    assert handle.done() is False


# ------------------------------------------------------------------ create_and_wait


async def test_create_and_wait_returns_the_created_ticket(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        ticket = await client.create_and_wait(
            skala_sandbox.customer_id,
            "One call",
            "Body",
            [skala.Attachment.from_bytes(b"%PDF-1.4", filename="a.pdf")],
            timeout=20,
        )
    assert ticket.status is skala.TicketStatus.CREATED
    assert ticket.issue_key
    (create,) = skala_sandbox.requests_to("create")
    assert [f.filename for f in create.files] == ["a.pdf"]


async def test_create_and_wait_failed(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.outcome = "FAILED"
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.TicketFailedError):
            await client.create_and_wait(skala_sandbox.customer_id, "F", "B", timeout=20)
        ticket = await client.create_and_wait(
            skala_sandbox.customer_id, "F", "B", timeout=20, raise_on_failure=False
        )
    assert ticket.status is skala.TicketStatus.FAILED


# Each fault spends 0.6 s of a 1.0 s budget before the 202; the ticket then takes 0.8 s.
# With a budget for the create and another for the wait the ticket would be CREATED (at
# about 1.4 s); with one budget the wait must end first.
SPENDERS = {
    "slow token endpoint": ("token", Fault.delay(0.6)),
    "429 with Retry-After": ("create", Fault.http(429, retry_after=0.6)),
    "slow create": ("create", Fault.delay(0.6)),
}


@pytest.mark.parametrize(("endpoint", "fault"), list(SPENDERS.values()), ids=list(SPENDERS))
async def test_the_create_spends_from_the_same_budget(
    skala_sandbox: SkalaSandbox, endpoint: str, fault: Fault
) -> None:
    skala_sandbox.processing_delay = 0.8
    skala_sandbox.inject(endpoint, fault)  # type: ignore[arg-type]
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.WaitTimeoutError) as caught:
            await client.create_and_wait(skala_sandbox.customer_id, "Budget", "Body", timeout=1.0)
        exc = caught.value
        assert exc.timeout == 1.0
        assert exc.ticket is not None
        assert exc.ticket.status is skala.TicketStatus.PENDING
        assert isinstance(exc.resume_token, str)
        (ticket_id,) = skala_sandbox.tickets
        resumed = client.resume(exc.resume_token)
        assert str(resumed.ticket_id) == ticket_id
        # The wait goes on from its token, with a budget of its own now.
        ticket = await resumed.wait_until_created(timeout=20)
    assert ticket.issue_key
    statuses = [r.status for r in skala_sandbox.requests_to("create")]
    assert statuses == ([429, 202] if endpoint == "create" and fault.status else [202])


async def test_budget_gone_before_the_create_is_sent(skala_sandbox: SkalaSandbox) -> None:
    """A token endpoint slower than the budget: no create is sent, no ticket exists."""
    skala_sandbox.inject("token", Fault.delay(1.5))
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.RequestTimeoutError) as caught:
            await client.create_and_wait(skala_sandbox.customer_id, "Token", "Body", timeout=0.3)
    assert caught.value.request_sent is False
    assert skala_sandbox.requests_to("create") == []
    assert skala_sandbox.tickets == {}


async def test_retry_after_beyond_the_budget_is_the_refusal(skala_sandbox: SkalaSandbox) -> None:
    skala_sandbox.inject("create", Fault.http(429, retry_after=5))
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.RateLimitedError):
            await client.create_and_wait(skala_sandbox.customer_id, "429", "Body", timeout=1.0)
    assert [r.status for r in skala_sandbox.requests_to("create")] == [429]
    assert skala_sandbox.tickets == {}


async def test_budget_gone_while_the_create_is_in_flight(skala_sandbox: SkalaSandbox) -> None:
    """Sent, then no answer within the budget: it may exist, so it is outcome-unknown."""
    skala_sandbox.inject("create", Fault.delay(1.0))
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.CreateOutcomeUnknownError):
            await client.create_and_wait(skala_sandbox.customer_id, "Sent", "Body", timeout=0.4)
        await asyncio.sleep(1.0)  # the server goes on and creates it
    assert len(skala_sandbox.tickets) == 1
    assert len(skala_sandbox.requests_to("create")) == 1  # never re-sent


async def test_slow_processing_asks_once_more_before_the_deadline(
    skala_sandbox: SkalaSandbox,
) -> None:
    skala_sandbox.processing_delay = None
    async with sandbox_client(skala_sandbox, poll=SLOW) as client:
        with pytest.raises(skala.WaitTimeoutError) as caught:
            await client.create_and_wait(skala_sandbox.customer_id, "Slow", "Body", timeout=0.5)
    token = caught.value.resume_token
    assert token is not None
    ticket_id = caught.value.ticket_id
    assert _gets(skala_sandbox, ticket_id) == 1  # SLOW never polls this soon
    assert "after 0.5 s" in str(caught.value)
    async with sandbox_client(skala_sandbox, poll=SLOW) as other:
        assert not other.resume(token).done()


async def test_create_and_wait_bad_input_sends_nothing(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(skala.ValidationError):
            await client.create_and_wait("not-a-uuid", "", "Body", timeout=5)
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError, match="timeout"):
                await client.create_and_wait(skala_sandbox.customer_id, "S", "B", timeout=bad)
    assert skala_sandbox.requests == []


async def test_create_and_wait_without_a_deadline(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        ticket = await asyncio.wait_for(
            client.create_and_wait(skala_sandbox.customer_id, "No limit", "Body", timeout=None),
            20,
        )
    assert ticket.issue_key


async def test_create_and_wait_on_a_traced_client(skala_sandbox: SkalaSandbox) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    skala_sandbox.inject("token", Fault.delay(1.0))
    async with sandbox_client(skala_sandbox, tracing=provider) as client:
        with pytest.raises(skala.RequestTimeoutError):
            await client.create_and_wait(skala_sandbox.customer_id, "Traced", "B", timeout=0.3)
        ticket = await client.create_and_wait(skala_sandbox.customer_id, "Traced", "B", timeout=20)
    assert ticket.issue_key
    assert len(skala_sandbox.requests_to("create")) == 1
    provider.shutdown()


# ------------------------------------------------------------------ the sync twins


def test_sync_twins() -> None:
    with (
        sync.Sandbox(processing_delay=None) as sb,
        sync.SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url, poll=SLOW) as client,
    ):
        with pytest.raises(skala.WaitTimeoutError) as caught:
            client.create_and_wait(sb.customer_id, "Sync", "Body", timeout=0.5)
        token = caught.value.resume_token
        assert token is not None
        handle = client.resume(token)
        assert isinstance(handle, sync.SyncTicketHandle)
        assert handle.done() is False
        sb.complete(str(handle.ticket_id))
        resumed = client.resume(token)
        assert resumed.refresh().issue_key
        assert resumed.done() is True
        assert client.resume(resumed.resume_token()).done() is True
        sb.processing_delay = 0.05
        ticket = client.create_and_wait(
            sb.customer_id, "Sync", "Body", timeout=20, poll=skala.PollPolicy(first_delay=0.05)
        )
        assert ticket.issue_key


def _with_sum(payload: bytes) -> str:
    from skala_async._resume_token import _check_sum

    return f"skw1.{_b64(payload)}.{_b64(_check_sum(payload))}"


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe", b"{", b'{"id": NaN}', b"null"], ids=["binary", "cut", "nan", "null"]
)
async def test_well_summed_garbage_is_refused(skala_sandbox: SkalaSandbox, payload: bytes) -> None:
    async with sandbox_client(skala_sandbox) as client:
        with pytest.raises(ValueError, match="resume token"):
            client.resume(_with_sum(payload))


def test_done_between_notebook_cells() -> None:
    """done() with no loop running (between cells): it still reads what the client heard."""
    sandbox = SkalaSandbox()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(sandbox.start())
        client = sandbox_client(sandbox)
        handle = loop.run_until_complete(client.create_ticket(sandbox.customer_id, "S", "B"))
        loop.run_until_complete(sandbox.wait_until_processed(timeout=20))
        assert handle.done() is False
        loop.run_until_complete(client.ticket_handle(handle.ticket_id).refresh())
        assert handle.done() is True
        assert handle.ticket is not None
        assert handle.ticket.issue_key
        assert handle.finished_at is None  # no loop clock to read it from
        loop.run_until_complete(client.close())
        loop.run_until_complete(sandbox.close())
    finally:
        loop.close()


async def test_a_create_that_used_the_whole_budget(
    skala_sandbox: SkalaSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 202 came just as the budget ended: WaitTimeoutError at once, no GET."""
    async with sandbox_client(skala_sandbox) as client:
        submit = client._submit

        async def slow_submit(*args: object) -> skala.TicketHandle:
            handle = await submit(*args)  # type: ignore[arg-type]
            await asyncio.sleep(0.4)  # the rest of the budget goes before the wait
            return handle

        monkeypatch.setattr(client, "_submit", slow_submit)
        with pytest.raises(skala.WaitTimeoutError) as caught:
            await client.create_and_wait(skala_sandbox.customer_id, "Edge", "Body", timeout=0.3)
    assert caught.value.resume_token is not None
    assert caught.value.ticket is not None
    assert caught.value.ticket.status is skala.TicketStatus.PENDING
    assert skala_sandbox.requests_to("get") == []
