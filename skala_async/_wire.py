"""What goes over the wire and the seam that carries it: no I/O, no HTTP library.

:class:`Request` is what the client wants sent (built by ``_protocol``), :class:`RawResponse`
what came back, and :class:`Transport` the small protocol anything that sends requests
implements: the aiohttp transport the client makes by default, or
:class:`skala_async.testing.MockTransport` in unit tests.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from .models import Attachment

__all__ = [
    "Operation",
    "ProgressCallback",
    "RawResponse",
    "Request",
    "Timeouts",
    "Transport",
]

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_sent, bytes_total)`` after each chunk of file content."""


class Operation(enum.Enum):
    """The API operation a :class:`Request` performs."""

    #: ``POST /oauth2/token/``: a client-credentials token.
    TOKEN = "token"  # noqa: S105 - an operation name
    #: ``POST /api/v1/supportTickets/``: create a ticket (multipart, with files).
    CREATE = "create"
    #: ``GET /api/v1/supportTickets/{id}/``: a ticket's state.
    GET = "get"


#: Header values never shown in a repr (credentials).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _headers_repr(headers: Mapping[str, str]) -> str:
    """The headers for a repr, without the credentials (not even their names)."""
    return repr({k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS})


@attrs.frozen
class Request:
    """What to send, independent of any HTTP library.

    ``fields`` and ``files`` make a ``multipart/form-data`` body (create); ``form`` makes an
    ``application/x-www-form-urlencoded`` body (token). The client adds the bearer token to
    ``headers`` per attempt (so a refreshed token is used on a retry); a repr shows every
    header but the credentials, which it leaves out.
    """

    operation: Operation
    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=_headers_repr)
    fields: tuple[tuple[str, str], ...] = ()
    files: tuple[Attachment, ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    needs_auth: bool = True
    #: The ticket a retrieve asks for (``None`` for a token request or a create).
    ticket_id: uuid.UUID | None = None

    @property
    def body_size(self) -> int:
        """Bytes of file content in the body (used to size upload timeouts)."""
        return sum(f.size or 0 for f in self.files)

    def with_headers(self, headers: Mapping[str, str]) -> Request:
        """This request with ``headers`` added (replacing any of the same name)."""
        # Every field by name, not attrs.evolve: this runs for every attempt, and evolve
        # looks the class's fields up each time (a test checks that nothing is left out).
        return Request(
            operation=self.operation,
            method=self.method,
            path=self.path,
            headers={**self.headers, **headers},
            fields=self.fields,
            files=self.files,
            form=self.form,
            needs_auth=self.needs_auth,
            ticket_id=self.ticket_id,
        )


@attrs.frozen
class RawResponse:
    """A response as bytes: status, headers (case-insensitive mapping) and body."""

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    #: Whether the body was cut at the size the client reads at most.
    truncated: bool = False
    #: The server's id of this exchange, if it sent one (the client's
    #: ``request_id_header``).
    request_id: str | None = None


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


@runtime_checkable
class Transport(Protocol):
    """What :class:`~skala_async.SkalaClient` needs to send requests (``transport=``).

    The client does everything else: validation, the bearer token (already in
    ``request.headers``), retries, the ``Retry-After`` pause, reading the answer. A
    transport sends one request once and hands back what came back.
    """

    async def send(
        self,
        request: Request,
        *,
        time_limit: float | None,
        timeouts: Timeouts,
        progress: ProgressCallback | None,
    ) -> RawResponse:
        """Send ``request`` once and return the response, whatever its status.

        Args:
            request: what to send (``base_url`` is the transport's to add).
            time_limit: seconds this attempt may take at most (the call's deadline), or
                ``None``.
            timeouts: the client's per-request limits.
            progress: for a create, called as ``progress(bytes_sent, bytes_total)``.

        Raises:
            skala_async.TransportError: no usable response arrived (``request_sent``
                says whether the server may have seen the request). Any other exception
                propagates to the caller unchanged.
        """
        ...

    async def close(self) -> None:
        """Release what the transport holds; called by ``SkalaClient.close()``."""
        ...
