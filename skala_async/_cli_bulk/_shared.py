"""The CLI's shared pieces that ``skala-tickets bulk`` uses: the one place it imports them from."""

from __future__ import annotations

from skala_async.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    StatusLine,
    _Failure,
    _make_client,
    _positive_seconds,
    _Run,
    bar,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "StatusLine",
    "_Failure",
    "_Run",
    "_make_client",
    "_positive_seconds",
    "bar",
]
