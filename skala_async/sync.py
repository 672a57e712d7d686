"""Blocking facade for scripts: the same client, without ``await``.

::

    from skala_async.sync import SkalaClient

    with SkalaClient.from_env() as client:
        handle = client.create_ticket(customer_id, "Card top-up not credited", "...")
        ticket = handle.wait_until_created(timeout=600)
        print(ticket.issue_key)

Each :class:`SkalaClient` (and :class:`Sandbox`) runs the async implementation on a private
event loop in a daemon thread of its own, and every method blocks the calling thread until
the result is there. Because it never uses the caller's event loop, it works the same in a
plain script, inside a running loop (Jupyter, an ``async def``) and from several threads.
Exceptions are raised in the caller's thread unchanged (same types, same attributes).
Interrupting a call (Ctrl-C, a Jupyter "interrupt") cancels the work in the private loop.

In a notebook prefer the async client with top-level ``await``. One trap remains: a sync
call blocks the calling thread, and with it that thread's event loop. So a sync client
cannot talk to a server that loop serves, such as an *async*
:class:`~skala_async.testing.SkalaSandbox` started on it (the server cannot answer while its
loop is blocked). Such a call raises ``RuntimeError`` at once, saying so, instead of waiting
for a timeout; use :class:`Sandbox` from this module (its own thread) or the async client.
It is found for a ``SkalaSandbox`` on any loop, and for any other server listening on a
loopback address when the loop is selector-based (the default on Linux and macOS).

Close with ``close()`` or a ``with`` block; a client that is garbage collected or still open
at interpreter exit is closed then, quietly.
"""

from __future__ import annotations

import inspect
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _loopguard, _protocol
from . import client as _async_client
from ._loop_thread import LoopThread, OnLoopThread, iterate, shutdown
from ._sync_sandbox import Sandbox
from ._waiting import DEFAULT_WAIT_TIMEOUT, TicketHandle
from .models import TicketDraft

if TYPE_CHECKING:
    import os
    import ssl

    import aiohttp

    from ._backoff import PollPolicy, RetryPolicy
    from ._wire import ProgressCallback, Timeouts, Transport
    from .bulk import BulkInputs, BulkReport, BulkResult
    from .bus import TicketBus
    from .models import FileLike, Ticket, TicketStatus

__all__ = ["Sandbox", "SkalaClient", "SyncTicketHandle"]

Sandbox.__module__ = __name__  # the path users import it from (reprs, tracebacks, pickles)


