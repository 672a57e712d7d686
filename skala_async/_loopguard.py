"""Refuse a blocking call that would wait for a server its own thread's event loop serves.

A blocking (sync) call made from a coroutine blocks the thread, and with it the event loop
running in that thread. If the server the call talks to is served by that same loop (an
async ``SkalaSandbox``, an ``aiohttp`` test server, a proxy), the server cannot answer until
the call gives up: a deadlock that ends only in a timeout minutes later. :func:`check` finds
it before anything is sent:

- servers that say so (:func:`serving`; the sandbox does), on any event loop;
- any listening TCP socket on a loopback or wildcard address that the running loop watches,
  when the loop is selector-based (the default on Linux and macOS).

Pure standard library: no aiohttp here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import stat
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator

__all__ = ["check", "serving"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

_Servers = dict[tuple[str, int], str]
#: Servers that said which loop serves them: loop -> {(host, port): what}. Held weakly
#: where the loop allows it (asyncio's do); other loops are held until their last server
#: is taken back.
_served: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Servers] = (
    weakref.WeakKeyDictionary()
)
_served_strongly: dict[asyncio.AbstractEventLoop, _Servers] = {}


def _servers_of(loop: asyncio.AbstractEventLoop) -> _Servers | None:
    found = _served_strongly.get(loop)
    if found is not None:
        return found
    try:
        return _served.get(loop)
    except TypeError:  # a loop that cannot be weakly referenced
        return None


def _is_local(host: str) -> bool:
    """A name or address that means this machine (loopback), or any of its addresses."""
    host = host.strip("[]").lower()
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def _same_host(a: str, b: str) -> bool:
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    return a == b or (_is_local(a) and _is_local(b))


def _address(url: str) -> tuple[str, int] | None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.hostname is None or port is None:
        return None
    return parts.hostname, port


def serving(loop: asyncio.AbstractEventLoop, url: str, what: str) -> Callable[[], None]:
    """Say that ``loop`` serves ``url`` (``what`` names the server in errors); returns the
    function that takes it back (call it when the server stops)."""
    address = _address(url)
    if address is None:
        raise ValueError(f"not a URL with a host: {url!r}")
    servers = _servers_of(loop)
    if servers is None:
        servers = {}
        try:
            _served[loop] = servers
        except TypeError:
            _served_strongly[loop] = servers
    servers[address] = what

    def stopped() -> None:
        servers.pop(address, None)
        if not servers and _served_strongly.get(loop) is servers:
            del _served_strongly[loop]

    return stopped


def _listening_ports(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[str, int]]:
    """The (host, port) of every listening TCP socket ``loop``'s selector watches.

    Only selector-based loops are looked into; any other loop yields nothing.
    """
    selector = getattr(loop, "_selector", None)
    get_map = getattr(selector, "get_map", None)
    if get_map is None:
        return
    try:
        keys = list(get_map().values())
    except (RuntimeError, TypeError, AttributeError):  # closed selector, odd loop
        return
    for key in keys:
        fd = getattr(key, "fd", None)
        if not isinstance(fd, int):
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            dup = os.dup(fd)  # looked at through a copy: the loop's own socket is untouched
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                sock.getpeername()
            except OSError:  # no peer: a listening socket
                pass
            else:
                continue  # a connection, accepted or made
            try:
                name = sock.getsockname()
            except OSError:
                continue
            yield str(name[0]), int(name[1])


def _blocked_server(urls: Iterable[str | None]) -> tuple[str, str] | None:
    """(destination, what serves it) if the loop running in this thread serves one of
    ``urls``; else ``None``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    addresses = [a for a in (_address(u) for u in urls if u) if a is not None]
    if not addresses:
        return None
    for (host, port), what in list((_servers_of(loop) or {}).items()):
        for dest_host, dest_port in addresses:
            if dest_port == port and _same_host(dest_host, host):
                return f"{dest_host}:{dest_port}", what
    local = [(h, p) for h, p in addresses if _is_local(h)]
    if not local:
        return None
    for host, port in _listening_ports(loop):
        for dest_host, dest_port in local:
            if dest_port == port and _is_local(host):
                return f"{dest_host}:{dest_port}", "a server on this event loop"
    return None


def check(urls: Iterable[str | None], what: str) -> None:
    """Raise :class:`RuntimeError` if blocking this thread for ``what`` (a call that talks to
    ``urls``: the API, a proxy) would also block the server at one of them."""
    found = _blocked_server(urls)
    if found is None:
        return
    destination, server = found
    raise RuntimeError(
        f"{what} would block this thread's event loop, which serves {destination} "
        f"({server}) that the call talks to: the server could not answer, and the call "
        "would end in a timeout. In a coroutine, use the async skala_async.SkalaClient "
        "(await it); or run the server on a thread of its own (skala_async.sync.Sandbox)"
    )
