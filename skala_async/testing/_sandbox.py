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
the sandbox answers with the values in the ``*_CODE`` constants below.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import hmac
import html
import itertools
import json
import logging
import os
import random
import re
import secrets
import ssl
import string
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from types import EllipsisType, TracebackType
from typing import Any, Literal, NamedTuple, TypeAlias
from urllib.parse import parse_qsl, unquote

import aiohttp
import attrs
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from skala_async import _cancelsafe, _loopguard
from skala_async._limits import (
    ALLOWED_EXTENSIONS,
    CREATE_PATH,
    MAX_DESCRIPTION_CHARS,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_SUMMARY_CHARS,
    MAX_TOTAL_BYTES,
    SUPPORT_TICKETS_NOT_ENABLED_CODE,
    TOKEN_PATH,
)
from skala_async._protocol import redact_url
from skala_async.testing import _contract
from skala_async.webhooks import read_capped

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
    "RecordedFile",
    "RecordedRequest",
    "SandboxTicket",
    "SkalaSandbox",
    "WebhookDelivery",
    "run_sandbox",
]

# --------------------------------------------------------------------------------------------
# Error codes. Only 20061 is documented; the rest are the sandbox's own choices (B2B-style).

#: 400: a create request breaks a documented limit (``detail.errors`` lists every problem).
VALIDATION_ERROR_CODE = 20000
#: 400: the body could not be parsed (bad multipart, bad form encoding).
PARSE_ERROR_CODE = 20001
#: 415: create was not sent as ``multipart/form-data``.
UNSUPPORTED_MEDIA_TYPE_CODE = 20002
#: 405: a known path with the wrong method.
METHOD_NOT_ALLOWED_CODE = 20005
#: 400: the ``customerId`` of a create is not a known customer.
CUSTOMER_NOT_FOUND_CODE = 20062
#: 400: the customer has no email address on file.
CUSTOMER_WITHOUT_EMAIL_CODE = 20063
#: 404: retrieve of an unknown (or malformed) ticket id.
TICKET_NOT_FOUND_CODE = 20064
#: 404: the customer has been deactivated.
CUSTOMER_DEACTIVATED_CODE = 20065
#: 401: missing, unknown or expired bearer token on an API path.
NOT_AUTHENTICATED_CODE = 40001
#: 401: wrong client credentials at the token endpoint.
AUTHENTICATION_FAILED_CODE = 40002
#: 404: no such path (including a path without its trailing slash).
NOT_FOUND_CODE = 40004

#: The signature header name as documented (reference section 6.4).
DEFAULT_SIGNATURE_HEADER = "Http-X-Wh-Signature-256"

Endpoint: TypeAlias = Literal["token", "create", "get", "other"]
FaultEndpoint: TypeAlias = Literal["token", "create", "get"]
Outcome: TypeAlias = "str | Callable[[str, dict[str, str]], str]"
Delay: TypeAlias = "float | tuple[float, float] | None"

_FAULT_ENDPOINTS: frozenset[str] = frozenset({"token", "create", "get"})
_TICKET_PREFIX = CREATE_PATH  # "/api/v1/supportTickets/"
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_CHUNK = 2**18
_MAX_TEXT_FIELD_BYTES = 64 * 1024  # a text field is kept up to this size, then only counted
_MAX_TOKEN_BODY_BYTES = 16 * 1024
_FIRST_ISSUE_NUMBER = 1000
_SHUTDOWN_TIMEOUT = 0.5

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

_ANY: EllipsisType = ...
#: One INFO line per request received (``skala-tickets -v sandbox`` shows them).
log = logging.getLogger("skala_async.testing.sandbox")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


# --------------------------------------------------------------------------------------------
# Records and value classes


@attrs.frozen
class RecordedFile:
    """One attachment part of a create request, as the sandbox received it."""

    #: The multipart part name (the API expects ``"files"``).
    field_name: str
    #: The filename exactly as sent in ``Content-Disposition`` (not percent-decoded).
    filename: str | None
    #: The part's ``Content-Type`` header, if any.
    content_type: str | None
    #: Number of bytes in the part.
    size: int
    #: Lowercase hex SHA-256 of the part's bytes.
    sha256: str


