"""Multipart upload bodies for the aiohttp transport.

Each attachment is an :class:`AttachmentPayload` that knows its size (so aiohttp sends
``Content-Length``, never chunked encoding, which Django under WSGI reads as an empty body)
and opens its file anew for every attempt. On a plain TCP connection a file larger than
one chunk goes from the page cache to the socket with ``sendfile()``; otherwise (a smaller
file, TLS, a trace or upload tracker that must see the bytes, an in-memory file) it is read
in 256 KiB chunks in a worker thread. A file read when it was measured
(:func:`skala_async.models.read_ahead`) is written from memory, with no thread. Filenames
are sent as raw UTF-8 (``quote_fields=False``): the default percent-encoding
is not decoded by Django or aiohttp's own server.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

from skala_async._wire import ProgressCallback, Request
from skala_async.models import Attachment, _ReadAhead

__all__ = ["CHUNK_SIZE", "SENDFILE_MIN", "SLICE", "AttachmentPayload"]

CHUNK_SIZE = 256 * 1024

#: With a progress callback, ``sendfile()`` goes in slices of this size between calls.
SLICE = 1024 * 1024

#: Files up to this size are read in one piece in a worker thread and written with the rest
#: of the body in one ``send()``; only larger ones go out with ``sendfile()``, whose set-up
#: (an ``open`` in a worker thread, the writer drained, reading paused and resumed, its own
#: ``send`` for the body after the file) costs more CPU than it saves on a small file.
SENDFILE_MIN = CHUNK_SIZE


class _LocalFailure:
    """The first failure on our own side while one request body was being written.

    A file that could not be read or changed size, or a ``progress`` callback that raised:
    the body stops before its end, so no server can have processed it. aiohttp reports it
    as a connection error ("Can not write request body"); this tells the two apart.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def record(self, error: Exception) -> None:
        if self.error is None:
            self.error = error


class AttachmentPayload(aiohttp.payload.Payload):
    """A multipart part streamed from an :class:`Attachment`, with a known size."""

    _autoclose = True

    def __init__(
        self,
        attachment: Attachment,
        *,
        progress: Callable[[int], None] | None = None,
        failure: _LocalFailure | None = None,
    ) -> None:
        super().__init__(
            attachment, content_type=attachment.content_type, filename=attachment.filename
        )
        self._attachment = attachment
        self._size = attachment.size
        self._progress = progress
        self._failure = failure if failure is not None else _LocalFailure()

    def _report(self, sent: int) -> None:
        if self._progress is not None:
            try:
                self._progress(sent)
            except Exception as exc:
                self._failure.record(exc)
                raise

    def _local(self, error: Exception) -> None:
        """Raise ``error``, a failure on our side, recorded as such."""
        self._failure.record(error)
        raise error

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an attachment is binary content, it has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        att = self._attachment
        expected = att.size or 0
        remaining = expected if content_length is None else min(expected, content_length)
        content = att.content if isinstance(att, _ReadAhead) else att.data
        if content is not None:  # in memory already: no thread needed
            view = memoryview(content)[:remaining]
            for start in range(0, len(view), CHUNK_SIZE):
                piece = view[start : start + CHUNK_SIZE]
                await writer.write(piece)
                self._report(len(piece))
            return
        loop = asyncio.get_running_loop()
        if (
            remaining > SENDFILE_MIN
            and isinstance(writer, _Coalescing)
            and writer.can_sendfile()
            and await self._send_file(loop, writer, remaining, whole=remaining == expected)
        ):
            return
        # The chunks are exactly ``size`` bytes, or an OSError: a file that became shorter
        # or longer, or vanished, since it was measured (see Attachment.iter_chunks).
        chunks = att.iter_chunks(CHUNK_SIZE)
        reader = _ThreadHeld(chunks.close)
        prefix = remaining < expected  # only part of it was asked for: no end to check
        try:
            while remaining > 0 if prefix else not chunks.done:
                try:
                    chunk = await loop.run_in_executor(None, reader.run, _next_chunk, chunks)
                except Exception as exc:
                    self._failure.record(exc)
                    raise
                if not chunk:
                    break  # the end, checked: the file is still exactly its size
                chunk = chunk[:remaining]
                remaining -= len(chunk)
                await writer.write(chunk)
                self._report(len(chunk))
        finally:
            # Closes only what it opened (a caller's file object stays open); if a cancel
            # came while a worker thread reads, that thread closes it when its read ends.
            reader.release()

    # Over 60 lines: sendfile() with its fallbacks and file-position bookkeeping, kept together.
    async def _send_file(
        self, loop: asyncio.AbstractEventLoop, writer: _Coalescing, count: int, *, whole: bool
    ) -> bool:
        """Hand the file to the kernel with ``sendfile()``: no worker thread, no copy.

        False if that is not possible for this file (no file descriptor, a file system
        without ``sendfile``); nothing was sent then, and the caller reads it in chunks.
        """
        att = self._attachment
        if att.path is not None:
            opened: list[IO[bytes]] = []
            opener = _ThreadHeld(lambda: _close_all(opened))
            try:
                f: IO[bytes] = await loop.run_in_executor(
                    None, opener.run, _open_into, att.path, opened
                )
            except OSError:
                return False  # the chunked path reports it
            except BaseException:
                opener.release()  # cancelled while the thread opens it: the thread closes it
                raise
            own, offset = True, 0
        elif att.fileobj is not None and _has_fileno(att.fileobj):
            f, own, offset = att.fileobj, False, att.offset
        else:
            return False
        # asyncio moves the descriptor's position, under a buffered file object that does
        # not know it; a caller's file is put back where it was.
        fd_position = None if own else os.lseek(f.fileno(), 0, os.SEEK_CUR)
        try:
            done = 0
            while done < count:
                piece = count - done if self._progress is None else min(SLICE, count - done)
                try:
                    sent = await writer.sendfile(f, offset + done, piece)
                except (asyncio.SendfileNotAvailableError, NotImplementedError):
                    if done:
                        raise
                    return False
                done += sent
                if sent:
                    self._report(sent)
                if sent < piece:
                    self._local(
                        OSError(
                            f"{att.filename!r} became shorter while it was being sent "
                            f"({done} of {count} bytes)"
                        )
                    )
            if whole and os.fstat(f.fileno()).st_size > offset + count:
                self._local(
                    OSError(
                        f"{att.filename!r} became longer while it was being sent "
                        f"(more than the {count} bytes it had)"
                    )
                )
            return True
        finally:
            if own:
                f.close()
            elif fd_position is not None:
                os.lseek(f.fileno(), fd_position, os.SEEK_SET)


