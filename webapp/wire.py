"""How a status goes on the wire: Server-Sent Events frames and WebSocket messages.

Pure formatting, shared by the transports. Each form is built once per
change and kept on the status (:attr:`JobStatus.encodings`), so fanning a
change out to ten thousand streams formats and encodes it once, not ten
thousand times. SSE frames are bytes, ready for the server to write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from webapp.status import JobStatus

SSE_RETRY_MS = 2000

SSE_PREAMBLE = f"retry: {SSE_RETRY_MS}\n\n".encode()
SSE_PING = b": ping\n\n"
SSE_END = b"event: end\ndata: {}\n\n"

T = TypeVar("T")


def _once(status: JobStatus, form: str, build: Callable[[JobStatus], T]) -> T:
    cache = status.encodings
    if form not in cache:
        cache[form] = build(status)  # two threads may both build it: the same value, harmless
    value: T = cache[form]
    return value


def sse_status_frame(status: JobStatus) -> bytes:
    return _once(status, "sse", lambda s: f"id: {s.seq}\nevent: status\ndata: {s.json}\n\n".encode())


def sse_status_chunk(status: JobStatus) -> bytes:
    """The SSE frame as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``), as the server would frame it."""
    return _once(status, "sse-chunk", lambda s: b"%X\r\n%s\r\n" % (len(sse_status_frame(s)), sse_status_frame(s)))


def ws_status_message(status: JobStatus) -> str:
    """The status object with ``"type": "status"`` added, without re-serialising it."""
    return _once(status, "ws", lambda s: '{"type":"status",' + s.json[1:])


def ws_status_frame(status: JobStatus) -> bytes:
    """:func:`ws_status_message` as a whole WebSocket text frame from a server (RFC 6455: final, unmasked)."""

    def frame(s: JobStatus) -> bytes:
        payload = ws_status_message(s).encode()
        size = len(payload)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 1 << 16:
            header = bytes((0x81, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x81, 127)) + size.to_bytes(8, "big")
        return header + payload

    return _once(status, "ws-frame", frame)


def ws_error_message(error: str, message: str) -> str:
    return json.dumps({"type": "error", "error": error, "message": message})
