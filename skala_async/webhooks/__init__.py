"""Webhooks: verify Ripio's signature, parse events, and receive them in a web app.

Ripio POSTs a signed JSON event when a ticket is ``CREATED`` or ``FAILED`` (reference
section 6). Everything needed to take those events safely is here:

* pure functions, no I/O: :func:`verify_signature` (HMAC-SHA256 over the raw body, constant
  time, several secrets during a rotation), :func:`parse_event` (a frozen
  :class:`~skala_async.SupportTicketEvent`), :func:`check_freshness` (an optional window on
  ``issueDatetime``, both directions), :func:`verify_and_parse` (all three) and
  :func:`sign_payload` (for tests and tools);
* :class:`WebhookReceiver`: reads the body with a size limit, verifies before parsing,
  answers ``401`` / ``400`` / ``413`` / ``2xx``, delivers each (ticket id, status) once to
  your callback, and never lets an exception out. Mount :meth:`WebhookReceiver.handle` in an
  aiohttp app (:func:`webhook_handler` returns it) or :meth:`WebhookReceiver.asgi` in an
  ASGI app (Starlette, FastAPI);
* :meth:`SkalaClient.webhook_handler() <skala_async.SkalaClient.webhook_handler>`: the same
  handler, which also wakes the client's waiting handles the moment an event arrives.

The pure functions live in ``skala_async.webhooks._verify``, which never imports aiohttp;
``import aiohttp.web`` happens only when an aiohttp handler runs, so ``import skala_async``
stays cheap. A webhook secret never appears in a ``repr``, a log line or an error message;
neither does a body.
"""

from ._aiohttp import AiohttpHandler, WebhookReceiver, webhook_handler
from ._aiohttp import read_capped as read_capped
from ._verify import (
    DEFAULT_DEDUPE_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    SIGNATURE_HEADERS,
    EventCallback,
    Headers,
    InvalidSignatureError,
    InvalidWebhookError,
    Secret,
    Secrets,
    StaleWebhookError,
    WebhookError,
    check_freshness,
    parse_event,
    sign_payload,
    verify_and_parse,
    verify_signature,
)

__all__ = [
    "DEFAULT_DEDUPE_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "SIGNATURE_HEADERS",
    "AiohttpHandler",
    "EventCallback",
    "Headers",
    "InvalidSignatureError",
    "InvalidWebhookError",
    "Secret",
    "Secrets",
    "StaleWebhookError",
    "WebhookError",
    "WebhookReceiver",
    "check_freshness",
    "parse_event",
    "sign_payload",
    "verify_and_parse",
    "verify_signature",
    "webhook_handler",
]

# The public classes keep the module path users see (reprs, tracebacks, pickles).
for _public in (
    InvalidSignatureError,
    InvalidWebhookError,
    StaleWebhookError,
    WebhookError,
    WebhookReceiver,
):
    _public.__module__ = __name__
del _public
