"""A time bound on the writes of an SSE stream, which the server (gunicorn) makes, not the stream.

A client that stops reading (a zero TCP window) leaves a write to it blocked
for as long as TCP lives, and with it the stream's slot, greenlet and
connection. The WebSocket streams make their own writes, so a timeout on the
socket bounds them (:func:`webapp.api.streams.bound_writes`); an SSE stream's
frames are written by gunicorn, which would log a timed-out write as an error
of its own. Instead a :class:`WriteDeadline` arms a timer on gevent's loop
for each write and, should it fire, shuts the socket down: the blocked write
fails with ``EPIPE``, which gunicorn takes as a client gone, and it closes
the answer, so the stream's slot is given back. Under the gevent worker only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from gevent import get_hub


class WriteDeadline:
    """Shuts ``sock`` down when one write to it, made inside :meth:`bounding`, waits longer than ``seconds``."""

    __slots__ = ("_seconds", "_sock", "expired")

    def __init__(self, sock: Any, seconds: float) -> None:
        self._sock = sock
        self._seconds = seconds
        self.expired = False
        """Whether a write outlasted the deadline (the client stopped reading) and the socket was shut down."""

    def move_to(self, sock: Any) -> None:
        """Bound the writes to ``sock`` from now on: the same connection, taken from the server."""
        self._sock = sock

    @contextmanager
    def bounding(self) -> Iterator[None]:
        """The writes made in this block must be done within ``seconds``, else the socket is shut down."""
        timer = get_hub().loop.timer(self._seconds)
        timer.start(self._expire)
        try:
            yield
        finally:
            timer.stop()
            timer.close()

    def _expire(self) -> None:  # on gevent's loop: must not block
        self.expired = True
        # Through a duplicate of its fd: gevent's own ``shutdown`` would fail the blocked write with EBADF
        # ("closed in another greenlet"), which gunicorn logs as an error; the connection's shutdown makes
        # it fail with EPIPE instead, as for a client gone.
        with suppress(OSError), socket.socket(fileno=os.dup(self._sock.fileno())) as duplicate:  # OSError: gone
            duplicate.shutdown(socket.SHUT_RDWR)
