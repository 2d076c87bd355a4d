"""The launch rate limit (``RATE_LIMIT`` per client address, :mod:`webapp.api.clients`), by Flask-Limiter."""

from __future__ import annotations

import math
import time

from flask_limiter import Limiter

from webapp.api.clients import client_address

limiter = Limiter(key_func=client_address, default_limits=[])


def seconds_until_allowed() -> int:
    """For ``Retry-After`` on a 429: when the breached limit's window resets."""
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))
