"""Async client for Ripio's Skala Support Tickets API.

::

    import skala_async as skala

    async with skala.SkalaClient(client_id=..., client_secret=...) as client:
        handle = await client.create_ticket(customer_id=..., summary=..., description=...)
        ticket = await handle.wait_until_created()
        print(ticket.issue_key)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backoff import PollPolicy, RetryPolicy
from ._logging import setup_from_env as _setup_logging
from ._version import __version__
from ._waiting import TicketHandle
from ._wire import Operation, ProgressCallback, RawResponse, Request, Timeouts, Transport
from .client import PRODUCTION_URL, SANDBOX_URL, SkalaClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    JournalError,
    JournalInUseError,
    JournalLostError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    SkalaError,
    SupportTicketsNotEnabledError,
    TicketFailedError,
    TicketNotFoundError,
    TransportError,
    UnderlyingError,
    UnexpectedResponseError,
    UploadAbortedError,
    ValidationError,
    WaitTimeoutError,
)
from .models import Attachment, FileLike, SupportTicketEvent, Ticket, TicketDraft, TicketStatus

_setup_logging()  # SKALA_LOG=info|debug

if TYPE_CHECKING:
    from .bulk import BulkInputs, BulkOutcome, BulkReport, BulkResult
    from .webhooks import (
        InvalidSignatureError,
        InvalidWebhookError,
        StaleWebhookError,
        WebhookError,
        WebhookReceiver,
    )

# Webhook and bulk names load with their module on first use: most processes never receive
# a webhook, and the bulk module brings sqlite3.
_LAZY = {
    "InvalidSignatureError": "webhooks",
    "InvalidWebhookError": "webhooks",
    "StaleWebhookError": "webhooks",
    "WebhookError": "webhooks",
    "WebhookReceiver": "webhooks",
    "BulkInputs": "bulk",
    "BulkOutcome": "bulk",
    "BulkReport": "bulk",
    "BulkResult": "bulk",
}


def __getattr__(name: str) -> Any:
    module = "webhooks" if name == "webhooks" else _LAZY.get(name)
    if module is not None:
        import importlib

        # Not `from . import webhooks`: that asks this very __getattr__ for "webhooks".
        loaded = importlib.import_module(f".{module}", __name__)
        return loaded if name == "webhooks" else getattr(loaded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "ApiError",
    "Attachment",
    "AuthenticationError",
    "BadRequestError",
    "BulkInputs",
    "BulkOutcome",
    "BulkReport",
    "BulkResult",
    "CreateOutcomeUnknownError",
    "FileLike",
    "InvalidSignatureError",
    "InvalidWebhookError",
    "JournalError",
    "JournalInUseError",
    "JournalLostError",
    "Operation",
    "PollPolicy",
    "ProgressCallback",
    "RateLimitedError",
    "RawResponse",
    "Request",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "SkalaClient",
    "SkalaError",
    "StaleWebhookError",
    "SupportTicketEvent",
    "SupportTicketsNotEnabledError",
    "Ticket",
    "TicketDraft",
    "TicketFailedError",
    "TicketHandle",
    "TicketNotFoundError",
    "TicketStatus",
    "Timeouts",
    "Transport",
    "TransportError",
    "UnderlyingError",
    "UnexpectedResponseError",
    "UploadAbortedError",
    "ValidationError",
    "WaitTimeoutError",
    "WebhookError",
    "WebhookReceiver",
    "__version__",
]
