"""Every exception ``skala_async`` raises on purpose.

::

    SkalaError
    ├── ValidationError (also ValueError)      input breaks a documented limit; nothing was sent
    ├── TransportError                          no usable HTTP response (connection, timeout, ...)
    │   └── RequestTimeoutError (also TimeoutError)
    ├── ApiError                                the server answered with an error status
    │   ├── BadRequestError                     400, 413, 422: rejected input (unknown customer)
    │   ├── AuthenticationError                 401, or 403 with a code other than 20061
    │   ├── SupportTicketsNotEnabledError       403 with code 20061
    │   ├── TicketNotFoundError                 404
    │   ├── RateLimitedError                    429 (``retry_after`` in seconds, if sent)
    │   ├── ServerError                         5xx
    │   └── UnexpectedResponseError             a status or body the API does not document
    ├── CreateOutcomeUnknownError               a create may or may not have reached Ripio
    ├── UploadAbortedError                      a create's body failed on this side; no ticket
    ├── WebhookError                            a webhook request was refused (skala_async.webhooks)
    │   ├── InvalidSignatureError               signature header missing or wrong (401)
    │   ├── InvalidWebhookError                 body is not a support ticket event (400)
    │   └── StaleWebhookError                   issueDatetime outside the tolerance window
    ├── TicketFailedError                       the ticket ended FAILED
    ├── WaitTimeoutError (also TimeoutError)    the wait's deadline passed
    └── JournalError                            a bulk journal cannot be used (nothing sent)
        ├── JournalInUseError                   another run holds the journal
        └── JournalLostError                    the journal vanished or shrank during a run

No aiohttp exception reaches a caller: the transport wraps them in :class:`TransportError`,
whose ``__cause__`` is an :class:`UnderlyingError`: the original's class name and message,
scrubbed, and nothing else (aiohttp's own exceptions carry the request's headers, the
token among them). Programming mistakes such as using a closed client raise plain
``RuntimeError`` / ``TypeError``, not ``SkalaError``.

Secrets never appear in a message: errors hold the server's answer and the request's
method and path, never headers that were sent; nothing reachable from an error (its
attributes, ``__cause__``, ``__context__``, ``__notes__``) holds one, and no error holds a
live object of the client (a :class:`WaitTimeoutError` carries the wait's
``resume_token``, a string, not its handle).
"""

from __future__ import annotations

import http
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Ticket

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "CreateOutcomeUnknownError",
    "JournalError",
    "JournalInUseError",
    "JournalLostError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServerError",
    "SkalaError",
    "SupportTicketsNotEnabledError",
    "TicketFailedError",
    "TicketNotFoundError",
    "TransportError",
    "UnderlyingError",
    "UnexpectedResponseError",
    "UploadAbortedError",
    "ValidationError",
    "WaitTimeoutError",
]


class SkalaError(Exception):
    """Base class of every error this library raises about the API or its input."""