class SyncTicketHandle:
    """A blocking view of a :class:`~skala_async.TicketHandle`.

    Same attributes (``ticket_id``, ``ticket``, ``status``, ``issue_key``, ``elapsed``,
    ``polls``) and reprs; :meth:`wait_until_created`, :meth:`refresh` and :meth:`watch`
    block instead of being awaited.
    """

    def __init__(self, handle: TicketHandle, runner: LoopThread) -> None:
        self._handle = handle
        self._runner = runner

    @property
    def handle(self) -> TicketHandle:
        """The underlying async handle (it lives on the client's private loop)."""
        return self._handle

    @property
    def ticket_id(self) -> uuid.UUID:
        """The ticket's id: store it to resume after a restart."""
        return self._handle.ticket_id

    @property
    def ticket(self) -> Ticket | None:
        """The last state seen (``None`` for a handle rebuilt from an id, until a poll)."""
        return self._handle.ticket

    @property
    def status(self) -> TicketStatus | None:
        """Status last seen, or ``None`` if never seen."""
        return self._handle.status

    @property
    def issue_key(self) -> str | None:
        """Issue key last seen (set once ``CREATED``)."""
        return self._handle.issue_key

    @property
    def elapsed(self) -> float | None:
        """Seconds from acceptance to the final status, when both are known."""
        return self._handle.elapsed

    @property
    def polls(self) -> int:
        """GETs this handle has made."""
        return self._handle.polls

    @property
    def accepted_at(self) -> float | None:
        """Event-loop time (of the client's private loop) the 202 arrived."""
        return self._handle.accepted_at

    @property
    def accepted_wall(self) -> float | None:
        """Wall-clock time (``time.time()``) the 202 arrived."""
        return self._handle.accepted_wall

    @property
    def finished_at(self) -> float | None:
        """Event-loop time (of the client's private loop) a final status was first seen."""
        return self._handle.finished_at

    def __repr__(self) -> str:
        return repr(self._handle)

    def _repr_html_(self) -> str:
        return self._handle._repr_html_()

    def refresh(self) -> Ticket:
        """One GET now; returns (and remembers) the ticket's current state."""
        return self._runner.run(self._handle.refresh(), "refresh()")

    def done(self) -> bool:
        """Whether a final status is known, without a request or a wait; see
        :meth:`skala_async.TicketHandle.done`."""
        return self._runner.call(self._handle.done, "done()")

    def resume_token(self) -> str:
        """An opaque string to continue this wait in another process; see
        :meth:`skala_async.TicketHandle.resume_token`."""
        return self._runner.call(self._handle.resume_token, "resume_token()")

    def wait_until_created(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        raise_on_failure: bool = True,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> Ticket:
        """Block until the ticket is ``CREATED`` (or ``FAILED``); see
        :meth:`skala_async.TicketHandle.wait_until_created` for polling and errors."""
        return self._runner.run(
            self._handle.wait_until_created(
                timeout, raise_on_failure=raise_on_failure, poll=poll, retry=retry
            ),
            "wait_until_created()",
        )

    def watch(
        self,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        *,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> Iterator[Ticket]:
        """Yield the ticket each time its status changes, ending after a final status.

        A plain iterator (``for ticket in handle.watch(): ...``); leaving the loop early
        stops the polling. See :meth:`skala_async.TicketHandle.watch`.
        """
        return iterate(self._runner, self._handle.watch(timeout, poll=poll, retry=retry), "watch()")


def _refuse_session(session: object) -> None:
    if session is not None:
        raise ValueError(
            "the sync client runs on a private event loop and makes its own HTTP "
            "session; pass session= only to the async skala_async.SkalaClient"
        )


class SkalaClient(OnLoopThread):
    """Blocking client for scripts and notebooks: :class:`skala_async.SkalaClient` without
    ``await``.

    Takes the same arguments as :class:`skala_async.SkalaClient` (``session=`` only as
    ``None``: an aiohttp session belongs to one event loop, and this client has its own).
    The async client is built inside a private event-loop thread, so it binds to that loop
    only.

    Use it as ``with SkalaClient(...) as client:`` or call :meth:`close`.
    """

    _what = "client"
    #: For a view made by :meth:`with_options`: the client it came from.
    _view_of: SkalaClient | None = None

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        token: str | None = None,
        base_url: str = _async_client.SANDBOX_URL,
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
        _refuse_session(session)
        options = {k: v for k, v in locals().items() if k not in ("self", "session")}
        self._start(lambda: _async_client.SkalaClient(**options))

    @classmethod
    def from_env(
        cls,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        token: str | None = None,
        base_url: str = _async_client.SANDBOX_URL,
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
    ) -> SkalaClient:
        """A client configured from ``SKALA_CLIENT_ID``, ``SKALA_CLIENT_SECRET`` and
        ``SKALA_BASE_URL`` (default :data:`~skala_async.SANDBOX_URL`); keyword arguments win
        (one left at its default counts as not given)."""
        _refuse_session(session)
        given = {k: v for k, v in locals().items() if k not in ("cls", "session")}
        defaults = inspect.signature(cls.from_env).parameters
        options = {k: v for k, v in given.items() if v is not defaults[k].default}
        self = cls.__new__(cls)
        self._start(lambda: _async_client.SkalaClient.from_env(**options))
        return self

    def _start(self, make: Callable[[], _async_client.SkalaClient]) -> None:
        runner = LoopThread("client")
        try:
            client = runner.call(make, "SkalaClient()")
        except BaseException:
            runner.stop()
            raise
        transport = client._transport

        def guard(what: str) -> None:
            proxy = getattr(transport, "proxy", None)  # the aiohttp transport's, if it is one
            _loopguard.check((client.base_url, proxy), what)

        runner.guard = guard
        self._runner = runner
        self._client = client
        self._finalizer = weakref.finalize(self, shutdown, runner, client.close)

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return self._client.base_url

    @property
    def client_id(self) -> str | None:
        """The OAuth2 client id (``None`` with a static token)."""
        return self._client.client_id

    @property
    def aio(self) -> _async_client.SkalaClient:
        """The underlying async client. It lives on this client's private event loop: use
        it only from coroutines running there, never from your own loop."""
        return self._client

    def __repr__(self) -> str:
        return "<sync." + repr(self._client)[1:]

    def with_options(
        self,
        *,
        timeout: float | Timeouts | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> SkalaClient:
        """A view of this client with other defaults, sharing its loop thread, session,
        token and waits; see :meth:`skala_async.SkalaClient.with_options`. Closing a view
        closes this client."""
        view = SkalaClient.__new__(SkalaClient)
        view._runner = self._runner
        view._client = self._client.with_options(timeout=timeout, retry=retry, poll=poll)
        view._finalizer = self._finalizer
        view._view_of = self  # this client (whose finalizer stops the loop) outlives the view
        return view

    # ------------------------------------------------------------------ public API

    def create_ticket(
        self,
        customer_id: str | uuid.UUID,
        summary: str,
        description: str,
        files: FileLike | Iterable[FileLike] = (),
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SyncTicketHandle:
        """Create a support ticket; returns a PENDING handle.

        See :meth:`skala_async.SkalaClient.create_ticket` for the limits checked and the
        errors raised. ``progress`` is called in the client's own thread.
        """
        draft = TicketDraft(customer_id, summary, description, files)
        return self._submit(draft, progress, timeout, retry, "create_ticket()")

    def submit(
        self,
        draft: TicketDraft,
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SyncTicketHandle:
        """Like :meth:`create_ticket`, from a :class:`~skala_async.TicketDraft`."""
        return self._submit(draft, progress, timeout, retry, "submit()")

    def _submit(
        self,
        draft: TicketDraft,
        progress: ProgressCallback | None,
        timeout: float | None,
        retry: RetryPolicy | None,
        what: str,
    ) -> SyncTicketHandle:
        submitted = self._client.submit(draft, progress=progress, timeout=timeout, retry=retry)
        return SyncTicketHandle(self._runner.run(submitted, what), self._runner)

    def get_ticket(
        self,
        ticket_id: uuid.UUID | str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Ticket:
        """The ticket's current state (one GET, retried on transient failures)."""
        return self._runner.run(
            self._client.get_ticket(ticket_id, timeout=timeout, retry=retry), "get_ticket()"
        )

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> SyncTicketHandle:
        """A handle for a ticket created earlier (for example before a restart)."""
        return SyncTicketHandle(self._client.ticket_handle(ticket_id), self._runner)

    def resume(self, token: str) -> SyncTicketHandle:
        """The handle a ``resume_token()`` describes (made by any process, async or not);
        see :meth:`skala_async.SkalaClient.resume`."""
        return SyncTicketHandle(self._client.resume(token), self._runner)

    def create_and_wait(
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
        """Create a ticket and block until its outcome, all within one ``timeout``.

        See :meth:`skala_async.SkalaClient.create_and_wait` for how the budget is spent
        and what is raised when it runs out: a :class:`~skala_async.WaitTimeoutError`
        carries the wait's ``resume_token`` (``client.resume(exc.resume_token)``).
        """
        return self._runner.run(
            self._client.create_and_wait(
                customer_id,
                summary,
                description,
                files,
                timeout=timeout,
                raise_on_failure=raise_on_failure,
                progress=progress,
                retry=retry,
                poll=poll,
            ),
            "create_and_wait()",
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
    ) -> Iterator[BulkResult]:
        """Create many tickets concurrently; yield a result as each input ends.

        Options and outcomes as in :meth:`skala_async.SkalaClient.submit_many`. ``drafts``
        is consumed lazily, in the client's own thread.
        """
        results = self._client.submit_many(
            drafts,
            concurrency=concurrency,
            journal=journal,
            wait=wait,
            wait_timeout=wait_timeout,
            resend_uncertain=resend_uncertain,
        )
        return iterate(self._runner, results, "submit_many()")

    def create_many(
        self,
        drafts: BulkInputs,
        *,
        progress: bool = False,
        concurrency: int = 8,
        journal: str | os.PathLike[str] | None = None,
        wait: bool = False,
        wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        resend_uncertain: bool = False,
    ) -> BulkReport:
        """Like :meth:`submit_many`, collected into a :class:`~skala_async.bulk.BulkReport`;
        ``progress`` as in :meth:`skala_async.SkalaClient.create_many`."""
        report = self._client.create_many(
            drafts,
            progress=progress,
            concurrency=concurrency,
            journal=journal,
            wait=wait,
            wait_timeout=wait_timeout,
            resend_uncertain=resend_uncertain,
        )
        return self._runner.run(report, "create_many()")
