"""Small files given by path are read in the worker thread that measures them, and go out
in one piece with the rest of the body; larger ones are read (or sent with ``sendfile()``)
when the request is sent.

Every test runs the client against the sandbox on 127.0.0.1 and checks what the server
received; a spy on the loop's ``run_in_executor`` counts the worker-thread hops of a create.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

import skala_async as skala
from skala_async import models
from skala_async._transport import _upload
from skala_async._wire import Operation, Request
from skala_async.errors import UploadAbortedError
from skala_async.testing import Fault, SkalaSandbox, sandbox_client

MAX = models.READ_AHEAD_MAX


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the running loop handed to a worker thread."""
    seen: list[str] = []
    loop = asyncio.get_event_loop_policy().get_event_loop()
    real = loop.run_in_executor

    def spy(executor: Any, fn: Callable[..., Any], *args: Any) -> Any:
        seen.append(getattr(fn, "__qualname__", type(fn).__name__))
        return real(executor, fn, *args)

    monkeypatch.setattr(loop, "run_in_executor", spy)
    return seen


async def _token(client: skala.SkalaClient, sb: SkalaSandbox) -> None:
    """A first create without files: the token and the connection exist afterwards."""
    await client.create_ticket(sb.customer_id, "warm", "d")


@pytest.mark.parametrize("size", [0, 1, 10_000, MAX])
async def test_a_small_path_costs_one_thread_hop_and_arrives_byte_exact(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    hops: list[str],
    sendfile_calls: list[int],
    size: int,
) -> None:
    path = make_file("shot.png", size=size)
    await _token(skala_client, skala_sandbox)
    hops.clear()
    await skala_client.create_ticket(skala_sandbox.customer_id, "s", "d", files=str(path))
    assert len(hops) == 1  # measured and read in the same thread
    assert sendfile_calls == []
    req = skala_sandbox.requests_to("create")[-1]
    assert req.status == 202
    assert not req.chunked
    assert req.content_length is not None
    assert [(f.filename, f.size, f.sha256) for f in req.files] == [
        ("shot.png", size, sha(path.read_bytes()))
    ]


async def test_a_file_over_the_read_ahead_size_is_read_when_sent(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    hops: list[str],
    sendfile_calls: list[int],
) -> None:
    small, larger = make_file("a.png", size=MAX), make_file("b.pdf", size=MAX + 1)
    await _token(skala_client, skala_sandbox)
    hops.clear()
    await skala_client.create_ticket(skala_sandbox.customer_id, "s", "d", files=[small, larger])
    assert len(hops) == 2  # the measuring (with a.png read), then b.pdf's one read
    assert sendfile_calls == []  # b.pdf fits in one chunk
    req = skala_sandbox.requests_to("create")[-1]
    assert [(f.filename, f.sha256) for f in req.files] == [
        ("a.png", sha(small.read_bytes())),
        ("b.pdf", sha(larger.read_bytes())),
    ]


async def test_a_retry_sends_the_bytes_read_ahead_even_if_the_file_changed(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    original = bytes(range(256)) * 40
    path = make_file("receipt.pdf", content=original)
    skala_sandbox.inject("create", Fault.http(503, retry_after=0.01))

    def rewrite(sent: int, total: int) -> None:
        path.write_bytes(b"X" * len(original))  # same size, other bytes, after the 1st body

    await skala_client.create_ticket(
        skala_sandbox.customer_id, "s", "d", files=[path], progress=rewrite
    )
    reqs = skala_sandbox.requests_to("create")
    assert [r.status for r in reqs] == [503, 202]
    assert reqs[1].files[0].sha256 == sha(original)  # one content for every attempt
    assert path.read_bytes() != original


async def test_progress_and_a_trace_see_a_file_read_ahead(
    skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    chunks: list[int] = []

    async def on_chunk(_: object, __: object, params: aiohttp.TraceRequestChunkSentParams) -> None:
        if params.url.path.startswith("/api/v1/supportTickets"):
            chunks.append(len(params.chunk))

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk)
    path = make_file("t.png", size=5000)
    seen: list[tuple[int, int]] = []
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        sandbox_client(skala_sandbox, session=session) as client,
    ):
        await client.create_ticket(
            skala_sandbox.customer_id,
            "s",
            "d",
            files=path,
            progress=lambda s, t: seen.append((s, t)),
        )
    [req] = skala_sandbox.requests_to("create")
    assert req.files[0].sha256 == sha(path.read_bytes())
    assert seen == [(5000, 5000)]
    assert sum(chunks) == req.content_length


def _grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"x")


