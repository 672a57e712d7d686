"""Async client for Ripio's Skala Support Tickets API.

::

    import skala_async as skala

    async with skala.SkalaClient(client_id=..., client_secret=...) as client:
        handle = await client.create_ticket(customer_id=..., summary=..., description=...)
        ticket = await handle.wait_until_created()
        print(ticket.issue_key)
"""

from __future__ import annotations

from ._backoff import PollPolicy, RetryPolicy
from ._transport import Timeouts
from ._waiting import TicketHandle
from .client import PRODUCTION_URL, SANDBOX_URL, SkalaClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    SkalaError,
    SupportTicketsNotEnabledError,
    TicketFailedError,
    TicketNotFoundError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
    WaitTimeoutError,
)
from .models import Attachment, Ticket, TicketDraft, TicketStatus


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skala-async")
    except PackageNotFoundError:  # pragma: no cover - imported from a source tree
        return "0+unknown"


__version__ = _version()

__all__ = [
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "ApiError",
    "Attachment",
    "AuthenticationError",
    "BadRequestError",
    "CreateOutcomeUnknownError",
    "PollPolicy",
    "RateLimitedError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "SkalaClient",
    "SkalaError",
    "SupportTicketsNotEnabledError",
    "Ticket",
    "TicketDraft",
    "TicketFailedError",
    "TicketHandle",
    "TicketNotFoundError",
    "TicketStatus",
    "Timeouts",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "WaitTimeoutError",
    "__version__",
]
