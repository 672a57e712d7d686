"""Pure delay schedules: retries after errors, and polls while a ticket is pending.

Two schedules, because they answer different questions:

* :class:`RetryPolicy` spaces out attempts after an error (429, 5xx, a dropped connection).
  Capped exponential backoff with *full jitter* (``uniform(0, min(cap, base * 2**n))``), so
  many clients that failed together do not retry together. ``Retry-After`` is a floor.
* :class:`PollPolicy` spaces out GETs of a pending ticket. Its interval grows with the time
  already waited (``growth * elapsed``, i.e. geometric growth), clamped to
  ``[min_interval, max_interval]``, after a separate ``first_delay``. That bounds the
  detection lag to about ``growth`` of the ticket's processing time while costing a number
  of GETs that grows only with the logarithm of it. The jitter is proportional
  (``±jitter``): full jitter would halve the mean interval and nearly double the GETs for
  the same worst-case lag. ``jitter=1.0`` gives full jitter if you want it.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["PollPolicy", "RetryPolicy"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def check_timeout(value: float | None, name: str = "timeout") -> None:
    """Refuse a deadline that is not a positive number of seconds (``None``: no deadline)."""
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 seconds or None, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry a request that failed in a retryable way.

    Attributes:
        attempts: total attempts, the first one included (``1`` disables retries).
        initial: ceiling of the first retry's delay, seconds.
        cap: largest delay ceiling, seconds.
        max_retry_after: a ``Retry-After`` longer than this is not waited for; the error is
            raised instead (a server asking for minutes is better surfaced than slept on).

    Defaults: 4 attempts, delays drawn from ``[0, 0.5]``, ``[0, 1]``, ``[0, 2]`` seconds
    (capped at 8): at most 3.5 s of waiting before giving up on a flapping server.
    """

    attempts: int = attrs.field(default=4)
    initial: float = attrs.field(default=0.5, validator=_positive)
    cap: float = attrs.field(default=8.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)

    @attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"attempts must be an integer >= 1, got {value!r}")

    def delay(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to sleep before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.cap, self.initial * 2 ** max(0, retry - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return jittered if retry_after is None else max(retry_after, jittered)


@attrs.frozen
class PollPolicy:
    """When to poll a pending ticket.

    Attributes:
        first_delay: seconds from the handle's creation to the first GET (a ticket is never
            done the instant it is accepted).
        min_interval: smallest gap between two GETs before jitter, also the floor for
            ``Retry-After``.
        max_interval: largest gap; also the ceiling a server's ``Retry-After`` is clamped to,
            so a server hint can never make a wait sleep for minutes.
        growth: the gap as a share of the time waited so far (0.25: poll again after a
            quarter of the elapsed time), so detection lags at most about 25 %.
        jitter: proportional jitter, the gap is multiplied by ``uniform(1-jitter, 1+jitter)``
            (capped by ``max_interval``); ``1.0`` is full jitter.

    Defaults: first GET after 1 s, then every ``max(1 s, 0.25 * elapsed)`` ±10 %, never more
    than 30 s apart. For tickets done in 1 to 30 s that is about 9.6 GETs each with a
    detection lag under ``max(1 s, 25 %)`` for 97 % of them (``benchmarks/bench_wait.py``).
    """

    first_delay: float = attrs.field(default=1.0, validator=_non_negative)
    min_interval: float = attrs.field(default=1.0, validator=_positive)
    max_interval: float = attrs.field(default=30.0, validator=_positive)
    growth: float = attrs.field(default=0.25, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_fraction)

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval}) must not exceed "
                f"max_interval ({self.max_interval})"
            )

    def clamp(self, seconds: float) -> float:
        """``seconds`` clamped to ``[min_interval, max_interval]``."""
        return min(self.max_interval, max(self.min_interval, seconds))

    def interval(
        self, elapsed: float, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds until the next GET, ``elapsed`` seconds after the ticket was accepted.

        A server's ``Retry-After`` raises the gap, but only up to ``max_interval``.
        """
        ceiling = self.clamp(self.growth * elapsed)
        gap = ceiling * (1 + self.jitter * (2 * (rng or random).random() - 1))
        gap = min(self.max_interval, max(gap, 0.0))
        if retry_after is not None:
            gap = max(gap, self.clamp(retry_after))
        return gap
