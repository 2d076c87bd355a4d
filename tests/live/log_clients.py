"""``curl -N`` on a run's live log, read line by line with deadlines, and the follows a server has open."""

from __future__ import annotations

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
        bufsize=1,
    )


def read_line(curl: subprocess.Popen[str], *, timeout: float = 30) -> str:
    """The next line curl printed, waiting at most ``timeout`` seconds for it."""
    assert curl.stdout is not None
    ready, _, _ = select.select([curl.stdout], [], [], timeout)
    assert ready, f"no line from curl within {timeout}s"
    return curl.stdout.readline()


def log_follows_open(server: LiveServer) -> float:
    """``jobpulse_log_follows_open`` of the server's (single) worker."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^jobpulse_log_follows_open (\S+)$", text, re.M)
    assert found, "the metric is exported"
    return float(found.group(1))


def seconds_since(start: float) -> float:
    return time.monotonic() - start
