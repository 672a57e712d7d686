"""Delay schedules (``_backoff``): retry backoff and poll intervals, with seeded randomness."""

from __future__ import annotations

import itertools
import math
import random

import attrs
import pytest

from skala_async._backoff import PollPolicy, RetryPolicy

SEEDS = range(20)


def samples(fn, n: int = 400, seed: int = 0) -> list[float]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return [fn(rng) for _ in range(n)]


# =========================================================================== RetryPolicy


class TestRetryPolicy:
    def test_defaults(self) -> None:
        p = RetryPolicy()
        assert (p.attempts, p.initial, p.cap, p.max_retry_after) == (4, 0.5, 8.0, 60.0)

    @pytest.mark.parametrize(("retry", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)])
    def test_full_jitter_bounds(self, retry: int, ceiling: float) -> None:
        p = RetryPolicy()
        values = samples(lambda rng: p.delay(retry, rng=rng))
        assert all(0 <= v <= ceiling for v in values)
        # Full jitter: spread over the whole range, not pinned near the ceiling or zero.
        assert min(values) < 0.1 * ceiling
        assert max(values) > 0.9 * ceiling
        assert 0.4 * ceiling < sum(values) / len(values) < 0.6 * ceiling

    def test_cap(self) -> None:
        p = RetryPolicy(initial=1.0, cap=3.0)
        for retry in (3, 4, 10, 60, 1000):
            values = samples(lambda rng, r=retry: p.delay(r, rng=rng), n=200)
            assert all(0 <= v <= 3.0 for v in values)
            assert max(values) > 2.7

    def test_retry_zero_or_negative_uses_initial(self) -> None:
        p = RetryPolicy(initial=2.0, cap=100.0)
        for retry in (0, -3):
            values = samples(lambda rng, r=retry: p.delay(r, rng=rng), n=200)
            assert all(0 <= v <= 2.0 for v in values)

    def test_seeded_rng_is_deterministic(self) -> None:
        p = RetryPolicy()
        a = [p.delay(3, rng=random.Random(42)) for _ in range(3)]
        b = [p.delay(3, rng=random.Random(42)) for _ in range(3)]
        assert a == b
        assert a[0] == random.Random(42).uniform(0, 2.0)

    def test_retry_after_is_a_floor(self) -> None:
        p = RetryPolicy()  # retry 1 draws from [0, 0.5]
        for seed in SEEDS:
            assert p.delay(1, retry_after=5.0, rng=random.Random(seed)) == 5.0

    def test_retry_after_beyond_cap_still_honoured(self) -> None:
        p = RetryPolicy(cap=1.0)
        assert p.delay(10, retry_after=30.0, rng=random.Random(0)) == 30.0

    def test_small_retry_after_does_not_lower_jitter(self) -> None:
        p = RetryPolicy(initial=10.0, cap=10.0)
        for seed in SEEDS:
            jittered = p.delay(1, rng=random.Random(seed))
            floored = p.delay(1, retry_after=0.01, rng=random.Random(seed))
            assert floored == max(0.01, jittered)
            assert floored >= 0.01

    def test_retry_after_zero(self) -> None:
        p = RetryPolicy()
        for seed in SEEDS:
            d = p.delay(2, retry_after=0.0, rng=random.Random(seed))
            assert 0 <= d <= 1.0

    @pytest.mark.parametrize("attempts", [0, -1, 1.5, "3", None])
    def test_bad_attempts(self, attempts: object) -> None:
        with pytest.raises(ValueError, match="attempts"):
            RetryPolicy(attempts=attempts)  # type: ignore[arg-type]

    def test_one_attempt_allowed(self) -> None:
        assert RetryPolicy(attempts=1).attempts == 1

    @pytest.mark.parametrize("value", [0, -0.5, math.nan])
    @pytest.mark.parametrize("field", ["initial", "cap"])
    def test_bad_positive_fields(self, field: str, value: float) -> None:
        with pytest.raises(ValueError, match=field):
            RetryPolicy(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [-1, -0.001, math.nan])
    def test_bad_max_retry_after(self, value: float) -> None:
        with pytest.raises(ValueError, match="max_retry_after"):
            RetryPolicy(max_retry_after=value)

    def test_max_retry_after_zero_allowed(self) -> None:
        assert RetryPolicy(max_retry_after=0).max_retry_after == 0

    def test_frozen(self) -> None:
        p = RetryPolicy()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            p.attempts = 9  # type: ignore[misc]


# =========================================================================== PollPolicy


