"""Property-based tests (hypothesis) over real HTTP on 127.0.0.1.

Two properties, each run on many generated cases (the counts are in docs/reliability.md):

* **Drafts**: a generated ticket draft (summary and description at, under and over their
  limits, any Unicode including combining marks, emoji, control characters, lone surrogates
  and line breaks; files named with path separators, NUL, very long names, upper-case or no
  extensions; sizes from zero bytes to exactly 25 and 50 MiB; missing, unreadable, directory
  and FIFO paths) either passes validation and arrives at the sandbox byte-exact, or raises
  ``ValidationError`` naming every problem, with no request sent at all.
* **Responses**: a generated server answer (any status, headers and body: truncated JSON,
  HTML, empty, over the 1 MiB cap, compressed, wrong types, unknown statuses, missing
  fields, non-UTF-8 bytes, garbage ``Retry-After``, duplicate and huge headers, broken
  framing) gives a valid model or the typed ``SkalaError`` the documented mapping names,
  never another exception, and never hangs.

The servers live on background threads with event loops of their own; each example runs a
fresh client with ``asyncio.run`` in the test's thread, so hypothesis drives plain
synchronous tests and one server serves every example of a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import math
import os
import random
import tempfile
import threading
import unicodedata
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import pytest
from aiohttp.multipart import parse_content_disposition
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import skala_async as skala
from skala_async import RetryPolicy, Timeouts
from skala_async._protocol import parse_retry_after
from skala_async.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    RateLimitedError,
    ServerError,
    SkalaError,
    SupportTicketsNotEnabledError,
    TicketNotFoundError,
    TransportError,
    UnexpectedResponseError,
)
from skala_async.testing import SkalaSandbox, sandbox_client

#: Generated cases per run (docs/reliability.md states these numbers; a test checks it).
DRAFT_EXAMPLES = 400
RESPONSE_EXAMPLES = {"get": 600, "create": 600, "token": 400}
RETRY_AFTER_EXAMPLES = 2000

MIB = 1024 * 1024
MAX_FILE = 25 * MIB
MAX_TOTAL = 50 * MIB
CAP = 1 * MIB
ALLOWED = ("jpg", "jpeg", "png", "webp", "mp4", "mov", "avi", "webm", "pdf")
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "pdf": "application/pdf",
}
#: Every character that ends a line for ``str.splitlines`` (the spec of "one line").
LINE_BREAKS = frozenset(chr(i) for i in range(0x3000) if len(f"a{chr(i)}b".splitlines()) > 1)
#: A wait this long means the client hung: every example answers in well under a second.
HANG_LIMIT = 15.0

#: How many examples each property actually ran (reported, and checked against the settings).
TRIED: dict[str, int] = {}


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


# ============================================================================ servers on threads


@contextlib.contextmanager
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a daemon thread, stopped and closed afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="property-server", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SkalaSandbox]:
    """One sandbox for every draft example, serving from its own thread."""
    with loop_thread() as loop:
        sb = SkalaSandbox(processing_delay=None)
        asyncio.run_coroutine_threadsafe(sb.start(), loop).result(10)
        try:
            yield sb
        finally:
            asyncio.run_coroutine_threadsafe(sb.close(), loop).result(10)


# ============================================================================ drafts

INTERESTING_CHARS = [
    *sorted(LINE_BREAKS),
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\t",
    " ",
    "\u00a0",
    "\u0301",  # combining acute accent
    "\u200d",  # zero-width joiner
    "\ufeff",
    "\u202e",  # right-to-left override
    "ñ",
    "語",
    "🎉",
    "👩",
    "\ud800",  # lone surrogates: not valid Unicode text
    "\udcff",
]
#: Any character, the awkward ones often.
chars = st.one_of(
    st.characters(codec="utf-8"), st.sampled_from(INTERESTING_CHARS), st.sampled_from("ab .-_")
)
#: Characters a summary may hold: combining marks, emoji, controls, but no line break,
#: NUL or lone surrogate.
line_chars = st.one_of(
    st.characters(codec="utf-8", exclude_characters=[*LINE_BREAKS, "\x00"]),
    st.sampled_from([c for c in INTERESTING_CHARS if c not in LINE_BREAKS and c.isprintable()]),
    st.sampled_from(["\x01", "\x1b", "\x7f", "\t", "\u200b", "\u0300"]),
)
#: Characters a description may hold: the same, line breaks included.
text_chars = st.one_of(line_chars, st.sampled_from(sorted(LINE_BREAKS)))


def text_of_length(lengths: list[int], alphabet: Any = chars) -> st.SearchStrategy[str]:
    """Text of exactly one of ``lengths`` code points, built by repeating a short piece
    (so a 5000-character description costs nothing to generate)."""
    return st.builds(
        lambda n, piece: (piece * (n // len(piece) + 1))[:n],
        st.sampled_from(lengths),
        st.text(alphabet, min_size=1, max_size=4),
    )


def _not_blank(text: str) -> bool:
    return bool(text.strip())


good_summaries = st.one_of(
    st.text(line_chars, min_size=1, max_size=80).filter(_not_blank),
    text_of_length([1, 239, 240], line_chars).filter(_not_blank),
    st.sampled_from(["e\u0301" * 120, "🎉" * 240, "👩\u200d👧" * 80, "Card top-up: 100 USDC"]),
)
summaries = st.one_of(
    good_summaries,
    good_summaries,
    good_summaries,
    st.text(chars, max_size=60),
    text_of_length([0, 241, 300]),
    st.sampled_from(["", " ", "\t \u00a0", "e\u0301" * 121, "two\nlines", "nul\x00"]),
)
good_descriptions = st.one_of(
    st.text(text_chars, min_size=1, max_size=300).filter(_not_blank),
    text_of_length([4999, 5000], text_chars).filter(_not_blank),
    st.just("line one\nline two\r\nthree\u2028four"),
)
descriptions = st.one_of(
    good_descriptions,
    good_descriptions,
    good_descriptions,
    st.text(chars, max_size=200),
    text_of_length([0, 5001]),
    st.sampled_from(["\n", "x\x00y", "lone \udc80 surrogate"]),
)


@attrs.frozen
class FileSpec:
    """One generated attachment: how it is given, its name, and its size."""

    #: bytes: Attachment.from_bytes; path: a file on disk; missing / directory / fifo /
    #: long_name / unreadable: a path that cannot be sent.
    kind: str
    stem: str
    ext: str
    size: int = 0
    #: prepended to a from_bytes filename: a directory that must never be sent.
    prefix: str = ""
    seed: int = 0


@attrs.frozen
class DraftSpec:
    customer: str  # valid, upper, braces, urn, spaces, uuid_object, invalid:<text>
    summary: str
    description: str
    files: tuple[FileSpec, ...] = ()


PREFIXES = [
    "",
    "/home/alice/private/",
    "C:\\Users\\alice\\Documents\\",
    "../../etc/",
    "..\\..\\",
    "./",
    "dir/sub\\",
    "\\\\server\\share\\",
]
good_extensions = st.one_of(
    st.sampled_from(ALLOWED).map(str),
    st.sampled_from(ALLOWED).map(str.upper),
    st.sampled_from(["PnG", "Pdf", "jPeG"]),
)
extensions = st.one_of(
    good_extensions,
    st.sampled_from(["", "exe", "txt", "pdf ", "tar.gz", "jpg\x00", "png/", "pdf\\"]),
)
#: Names a Linux file system accepts (no "/" or NUL); "\udc80".."\udcff" stand for
#: undecodable bytes of a non-UTF-8 name, as os.fsdecode produces them.
good_disk_stems = st.text(
    st.one_of(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs", "M"]),
        st.sampled_from([" ", "\x01", "\udc80", "é", "🎉", ".", "%", "'", '"', ";", "="]),
    ),
    min_size=1,
    max_size=30,
).filter(lambda t: "/" not in t and "\\" not in t)
disk_stems = st.one_of(
    good_disk_stems,
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), max_size=30),
    st.sampled_from(["\\", "a\\b", ".", "..", "\udcff\udcfe"]),
)
#: A from_bytes filename: a directory prefix is never sent, only what follows it.
good_stems = good_disk_stems
any_stems = st.text(chars, max_size=40)

good_bytes_files = st.builds(
    FileSpec,
    kind=st.just("bytes"),
    stem=good_stems,
    ext=good_extensions,
    size=st.integers(0, 3000),
    prefix=st.sampled_from(PREFIXES),
    seed=st.integers(0, 2**32),
)
good_path_files = st.builds(
    FileSpec,
    kind=st.just("path"),
    stem=good_disk_stems,
    ext=good_extensions,
    size=st.integers(0, 3000),
    seed=st.integers(0, 2**32),
)
bad_files = st.one_of(
    st.builds(
        FileSpec,
        kind=st.just("bytes"),
        stem=any_stems,
        ext=extensions,
        size=st.integers(0, 3000),
        prefix=st.sampled_from(PREFIXES),
        seed=st.integers(0, 2**32),
    ),
    st.builds(
        FileSpec,
        kind=st.just("path"),
        stem=disk_stems,
        ext=extensions.filter(lambda e: "/" not in e and "\x00" not in e),
        size=st.integers(0, 3000),
        seed=st.integers(0, 2**32),
    ),
    st.builds(
        FileSpec,
        kind=st.sampled_from(["missing", "directory", "fifo", "long_name", "unreadable"]),
        stem=st.sampled_from(["a", "receipt", "x y"]),
        ext=st.sampled_from(["pdf", "png", "exe"]),
        size=st.integers(0, 100),
    ),
)
file_lists = st.one_of(
    st.lists(st.one_of(good_bytes_files, good_path_files), max_size=5),
    st.lists(st.one_of(good_bytes_files, good_path_files), max_size=5),
    st.lists(st.one_of(good_bytes_files, good_path_files, bad_files), max_size=6),
).map(tuple)
good_customers = st.sampled_from(
    ["valid", "upper", "braces", "urn", "spaces", "no_hyphens", "uuid_object"]
)
customers = st.one_of(
    good_customers, good_customers, st.text(chars, max_size=40).map(lambda t: "invalid:" + t)
)
#: Half the drafts are valid in every part (they must arrive byte-exact), half mix valid
#: and invalid parts (they must be refused, naming every problem).
drafts = st.one_of(
    st.builds(
        DraftSpec,
        customer=good_customers,
        summary=good_summaries,
        description=good_descriptions,
        files=st.lists(st.one_of(good_bytes_files, good_path_files), max_size=5).map(tuple),
    ),
    st.builds(
        DraftSpec, customer=customers, summary=summaries, description=descriptions, files=file_lists
    ),
)


def _clean(name: str) -> str:
    """The spec of the name sent for a name given with ``filename=``: the last component
    after either separator, without control characters or undecodable bytes, stripped."""
    return _clean_local(name.replace("\\", "/").rsplit("/", 1)[-1])


def _clean_local(name: str) -> str:
    """The spec of the name sent for a file's own name on disk (``Path.name``): whole (a
    backslash is part of a Linux file name), without control characters, stripped."""
    return "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cs")).strip()


def _ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _text_issues(field: str, value: str, limit: int, *, one_line: bool) -> list[tuple[str, str]]:
    issues = []
    if not value.strip():
        issues.append((field, "empty"))
    if len(value) > limit:
        issues.append((field, f"at most {limit}"))
    if one_line and any(c in LINE_BREAKS for c in value):
        issues.append((field, "single line"))
    if "\x00" in value:
        issues.append((field, "NUL"))
    if _has_surrogate(value):
        issues.append((field, "Unicode"))
    return issues


def _sandbox_reads(name: str) -> bool:
    """Whether aiohttp's multipart parser (the sandbox's) reads ``name`` as sent.

    It refuses some correctly quoted names (``";;"``, ``'";'`` inside the quotes) that a
    Django server reads; tests/promises/test_security.py checks the quoting on the raw wire."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, params = parse_content_disposition(f'form-data; name="files"; filename="{quoted}"')
    return params.get("filename") == name


