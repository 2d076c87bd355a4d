"""The app under waitress: a plain threaded WSGI host with no socket to hand a WebSocket over to.

Started like ``tests/live/server.py`` starts gunicorn: the app's environment,
the checkout root as working directory, a free loopback port, its output in a
log file. Waitress 3 flushes every write at once (``send_bytes`` has
defaulted to 1 since waitress 1.3 and is deprecated), so SSE frames are not
held back and no flag is needed for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.cluster.controlplane import die_with_parent
from tests.helpers import wait_for
from tests.live.server import PROJECT_ROOT, free_port

WAITRESS_THREADS = 8  # each open SSE stream holds one


def _child_setup() -> None:  # runs in the child between fork and exec
    die_with_parent()  # a killed test run leaves no server behind
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored, even if this run's shell ignores it


class WaitressServer:
    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{self.port}",
            f"--threads={WAITRESS_THREADS}",
            "wsgi:app",
        ]

    def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        wait_for(self._ready, timeout=30, what=f"waitress on {self.url} to be ready")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"waitress exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 30) -> int:
        """Stop as an operator should: waitress exits cleanly on SIGINT only (SIGTERM kills it outright)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"waitress did not stop within {timeout}s:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
