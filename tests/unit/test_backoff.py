"""The one backoff formula: exact without jitter, bounded with it, never overflowing."""

from __future__ import annotations

import pytest

from webapp.backoff import Backoff, exponential_delay


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (7, 60.0), (5000, 60.0)],
)
def test_the_local_runners_retry_pauses_double_from_the_first_up_to_a_minute(failures: int, expected: float) -> None:
    assert exponential_delay(failures, initial=1.0, maximum=60.0) == expected


def test_without_jitter_backoff_gives_exact_delays_and_starts_again_after_a_reset() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, jitter=0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_stays_within_its_share_of_each_delay() -> None:
    for failures in range(8):
        delay = exponential_delay(failures, initial=1.0, maximum=10.0, jitter=0.2)
        base = min(10.0, 2.0**failures)
        assert 0.8 * base <= delay <= 1.2 * base


def test_a_loop_that_fails_for_days_keeps_its_longest_delay() -> None:
    backoff = Backoff(initial=0.8, maximum=30.0)
    for _ in range(2000):
        delay = backoff.next_delay()
    assert 24.0 <= delay <= 36.0
