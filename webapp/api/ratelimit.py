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


class DecoratedLimiter(Limiter):
    """Flask-Limiter for limits on views only: its ``before_request`` pass is skipped while it has nothing to check.

    Flask-Limiter checks each request twice: in a ``before_request`` pass (application, default, blueprint and
    meta limits) and in the decorated view (its own limits). jobpulse sets only the decorated limit of
    ``POST /api/donations``, so the first pass found nothing to count on every request, about 35 µs each
    (docs/PERFORMANCE.md, "Launches"). It is skipped while no such limit exists; were one ever set, the pass
    runs as before. The decorated check, its counts and its 429 are Flask-Limiter's own, unchanged.
    """

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if in_middleware and not self._limits_outside_views():
            return
        super()._check_request_limit(callable_name, in_middleware)

    def _limits_outside_views(self) -> bool:
        """Whether any limit is set that only the ``before_request`` pass checks (an in-memory fallback, applied
        to every route while the storage is down, counts as one)."""
        manager = self.limit_manager
        outside = (manager._application_limits, manager._default_limits, manager._blueprint_limits, self._meta_limits)
        return any(outside) or bool(self._in_memory_fallback_enabled)


limiter = DecoratedLimiter(key_func=client_address, default_limits=[])


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
