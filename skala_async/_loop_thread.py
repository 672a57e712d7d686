"""The private event loop in a daemon thread that the blocking facade runs the async
client on, and what its blocking wrappers share."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

__all__ = ["LoopThread", "OnLoopThread", "iterate", "shutdown"]

T = TypeVar("T")

#: How long closing (explicitly or at exit) waits for the private loop to wind down.
_CLOSE_TIMEOUT = 10.0
#: How long an interrupted call waits for its cancelled coroutine to finish.
_CANCEL_TIMEOUT = 5.0


class LoopThread:
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


def shutdown(runner: LoopThread, closer: Callable[[], Awaitable[None]] | None) -> None:
    """Finalizer: close quietly, whatever happens (it may run at interpreter exit)."""
    with contextlib.suppress(Exception):
        runner.stop(closer)


_S = TypeVar("_S", bound="OnLoopThread")


class OnLoopThread:
    """What the blocking wrappers share: an object living on a private loop thread, closed
    (its closer run on that loop, the loop stopped, the thread joined) by :meth:`close`, by
    ``with``, or by a finalizer if the caller forgets."""

    _what = "object"
    _runner: LoopThread
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


def iterate(runner: LoopThread, items: AsyncIterator[T], what: str) -> Iterator[T]:
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
