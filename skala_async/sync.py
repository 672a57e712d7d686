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

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _loopguard
from . import client as _async_client
from ._waiting import DEFAULT_WAIT_TIMEOUT, TicketHandle

if TYPE_CHECKING:
    from ._backoff import PollPolicy, RetryPolicy
    from ._wire import ProgressCallback, Timeouts
    from .bulk import BulkReport, BulkResult
    from .models import FileLike, Ticket, TicketDraft, TicketStatus
    from .testing._sandbox import SkalaSandbox

__all__ = ["Sandbox", "SkalaClient", "SyncTicketHandle"]

T = TypeVar("T")

#: How long closing (explicitly or at exit) waits for the private loop to wind down.
_CLOSE_TIMEOUT = 10.0
#: How long an interrupted call waits for its cancelled coroutine to finish.
_CANCEL_TIMEOUT = 5.0


class _LoopThread:
    """A private event loop running forever in a daemon thread, until :meth:`stop`."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopped = False
        #: Called with the call's name before each blocking call: raises if blocking the
        #: calling thread cannot end well (see :mod:`skala_async._loopguard`).
        self.guard: Callable[[str], None] | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"skala-{label.replace(' ', '-')}", daemon=True
        )
        self._thread.start()

    def _main(self) -> None:
        loop = self.loop
        try:
            loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    @property
    def in_loop_thread(self) -> bool:
        """Whether the calling thread is this loop's own thread."""
        return threading.get_ident() == self._thread.ident

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self, coro: Coroutine[Any, Any, T], what: str, *, guarded: bool = True) -> T:
        """Run ``coro`` in the private loop; return its result in the calling thread.

        Its exception, if any, is raised here unchanged. If the calling thread is
        interrupted (KeyboardInterrupt ...) while waiting, the coroutine is cancelled and
        given a moment to unwind before the interruption propagates. ``guarded``: ask
        :attr:`guard` first.
        """
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError(
                f"{what} was called from the {self.label}'s own event-loop thread (from a "
                "progress callback, say) and would wait for itself forever; use the async "
                "API there"
            )
        if self._stopped:
            coro.close()
            raise RuntimeError(f"this {self.label} is closed; make a new one")
        if guarded and self.guard is not None:
            try:
                self.guard(what)
            except BaseException:
                coro.close()
                raise
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        started: list[asyncio.Task[T]] = []

        def start() -> None:  # in the loop thread
            if future.cancelled():  # interrupted before the loop got to it
                coro.close()
                return
            task = self.loop.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda t: self._deliver(t, future, what))

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed in between
            coro.close()
            raise RuntimeError(f"this {self.label} is closed; make a new one") from None
        try:
            return future.result()
        except BaseException:
            if future.cancel():  # still pending: the caller was interrupted
                unwound = threading.Event()

                def cancel() -> None:  # in the loop thread, after start()
                    if started:
                        started[0].cancel()
                        started[0].add_done_callback(lambda _: unwound.set())
                    else:
                        unwound.set()

                try:
                    self.loop.call_soon_threadsafe(cancel)
                except RuntimeError:  # pragma: no cover - closed in between
                    pass
                else:
                    unwound.wait(_CANCEL_TIMEOUT)
            raise

    def _deliver(
        self, task: asyncio.Task[T], future: concurrent.futures.Future[T], what: str
    ) -> None:
        if task.cancelled():
            if future.cancelled():
                return
            if self._stopped:
                future.set_exception(
                    RuntimeError(f"{what} did not finish: the {self.label} was closed meanwhile")
                )
            else:
                future.set_exception(asyncio.CancelledError())
            return
        exc = task.exception()  # retrieved even if nobody waits any more: no asyncio log
        if future.cancelled():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run the plain callable ``fn`` in the loop's thread and return its result."""

        async def invoke() -> T:
            return fn()

        return self.run(invoke(), what)

    def stop(self, closer: Callable[[], Awaitable[None]] | None = None) -> None:
        """Await ``closer()`` in the loop, stop the loop and join the thread; idempotent."""
        with self._lock:
            if self._stopped:
                return
            if self.in_loop_thread:
                # Collected inside our own loop: we must not block, so finish in a task.
                self._stopped = True
                self.loop.create_task(_close_then_stop(self.loop, closer))
                return
            try:
                if closer is not None and not self.loop.is_closed():
                    future = asyncio.run_coroutine_threadsafe(_await(closer), self.loop)
                    try:
                        future.result(_CLOSE_TIMEOUT)
                    except concurrent.futures.TimeoutError:  # pragma: no cover - stuck
                        future.cancel()
            finally:
                self._stopped = True
                with contextlib.suppress(RuntimeError):  # already closed
                    self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(_CLOSE_TIMEOUT)