@attrs.frozen
class RecordedRequest:
    """One HTTP request the sandbox received, faulted, rejected and dropped ones included."""

    #: Which endpoint the method and path matched.
    endpoint: Endpoint
    method: str
    path: str
    #: The status answered, or ``None`` when the connection was dropped without an answer.
    status: int | None
    #: A copy of the request headers without ``Authorization`` (see ``authorization_scheme``).
    headers: dict[str, str]
    #: ``"Basic"``, ``"Bearer"`` (or whatever scheme was sent); ``None`` if no header.
    authorization_scheme: str | None
    #: The request's ``Content-Length``, if it had one.
    content_length: int | None
    #: Whether the body came with ``Transfer-Encoding: chunked``.
    chunked: bool
    #: Text form fields (create) or the urlencoded form (token; ``client_secret`` redacted).
    fields: dict[str, str] = attrs.field(factory=dict)
    #: Attachment parts of a create request, in order.
    files: tuple[RecordedFile, ...] = ()
    #: The ticket created (create) or asked for (get).
    ticket_id: str | None = None
    #: Event-loop time when the request arrived.
    received_at: float = 0.0
    #: The fault applied to this request, e.g. ``"http:429"``, ``"drop"``, ``"delay:2"``.
    fault: str | None = None
    #: The ``X-Request-Id`` the answer carried.
    request_id: str | None = None

    def header(self, name: str) -> str | None:
        """Return a recorded header, looked up case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@attrs.frozen
class SandboxTicket:
    """A ticket held by the sandbox (more than the API shows: fields, files, timings)."""

    ticket_id: str
    customer_id: str
    summary: str
    description: str
    files: tuple[RecordedFile, ...]
    #: ``PENDING``, ``CREATED``, ``FAILED`` or whatever an outcome callable returned.
    status: str
    issue_key: str | None
    #: Event-loop time of creation.
    created_at: float
    #: Event-loop time when the ticket left ``PENDING``.
    finished_at: float | None = None


class WebhookDelivery(NamedTuple):
    """One webhook delivery attempt: ``result`` is the HTTP status or an error description."""

    ticket_id: str
    status: str
    result: int | str


def _hide_userinfo(text: str, url: str) -> str:
    """``text`` (an error about ``url``) without the user-info ``url`` may carry."""
    text = text.replace(url, redact_url(url))
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    for secret in sorted({userinfo, password, unquote(userinfo), unquote(password)}, key=len)[::-1]:
        if secret:
            text = text.replace(secret, "***")
    return text


def _format_seconds(value: float) -> str:
    return format(value, "g") if value != int(value) else str(int(value))


@attrs.frozen
class Fault:
    """A fault to inject into the next request of an endpoint (see :meth:`SkalaSandbox.inject`).

    Build one with :meth:`http`, :meth:`drop`, :meth:`drop_after_processing` or :meth:`delay`.
    """

    kind: Literal["http", "drop", "drop_after_processing", "delay"]
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
            "http",
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
        return cls("drop", after_body=after_body)

    @classmethod
    def drop_after_processing(cls) -> Fault:
        """Process the request normally (a create creates its ticket), then drop the answer."""
        return cls("drop_after_processing")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before handling the request normally."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        return cls("delay", seconds=seconds)

    @property
    def label(self) -> str:
        """A short description, as stored in :attr:`RecordedRequest.fault`."""
        if self.kind == "http":
            return f"http:{self.status}" + (" after processing" if self.processed else "")
        if self.kind == "drop":
            return "drop_after_body" if self.after_body else "drop"
        if self.kind == "delay":
            return f"delay:{_format_seconds(self.seconds)}"
        return self.kind


@attrs.define
class _Customer:
    email: str | None
    active: bool = True


@attrs.define
class _Context:
    """What one request accumulates while it is handled; frozen into a RecordedRequest."""

    endpoint: Endpoint
    received_at: float
    fields: dict[str, str] = attrs.field(factory=dict)
    files: list[RecordedFile] = attrs.field(factory=list)
    ticket_id: str | None = None
    fault: str | None = None
    #: The fault applied to this request (its ``label`` is ``fault``).
    applied_fault: Fault | None = None
    #: The raw body of a token request (None: too large).
    raw_body: bytes | None = b""
    #: Problems found while reading a create form, and a parse error if it was unreadable.
    problems: _Problems = attrs.field(factory=lambda: _Problems())
    parse_error: str | None = None


class _Dropped(Exception):
    """Raised inside the handler to close the connection without an answer."""


class _Problems:
    """Collects validation problems per field, DRF style."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        messages = self.errors.setdefault(field, [])
        if message not in messages:
            messages.append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)


