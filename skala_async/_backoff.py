"""Pure delay schedules: retries after errors, and polls while a ticket is pending.

Two schedules, because they answer different questions:

* :class:`RetryPolicy` spaces out attempts after an error (429, 5xx, a dropped connection).
  Capped exponential backoff with *full jitter* (``uniform(0, min(cap, base * 2**n))``), so
  many clients that failed together do not retry together. ``Retry-After`` is a floor.
* :class:`PollPolicy` spaces out GETs of a pending ticket. The polls lie on a schedule
  anchored at the ticket's acceptance: after a separate ``first_delay``, each gap is
  ``growth`` times the time elapsed at the previous poll (geometric growth), clamped to
  ``[min_interval, max_interval]``. Every gap is at most ``max(min_interval, growth *
  elapsed)``, so a ticket that took ``T`` seconds (at least ``first_delay``) is seen at
  most ``max(min_interval, growth * T)`` after it finished, for a number of GETs that
  grows only with the logarithm of ``T``. Waits created together are spread by a random
  *phase*: each wait's whole schedule starts up to one gap later (``jitter`` of a gap).
  A phase keeps every gap within the bound; a jitter on each gap (``±10 %``) would break
  the bound for the gaps drawn long and spend GETs on the ones drawn short.
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
        first_delay: seconds from the ticket's acceptance to the earliest first GET (a
            ticket is never done the instant it is accepted).
        min_interval: smallest gap between two GETs, also the floor for ``Retry-After``.
        max_interval: largest gap; also the ceiling a server's ``Retry-After`` is clamped to,
            so a server hint can never make a wait sleep for minutes.
        growth: the gap as a share of the time elapsed at the previous GET (0.25: poll
            again after a quarter of the time waited), so detection lags at most 25 %.
        jitter: the spread of the random phase, as a share of the first gap: a wait's
            first GET comes ``first_delay`` plus ``uniform(0, jitter)`` of a gap after
            acceptance, and the rest of its schedule follows from there. ``0`` puts every
            wait on the same schedule.

    Defaults: first GET 1 to 2 s after acceptance, then every ``max(1 s, 0.25 * elapsed)``,
    never more than 30 s apart. For tickets done in 1 to 30 s that is about 9.2 GETs each
    with a detection lag within ``max(1 s, 25 %)`` (``benchmarks/bench_wait.py``).
    """

    first_delay: float = attrs.field(default=1.0, validator=_non_negative)
    min_interval: float = attrs.field(default=1.0, validator=_positive)
    max_interval: float = attrs.field(default=30.0, validator=_positive)
    growth: float = attrs.field(default=0.25, validator=_non_negative)
    jitter: float = attrs.field(default=1.0, validator=_fraction)

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval}) must not exceed "
                f"max_interval ({self.max_interval})"
            )

    def clamp(self, seconds: float) -> float:
        """``seconds`` clamped to ``[min_interval, max_interval]``."""
        return min(self.max_interval, max(self.min_interval, seconds))

    def interval(self, elapsed: float, retry_after: float | None = None) -> float:
        """The gap after a GET made ``elapsed`` seconds after acceptance.

        A server's ``Retry-After`` raises the gap, but only up to ``max_interval``.
        """
        gap = self.clamp(self.growth * elapsed)
        if retry_after is not None:
            gap = max(gap, self.clamp(retry_after))
        return gap

    def first_poll(self, rng: random.Random | None = None) -> float:
        """Seconds from acceptance to a wait's first GET: ``first_delay`` plus its phase."""
        phase = self.jitter * (rng or random).random()
        return self.first_delay + phase * self.interval(self.first_delay)

    def next_poll(self, scheduled: float, now: float, retry_after: float | None = None) -> float:
        """The next point of the schedule through ``scheduled``, after ``now``.

        Times are seconds since acceptance. Points a slow GET overran are skipped rather
        than made up; a ``Retry-After`` (clamped to the policy) pushes the next GET to the
        first point at least that far from ``now``.
        """
        floor = now if retry_after is None else now + self.clamp(retry_after)
        point = scheduled
        while point <= floor:
            point += self.interval(point)
        return point


#: The slow fallback polling while webhooks arrive (a client's default ``webhook_poll``):
#: first GET 60 to 90 s after acceptance (60 s plus the phase), then every 30 to 120 s.
WEBHOOK_FALLBACK_POLL = PollPolicy(first_delay=60.0, min_interval=30.0, max_interval=120.0)
