"""Attachments from disk go out with ``sendfile()`` when nothing needs to see the bytes.

Every test runs the client against the sandbox on 127.0.0.1 and checks what the server
received; a spy on ``loop.sendfile`` tells which path carried the file content.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

import skala_async as skala
from skala_async._transport import _upload
from skala_async.testing import Fault, SkalaSandbox, sandbox_client

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def create(client: skala.SkalaClient, sb: SkalaSandbox, **kw: Any) -> skala.TicketHandle:
    return await client.create_ticket(sb.customer_id, "Upload", "Files attached.", **kw)


async def test_files_over_one_chunk_go_out_with_sendfile_byte_exact(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    sendfile_calls: list[int],
) -> None:
    big = [make_file("a.pdf", size=3 * MIB + 7), make_file("c.mp4", size=_upload.SENDFILE_MIN + 1)]
    small = [make_file("b.png", size=1), make_file("d.png", size=_upload.SENDFILE_MIN)]
    paths = [big[0], small[0], big[1], small[1]]
    # Attachments, not paths: a path up to READ_AHEAD_MAX is read with its measuring.
    await create(skala_client, skala_sandbox, files=[skala.Attachment.from_path(p) for p in paths])
    [req] = skala_sandbox.requests_to("create")
    assert req.status == 202
    assert not req.chunked
    assert req.content_length is not None
    assert req.content_length > sum(p.stat().st_size for p in paths)
    assert [(f.filename, f.size, f.sha256) for f in req.files] == [
        (p.name, p.stat().st_size, sha(p.read_bytes())) for p in paths
    ]
    # One call per file larger than one chunk; smaller ones are read in one piece.
    assert sendfile_calls == [p.stat().st_size for p in big]


async def test_progress_comes_in_slices_and_reaches_the_total(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    sendfile_calls: list[int],
) -> None:
    size = 2 * _upload.SLICE + 123
    path = make_file("big.pdf", size=size)
    seen: list[tuple[int, int]] = []
    await create(
        skala_client, skala_sandbox, files=[path], progress=lambda s, t: seen.append((s, t))
    )
    assert sendfile_calls == [_upload.SLICE, _upload.SLICE, 123]
    assert seen == [(_upload.SLICE, size), (2 * _upload.SLICE, size), (size, size)]
    [req] = skala_sandbox.requests_to("create")
    assert req.files[0].sha256 == sha(path.read_bytes())


async def test_open_file_sent_from_its_position_and_left_open(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    sendfile_calls: list[int],
) -> None:
    data = b"HEADER" + bytes(range(256)) * 4000
    path = make_file("scan.pdf", content=data)
    with path.open("rb") as f:
        f.seek(6)
        att = skala.Attachment.from_file(f)
        await create(skala_client, skala_sandbox, files=[att])
        assert not f.closed
        # The caller's file still reads consistently where it stands.
        at = f.tell()
        assert f.read(100) == data[at : at + 100]
        # Sent again: each attempt starts from the position the attachment was made at.
        await create(skala_client, skala_sandbox, files=[att])
    got = [r.files[0] for r in skala_sandbox.requests_to("create")]
    assert [(g.size, g.sha256) for g in got] == [(len(data) - 6, sha(data[6:]))] * 2
    assert sendfile_calls == [len(data) - 6] * 2


async def test_in_memory_file_objects_are_not_sent_with_sendfile(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, sendfile_calls: list[int]
) -> None:
    buf = io.BytesIO(b"q" * 300_000)
    mem = skala.Attachment.from_bytes(b"m" * 1000, filename="m.png")
    await create(
        skala_client, skala_sandbox, files=[skala.Attachment.from_file(buf, filename="q.pdf"), mem]
    )
    [req] = skala_sandbox.requests_to("create")
    assert [f.sha256 for f in req.files] == [sha(b"q" * 300_000), sha(b"m" * 1000)]
    assert sendfile_calls == []


async def test_a_trace_sees_every_chunk_so_no_sendfile(
    skala_sandbox: SkalaSandbox, make_file: Callable[..., Path], sendfile_calls: list[int]
) -> None:
    chunks: list[int] = []

    async def on_chunk(_: object, __: object, params: aiohttp.TraceRequestChunkSentParams) -> None:
        if params.url.path.startswith("/api/v1/supportTickets"):  # not the token request
            chunks.append(len(params.chunk))

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk)
    path = make_file("t.pdf", size=600_000)
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        sandbox_client(skala_sandbox, session=session) as client,
    ):
        await create(client, skala_sandbox, files=[path])
    [req] = skala_sandbox.requests_to("create")
    assert req.files[0].sha256 == sha(path.read_bytes())
    assert sendfile_calls == []
    assert sum(chunks) == req.content_length  # the trace counted the whole body


async def test_falls_back_to_chunks_where_sendfile_is_unavailable(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unavailable(*args: object, **kwargs: object) -> int:
        raise asyncio.SendfileNotAvailableError("not here")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "sendfile", unavailable)
    path = make_file("f.pdf", size=700_000)
    seen: list[tuple[int, int]] = []
    await create(
        skala_client, skala_sandbox, files=[path], progress=lambda s, t: seen.append((s, t))
    )
    [req] = skala_sandbox.requests_to("create")
    assert (req.files[0].size, req.files[0].sha256) == (700_000, sha(path.read_bytes()))
    assert not req.chunked
    assert seen[-1] == (700_000, 700_000)


async def test_a_resent_create_reopens_the_file(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    sendfile_calls: list[int],
) -> None:
    path = make_file("again.pdf", size=MIB)
    skala_sandbox.inject("create", Fault.http(503, retry_after=0.01))
    await create(skala_client, skala_sandbox, files=[path])
    reqs = skala_sandbox.requests_to("create")
    assert [r.status for r in reqs] == [503, 202]
    assert reqs[1].files[0].sha256 == sha(path.read_bytes())


@pytest.mark.parametrize("change", ["shrinks", "deleted"])
@pytest.mark.parametrize("trace", [False, True], ids=["sendfile", "chunks"])
async def test_a_file_changed_before_sending_fails_the_same_way_on_both_paths(
    skala_sandbox: SkalaSandbox, make_file: Callable[..., Path], trace: bool, change: str
) -> None:
    path = make_file("changed.pdf", size=MIB)
    draft = skala.TicketDraft(skala_sandbox.customer_id, "Upload", "Files.", files=[path])
    if change == "shrinks":
        path.write_bytes(b"x" * 1000)  # validated at 1 MiB, now 1000 bytes
    else:
        path.unlink()
    configs = [aiohttp.TraceConfig()] if trace else []
    if trace:
        configs[0].on_request_chunk_sent.append(_noop)
    async with (
        aiohttp.ClientSession(trace_configs=configs) as session,
        sandbox_client(skala_sandbox, session=session) as client,
    ):
        with pytest.raises(skala.SkalaError) as info:
            await client.submit(draft)
    assert not isinstance(info.value, aiohttp.ClientError)
    assert skala_sandbox.tickets == {}  # no ticket from half a body


async def _noop(*_: object) -> None:
    return None


def test_can_sendfile_refuses_writers_that_are_not_aiohttps() -> None:
    class Other:
        async def write(self, chunk: bytes) -> None: ...

    assert not _upload._Coalescing(Other()).can_sendfile()  # type: ignore[arg-type]
    fake = SimpleNamespace()
    assert not _upload._Coalescing(fake).can_sendfile()  # type: ignore[arg-type]
