"""The URLs a launch answer points to, so clients never build them by hand."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import url_for

from webapp.status import JobStatus


def with_links(status: JobStatus) -> dict[str, Any]:
    body = status.to_dict()
    body["links"] = {
        "status": url_for("jobs.task_status", job_name=status.job_name),
        "events": url_for("streams.sse_status", job_name=status.job_name),
        # WebSocket rules build ws:// URLs; the page needs the path, relative to its own host
        "websocket": urlsplit(url_for("streams.ws_status", job_name=status.job_name)).path,
    }
    return body
