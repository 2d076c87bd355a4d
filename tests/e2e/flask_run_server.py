"""The app under ``flask run``: Werkzeug's development server, which a developer may start by habit.

Werkzeug hands the raw socket over as gunicorn does, but then writes an HTTP
response after the WebSocket has closed, so the app refuses WebSockets there
with 501 and the page falls back, as under waitress. Started like
``tests/live/server.py`` starts gunicorn (the app's environment, the checkout
root, a free loopback port, its output in a log file); stopped with SIGINT,
on which Werkzeug's server exits cleanly.
"""

from __future__ import annotations

import signal
import sys

from tests.cluster.controlplane import die_with_parent
from tests.live.server import LiveServer


class FlaskRunServer(LiveServer):
    """The same app under ``flask run`` (threaded, no reloader, no debugger)."""

    name = "flask-run"
    stop_signal = signal.SIGINT

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "wsgi:app",
            "run",
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--no-reload",
            "--no-debugger",
            "--with-threads",
        ]

    @staticmethod
    def child_setup() -> None:  # runs in the child between fork and exec
        die_with_parent()  # a killed test run leaves no server behind
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored, even if this run's shell ignores it
