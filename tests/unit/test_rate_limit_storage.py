"""The in-process rate-limit counts: the same limit as ``memory://``, without a timer thread per hit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from tests.helpers import wait_for
from webapp.api.ratelimit import MEMORY_STORAGE_URI, SweptMemoryStorage


@pytest.fixture
def storage() -> Iterator[SweptMemoryStorage]:
    made = storage_from_string(MEMORY_STORAGE_URI)
    assert isinstance(made, SweptMemoryStorage)
    yield made
    made.timer.cancel()


def test_many_hits_start_at_most_one_sweep(storage: SweptMemoryStorage) -> None:
    timers = {id(storage.timer)}
    for _ in range(200):
        storage.incr("LIMITER/192.0.2.1/donations", expiry=60)
        timers.add(id(storage.timer))
    assert len(timers) <= 2  # the one made with the storage, and at most one sweep since
    assert storage.get("LIMITER/192.0.2.1/donations") == 200


def test_the_limit_holds_and_each_window_ends_on_time(storage: SweptMemoryStorage) -> None:
    limiter = FixedWindowRateLimiter(storage)
    limit = parse("3/second")
    assert [limiter.hit(limit, "192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(limit, "198.51.100.7")  # another client's count is its own
    wait_for(lambda: limiter.hit(limit, "192.0.2.1"), timeout=5, what="the next window to take a hit")


def test_ended_windows_are_swept_away_by_a_later_hit(storage: SweptMemoryStorage) -> None:
    storage.incr("LIMITER/192.0.2.1/donations", expiry=0.01)

    def swept() -> bool:  # as in limits' own storage, hits schedule the sweep: another client keeps coming
        storage.incr("LIMITER/198.51.100.7/donations", expiry=60)
        return "LIMITER/192.0.2.1/donations" not in storage.storage

    wait_for(swept, timeout=10, what="the sweep")
    assert "LIMITER/192.0.2.1/donations" not in storage.expirations