def _has_fileno(f: IO[bytes]) -> bool:
    try:
        f.fileno()
    except (AttributeError, OSError, ValueError):  # BytesIO: io.UnsupportedOperation
        return False
    return True


def _next_chunk(chunks: Iterator[bytes]) -> bytes:
    return next(chunks, b"")


def _open_into(path: Path, opened: list[IO[bytes]]) -> IO[bytes]:
    f = path.open("rb")
    opened.append(f)
    return f


def _close_all(files: list[IO[bytes]]) -> None:
    for f in files:
        f.close()


_T = TypeVar("_T")


class _ThreadHeld:
    """A file that worker threads open or read for a coroutine that may be cancelled.

    A cancelled ``run_in_executor`` does not stop its thread, and drops what it returns:
    a file opened or being read there would be left to the garbage collector. ``release()``
    (on the loop, never blocking) closes it at once when no thread is inside :meth:`run`,
    and otherwise that thread closes it as it leaves.
    """

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close
        self._busy = threading.Lock()
        self._released = False

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            with self._busy:
                return fn(*args)
        finally:
            if self._released:
                self._close_if_idle()

    def release(self) -> None:
        self._released = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self._busy.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._busy.release()


#: Writes smaller than this are gathered into one ``send()``; file chunks go straight out.
COALESCE_BYTES = 64 * 1024


