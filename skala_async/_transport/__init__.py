"""The aiohttp transport: the only client-side code that imports aiohttp.

:class:`AiohttpTransport` turns a pure :class:`~skala_async.Request` into bytes on the wire
and hands back a :class:`~skala_async.RawResponse`. Every aiohttp exception is caught here
and re-raised as a :class:`~skala_async.errors.TransportError` (the original kept as
``__cause__``), with ``request_sent`` telling whether the server may have seen it.
Uploads stream from disk (:mod:`._upload`).
"""

from __future__ import annotations

import asyncio
import platform
import ssl as ssl_module
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

import aiohttp

from skala_async._protocol import (
    DEFAULT_REQUEST_ID_HEADER,
    MAX_RESPONSE_BYTES,
    form_body,
    request_id_of,
)
from skala_async._version import __version__
from skala_async._wire import Operation, ProgressCallback, RawResponse, Request, Timeouts
from skala_async.errors import (
    RequestTimeoutError,
    SkalaError,
    TransportError,
    UnderlyingError,
    UploadAbortedError,
)

from ._upload import CHUNK_SIZE, SLICE, AttachmentPayload, _form, _LocalFailure

__all__ = [
    "CHUNK_SIZE",
    "SLICE",
    "AiohttpTransport",
    "AttachmentPayload",
    "ProgressCallback",
    "Timeouts",
]

USER_AGENT = (
    f"skala-async/{__version__} aiohttp/{aiohttp.__version__} python/{platform.python_version()}"
)


class AiohttpTransport:
    """The default :class:`~skala_async.Transport`: one aiohttp session, the caller's or
    one made on first use.

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

    def release_abandoned(self) -> bool:
        """Release a session made here without awaiting anything (a finalizer's job).

        For a client that is garbage collected, or still alive at interpreter exit,
        without having been closed. aiohttp's ``__del__`` methods would otherwise report
        "Unclosed client session" and "Unclosed connector" through an event loop that may
        be closed by then. The connector closes synchronously (when its loop is already
        closed it only marks itself closed, and the sockets go with the process). Returns
        whether there was anything to release.
        """
        session = self._session
        if session is None or not self._owns_session or session.closed:
            return False
        connector = session.connector
        session.detach()  # the session counts as closed from now on
        if connector is not None:
            loop = connector._loop
            try:
                current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if loop.is_running() and loop is not current:
                # Collected in another thread while its loop runs: close it in that thread.
                try:
                    loop.call_soon_threadsafe(connector._close)
                except RuntimeError:  # the loop closed meanwhile
                    connector._close()
            else:
                connector._close()
        return True

    def _timeout(
        self, request: Request, limit: float | None, t: Timeouts | None = None
    ) -> aiohttp.ClientTimeout:
        t = t or self.timeouts
        # ``total`` bounds the whole exchange and ``connect`` the wait for a connection; a
        # create also gets ``sock_read``: after the body is sent, the answer (which covers
        # the server's processing of the upload) must start within ``upload_read``.
        if request.operation is Operation.CREATE:
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

    # Over 60 lines: one exchange, its failures translated in one place, read as a whole.
    async def send(
        self,
        request: Request,
        *,
        time_limit: float | None = None,
        timeouts: Timeouts | None = None,
        progress: ProgressCallback | None = None,
    ) -> RawResponse:
        """Send ``request`` once and return the raw response.

        Args:
            request: what to send, the bearer token and trace context in its headers.
            time_limit: seconds this attempt may take at most (a caller's deadline).
            timeouts: limits for this request instead of the transport's own.
            progress: upload progress callback for a create.

        Raises:
            TransportError: no usable response arrived.
        """
        session = self._get_session()
        headers: dict[str, str] = {"User-Agent": self._user_agent, **request.headers}
        data: object = None
        failure = _LocalFailure()
        if request.operation is Operation.CREATE:
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
