"""How a status goes on the wire: Server-Sent Events frames and WebSocket messages.

Pure formatting, shared by the transports, so every transport carries the
same JSON (built once per change by :attr:`JobStatus.json`).
"""

from __future__ import annotations

import json

from webapp.status import JobStatus

SSE_RETRY_MS = 2000

SSE_PREAMBLE = f"retry: {SSE_RETRY_MS}\n\n"
SSE_PING = ": ping\n\n"
SSE_END = "event: end\ndata: {}\n\n"


def sse_status_frame(status: JobStatus) -> str:
    return f"id: {status.seq}\nevent: status\ndata: {status.json}\n\n"


def ws_status_message(status: JobStatus) -> str:
    """The status object with ``"type": "status"`` added, without re-serialising it."""
    return '{"type":"status",' + status.json[1:]


def ws_error_message(error: str, message: str) -> str:
    return json.dumps({"type": "error", "error": error, "message": message})
