"""The real ``gunicorn wsgi:app`` (gevent worker, our gunicorn.conf.py) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.cluster.controlplane import die_with_parent
from tests.helpers import answers_ok, wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """The real gunicorn (gevent worker); subclasses serve the same app with another WSGI server."""

    name = "gunicorn"
    stop_signal = signal.SIGTERM

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]

    @staticmethod
    def child_setup() -> None:  # runs in the child between fork and exec
        die_with_parent()  # a killed test run leaves no server behind

    def start(self) -> None:
        env = {**os.environ, **self.env, "BIND": f"127.0.0.1:{self.port}", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.child_setup,
            )
        wait_for(self._ready, timeout=30, what=f"{self.name} on {self.url} to be ready")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return answers_ok(self.port, "/readyz")  # refused, or accepted while the worker still boots: False

    def begin_stop(self, sig: signal.Signals | None = None) -> None:
        """Signal the server (the gunicorn master) to stop, without waiting: clients can read what it says meanwhile."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig or self.stop_signal)

    def stop(self, sig: signal.Signals | None = None, timeout: float = 30) -> int:
        """Signal the server (the gunicorn master) and wait for it to exit; return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.begin_stop(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s:\n{self.log()[-3000:]}") from None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