class _Coalescing:
    """A stream writer that gathers small writes (boundaries, part headers, field values)."""

    def __init__(self, writer: AbstractStreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._size = 0

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if len(chunk) >= COALESCE_BYTES:
            await self.flush()
            await self._writer.write(chunk)
            return
        self._pending.append(bytes(chunk))
        self._size += len(chunk)
        if self._size >= COALESCE_BYTES:
            await self.flush()

    def can_sendfile(self) -> bool:
        """Whether file content may bypass the writer and go out with ``sendfile()``.

        Only on a plain TCP connection written by aiohttp's own writer with nothing that
        must see the bytes: no TLS, no compression or chunked encoding, no trace or
        upload tracker counting chunks.
        """
        w = self._writer
        if type(w) is not StreamWriter or not hasattr(w, "send_headers"):
            return False
        if w.chunked or getattr(w, "_compress", None) is not None:
            return False
        if getattr(w, "_on_chunk_sent", None) is not None or getattr(w, "on_body_write", None):
            return False
        transport = w.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
        )

    async def sendfile(self, file: IO[bytes], offset: int, count: int) -> int:
        """Send ``count`` bytes of ``file`` from ``offset``; returns the bytes sent."""
        await self.flush()
        w = self._writer
        assert isinstance(w, StreamWriter)
        w.send_headers()
        transport = w.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed while sending the body")
        sent = await asyncio.get_running_loop().sendfile(
            transport, file, offset, count, fallback=False
        )
        w.output_size += sent
        if w.length is not None:
            w.length = max(0, w.length - sent)
        return sent

    async def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            await self._writer.write(data)


class _FormPayload(aiohttp.payload.Payload):
    """The whole multipart body, written with few ``send()`` calls.

    aiohttp's multipart writer makes a socket write per boundary, header and value (about a
    dozen per ticket); gathering them costs a copy of a few hundred bytes and saves most of
    the per-request CPU of a create. The size stays known, so ``Content-Length`` is sent.
    ``head`` holds the parts of the text fields ``rendered_fields`` (read by
    :class:`skala_async.testing.MockSkala`); ``writer`` writes the other parts and the
    closing boundary, with the same boundary.
    """

    _autoclose = True

    def __init__(
        self,
        head: bytes,
        writer: aiohttp.MultipartWriter,
        rendered_fields: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(writer, content_type=writer.content_type)
        self._head = head
        self.rendered_fields = rendered_fields
        self._multipart = writer
        size = writer.size
        self._size = None if size is None else len(head) + size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a multipart body with attachments has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        buffered = _Coalescing(writer)
        if self._head:
            await buffered.write(self._head)
        await self._multipart.write(buffered)  # type: ignore[arg-type]
        await buffered.flush()

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await self.write(writer)

    async def close(self) -> None:
        await self._multipart.close()


#: A field name sent as it is in its part's header (the API's are all such names).
_PLAIN_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _text_parts(boundary: bytes, fields: tuple[tuple[str, str], ...]) -> bytes:
    """The parts of ``fields``, byte for byte as aiohttp's ``FormData`` renders them
    (``text/plain; charset=utf-8``); every name is a :func:`_plain` one.

    Rendering them here skips a payload object, a header dictionary and a
    ``Content-Disposition`` builder per field, most of the body's cost in a create.
    """
    pieces: list[bytes] = []
    for name, value in fields:
        pieces += (
            b"--",
            boundary,
            b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b'Content-Disposition: form-data; name="',
            name.encode("ascii"),
            b'"\r\n\r\n',
            value.encode("utf-8"),
            b"\r\n",
        )
    return b"".join(pieces)


def _plain(name: str) -> bool:
    """Whether a field name goes into its part's header as it is (the API's all do)."""
    return bool(name) and _PLAIN_NAME.issuperset(name)


def _form(
    request: Request, progress: ProgressCallback | None, failure: _LocalFailure | None = None
) -> _FormPayload:
    # Always multipart, also without files: the endpoint documents only multipart.
    rendered = all(_plain(name) for name, _ in request.fields)
    if rendered and not request.files:
        multipart = aiohttp.MultipartWriter("form-data")
    else:
        form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        if not rendered:  # names aiohttp quotes: it renders the fields too
            for name, value in request.fields:
                form.add_field(name, value)
        total = request.body_size
        sent = 0

        def on_chunk(n: int) -> None:
            nonlocal sent
            sent += n
            if progress is not None:
                progress(sent, total)

        for att in request.files:
            form.add_field(
                "files",
                AttachmentPayload(
                    att, progress=on_chunk if progress is not None else None, failure=failure
                ),
                filename=att.filename,
                content_type=att.content_type,
            )
        payload = form()
        assert isinstance(payload, aiohttp.MultipartWriter)
        multipart = payload
    # The fields' parts go first, with the boundary of the parts that follow them.
    if not rendered:
        return _FormPayload(b"", multipart)
    head = _text_parts(multipart.boundary.encode("ascii"), request.fields)
    return _FormPayload(head, multipart, request.fields)
