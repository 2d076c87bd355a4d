"""The bytes the streams send for a status, built once per change however many streams send it.

Fanning a change out to ten thousand streams formats and encodes it once:
the first stream (or express write) that needs the status's forms builds
them all, the others read them. The cache keeps, per job, the forms of the
newest status only, for a bounded number of jobs, so it does not grow with
the statuses a run goes through or the runs a process has seen.

Besides the messages of :mod:`webapp.wire`, the express path
(:mod:`webapp.api.express`) writes to the socket itself, so it needs each
message as the server would have framed it: the SSE event as an HTTP/1.1
chunk (``Transfer-Encoding: chunked``, as gunicorn frames a streamed body),
the WebSocket message as a server's text frame (RFC 6455).
"""

from __future__ import annotations

import dataclasses
import threading

from webapp.status import JobStatus
from webapp.wire import sse_status_frame, ws_status_message


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk: its size in hex, CRLF, the data, CRLF."""
    return b"%X\r\n%s\r\n" % (len(data), data)


def ws_text_frame(payload: bytes) -> bytes:
    """``payload`` as one whole WebSocket text frame from a server (RFC 6455 §5.2: final, unmasked)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


@dataclasses.dataclass(frozen=True, slots=True)
class StatusFrames:
    """Every form of one status that a stream sends."""

    status: JobStatus
    sse: bytes
    """The SSE event (:func:`webapp.wire.sse_status_frame`), as the stream yields it to the server."""
    sse_chunk: bytes
    """:attr:`sse` as an HTTP/1.1 chunk, for express writes."""
    ws_message: str
    """The WebSocket message (:func:`webapp.wire.ws_status_message`), as the stream sends it."""
    ws_frame: bytes
    """:attr:`ws_message` as a WebSocket text frame, for express writes."""

    @classmethod
    def build(cls, status: JobStatus) -> StatusFrames:
        sse = sse_status_frame(status)
        message = ws_status_message(status)
        return cls(status, sse, http_chunk(sse), message, ws_text_frame(message.encode()))


class FrameCache:
    """Per job, the frames of the newest status asked for; at most ``jobs`` jobs (the oldest asked goes first)."""

    def __init__(self, *, jobs: int = 1024) -> None:
        self._jobs = jobs
        self._latest: dict[str, StatusFrames] = {}
        self._lock = threading.Lock()  # only when a status's frames are built, never on the way to a cached one

    def frames(self, status: JobStatus) -> StatusFrames:
        cached = self._latest.get(status.job_name)
        if cached is not None and cached.status is status:
            return cached
        built = StatusFrames.build(status)
        with self._lock:
            cached = self._latest.get(status.job_name)
            if cached is None or status.seq >= cached.status.seq:  # a stream still sending an older one keeps its own
                self._latest.pop(status.job_name, None)  # to the back of the line
                self._latest[status.job_name] = built
                if len(self._latest) > self._jobs:
                    del self._latest[next(iter(self._latest))]
        return built


_CACHE = FrameCache()


def frames_of(status: JobStatus) -> StatusFrames:
    """The forms of ``status``, from this process's cache (built on the first ask)."""
    return _CACHE.frames(status)


def sse_chunk(status: JobStatus) -> bytes:
    return frames_of(status).sse_chunk


def sse_event(status: JobStatus) -> bytes:
    return frames_of(status).sse


def ws_frame(status: JobStatus) -> bytes:
    return frames_of(status).ws_frame


def ws_message(status: JobStatus) -> str:
    return frames_of(status).ws_message
