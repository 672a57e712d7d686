""":class:`SkalaSandbox`: the pieces of the sandbox put together behind one object.

The state lives in a :class:`~._store.TicketStore`, the faults in a :class:`~._faults.FaultPlan`,
what was received in a :class:`~._records.Recorder`, outgoing webhooks in a
:class:`~._webhook_sender.WebhookSender`; :class:`~._handlers.Handlers` answers HTTP from them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from types import EllipsisType, TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

from aiohttp import web

from skala_async import _loopguard
from skala_async.testing import _contract
from skala_async.testing.sandbox import _html, _records
from skala_async.testing.sandbox._faults import Fault, FaultPlan
from skala_async.testing.sandbox._handlers import Handlers, add_request_id
from skala_async.testing.sandbox._records import ANY, Recorder
from skala_async.testing.sandbox._store import TicketStore
from skala_async.testing.sandbox._values import (
    DEFAULT_SIGNATURE_HEADER,
    Delay,
    Endpoint,
    FaultEndpoint,
    Outcome,
    RecordedRequest,
    SandboxTicket,
    WebhookDelivery,
)
from skala_async.testing.sandbox._webhook_sender import WebhookSender

__all__ = ["SkalaSandbox", "run_sandbox"]

_SHUTDOWN_TIMEOUT = 0.5
_Get = TypeVar("_Get")
_Set = TypeVar("_Set")


class _Knob(Generic[_Get, _Set]):
    """A sandbox attribute kept (and validated) by one of its pieces."""

    def __init__(self, piece: str, name: str, doc: str) -> None:
        self._piece = piece
        self._name = name
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Knob[_Get, _Set]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any]) -> _Get: ...
    def __get__(self, obj: object | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self._piece), self._name)

    def __set__(self, obj: object, value: _Set) -> None:
        setattr(getattr(obj, self._piece), self._name, value)


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

    processing_delay = _Knob[Delay, Delay](
        "_store", "processing_delay", "Seconds until a ticket leaves ``PENDING``."
    )
    outcome = _Knob[Outcome, Outcome]("_store", "outcome", "How new tickets end.")
    webhook_url = _Knob["str | list[str] | None", "str | Sequence[str] | None"](
        "_webhooks", "url", "Where webhooks go: one URL, several, or ``None``."
    )
    webhook_balance = _Knob[Literal["random", "round-robin"], Literal["random", "round-robin"]](
        "_webhooks", "balance", "How a delivery picks one of several ``webhook_url``."
    )
    webhook_secret = _Knob["str | None", "str | None"](
        "_webhooks", "secret", "The secret webhooks are signed with (``None``: unsigned)."
    )
    webhook_signature_header = _Knob[str, str](
        "_webhooks", "signature_header", "The header the signature is sent in."
    )
    webhook_timeout = _Knob[float, float]("_webhooks", "timeout", "Seconds per delivery.")
    webhook_duplicates = _Knob[int, int](
        "_webhooks", "duplicates", "Extra copies sent of every webhook delivery."
    )
    webhook_delay = _Knob["float | tuple[float, float]", "float | tuple[float, float]"](
        "_webhooks", "delay", "Seconds before each webhook copy is sent."
    )
    webhook_drop = _Knob["bool | float", "bool | float"](
        "_webhooks", "drop", "``True`` drops every webhook copy; a float is the chance."
    )
    webhook_wrong_signature = _Knob[bool, bool](
        "_webhooks", "wrong_signature", "Sign webhooks with a wrong secret."
    )
    webhook_out_of_order = _Knob["bool | float", "bool | float"](
        "_webhooks", "out_of_order", "Hold each webhook copy a random time up to this window."
    )

    #: Check every request and answer against the OpenAPI contract (``openapi.json``): a
    #: request answered with 2xx must conform, and so must every answer except injected
    #: faults with a body of their own. Violations go to ``contract_violations`` (and to
    #: ``skala_async.testing._contract.take_violations()``); the answer is sent regardless.
    #: Off by default (no cost); ``SKALA_SANDBOX_CONTRACT=1`` turns it on for every
    #: sandbox, as does setting it on the class. Needs ``openapi-schema-validator``.
    contract_checks: bool = os.environ.get("SKALA_SANDBOX_CONTRACT", "") not in ("", "0")

    # Over 60 lines: one or two lines per documented constructor option.
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
        self.token_ttl = token_ttl
        #: Whether requests are recorded (turn off for long benchmark runs).
        self.recording = recording
        #: Serve HTTPS with this server-side context (``None``: plain HTTP).
        self.ssl_context = ssl_context
        #: What ``contract_checks`` found, in order (see ``skala_async/testing/openapi.json``).
        self.contract_violations: list[_contract.ContractViolation] = []
        self._webhooks = WebhookSender()
        self._store = TicketStore(processing_delay, outcome, self._webhooks.send)
        self._faults = FaultPlan()
        self._recorder = Recorder()
        self._tokens: dict[str, float] = {}  # bearer token -> expiry (event-loop time)
        self.webhook_url = webhook_url
        self.webhook_balance = webhook_balance
        self.webhook_secret = webhook_secret
        self.webhook_signature_header = webhook_signature_header
        self.webhook_timeout = webhook_timeout
        self.webhook_duplicates = webhook_duplicates
        self.webhook_delay = webhook_delay
        self.webhook_drop = webhook_drop
        self.webhook_wrong_signature = webhook_wrong_signature
        self.webhook_out_of_order = webhook_out_of_order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0  # wall-clock time minus event-loop time, set by start()
        self._runner: web.AppRunner | None = None
        self._not_serving: Callable[[], None] | None = None
        self._url: str | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        #: The default customer: exists, is active and has an email.
        self.customer_id = self.add_customer(customer_email, customer_id=customer_id)

    def __repr__(self) -> str:
        return (
            f"<SkalaSandbox url={self._url!r} client_id={self.client_id!r} "
            f"tickets={len(self.tickets)} state={self._state}>"
        )

    def _repr_html_(self, recent: int = 10) -> str:
        """A notebook view: settings, the latest tickets and the latest requests received.

        Everything is HTML-escaped; the client secret and tokens are never shown.
        """
        outcome = self.outcome
        webhooks = "off" if not self.webhook_url else "on, signed" if self.webhook_secret else "on"
        settings = [
            ("url", self._url or "(not running)"),
            ("state", self._state),
            ("client id", self.client_id),
            ("customers", str(len(self._store.customers))),
            ("tickets", _html.ticket_counts(list(self.tickets.values()))),
            ("support tickets enabled", "yes" if self.support_tickets_enabled else "no (20061)"),
            ("processing delay", _html.describe_delay(self.processing_delay)),
            ("outcome", "a callable" if callable(outcome) else str(outcome)),
            ("webhooks", webhooks),
        ]
        return _html.render(settings, list(self.tickets.values()), self.requests, recent)

    @property
    def url(self) -> str:
        """Base URL of the running sandbox, e.g. ``"http://127.0.0.1:51234"``."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running; use 'async with SkalaSandbox()'")
        return self._url

    @property
    def tickets(self) -> dict[str, SandboxTicket]:
        """Every ticket created, by ticket id."""
        return self._store.tickets

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook delivery attempt, in order of completion."""
        return self._webhooks.deliveries

    # -- lifecycle ---------------------------------------------------------------------------

    # The same async-with shape as the client's and the Redis bus's; nothing to share.
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
        loop = self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - loop.time()
        self._store.start(loop)
        self._webhooks.start(loop)
        handlers = Handlers(self, self._store, self._faults, self._recorder, self._tokens, loop)
        app = web.Application()
        app.on_response_prepare.append(add_request_id)
        # [\s\S], not ".": a path with an encoded line break is ours to answer too.
        app.router.add_route("*", r"/{tail:[\s\S]*}", handlers.dispatch)
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
        host, port = runner.addresses[0][0], runner.addresses[0][1]
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        self._url = f"{scheme}://{host}:{port}"
        # A sync client called on this loop would block the sandbox: it refuses at once.
        self._not_serving = _loopguard.serving(loop, self._url, "the SkalaSandbox there")

    async def close(self) -> None:
        """Stop serving and cancel background work; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._webhooks.stop()
        runner, self._runner = self._runner, None
        not_serving, self._not_serving = self._not_serving, None
        if not_serving is not None:
            not_serving()
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            self._store.close()
            await self._webhooks.close()

    # -- customers, tokens, faults -----------------------------------------------------------

    def add_customer(
        self, email: str | None = "customer@example.com", *, customer_id: str | None = None
    ) -> str:
        """Create a customer and return its id; ``email=None`` makes one without an email."""
        return self._store.add_customer(email, customer_id)

    def deactivate_customer(self, customer_id: str) -> None:
        """Deactivate a customer: creates for it answer 404 afterwards."""
        customer = self._store.customer(customer_id)
        if customer is None:
            raise KeyError(customer_id)
        customer.active = False

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far (API calls with them answer 401)."""
        self._tokens.clear()

    def inject(self, endpoint: FaultEndpoint, fault: Fault, *, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests to ``endpoint`` (FIFO per endpoint).

        ``endpoint`` is ``"token"``, ``"create"`` or ``"get"``.
        """
        self._faults.add(endpoint, fault, times)

    def clear_faults(self) -> None:
        """Forget every fault not yet applied."""
        self._faults.clear()

    # -- what was received -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every finished request, in arrival order (a new list on each access)."""
        return self._recorder.requests()

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        """The recorded requests to one endpoint, in arrival order."""
        return self._recorder.requests(endpoint)

    def count(self, endpoint: Endpoint, *, status: int | EllipsisType | None = ANY) -> int:
        """Count requests to ``endpoint``, optionally only those answered with ``status``.

        ``status=None`` counts the dropped ones.
        """
        return self._recorder.count(endpoint, status)

    def export_record(self) -> dict[str, Any]:
        """What the sandbox received and did, as JSON-ready data: ``requests`` (each
        :class:`RecordedRequest`, ``received_at`` as UTC ISO 8601), ``tickets`` (each
        :class:`SandboxTicket`, with ``created_at`` and ``finished_at`` the same way) and
        ``webhook_deliveries``. Like the record itself, it holds no secret: no
        ``Authorization`` header, the token request's ``client_secret`` redacted."""
        return _records.export(
            self._url,
            self.requests,
            self.tickets.values(),
            self.webhook_deliveries,
            self._wall_offset,
        )

    def clear_requests(self) -> None:
        """Forget the recorded requests (requests in flight are still recorded)."""
        self._recorder.clear()

    # -- ticket processing -------------------------------------------------------------------

    async def wait_until_processed(self, timeout: float | None = None) -> None:
        """Wait until no ticket is ``PENDING``; raise :class:`TimeoutError` after ``timeout``."""
        await self._store.wait_until_processed(_deadline(timeout))

    async def wait_for_webhooks(self, timeout: float | None = None) -> None:
        """Wait until no webhook delivery is in flight."""
        await self._webhooks.wait(_deadline(timeout))

    def complete(self, ticket_id: str, status: str = "CREATED") -> SandboxTicket:
        """Finish a ``PENDING`` ticket now with ``status`` (and send its webhook)."""
        return self._store.complete(ticket_id, status)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


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