def _filename(spec: FileSpec) -> str:
    return spec.stem + (f".{spec.ext}" if spec.ext else "")


def _disk_name(spec: FileSpec) -> str:
    name = _filename(spec).replace("/", "_").replace("\x00", "_")
    if not name.strip("."):  # "." and ".." name directories
        name = "f" + name
    # Keep within NAME_MAX (255 bytes) unless a long name is the point of the case.
    while len(os.fsencode(name)) > 200:
        name = name[1:]
    return name


KIND_PROBLEM = {
    "missing": "does not exist",
    "directory": "not a regular file",
    "fifo": "not a regular file",
    "long_name": "cannot be read",
    "unreadable": "not readable",
}


@attrs.define
class Materialised:
    files: list[skala.Attachment | str | Path]
    sent_names: list[str]
    contents: list[tuple[int, str]]  # size, sha256 of what must arrive
    expected: list[tuple[str, str]]  # (field label, keyword) of every problem


_ZERO_SHA: dict[int, str] = {}


def _zeros_sha(size: int) -> str:
    if size not in _ZERO_SHA:
        h = hashlib.sha256()
        block = bytes(MIB)
        left = size
        while left:
            n = min(left, MIB)
            h.update(block[:n])
            left -= n
        _ZERO_SHA[size] = h.hexdigest()
    return _ZERO_SHA[size]


