"""Benchmark-only: every full (generation 2) garbage collection of this process, with its pause, on stderr.

``benchmarks.launches --gc-pauses`` puts this folder on the servers' ``PYTHONPATH``; Python imports
``sitecustomize`` at start-up, so the gunicorn master and the worker it forks note each full collection
(one line, only when one ends). Nothing in ``webapp`` knows about it.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

PREFIX = "bench-gc-pause"
_started = [0.0]


def _note(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause = (time.perf_counter() - _started[0]) * 1000
    sys.stderr.write(f"{PREFIX} pid={os.getpid()} ms={pause:.2f} collected={info.get('collected')}\n")
    sys.stderr.flush()


gc.callbacks.append(_note)