class TestPollPolicy:
    def test_defaults(self) -> None:
        p = PollPolicy()
        assert (p.first_delay, p.min_interval, p.max_interval, p.growth, p.jitter) == (
            1.0,
            1.0,
            30.0,
            0.25,
            1.0,
        )

    @pytest.mark.parametrize(
        ("elapsed", "expected"),
        [(0, 1.0), (2, 1.0), (4, 1.0), (8, 2.0), (40, 10.0), (100, 25.0), (120, 30.0), (1e6, 30.0)],
    )
    def test_growth(self, elapsed: float, expected: float) -> None:
        assert PollPolicy().interval(elapsed) == pytest.approx(expected)

    def test_interval_grows_with_elapsed(self) -> None:
        p = PollPolicy()
        gaps = [p.interval(t) for t in (0, 5, 10, 20, 40, 80, 160)]
        assert gaps == sorted(gaps)
        assert gaps[0] == 1.0
        assert gaps[-1] == 30.0

    def test_without_jitter_the_schedule_is_fixed(self) -> None:
        p = PollPolicy(jitter=0.0)
        assert {p.first_poll(random.Random(seed)) for seed in SEEDS} == {1.0}
        points = [p.first_poll()]
        while points[-1] < 30:
            points.append(p.next_poll(points[-1], points[-1]))
        assert points == pytest.approx([1, 2, 3, 4, 5, 6.25, 7.8125, 9.765625, 12.20703125,
                                        15.2587890625, 19.073486328125, 23.84185791015625,
                                        29.802322387695312, 37.25290298461914])  # fmt: skip

    def test_phase_spreads_first_polls_over_one_gap(self) -> None:
        p = PollPolicy()
        values = samples(lambda rng: p.first_poll(rng))
        assert all(1.0 <= v < 2.0 for v in values)
        assert min(values) < 1.05
        assert max(values) > 1.95
        half = PollPolicy(jitter=0.5, first_delay=8.0)  # first gap 2 s: spread over 1 s
        values = samples(lambda rng: half.first_poll(rng))
        assert all(8.0 <= v < 9.0 for v in values)
        assert max(values) > 8.9

    @pytest.mark.parametrize("seed", SEEDS)
    def test_every_gap_keeps_the_lag_bound(self, seed: int) -> None:
        # Whatever the phase, a ticket done at T >= first_delay is seen by
        # T + max(min_interval, growth * T), capped by max_interval.
        p = PollPolicy()
        rng = random.Random(seed)
        points = [p.first_poll(rng)]
        while points[-1] < 600:
            points.append(p.next_poll(points[-1], points[-1]))
        assert points[0] <= p.first_delay + p.min_interval
        for before, after in itertools.pairwise(points):
            assert 0 < after - before <= p.clamp(p.growth * before) + 1e-9

    def test_seeded_rng_is_deterministic(self) -> None:
        p = PollPolicy()
        assert p.first_poll(random.Random(7)) == p.first_poll(random.Random(7))
        assert p.first_poll(random.Random(7)) != p.first_poll(random.Random(8))

    def test_next_poll_skips_points_a_slow_answer_overran(self) -> None:
        p = PollPolicy(jitter=0.0)
        # Scheduled at 5 s; the answer came at 8 s: 6.25 and 7.8125 are not made up.
        assert p.next_poll(5.0, 8.0) == pytest.approx(9.765625)
        assert p.next_poll(5.0, 5.001) == 6.25

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [(0.0, 2.0), (0.5, 2.0), (5.0, 5.0), (10.0, 10.0), (11.0, 10.0), (3600.0, 10.0)],
    )
    def test_retry_after_clamped(self, retry_after: float, expected: float) -> None:
        p = PollPolicy(min_interval=2.0, max_interval=10.0, jitter=0.0)
        # elapsed 0: the schedule alone would say min_interval (2 s).
        assert p.interval(0, retry_after=retry_after) == expected

    def test_retry_after_never_lowers_gap(self) -> None:
        p = PollPolicy()
        assert p.interval(80, retry_after=1.0) == 20.0  # the schedule's 20 s wins

    def test_retry_after_moves_the_next_poll_to_a_later_point(self) -> None:
        p = PollPolicy(jitter=0.0)
        # Polled at 5 s, told to come back in 3 s: the first point at or after 8 s.
        assert p.next_poll(5.0, 5.0, retry_after=3.0) == pytest.approx(9.765625)
        # A hint below the schedule changes nothing; one above max_interval is clamped.
        assert p.next_poll(5.0, 5.0, retry_after=0.1) == 6.25
        later = p.next_poll(100.0, 100.0, retry_after=1e9)
        assert 130.0 <= later <= 130.0 + 30.0

    def test_clamp(self) -> None:
        p = PollPolicy(min_interval=2.0, max_interval=10.0)
        assert [p.clamp(x) for x in (-1, 0, 2, 5, 10, 11)] == [2.0, 2.0, 2.0, 5.0, 10.0, 10.0]

    def test_min_equal_max_allowed(self) -> None:
        p = PollPolicy(min_interval=3.0, max_interval=3.0, jitter=0.0)
        assert p.interval(0) == 3.0
        assert p.interval(1000) == 3.0

    def test_min_above_max_rejected(self) -> None:
        with pytest.raises(ValueError, match="min_interval"):
            PollPolicy(min_interval=31.0, max_interval=30.0)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("first_delay", -1.0),
            ("min_interval", -1.0),
            ("min_interval", 0.0),
            ("max_interval", -1.0),
            ("max_interval", 0.0),
            ("growth", -0.1),
            ("jitter", -0.1),
            ("jitter", 1.5),
            ("first_delay", math.nan),
            ("growth", math.nan),
            ("jitter", math.nan),
        ],
    )
    def test_bad_values_rejected(self, field: str, value: float) -> None:
        with pytest.raises(ValueError, match=field):
            PollPolicy(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("field", "value"),
        [("first_delay", 0.0), ("growth", 0.0), ("jitter", 0.0), ("jitter", 1.0)],
    )
    def test_edge_values_allowed(self, field: str, value: float) -> None:
        p = PollPolicy(**{field: value})  # type: ignore[arg-type]
        assert getattr(p, field) == value

    def test_zero_growth_is_a_fixed_interval(self) -> None:
        p = PollPolicy(growth=0.0, min_interval=4.0, jitter=0.0)
        assert {p.interval(t) for t in (0, 10, 1000)} == {4.0}