class Problems(tuple[str, ...]):
    """The problems of a :class:`ValidationError`: a tuple of sentences that prints one a line.

    ``print(exc.problems)`` shows each problem on a line of its own; ``repr`` shows one a
    line too, as a tuple literal. It compares equal to the plain tuple of the same strings.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return "\n".join(self)

    def __repr__(self) -> str:
        if not self:
            return "Problems()"
        return "Problems((\n" + "".join(f"    {p!r},\n" for p in self) + "))"


class ValidationError(SkalaError, ValueError):
    """The input breaks documented limits. Raised before any byte is sent.

    ``str(exc)`` is a heading and every problem, one a line::

        invalid ticket (2 problems):
          - customer_id: 'nope' is not a UUID
          - description: must not be empty

    Attributes:
        problems: every problem found, each a short sentence naming the field
            (``"summary: must be at most 240 characters (got 251)"``), as :class:`Problems`
            (a tuple; ``print(exc.problems)`` prints them one a line).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        if isinstance(problems, str):  # one sentence, never its characters
            problems = (problems,)
        self.problems: Problems = Problems(problems)
        count = len(self.problems)
        head = "1 problem" if count == 1 else f"{count} problems"
        super().__init__(
            f"invalid ticket ({head}):\n" + "\n".join(f"  - {p}" for p in self.problems)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (to another process) with its problems, not its formatted message.
        return (type(self), (tuple(self.problems),), self.__dict__)


class TransportError(SkalaError):
    """No usable response: refused or dropped connection, DNS failure, timeout, TLS error.

    Attributes:
        method, path: the request that failed.
        request_sent: ``False`` only when the request surely never reached the server
            (the connection could not be opened); ``True`` when it may have.
        retryable: ``False`` for failures another attempt cannot fix (a TLS certificate
            that does not verify), so they are not retried.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        request_sent: bool,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.request_sent = request_sent
        self.retryable = retryable


class RequestTimeoutError(TransportError, TimeoutError):
    """One HTTP request took longer than its timeout."""


class ApiError(SkalaError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status, as :class:`http.HTTPStatus` when standard, else ``int``.
        code: the server's numeric error ``code`` (``20061`` ...), if the body had one.
        type: the server's error ``type`` (``"SupportTicketsNotEnabledException"`` ...).
        detail: the ``detail`` object (at least ``message`` when the body is documented).
        headers: the response headers (a read-only mapping, names case-insensitive).
        body_excerpt: the first characters of a body that was not the documented JSON.
        method, path: the request that got this answer.
        request_id: the server's id of this exchange (the ``X-Request-Id`` response header,
            or the header the client was told to read), shown in ``str(error)``: quote it
            to Ripio's support. ``None`` when the server sent none.
    """

    def __init__(
        self,
        status: int,
        *,
        code: int | None = None,
        type: str | None = None,
        detail: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body_excerpt: str | None = None,
        method: str = "",
        path: str = "",
        message: str | None = None,
        request_id: str | None = None,
    ) -> None:
        try:
            self.status: int = http.HTTPStatus(status)
        except ValueError:
            self.status = status
        self.code = code
        self.type = type
        self.detail: Mapping[str, Any] = dict(detail or {})
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.body_excerpt = body_excerpt
        self.method = method
        self.path = path
        self.request_id = request_id
        text = message or self._default_message()
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)

    @property
    def server_message(self) -> str | None:
        """``detail.message`` from the server, when present."""
        msg = self.detail.get("message")
        return msg if isinstance(msg, str) else None

    def _default_message(self) -> str:
        parts = [f"HTTP {int(self.status)}"]
        if self.method:
            parts.append(f"on {self.method} {self.path}")
        if self.code is not None or self.type:
            parts.append(f"[{self.code} {self.type or ''}]".replace(" ]", "]"))
        text = " ".join(parts)
        if self.server_message:
            text += f": {self.server_message}"
        elif self.body_excerpt is not None:
            text += f": unexpected body {self.body_excerpt!r}"
        return text


class BadRequestError(ApiError):
    """400 (or 413, 422): the server rejected the input (unknown customer, no email ...)."""


class AuthenticationError(ApiError):
    """401, or 403 with a code other than 20061, after one token refresh and one retry."""


class SupportTicketsNotEnabledError(ApiError):
    """403 with code 20061: support tickets are not enabled for this partner account."""

    def _default_message(self) -> str:
        return (
            "support tickets are not enabled for this partner account (error 20061); "
            "the feature is off by default and only Ripio can enable it: ask your Ripio "
            "contact to turn on Support Tickets for these credentials"
        )


class TicketNotFoundError(ApiError):
    """404: no such ticket for these credentials (or a deactivated customer on create)."""


