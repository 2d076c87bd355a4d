"""The launch rate limit (``RATE_LIMIT`` per client address, :mod:`webapp.api.clients`), by Flask-Limiter.

Without ``REDIS_URL`` the counts live in this process, in :class:`SweptMemoryStorage`
(``MEMORY_STORAGE_URI``); with it, in Redis, shared by every instance.
"""

from __future__ import annotations

import math
import threading
import time

from flask_limiter import Limiter
from limits.storage import MemoryStorage

from webapp.api.clients import client_address

MEMORY_STORAGE_URI = "jobpulse-memory://"
SWEEP_SECONDS = 1.0
"""How often, at most, :class:`SweptMemoryStorage` drops the counts of windows that have ended."""

limiter = Limiter(key_func=client_address, default_limits=[])


class SweptMemoryStorage(MemoryStorage):
    """``memory://`` without a new timer thread for nearly every hit.

    limits' ``MemoryStorage`` starts a ``threading.Timer`` (a greenlet under gevent) 10 ms ahead on every
    hit that finds none pending, to drop ended windows: at a few hundred launches a second that is a
    thread per launch, about 8% of the worker's time (docs/PERFORMANCE.md, "Launches"). The sweep only
    frees memory (each hit checks its own window's end itself), so here it runs at most once every
    :data:`SWEEP_SECONDS`; the counts, and so the limit, are the same.
    """

    STORAGE_SCHEME = ["jobpulse-memory"]  # noqa: RUF012 - limits' registry reads this class attribute

    def _MemoryStorage__schedule_expiry(self) -> None:  # overrides MemoryStorage.__schedule_expiry
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_SECONDS, self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
            self.timer.daemon = True  # a pending sweep never holds up the process's exit
            self.timer.start()


def seconds_until_allowed() -> int:
    """For ``Retry-After`` on a 429: when the breached limit's window resets."""
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))
