"""Checks of ``SkalaClient``'s arguments, the transport it makes from them, and its drafts."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import string
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from . import _protocol
from ._auth import ClientCredentials, StaticToken, TokenProvider
from ._protocol import TokenInfo
from ._transport import AiohttpTransport
from ._wire import Timeouts, Transport
from .models import TicketDraft, _is_one_file, read_ahead

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from ._tracing import Tracing


def _check_base_url(base_url: str, allow_insecure_http: bool) -> str:
    if not isinstance(base_url, str) or not base_url:
        raise ValueError("base_url must be a URL such as SANDBOX_URL")
    # A refused URL is shown without its user-info: it may hold a password.
    shown = _protocol.redact_url(base_url)
    try:
        parts = urllib.parse.urlsplit(base_url)
        hostname = parts.hostname
    except ValueError:  # an unbalanced "[" (IPv6) ...: its message may quote the URL
        parts = None
    if parts is None:  # raised here, not in the handler: no __context__ to quote it
        raise ValueError(f"base_url is not a valid URL: {shown!r}")
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {shown!r}")
    if parts.query or parts.fragment or "@" in parts.netloc or "@" in base_url:
        raise ValueError("base_url must not carry a query, fragment or credentials (user-info)")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(hostname):
        raise ValueError(
            f"refusing plain http:// to {hostname}: credentials and tickets would travel "
            "unencrypted. Use https://, or pass allow_insecure_http=True if you really mean it"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_proxy(proxy: object) -> None:
    if proxy is None:
        return
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string, got {type(proxy).__name__}")
    parts = urllib.parse.urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL may carry a password: name what is wrong, never the URL itself.
        raise ValueError("proxy must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("proxy has a port that is not a number") from None


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


def _is_token(name: str) -> bool:
    """Whether ``name`` is a valid HTTP header name (RFC 9110 token)."""
    return bool(name) and all(c in _TOKEN_CHARS for c in name)


def _tracing_for(tracing: Any) -> Tracing | None:
    if tracing is None or tracing is False:
        return None
    try:
        from ._tracing import Tracing
    except ImportError:
        raise RuntimeError(
            "tracing= needs OpenTelemetry: pip install 'skala-async[otel]'"
        ) from None
    return Tracing(tracing)


def make_transport(
    transport: Transport | None,
    base_url: str,
    timeouts: Timeouts,
    *,
    session: aiohttp.ClientSession | None,
    user_agent: str | None,
    proxy: str | None,
    trust_env: bool,
    ssl: ssl.SSLContext | None,
    trace_configs: Iterable[aiohttp.TraceConfig] | None,
    request_id_header: str,
) -> Transport:
    """``transport=`` as given (checked), or the aiohttp transport the other arguments make."""
    if transport is None:
        return AiohttpTransport(
            base_url,
            session=session,
            timeouts=timeouts,
            user_agent=user_agent,
            proxy=proxy,
            trust_env=trust_env,
            ssl=ssl,
            trace_configs=list(trace_configs) if trace_configs is not None else None,
            request_id_header=request_id_header,
        )
    if not isinstance(transport, Transport):
        raise TypeError(
            f"transport must implement skala_async.Transport (async send() and close()), "
            f"got {type(transport).__name__}"
        )
    given = {
        "session": session is not None,
        "user_agent": user_agent is not None,
        "proxy": proxy is not None,
        "trust_env": trust_env is not True,
        "ssl": ssl is not None,
        "trace_configs": trace_configs is not None,
        "request_id_header": request_id_header != _protocol.DEFAULT_REQUEST_ID_HEADER,
    }
    clashing = [f"{name}=" for name, yes in given.items() if yes]
    if clashing:
        raise ValueError(
            f"{', '.join(clashing)} configure the aiohttp transport the client makes; with "
            "transport= configure your transport instead"
        )
    return transport


def _check_header_name(name: object) -> None:
    if not isinstance(name, str) or not _is_token(name):
        raise ValueError(f"request_id_header must be an HTTP header name, got {name!r}")


def make_auth(
    client_id: str | None,
    client_secret: str | None,
    token: str | None,
    fetch: Callable[[str, str], Awaitable[TokenInfo]],
    margin: float,
) -> TokenProvider:
    """The token provider the credentials given to ``SkalaClient`` call for."""
    if token is not None:
        if client_id is not None or client_secret is not None:
            raise ValueError("pass either token= or client_id/client_secret, not both")
        return StaticToken(token)
    if client_id and client_secret:
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            raise TypeError("client_id and client_secret must be strings")
        creds = (client_id, client_secret)
        return ClientCredentials(lambda: fetch(*creds), margin=margin)
    raise ValueError(
        "credentials missing: pass client_id and client_secret (or token=), "
        "or use SkalaClient.from_env() with SKALA_CLIENT_ID and SKALA_CLIENT_SECRET"
    )


def _release_abandoned(transport: Transport) -> None:
    """Finalizer of a client that was never closed: release its own session quietly.

    Runs when the client is garbage collected, or at interpreter exit while it is still
    alive; nothing here awaits (see :meth:`AiohttpTransport.release_abandoned`). A
    :class:`ResourceWarning` (hidden by Python's default filters, shown by ``-X dev`` and
    test runners) still tells developers that ``close()`` was missed.
    """
    if not isinstance(transport, AiohttpTransport) or not transport.release_abandoned():
        return
    warnings.warn(
        "a SkalaClient was never closed; use 'async with SkalaClient(...)' or "
        "'await client.close()'",
        ResourceWarning,
        stacklevel=1,
    )


async def make_draft(
    customer_id: object, summary: object, description: object, files: object
) -> TicketDraft:
    """The :class:`TicketDraft` of a create call. Files given by path are measured
    (``stat``, read access) when a draft is built; here that happens in a worker thread, so
    a slow or network disk never stalls the event loop. In the same thread, files up to
    ``READ_AHEAD_MAX`` are read (see :func:`read_ahead`): their upload then needs no thread
    of its own, which costs more CPU than the read itself."""
    if not _is_one_file(files) and isinstance(files, Iterable):
        files = list(files)  # a generator is read once, here
    if _names_a_path(files):
        return await asyncio.to_thread(_draft_read_ahead, customer_id, summary, description, files)
    return _draft(customer_id, summary, description, files)


def _draft_read_ahead(
    customer_id: object, summary: object, description: object, files: object
) -> TicketDraft:
    draft = _draft(customer_id, summary, description, files)
    read = tuple(read_ahead(a) for a in draft.files)
    if all(r is a for r, a in zip(read, draft.files, strict=True)):
        return draft
    return attrs.evolve(draft, files=read)


def _names_a_path(files: object) -> bool:
    if isinstance(files, (str, os.PathLike)):
        return True
    return isinstance(files, list) and any(isinstance(f, (str, os.PathLike)) for f in files)


def _draft(customer_id: object, summary: object, description: object, files: object) -> TicketDraft:
    # The types are checked by TicketDraft itself, with the messages users know.
    return TicketDraft(customer_id, summary, description, files)  # type: ignore[arg-type]
