"""The express path of fan-out: a change written straight to each waiting stream's socket.

Under the gevent worker every open stream is a greenlet waiting on its
subscription. Waking ten thousand greenlets so that each formats nothing new
and writes the same bytes costs about three quarters of the fan-out (see
docs/PERFORMANCE.md). Instead, while a stream waits, the publisher writes the
change's bytes (built once per change, :mod:`webapp.wire`) to the stream's
socket itself, with one non-blocking write; the stream's greenlet sleeps on.

A write the socket cannot take whole falls back to the usual path: the
stream's greenlet wakes, first finishes what was started (:meth:`flush`),
then carries on. Final statuses always take the usual path, so each stream
still ends itself (``event: end``, close 1000).

Only where it is safe: a cooperative (gevent) worker, so nothing runs between
the publisher's check and its write; a plain socket in non-blocking mode (no
TLS inside the worker); for SSE, the body framing gunicorn uses for the
request's HTTP version (chunks for HTTP/1.1; gunicorn's ``protocol = "uwsgi"``
frames none, and is not supported with the gevent worker here). Anywhere else
(waitress, threads, TLS in gunicorn) streams take the usual path unchanged.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from webapp.status import JobStatus


def _cooperative() -> bool:
    """Whether this process runs on gevent's monkey-patched sockets (the gunicorn gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


class ClientGone(Exception):
    """Finishing an express write failed: the client has gone."""


class ExpressWriter:
    """Writes statuses straight to one client's socket, if it takes them at once.

    Other writers of the same socket go through :meth:`guard` (or call
    :meth:`flush` first), so nothing is ever written into the middle of a
    frame an express write left unfinished.
    """

    def __init__(
        self,
        sock: Any,
        encode: Callable[[JobStatus], bytes],
        *,
        delivered: Callable[[JobStatus], None],
        open_: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sock = sock
        self._fd: int = sock.fileno()
        self._encode = encode
        self._delivered = delivered
        self._open = open_
        self._writing = threading.Lock()
        """Held while a write of the rest of a frame is under way (it may wait for the client)."""
        self.pending = b""
        """The unsent end of a write the socket took only in part: :meth:`flush` sends it."""
        self.sent_seq = 0
        """The newest status that went this way (the stream must not send it again)."""

    @classmethod
    def attach(cls, sock: Any, encode: Callable[[JobStatus], bytes], **kwargs: Any) -> ExpressWriter | None:
        """A writer for ``sock`` if the express path is safe there, else ``None``."""
        if sock is None or not _cooperative() or hasattr(sock, "getpeercert"):  # TLS: bytes must go through SSL
            return None
        try:
            if os.get_blocking(sock.fileno()):
                return None
        except (OSError, ValueError):
            return None
        return cls(sock, encode, **kwargs)

    def __call__(self, status: JobStatus) -> bool:
        """Write ``status`` now; ``True`` if the client's socket took it whole."""
        if self.pending or self._writing.locked() or not self._open():
            return False
        data = self._encode(status)
        try:
            written = os.write(self._fd, data)  # never blocks: the socket is non-blocking
        except OSError:  # full (EAGAIN) or gone: the stream's greenlet takes over and finds out which
            return False
        self.sent_seq = status.seq
        self._delivered(status)
        if written < len(data):
            self.pending = data[written:]
            return False
        return True

    def flush(self) -> None:
        """Finish a write the socket took only in part (waiting, if need be, in the calling greenlet only).

        Raises :class:`ClientGone` if the client cannot take it any more.
        """
        with self._writing:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.pending:
            rest, self.pending = self.pending, b""
            try:
                self._sock.sendall(rest)
            except OSError as error:
                raise ClientGone(str(error)) from error

    def already_sent(self, status: JobStatus) -> bool:
        return status.seq <= self.sent_seq

    def guard(self) -> GuardedSocket:
        """``sock`` for other writers (simple-websocket's pings, pongs and close): each write finishes ours first."""
        return GuardedSocket(self._sock, self)


class GuardedSocket:
    """A socket whose every write first finishes an unfinished express write, and then writes whole."""

    def __init__(self, sock: Any, writer: ExpressWriter) -> None:
        self._sock = sock
        self._writer = writer

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        with self._writer._writing:
            try:
                self._writer._flush_locked()
            except ClientGone as error:
                raise BrokenPipeError(str(error)) from error
            self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
