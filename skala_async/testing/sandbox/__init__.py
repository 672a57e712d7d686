"""An in-process fake of the Skala Support Tickets API, built on :mod:`aiohttp.web`.

The sandbox follows the API reference: the OAuth2 token endpoint, create (multipart,
streamed, every documented limit enforced), retrieve, customers with and without an email,
the 20061 switch, background processing to ``CREATED``/``FAILED`` and signed webhooks. On
top of that it injects faults (HTTP errors with ``Retry-After``, dropped connections,
latency) and records every request it receives, so tests can assert on what went over the
wire::

    async with SkalaSandbox() as sb:
        ...  # point a client at sb.url with sb.client_id / sb.client_secret
        sb.inject("create", Fault.http(429, retry_after=1.5), times=2)
        await sb.wait_until_processed()
        assert sb.count("create", status=202) == 1

Where the documentation is silent (error codes other than 20061, the body of a 401, ...)
the sandbox answers with the values in the ``*_CODE`` constants.

The package, by concern: ``_values`` (codes, records), ``_store`` (customers, tickets,
processing), ``_faults`` (the fault plan and fault answers), ``_forms`` (reading and
validating bodies), ``_handlers`` (HTTP), ``_webhook_sender``, ``_records`` (what was
received), ``_html`` (the notebook view) and ``_server`` (:class:`SkalaSandbox`). A new
fault kind goes into ``_faults`` (a :class:`FaultKind` and a constructor on :class:`Fault`)
and is applied in ``_handlers``.
"""

from __future__ import annotations

from skala_async._limits import SUPPORT_TICKETS_NOT_ENABLED_CODE
from skala_async.testing.sandbox._faults import Fault, FaultKind
from skala_async.testing.sandbox._server import SkalaSandbox, run_sandbox
from skala_async.testing.sandbox._values import (
    AUTHENTICATION_FAILED_CODE,
    CUSTOMER_DEACTIVATED_CODE,
    CUSTOMER_NOT_FOUND_CODE,
    CUSTOMER_WITHOUT_EMAIL_CODE,
    DEFAULT_SIGNATURE_HEADER,
    METHOD_NOT_ALLOWED_CODE,
    NOT_AUTHENTICATED_CODE,
    NOT_FOUND_CODE,
    PARSE_ERROR_CODE,
    TICKET_NOT_FOUND_CODE,
    UNSUPPORTED_MEDIA_TYPE_CODE,
    VALIDATION_ERROR_CODE,
    Endpoint,
    FaultEndpoint,
    RecordedFile,
    RecordedRequest,
    SandboxTicket,
    WebhookDelivery,
)

__all__ = [
    "AUTHENTICATION_FAILED_CODE",
    "CUSTOMER_DEACTIVATED_CODE",
    "CUSTOMER_NOT_FOUND_CODE",
    "CUSTOMER_WITHOUT_EMAIL_CODE",
    "DEFAULT_SIGNATURE_HEADER",
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
    "FaultEndpoint",
    "FaultKind",
    "RecordedFile",
    "RecordedRequest",
    "SandboxTicket",
    "SkalaSandbox",
    "WebhookDelivery",
    "run_sandbox",
]
