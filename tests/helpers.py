"""Small test helpers: waiting on conditions with deadlines, reading SSE frames, capturing logs, stopping servers."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def answers_ok(port: int, path: str, *, timeout: float = 1.0) -> bool:
    """Whether ``GET path`` on 127.0.0.1:``port`` answers 200; ``False`` if refused, cut or silent.

    For readiness probes: it asks with ``http.client``, not ``requests``. A
    ``requests`` call that fails leaves a reference cycle (urllib3's chained
    exceptions and their tracebacks) that pins every frame up to the test's
    own, and with them the test's responses and their keep-alive connections,
    until the garbage collector runs. A server stopped meanwhile waits for
    those connections (gunicorn: its whole keep-alive timeout, 5 s).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Split an SSE byte stream into frames: ``{"event", "id", "data", "retry", "comment"}``."""
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[field] = json.loads(value) if field == "data" else value
        frames.append(frame)
    return frames


def assert_sse_preamble(text: str) -> int:
    """The stream opens with ``retry:`` (its own, drawn from the window) and a blank line; returns the delay."""
    from webapp.wire import SSE_RETRY_WINDOW_MS

    head, blank, _ = text.partition("\n\n")
    assert blank and head.startswith("retry: "), text[:80]
    retry_ms = int(head.removeprefix("retry: "))
    low, high = SSE_RETRY_WINDOW_MS
    assert low <= retry_ms <= high, retry_ms
    return retry_ms


def statuses(frames: Iterable[dict[str, Any]]) -> list[str]:
    return [f["data"]["status"] for f in frames if f.get("event") == "status"]


def stop_process(process: subprocess.Popen[Any] | None, *, timeout: float = 10.0) -> None:
    """SIGTERM a server the tests started, wait for it, and SIGKILL it if it lingers; nothing if it has exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def captured_logs(name: str = "webapp") -> Iterator[list[logging.LogRecord]]:
    """The records (``INFO`` and up) logged under ``name`` during the block, whatever logging the app set up."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_under_gevent(code: str) -> None:
    """Run ``code`` in a fresh interpreter patched by gevent, as under the gunicorn worker; fail with its output."""
    done = subprocess.run(
        [sys.executable, "-c", "from gevent import monkey; monkey.patch_all()\n" + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def launch_as_the_launcher_does(runner: Any, status: Any, manifest: dict[str, Any]) -> str:
    """Record ``status`` through the runner's door, hand the run to ``runner``, publish it: the launcher's steps."""
    runner._door.open(status, manifest=manifest, client=None)
    runner.launch(status, manifest)
    runner._door.announce(status)
    return str(status.job_name)


def hub_status(runner: Any, job_name: str) -> Any:
    """The run's status in the hub of the runner's door (it must be there)."""
    status = runner._door.hub.get(job_name)
    assert status is not None
    return status
