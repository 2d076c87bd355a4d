"""Exponential backoff: the one formula behind every growing delay (watches, reconnects, pollers, retries).

:func:`exponential_delay` says how long to wait after a given number of
failures; :class:`Backoff` counts the failures for a loop that must never die.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 64
"""Beyond this many doublings every delay is at its maximum: the power is capped so a float never overflows."""


def exponential_delay(failures: int, *, initial: float, maximum: float, jitter: float = 0.0) -> float:
    """``initial`` doubled ``failures`` times, at most ``maximum``, then jittered by ±``jitter`` (``0``: exact)."""
    base = min(maximum, initial * 2 ** min(failures, _MAX_DOUBLINGS))
    if not jitter:
        return float(base)
    return float(base * random.uniform(1 - jitter, 1 + jitter))


class Backoff:
    """Delays of ``initial`` doubling up to ``maximum``, each jittered by ±``jitter``; ``reset`` after a success."""

    def __init__(self, *, initial: float = 0.8, maximum: float = 30.0, jitter: float = 0.2) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._attempt = 0

    def next_delay(self) -> float:
        delay = exponential_delay(self._attempt, initial=self.initial, maximum=self.maximum, jitter=self.jitter)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
