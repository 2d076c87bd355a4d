"""Small test helpers: waiting on conditions with deadlines, reading SSE frames, capturing logs, stopping servers."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