def materialise(spec: DraftSpec, root: Path) -> Materialised:
    """Make the files of ``spec`` under ``root`` and work out what the spec expects."""
    files: list[skala.Attachment | str | Path] = []
    names: list[str] = []
    contents: list[tuple[int, str]] = []
    expected: list[tuple[str, str]] = []
    unreadable: set[str] = set()
    total = 0
    for i, f in enumerate(spec.files):
        where = root / str(i)
        where.mkdir()
        label = f"files[{i}]"
        sent = _clean(_filename(f))
        if f.kind == "bytes":
            data = random.Random(f.seed).randbytes(f.size)
            files.append(skala.Attachment.from_bytes(data, filename=f.prefix + _filename(f)))
            contents.append((f.size, hashlib.sha256(data).hexdigest()))
        elif f.kind == "path":
            disk = _disk_name(f)
            path = where / disk
            sent = _clean_local(path.name)
            if f.size >= MIB:  # the 25/50 MiB cases: sparse, all zeros
                with path.open("wb") as out:
                    out.truncate(f.size)
                contents.append((f.size, _zeros_sha(f.size)))
            else:
                data = random.Random(f.seed).randbytes(f.size)
                path.write_bytes(data)
                contents.append((f.size, hashlib.sha256(data).hexdigest()))
            # str and Path are both accepted; alternate between them.
            files.append(path if i % 2 else str(path))
        else:
            name = _filename(f)
            if f.kind == "long_name":
                name = "n" * 300 + "." + f.ext
            path = where / name
            if f.kind == "directory":
                path.mkdir()
            elif f.kind == "fifo":
                os.mkfifo(path)
            elif f.kind == "unreadable":
                path.write_bytes(b"secret")
                path.chmod(0)
                unreadable.add(str(path))
            sent = _clean_local(path.name)
            files.append(path)
            contents.append((0, ""))
            expected.append((label, KIND_PROBLEM[f.kind]))
        first = next(
            (j for j, n in enumerate(names) if sent and n.casefold() == sent.casefold()), None
        )
        names.append(sent)
        if first is not None:
            expected.append((label, f"also the name of files[{first}]"))
        if not sent:
            expected.append((label, "needs a file name"))
        elif _ext(sent) not in ALLOWED:
            expected.append((label, "allowed extensions"))
        if f.kind in ("bytes", "path"):
            total += f.size
            if f.size > MAX_FILE:
                expected.append((label, "limit per file"))
    if len(spec.files) > 5:
        expected.append(("files", "at most 5"))
    if total > MAX_TOTAL:
        expected.append(("files", "together"))
    # Root reads every file whatever its mode: make "unreadable" hold for root too.
    if unreadable:
        real_access = os.access

        def access(path: Any, mode: int, *args: Any, **kw: Any) -> bool:
            if str(path) in unreadable:
                return False
            return real_access(path, mode, *args, **kw)

        with mock.patch("os.access", access):
            files = [skala.Attachment.coerce(f) for f in files]  # type: ignore[arg-type]
    return Materialised(files, names, contents, expected)


