"""Open streams handed over from gunicorn's request to a greenlet of their own, so that they hold no request.

Under gunicorn's gevent worker a stream used to be the request that opened
it for its whole life: gunicorn's greenlet, parked deep under gunicorn, the
WSGI middlewares and Flask (its C stack copied to the heap, the touched pages
of its Python data-stack chunk), gunicorn's request, environ and parser, and
for a WebSocket Flask's request context: most of a stream's memory
(docs/PERFORMANCE.md, "Fan-out and memory per stream"). Once a stream has
answered (SSE: its status line and headers; WebSocket: the handshake) it
needs only its socket, its subscription and what writes to them. So it is
*handed over*: the socket is taken out of gunicorn's hands
(:func:`take_socket`: detached, the same file descriptor wrapped in a new
gevent socket), the rest of the stream runs in a fresh, shallow greenlet
(:meth:`StreamHandovers.spawn`), and gunicorn's request ends the way it ends
every WebSocket under gunicorn: the WSGI call raises ``StopIteration``, which
gunicorn takes as "the connection is closed", logs at DEBUG and, with
nothing of its own left on the socket, forgets. Neither gunicorn's access log
nor its ``worker_connections`` see a handed-over stream; the stream slots
(:mod:`webapp.api.stream_slots`) still count it.

Only where it is safe and waited for: the gevent worker, a plain
non-blocking socket (:func:`~webapp.api.express.cooperative_socket`), and a
worker whose ``gunicorn.conf.py`` enables it (:func:`enable`) and so waits for
its handed-over streams when it stops (:meth:`StreamHandovers.wait`):
gunicorn's own graceful stop waits only for its requests. Anywhere else the
streams run as the request, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, Protocol

from flask import Flask, Response, current_app
from gevent.pool import Group
from werkzeug.http import http_date

from webapp import metrics
from webapp.api.express import cooperative_socket
from webapp.api.write_deadline import WriteDeadline

logger = logging.getLogger(__name__)

EXTENSION = "jobpulse.handovers"
"""Where an app that hands its streams over keeps its :class:`StreamHandovers` (``app.extensions``)."""

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


class StreamHandovers:
    """The streams a worker runs outside gunicorn's requests: each in a greenlet of this group, waited for at exit."""

    __slots__ = ("_group",)

    def __init__(self) -> None:
        self._group = Group()

    def spawn(self, stream: Callable[..., None], *args: Any) -> None:
        """Run ``stream(*args)`` in a greenlet of its own, in the group until it returns.

        The greenlet starts once the calling one yields: after gunicorn's request has let go.
        """
        self._group.spawn(stream, *args)

    def __len__(self) -> int:
        return len(self._group)

    def wait(self, timeout: float, *, beat: Callable[[], None] | None = None, every: float = 1.0) -> bool:
        """Until every handed-over stream has ended, at most ``timeout`` seconds; whether they all have.

        ``beat``: called at least every ``every`` seconds while it waits (the worker's heartbeat: gunicorn's
        arbiter takes a worker silent for ``timeout`` seconds for a hung one and aborts it, exit or not).
        """
        deadline = time.monotonic() + timeout
        while not self._group.join(timeout=max(0.0, min(every, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
            if beat is not None:
                beat()
        return True


def enable(app: Flask) -> StreamHandovers:
    """From now on ``app``'s streams are handed over where it is safe; the worker must :meth:`~StreamHandovers.wait`.

    ``jobpulse_handed_over_streams`` counts them (read from the group when scraped: nothing per stream).
    """
    handovers: StreamHandovers = app.extensions.setdefault(EXTENSION, StreamHandovers())
    metrics.HANDED_OVER_STREAMS.set_function(handovers.__len__)
    return handovers


def handovers_for(sock: Any) -> StreamHandovers | None:
    """Where a stream on ``sock`` is to be handed over, if it may be (in a request of the app); else ``None``."""
    if not cooperative_socket(sock):
        return None
    handovers: StreamHandovers | None = current_app.extensions.get(EXTENSION)
    return handovers


def take_socket(sock: Any) -> Any:
    """The connection of gunicorn's ``sock``, as a new socket of the same kind; ``sock`` no longer holds it.

    Detached, not duplicated: the file descriptor stays one, so gevent's
    watchers of the old socket object are dropped with it (a closed
    descriptor whose duplicate lives would stay registered with epoll), and
    gunicorn's closing that object at the end of its request closes nothing.
    """
    timeout = sock.gettimeout()
    family, kind, proto = sock.family, sock.type, sock.proto
    taken = type(sock)(family, kind, proto, fileno=sock.detach())
    taken.settimeout(timeout)
    return taken


class _Movable(Protocol):
    def move_to(self, sock: Any) -> None: ...


class SSEResponse(Response):
    """An SSE answer that, under the gevent worker, is written by a greenlet of its own instead of gunicorn's request.

    Flask calls it once the ``after_request`` hooks have run, so its headers
    are final. Where the stream may be handed over (:func:`handovers_for`; a
    ``GET`` over HTTP/1.1, the framing the express writer uses), it writes the
    status line and headers as gunicorn would (chunked, and ``Connection:
    close``: the connection is not given back), takes the socket, moves onto it
    whatever of the stream writes to the socket (``moves``: the express writer,
    the write ``deadline``), hands the stream over (:func:`serve_chunked`) and
    raises ``StopIteration`` to end gunicorn's request. Anywhere else it is a
    plain response.
    """

    def __init__(
        self,
        body: Iterable[bytes],
        *,
        moves: Iterable[_Movable | None] = (),
        deadline: WriteDeadline | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(body, mimetype="text/event-stream", direct_passthrough=True, **kwargs)
        self._moves = [moved for moved in (*moves, deadline) if moved is not None]
        self._deadline = deadline

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        handovers = handovers_for(sock)
        if (
            handovers is None
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("SERVER_PROTOCOL") != "HTTP/1.1"
            or self.status_code != 200
        ):
            return super().__call__(environ, start_response)
        taken = None
        try:
            body, status, headers = self.get_wsgi_response(environ)
            server = str(environ.get("SERVER_SOFTWARE", "gunicorn")).partition("/")[0]
            lines = [
                f"HTTP/1.1 {status}",
                f"Server: {server}",
                f"Date: {http_date()}",
                "Connection: close",
                "Transfer-Encoding: chunked",
                *(f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_BY_HOP),
            ]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            taken = take_socket(sock)
            for moved in self._moves:
                moved.move_to(taken)
            handovers.spawn(serve_chunked, taken, body, [head], environ.get("PATH_INFO", ""), self._deadline)
        except BaseException:
            self.close()  # never started, so never closed by anyone else: its close gives the stream's slot back
            if taken is not None:
                taken.close()
            raise
        raise StopIteration  # gunicorn: the connection is closed (the WebSocket's way out, flask-sock)


def serve_chunked(
    sock: Any, body: Iterable[bytes], head: list[bytes], path: str, deadline: WriteDeadline | None = None
) -> None:
    """Write the head (alone in ``head``), each item of ``body`` as an HTTP/1.1 chunk, then the last chunk; close both.

    As gunicorn writes an answer: a client gone (or a write deadline that shut
    the socket) ends it quietly, and the body is closed whatever happens.
    The body bounds the writes of its own items; the last chunk, written
    after it has ended, is bounded by ``deadline`` (a client that stopped
    reading cannot hold the stream there either).
    ``head`` is taken out of its list, so that the greenlet, which keeps its
    arguments while it runs, does not keep it for the stream's life.
    """
    try:
        pending = head.pop()
        for item in body:
            if item:
                sock.sendall(b"%s%X\r\n%s\r\n" % (pending, len(item), item))
                pending = b""
        with deadline.bounding() if deadline is not None else nullcontext():
            sock.sendall(pending + b"0\r\n\r\n")
    except OSError:
        pass
    except Exception:
        logger.exception("stream.failed", extra={"transport": "sse", "path": path})
    finally:
        try:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        finally:
            sock.close()
