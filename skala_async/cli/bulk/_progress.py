"""The run's counts (Ctrl-C included) and the progress line."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from skala_async.bulk import BulkOutcome, BulkResult, counts_text
from skala_async.cli._common import StatusLine, bar
from skala_async.models import TicketDraft

if TYPE_CHECKING:
    from skala_async._waiting import TicketHandle
    from skala_async.bus import TicketBus
    from skala_async.client import SkalaClient


class Tally:
    """What a bulk run has done so far, for the progress line and for Ctrl-C: outcomes,
    inputs Ripio accepted (a 202, or created in an earlier run), creates in flight, and
    with ``--wait`` the waits that ended."""

    def __init__(self, total: int, wait: bool) -> None:
        self.total = total
        self.wait = wait
        self.counts = {o.value: 0 for o in BulkOutcome}
        self.in_flight = 0
        #: Tickets accepted whose result is not out yet (their wait runs).
        self.waiting: set[uuid.UUID] = set()
        self.finals = {"CREATED": 0, "FAILED": 0, "no outcome": 0}

    @property
    def accepted(self) -> int:
        """Inputs Ripio accepted so far (waits done or not)."""
        return self.counts[BulkOutcome.CREATED.value] + len(self.waiting)

    @property
    def sent(self) -> int:
        """Inputs whose create has an answer (or that needed none): accepted or not."""
        return sum(self.counts.values()) + len(self.waiting)

    def accept(self, ticket_id: uuid.UUID) -> None:
        self.waiting.add(ticket_id)

    def add(self, result: BulkResult) -> None:
        self.counts[result.outcome.value] += 1
        if result.ticket_id is not None:
            self.waiting.discard(result.ticket_id)
        if self.wait and result.outcome is BulkOutcome.CREATED:
            ticket = result.ticket
            status = ticket.status.value if ticket is not None else ""
            key = status if status in ("CREATED", "FAILED") else "no outcome"
            self.finals[key] += 1

    def text(self) -> str:
        """``accepted 790 · rejected 3 · uncertain 1 · failed 1 · waits done 412/790 ...``"""
        c = self.counts
        parts = [
            f"accepted {self.accepted}",
            f"rejected {c['rejected']}",
            f"uncertain {c['uncertain']}",
            f"failed {c['failed']}",
        ]
        if self.in_flight:
            parts.append(f"in flight {self.in_flight}")
        if self.wait:
            finals = ", ".join(f"{k} {v}" for k, v in self.finals.items())
            parts.append(f"waits done {c['created']}/{self.accepted} ({finals})")
        return " · ".join(parts)


class _Watched:
    """The client as a bulk run sees it, telling a :class:`Tally` when Ripio accepts an
    input, and noting when each input's create was sent."""

    def __init__(self, client: SkalaClient, tally: Tally, changed: Callable[[], None]) -> None:
        self._client = client
        self._tally = tally
        self._changed = changed
        #: The index of each draft given to the run, by ``id()``, until it is sent.
        self.index_of: dict[int, int] = {}
        #: When each input's create was sent, by index.
        self.sent_at: dict[int, float] = {}

    @property
    def bus(self) -> TicketBus:
        return self._client.bus

    async def submit(self, draft: TicketDraft) -> TicketHandle:
        index = self.index_of.pop(id(draft), None)
        if index is not None:
            self.sent_at[index] = time.time()
        self._tally.in_flight += 1
        try:
            handle = await self._client.submit(draft)
        finally:
            self._tally.in_flight -= 1
        self._tally.accept(handle.ticket_id)
        self._changed()
        return handle

    def ticket_handle(self, ticket_id: uuid.UUID | str) -> TicketHandle:
        handle = self._client.ticket_handle(ticket_id)  # created earlier, waited for now
        self._tally.accept(handle.ticket_id)
        self._changed()
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class BulkProgress(StatusLine):
    """``[####....] 412/1000 created 400 · rejected 3 · uncertain 1 · failed 0 · 35/s · ETA 17s``

    With ``--wait`` the bar counts inputs Ripio answered, and the line shows the waits that
    ended beside them: ``[######..] 795/1000 sent · accepted 790 · rejected 3 · uncertain 1
    · failed 1 · waits done 412/790 (CREATED 410, FAILED 2, no outcome 0) · 35/s · ETA 6s``.
    """

    def __init__(
        self, stream: TextIO, total: int, width: int = 24, *, tally: Tally | None = None
    ) -> None:
        super().__init__(stream)
        self.total = total
        self.width = width
        self.started = time.monotonic()
        self.tally = tally if tally is not None else Tally(total, wait=False)
        self._own = tally is None
        self._last = 0.0
        self._later: asyncio.TimerHandle | None = None

    def __call__(self, result: BulkResult) -> None:
        if self._own:
            self.tally.add(result)
        self.refresh()

    def refresh(self) -> None:
        """Redraw (at most every 0.1 s, and always once everything is done). A change that
        comes too soon after the last draw is drawn 0.1 s later, so the line never stays
        behind while the run waits."""
        now = time.monotonic()
        tally = self.tally
        done = tally.sent if tally.wait else sum(tally.counts.values())
        finished = sum(tally.counts.values()) >= self.total
        if now - self._last < 0.1 and not finished:
            if self._later is None:
                with contextlib.suppress(RuntimeError):  # no loop: the next change draws it
                    self._later = asyncio.get_running_loop().call_later(0.1, self._deferred)
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 and self.total >= done else 0.0
        counts = f"sent · {tally.text()}" if tally.wait else counts_text(tally.counts)
        self.draw(
            f"[{bar(self.width, done, self.total)}] {done}/{self.total} {counts} · "
            f"{rate:.0f}/s · ETA {eta:.0f}s "
        )

    def _deferred(self) -> None:
        self._later = None
        self.refresh()

    def finish(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        super().finish()
