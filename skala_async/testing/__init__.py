"""Test helpers for code that uses ``skala_async``.

:class:`SkalaSandbox` is an in-process fake of the Skala Support Tickets API (aiohttp.web)
with fault injection and a record of every request it received. :func:`run_sandbox` serves
one on its own. :func:`sandbox_client` points a client at a sandbox with test-speed timings
(:data:`FAST_POLL`, :data:`FAST_RETRY`). Nothing here needs pytest.
"""

from __future__ import annotations

from skala_async.testing._helpers import FAST_POLL, FAST_RETRY, sandbox_client
from skala_async.testing._mock_transport import MockTransport
from skala_async.testing.mock import MockSkala, mock_skala
from skala_async.testing.sandbox import (
    AUTHENTICATION_FAILED_CODE,
    CUSTOMER_DEACTIVATED_CODE,
    CUSTOMER_NOT_FOUND_CODE,
    CUSTOMER_WITHOUT_EMAIL_CODE,
    DEFAULT_SIGNATURE_HEADER,
    METHOD_NOT_ALLOWED_CODE,
    NOT_AUTHENTICATED_CODE,
    NOT_FOUND_CODE,
    PARSE_ERROR_CODE,
    SUPPORT_TICKETS_NOT_ENABLED_CODE,
    TICKET_NOT_FOUND_CODE,
    UNSUPPORTED_MEDIA_TYPE_CODE,
    VALIDATION_ERROR_CODE,
    Endpoint,
    Fault,
    RecordedFile,
    RecordedRequest,
    SandboxTicket,
    SkalaSandbox,
    WebhookDelivery,
    run_sandbox,
)

__all__ = [
    "AUTHENTICATION_FAILED_CODE",
    "CUSTOMER_DEACTIVATED_CODE",
    "CUSTOMER_NOT_FOUND_CODE",
    "CUSTOMER_WITHOUT_EMAIL_CODE",
    "DEFAULT_SIGNATURE_HEADER",
    "FAST_POLL",
    "FAST_RETRY",
    "METHOD_NOT_ALLOWED_CODE",
    "NOT_AUTHENTICATED_CODE",
    "NOT_FOUND_CODE",
    "PARSE_ERROR_CODE",
    "SUPPORT_TICKETS_NOT_ENABLED_CODE",
    "TICKET_NOT_FOUND_CODE",
    "UNSUPPORTED_MEDIA_TYPE_CODE",
    "VALIDATION_ERROR_CODE",
    "Endpoint",
    "Fault",
    "MockSkala",
    "MockTransport",
    "RecordedFile",
    "RecordedRequest",
    "SandboxTicket",
    "SkalaSandbox",
    "WebhookDelivery",
    "mock_skala",
    "run_sandbox",
    "sandbox_client",
]