async def _await(closer: Callable[[], Awaitable[None]]) -> None:
    await closer()


async def _close_then_stop(
    loop: asyncio.AbstractEventLoop, closer: Callable[[], Awaitable[None]] | None
) -> None:
    try:
        if closer is not None:
            await closer()
    finally:
        loop.stop()


def _shutdown(runner: _LoopThread, closer: Callable[[], Awaitable[None]] | None) -> None:
    """Finalizer: close quietly, whatever happens (it may run at interpreter exit)."""
    with contextlib.suppress(Exception):
        runner.stop(closer)


_S = TypeVar("_S", bound="_OnLoopThread")


class _OnLoopThread:
    """What the blocking wrappers share: an object living on a private loop thread, closed
    (its closer run on that loop, the loop stopped, the thread joined) by :meth:`close`, by
    ``with``, or by a finalizer if the caller forgets."""

    _what = "object"
    _runner: _LoopThread
    _finalizer: weakref.finalize[Any, Any]

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close it, stop its event loop and join its thread; idempotent."""
        if self._runner.in_loop_thread:
            raise RuntimeError(f"close() was called from the {self._what}'s own event-loop thread")
        self._finalizer()  # runs at most once

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._runner.stopped


class SyncTicketHandle:
    """A blocking view of a :class:`~skala_async.TicketHandle`.

    Same attributes (``ticket_id``, ``ticket``, ``status``, ``issue_key``, ``elapsed``,
    ``polls``) and reprs; :meth:`wait_until_created`, :meth:`refresh` and :meth:`watch`
    block instead of being awaited.
    """

    def __init__(self, handle: TicketHandle, runner: _LoopThread) -> None:
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
        return _iterate(
            self._runner, self._handle.watch(timeout, poll=poll, retry=retry), "watch()"
        )


def _iterate(runner: _LoopThread, items: AsyncIterator[T], what: str) -> Iterator[T]:
    """Drive the async iterator ``items`` (which lives on ``runner``'s loop) from this thread.

    Leaving the ``for`` loop early closes ``items`` in its loop (its ``finally`` blocks run).
    """
    done = object()

    async def step() -> T | object:
        try:
            return await items.__anext__()
        except StopAsyncIteration:
            return done

    try:
        while True:
            item = runner.run(step(), what)
            if item is done:
                return
            yield cast(T, item)
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None and not runner.stopped and not runner.in_loop_thread:
            runner.run(aclose(), what, guarded=False)


def _refuse_session(kwargs: dict[str, Any]) -> None:
    if kwargs.get("session") is not None:
        raise ValueError(
            "the sync client runs on a private event loop and makes its own HTTP "
            "session; pass session= only to the async skala_async.SkalaClient"
        )


class SkalaClient(_OnLoopThread):
    """Blocking client for scripts and notebooks: :class:`skala_async.SkalaClient` without
    ``await``.

    Takes the same arguments as :class:`skala_async.SkalaClient` (except ``session=``: an
    aiohttp session belongs to one event loop, and this client has its own). The async
    client is built inside a private event-loop thread, so it binds to that loop only.

    Use it as ``with SkalaClient(...) as client:`` or call :meth:`close`.
    """

    _what = "client"
    #: For a view made by :meth:`with_options`: the client it came from.
    _view_of: SkalaClient | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse_session(kwargs)
        self._start(lambda: _async_client.SkalaClient(*args, **kwargs))

    @classmethod
    def from_env(cls, **kwargs: Any) -> SkalaClient:
        """A client configured from ``SKALA_CLIENT_ID``, ``SKALA_CLIENT_SECRET`` and
        ``SKALA_BASE_URL`` (default :data:`~skala_async.SANDBOX_URL`); keyword arguments win."""
        _refuse_session(kwargs)
        self = cls.__new__(cls)
        self._start(lambda: _async_client.SkalaClient.from_env(**kwargs))
        return self

    def _start(self, make: Callable[[], _async_client.SkalaClient]) -> None:
        runner = _LoopThread("client")
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
        self._finalizer = weakref.finalize(self, _shutdown, runner, client.close)

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
        files: Iterable[FileLike] = (),
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SyncTicketHandle:
        """Create a support ticket; returns a PENDING handle.

        See :meth:`skala_async.SkalaClient.create_ticket` for the limits checked and the
        errors raised. ``progress`` is called in the client's own thread.
        """
        handle = self._runner.run(
            self._client.create_ticket(
                customer_id,
                summary,
                description,
                files,
                progress=progress,
                timeout=timeout,
                retry=retry,
            ),
            "create_ticket()",
        )
        return SyncTicketHandle(handle, self._runner)

    def submit(
        self,
        draft: TicketDraft,
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SyncTicketHandle:
        """Like :meth:`create_ticket`, from a :class:`~skala_async.TicketDraft`."""
        handle = self._runner.run(
            self._client.submit(draft, progress=progress, timeout=timeout, retry=retry),
            "submit()",
        )
        return SyncTicketHandle(handle, self._runner)

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
        files: Iterable[FileLike] = (),
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

    def submit_many(self, drafts: Iterable[TicketDraft], **options: Any) -> Iterator[BulkResult]:
        """Create many tickets concurrently; yield a result as each input ends.

        Options and outcomes as in :meth:`skala_async.SkalaClient.submit_many`. ``drafts``
        is consumed lazily, in the client's own thread.
        """
        results = self._client.submit_many(drafts, **options)
        return _iterate(self._runner, results, "submit_many()")

    def create_many(self, drafts: Iterable[TicketDraft], **options: Any) -> BulkReport:
        """Like :meth:`submit_many`, collected into a :class:`~skala_async.bulk.BulkReport`."""
        return self._runner.run(self._client.create_many(drafts, **options), "create_many()")


class Sandbox(_OnLoopThread):
    """A blocking wrapper of :class:`skala_async.testing.SkalaSandbox` for scripts.

    It starts serving at construction, on a private event loop in a daemon thread, so a
    sync client (or any other program) can talk to it while the calling thread blocks::

        with Sandbox() as sb, SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url) as c:
            ticket = c.create_ticket(sb.customer_id, "Summary", "Text").wait_until_created()

    Keyword arguments are those of ``SkalaSandbox``. Its knobs (``support_tickets_enabled``,
    ``processing_delay``, ``outcome`` ...) can be read and set here, and its other methods
    called, as on the async sandbox: each access runs in the sandbox's own thread, and
    coroutine methods (``wait_until_processed`` ...) block until done. After :meth:`close`
    the record (``requests``, ``tickets`` ...) can still be read.
    """

    _what = "sandbox"
    _sandbox: SkalaSandbox

    def __init__(self, **kwargs: Any) -> None:
        from .testing._sandbox import SkalaSandbox

        runner = _LoopThread("sandbox")

        async def start() -> SkalaSandbox:
            sandbox = SkalaSandbox(**kwargs)
            await sandbox.start()
            return sandbox

        try:
            sandbox = runner.run(start(), "Sandbox()")
        except BaseException:
            runner.stop()
            raise
        self._runner = runner
        self._sandbox = sandbox
        self._finalizer = weakref.finalize(self, _shutdown, runner, sandbox.close)

    @property
    def sandbox(self) -> SkalaSandbox:
        """The underlying async sandbox (it lives on this wrapper's private event loop)."""
        return self._sandbox

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:51234"``."""
        return self._sandbox.url

    @property
    def client_id(self) -> str:
        """The OAuth2 client id the sandbox accepts."""
        return self._sandbox.client_id

    @property
    def client_secret(self) -> str:
        """The matching client secret."""
        return self._sandbox.client_secret

    @property
    def customer_id(self) -> str:
        """The default customer: exists, is active and has an email."""
        return self._sandbox.customer_id

    def add_customer(
        self, email: str | None = "customer@example.com", *, customer_id: str | None = None
    ) -> str:
        """Create a customer and return its id; ``email=None`` makes one without an email."""
        sandbox = self._sandbox
        return self._in_loop(lambda: sandbox.add_customer(email, customer_id=customer_id))

    def _in_loop(self, fn: Callable[[], T]) -> T:
        runner = self._runner
        if runner.in_loop_thread or runner.stopped:
            return fn()  # nothing runs concurrently any more
        return runner.call(fn, "Sandbox")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        sandbox = self._sandbox
        value = self._in_loop(lambda: getattr(sandbox, name))
        if not callable(value):
            return value
        runner = self._runner
        if inspect.iscoroutinefunction(value):

            def run_coroutine(*args: Any, **kwargs: Any) -> Any:
                return runner.run(value(*args, **kwargs), f"Sandbox.{name}()")

            return run_coroutine

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._in_loop(lambda: value(*args, **kwargs))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        sandbox = self._sandbox
        self._in_loop(lambda: setattr(sandbox, name, value))

    def __repr__(self) -> str:
        return "<sync." + repr(self._sandbox)[1:]

    def _repr_html_(self) -> str:
        return self._in_loop(self._sandbox._repr_html_)
