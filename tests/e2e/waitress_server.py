"""The app under waitress: a plain threaded WSGI host with no socket to hand a WebSocket over to.

Started like ``tests/live/server.py`` starts gunicorn: the app's environment,
the checkout root as working directory, a free loopback port, its output in a
log file. Waitress 3 flushes every write at once (``send_bytes`` has
defaulted to 1 since waitress 1.3 and is deprecated), so SSE frames are not
held back and no flag is needed for them.
"""

from __future__ import annotations

import signal
import sys

from tests.cluster.controlplane import die_with_parent
from tests.live.server import LiveServer

WAITRESS_THREADS = 8  # each open SSE stream holds one


class WaitressServer(LiveServer):
    """The same app under waitress, a plain WSGI server that cannot hold WebSockets."""

    name = "waitress"
    stop_signal = signal.SIGINT
    """Stop as an operator should: waitress exits cleanly on SIGINT only (SIGTERM kills it outright)."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{self.port}",
            f"--threads={WAITRESS_THREADS}",
            "wsgi:app",
        ]

    @staticmethod
    def child_setup() -> None:  # runs in the child between fork and exec
        die_with_parent()  # a killed test run leaves no server behind
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored, even if this run's shell ignores it
