"""Exponential backoff with jitter, for loops that must never die (watches, reconnects, pollers)."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial`` doubling up to ``maximum``, each jittered by ±``jitter``; ``reset`` after a success."""

    def __init__(self, *, initial: float = 0.8, maximum: float = 30.0, jitter: float = 0.2) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * 2**self._attempt)
        self._attempt += 1
        return float(base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self) -> None:
        self._attempt = 0
