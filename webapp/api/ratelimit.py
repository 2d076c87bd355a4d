"""The launch rate limit (``RATE_LIMIT`` per client address), by Flask-Limiter."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, headers_enabled=True, default_limits=[])
