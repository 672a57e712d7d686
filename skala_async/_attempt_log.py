"""How a failed attempt is described in the log, and whether it is tried again."""

from __future__ import annotations

from collections.abc import Callable

from . import _protocol
from ._backoff import RetryPolicy
from ._wire import Operation, Request
from .errors import ApiError, SkalaError, TransportError
from .models import Ticket

__all__ = ["exc_path"]


def _ticket_label(request: Request, result: object) -> str:
    """``ticket=<id>`` for a log line: the id asked for, or the one a create got."""
    if request.ticket_id is not None:
        return f"ticket={request.ticket_id}"
    if isinstance(result, Ticket):
        return f"ticket={result.ticket_id}"
    if request.operation is Operation.CREATE:
        return "ticket=(new)"
    return "ticket=-"


def _reason(exc: SkalaError) -> str:
    """Why an attempt failed, for a log line: the status or failure, and the request id."""
    if isinstance(exc, ApiError):
        text = f"HTTP {int(exc.status)}"
        if exc.code is not None:
            text += f" code {exc.code}"
        if exc.request_id:
            text += f" request_id={exc.request_id}"
        return text
    text = str(exc)
    prefix = f"{getattr(exc, 'method', '')} {getattr(exc, 'path', '')}: "
    return text.removeprefix(prefix)  # the line names the request already


def _no_retry(
    request: Request,
    exc: SkalaError,
    may_resend: Callable[[BaseException], bool],
    attempt: int,
    policy: RetryPolicy,
    server_delay: float | None,
) -> str | None:
    """Why a failed attempt is not tried again (``None``: it is)."""
    if not may_resend(exc):
        if isinstance(exc, TransportError) and not exc.retryable:
            return "another attempt cannot fix it"
        if isinstance(exc, ApiError) and 400 <= int(exc.status) < 500:
            return "the answer is final"
        if request.operation is Operation.CREATE:
            return "the server may have processed it, and a create is never sent twice"
        return "the answer is final"
    if attempt >= policy.attempts:
        return "1 attempt made" if attempt == 1 else f"{attempt} attempts made"
    if server_delay is not None and server_delay > policy.max_retry_after:
        return f"the server asked to wait {server_delay:g} s, over max_retry_after"
    return None


def exc_path(exc: SkalaError) -> str | None:
    """The path of the request an error is about (``None`` if it is about no request)."""
    path = getattr(exc, "path", None)
    return path if isinstance(path, str) else None


def _ambiguous(exc: SkalaError) -> bool:
    """Whether a failed create may have opened a ticket anyway: anything but a refusal."""
    return not _protocol.create_refused(exc)
