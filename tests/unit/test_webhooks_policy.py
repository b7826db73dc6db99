"""The retry schedule: about 1 s, doubling, jittered, capped at 10 min, for 24 h."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bloomr.webhooks.policy import DEFAULT_POLICY, RetryPolicy

P = DEFAULT_POLICY
HOUR_MS = 3600 * 1000


def test_delays_double_from_one_second_without_jitter() -> None:
    assert [P.delay(n, 0.5) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]


def test_delays_are_capped_at_ten_minutes() -> None:
    assert P.delay(10, 0.5) == 512
    assert P.delay(11, 0.5) == 600
    assert P.delay(1000, 0.99) == 600
    assert P.delay(10**9, 0.0) == 600  # no overflow however long it fails


def test_jitter_is_twenty_percent_either_way() -> None:
    assert P.delay(1, 0.0) == pytest.approx(0.8)
    assert P.delay(1, 0.999999) == pytest.approx(1.2, abs=1e-5)
    assert P.delay(3, 0.0) == pytest.approx(3.2)


@given(
    st.integers(min_value=1, max_value=200),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_every_delay_is_within_its_band(failures: int, rand: float) -> None:
    delay = P.delay(failures, rand)
    base = min(2.0 ** (failures - 1), 1e30)
    assert 0.8 * min(base, 750) <= delay or delay == 600
    assert delay <= min(base * 1.2, 600)
    assert delay > 0


def test_next_attempt_is_now_plus_the_delay() -> None:
    assert P.next_attempt_ms(1, first_attempt_ms=0, now_ms=5_000, rand=0.5) == 6_000
    assert P.next_attempt_ms(2, first_attempt_ms=0, now_ms=6_000, rand=0.5) == 8_000


def test_a_batch_is_dropped_24_hours_after_its_first_attempt() -> None:
    first = 1_000
    end = first + 24 * HOUR_MS
    assert P.next_attempt_ms(200, first, end - 1, 0.5) == end  # last retry at the end
    assert P.next_attempt_ms(200, first, end, 0.5) is None
    assert P.next_attempt_ms(200, first, end + 5, 0.5) is None


def test_a_whole_failing_day_follows_the_schedule() -> None:
    """Fail every attempt from t=0: retries get sparser until 10 min apart, and the batch
    is dropped after exactly 24 h, after about 150 attempts."""
    rng = random.Random(7)
    now, failures, gaps = 0, 0, []
    while True:
        failures += 1
        next_ms = P.next_attempt_ms(failures, 0, now, rng.random())
        if next_ms is None:
            break
        gaps.append(next_ms - now)
        now = next_ms
    assert now == 24 * HOUR_MS
    assert 800 <= gaps[0] <= 1200 and 1600 <= gaps[1] <= 2400
    assert max(gaps) == 600_000
    assert 140 <= failures <= 160


def test_a_custom_policy() -> None:
    fast = RetryPolicy(first_delay=0.01, max_delay=0.05, retry_for=1.0, jitter=0.0)
    assert [fast.delay(n, 0.3) for n in (1, 2, 3, 4)] == [0.01, 0.02, 0.04, 0.05]
    assert fast.next_attempt_ms(1, 0, 999, 0.0) == 1_000
    assert fast.next_attempt_ms(1, 0, 1_000, 0.0) is None
