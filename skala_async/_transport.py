"""The only client-side module that imports aiohttp.

It turns a pure :class:`~skala_async._protocol.Request` into bytes on the wire and hands
back a :class:`~skala_async._protocol.RawResponse`. Every aiohttp exception is caught here
and re-raised as a :class:`~skala_async.errors.TransportError` (the original kept as
``__cause__``), with ``request_sent`` telling whether the server may have seen it.

Uploads stream: each attachment is an :class:`AttachmentPayload` that knows its size (so
aiohttp sends ``Content-Length``, never chunked encoding, which Django under WSGI reads as
an empty body) and opens its file anew for every attempt. On a plain TCP connection the
file goes from the page cache to the socket with ``sendfile()``; otherwise (TLS, a trace
or upload tracker that must see the bytes, an in-memory file) it is read in 256 KiB chunks
in a worker thread. Filenames are sent as raw UTF-8 (``quote_fields=False``): the default
percent-encoding is not decoded by Django or aiohttp's own server.
"""

from __future__ import annotations

import asyncio
import os
import platform
import ssl as ssl_module
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import attrs
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

from ._protocol import (
    DEFAULT_REQUEST_ID_HEADER,
    MAX_RESPONSE_BYTES,
    RawResponse,
    Request,
    form_body,
    request_id_of,
)
from ._version import __version__
from .errors import (
    RequestTimeoutError,
    SkalaError,
    TransportError,
    UnderlyingError,
    UploadAbortedError,
)
from .models import Attachment

__all__ = ["AttachmentPayload", "Timeouts", "Transport"]

CHUNK_SIZE = 256 * 1024

#: With a progress callback, ``sendfile()`` goes in slices of this size between calls.
SLICE = 1024 * 1024

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_sent, bytes_total)`` after each chunk of file content."""


USER_AGENT = (
    f"skala-async/{__version__} aiohttp/{aiohttp.__version__} python/{platform.python_version()}"
)


@attrs.frozen
class Timeouts:
    """Per-request time limits, in seconds.

    Attributes:
        connect: to open a connection (including waiting for a free one in the pool).
        read: a whole GET or token request, from start to the last byte of the answer.
        upload_read: after a create's body is sent, to wait for the answer; it also covers
            the server's own processing of the upload.
        upload_min_rate: bytes per second below which an upload is abandoned; an upload of
            N bytes may take ``connect + upload_read + N / upload_min_rate`` in all.
    """

    connect: float = 10.0
    read: float = 30.0
    upload_read: float = 120.0
    upload_min_rate: float = 64 * 1024

    def for_upload(self, size: int) -> float:
        """The overall bound for an upload of ``size`` bytes of files."""
        return self.connect + self.upload_read + size / self.upload_min_rate


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
        if att.data is not None:  # in memory already: no thread needed
            view = memoryview(att.data)[:remaining]
            for start in range(0, len(view), CHUNK_SIZE):
                piece = view[start : start + CHUNK_SIZE]
                await writer.write(piece)
                self._report(len(piece))
            return
        loop = asyncio.get_running_loop()
        if (
            remaining > 0
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
    """

    _autoclose = True

    def __init__(self, writer: aiohttp.MultipartWriter) -> None:
        super().__init__(writer, content_type=writer.content_type)
        self._multipart = writer
        self._size = writer.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a multipart body with attachments has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        buffered = _Coalescing(writer)
        await self._multipart.write(buffered)  # type: ignore[arg-type]
        await buffered.flush()

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await self.write(writer)

    async def close(self) -> None:
        await self._multipart.close()


def _form(
    request: Request, progress: ProgressCallback | None, failure: _LocalFailure | None = None
) -> _FormPayload:
    # Always multipart, also without files: the endpoint documents only multipart.
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
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
    multipart = form()
    assert isinstance(multipart, aiohttp.MultipartWriter)
    return _FormPayload(multipart)


