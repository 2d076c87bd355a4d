"""The app under uWSGI, started with the command of docs/LEGACY_HOSTING.md.

Under uWSGI ``sys.executable`` is the ``uwsgi`` binary, not a Python: the
case that made every local task fail before the runner looked for the
interpreter itself. The ``uwsgi`` program comes from the test extra (built
from source by pip), installed beside this interpreter.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.live.server import LiveServer

UWSGI = Path(sys.executable).with_name("uwsgi")


class UwsgiServer(LiveServer):
    """The same app under uWSGI's HTTP router, one process with threads (docs/LEGACY_HOSTING.md)."""

    name = "uwsgi"
    stop_signal = signal.SIGINT
    """uWSGI 2.0 reloads on SIGTERM; SIGINT stops it."""

    def command(self) -> list[str]:
        if not UWSGI.exists():
            raise AssertionError(f"{UWSGI} is missing: install the test extra (make deps)")
        return [
            str(UWSGI),
            "--http",
            f"127.0.0.1:{self.port}",
            "--module",
            "wsgi:app",
            "--master",
            "--processes",
            "1",
            "--enable-threads",
            "--threads",
            "8",
            "--lazy-apps",
        ]
