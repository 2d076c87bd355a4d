"""A deadline for reading a request body, so a client that trickles its body cannot hold a connection.

gunicorn's gevent worker reads the body only when the app asks for it, and
waits as long as bytes keep coming: ``Content-Length: 10000`` then one byte
every two seconds held a connection (and its greenlet) for minutes. Here the
body of each request must arrive whole within ``BODY_TIMEOUT_SECONDS`` of the
request's start. When it does not, reading stops (the socket's read side is
shut, which wakes a waiting read at once, under gevent or threads), the client
gets ``408`` in the one error shape, and the connection is closed — whatever
gunicorn's reader raised on the shut socket (an ``OSError``, or a parse error
for a chunk cut short). A chunked body whose framing is broken (a size that
is not hex, a chunk without its CRLF) is the client's mistake: ``400``.

Only under gunicorn, which hands its socket to the app. Hosts that read the
whole body before calling the app (waitress) apply their own timeouts.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, RequestTimeout
from werkzeug.wsgi import ClosingIterator

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def body_deadline(app: WSGIApp, *, seconds: float) -> WSGIApp:
    """WSGI middleware: the body of a request must be read within ``seconds`` of its start.

    A plain function, not an instance with ``__call__``: CPython 3.11 runs a
    call to a Python function in the caller's own C frame, but a call to an
    instance goes through C, and every stream's greenlet parks under what
    called it (about 1 KiB of saved C stack per parked WebSocket per layer).
    A request without a body (every stream) is passed straight on.
    """

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH", "")
        if (length in ("", "0") and "HTTP_TRANSFER_ENCODING" not in environ) or "gunicorn.socket" not in environ:
            return app(environ, start_response)
        return _with_deadline(app, environ, start_response, seconds=seconds)

    return dispatch


def _with_deadline(
    app: WSGIApp, environ: dict[str, Any], start_response: Callable[..., Any], *, seconds: float
) -> Iterable[bytes]:
    sock = environ.get("gunicorn.socket")
    length = environ.get("CONTENT_LENGTH", "")
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if sock is None or not (chunked or length not in ("", "0")):
        return app(environ, start_response)
    expected = None if chunked or not length.isdigit() else int(length)
    body = _TimedBody(environ["wsgi.input"], sock, seconds=seconds, expected=expected)
    environ["wsgi.input"] = body
    try:
        answer = app(environ, start_response)
    except BaseException:
        body.finish()
        raise
    return ClosingIterator(answer, body.finish)  # the server closes every answer, however it ends


class _TimedBody:
    """``wsgi.input`` with a deadline: reads after it raise :class:`RequestTimeout` (408), bad framing 400."""

    def __init__(self, stream: Any, sock: socket.socket, *, seconds: float, expected: int | None) -> None:
        self._stream = stream
        self._sock = sock
        self._left = expected
        self.expired = False
        self.finished = False
        _WATCHDOG.watch(self, time.monotonic() + seconds)

    def expire(self) -> None:
        """The deadline passed: shut the read side, unless the body is finished (the watchdog calls it, locked)."""
        if self.finished:
            return
        self.expired = True
        with contextlib.suppress(OSError):  # already gone
            self._sock.shutdown(socket.SHUT_RD)  # a waiting read returns at once; the answer can still be written

    def finish(self) -> None:
        """The body is read, or the answer is done: no deadline any more.

        Under the watchdog's lock: once this returns the socket is never shut
        (under threads the watchdog may be expiring this very body; the
        connection goes on to its next request, kept alive, when this returns).
        """
        if not self.finished:
            with _WATCHDOG.lock:
                self.finished = True

    def _checked(self, data: bytes, *, wanted: int | None) -> bytes:
        if self.expired:
            raise RequestTimeout("the request body did not arrive in time")
        if self._left is not None:
            self._left -= len(data)
        if (self._left is not None and self._left <= 0) or (not data and wanted != 0):
            self.finish()  # all of it is here
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._reading(self._stream.read, size), wanted=size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._checked(self._reading(self._stream.readline, size), wanted=size)

    def _reading(self, read: Callable[[int | None], bytes], size: int | None) -> bytes:
        try:
            return read(size)
        except Exception as error:
            if self.expired:  # whatever the server's reader made of the shut read side (NoMoreData, a cut chunk)
                raise RequestTimeout("the request body did not arrive in time") from error
            if isinstance(error, ParseException):  # the client's own chunked framing is broken
                raise BadRequest(f"the request body is malformed: {type(error).__name__}") from error
            raise

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _Watchdog:
    """One thread keeps every body's deadline: a timer per request would start a thread each.

    (Under gevent a thread is a greenlet, and a ``threading.Timer`` per
    donation was a visible share of a launch's CPU.) Deadlines are kept in a
    heap; a finished body stays in it until its deadline passes and is then
    dropped unread, so the heap holds at most the requests of the last
    ``BODY_TIMEOUT_SECONDS``. The thread is started by the first request of
    each process (a worker forked from a process that had one starts its own).
    """

    name = "body-deadlines"

    def __init__(self) -> None:
        self._due = threading.Condition()
        self.lock = self._due
        """Held while a body is expired: :meth:`_TimedBody.finish` takes it too, so the two never interleave."""
        self._deadlines: list[tuple[float, int, _TimedBody]] = []
        self._order = itertools.count()  # equal deadlines never compare bodies
        self._thread: threading.Thread | None = None
        self._running_in: int | None = None

    def watch(self, body: _TimedBody, deadline: float) -> None:
        with self._due:
            heapq.heappush(self._deadlines, (deadline, next(self._order), body))
            if self._thread is None or self._running_in != os.getpid():
                self._running_in = os.getpid()
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._deadlines[0][2] is body:  # sooner than what the thread waits for
                self._due.notify()

    # A runtime service (webapp.runtime.Service): the app's stop ends the thread.

    def start(self) -> None:
        """Nothing yet: the thread starts with the first body to watch."""

    def stop(self) -> None:
        """End the thread, within a second; a body watched later starts another."""
        with self._due:
            thread, self._thread = self._thread, None
            self._due.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def unready_reason(self) -> str | None:
        return None

    def _run(self) -> None:
        me = threading.current_thread()
        with self._due:
            while self._thread is me:
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    body = heapq.heappop(self._deadlines)[2]
                    try:
                        body.expire()
                    except Exception:  # one body's trouble must not end every deadline
                        logger.exception("body_deadline.expire_failed")
                self._due.wait(self._deadlines[0][0] - now if self._deadlines else None)


_WATCHDOG = _Watchdog()
BODY_WATCHDOG = _WATCHDOG
"""The thread that keeps every body's deadline in this process (one for all apps): a runtime service."""
