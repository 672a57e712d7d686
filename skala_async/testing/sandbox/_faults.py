"""Faults: what :meth:`SkalaSandbox.inject` queues, and the answers an HTTP fault sends."""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import attrs
from aiohttp import web

from skala_async.testing.sandbox._values import (
    FAULT_ENDPOINTS,
    Endpoint,
    FaultEndpoint,
    format_seconds,
)

__all__ = [
    "Fault",
    "FaultKind",
    "FaultPlan",
    "error",
    "fault_response",
    "processed_fault_response",
]

_PROXY_502_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_FAULT_ERROR_TYPES: dict[int, tuple[int, str]] = {
    429: (42900, "Throttled"),
    500: (50000, "InternalServerError"),
    502: (50200, "BadGateway"),
    503: (50300, "ServiceUnavailable"),
    504: (50400, "GatewayTimeout"),
}


class FaultKind(str, enum.Enum):
    """The kinds of :class:`Fault` (each equal to its name as a string)."""

    HTTP = "http"
    DROP = "drop"
    DROP_AFTER_PROCESSING = "drop_after_processing"
    DELAY = "delay"


@attrs.frozen
class Fault:
    """A fault to inject into the next request of an endpoint (see :meth:`SkalaSandbox.inject`).

    Build one with :meth:`http`, :meth:`drop`, :meth:`drop_after_processing` or :meth:`delay`.
    """

    kind: FaultKind = attrs.field(converter=FaultKind)
    status: int | None = None
    retry_after: float | str | None = None
    after_body: bool = False
    seconds: float = 0.0
    body: str | bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    processed: bool = False

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        body: str | bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        processed: bool = False,
    ) -> Fault:
        """Answer with ``status`` without processing the request.

        The body has the API's error shape, except 502 which answers with a proxy's HTML
        page. ``retry_after`` (seconds, or a literal header value such as an HTTP date)
        becomes a ``Retry-After`` header; ``body``/``content_type``/``headers`` override.
        With ``processed=True`` the request is processed as usual first (a create stores
        its ticket), then answered with ``status`` and the real answer's body (or
        ``body``, if given): a server or proxy that did the work, then answered
        ``303 See Other`` or ``200`` instead of ``202``.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        return cls(
            FaultKind.HTTP,
            status=status,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            headers=dict(headers or {}),
            processed=processed,
        )

    @classmethod
    def drop(cls, *, after_body: bool = False) -> Fault:
        """Close the connection without an answer and without processing.

        By default the connection is closed as soon as the headers arrive; with
        ``after_body=True`` the whole body is read (and discarded) first.
        """
        return cls(FaultKind.DROP, after_body=after_body)

    @classmethod
    def drop_after_processing(cls) -> Fault:
        """Process the request normally (a create creates its ticket), then drop the answer."""
        return cls(FaultKind.DROP_AFTER_PROCESSING)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before handling the request normally."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        return cls(FaultKind.DELAY, seconds=seconds)

    @property
    def label(self) -> str:
        """A short description, as stored in :attr:`RecordedRequest.fault`."""
        if self.kind is FaultKind.HTTP:
            return f"http:{self.status}" + (" after processing" if self.processed else "")
        if self.kind is FaultKind.DROP:
            return "drop_after_body" if self.after_body else "drop"
        if self.kind is FaultKind.DELAY:
            return f"delay:{format_seconds(self.seconds)}"
        return str(self.kind.value)

    @property
    def answers_before_processing(self) -> bool:
        """An HTTP fault answered without looking at the request."""
        return self.kind is FaultKind.HTTP and not self.processed


class FaultPlan:
    """The faults still to apply, first in first out per endpoint."""

    def __init__(self) -> None:
        self._queues: dict[FaultEndpoint, deque[Fault]] = {
            name: deque() for name in FAULT_ENDPOINTS
        }

    def add(self, endpoint: FaultEndpoint, fault: Fault, times: int) -> None:
        if endpoint not in self._queues:
            raise ValueError(f"endpoint must be one of {sorted(FAULT_ENDPOINTS)}: {endpoint!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._queues[endpoint].extend([fault] * times)

    def take(self, endpoint: Endpoint) -> Fault | None:
        """The next fault for ``endpoint`` (removed from the plan), or None."""
        if endpoint == "other":
            return None
        queue = self._queues[endpoint]
        return queue.popleft() if queue else None

    def clear(self) -> None:
        for queue in self._queues.values():
            queue.clear()


def error(
    status: int,
    code: int,
    type_: str,
    message: str,
    /,
    *,
    headers: Mapping[str, str] | None = None,
    **detail: Any,
) -> web.Response:
    """An error response in the API's shape (reference section 7)."""
    body = {"code": code, "type": type_, "detail": {"message": message, **detail}, "status": status}
    return web.json_response(body, status=status, headers=headers)


def fault_response(fault: Fault) -> web.Response:
    """The answer of an HTTP fault: its own body, a proxy's 502 page, or the API's shape."""
    status = fault.status
    assert status is not None
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["Retry-After"] = value if isinstance(value, str) else format_seconds(value)
    if fault.body is not None:
        content_type = fault.content_type or "text/plain"
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        headers["Content-Type"] = content_type
        return web.Response(status=status, body=body, headers=headers)
    if status == 502:
        headers["Content-Type"] = fault.content_type or "text/html"
        return web.Response(status=status, body=_PROXY_502_HTML.encode(), headers=headers)
    code, type_ = _FAULT_ERROR_TYPES.get(status, (status * 100, _status_type(status)))
    if status == 429 and isinstance(fault.retry_after, (int, float)):
        message = (
            "Request was throttled. Expected available in "
            f"{format_seconds(fault.retry_after)} seconds."
        )
    else:
        message = _status_phrase(status)
    response = error(status, code, type_, message, headers=headers)
    if fault.content_type is not None:
        response.content_type = fault.content_type
    return response


def processed_fault_response(fault: Fault, response: web.Response) -> web.Response:
    """The answer of ``Fault.http(..., processed=True)`` once the request was processed."""
    if fault.body is not None:
        return fault_response(fault)
    headers = {"Content-Type": response.headers.get("Content-Type", "text/plain")}
    headers.update(fault.headers)
    return web.Response(status=fault.status or 500, body=response.body, headers=headers)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _status_type(status: int) -> str:
    return re.sub(r"[^A-Za-z]", "", _status_phrase(status).title()) or "Error"
