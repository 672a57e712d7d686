"""``SkalaClient``: create tickets, read them, and get handles to wait on them."""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _protocol
from ._auth import StaticToken, TokenProvider
from ._backoff import WEBHOOK_FALLBACK_POLL, PollPolicy, RetryPolicy, check_timeout
from ._client_config import (
    _check_base_url,
    _check_header_name,
    _check_proxy,
    _release_abandoned,
    _tracing_for,
    make_auth,
    make_draft,
    make_transport,
)
from ._client_engine import _Engine
from ._client_view import _check_poll, _View
from ._env import env_base_url, env_credentials
from ._waiting import DEFAULT_WAIT_TIMEOUT, TicketHandle
from ._wire import ProgressCallback, Timeouts, Transport
from .bus import TicketBus
from .models import FileLike, Ticket, TicketDraft

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from .bulk import BulkInputs, BulkReport, BulkResult
    from .webhooks import AiohttpHandler, EventCallback, Secrets

__all__ = ["PRODUCTION_URL", "SANDBOX_URL", "SkalaClient"]

#: Ripio's sandbox environment (reference section 1).
SANDBOX_URL = "https://skala-sandbox.ripio.com"
#: Ripio's production environment.
PRODUCTION_URL = "https://skala.ripio.com"


class SkalaClient(_Engine):
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
        transport: what sends the requests: anything implementing
            :class:`~skala_async.Transport` (``skala_async.testing.MockTransport`` in unit
            tests). Closed by :meth:`close`. Default: an aiohttp transport made from
            ``session``, ``proxy``, ``ssl``, ``trust_env``, ``trace_configs``,
            ``user_agent`` and ``request_id_header``, which cannot be given with it.

    Use it as ``async with SkalaClient(...) as client:``, or call :meth:`close`. Nothing
    binds to an event loop until the first request, so a client can be made in one
    notebook cell and used in the next.
    """

    # Over 60 lines: one keyword per documented argument (the checks are in _client_config).
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
        transport: Transport | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url, allow_insecure_http)
        _check_proxy(proxy)
        _check_header_name(request_id_header)
        self._auth: TokenProvider = make_auth(
            client_id, client_secret, token, self._fetch_token, token_margin
        )
        if max_concurrent_polls < 1:
            raise ValueError(f"max_concurrent_polls must be >= 1, got {max_concurrent_polls}")
        self.client_id = client_id
        self.retry_policy = retry or RetryPolicy()
        self.poll_policy = poll or PollPolicy()
        self.webhook_poll_policy = webhook_poll or WEBHOOK_FALLBACK_POLL
        self._timeouts = timeouts or Timeouts()
        self._transport = make_transport(
            transport,
            self.base_url,
            self._timeouts,
            session=session,
            user_agent=user_agent,
            proxy=proxy,
            trust_env=trust_env,
            ssl=ssl,
            trace_configs=trace_configs,
            request_id_header=request_id_header,
        )
        self._tracing = _tracing_for(tracing)
        #: Seconds each call may take when it names no ``timeout=`` (``with_options``).
        self._call_timeout: float | None = None
        # A client that is never closed must not spam "Unclosed client session" (or worse,
        # "Event loop is closed") when it is collected or the interpreter exits.
        self._closed = False
        self._finalizer = weakref.finalize(self, _release_abandoned, self._transport)
        self._share(bus, max_concurrent_polls, get=self.get_ticket)
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
        state = " closed" if self._closed else ""
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
        self._closed = True
        self._waits.close()
        await self._auth.aclose()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

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
        draft = await make_draft(customer_id, summary, description, files)
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
    def _root(self) -> _Engine:
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
        draft = await make_draft(customer_id, summary, description, files)
        return await self._create_and_wait(
            draft, timeout, raise_on_failure, progress, retry=retry, poll=poll
        )

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


class _ClientView(_View, SkalaClient):
    """A :class:`SkalaClient` with other defaults that shares everything else with its own
    client (made by :meth:`SkalaClient.with_options`; see :class:`_View`)."""
