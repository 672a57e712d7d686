"""The aiohttp face of a webhook receiver, and :class:`WebhookReceiver` itself.

``aiohttp.web`` is imported only when a request is handled, so importing this module (and
``skala_async``) stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from ._asgi import _AsgiReceiver
from ._core import _TOO_LARGE
from ._verify import DEFAULT_DEDUPE_SIZE, DEFAULT_MAX_BODY_BYTES, EventCallback, Secrets

if TYPE_CHECKING:
    import datetime

    from aiohttp import web

log = logging.getLogger("skala_async.webhooks")

#: The type of an aiohttp request handler, as :func:`webhook_handler` returns.
AiohttpHandler: TypeAlias = Callable[["web.Request"], Awaitable["web.Response"]]


async def read_capped(request: web.Request, limit: int) -> bytes | None:
    """A request's body, or ``None`` as soon as it grows past ``limit`` bytes (the rest is
    left unread: a hostile sender cannot make the receiver buffer more than ``limit``)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


class WebhookReceiver(_AsgiReceiver):
    """Takes webhook requests: size limit, signature, parsing, de-duplication, your callback.

    For each request, in this order:

    1. a body over ``max_body_bytes`` is refused with ``413`` (by ``Content-Length`` before
       reading anything, or as soon as a chunked body passes the limit);
    2. a missing or wrong signature is refused with ``401`` (nothing is parsed before);
    3. a body that is not a support ticket event is refused with ``400``, and so is one
       outside the ``tolerance`` window; an event of another Ripio family (``ACCOUNT.*``,
       ``ON-RAMP.*``: no ``supportTicket`` object) is acknowledged with ``200`` and ignored,
       since one endpoint may receive them all;
    4. a repeated delivery of a (ticket id, status) already delivered is acknowledged with
       ``200`` and not passed on; a copy arriving while the first is being handled waits
       for it. With a bus shared by several processes (``client=`` or ``bus=``), the
       (ticket id, status) is also claimed on the bus first: delivered by another process
       is a ``200`` duplicate, being handled by another one is a ``503`` (delivered again
       later);
    5. ``on_event(event)`` is called (a function or a coroutine function). If it raises, the
       error is logged and the answer is ``500`` so that Ripio delivers again, and the event
       is not remembered as delivered; otherwise the answer is ``200``.

    No exception ever leaves the handler: anything unexpected is logged and answered ``500``.

    Args:
        secret: the shared secret, or several (``[new, old]``) during a rotation.
        on_event: called once for each new event; optional.
        client: a :class:`~skala_async.SkalaClient` to wake: each verified event is handed to
            its waiting handles at once, and its waits poll only as a slow fallback (see
            :meth:`SkalaClient.webhook_handler <skala_async.SkalaClient.webhook_handler>`);
            a refused request (``401``, ``400``, ``413``, an unexpected ``500``) tells it
            that webhooks are not working, and its waits poll normally at once. The app
            must run on the client's event loop. Its bus is used.
        bus: a bus (:mod:`skala_async.bus`) to publish events on without a client, such as
            ``skala_async.redis.RedisBus``: waits in other processes wake, and ``on_event``
            runs once per (ticket id, status) across every receiver sharing the bus (a
            callback that fails releases its claim; a copy arriving while another process
            runs the callback is answered ``503`` so that it is delivered again). Refused
            requests are told to the bus too: every process sharing it polls normally.
        max_body_bytes: the largest body accepted (default 64 KiB).
        tolerance: a freshness window on ``issueDatetime`` in seconds (both directions), or
            ``None`` (default) for no check. Must be positive.
        dedupe_size: how many (ticket id, status) pairs are remembered (least recently seen
            are forgotten first); ``0`` turns de-duplication off.

    Attributes:
        counts: requests by outcome: ``accepted``, ``duplicate``, ``ignored``,
            ``invalid_signature``, ``malformed``, ``stale``, ``too_large``,
            ``callback_failed``, ``busy`` (another process sharing the bus was running the
            callback for the same event), ``error``.
    """

    # -- aiohttp -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """An :mod:`aiohttp.web` handler: ``app.router.add_post("/webhooks/skala", r.handle)``."""
        from aiohttp import web

        try:
            if request.method != "POST":
                return web.Response(status=405, text="POST only", headers={"Allow": "POST"})
            length = request.content_length
            if length is not None and length > self.max_body_bytes:
                return self._too_large()
            body = await self._read(request)
            if body is None:
                return self._too_large()
            status, text = await self._process(body, request.headers)
            return web.Response(status=status, text=text)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("webhook body could not be read (%s)", type(exc).__name__)
            return web.Response(status=400, text="incomplete body")
        except Exception:
            log.exception("unexpected error while handling a webhook; answered 500")
            status, text = self._count("error", (500, "internal error"))
            return web.Response(status=status, text=text)

    async def _read(self, request: web.Request) -> bytes | None:
        return await read_capped(request, self.max_body_bytes)

    def _too_large(self) -> web.Response:
        from aiohttp import web

        self._count("too_large", _TOO_LARGE)
        response = web.Response(status=413, text=_TOO_LARGE[1])
        # Close the connection after answering: the rest of the body is not wanted.
        response.force_close()
        return response


def webhook_handler(
    secret: Secrets,
    on_event: EventCallback | None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    tolerance: float | datetime.timedelta | None = None,
    dedupe_size: int = DEFAULT_DEDUPE_SIZE,
) -> AiohttpHandler:
    """An aiohttp handler that verifies webhooks and calls ``on_event`` once per event.

    ::

        app.router.add_post("/webhooks/skala", webhook_handler(secret, on_event))

    See :class:`WebhookReceiver` for what it answers (its ``counts`` are reachable as
    ``handler.__self__.counts``). To also wake waiting tickets, use
    :meth:`SkalaClient.webhook_handler <skala_async.SkalaClient.webhook_handler>`.
    """
    receiver = WebhookReceiver(
        secret,
        on_event,
        max_body_bytes=max_body_bytes,
        tolerance=tolerance,
        dedupe_size=dedupe_size,
    )
    return receiver.handle