class Transport:
    """Sends requests with one aiohttp session: the caller's, or one made on first use.

    A session the caller passed in is used as it is and never closed here. A session made
    here is created inside the first request (so nothing binds to an event loop before a
    loop runs) and closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        user_agent: str | None = None,
        connection_limit: int = 100,
        proxy: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        trust_env: bool = True,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
    ) -> None:
        if session is not None and (ssl is not None or trace_configs):
            raise ValueError(
                "ssl= and trace_configs= configure the session the client makes; with "
                "session= pass them to your aiohttp.ClientSession (its connector) instead"
            )
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, got {type(ssl).__name__}")
        if ssl is not None and not (
            ssl.verify_mode == ssl_module.VerifyMode.CERT_REQUIRED and ssl.check_hostname
        ):
            # ssl= is for trusting more (a private CA, the OS store), never for trusting all.
            raise ValueError(
                "ssl= must verify certificates and host names (verify_mode CERT_REQUIRED, "
                "check_hostname True)"
            )
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self._session = session
        self._owns_session = session is None
        self._user_agent = user_agent or USER_AGENT
        self._connection_limit = connection_limit
        self._ssl = ssl
        self._trust_env = trust_env
        #: The proxy for this transport's requests: ``proxy=``, else (made on the first
        #: request, for a session made here) the one ``HTTPS_PROXY``/``NO_PROXY`` choose.
        self.proxy = proxy
        self._trace_configs = list(trace_configs or ())
        self.request_id_header = request_id_header
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed; make a new one")
        if self._session is None:
            if self.proxy is None and self._trust_env:
                # Read once here, not per request: aiohttp's own trust_env looks the
                # environment up in a worker thread for every request.
                self.proxy = env_proxy_for(self.base_url)
            connector = aiohttp.TCPConnector(
                limit=self._connection_limit,
                ssl=self._ssl if self._ssl is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeouts.connect, connect=self.timeouts.connect
                ),
                trace_configs=self._trace_configs or None,
            )
        return self._session

    async def close(self) -> None:
        """Close the session if we made it; idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    def _timeout(
        self, request: Request, limit: float | None, t: Timeouts | None = None
    ) -> aiohttp.ClientTimeout:
        t = t or self.timeouts
        # ``total`` bounds the whole exchange and ``connect`` the wait for a connection; a
        # create also gets ``sock_read``: after the body is sent, the answer (which covers
        # the server's processing of the upload) must start within ``upload_read``.
        if request.kind == "create":
            total = t.for_upload(request.body_size)
            sock_read: float | None = t.upload_read
        else:
            total = t.read
            sock_read = None
        if limit is not None:
            total = min(total, limit)
            sock_read = None if sock_read is None else min(sock_read, limit)
        return aiohttp.ClientTimeout(
            total=max(total, 0.001), connect=t.connect, sock_read=sock_read
        )

    async def send(
        self,
        request: Request,
        *,
        token: str | None = None,
        time_limit: float | None = None,
        progress: ProgressCallback | None = None,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> RawResponse:
        """Send ``request`` once and return the raw response.

        Args:
            token: the bearer token, for requests that need one.
            time_limit: seconds this attempt may take at most (a caller's deadline).
            progress: upload progress callback for a create.
            timeouts: limits for this request instead of the transport's own.
            extra_headers: more headers (trace context).

        Raises:
            TransportError: no usable response arrived.
        """
        session = self._get_session()
        headers: dict[str, str] = {"User-Agent": self._user_agent, **request.headers}
        if extra_headers:
            headers.update(extra_headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data: Any = None
        failure = _LocalFailure()
        if request.kind == "create":
            data = _form(request, progress, failure)
        elif request.form:
            data = form_body(request)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        error: SkalaError
        try:
            # Redirects are never followed: aiohttp would turn a POST answered 301/302/303
            # into a GET elsewhere (the ticket may exist by then), and carry our token to
            # whatever host a hostile answer names. A 3xx is returned as it came.
            async with session.request(
                request.method,
                self.base_url + request.path,
                headers=headers,
                data=data,
                allow_redirects=False,
                raise_for_status=False,
                timeout=self._timeout(request, time_limit, timeouts or self.timeouts),
                proxy=self.proxy,
            ) as resp:
                body, truncated = await _read_capped(resp)
                return RawResponse(
                    resp.status,
                    resp.headers,
                    body,
                    truncated,
                    request_id_of(resp.headers, self.request_id_header),
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            # ValueError: aiohttp refusing a header or filename it considers unsafe. Nothing
            # was sent when the connection never opened (refused, DNS, TLS, pool wait) or
            # the proxy refused the tunnel.
            error = _wrap(
                exc,
                request,
                headers,
                self._proxy_passwords(),
                request_sent=not isinstance(exc, _NOT_SENT),
            )
        if failure.error is not None:
            error = _aborted(request, failure.error)
        # Raised here, outside the handler: aiohttp's exception (its request_info holds the
        # headers we sent, its proxy URL a password) must not ride along as __context__.
        # Python 3.10 can still report it as being handled here (inside the coroutine after
        # `async with` exited on it), so the context is also cleared as the error leaves.
        try:
            raise error
        finally:
            error.__context__ = None

    def _proxy_passwords(self) -> list[str]:
        """The proxy's password as written in its URL and decoded (none: empty)."""
        try:
            password = urllib.parse.urlsplit(self.proxy).password if self.proxy else None
        except ValueError:  # pragma: no cover - proxies are checked before use
            password = None
        if not password:
            return []
        return sorted({password, urllib.parse.unquote(password)}, key=len, reverse=True)


def env_proxy_for(base_url: str) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name for ``base_url``, unless ``NO_PROXY``
    exempts its host (the rules of :func:`urllib.request.getproxies`)."""
    parts = urllib.parse.urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    try:
        proxy_parts = urllib.parse.urlsplit(proxy)
        usable = proxy_parts.scheme in ("http", "https") and bool(proxy_parts.hostname)
        proxy_parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        # It may hold a password: name the variable, not its value.
        name = f"{parts.scheme.upper()}_PROXY"
        raise ValueError(f"{name} in the environment is not an http:// or https:// proxy URL")
    return proxy


async def _read_capped(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    limit = MAX_RESPONSE_BYTES
    # A declared length counts compressed bytes: an encoded body is read (decoded) capped.
    if resp.content_length is not None and "Content-Encoding" not in resp.headers:
        if resp.content_length > limit:
            resp.close()
            return b"", True
        return await resp.read(), False
    body = await resp.content.read(limit + 1)
    chunks = [body]
    size = len(body)
    while body and size <= limit:
        body = await resp.content.read(limit + 1 - size)
        chunks.append(body)
        size += len(body)
    data = b"".join(chunks)
    if size > limit:
        resp.close()  # do not drain a hostile body; drop the connection instead
        return data[:limit], True
    return data, False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy {exc.host}:{exc.port} ({exc.os_error.strerror or exc})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # a ClientConnectorError
        why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return (
            f"the TLS certificate of {exc.host}:{exc.port} does not verify ({why}); pass "
            "ssl= with a context that trusts its CA (the CLI: --ca-file)"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc})"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused the request: {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


#: Errors that another attempt cannot fix: the server's certificate does not verify.
_PERMANENT = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)
#: Failures that surely sent nothing to the API.
_NOT_SENT = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ClientHttpProxyError,
)


def _wrap(
    exc: BaseException,
    request: Request,
    headers: Mapping[str, str],
    proxy_secrets: Sequence[str] = (),
    *,
    request_sent: bool,
) -> TransportError:
    cls = (
        RequestTimeoutError
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
        else TransportError
    )
    secrets = (*proxy_secrets, *_secrets_of(headers))
    error = cls(
        _scrub(f"{request.method} {request.path}: {_describe(exc)}", secrets),
        method=request.method,
        path=request.path,
        request_sent=request_sent,
        retryable=not isinstance(exc, _PERMANENT)
        # a proxy that refuses the tunnel (407, 403) will refuse it again; 5xx may pass
        and not (isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status < 500),
    )
    error.__cause__ = underlying(exc, secrets)
    return error


def _aborted(request: Request, cause: Exception) -> UploadAbortedError:
    """The error for a body that failed on our side (``cause``) before it was complete."""
    error = UploadAbortedError(
        f"{request.method} {request.path}: the request was cut off before its end, on this "
        f"side, so no ticket was created ({type(cause).__name__}: {cause}); fix that and "
        "send it again",
        method=request.method,
        path=request.path,
    )
    # The caller's own exception, or the OSError of a file: nothing of the request on it.
    error.__cause__ = cause
    return error


def _secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    """What must never be shown of a request: its credentials, whole and without scheme."""
    value = headers.get("Authorization", "")
    credential = value.split(None, 1)[-1] if value.strip() else ""
    return tuple(s for s in (value, credential) if len(s) >= 4)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


#: How deep a chain of causes is summarised (aiohttp's are one or two deep).
_MAX_CHAIN = 8


def underlying(
    exc: BaseException, secrets: tuple[str, ...] = (), depth: int = 0
) -> UnderlyingError:
    """``exc`` reduced to its class name and scrubbed message, and its causes likewise.

    Nothing of the original object is kept: aiohttp's exceptions hold the request's
    headers (``request_info``), connection keys and responses. An exception group keeps
    the summaries of its members in its message; notes are kept, scrubbed.
    """
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:  # a broken __str__ of someone else's exception
        message = ""
    members = getattr(exc, "exceptions", None)  # an exception group (3.11+, or a backport)
    if isinstance(members, (tuple, list)) and depth < _MAX_CHAIN:
        parts = (underlying(e, secrets, depth + 1) for e in members if isinstance(e, BaseException))
        message = f"{message} [{'; '.join(str(p) for p in parts)}]"
    summary = UnderlyingError(name, _scrub(message, secrets))
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):  # 3.11+ notes (add_note), kept the same way on 3.10
        vars(summary)["__notes__"] = [_scrub(str(note), secrets) for note in notes]
    inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if inner is not None and depth < _MAX_CHAIN:
        summary.__cause__ = underlying(inner, secrets, depth + 1)
    return summary