def _shrink(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


@pytest.mark.parametrize(
    ("change", "text"),
    [(_grow, "became longer"), (_shrink, "became shorter"), (Path.unlink, "No such file")],
    ids=["grew", "shrank", "deleted"],
)
async def test_a_file_changed_since_measured_is_not_read_ahead_and_still_refused(
    skala_client: skala.SkalaClient,
    skala_sandbox: SkalaSandbox,
    make_file: Callable[..., Path],
    change: Callable[[Path], object],
    text: str,
) -> None:
    changed = make_file("old.png", size=2000)
    attachment = skala.Attachment.from_path(changed)  # measured now
    change(changed)
    # A path beside it: the draft is measured (and read ahead) in a worker thread.
    other = make_file("new.png", size=100)
    with pytest.raises(UploadAbortedError) as caught:
        await skala_client.create_ticket(
            skala_sandbox.customer_id, "s", "d", files=[attachment, other]
        )
    assert text in str(caught.value)
    assert "no ticket was created" in str(caught.value)
    assert skala_sandbox.tickets == {}


def test_read_ahead_leaves_what_it_cannot_or_need_not_read(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"0123456789")
    plain = skala.Attachment.from_path(path)
    read = models.read_ahead(plain)
    assert read is not plain
    assert (read.filename, read.size, read.path, repr(read)) == (
        plain.filename,
        plain.size,
        plain.path,
        repr(plain),
    )
    assert read.sha256() == plain.sha256()
    assert models.read_ahead(read) is read
    big = tmp_path / "big.pdf"
    big.write_bytes(bytes(MAX + 1))
    missing = skala.Attachment.from_path(tmp_path / "gone.png")
    for kept in (
        skala.Attachment.from_path(big),
        skala.Attachment.from_bytes(b"abc", filename="m.png"),
        missing,
    ):
        assert models.read_ahead(kept) is kept
    path.unlink()
    assert models.read_ahead(plain) is plain  # vanished since measured: left to the send


def test_with_headers_keeps_every_other_field() -> None:
    req = Request(
        operation=Operation.GET,
        method="GET",
        path="/x/",
        headers={"Accept": "application/json"},
        fields=(("a", "b"),),
        files=(skala.Attachment.from_bytes(b"z", filename="z.png"),),
        form=(("c", "d"),),
        needs_auth=False,
        ticket_id=uuid.UUID(int=7),
    )
    for field in attrs.fields(Request):  # none at its default: a new field shows up here
        default = field.default.factory() if hasattr(field.default, "factory") else field.default
        assert getattr(req, field.name) != default, field.name
    added = req.with_headers({"Authorization": "Bearer t", "Accept": "*/*"})
    assert added == attrs.evolve(req, headers={"Accept": "*/*", "Authorization": "Bearer t"})
    assert req.headers == {"Accept": "application/json"}


def test_sendfile_starts_above_one_chunk() -> None:
    assert _upload.SENDFILE_MIN == _upload.CHUNK_SIZE
    assert MAX <= _upload.SENDFILE_MIN


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def _rendered(
    fields: tuple[tuple[str, str], ...], files: tuple[Any, ...]
) -> tuple[bytes, str]:
    req = Request(operation=Operation.CREATE, method="POST", path="/p/", fields=fields, files=files)
    payload = _upload._form(req, None)
    sink = _Sink()
    await payload.write(sink)  # type: ignore[arg-type]
    await payload.close()
    assert payload.size == len(sink.data)  # Content-Length matches what is written
    return bytes(sink.data), payload.content_type.split("boundary=", 1)[1]


async def _aiohttp_rendered(
    boundary: str, fields: tuple[tuple[str, str], ...], files: tuple[Any, ...]
) -> bytes:
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields:
        form.add_field(name, value)
    for att in files:
        form.add_field("files", att.data, filename=att.filename, content_type=att.content_type)
    writer = form()
    assert isinstance(writer, aiohttp.MultipartWriter)
    writer._boundary = boundary.encode("ascii")
    sink = _Sink()
    await writer.write(sink)  # type: ignore[arg-type]
    return bytes(sink.data)


@pytest.mark.parametrize(
    "fields",
    [
        (("customerId", "6f1c"), ("summary", "s"), ("description", "d")),
        (("summary", 'Ñandú "quoted"\r\n--not-a-boundary\r\n'), ("description", "")),
        (("odd name", "v"), ('q"uote', "w"), ("ñ", "x")),  # names aiohttp renders itself
        (),
    ],
    ids=["api", "hostile values", "names to quote", "none"],
)
@pytest.mark.parametrize("with_files", [False, True])
async def test_the_body_is_byte_for_byte_aiohttps_form(
    fields: tuple[tuple[str, str], ...], with_files: bool
) -> None:
    files = (
        (
            skala.Attachment.from_bytes(b"\x89PNG" + bytes(300), filename="a.png"),
            skala.Attachment.from_bytes(b"%PDF-1", filename='in "quotes".pdf'),
        )
        if with_files
        else ()
    )
    ours, boundary = await _rendered(fields, files)
    assert ours == await _aiohttp_rendered(boundary, fields, files)


async def test_a_created_ticket_keeps_hostile_text_as_sent(
    skala_client: skala.SkalaClient, skala_sandbox: SkalaSandbox, make_file: Callable[..., Path]
) -> None:
    summary = 'Ñandú "quoted" -- boundary?'
    description = "line one\r\n--" + "x" * 32 + "\r\nContent-Type: text/html\r\n\r\nend"
    path = make_file("shot.png", size=321)
    await skala_client.create_ticket(skala_sandbox.customer_id, summary, description, files=path)
    [req] = skala_sandbox.requests_to("create")
    assert req.status == 202
    [ticket] = skala_sandbox.tickets.values()
    assert (ticket.summary, ticket.description) == (summary, description)
    assert [(f.filename, f.size) for f in req.files] == [("shot.png", 321)]