def _error(
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


# aiohttp 3.14 wants typed keys for request storage; older releases have no RequestKey.
_REQUEST_ID: Any = (
    web.RequestKey("skala_request_id", str) if hasattr(web, "RequestKey") else "skala_request_id"
)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(_REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid


def _endpoint_for(method: str, path: str) -> Endpoint:
    if path == TOKEN_PATH:
        return "token" if method == "POST" else "other"
    if path == CREATE_PATH:
        return "create" if method == "POST" else "other"
    if _ticket_id_from_path(path) is not None:
        return "get" if method == "GET" else "other"
    return "other"


def _ticket_id_from_path(path: str) -> str | None:
    if not path.startswith(_TICKET_PREFIX) or not path.endswith("/"):
        return None
    segment = path[len(_TICKET_PREFIX) : -1]
    if not segment or "/" in segment:
        return None
    return segment


def _normalise_uuid(value: str) -> str | None:
    """The canonical form of a UUID written as 32 hex digits (hyphens optional), else None."""
    if not _UUID_RE.fullmatch(value):
        return None
    return str(uuid.UUID(value))


def _now_iso() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _validate_delay(value: Delay) -> Delay:
    if value is None:
        return None
    if isinstance(value, tuple):
        low, high = value
        if low < 0 or high < low:
            raise ValueError("processing_delay range must be (min, max) with 0 <= min <= max")
        return (float(low), float(high))
    if value < 0:
        raise ValueError("processing_delay must be >= 0")
    return float(value)


# --------------------------------------------------------------------------------------------
# The sandbox


class SkalaSandbox:
    """An in-process fake of the Skala Support Tickets API.

    Use it as an async context manager (or call :meth:`start` and :meth:`close`): it binds
    ``host:port`` (port 0 picks a free one) on entry and releases everything on exit. Nothing
    is bound to an event loop at construction.

    All knobs are plain attributes and may be changed while it runs:

    - ``support_tickets_enabled``: when false both ticket endpoints answer 403 / 20061;
    - ``processing_delay``: seconds from ``PENDING`` to the outcome, a ``(min, max)`` tuple
      for a uniform random delay, or ``None`` to leave tickets pending until :meth:`complete`;
    - ``outcome``: ``"CREATED"``, ``"FAILED"`` (any string is allowed) or a callable
      ``(ticket_id, fields) -> status``; the outcome in effect when a ticket is created
      decides how that ticket ends;
    - ``token_ttl``: ``expiresIn`` of newly issued tokens, in seconds;
    - ``webhook_url``, ``webhook_secret``, ``webhook_signature_header``, ``webhook_timeout``:
      where and how each outcome is POSTed, signed as reference section 6.4 describes
      (compact, ASCII-escaped JSON; ``sha256=<hex>`` of HMAC-SHA256 over the raw body).
      ``webhook_url`` may also be a list of URLs, the processes behind a load balancer:
      each delivery (each copy of it) goes to one of them, ``webhook_balance="random"``
      (default) or ``"round-robin"``;
    - webhook faults, applied to each delivery and recorded in ``webhook_deliveries``:
      ``webhook_duplicates`` (extra copies of every delivery, sent concurrently),
      ``webhook_delay`` (seconds before each copy is sent, or a ``(min, max)`` tuple),
      ``webhook_drop`` (``True`` drops every copy, a float in ``[0, 1]`` is the chance
      that a copy is dropped; a drop is recorded with result ``"dropped"``),
      ``webhook_wrong_signature`` (sign with a wrong secret), and
      ``webhook_out_of_order`` (``True``, or a window in seconds: each copy is held for a
      random time up to the window, 0.25 s for ``True``, so events, and copies of one
      event, can arrive in another order than they were sent).

    Every answer carries an ``X-Request-Id`` header (``req-`` and 16 hex digits), also kept
    in :attr:`RecordedRequest.request_id`. With ``ssl_context`` (a server-side
    :class:`ssl.SSLContext`, e.g. from ``trustme``) it serves HTTPS and :attr:`url` starts
    with ``https://``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str | None = None,
        client_secret: str | None = None,
        customer_id: str | None = None,
        customer_email: str = "customer@example.com",
        support_tickets_enabled: bool = True,
        processing_delay: Delay = 0.05,
        outcome: Outcome = "CREATED",
        token_ttl: float = 36000,
        webhook_url: str | Sequence[str] | None = None,
        webhook_balance: Literal["random", "round-robin"] = "random",
        webhook_secret: str | None = None,
        webhook_signature_header: str = DEFAULT_SIGNATURE_HEADER,
        webhook_timeout: float = 10.0,
        webhook_duplicates: int = 0,
        webhook_delay: float | tuple[float, float] = 0.0,
        webhook_drop: bool | float = False,
        webhook_wrong_signature: bool = False,
        webhook_out_of_order: bool | float = False,
        recording: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: The OAuth2 client id the token endpoint accepts.
        self.client_id = client_id if client_id is not None else "sandbox-" + secrets.token_hex(8)
        #: The matching client secret (never shown in ``repr``). Hex, so it never begins with
        #: ``-`` and can follow ``--client-secret`` on a command line as it is.
        self.client_secret = client_secret if client_secret is not None else secrets.token_hex(24)
        self.support_tickets_enabled = support_tickets_enabled
        self.processing_delay = processing_delay
        self.outcome: Outcome = outcome
        self.token_ttl = token_ttl
        self.webhook_url = webhook_url
        self.webhook_balance = webhook_balance
        self._webhook_turn = itertools.count()
        self.webhook_secret = webhook_secret
        self.webhook_signature_header = webhook_signature_header
        self.webhook_timeout = webhook_timeout
        self.webhook_duplicates = webhook_duplicates
        self.webhook_delay = webhook_delay
        self.webhook_drop = webhook_drop
        self.webhook_wrong_signature = webhook_wrong_signature
        self.webhook_out_of_order = webhook_out_of_order
        #: Whether requests are recorded (turn off for long benchmark runs).
        self.recording = recording
        #: Serve HTTPS with this server-side context (``None``: plain HTTP).
        self.ssl_context = ssl_context
        #: Every webhook delivery attempt, in order of completion.
        self.webhook_deliveries: list[WebhookDelivery] = []
        #: Every ticket created, by ticket id.
        self.tickets: dict[str, SandboxTicket] = {}
        #: What ``contract_checks`` found, in order (see ``skala_async/testing/openapi.json``).
        self.contract_violations: list[_contract.ContractViolation] = []

        self._customers: dict[str, _Customer] = {}
        self._tokens: dict[str, float] = {}
        self._faults: dict[str, deque[Fault]] = {name: deque() for name in _FAULT_ENDPOINTS}
        self._slots: list[RecordedRequest | None] = []
        self._outcomes: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending = 0
        self._issue_numbers = itertools.count(_FIRST_ISSUE_NUMBER)
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0  # wall-clock time minus event-loop time, set by start()
        self._idle: asyncio.Event | None = None
        self._webhooks_idle: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._not_serving: Callable[[], None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        #: The default customer: exists, is active and has an email.
        self.customer_id = self.add_customer(customer_email, customer_id=customer_id)

    #: Check every request and answer against the OpenAPI contract (``openapi.json``): a
    #: request answered with 2xx must conform, and so must every answer except injected
    #: faults with a body of their own. Violations go to ``contract_violations`` (and to
    #: ``skala_async.testing._contract.take_violations()``); the answer is sent regardless.
    #: Off by default (no cost); ``SKALA_SANDBOX_CONTRACT=1`` turns it on for every
    #: sandbox, as does setting it on the class. Needs ``openapi-schema-validator``.
    contract_checks: bool = os.environ.get("SKALA_SANDBOX_CONTRACT", "") not in ("", "0")

    def __repr__(self) -> str:
        return (
            f"<SkalaSandbox url={self._url!r} client_id={self.client_id!r} "
            f"tickets={len(self.tickets)} state={self._state}>"
        )

    def _repr_html_(self, recent: int = 10) -> str:
        """A notebook view: settings, the latest tickets and the latest requests received.

        Everything is HTML-escaped; the client secret and tokens are never shown.
        """
        delay = self._processing_delay
        if delay is None:
            delay_text = "none (use complete())"
        elif isinstance(delay, tuple):
            delay_text = f"{_format_seconds(delay[0])}–{_format_seconds(delay[1])} s"
        else:
            delay_text = f"{_format_seconds(delay)} s"
        statuses: dict[str, int] = {}
        for ticket in self.tickets.values():
            statuses[ticket.status] = statuses.get(ticket.status, 0) + 1
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        outcome = self.outcome
        webhooks = "off" if not self.webhook_url else "on, signed" if self.webhook_secret else "on"
        settings = [
            ("url", self._url or "(not running)"),
            ("state", self._state),
            ("client id", self.client_id),
            ("customers", str(len(self._customers))),
            ("tickets", f"{len(self.tickets)}" + (f" ({counts})" if counts else "")),
            ("support tickets enabled", "yes" if self.support_tickets_enabled else "no (20061)"),
            ("processing delay", delay_text),
            ("outcome", "a callable" if callable(outcome) else str(outcome)),
            ("webhooks", webhooks),
        ]
        parts = [
            "<div class='skala-sandbox'><table><caption>SkalaSandbox</caption>",
            *(
                f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                f"<td>{html.escape(v)}</td></tr>"
                for k, v in settings
            ),
            "</table>",
        ]

        def short(text: str, limit: int = 80) -> str:
            return text if len(text) <= limit else text[: limit - 1] + "…"

        def table(caption: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
            if not rows:
                return
            parts.append(f"<table><caption>{html.escape(caption)}</caption><tr>")
            parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
            parts.append("</tr>")
            for row in rows:
                parts.append("<tr>")
                parts.extend(f"<td>{html.escape(cell)}</td>" for cell in row)
                parts.append("</tr>")
            parts.append("</table>")

        tickets = list(self.tickets.values())[-recent:]
        table(
            f"latest tickets ({len(tickets)} of {len(self.tickets)})",
            ("ticket id", "status", "issue key", "summary", "files", "seconds to outcome"),
            [
                (
                    t.ticket_id,
                    t.status,
                    t.issue_key or "—",
                    short(t.summary),
                    str(len(t.files)),
                    "—" if t.finished_at is None else f"{t.finished_at - t.created_at:.2f}",
                )
                for t in tickets
            ],
        )
        requests = self.requests
        shown = requests[-recent:]
        table(
            f"latest requests ({len(shown)} of {len(requests)})",
            ("endpoint", "method", "path", "status", "fault", "summary", "files"),
            [
                (
                    r.endpoint,
                    r.method,
                    short(r.path),
                    "dropped" if r.status is None else str(r.status),
                    r.fault or "",
                    # token requests carry credentials: show no field of theirs
                    short(r.fields.get("summary", "")) if r.endpoint == "create" else "",
                    str(len(r.files)) if r.files else "",
                )
                for r in shown
            ],
        )
        parts.append("</div>")
        return "".join(parts)

    # -- knobs with validation ---------------------------------------------------------------

    @property
    def processing_delay(self) -> Delay:
        """Seconds until a ticket leaves ``PENDING`` (float, ``(min, max)`` or ``None``)."""
        return self._processing_delay

    @processing_delay.setter
    def processing_delay(self, value: Delay) -> None:
        self._processing_delay = _validate_delay(value)

    @property
    def webhook_duplicates(self) -> int:
        """Extra copies sent of every webhook delivery (``0``: each event once)."""
        return self._webhook_duplicates

    @webhook_duplicates.setter
    def webhook_duplicates(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"webhook_duplicates must be an integer >= 0, got {value!r}")
        self._webhook_duplicates = value

    @property
    def webhook_delay(self) -> float | tuple[float, float]:
        """Seconds before each webhook copy is sent (a ``(min, max)`` tuple: uniform)."""
        return self._webhook_delay

    @webhook_delay.setter
    def webhook_delay(self, value: float | tuple[float, float]) -> None:
        self._webhook_delay: float | tuple[float, float]
        if isinstance(value, tuple):
            low, high = value
            if not 0 <= low <= high:
                raise ValueError("webhook_delay range must be (min, max) with 0 <= min <= max")
            self._webhook_delay = (float(low), float(high))
        elif isinstance(value, (int, float)) and value >= 0:
            self._webhook_delay = float(value)
        else:
            raise ValueError(f"webhook_delay must be >= 0 or a (min, max) tuple, got {value!r}")

    @property
    def webhook_drop(self) -> bool | float:
        """``True`` drops every webhook copy; a float is the chance that one is dropped."""
        return self._webhook_drop

    @webhook_drop.setter
    def webhook_drop(self, value: bool | float) -> None:
        if not isinstance(value, (bool, int, float)) or not 0 <= value <= 1:
            raise ValueError(f"webhook_drop must be a bool or a chance in [0, 1], got {value!r}")
        self._webhook_drop = value

    @property
    def webhook_out_of_order(self) -> bool | float:
        """Hold each webhook copy a random time up to this window (``True``: 0.25 s)."""
        return self._webhook_out_of_order

    @webhook_out_of_order.setter
    def webhook_out_of_order(self, value: bool | float) -> None:
        if not isinstance(value, (bool, int, float)) or value < 0:
            raise ValueError(
                f"webhook_out_of_order must be a bool or a window >= 0 s, got {value!r}"
            )
        self._webhook_out_of_order = value

    @property
    def url(self) -> str:
        """Base URL of the running sandbox, e.g. ``"http://127.0.0.1:51234"``."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running; use 'async with SkalaSandbox()'")
        return self._url

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SkalaSandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the server and start serving (what ``async with`` does on entry)."""
        if self._state != "new":
            raise RuntimeError("a SkalaSandbox can be started only once")
        self._state = "running"
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        self._idle = asyncio.Event()
        self._webhooks_idle = asyncio.Event()
        self._update_idle()
        self._webhooks_idle.set()
        app = web.Application()
        app.on_response_prepare.append(_add_request_id)
        # [\s\S], not ".": a path with an encoded line break is ours to answer too.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        host, port = address[0], address[1]
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        self._url = f"{scheme}://{host}:{port}"
        # A sync client called on this loop would block the sandbox: it refuses at once.
        self._not_serving = _loopguard.serving(self._loop, self._url, "the SkalaSandbox there")

    async def close(self) -> None:
        """Stop serving and cancel background work; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        runner, self._runner = self._runner, None
        not_serving, self._not_serving = self._not_serving, None
        if not_serving is not None:
            not_serving()
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            tasks = list(self._webhook_tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            session, self._session = self._session, None
            if session is not None:
                await session.close()

    # -- customers, tokens, faults -----------------------------------------------------------

    def add_customer(
        self, email: str | None = "customer@example.com", *, customer_id: str | None = None
    ) -> str:
        """Create a customer and return its id; ``email=None`` makes one without an email."""
        if customer_id is None:
            cid = str(uuid.uuid4())
        else:
            normalised = _normalise_uuid(customer_id)
            if normalised is None:
                raise ValueError(f"customer_id must be a UUID: {customer_id!r}")
            cid = normalised
        self._customers[cid] = _Customer(email=email)
        return cid

    def deactivate_customer(self, customer_id: str) -> None:
        """Deactivate a customer: creates for it answer 404 afterwards."""
        self._customer(customer_id).active = False

    def _customer(self, customer_id: str) -> _Customer:
        cid = _normalise_uuid(customer_id)
        if cid is None or cid not in self._customers:
            raise KeyError(customer_id)
        return self._customers[cid]

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far (API calls with them answer 401)."""
        self._tokens.clear()

    def inject(self, endpoint: FaultEndpoint, fault: Fault, *, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests to ``endpoint`` (FIFO per endpoint).

        ``endpoint`` is ``"token"``, ``"create"`` or ``"get"``.
        """
        if endpoint not in _FAULT_ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(_FAULT_ENDPOINTS)}: {endpoint!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults[endpoint].extend([fault] * times)

    def clear_faults(self) -> None:
        """Forget every fault not yet applied."""
        for queue in self._faults.values():
            queue.clear()

    # -- what was received -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every finished request, in arrival order (a new list on each access)."""
        return [r for r in self._slots if r is not None]

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        """The recorded requests to one endpoint, in arrival order."""
        return [r for r in self._slots if r is not None and r.endpoint == endpoint]

    def count(self, endpoint: Endpoint, *, status: int | EllipsisType | None = _ANY) -> int:
        """Count requests to ``endpoint``, optionally only those answered with ``status``.

        ``status=None`` counts the dropped ones.
        """
        return sum(
            1
            for r in self._slots
            if r is not None and r.endpoint == endpoint and (status is _ANY or r.status == status)
        )

    def export_record(self) -> dict[str, Any]:
        """What the sandbox received and did, as JSON-ready data: ``requests`` (each
        :class:`RecordedRequest`, ``received_at`` as UTC ISO 8601), ``tickets`` (each
        :class:`SandboxTicket`, with ``created_at`` and ``finished_at`` the same way) and
        ``webhook_deliveries``. Like the record itself, it holds no secret: no
        ``Authorization`` header, the token request's ``client_secret`` redacted."""

        def when(loop_time: float | None) -> str | None:
            if loop_time is None:
                return None
            moment = datetime.datetime.fromtimestamp(
                loop_time + self._wall_offset, datetime.timezone.utc
            )
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        requests = []
        for r in self.requests:
            item = attrs.asdict(r)
            item["received_at"] = when(r.received_at)
            requests.append(item)
        tickets = []
        for t in self.tickets.values():
            item = attrs.asdict(t)
            item["created_at"] = when(t.created_at)
            item["finished_at"] = when(t.finished_at)
            tickets.append(item)
        return {
            "url": self._url,
            "requests": requests,
            "tickets": tickets,
            "webhook_deliveries": [d._asdict() for d in self.webhook_deliveries],
        }

    def clear_requests(self) -> None:
        """Forget the recorded requests (requests in flight are still recorded)."""
        self._slots = [None] * len(self._slots)

    # -- ticket processing -------------------------------------------------------------------

    async def wait_until_processed(self, timeout: float | None = None) -> None:
        """Wait until no ticket is ``PENDING``; raise :class:`TimeoutError` after ``timeout``."""
        if self._idle is None:
            raise RuntimeError("the sandbox is not running")
        try:
            await _cancelsafe.within(self._idle.wait(), self._deadline(timeout))
        except TimeoutError:
            raise TimeoutError(f"{self._pending} ticket(s) still PENDING") from None

    async def wait_for_webhooks(self, timeout: float | None = None) -> None:
        """Wait until no webhook delivery is in flight."""
        if self._webhooks_idle is None:
            raise RuntimeError("the sandbox is not running")
        try:
            await _cancelsafe.within(self._webhooks_idle.wait(), self._deadline(timeout))
        except TimeoutError:
            raise TimeoutError("webhook deliveries still in flight") from None

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else asyncio.get_running_loop().time() + timeout

    def complete(self, ticket_id: str, status: str = "CREATED") -> SandboxTicket:
        """Finish a ``PENDING`` ticket now with ``status`` (and send its webhook)."""
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise KeyError(ticket_id)
        if ticket.status != "PENDING":
            raise ValueError(f"ticket {ticket_id} is already {ticket.status}")
        return self._finish(ticket_id, status)

    def _update_idle(self) -> None:
        if self._idle is not None:
            if self._pending:
                self._idle.clear()
            else:
                self._idle.set()

    def _schedule(self, ticket_id: str) -> None:
        delay = self._processing_delay
        if delay is None or self._loop is None:
            return
        seconds = random.uniform(*delay) if isinstance(delay, tuple) else delay
        self._timers[ticket_id] = self._loop.call_later(seconds, self._on_due, ticket_id)

    def _on_due(self, ticket_id: str) -> None:
        self._timers.pop(ticket_id, None)
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.status != "PENDING":
            return
        self._finish(ticket_id, self._outcomes.get(ticket_id, "CREATED"))

    def _finish(self, ticket_id: str, status: str) -> SandboxTicket:
        handle = self._timers.pop(ticket_id, None)
        if handle is not None:
            handle.cancel()
        old = self.tickets[ticket_id]
        issue_key = f"SUP-{next(self._issue_numbers)}" if status == "CREATED" else None
        now = self._loop.time() if self._loop is not None else None
        ticket = attrs.evolve(old, status=status, issue_key=issue_key, finished_at=now)
        self.tickets[ticket_id] = ticket
        self._outcomes.pop(ticket_id, None)
        if old.status == "PENDING" and status != "PENDING":
            self._pending -= 1
            self._update_idle()
            self._send_webhook(ticket)
        return ticket

    # -- webhooks ----------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str | list[str] | None:
        """Where webhooks go: one URL, several (see ``webhook_balance``), or ``None``."""
        return self._webhook_url

    @webhook_url.setter
    def webhook_url(self, value: str | Sequence[str] | None) -> None:
        if value is None or isinstance(value, str):
            self._webhook_url: str | list[str] | None = value
            return
        urls = list(value)
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ValueError("webhook_url must be a URL, a non-empty list of URLs, or None")
        self._webhook_url = urls

    @property
    def webhook_balance(self) -> Literal["random", "round-robin"]:
        """How a delivery picks one of several ``webhook_url``: ``random`` or ``round-robin``."""
        return self._webhook_balance

    @webhook_balance.setter
    def webhook_balance(self, value: Literal["random", "round-robin"]) -> None:
        if value not in ("random", "round-robin"):
            raise ValueError(f"webhook_balance must be 'random' or 'round-robin', got {value!r}")
        self._webhook_balance = value

    def _pick_url(self, urls: str | list[str]) -> str:
        if isinstance(urls, str):
            return urls
        if self._webhook_balance == "round-robin":
            return urls[next(self._webhook_turn) % len(urls)]
        return random.choice(urls)

    def _send_webhook(self, ticket: SandboxTicket) -> None:
        urls = self.webhook_url
        if not urls or self._loop is None or self._state != "running":
            return
        event = {
            "eventType": f"SUPPORT_TICKET.{ticket.status}",
            "issueDatetime": _now_iso(),
            "supportTicket": {
                "ticketId": ticket.ticket_id,
                "status": ticket.status,
                "issueKey": ticket.issue_key,
            },
        }
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        headers = {"Content-Type": "application/json"}
        secret = self.webhook_secret
        if self.webhook_wrong_signature:
            secret = "wrong-" + (secret or secrets.token_hex(8))
        if secret is not None:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers[self.webhook_signature_header] = "sha256=" + digest
        drop = self._webhook_drop
        window = 0.25 if self._webhook_out_of_order is True else float(self._webhook_out_of_order)
        for _ in range(1 + self._webhook_duplicates):
            if drop is True or (drop is not False and random.random() < drop):
                self.webhook_deliveries.append(
                    WebhookDelivery(ticket.ticket_id, ticket.status, "dropped")
                )
                continue
            delay = self._webhook_delay
            seconds = random.uniform(*delay) if isinstance(delay, tuple) else delay
            if window > 0:
                seconds += random.uniform(0, window)
            url = self._pick_url(urls)
            task = self._loop.create_task(self._deliver(url, ticket, body, headers, seconds))
            self._webhook_tasks.add(task)
            assert self._webhooks_idle is not None
            self._webhooks_idle.clear()
            task.add_done_callback(self._webhook_done)

    def _webhook_done(self, task: asyncio.Task[None]) -> None:
        self._webhook_tasks.discard(task)
        if not self._webhook_tasks and self._webhooks_idle is not None:
            self._webhooks_idle.set()

    async def _deliver(
        self,
        url: str,
        ticket: SandboxTicket,
        body: bytes,
        headers: dict[str, str],
        delay: float = 0.0,
    ) -> None:
        result: int | str
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if self._session is None:  # made on the first delivery: no webhooks, no session
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)
                )
            async with self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                result = response.status
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result = _hide_userinfo(text, url)
        self.webhook_deliveries.append(WebhookDelivery(ticket.ticket_id, ticket.status, result))

    # -- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        assert self._loop is not None
        endpoint = _endpoint_for(request.method, request.path)
        ctx = _Context(endpoint=endpoint, received_at=self._loop.time())
        request[_REQUEST_ID] = "req-" + secrets.token_hex(8)
        index = len(self._slots) if self.recording else -1
        if index >= 0:
            self._slots.append(None)
        status: int | None = None
        try:
            response = await self._handle(request, ctx)
            status = response.status
            if self.contract_checks:
                self._check_contract(request, ctx, response)
            return response
        except _Dropped:
            if request.transport is not None:
                request.transport.close()
            # aiohttp fails to write this to the closed transport and ignores the reset.
            return web.Response(status=500)
        except ConnectionError:
            # The client went away while its body was being read: nothing to answer.
            return web.Response(status=500)
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            status = 500
            raise
        finally:
            if index >= 0:
                self._record(index, request, ctx, status)
            if log.isEnabledFor(logging.INFO):
                log.info("%s", _request_line(request, ctx, status))

    def _check_contract(
        self, request: web.Request, ctx: _Context, response: web.StreamResponse
    ) -> None:
        body = response.body if isinstance(response, web.Response) else None
        fault = ctx.applied_fault
        tolerated: tuple[str, ...] = ()
        if ctx.endpoint == "get" and ctx.ticket_id is not None:
            # A status outside the documented enum is one this sandbox was told to emit.
            ticket_id = _normalise_uuid(ctx.ticket_id)
            ticket = self.tickets.get(ticket_id) if ticket_id is not None else None
            tolerated = (ticket.status,) if ticket is not None else ()
        self.contract_violations += _contract.check_exchange(
            method=request.method,
            path=request.path,
            request_headers=request.headers,
            fields=ctx.fields,
            files=ctx.files,
            status=response.status,
            response_headers=response.headers,
            body=body if isinstance(body, bytes) else None,
            injected=fault is not None and fault.kind == "http",
            custom_body=fault is not None and fault.body is not None,
            tolerated_statuses=tolerated,
        )

    def _record(self, index: int, request: web.Request, ctx: _Context, status: int | None) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        auth = request.headers.get("Authorization")
        scheme = auth.split(None, 1)[0] if auth and auth.strip() else None
        encoding = request.headers.get("Transfer-Encoding", "")
        record = RecordedRequest(
            endpoint=ctx.endpoint,
            method=request.method,
            path=request.path,
            status=status,
            headers=headers,
            authorization_scheme=scheme,
            content_length=request.content_length,
            chunked="chunked" in encoding.lower(),
            fields=ctx.fields,
            files=tuple(ctx.files),
            ticket_id=ctx.ticket_id,
            received_at=ctx.received_at,
            fault=ctx.fault,
            request_id=request.get(_REQUEST_ID),
        )
        if index < len(self._slots):
            self._slots[index] = record

    async def _handle(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        endpoint = ctx.endpoint
        fault: Fault | None = None
        if endpoint != "other":
            queue = self._faults[endpoint]
            if queue:
                fault = queue.popleft()
                ctx.fault = fault.label
                ctx.applied_fault = fault
        if fault is not None:
            if fault.kind == "http" and not fault.processed:
                return self._fault_response(fault)
            if fault.kind == "drop":
                if fault.after_body:
                    await _drain(request)
                raise _Dropped
        # Read the whole body first, as a server behind a buffering proxy does: a slow
        # answer (Fault.delay) then still processes the request if the client gives up.
        if endpoint == "token":
            ctx.raw_body = await _read_limited(request, _MAX_TOKEN_BODY_BYTES)
        elif endpoint == "create" and request.content_type == "multipart/form-data":
            try:
                await self._read_form(request, ctx, ctx.problems)
            except (ValueError, RuntimeError, AssertionError, HttpProcessingError) as exc:
                ctx.parse_error = str(exc) or type(exc).__name__
                await _drain(request)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if endpoint == "token":
            response = self._token(request, ctx)
        elif endpoint == "create":
            response = self._create(request, ctx)
        elif endpoint == "get":
            response = self._get(request, ctx)
        else:
            response = self._other(request)
        if fault is not None and fault.kind == "drop_after_processing":
            raise _Dropped
        if fault is not None and fault.kind == "http":  # processed: answer otherwise
            if fault.body is not None:
                return self._fault_response(fault)
            headers = {"Content-Type": response.headers.get("Content-Type", "text/plain")}
            headers.update(fault.headers)
            return web.Response(status=fault.status or 500, body=response.body, headers=headers)
        return response

    def _fault_response(self, fault: Fault) -> web.Response:
        status = fault.status
        assert status is not None
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            value = fault.retry_after
            headers["Retry-After"] = value if isinstance(value, str) else _format_seconds(value)
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
                f"{_format_seconds(fault.retry_after)} seconds."
            )
        else:
            message = _status_phrase(status)
        response = _error(status, code, type_, message, headers=headers)
        if fault.content_type is not None:
            response.content_type = fault.content_type
        return response

    def _other(self, request: web.Request) -> web.Response:
        path = request.path
        known = path in (TOKEN_PATH, CREATE_PATH) or _ticket_id_from_path(path) is not None
        if known:
            allowed = "GET" if _ticket_id_from_path(path) is not None else "POST"
            return _error(
                405,
                METHOD_NOT_ALLOWED_CODE,
                "MethodNotAllowed",
                f'Method "{request.method}" not allowed.',
                headers={"Allow": allowed},
            )
        return _error(404, NOT_FOUND_CODE, "NotFound", "Not found.")

    # token ----------------------------------------------------------------------------------

    def _token(self, request: web.Request, ctx: _Context) -> web.Response:
        body = ctx.raw_body
        form: dict[str, str] = {}
        if body is not None:
            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                form = {}
        ctx.fields = {k: ("<redacted>" if k == "client_secret" else v) for k, v in form.items()}
        if not self._basic_auth_ok(request.headers.get("Authorization")):
            return _error(
                401,
                AUTHENTICATION_FAILED_CODE,
                "AuthenticationFailed",
                "Invalid client credentials.",
                headers={"WWW-Authenticate": 'Basic realm="api"'},
            )
        if request.content_type != "application/x-www-form-urlencoded":
            return _error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                "Content-Type must be application/x-www-form-urlencoded.",
            )
        if body is None:
            return _error(400, PARSE_ERROR_CODE, "ParseError", "Request body too large.")
        grant = form.get("grant_type")
        if grant != "client_credentials":
            message = "grant_type is required." if grant is None else "Unsupported grant_type."
            return _error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                message,
                errors={"grant_type": [message]},
            )
        assert self._loop is not None
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(30))
        ttl = self.token_ttl
        self._tokens[token] = self._loop.time() + ttl
        return web.json_response(
            {
                "accessToken": token,
                "expiresIn": int(ttl),
                "tokenType": "Bearer",
                "scope": "read write",
            }
        )

    def _basic_auth_ok(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return False
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        return id_ok and secret_ok

    # API auth + switch ----------------------------------------------------------------------

    def _check_api_access(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if not header.strip():
            message = "Authentication credentials were not provided."
        elif scheme.lower() != "bearer" or not token:
            message = "Invalid authorization header."
        else:
            assert self._loop is not None
            expiry = self._tokens.get(token)
            if expiry is not None and expiry > self._loop.time():
                message = ""
            else:
                self._tokens.pop(token, None)
                message = "Invalid or expired token."
        if message:
            return _error(
                401,
                NOT_AUTHENTICATED_CODE,
                "NotAuthenticated",
                message,
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
                code="not_authenticated",
            )
        if not self.support_tickets_enabled:
            return _error(
                403,
                SUPPORT_TICKETS_NOT_ENABLED_CODE,
                "SupportTicketsNotEnabledException",
                "Support tickets are not enabled for this partner.",
            )
        return None

    # get ------------------------------------------------------------------------------------

    def _get(self, request: web.Request, ctx: _Context) -> web.Response:
        raw_id = _ticket_id_from_path(request.path)
        ctx.ticket_id = raw_id
        denied = self._check_api_access(request)
        if denied is not None:
            return denied
        ticket_id = _normalise_uuid(raw_id) if raw_id is not None else None
        ticket = self.tickets.get(ticket_id) if ticket_id is not None else None
        if ticket is None:
            return _error(
                404,
                TICKET_NOT_FOUND_CODE,
                "SupportTicketNotFoundException",
                f"Support ticket '{raw_id}' not found.",
            )
        return web.json_response(
            {"ticketId": ticket.ticket_id, "status": ticket.status, "issueKey": ticket.issue_key}
        )

    # create ---------------------------------------------------------------------------------

    def _create(self, request: web.Request, ctx: _Context) -> web.Response:
        denied = self._check_api_access(request)
        if denied is not None:
            return denied
        if request.content_type != "multipart/form-data":
            return _error(
                415,
                UNSUPPORTED_MEDIA_TYPE_CODE,
                "UnsupportedMediaType",
                f'Unsupported media type "{request.content_type}" in request; '
                "expected multipart/form-data.",
            )
        if ctx.parse_error is not None:
            return _error(
                400,
                PARSE_ERROR_CODE,
                "ParseError",
                f"Multipart form parse error: {ctx.parse_error}",
            )
        problems = ctx.problems
        fields = ctx.fields
        self._validate_fields(fields, problems)
        if problems:
            return _error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                "Invalid input.",
                errors=problems.errors,
            )
        customer_id = _normalise_uuid(fields["customerId"])
        assert customer_id is not None
        customer = self._customers.get(customer_id)
        if customer is None:
            return _error(
                400,
                CUSTOMER_NOT_FOUND_CODE,
                "CustomerNotFoundException",
                f"Customer '{fields['customerId']}' not found.",
            )
        if not customer.active:
            return _error(
                404,
                CUSTOMER_DEACTIVATED_CODE,
                "CustomerDeactivatedException",
                f"Customer '{fields['customerId']}' is not active.",
            )
        if not customer.email:
            return _error(
                400,
                CUSTOMER_WITHOUT_EMAIL_CODE,
                "CustomerWithoutEmailException",
                f"Customer '{fields['customerId']}' has no email address on file.",
            )
        assert self._loop is not None
        ticket_id = str(uuid.uuid4())
        outcome = self.outcome
        # The outcome in effect when the ticket is created decides how it ends.
        status = outcome(ticket_id, dict(fields)) if callable(outcome) else outcome
        ctx.ticket_id = ticket_id
        self.tickets[ticket_id] = SandboxTicket(
            ticket_id=ticket_id,
            customer_id=customer_id,
            summary=fields["summary"],
            description=fields["description"],
            files=tuple(ctx.files),
            status="PENDING",
            issue_key=None,
            created_at=self._loop.time(),
        )
        self._outcomes[ticket_id] = str(status)
        self._pending += 1
        self._update_idle()
        self._schedule(ticket_id)
        return web.json_response(
            {"ticketId": ticket_id, "status": "PENDING", "issueKey": None}, status=202
        )

    async def _read_form(self, request: web.Request, ctx: _Context, problems: _Problems) -> None:
        reader = await request.multipart()
        total = 0
        files = 0
        seen: set[str] = set()
        while True:
            try:
                part = await reader.next()
            except aiohttp.multipart.BadContentDispositionHeader:
                # aiohttp warns and reads no name; under warnings-as-errors (a test suite's
                # `-W error`) the warning is raised here instead: the same refusal either way.
                raise ValueError("a part has no name in its Content-Disposition") from None
            if part is None:
                break
            if isinstance(part, aiohttp.MultipartReader):
                raise ValueError("nested multipart bodies are not supported")
            name = part.name
            filename = part.filename
            if name is None:
                raise ValueError("a part has no name in its Content-Disposition")
            if filename is None and name != "files":
                text, too_big = await _read_text(part)
                if name not in ("customerId", "summary", "description"):
                    # Another field: ignored, as Django ignores fields a form does not declare.
                    if text is not None:
                        ctx.fields[name] = text
                    continue
                if name in seen:
                    problems.add(name, "This field was sent more than once.")
                seen.add(name)
                if text is None:
                    problems.add(name, "Not valid text in the declared charset.")
                    continue
                if too_big:
                    problems.add(name, "Field too large.")
                ctx.fields[name] = text
                continue
            size, digest = await _hash_part(part)
            recorded = RecordedFile(
                field_name=name,
                filename=filename,
                content_type=part.headers.get("Content-Type"),
                size=size,
                sha256=digest,
            )
            ctx.files.append(recorded)
            if name != "files":
                problems.add(name, "Unexpected file field; attachments are parts named 'files'.")
                continue
            files += 1
            total += size
            label = filename if filename else f"#{files}"
            if not filename:
                problems.add("files", f"File {label} has no filename.")
            else:
                extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
                if extension not in ALLOWED_EXTENSIONS:
                    allowed = ", ".join(sorted(ALLOWED_EXTENSIONS))
                    problems.add(
                        "files",
                        f"File extension '{extension}' of {label!r} is not allowed. "
                        f"Allowed extensions are: {allowed}.",
                    )
            if size > MAX_FILE_BYTES:
                problems.add(
                    "files", f"File {label!r} is larger than {MAX_FILE_BYTES} bytes ({size})."
                )
        if files > MAX_FILES:
            problems.add("files", f"Ensure this field has no more than {MAX_FILES} files.")
        if total > MAX_TOTAL_BYTES:
            problems.add(
                "files", f"The files total {total} bytes, more than {MAX_TOTAL_BYTES} allowed."
            )

    def _validate_fields(self, fields: Mapping[str, str], problems: _Problems) -> None:
        customer_id = fields.get("customerId")
        if customer_id is None:
            problems.add("customerId", "This field is required.")
        elif _normalise_uuid(customer_id) is None:
            problems.add("customerId", "Must be a valid UUID.")
        summary = fields.get("summary")
        if summary is None:
            problems.add("summary", "This field is required.")
        else:
            if not summary.strip():
                problems.add("summary", "This field may not be blank.")
            if len(summary) > MAX_SUMMARY_CHARS:
                problems.add(
                    "summary",
                    f"Ensure this field has no more than {MAX_SUMMARY_CHARS} characters.",
                )
            # Every character str.splitlines() breaks on, as the client and the contract say.
            if not frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029").isdisjoint(summary):
                problems.add("summary", "The summary must be a single line.")
        description = fields.get("description")
        if description is None:
            problems.add("description", "This field is required.")
        else:
            if not description.strip():
                problems.add("description", "This field may not be blank.")
            if len(description) > MAX_DESCRIPTION_CHARS:
                problems.add(
                    "description",
                    f"Ensure this field has no more than {MAX_DESCRIPTION_CHARS} characters.",
                )


def _request_line(request: web.Request, ctx: _Context, status: int | None) -> str:
    """One line for the log: method, path, answer, and what a create or a GET carried."""
    answer = str(status) if status is not None else "dropped"
    parts = [request.method, request.path, answer, ctx.endpoint]
    if ctx.fault:
        parts.append(f"fault={ctx.fault}")
    if ctx.endpoint == "create":
        for name in ("customerId", "summary"):
            value = ctx.fields.get(name)
            if value is not None:
                shown = value if len(value) <= 60 else value[:57] + "..."
                parts.append(f"{name}={shown!r}")
        if ctx.files:
            names = ", ".join(f"{f.filename!r} {f.size} B" for f in ctx.files)
            parts.append(f"files=[{names}]")
    if ctx.ticket_id:
        parts.append(f"ticket={ctx.ticket_id}")
    request_id = request.get(_REQUEST_ID)
    if request_id:
        parts.append(str(request_id))
    return " ".join(parts)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _status_type(status: int) -> str:
    return re.sub(r"[^A-Za-z]", "", _status_phrase(status).title()) or "Error"


async def _drain(request: web.Request) -> None:
    while await request.content.readany():
        pass


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """Read the body up to ``limit`` bytes; ``None`` (after draining) if it is longer."""
    body = await read_capped(request, limit)
    if body is None:
        await _drain(request)
    return body


async def _read_text(part: aiohttp.BodyPartReader) -> tuple[str | None, bool]:
    """Read a text part, keeping at most ``_MAX_TEXT_FIELD_BYTES``; (text, too_big)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            break
        if size < _MAX_TEXT_FIELD_BYTES:
            chunks.append(chunk[: _MAX_TEXT_FIELD_BYTES - size])
        size += len(chunk)
    too_big = size > _MAX_TEXT_FIELD_BYTES
    try:
        text = b"".join(chunks).decode(part.get_charset(default="utf-8"))
    except (UnicodeDecodeError, LookupError):
        if not too_big:
            return None, False
        text = b"".join(chunks).decode("utf-8", "replace")
    return text, too_big


async def _hash_part(part: aiohttp.BodyPartReader) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        digest.update(chunk)


# --------------------------------------------------------------------------------------------
# Standalone


async def run_sandbox(host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve a sandbox on ``host:port`` until cancelled, printing its URL and credentials.

    ``options`` are passed to :class:`SkalaSandbox` (e.g. ``client_id``, ``client_secret``,
    ``processing_delay``, ``webhook_url``).
    """
    async with SkalaSandbox(host=host, port=port, **options) as sandbox:
        print(f"Skala sandbox listening on {sandbox.url}")
        print(f"  SKALA_BASE_URL={sandbox.url}")
        print(f"  SKALA_CLIENT_ID={sandbox.client_id}")
        print(f"  SKALA_CLIENT_SECRET={sandbox.client_secret}")
        print(f"  customer id (has an email): {sandbox.customer_id}")
        sys.stdout.flush()
        await asyncio.Event().wait()
