"""Who this process is, for leases in shared stores (runs, webhook deliveries)."""

from __future__ import annotations

import os
import uuid


def process_owner() -> str:
    """Unique per process start: host, pid and a random part (pids are reused)."""
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
