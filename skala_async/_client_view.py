"""A client view (``SkalaClient.with_options``): its own options, all else its client's."""

from __future__ import annotations

from typing import Any

from ._backoff import PollPolicy, RetryPolicy
from ._client_engine import _Engine
from ._wire import Timeouts

__all__ = ["_View", "_check_poll"]


def _check_poll(poll: PollPolicy | None) -> PollPolicy | None:
    if poll is not None and not isinstance(poll, PollPolicy):
        raise TypeError(f"poll must be a PollPolicy, got {type(poll).__name__}")
    return poll


#: What a view made by ``with_options`` holds of its own; all else is its client's.
_VIEW_OWN = frozenset({"retry_policy", "poll_policy", "_timeouts", "_call_timeout", "_waits"})


class _View(_Engine):
    """What makes a client view (``SkalaClient.with_options``): its own options, all
    else its client's.

    Attributes other than the options are read from and written to the client, so state
    that changes later (the webhook health, the poll slots made on first use) stays one.
    """

    def __init__(
        self,
        root: _Engine,
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
    def _root(self) -> _Engine:
        root: _Engine = self.__dict__["_view_of"]
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
