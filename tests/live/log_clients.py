"""``curl -N`` on a run's live log, read line by line with deadlines, and the follows a server has open."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time

import requests

from tests.conftest import ADMIN_TOKEN
from tests.live.server import LiveServer


def start_curl_logs(server: LiveServer, name: str, *, tail: int | None = None) -> subprocess.Popen[str]:
    """``curl -N`` following the run's output, as an operator does (the token in a header, never in the URL)."""
    query = "follow=1" if tail is None else f"follow=1&tail={tail}"
    return subprocess.Popen(
        [
            "curl",
            "-N",
            "-sS",
            "--fail-with-body",
            "--max-time",
            "90",
            "-H",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            f"{server.url}/api/jobs/{name}/logs?{query}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_lines(curl: subprocess.Popen[str], count: int, *, timeout: float = 30) -> list[str]:
    """The next ``count`` lines curl printed (fewer if it exits first), waiting at most ``timeout`` seconds.

    Read from the pipe itself, a chunk at a time, so that nothing waits in a buffer ``select`` cannot see.
    """
    assert curl.stdout is not None
    fd = curl.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"not {count} lines from curl within {timeout}s: {data!r}"
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode().splitlines(keepends=True)


def log_follows_open(server: LiveServer) -> float:
    """``jobpulse_log_follows_open`` of the server's (single) worker."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^jobpulse_log_follows_open (\S+)$", text, re.M)
    assert found, "the metric is exported"
    return float(found.group(1))
