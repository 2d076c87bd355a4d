"""What a status looks like to a client: Server-Sent Events and WebSocket messages.

Pure formatting (no I/O, no state): the text of each message, shared by the
transports. How these are framed on a connection (HTTP/1.1 chunks, WebSocket
frames) and kept once per change for every stream is the transports' part
(:mod:`webapp.api.frames`).
"""

from __future__ import annotations

import json

from webapp.status import JobStatus

SSE_RETRY_WINDOW_MS = (500, 2500)
"""The range each SSE stream's ``retry:`` is drawn from (milliseconds), one draw per stream.

A fixed value would bring every EventSource of a stopping process back in the
same instant; spread over two seconds, the process that takes them over sees
about 5 % of them in any 100 ms, and each is back within 2.5 s.
"""

SSE_PING = b": ping\n\n"
SSE_END = b"event: end\ndata: {}\n\n"


def sse_preamble(retry_ms: int) -> bytes:
    """What opens every SSE stream: ``retry:`` with this stream's reconnection delay, then a blank line."""
    return b"retry: %d\n\n" % retry_ms


def sse_status_frame(status: JobStatus) -> bytes:
    """The status as one SSE event: ``id`` its ``seq``, ``event: status``, the JSON on one ``data`` line."""
    return f"id: {status.seq}\nevent: status\ndata: {status.json}\n\n".encode()


def ws_status_message(status: JobStatus) -> str:
    """The status object with ``"type": "status"`` added, without re-serialising it."""
    return '{"type":"status",' + status.json[1:]


def ws_error_message(error: str, message: str) -> str:
    return json.dumps({"type": "error", "error": error, "message": message})