def customer_value(spec: DraftSpec, customer_id: str) -> tuple[str | uuid.UUID, bool]:
    kind = spec.customer
    if kind.startswith("invalid:"):
        text = kind.removeprefix("invalid:")
        try:
            uuid.UUID(text.strip())
        except ValueError:
            return text, False
        return customer_id, True  # hypothesis wrote a UUID: use ours
    u = uuid.UUID(customer_id)
    value: str | uuid.UUID = {
        "valid": customer_id,
        "upper": customer_id.upper(),
        "braces": "{" + customer_id + "}",
        "urn": u.urn,
        "spaces": f"  {customer_id}\t",
        "no_hyphens": u.hex,
        "uuid_object": u,
    }[kind]
    return value, True


def _big(*sizes: int) -> DraftSpec:
    return DraftSpec(
        "valid",
        "Upload at the limit",
        "Sparse files of exactly the documented sizes.",
        tuple(FileSpec("path", f"big{i}", "mp4", size=s) for i, s in enumerate(sizes)),
    )


@settings(
    max_examples=DRAFT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=drafts)
@example(spec=_big(MAX_FILE))  # exactly 25 MiB: accepted, arrives byte-exact
@example(spec=_big(MAX_FILE, MAX_FILE))  # exactly 50 MiB together: accepted
@example(spec=_big(MAX_FILE + 1))  # one byte over 25 MiB: refused, nothing sent
@example(spec=_big(MAX_FILE, MAX_FILE - 10, 11))  # one byte over 50 MiB together
@example(spec=_big(0, 0, 0, 0, 0))  # five empty files
@example(spec=DraftSpec("valid", "a" * 240, "d" * 5000, (FileSpec("bytes", "x", "PDF", 1),)))
@example(spec=DraftSpec("valid", "\ud800", "ok", ()))  # lone surrogate (was a raw TypeError)
@example(spec=DraftSpec("valid", "ok", "ok", (FileSpec("path", "\udcff\udcfe", "png", 3),)))
def test_a_draft_is_refused_with_every_problem_or_arrives_byte_exact(
    sandbox: SkalaSandbox, spec: DraftSpec
) -> None:
    _count("drafts")
    customer, customer_ok = customer_value(spec, sandbox.customer_id)
    with tempfile.TemporaryDirectory() as tmp:
        made = materialise(spec, Path(tmp))
        expected = list(made.expected)
        if not customer_ok:
            expected.append(("customer_id", "UUID"))
        expected += _text_issues("summary", spec.summary, 240, one_line=True)
        expected += _text_issues("description", spec.description, 5000, one_line=False)
        before = len(sandbox.requests)

        async def create() -> skala.TicketHandle:
            async with sandbox_client(sandbox) as client:
                return await client.create_ticket(
                    customer, spec.summary, spec.description, files=made.files
                )

        _count("drafts:refused" if expected else "drafts:sent")
        if expected:
            with pytest.raises(skala.ValidationError) as caught:
                asyncio.run(asyncio.wait_for(create(), HANG_LIMIT))
            problems = list(caught.value.problems)
            for field, keyword in expected:
                match = [p for p in problems if p.startswith(f"{field}:") and keyword in p]
                assert match, f"no problem names {field} / {keyword!r}: {problems}"
            assert len(problems) == len(expected), (problems, expected)
            assert len(sandbox.requests) == before, "a refused draft sent a request"
            return
        assume(all(_sandbox_reads(n) for n in made.sent_names))
        handle = asyncio.run(asyncio.wait_for(create(), HANG_LIMIT))
    [req] = [r for r in sandbox.requests[before:] if r.endpoint == "create"]
    assert req.status == 202
    assert req.ticket_id == str(handle.ticket_id)
    assert req.content_length is not None
    assert not req.chunked
    assert req.fields == {
        "customerId": sandbox.customer_id,
        "summary": spec.summary,
        "description": spec.description,
    }
    assert [f.field_name for f in req.files] == ["files"] * len(spec.files)
    assert [f.filename for f in req.files] == made.sent_names
    assert [(f.size, f.sha256) for f in req.files] == made.contents
    assert [f.content_type for f in req.files] == [CONTENT_TYPES[_ext(n)] for n in made.sent_names]
    ticket = sandbox.tickets[req.ticket_id]
    assert (ticket.summary, ticket.description) == (spec.summary, spec.description)


async def test_a_path_with_a_nul_is_a_validation_problem(skala_client: skala.SkalaClient) -> None:
    with pytest.raises(skala.ValidationError) as caught:
        await skala_client.create_ticket(
            str(uuid.uuid4()), "s", "d", files=["/tmp/receipt\x00.pdf", "/nonexistent.pdf"]
        )
    assert len(caught.value.problems) == 2


# ============================================================================ responses


