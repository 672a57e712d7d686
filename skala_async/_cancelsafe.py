"""Bound an await by a deadline without ever losing a cancel.

``asyncio.wait_for`` is not safe for that before Python 3.12: when the awaited thing
finishes in the same event-loop turn as a cancel of the caller, it returns the result and
the cancel is lost (the caller goes on as if nothing happened). :func:`within` is used
instead everywhere a caller's deadline bounds an await. On 3.11 and later it is
``asyncio.timeout_at``, which tells its own expiry from a cancel aimed at the task; on 3.10
it is :func:`_within_by_waiter`, which never cancels the calling task at all, so there is
nothing to tell apart: a cancel of the caller always propagates.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["NATIVE", "within"]

T = TypeVar("T")

#: Whether ``asyncio.timeout_at`` exists (Python 3.11+).
NATIVE = sys.version_info >= (3, 11)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Nobody awaits a task abandoned by a cancel: mark its outcome as seen.
    if not task.cancelled():
        task.exception()


async def _within_by_waiter(aw: Awaitable[T], deadline: float | None) -> T:
    """:func:`within` without ``asyncio.timeout``: the awaitable runs as a task of its own,
    and the caller waits on a future released by its end or by the deadline. A cancel of
    the caller cancels that task and propagates, whatever finished in the same turn."""
    if deadline is None:
        return await aw
    loop = asyncio.get_running_loop()
    inner: asyncio.Future[T] = asyncio.ensure_future(aw)
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(deadline, _release, waiter)
    inner.add_done_callback(lambda _: _release(waiter))
    try:
        await waiter
    except BaseException:
        inner.cancel()
        inner.add_done_callback(_retrieve)
        raise
    finally:
        timer.cancel()
    if inner.done():
        return inner.result()
    inner.cancel()
    inner.add_done_callback(_retrieve)
    # Let it unwind before reporting the timeout (a cancel of ours still propagates).
    await asyncio.wait((inner,))
    raise TimeoutError


if sys.version_info >= (3, 11):

    async def within(aw: Awaitable[T], deadline: float | None) -> T:
        """Await ``aw``; raise :class:`TimeoutError` at ``deadline`` (event-loop time).

        ``None`` means no deadline. A cancel of the calling task is never turned into a
        result or a timeout, whatever finishes in the same turn: it propagates as
        ``CancelledError``.
        """
        async with asyncio.timeout_at(deadline):
            return await aw

else:  # pragma: no cover - Python 3.10
    within = _within_by_waiter
