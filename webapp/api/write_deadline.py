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
A live log follow (``GET /api/jobs/<name>/logs?follow=1``) is bounded the
same way (:func:`each_write_bounded`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from gevent import get_hub

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


def each_write_bounded(chunks: Iterable[T], deadline: WriteDeadline) -> Iterator[T]:
    """``chunks``, each yielded inside :meth:`WriteDeadline.bounding`: for an answer the server writes as it iterates.

    The server writes an item before it asks for the next, so the bound covers that write and
    not the wait for the next item (a quiet log may write nothing for minutes).
    """
    for chunk in chunks:
        with deadline.bounding():
            yield chunk


def log_write_timeout(transport: str, *, path: str, seconds: float) -> None:
    """A client's mistake, not the server's: ``stream.write_timeout`` at INFO, with ``reason`` for who counts ends."""
    extra = {"transport": transport, "path": path, "seconds": seconds, "reason": "write_timeout"}
    logger.info("stream.write_timeout", extra=extra)