@attrs.frozen
class Answer:
    """A generated answer: raw bytes, plus what a correct client makes of it."""

    raw: bytes
    #: None: anything but a SkalaError subclass is wrong; else the model of the response.
    status: int | None = None
    body: bytes = b""  # decoded body (what the client parses), before any cap
    retry_after: str | None = None
    note: str = ""


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers each request with given bytes.

    ``answer(path)`` returns the bytes for a request to ``path``; the connection is closed
    after every answer, so a client never waits for more than what was sent.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.answer: Callable[[str], bytes] = lambda path: b""
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1].decode()
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
            self.paths.append(path)
            writer.write(self.answer(path))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    with loop_thread() as loop:
        server = RawServer(loop)
        asyncio.run_coroutine_threadsafe(server._start(), loop).result(10)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server._stop(), loop).result(10)


def _http(status: int, headers: list[tuple[str, str]], body: bytes, reason: str = "X") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
    return head + b"\r\n" + body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(chars, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
statuses_seen = st.one_of(
    st.sampled_from(["PENDING", "CREATED", "FAILED"]),
    st.text(chars, max_size=12),  # unknown and empty statuses
)


@st.composite
def ticket_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A ticket body, documented or mutated (missing keys, wrong types, extra keys).

    ``"{TID}"`` stands for the id the GET asked for; the server fills it in."""
    body: dict[str, Any] = {
        "ticketId": draw(
            st.sampled_from(["{TID}", "{TID_UPPER}", "{TID_BRACES}", "{OTHER}", "not-a-uuid"])
        ),
        "status": draw(statuses_seen),
        "issueKey": draw(st.one_of(st.none(), st.just("SUP-1234"), st.text(chars, max_size=10))),
    }
    for key in draw(st.lists(st.sampled_from(list(body)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(json_values)
    body.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)))
    return body


@st.composite
def error_bodies(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "code": draw(st.one_of(st.sampled_from([20061, 20000, 40001]), json_values)),
        "type": draw(st.one_of(st.just("SomeException"), json_values)),
        "detail": draw(st.one_of(st.fixed_dictionaries({"message": st.text(chars)}), json_values)),
        "status": draw(json_values),
    }


def _dump(value: Any) -> bytes:
    # Lone surrogates become bytes that are not UTF-8: the client must cope with those too.
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                *("ticket", "ticket", "ticket", "error", "json", "truncated", "html", "empty"),
                *("binary", "nan", "deep", "huge_json", "huge"),
            ]
        )
    )
    if kind == "ticket":
        return _dump(draw(ticket_bodies()))
    if kind == "error":
        return _dump(draw(error_bodies()))
    if kind == "json":
        return _dump(draw(json_values))
    if kind == "truncated":
        full = _dump(draw(st.one_of(ticket_bodies(), error_bodies())))
        return full[: draw(st.integers(0, max(0, len(full) - 1)))]
    if kind == "html":
        return b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    if kind == "empty":
        return b""
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "nan":
        return b'{"ticketId": "{TID}", "status": NaN, "issueKey": Infinity}'
    if kind == "deep":
        return b"[" * draw(st.integers(1000, 200_000))
    pad = b" " * (2 * MIB)
    if kind == "huge_json":  # valid JSON, but over the cap: must be refused, not read
        return _dump(draw(ticket_bodies()))[:-1] + pad + b"}"
    return b"x" * (2 * MIB)


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
retry_afters = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "0",
            "0.05",
            "1",
            "-1",
            "1e308",
            "1e999",
            "nan",
            "inf",
            "-inf",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 99 Foo 2020 99:99:99 GMT",
            "soon",
            "",
            "3600, 10",
        ]
    ),
    header_text,
    st.floats(allow_nan=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/html",
        "text/plain; charset=utf-8",
        "application/x-garbage",
        "multipart/form-data; boundary=zz",
    ]
)
extra_headers = st.lists(
    st.tuples(
        st.sampled_from(["X-Request-Id", "Retry-After", "Content-Type", "Set-Cookie", "X-Junk"]),
        header_text,
    ),
    max_size=4,
)
well_formed_statuses = st.one_of(
    st.sampled_from(
        [
            *(200, 201, 202, 204, 301, 302, 400, 401, 403, 404, 408, 409, 413, 422, 429),
            *(500, 502, 503, 504, 599),
        ]
    ),
    st.integers(200, 599),
    st.integers(600, 999),
)


@st.composite
def well_formed(draw: st.DrawFn, documented: bool = False) -> Answer:
    """A response aiohttp can parse: any status, headers and body, framed correctly.

    ``documented``: a 2xx with the documented ticket body (unknown statuses, other id
    spellings and extra keys included), the answer a working server gives."""
    if documented:
        status = draw(st.sampled_from([200, 201, 202]))
        ticket = {
            "ticketId": draw(st.sampled_from(["{TID}", "{TID_UPPER}", "{TID_BRACES}"])),
            "status": draw(statuses_seen.filter(bool)),
            "issueKey": draw(st.one_of(st.none(), st.just("SUP-1234"), st.text(chars))),
        }
        ticket.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)))
        body = _dump(ticket)
    else:
        status = draw(well_formed_statuses)
        body = b"" if status in (204, 304) else draw(bodies())
    headers: list[tuple[str, str]] = []
    ctype = draw(content_types)
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    retry_after = draw(retry_afters)
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    headers += draw(extra_headers)
    seen_ra = [v for k, v in headers if k == "Retry-After"]
    framing = draw(st.sampled_from(["length", "length", "chunked", "close", "gzip", "deflate"]))
    if status in (204, 304):
        framing = "length"
    wire = body
    if framing == "gzip":
        wire = gzip.compress(body, 1)
        headers.append(("Content-Encoding", "gzip"))
        framing = draw(st.sampled_from(["length", "chunked"]))
    elif framing == "deflate":
        wire = zlib.compress(body, 1)
        headers.append(("Content-Encoding", "deflate"))
        framing = draw(st.sampled_from(["length", "close"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(wire))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        size = draw(st.integers(64, 70_000))
        pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        headers.append(("Connection", "close"))
    # aiohttp reads the first Retry-After of several (a CIMultiDict); so must the model.
    return Answer(
        _http(status, headers, wire),
        status=status,
        body=body,
        retry_after=seen_ra[0] if seen_ra else None,
        note=f"{status} {framing} {len(body)}B",
    )


@st.composite
def malformed(draw: st.DrawFn) -> Answer:
    """Bytes that are not a valid HTTP response, or that break it off."""
    kind = draw(
        st.sampled_from(
            [
                "random",
                "huge_header",
                "many_headers",
                "short_body",
                "bad_chunks",
                "bad_length",
                "two_lengths",
                "bad_gzip",
                "non_latin1_header",
                "bad_status_line",
                "interim_only",
                "nothing",
            ]
        )
    )
    ok = b'{"ticketId": "{TID}", "status": "PENDING", "issueKey": null}'
    raw = {
        "random": draw(st.binary(max_size=200)),
        "huge_header": _http(200, [("X-Big", "a" * 100_000), ("Content-Length", "2")], b"{}"),
        "many_headers": _http(200, [(f"X-H{i}", "1") for i in range(5000)], b""),
        "short_body": _http(200, [("Content-Length", "500")], ok),
        "bad_chunks": _http(200, [("Transfer-Encoding", "chunked")], b"zz\r\n" + ok),
        "bad_length": _http(200, [("Content-Length", "-3")], ok),
        "two_lengths": _http(200, [("Content-Length", "3"), ("Content-Length", "5")], ok),
        "bad_gzip": _http(200, [("Content-Encoding", "gzip"), ("Content-Length", "4")], b"junk"),
        "non_latin1_header": b"HTTP/1.1 429 X\r\nRetry-After: \xff\xfe\r\n"
        b"Content-Length: 0\r\n\r\n",
        "bad_status_line": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        "interim_only": b"HTTP/1.1 100 Continue\r\n\r\n",
        "nothing": b"",
    }[kind]
    return Answer(raw, note=kind)


answers = st.one_of(well_formed(documented=True), well_formed(), well_formed(), malformed())


def _fill(raw: bytes, tid: str) -> bytes:
    u = uuid.UUID(tid)
    return (
        raw.replace(b"{TID}", tid.encode())
        .replace(b"{TID_UPPER}", tid.upper().encode())
        .replace(b"{TID_BRACES}", b"{" + tid.encode() + b"}")
        .replace(b"{OTHER}", str(uuid.UUID(int=u.int ^ 1)).encode())
    )


def _answer_for(answer: Answer, tid: str) -> Answer:
    """The answer with ``{TID}`` filled in; a filled-in gzip body must be encoded again."""
    if b"{" not in answer.body or answer.status is None:
        return attrs.evolve(answer, raw=_fill(answer.raw, tid))
    body = _fill(answer.body, tid)
    head, _, wire = answer.raw.partition(b"\r\n\r\n")
    if b"Content-Encoding: gzip" in head or b"Content-Encoding: deflate" in head:
        # Rebuild the frame around the re-encoded body (length framing only, simplest).
        encoding = "gzip" if b"gzip" in head else "deflate"
        wire = gzip.compress(body, 1) if encoding == "gzip" else zlib.compress(body, 1)
        lines = [
            ln
            for ln in head.split(b"\r\n")[1:]
            if not ln.lower().startswith((b"content-length", b"transfer-encoding", b"connection"))
        ]
        status_line = head.split(b"\r\n")[0]
        raw = b"\r\n".join([status_line, *lines, b"Content-Length: %d" % len(wire)])
        return attrs.evolve(answer, raw=raw + b"\r\n\r\n" + wire, body=body)
    if b"Content-Length:" in head:
        head = b"\r\n".join(
            b"Content-Length: %d" % len(body) if ln.startswith(b"Content-Length:") else ln
            for ln in head.split(b"\r\n")
        )
        return attrs.evolve(answer, raw=head + b"\r\n\r\n" + body, body=body)
    if b"Transfer-Encoding: chunked" in head:
        wire = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        return attrs.evolve(answer, raw=head + b"\r\n\r\n" + wire, body=body)
    return attrs.evolve(answer, raw=head + b"\r\n\r\n" + body, body=body)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _valid_ticket(body: bytes, tid: str | None) -> bool:
    """The documented ticket body (reference section 5), read leniently as the API
    documents: ``ticketId`` a UUID (the one asked for), ``status`` a non-empty string,
    ``issueKey`` a string or null or absent; other keys ignored."""
    if len(body) > CAP:
        return False
    data = _json_object(body)
    if data is None:
        return False
    tid_seen, status, key = data.get("ticketId"), data.get("status"), data.get("issueKey")
    if not isinstance(tid_seen, str) or not isinstance(status, str) or not status:
        return False
    if key is not None and not isinstance(key, str):
        return False
    try:
        seen = uuid.UUID(tid_seen)
    except ValueError:
        return False
    return tid is None or seen == uuid.UUID(tid)


def _error_class(status: int, body: bytes) -> tuple[type[SkalaError], ...]:
    """The error classes the documented mapping allows for a non-2xx ``status``."""
    if status == 403:
        data = _json_object(body[:CAP]) if len(body) <= CAP else None
        code = data.get("code") if data else None
        if len(body) > CAP:  # a body over the cap may or may not be read far enough
            return (SupportTicketsNotEnabledError, AuthenticationError)
        if code == 20061 and not isinstance(code, bool) and isinstance(code, int):
            return (SupportTicketsNotEnabledError,)
        return (AuthenticationError,)
    if status == 401:
        return (AuthenticationError,)
    if status == 404:
        return (TicketNotFoundError,)
    if status == 429:
        return (RateLimitedError,)
    if status >= 500:
        return (ServerError,)
    if status in (400, 413, 422):
        return (BadRequestError,)
    if 400 <= status < 500:
        return (ApiError,)
    return (UnexpectedResponseError,)


def _check_retry_after(exc: BaseException) -> None:
    value = getattr(exc, "retry_after", None)
    if value is not None:
        assert math.isfinite(value)
        assert value >= 0


def _client(server: RawServer, *, token: bool = True) -> skala.SkalaClient:
    common: dict[str, Any] = {
        "base_url": server.url,
        "retry": RetryPolicy(attempts=1),
        "timeouts": Timeouts(connect=5, read=5, upload_read=5),
    }
    if token:
        return skala.SkalaClient(token="static-token", **common)
    return skala.SkalaClient("client-id", "client-secret-value", **common)


def _run(coro: Any) -> Any:
    """Run one client call; hanging past HANG_LIMIT fails the example."""
    try:
        return asyncio.run(asyncio.wait_for(coro, HANG_LIMIT)), None
    except SkalaError as exc:
        return None, exc
    except asyncio.TimeoutError as exc:  # not a SkalaError: asyncio's own, the call hung
        raise AssertionError("the client hung on a generated response") from exc


RESPONSE_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=RESPONSE_EXAMPLES["get"], **RESPONSE_SETTINGS)
@given(answer=answers)
def test_any_answer_to_a_get_is_a_ticket_or_the_typed_error(
    raw_server: RawServer, answer: Answer
) -> None:
    _count("responses:get")
    tid = str(uuid.uuid4())
    filled = _answer_for(answer, tid)
    raw_server.answer = lambda path: filled.raw

    async def call() -> skala.Ticket:
        async with _client(raw_server) as client:
            return await client.get_ticket(tid)

    ticket, error = _run(call())
    _count("responses:model" if error is None else "responses:error")
    if filled.status is None:
        assert isinstance(error, SkalaError), ticket
        return
    status = filled.status
    if 200 <= status < 300:
        if _valid_ticket(filled.body, tid):
            assert isinstance(ticket, skala.Ticket), (filled.note, error)
            assert ticket.ticket_id == uuid.UUID(tid)
            assert ticket.status.value == json.loads(filled.body)["status"]
        else:
            assert isinstance(error, UnexpectedResponseError), (filled.note, ticket, error)
        return
    assert ticket is None
    allowed = _error_class(status, filled.body)
    assert type(error) in allowed, (filled.note, error, allowed)
    assert int(error.status) == status
    _check_retry_after(error)
    if isinstance(error, RateLimitedError) or type(error) is ServerError:
        wanted = parse_retry_after(filled.retry_after)
        if wanted is None or error.retry_after is None:
            assert error.retry_after == wanted
        else:  # an HTTP date is relative to the clock: allow for the time the call took
            assert math.isclose(error.retry_after, wanted, abs_tol=5.0)


@settings(max_examples=RESPONSE_EXAMPLES["create"], **RESPONSE_SETTINGS)
@given(answer=answers)
def test_any_answer_to_a_create_is_a_handle_or_the_typed_error(
    raw_server: RawServer, answer: Answer
) -> None:
    _count("responses:create")
    tid = str(uuid.uuid4())
    filled = _answer_for(answer, tid)
    raw_server.answer = lambda path: filled.raw

    async def call() -> skala.TicketHandle:
        async with _client(raw_server) as client:
            return await client.create_ticket(
                str(uuid.uuid4()),
                "Card top-up not credited",
                "Generated answer test",
                files=[skala.Attachment.from_bytes(b"%PDF-1.4 tiny", filename="r.pdf")],
            )

    handle, error = _run(call())
    _count("responses:model" if error is None else "responses:error")
    if isinstance(error, TransportError):  # surfaces only when surely not sent
        assert not error.request_sent, (filled.note, error)
    if filled.status is None:
        # No usable answer: the request may have reached the server, unless an answer was
        # read after all (a status line with odd header bytes still parses).
        assert isinstance(error, (CreateOutcomeUnknownError, ApiError)), (filled.note, error)
        return
    status = filled.status
    if status == 202 and _valid_ticket(filled.body, None):
        assert isinstance(handle, skala.TicketHandle), (filled.note, error)
        assert handle.ticket_id == uuid.UUID(json.loads(filled.body)["ticketId"])
        return
    assert handle is None
    # Only a documented refusal is a refusal: a 4xx (not 408) in the API's error shape, a
    # 429, a 503 with Retry-After. Any other answer may follow a stored ticket: a 2xx other
    # than 202 or unreadable, 3xx, 408, 5xx, a 4xx page that is not the API's.
    resendable_503 = status == 503 and parse_retry_after(filled.retry_after) is not None
    shaped = _api_error_shaped(filled.body)
    if status != 429 and not resendable_503:
        if not 400 <= status < 500 or status == 408 or shaped is False:
            assert isinstance(error, CreateOutcomeUnknownError), (filled.note, error)
            assert isinstance(error.cause, ApiError)
            assert int(error.cause.status) == status
            return
        if shaped is None:  # over the cap: read far enough to tell, or not
            assert isinstance(error, (CreateOutcomeUnknownError, *_error_class(status, b"")))
            return
    allowed = _error_class(status, filled.body)
    assert type(error) in allowed, (filled.note, error, allowed)
    _check_retry_after(error)


def _api_error_shaped(body: bytes) -> bool | None:
    """Whether ``body`` is the API's error (an integer ``code``, a string ``type``);
    ``None`` when it is over the cap, so the client may not read it whole."""
    if len(body) > CAP:
        return None
    data = _json_object(body)
    code = data.get("code") if data else None
    etype = data.get("type") if data else None
    return isinstance(code, int) and not isinstance(code, bool) and isinstance(etype, str)


tokens = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=40),
    st.text(chars, max_size=20),
    json_values,
)


@st.composite
def token_answers(draw: st.DrawFn) -> tuple[Answer, Any]:
    """An answer of the token endpoint: a mutated documented body, or any answer."""
    if draw(st.booleans()):
        return draw(answers), None
    token = draw(tokens)
    body: dict[str, Any] = {
        "accessToken": token,
        "expiresIn": draw(
            st.one_of(
                st.sampled_from([36000, 1, 0, -1, 2**31 - 1, 2**31, 10**400]),
                json_values,
            )
        ),
        "tokenType": draw(st.one_of(st.just("Bearer"), json_values)),
    }
    for key in draw(st.lists(st.sampled_from(list(body)), max_size=2, unique=True)):
        del body[key]
    wire = json.dumps(body, allow_nan=True).encode()
    status = draw(st.sampled_from([200, 200, 200, 201, 400, 401, 500]))
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(wire)))]
    return Answer(_http(status, headers, wire), status=status, body=wire), token


def _usable_token(body: bytes) -> bool:
    data = _json_object(body)
    if data is None or len(body) > CAP:
        return False
    token, expires = data.get("accessToken"), data.get("expiresIn")
    if not isinstance(token, str) or not token or not token.isprintable():
        return False
    if not isinstance(data.get("tokenType", ""), str):  # documented as the string "Bearer"
        return False
    return type(expires) is int and 0 < expires < 2**31


@settings(max_examples=RESPONSE_EXAMPLES["token"], **RESPONSE_SETTINGS)
@given(drawn=token_answers())
def test_any_token_answer_gives_a_ticket_or_the_typed_error(
    raw_server: RawServer, drawn: tuple[Answer, Any]
) -> None:
    _count("responses:token")
    answer, token = drawn
    tid = str(uuid.uuid4())
    ok = _http(
        200,
        [("Content-Type", "application/json")],
        _fill(b'{"ticketId": "{TID}", "status": "PENDING"}', tid),
    )
    filled = _answer_for(answer, tid)
    raw_server.answer = lambda path: filled.raw if path == "/oauth2/token/" else ok

    async def call() -> skala.Ticket:
        async with _client(raw_server, token=False) as client:
            return await client.get_ticket(tid)

    ticket, error = _run(call())
    _count("responses:model" if error is None else "responses:error")
    if error is not None and isinstance(token, str) and len(token) >= 12:
        # A token from a refused answer never shows in the error.
        assert token not in str(error)
        assert token not in repr(error)
    if filled.status is None:
        assert isinstance(error, SkalaError)
        return
    if filled.status == 200 and _usable_token(filled.body):
        assert isinstance(ticket, skala.Ticket), (filled.note, error)
        return
    assert ticket is None
    if filled.status == 200 or 200 <= filled.status < 300:
        assert isinstance(error, UnexpectedResponseError), (filled.note, error)
        return
    assert type(error) in _error_class(filled.status, filled.body), (filled.note, error)


@settings(max_examples=RETRY_AFTER_EXAMPLES, deadline=None)
@given(value=st.one_of(retry_afters, st.text(chars, max_size=40)))
def test_retry_after_is_none_or_a_finite_non_negative_delay(value: str | None) -> None:
    _count("retry_after")
    seconds = parse_retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


def test_examples_tried_match_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    """The counts docs/reliability.md states are the ones configured here (and, in a full run,
    tried)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(
        encoding="utf-8"
    )
    total = sum(RESPONSE_EXAMPLES.values())
    assert f"{DRAFT_EXAMPLES} generated drafts" in page
    assert f"{total} generated responses" in page
    for name, wanted in [("drafts", DRAFT_EXAMPLES)] + [
        (f"responses:{k}", v) for k, v in RESPONSE_EXAMPLES.items()
    ]:
        if name in TRIED:  # ran in this session (not with -k on this test alone)
            assert TRIED[name] >= wanted, (name, TRIED[name])
    with capsys.disabled():
        print(f"\nproperty examples tried: {dict(sorted(TRIED.items()))}")
