"""The ASGI 3 face of a webhook receiver (Starlette, FastAPI, any ASGI server)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ._core import _TOO_LARGE, _ReceiverCore, _Result

log = logging.getLogger("skala_async.webhooks")


class _AsgiReceiver(_ReceiverCore):
    """A receiver core that is also an ASGI application (:meth:`asgi`)."""

    # -- ASGI --------------------------------------------------------------------------------

    async def asgi(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """An ASGI 3 application: ``app.mount("/webhooks/skala", receiver.asgi)``."""
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        try:
            status, text = await self._asgi_request(scope, receive)
        except Exception:
            log.exception("unexpected error while handling a webhook; answered 500")
            status, text = self._count("error", (500, "internal error"))
        if status == 0:
            return  # the client went away
        payload = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if status == 405:
            headers.append((b"allow", b"POST"))
        if status == 413:
            headers.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except Exception as exc:  # the server could not send it: nothing more to do
            log.info("webhook answer %d not sent (%s)", status, type(exc).__name__)

    async def _asgi_request(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    ) -> _Result:
        if scope.get("method") != "POST":
            return 405, "POST only"
        headers = [
            (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
            for k, v in scope.get("headers", ())
        ]
        for name, value in headers:
            if name.lower() == "content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return self._count("malformed", (400, "bad content-length"))
                if declared > self.max_body_bytes:
                    return self._count("too_large", _TOO_LARGE)
        body = bytearray()
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return 0, ""
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return self._count("too_large", _TOO_LARGE)
            if not message.get("more_body", False):
                break
        return await self._process(bytes(body), headers)


async def _lifespan(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """Answer an ASGI server's lifespan messages (when the receiver is the whole app)."""
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
