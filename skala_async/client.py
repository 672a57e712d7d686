"""``SkalaClient``: create tickets, read them, and get handles to wait on them."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import string
import urllib.parse
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _cancelsafe, _protocol
from ._auth import ClientCredentials, StaticToken, TokenProvider
from ._backoff import PollPolicy, RetryPolicy, check_timeout
from ._env import env_base_url, env_credentials
from ._protocol import RawResponse, Request
from ._transport import ProgressCallback, Timeouts, Transport
from ._waiting import DEFAULT_WAIT_TIMEOUT, TicketHandle, Waits
from .bus import LocalBus, TicketBus
from .errors import (
    ApiError,
    CreateOutcomeUnknownError,
    RequestTimeoutError,
    SkalaError,
    TransportError,
    ValidationError,
    WaitTimeoutError,
)
from .models import FileLike, Ticket, TicketDraft

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from ._tracing import Tracing
    from .bulk import BulkInputs, BulkReport, BulkResult
    from .webhooks import AiohttpHandler, EventCallback, Secrets

__all__ = ["PRODUCTION_URL", "SANDBOX_URL", "SkalaClient"]

log = logging.getLogger("skala_async")
#: One line per HTTP attempt (DEBUG), per retry and per request that failed (INFO).
http_log = logging.getLogger("skala_async.http")
_DEBUG = logging.DEBUG

#: Ripio's sandbox environment (reference section 1).
SANDBOX_URL = "https://skala-sandbox.ripio.com"
#: Ripio's production environment.
PRODUCTION_URL = "https://skala.ripio.com"

T = TypeVar("T")


def _check_base_url(base_url: str, allow_insecure_http: bool) -> str:
    if not isinstance(base_url, str) or not base_url:
        raise ValueError("base_url must be a URL such as SANDBOX_URL")
    # A refused URL is shown without its user-info: it may hold a password.
    shown = _protocol.redact_url(base_url)
    try:
        parts = urllib.parse.urlsplit(base_url)
        hostname = parts.hostname
    except ValueError:  # an unbalanced "[" (IPv6) ...: its message may quote the URL
        parts = None
    if parts is None:  # raised here, not in the handler: no __context__ to quote it
        raise ValueError(f"base_url is not a valid URL: {shown!r}")
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {shown!r}")
    if parts.query or parts.fragment or "@" in parts.netloc or "@" in base_url:
        raise ValueError("base_url must not carry a query, fragment or credentials (user-info)")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(hostname):
        raise ValueError(
            f"refusing plain http:// to {hostname}: credentials and tickets would travel "
            "unencrypted. Use https://, or pass allow_insecure_http=True if you really mean it"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_proxy(proxy: object) -> None:
    if proxy is None:
        return
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string, got {type(proxy).__name__}")
    parts = urllib.parse.urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL may carry a password: name what is wrong, never the URL itself.
        raise ValueError("proxy must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("proxy has a port that is not a number") from None


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


def _is_token(name: str) -> bool:
    """Whether ``name`` is a valid HTTP header name (RFC 9110 token)."""
    return bool(name) and all(c in _TOKEN_CHARS for c in name)


def _tracing_for(tracing: Any) -> Tracing | None:
    if tracing is None or tracing is False:
        return None
    try:
        from ._tracing import Tracing
    except ImportError:
        raise RuntimeError(
            "tracing= needs OpenTelemetry: pip install 'skala-async[otel]'"
        ) from None
    return Tracing(tracing)


class SkalaClient:
    """Async client for the Skala Support Tickets API.

    Args:
        client_id: OAuth2 client id issued by Ripio (per environment).
        client_secret: the matching secret; never shown in reprs, logs or errors.
        token: a bearer token obtained elsewhere, instead of client credentials.
        base_url: :data:`SANDBOX_URL` (default), :data:`PRODUCTION_URL`, or a sandbox of
            your own (``http://127.0.0.1:PORT``).
        session: an :class:`aiohttp.ClientSession` of yours; used as is and never closed
            by this client. Without one, the client makes its own on first use.
        allow_insecure_http: allow ``http://`` to a host that is not loopback.
        timeouts: per-request time limits (:class:`Timeouts`).
        retry: how requests are retried after transient failures (:class:`RetryPolicy`).
        poll: how :meth:`TicketHandle.wait_until_created` polls (:class:`PollPolicy`).
        webhook_poll: the slow fallback polling used instead of ``poll`` while a webhook
            handler is mounted (:meth:`webhook_handler`) and webhooks arrive: first GET
            after 60 s, then every 30 to 120 s.
        max_concurrent_polls: GETs in flight at once for all waiting handles together.
        token_margin: refresh a client-credentials token this many seconds before expiry.
        user_agent: the ``User-Agent`` header (default names this library, aiohttp, Python).
        proxy: an HTTP(S) proxy URL for every request (``http://user:pass@proxy:3128``);
            an ``https://`` API is reached through a ``CONNECT`` tunnel, so the proxy sees
            only the host name. Its credentials never appear in reprs, logs or errors.
        trust_env: whether the session the client makes follows ``HTTPS_PROXY`` /
            ``HTTP_PROXY`` and ``NO_PROXY`` (read once, at the first request) when no
            ``proxy=`` is given. Default ``True``.
        ssl: an :class:`ssl.SSLContext` for the session the client makes (a private CA,
            ``truststore.SSLContext(...)``, a client certificate).
        trace_configs: :class:`aiohttp.TraceConfig` objects for the session the client
            makes (with ``session=``, give them to your session instead).
        tracing: OpenTelemetry spans (needs the ``[otel]`` extra): ``True`` for the
            global tracer provider, or a ``TracerProvider``. Off by default.
        request_id_header: the response header holding the server's request id
            (default ``X-Request-Id``): kept on :class:`ApiError` and logged.
        bus: what this client shares with its webhook receiver and, through
            ``skala_async.redis.RedisBus``, with other processes: ticket news, webhook
            health, webhook dedupe and the ``Retry-After`` pause (:mod:`skala_async.bus`).
            The caller's: never closed by the client. Default: a
            :class:`~skala_async.bus.LocalBus` of its own (one process).

    Use it as ``async with SkalaClient(...) as client:``, or call :meth:`close`. Nothing
    binds to an event loop until the first request, so a client can be made in one
    notebook cell and used in the next.
    """

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        token: str | None = None,
        base_url: str = SANDBOX_URL,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        webhook_poll: PollPolicy | None = None,
        max_concurrent_polls: int = 32,
        token_margin: float = 60.0,
        user_agent: str | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        ssl: ssl.SSLContext | None = None,
        trace_configs: Iterable[aiohttp.TraceConfig] | None = None,
        tracing: Any = None,
        request_id_header: str = _protocol.DEFAULT_REQUEST_ID_HEADER,
        bus: TicketBus | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url, allow_insecure_http)
        _check_proxy(proxy)
        if not isinstance(request_id_header, str) or not _is_token(request_id_header):
            raise ValueError(
                f"request_id_header must be an HTTP header name, got {request_id_header!r}"
            )
        if token is not None:
            if client_id is not None or client_secret is not None:
                raise ValueError("pass either token= or client_id/client_secret, not both")
            self._auth: TokenProvider = StaticToken(token)
        elif client_id and client_secret:
            if not isinstance(client_id, str) or not isinstance(client_secret, str):
                raise TypeError("client_id and client_secret must be strings")
            creds = (client_id, client_secret)
            self._auth = ClientCredentials(lambda: self._fetch_token(*creds), margin=token_margin)
        else:
            raise ValueError(
                "credentials missing: pass client_id and client_secret (or token=), "
                "or use SkalaClient.from_env() with SKALA_CLIENT_ID and SKALA_CLIENT_SECRET"
            )
        if max_concurrent_polls < 1:
            raise ValueError(f"max_concurrent_polls must be >= 1, got {max_concurrent_polls}")
        self.client_id = client_id
        self.retry_policy = retry or RetryPolicy()
        self.poll_policy = poll or PollPolicy()
        self.webhook_poll_policy = webhook_poll or PollPolicy(
            first_delay=60.0, min_interval=30.0, max_interval=120.0
        )
        self._transport = Transport(
            self.base_url,
            session=session,
            timeouts=timeouts,
            user_agent=user_agent,
            proxy=proxy,
            trust_env=trust_env,
            ssl=ssl,
            trace_configs=list(trace_configs) if trace_configs is not None else None,
            request_id_header=request_id_header,
        )
        self._tracing: Tracing | None = _tracing_for(tracing)
        #: Per-request limits (``with_options(timeout=Timeouts(...))`` replaces them).
        self._timeouts = self._transport.timeouts
        #: Seconds each call may take when it names no ``timeout=`` (``with_options``).
        self._call_timeout: float | None = None
        # A client that is never closed must not spam "Unclosed client session" (or worse,
        # "Event loop is closed") when it is collected or the interpreter exits.
        self._finalizer = weakref.finalize(self, _release_abandoned, self._transport)
        if bus is not None and not isinstance(bus, TicketBus):
            raise TypeError(f"bus must implement skala_async.bus.TicketBus, got {bus!r}")
        own_bus: LocalBus | None = None
        if bus is None:
            bus = own_bus = LocalBus()
        #: What waits, webhooks and bulk runs share (:mod:`skala_async.bus`).
        self.bus: TicketBus = bus
        self._waits = Waits(
            bus=self.bus,
            fetch=self._poll,
            get=self.get_ticket,
            policy=self._wait_policy,
            retry=self._retry,
            tracing=self._tracing,
            own_bus=own_bus,
        )
        self._max_polls = max_concurrent_polls
        self._poll_slots: asyncio.Semaphore | None = None
        #: Requests sent, by kind (``token``, ``create``, ``get``), attempts included.
        self.request_counts: dict[str, int] = {"token": 0, "create": 0, "get": 0}

    @classmethod
    def from_env(cls, **kwargs: Any) -> SkalaClient:
        """A client configured from ``SKALA_CLIENT_ID``, ``SKALA_CLIENT_SECRET`` and
        ``SKALA_BASE_URL`` (default :data:`SANDBOX_URL`); keyword arguments win."""
        if kwargs.get("token") is None:  # a token given here wins over credentials
            client_id, client_secret = env_credentials()
            kwargs.setdefault("client_id", client_id)
            kwargs.setdefault("client_secret", client_secret)
        kwargs.setdefault("base_url", env_base_url() or SANDBOX_URL)
        return cls(**kwargs)

    def __repr__(self) -> str:
        auth = "token" if isinstance(self._auth, StaticToken) else f"client_id={self.client_id!r}"
        state = " closed" if self._transport.closed else ""
        return f"<SkalaClient {self.base_url} {auth}{state}>"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SkalaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client (and its own HTTP session; a caller's session stays open).

        Waits still sleeping on the client end at once with a ``RuntimeError`` (only this
        client's: a bus shared with other clients stays open, and is the caller's to close).
        """
        self._finalizer.detach()
        self._waits.close()
        await self._auth.aclose()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._transport.closed

    # ------------------------------------------------------------------ public API

    async def create_ticket(
        self,
        customer_id: str | uuid.UUID,
        summary: str,
        description: str,
        files: FileLike | Iterable[FileLike] = (),
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> TicketHandle:
        """Create a support ticket on behalf of a customer; returns a PENDING handle.

        Every documented limit is checked first, and all problems are reported at once in a
        :class:`ValidationError` before anything is sent. Attachments stream from disk.

        Args:
            customer_id: the customer (must exist on Ripio's side with an email).
            summary: one line, at most 240 characters.
            description: at most 5000 characters.
            files: up to 5 paths, :class:`Attachment` objects or open binary files
                (jpg jpeg png webp mp4 mov avi webm pdf; 25 MiB each, 50 MiB together).
            progress: ``progress(bytes_sent, bytes_total)`` called as file content is sent.
            timeout: overall seconds for the call, retries included.
            retry: a :class:`RetryPolicy` for this call instead of the client's (a create
                is resent only when the server surely did not process it).

        Raises:
            ValidationError: the input breaks a documented limit (nothing was sent).
            CreateOutcomeUnknownError: the request may have created a ticket (timeout after
                sending, 500/502/504, connection lost); it is never re-sent automatically.
            SupportTicketsNotEnabledError, BadRequestError, AuthenticationError ...: refused.
        """
        draft = TicketDraft(customer_id, summary, description, files)
        return await self.submit(draft, progress=progress, timeout=timeout, retry=retry)

    async def submit(
        self,
        draft: TicketDraft,
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> TicketHandle:
        """Like :meth:`create_ticket`, from a :class:`TicketDraft`."""
        return await self._submit(draft, progress, self._deadline(timeout), retry)

    async def _submit(
        self,
        draft: TicketDraft,
        progress: ProgressCallback | None,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> TicketHandle:
        """A create within ``deadline`` (event-loop time; ``None``: none)."""
        if self._tracing is not None:
            return await self._submit_traced(self._tracing, draft, progress, deadline, retry)
        request = _protocol.create_request(draft)
        ticket = await self._execute(
            request, _protocol.parse_ticket, deadline, progress, self._retry(retry)
        )
        loop = asyncio.get_running_loop()
        self.bus.publish(ticket)
        return TicketHandle(self._waits, ticket.ticket_id, ticket, accepted_at=loop.time())

    async def _submit_traced(
        self,
        tracing: Tracing,
        draft: TicketDraft,
        progress: ProgressCallback | None,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> TicketHandle:
        with tracing.create() as span:
            try:
                request = _protocol.create_request(draft)
            except ValidationError as exc:
                tracing.ended(span, "invalid", exc)
                raise
            tracing.describe_create(span, request)
            try:
                ticket = await self._execute(
                    request, _protocol.parse_ticket, deadline, progress, self._retry(retry)
                )
            except CreateOutcomeUnknownError as exc:
                tracing.ended(span, "uncertain", exc)
                raise
            except ApiError as exc:
                tracing.ended(span, "rejected" if 400 <= int(exc.status) < 500 else "failed", exc)
                raise
            except Exception as exc:
                tracing.ended(span, "failed", exc)
                raise
            span.set_attribute("skala.ticket_id", str(ticket.ticket_id))
            tracing.ended(span, "accepted")
        loop = asyncio.get_running_loop()
        self.bus.publish(ticket)
        return TicketHandle(self._waits, ticket.ticket_id, ticket, accepted_at=loop.time())

    async def get_ticket(
        self,
        ticket_id: uuid.UUID | str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Ticket:
        """The ticket's current state (one GET, retried on transient failures).

        ``timeout`` bounds the call, retries included; ``retry`` replaces the client's
        :class:`RetryPolicy` for this call.
        """
        tid = _protocol.ticket_id_of(ticket_id)
        return await self._get(
            tid, deadline=self._deadline(timeout), poll_slot=False, retry=self._retry(retry)
        )

    def with_options(
        self,
        *,
        timeout: float | Timeouts | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> SkalaClient:
        """A view of this client with other defaults; everything else is shared.

        The view uses the same HTTP session, token, ``Retry-After`` pause, webhook state
        and waits as this client (a ticket's news wakes waits on both); only the options
        given here differ. Making one costs nothing, so make one per call site::

            quick = client.with_options(timeout=5, retry=RetryPolicy(attempts=1))
            ticket = await quick.get_ticket(ticket_id)

        Args:
            timeout: seconds each call may take when it names no ``timeout=``, or a
                :class:`Timeouts` replacing the per-request limits.
            retry: the :class:`RetryPolicy` of the view's calls.
            poll: the :class:`PollPolicy` of waits on handles the view makes.

        Closing a view closes the client it came from (they are one client).
        """
        call_timeout = self._call_timeout
        timeouts = self._timeouts
        if isinstance(timeout, Timeouts):
            timeouts = timeout
        elif timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be seconds or a Timeouts, got {type(timeout).__name__}"
                )
            check_timeout(timeout)
            call_timeout = float(timeout)
        return _ClientView(
            self._root,
            retry=self._retry(retry),
            poll=_check_poll(poll) or self.poll_policy,
            timeouts=timeouts,
            call_timeout=call_timeout,
        )

    @property
    def _root(self) -> SkalaClient:
        return self

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> TicketHandle:
        """A handle for a ticket created earlier (for example before a restart)."""
        return TicketHandle(self._waits, _protocol.ticket_id_of(ticket_id))

    def resume(self, token: str) -> TicketHandle:
        """The handle a :meth:`TicketHandle.resume_token` describes, made by any process.

        Its wait continues the saved schedule rather than starting again: the ticket's
        acceptance time (wall clock), the last state seen and the next scheduled poll come
        from the token. No request is made here. The handle polls with this client's
        credentials and policies.

        Raises:
            ValueError: not a token this version wrote: truncated, altered, another
                version, or values no token holds (a negative time, an acceptance time in
                the future beyond a few minutes of clock skew).
            TypeError: ``token`` is not a string.
        """
        return TicketHandle._resumed(self._waits, token)

    async def create_and_wait(
        self,
        customer_id: str | uuid.UUID,
        summary: str,
        description: str,
        files: FileLike | Iterable[FileLike] = (),
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool = True,
        progress: ProgressCallback | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> Ticket:
        """Create a ticket and wait for its outcome, all within one deadline.

        ``timeout`` is the budget of the whole job: the create (token request, ``Retry-After``
        pauses and retries included) spends from it, and the wait gets only what is left,
        so ``timeout=30`` never takes 30 s plus a wait's 600.

        Where the budget runs out decides the error:

        - during the create, before the request was sent (a slow token endpoint, a
          ``Retry-After`` or a retry delay that would outlast it): the create's own error,
          :class:`RequestTimeoutError` with ``request_sent=False`` or the refusal that could
          not be retried in time (:class:`RateLimitedError`); no ticket exists;
        - during the create, after the request was sent: :class:`CreateOutcomeUnknownError`
          (a ticket may exist; it is never re-sent);
        - during the wait: :class:`WaitTimeoutError`, whose ``resume_token`` continues the
          wait (``client.resume(exc.resume_token)``, here or in another process) and whose
          ``ticket`` is the last state seen. The wait asks once more shortly before the
          deadline, as :meth:`TicketHandle.wait_until_created` does, unless the create
          left no time at all.

        Args:
            customer_id: as :meth:`create_ticket`.
            summary: as :meth:`create_ticket`.
            description: as :meth:`create_ticket`.
            files: as :meth:`create_ticket`.
            progress: as :meth:`create_ticket`.
            retry: as :meth:`create_ticket`; it also applies to the wait's GETs.
            timeout: seconds for everything (default 600); ``None`` for no deadline.
            raise_on_failure: on ``FAILED`` raise :class:`TicketFailedError` (default) or
                return the FAILED ticket.
            poll: a :class:`PollPolicy` for the wait instead of the client's.

        Raises:
            ValidationError: the input breaks a documented limit (nothing was sent).
            TicketFailedError, WaitTimeoutError, CreateOutcomeUnknownError, ApiError ...:
                as above and as :meth:`create_ticket`.
        """
        check_timeout(timeout)
        draft = TicketDraft(customer_id, summary, description, files)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        handle = await self._submit(draft, progress, deadline, retry)
        if deadline is None:
            return await handle.wait_until_created(
                None, raise_on_failure=raise_on_failure, poll=poll, retry=retry
            )
        left = deadline - loop.time()
        if left <= 0:
            # The 202 itself was the last word, heard just now: no time to ask again.
            raise WaitTimeoutError(
                handle.ticket_id,
                timeout or 0.0,
                handle.ticket,
                resume_token=handle.resume_token(),
            )
        try:
            return await handle.wait_until_created(
                left, raise_on_failure=raise_on_failure, poll=poll, retry=retry
            )
        except WaitTimeoutError as exc:
            # The budget of the whole job, not what was left of it for the wait.
            raise WaitTimeoutError(
                handle.ticket_id, timeout or 0.0, exc.ticket, resume_token=exc.resume_token
            ) from None

    def submit_many(
        self,
        drafts: BulkInputs,
        *,
        concurrency: int = 8,
        journal: str | os.PathLike[str] | None = None,
        wait: bool = False,
        wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        resend_uncertain: bool = False,
    ) -> AsyncIterator[BulkResult]:
        """Create many tickets concurrently; yield a :class:`BulkResult` as each input ends.

        Every input ends in exactly one outcome: ``created``, ``rejected`` (validation or a
        4xx), ``uncertain`` (may have been created: never resent silently) or ``failed``
        (surely not received, retries ran out). One bad input never stops the others.

        Args:
            drafts: :class:`TicketDraft` objects, an iterable or async iterable, consumed
                lazily (a ``reference`` on each draft names it in the journal and results).
            concurrency: creates in flight at most (an integer >= 1); halved when the server
                asks to back off (429 / 503 with ``Retry-After``), then grown back.
            journal: path of an SQLite file recording each step; rerunning the same job with
                it does not resend accepted inputs (they are reported from the journal).
                One run at a time: a journal in use raises :class:`JournalInUseError`, one
                that cannot be used :class:`JournalError` (both before anything is sent),
                one deleted, replaced or truncated during the run :class:`JournalLostError`.
            wait: also wait for each created ticket's final status.
            wait_timeout: deadline of each wait, in seconds.
            resend_uncertain: with a journal, send again the inputs a previous run may
                have created (it died while sending them, or the answer was ambiguous).
        """
        from .bulk import submit_many  # loaded on first use: sqlite3 is not cheap to import

        return submit_many(
            self,
            drafts,
            concurrency=concurrency,
            journal=journal,
            wait=wait,
            wait_timeout=wait_timeout,
            resend_uncertain=resend_uncertain,
        )

    async def create_many(
        self,
        drafts: BulkInputs,
        *,
        progress: bool = False,
        **kwargs: Any,
    ) -> BulkReport:
        """Like :meth:`submit_many`, collected into a :class:`BulkReport` (input order).

        With ``progress=True`` a progress bar counts the inputs as they end (outcome
        counts beside it) through ``tqdm.auto``: a widget in Jupyter (with ipywidgets),
        text on stderr in a terminal. Without tqdm installed nothing is shown (one debug
        log line says why). Its total is ``len(drafts)`` when the inputs have one.
        """
        from .bulk import check_progress, collect, progress_bar

        show = check_progress(progress)  # before anything is sent
        results = self.submit_many(drafts, **kwargs)
        return await collect(results, progress_bar(drafts) if show else None)

    # ------------------------------------------------------------------ webhooks

    def webhook_handler(
        self, secret: Secrets, on_event: EventCallback | None = None, **kwargs: Any
    ) -> AiohttpHandler:
        """An aiohttp handler for Ripio's webhooks that also wakes this client's waits.

        Mount it where Ripio POSTs (``app.router.add_post("/webhooks/skala", handler)``);
        the app must run on this client's event loop. Each verified ``SUPPORT_TICKET``
        event wakes every handle waiting on that ticket at once (a wait begun after the
        event finishes at once too), then ``on_event`` is called once per (ticket id,
        status). Requests are answered as :class:`~skala_async.webhooks.WebhookReceiver`
        describes (``401`` bad signature, ``400`` malformed, ``413`` too large, ``2xx``).

        From the moment it is made, waits poll only as a slow fallback
        (``webhook_poll``). When a wait learns a final status by its own GET (the webhook
        never came), or the handler refuses a delivery (``401``, ``400``, ``413``, or a
        ``500`` of its own), the client concludes webhooks are not working and polls
        normally again, waking the waits asleep on the slow schedule; the next verified
        webhook brings the slow fallback back.

        Args:
            secret: the shared secret, or several during a rotation.
            on_event: called once for each new event (function or coroutine function).
            **kwargs: ``max_body_bytes``, ``tolerance``, ``dedupe_size`` of
                :class:`~skala_async.webhooks.WebhookReceiver`.
        """
        from .webhooks import WebhookReceiver

        return WebhookReceiver(secret, on_event, client=self, **kwargs).handle

    def _wait_policy(self) -> PollPolicy:
        """The poll policy of waits right now: slow while webhooks arrive."""
        if self.bus.webhooks_healthy:
            return self.webhook_poll_policy
        return self.poll_policy

    # ------------------------------------------------------------------ internals

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            timeout = self._call_timeout
            if timeout is None:
                return None
        check_timeout(timeout)
        return asyncio.get_running_loop().time() + timeout

    async def _poll(
        self, ticket_id: uuid.UUID, deadline: float | None, slot: bool, retry: RetryPolicy
    ) -> Ticket:
        """One GET of a wait (within the shared poll slots if ``slot``)."""
        return await self._get(ticket_id, deadline=deadline, poll_slot=slot, retry=retry)

    def _retry(self, retry: RetryPolicy | None) -> RetryPolicy:
        if retry is None:
            return self.retry_policy
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        return retry

    async def _get(
        self,
        ticket_id: uuid.UUID,
        *,
        deadline: float | None,
        poll_slot: bool = True,
        retry: RetryPolicy | None = None,
    ) -> Ticket:
        request = _protocol.get_request(ticket_id)
        policy = retry or self.retry_policy
        if self._tracing is not None:
            with self._tracing.operation(request) as span:
                ticket = await self._get_slot(request, deadline, poll_slot, policy)
                span.set_attribute("skala.ticket.status", ticket.status.value)
        else:
            ticket = await self._get_slot(request, deadline, poll_slot, policy)
        self.bus.publish(ticket)
        return ticket

    async def _get_slot(
        self, request: Request, deadline: float | None, poll_slot: bool, policy: RetryPolicy
    ) -> Ticket:
        if not poll_slot:
            return await self._execute(request, _protocol.parse_ticket, deadline, None, policy)
        if self._poll_slots is None:
            self._poll_slots = asyncio.Semaphore(self._max_polls)
        async with self._poll_slots:
            return await self._execute(request, _protocol.parse_ticket, deadline, None, policy)

    async def _token_within(self, request: Request, deadline: float | None) -> str:
        """A token for ``request``, without outliving the call's deadline."""
        if (token := self._auth.cached()) is not None:
            return token  # the usual case: no request, no timer
        if deadline is None:
            return await self._auth.token()
        try:
            # The refresh itself is shared and shielded: only this call stops waiting. Not
            # asyncio.wait_for: before 3.12 it can swallow a cancel (see _cancelsafe).
            return await _cancelsafe.within(self._auth.token(), deadline)
        except TimeoutError:
            raise RequestTimeoutError(
                f"{request.method} {request.path}: deadline reached while getting a token",
                method=request.method,
                path=request.path,
                request_sent=False,
            ) from None

    async def _fetch_token(self, client_id: str, client_secret: str) -> _protocol.TokenInfo:
        request = _protocol.token_request(client_id, client_secret)
        if self._tracing is not None:
            with self._tracing.operation(request):
                return await self._execute(request, _protocol.parse_token, None)
        return await self._execute(request, _protocol.parse_token, None)

    async def _execute(
        self,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        deadline: float | None,
        progress: ProgressCallback | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Send ``request`` with retries, token refresh and the shared rate gate."""
        try:
            return await self._attempts(
                request, parse, deadline, progress, policy or self.retry_policy
            )
        except SkalaError as exc:
            # Only a failure of the create request itself is ambiguous: a token request
            # that failed first means the create was never sent.
            if request.kind == "create" and exc_path(exc) == request.path and _ambiguous(exc):
                raise CreateOutcomeUnknownError(
                    f"the create request may or may not have opened a ticket ({exc}); it was "
                    "not re-sent, because the API has no idempotency key. Check with Ripio "
                    "(or your webhook) before creating it again",
                    cause=exc,
                ) from exc
            raise

    async def _attempts(
        self,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        deadline: float | None,
        progress: ProgressCallback | None,
        policy: RetryPolicy,
    ) -> T:
        loop = asyncio.get_running_loop()
        may_resend = (
            _protocol.create_may_be_resent
            if request.kind == "create"
            else _protocol.read_may_be_resent
        )
        tracing = self._tracing
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            if not await self.bus.wait_pause(deadline):
                raise RequestTimeoutError(
                    f"{request.method} {request.path}: the server asked to pause requests "
                    "until after this call's deadline",
                    method=request.method,
                    path=request.path,
                    request_sent=False,
                )
            token = await self._token_within(request, deadline) if request.needs_auth else None
            limit = None if deadline is None else deadline - loop.time()
            if limit is not None and limit <= 0:
                raise RequestTimeoutError(
                    f"{request.method} {request.path}: deadline reached before sending",
                    method=request.method,
                    path=request.path,
                    request_sent=False,
                )
            self.request_counts[request.kind] += 1
            try:
                if tracing is None:
                    raw = await self._transport.send(
                        request,
                        token=token,
                        time_limit=limit,
                        progress=progress,
                        timeouts=self._timeouts,
                    )
                    result = parse(request, raw)
                else:
                    result, raw = await self._send_traced(
                        tracing, request, parse, token, limit, progress, attempt
                    )
                if http_log.isEnabledFor(_DEBUG):
                    http_log.debug(
                        "%s %s -> %d %s attempt=%d%s",
                        request.method,
                        request.path,
                        raw.status,
                        _ticket_label(request, result),
                        attempt,
                        f" request_id={raw.request_id}" if raw.request_id else "",
                    )
                return result
            except SkalaError as exc:
                if (
                    token is not None
                    and _protocol.is_auth_failure(exc)
                    and self._auth.can_refresh
                    and not refreshed
                    # a create is sent again only after a documented refusal
                    and (request.kind != "create" or _protocol.create_refused(exc))
                ):
                    refreshed = True
                    attempt -= 1
                    http_log.info(
                        "%s %s %s attempt=%d: token rejected (%s); refreshing it once",
                        request.method,
                        request.path,
                        _ticket_label(request, None),
                        attempt + 1,
                        _reason(exc),
                    )
                    self._auth.invalidate(token)
                    continue
                server_delay = _protocol.server_delay(exc)
                if server_delay is not None and isinstance(exc, ApiError):
                    self.bus.pause(min(server_delay, policy.max_retry_after))
                why_not = _no_retry(request, exc, may_resend, attempt, policy, server_delay)
                delay = 0.0
                if why_not is None:
                    delay = policy.delay(attempt, server_delay)
                    if deadline is not None and loop.time() + delay >= deadline:
                        why_not = "the call's deadline comes first"
                if why_not is not None:
                    http_log.info(
                        "%s %s %s attempt=%d failed: %s; not retried: %s",
                        request.method,
                        request.path,
                        _ticket_label(request, None),
                        attempt,
                        _reason(exc),
                        why_not,
                    )
                    raise
                http_log.info(
                    "%s %s %s attempt=%d failed: %s; retry in %.2f s",
                    request.method,
                    request.path,
                    _ticket_label(request, None),
                    attempt,
                    _reason(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _send_traced(
        self,
        tracing: Tracing,
        request: Request,
        parse: Callable[[Request, RawResponse], T],
        token: str | None,
        limit: float | None,
        progress: ProgressCallback | None,
        attempt: int,
    ) -> tuple[T, RawResponse]:
        headers: dict[str, str] = {}
        with tracing.attempt(request, self.base_url, attempt, headers) as span:
            try:
                raw = await self._transport.send(
                    request,
                    token=token,
                    time_limit=limit,
                    progress=progress,
                    timeouts=self._timeouts,
                    extra_headers=headers,
                )
            except SkalaError as exc:
                tracing.attempt_failed(span, exc)
                raise
            tracing.answered(span, raw)
            return parse(request, raw), raw


def _check_poll(poll: PollPolicy | None) -> PollPolicy | None:
    if poll is not None and not isinstance(poll, PollPolicy):
        raise TypeError(f"poll must be a PollPolicy, got {type(poll).__name__}")
    return poll


#: What a view made by ``with_options`` holds of its own; all else is its client's.
_VIEW_OWN = frozenset({"retry_policy", "poll_policy", "_timeouts", "_call_timeout", "_waits"})


class _ClientView(SkalaClient):
    """A :class:`SkalaClient` with other defaults that shares everything else with its own
    client (made by :meth:`SkalaClient.with_options`).

    Attributes other than the options are read from and written to the client, so state
    that changes later (the webhook health, the poll slots made on first use) stays one.
    """

    def __init__(
        self,
        root: SkalaClient,
        *,
        retry: RetryPolicy,
        poll: PollPolicy,
        timeouts: Timeouts,
        call_timeout: float | None,
    ) -> None:
        object.__setattr__(self, "_view_of", root)
        self.retry_policy = retry
        self.poll_policy = poll
        self._timeouts = timeouts
        self._call_timeout = call_timeout
        # Handles the view makes poll on the view's options, asleep among the client's waits.
        self._waits = root._waits.view(
            fetch=self._poll, get=self.get_ticket, policy=self._wait_policy, retry=self._retry
        )

    @property
    def _root(self) -> SkalaClient:
        root: SkalaClient = self.__dict__["_view_of"]
        return root

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_view_of"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _VIEW_OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._root, name, value)

    def __repr__(self) -> str:
        return repr(self._root)[:-1] + " view>"


def _ticket_label(request: Request, result: object) -> str:
    """``ticket=<id>`` for a log line: the id asked for, or the one a create got."""
    if request.ticket_id is not None:
        return f"ticket={request.ticket_id}"
    if isinstance(result, Ticket):
        return f"ticket={result.ticket_id}"
    if request.kind == "create":
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
        if request.kind == "create":
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


def _release_abandoned(transport: Transport) -> None:
    """Finalizer of a client that was never closed: release its own session quietly.

    Runs when the client is garbage collected, or at interpreter exit while it is still
    alive. Without it, aiohttp's ``__del__`` methods report "Unclosed client session" and
    "Unclosed connector" through an event loop that may be closed by then. Nothing here
    awaits or schedules a coroutine: aiohttp's connector closes synchronously (when its
    loop is already closed it only marks itself closed, and the sockets go with the
    process). A :class:`ResourceWarning` (hidden by Python's default filters, shown by
    ``-X dev`` and test runners) still tells developers that ``close()`` was missed.
    """
    session = transport._session
    if session is None or not transport._owns_session or session.closed:
        return
    connector = session.connector
    session.detach()  # the session counts as closed from now on
    if connector is not None:
        loop = connector._loop
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop.is_running() and loop is not current:
            # Collected in another thread while its loop runs: close it in the loop's thread.
            try:
                loop.call_soon_threadsafe(connector._close)
            except RuntimeError:  # the loop closed meanwhile
                connector._close()
        else:
            connector._close()
    warnings.warn(
        "a SkalaClient was never closed; use 'async with SkalaClient(...)' or "
        "'await client.close()'",
        ResourceWarning,
        stacklevel=1,
    )
