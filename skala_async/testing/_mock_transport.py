"""``MockTransport``: answer a client's requests with a function, no server, no sockets."""

from __future__ import annotations

import asyncio
import inspect
import json as json_module
from collections.abc import Awaitable, Callable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from skala_async import _cancelsafe
from skala_async._wire import ProgressCallback, RawResponse, Request, Timeouts
from skala_async.errors import RequestTimeoutError

__all__ = ["Handler", "MockTransport"]

Handler = Callable[[Request], "RawResponse | Awaitable[RawResponse]"]
"""Takes the :class:`~skala_async.Request` the client sends, returns the answer."""


class MockTransport:
    """A :class:`~skala_async.Transport` whose answers come from ``handler``.

    Give it to a client as ``SkalaClient(token="t", transport=MockTransport(handler))``.
    ``handler`` (a function or a coroutine function) gets each
    :class:`~skala_async.Request` as the client sends it (the bearer token in its
    ``headers``; ``request.operation`` and ``request.ticket_id`` say what it asks) and
    returns a :class:`~skala_async.RawResponse` (:meth:`json` makes one). An exception it
    raises reaches the client as a failed attempt would: raise
    :class:`~skala_async.TransportError` to play a network failure (retried by the
    client's rules), anything else to fail the call. An async handler that outlasts the
    call's ``timeout=`` ends in :class:`~skala_async.RequestTimeoutError`, as a silent
    server would. Every request is kept in :attr:`requests`, in order.

    Nothing is encoded: it shows what the client asks, not the bytes on the wire; test
    those against :class:`~skala_async.testing.SkalaSandbox`.
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._handler = handler
        #: The requests sent through this transport, in order.
        self.requests: list[Request] = []
        #: Whether :meth:`close` was called (by the client's ``close()``).
        self.closed = False

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<MockTransport requests={len(self.requests)}{state}>"

    async def send(
        self,
        request: Request,
        *,
        time_limit: float | None = None,
        timeouts: Timeouts | None = None,
        progress: ProgressCallback | None = None,
    ) -> RawResponse:
        """Record ``request`` and return what the handler answers for it."""
        if self.closed:
            raise RuntimeError("this MockTransport is closed")
        self.requests.append(request)
        if progress is not None and request.files:
            total = request.body_size
            progress(total, total)  # the whole body "sent" at once
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await self._within(request, answer, time_limit)
        if not isinstance(answer, RawResponse):
            raise TypeError(
                f"the MockTransport handler must return a RawResponse, got {type(answer).__name__}"
            )
        return answer

    @staticmethod
    async def _within(
        request: Request, answer: Awaitable[RawResponse], time_limit: float | None
    ) -> RawResponse:
        """An async handler's answer, bounded by the attempt's ``time_limit`` as on the wire."""
        if time_limit is None:
            return await answer
        deadline = asyncio.get_running_loop().time() + time_limit
        try:
            return await _cancelsafe.within(answer, deadline)
        except TimeoutError:
            raise RequestTimeoutError(
                f"{request.method} {request.path}: no answer within {time_limit:.3g} s",
                method=request.method,
                path=request.path,
                request_sent=True,
            ) from None

    async def close(self) -> None:
        """Mark the transport closed; a request after this raises ``RuntimeError``."""
        self.closed = True

    @staticmethod
    def json(
        status: int, data: object = None, headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        """A response with ``data`` as its JSON body (``None``: an empty body).

        ``MockTransport.json(202, {"ticketId": tid, "status": "PENDING", "issueKey": None})``
        """
        body = b"" if data is None else json_module.dumps(data).encode()
        hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        return RawResponse(status, CIMultiDictProxy(hdrs), body)