class RateLimitedError(ApiError):
    """429: too many requests.

    Attributes:
        retry_after: seconds the server asked to wait (from ``Retry-After``), if any.
    """

    def __init__(self, status: int, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(status, **kw)


class ServerError(ApiError):
    """5xx: the server or a proxy in front of it failed.

    Attributes:
        retry_after: seconds the server asked to wait (from ``Retry-After``), if any.
    """

    def __init__(self, status: int, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(status, **kw)


class UnexpectedResponseError(ApiError):
    """A status or body the API does not document (a 2xx that is not the ticket JSON ...)."""


class CreateOutcomeUnknownError(SkalaError):
    """A create request may have reached Ripio, and we cannot know whether it did.

    The API has no idempotency key, so the client never re-sends such a request: doing so
    could open a duplicate ticket for the customer. Raised for every answer that is not
    the documented ``202`` nor a documented refusal (a 4xx in the API's error shape, a
    429, a 503 with ``Retry-After``): a timeout after sending, a 500/502/504, a connection
    dropped mid-request, a redirect (3xx), a 1xx or a 2xx other than 202 as the final
    answer, a 4xx that is not the API's error, a 202 whose body could not be read.
    The underlying error is ``__cause__`` (and ``cause``).
    """

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class UploadAbortedError(SkalaError):
    """A create's body failed on this side before it was complete: no ticket was made.

    An attachment changed while it was being sent (it became shorter or longer, or could
    not be read any more), or the ``progress`` callback raised. The request was cut off
    before its end, so no server can have processed it; fix the cause and send it again
    (bulk submission reports it ``failed``, and a rerun sends it). The original error is
    ``__cause__``: the callback's own exception, or the ``OSError`` of the file.

    Attributes:
        method, path: the request that was cut off.
    """

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(message)
        self.method = method
        self.path = path


class UnderlyingError(Exception):
    """What an error of a library below us said, without the objects it carried.

    Set as the ``__cause__`` of a :class:`TransportError` in place of aiohttp's exception,
    whose ``request_info`` holds the headers sent (the bearer token, the client's Basic
    credentials). Its own ``__cause__`` is the original's cause, reduced the same way. It
    is never raised by itself.

    Attributes:
        type_name: the original's class, with its module
            (``"aiohttp.client_exceptions.ClientResponseError"``).
        message: the original's message, with any secret of the request removed.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message


class TicketFailedError(SkalaError):
    """The ticket ended ``FAILED``: Ripio could not register it. Create a new one to retry.

    Attributes:
        ticket: the FAILED :class:`~skala_async.Ticket`.
    """

    def __init__(self, ticket: Ticket) -> None:
        super().__init__(f"ticket {ticket.ticket_id} failed: Ripio could not register it")
        self.ticket = ticket


class WaitTimeoutError(SkalaError, TimeoutError):
    """The wait's deadline passed before the ticket reached a final status.

    Attributes:
        ticket_id: the ticket's id.
        ticket: the last :class:`~skala_async.Ticket` seen (``None`` if no poll succeeded).
        timeout: the deadline, in seconds.
        resume_token: the wait's :meth:`~skala_async.TicketHandle.resume_token`, when the
            handle had one: ``client.resume(exc.resume_token)`` continues the wait on the
            same schedule, here or in another process.
    """

    def __init__(
        self,
        ticket_id: object,
        timeout: float,
        ticket: Ticket | None,
        *,
        resume_token: str | None = None,
    ) -> None:
        status = ticket.status.value if ticket is not None else "unknown"
        super().__init__(
            f"ticket {ticket_id} still {status} after {timeout:g} s "
            "(it may still finish: wait again, or rely on the webhook)"
        )
        self.ticket_id = ticket_id
        self.ticket = ticket
        self.timeout = timeout
        self.resume_token = resume_token


class JournalError(SkalaError):
    """A bulk run's journal cannot be used: not a journal (another file, garbage), its
    folder is read-only, the disk is full, or the journal disappeared (see the subclasses).

    Raised before the first create when the journal cannot be opened; during a run it stops
    further sends (an input is only sent once its claim is written to the journal).

    Attributes:
        path: the journal's path.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class JournalInUseError(JournalError):
    """Another run (this process or another one) holds the journal: two runs on one journal
    could send an input twice, so the second is refused at once, before anything is sent."""


class JournalLostError(JournalError):
    """The journal was deleted, replaced or truncated while a run was using it.

    What it recorded (which inputs were sent, and the tickets they created) is gone from
    its path, so a rerun would send them again. The run stops sending at once.

    Attributes:
        reason: what happened to the file (``"deleted"``, ``"replaced by another file"``,
            ``"truncated"``).
    """

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message, path=path)
        self.reason = reason
