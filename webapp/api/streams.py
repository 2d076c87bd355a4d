"""Live status streams: Server-Sent Events and WebSocket, thin adapters over one subscription.

Both send the current status at once, then each change, and end after a
terminal status. Neither calls an executor: they only read the hub.

SSE answers ``204`` to a reconnect that already has the final status, so any
EventSource stops; a reconnect whose ``Last-Event-ID`` is the current ``seq``
is not sent that status again. Each SSE stream opens with its own ``retry:``
(:data:`~webapp.wire.SSE_RETRY_WINDOW_MS`), so the EventSources of a stopping
process do not all come back in the same instant. The WebSocket keeps to RFC 6455 where simple-websocket
leaves it to us: bad handshakes are refused (:mod:`webapp.api.handshake`),
client messages are capped (:data:`WS_MAX_MESSAGE_BYTES`, close ``1009``) and
the closing handshake completes before TCP is closed — except for the two
closes simple-websocket's reader makes itself (``1009``, and ``1008`` for a
missed ping), after which it closes TCP at once. A job that cannot be looked
up now (the run store is down) is closed with ``1013``, try again later.

An operator's console follows every run at once (``/sse/runs``,
``/ws/runs``): the feed of :mod:`webapp.api.runs_feed` over one
:meth:`~webapp.hub.StatusHub.subscribe_all`, for admins only. The SSE stream
takes ``Authorization: Bearer``; a browser cannot set headers on a WebSocket,
so ``/ws/runs`` also takes the token as the client's first message
(``{"token": "..."}``, within :data:`WS_AUTH_SECONDS`); nothing is sent before.

Every write of a stream (a status, a ``: ping``, a WebSocket ping, pong or
Close) must go out within ``STREAM_WRITE_TIMEOUT_SECONDS`` (:func:`bound_writes`,
:mod:`webapp.api.write_deadline`), else the stream ends at once, without a
closing handshake, logged as ``stream.write_timeout``: a client that stops
reading (a zero TCP window) cannot hold its stream, its slot and its
connection, nor keep ``/ws/runs`` from enforcing its deadline for the token.
Under the gevent worker only.

Under gunicorn's gevent worker, on a plain socket, a stream that has
answered (SSE: :class:`~webapp.api.handover.SSEResponse`; WebSocket:
:func:`_serve_ws`, after the handshake) leaves gunicorn's request and runs
the same body on in a greenlet of its own (:mod:`webapp.api.handover`), so
that a waiting stream holds no request, environ or request context; what a
WebSocket stream reads of its request is read first (:class:`_WsRequest`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server

from webapp import metrics
from webapp.api import runtime
from webapp.api.auth import admin_required, current_operator, operator_of
from webapp.api.clients import client_address
from webapp.api.errors import error_response
from webapp.api.express import ClientGone, ExpressWriter, GuardedSocket, cooperative_socket
from webapp.api.frames import sse_chunk, sse_event, ws_frame, ws_message
from webapp.api.handover import SSEResponse, handovers_for, take_socket
from webapp.api.handshake import check_handshake
from webapp.api.run_filters import RunFilter, list_limit, run_filter
from webapp.api.runs_feed import (
    RunsList,
    runs_feed,
    sse_run_status_message,
    sse_runs_message,
    ws_run_status_message,
    ws_runs_message,
)
from webapp.api.stream_slots import StreamSlot, StreamSlots
from webapp.api.write_deadline import WriteDeadline, log_write_timeout
from webapp.api.ws_reader import WebSocketReader
from webapp.errors import (
    ExecutorUnavailable,
    InvalidJobName,
    InvalidRequest,
    JobNotFound,
    RunStoreUnavailable,
    StreamsFull,
    TooManyStreams,
)
from webapp.hub import AllRunsSubscription, HubClosed, Subscription, tally_after_fan_out
from webapp.status import JobStatus
from webapp.wire import SSE_END, SSE_PING, SSE_RETRY_WINDOW_MS, sse_preamble, ws_error_message

logger = logging.getLogger(__name__)

bp = Blueprint("streams", __name__)
sock = Sock()

WS_CLOSE_NORMAL = 1000
WS_CLOSE_GOING_AWAY = 1001
WS_CLOSE_POLICY = 1008
WS_CLOSE_TRY_AGAIN_LATER = 1013
WS_CLOSE_BAD_NAME = 4400
WS_CLOSE_UNAUTHORIZED = 4401
WS_CLOSE_ADMIN_DISABLED = 4403
WS_CLOSE_UNKNOWN_JOB = 4404

WS_AUTH_SECONDS = 5.0
"""Seconds ``/ws/runs`` waits for the client's first message, its token, when the handshake has no ``Authorization``."""

RUNS_DEFAULT_LIMIT = 200
"""How many runs the first list of ``/sse/runs`` and ``/ws/runs`` holds unless ``limit=`` says (1 to 500)."""

_WS_ROUTES = frozenset({"streams.ws_status", "streams.ws_runs"})

WS_MAX_MESSAGE_BYTES = 4096
"""The largest message a client may send (after permessage-deflate, over all its fragments); larger: close 1009.

The stream reads nothing from its clients but the closing handshake, so any
real message is tiny; without a limit a few hundred compressed kilobytes grow
the worker by hundreds of megabytes.
"""

WS_CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the client's Close after ours before the TCP connection is closed (RFC 6455 §7.1.1)."""

# Servers that hand the raw socket over and write nothing after the handler. Werkzeug's development
# server (``flask run``) hands it over too, but writes an HTTP response after the WebSocket's Close
# frame (browsers: "Invalid frame header", 1006), so it is refused with 501 like any plain WSGI host.
_SOCKET_KEYS = ("gunicorn.socket", "eventlet.input")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _sse_preamble() -> bytes:
    """This stream's first bytes: a ``retry:`` drawn from :data:`~webapp.wire.SSE_RETRY_WINDOW_MS`, so that
    the EventSources of a stopping process come back spread out, not all at once."""
    return sse_preamble(random.randint(*SSE_RETRY_WINDOW_MS))


def _take_stream_slot() -> StreamSlot:
    """A place for this client's stream (:mod:`webapp.api.stream_slots`), or the error that refuses it."""
    slots: StreamSlots = current_app.extensions["jobpulse.stream_slots"]
    return slots.take(client_address())


@contextmanager
def _stream_opened(transport: str, job_name: str | None, *, operator: str | None = None) -> Iterator[None]:
    """Count and log an open stream: of one job, or (``job_name`` ``None``) of every run, opened by ``operator``."""
    fields = {"job_name": job_name} if job_name is not None else {"stream": "runs", "operator": operator}
    metrics.OPEN_STREAMS.labels(transport=transport).inc()
    logger.info("stream.opened", extra={**fields, "transport": transport})
    started = time.monotonic()
    try:
        yield
    finally:
        metrics.OPEN_STREAMS.labels(transport=transport).dec()
        logger.info(
            "stream.closed",
            extra={**fields, "transport": transport, "seconds": round(time.monotonic() - started, 3)},
        )


_DELIVERIES = {transport: metrics.StreamDeliveries(transport) for transport in ("sse", "ws")}


def _delivered(transport: str, status: JobStatus) -> None:
    """Count a message written to a client; inside a fan-out, all of its messages at once after the last write."""
    tally_after_fan_out(_DELIVERIES[transport], (status, time.time()))


def _delivered_sse(status: JobStatus) -> None:
    _delivered("sse", status)


def _delivered_ws(status: JobStatus) -> None:
    _delivered("ws", status)


def _next_change(subscription: Subscription, current: JobStatus, express: ExpressWriter | None) -> JobStatus | None:
    """Wait for the next thing to send after ``current``: a newer status, ``None`` at a heartbeat.

    Returns ``current`` itself when what came is not to be sent (not newer,
    or already sent express). A plain call, not a generator: the streams loop
    over it, so their greenlets park one generator level (a C frame) shallower.
    With ``express`` (in front of ``subscription``), changes are read through
    it. Raises :class:`ClientGone` when the client left in the middle of an
    express write.
    """
    following = subscription.get() if express is None else express.next_change()
    if following is None:
        return None
    if following.seq > current.seq and not (express is not None and express.already_sent(following)):
        return following
    return current


def _changes(
    subscription: Subscription, current: JobStatus, express: ExpressWriter | None
) -> Iterator[JobStatus | None]:
    """Each newer status not already sent express, until a terminal one; ``None`` at each heartbeat.

    What the streams send, as a generator (they loop over :func:`_next_change`
    themselves).
    """
    while not current.terminal:
        following = _next_change(subscription, current, express)
        if following is None:
            yield None
        elif following is not current:
            current = following
            yield current


def _sse_deadline() -> WriteDeadline | None:
    """The bound on this SSE stream's writes, under the gevent worker on a plain socket; else none."""
    sock = request.environ.get("gunicorn.socket")
    if not cooperative_socket(sock):
        return None
    return WriteDeadline(sock, runtime().settings.stream_write_timeout_seconds)


def _bounded(deadline: WriteDeadline | None) -> AbstractContextManager[Any]:
    return deadline.bounding() if deadline is not None else nullcontext()


def _then_noting_timeout(deadline: WriteDeadline | None, then: Callable[[], object]) -> Callable[[], object]:
    """``then``, for an SSE answer's close; first logged as ``stream.write_timeout`` if the deadline shut it."""
    if deadline is None:
        return then
    path, seconds = request.path, runtime().settings.stream_write_timeout_seconds

    def closed() -> object:
        if deadline.expired:
            log_write_timeout("sse", path=path, seconds=seconds)
        return then()

    return closed


class _Answer:
    """An SSE answer: the server (or, handed over, :func:`~webapp.api.handover.serve_chunked`) iterates the
    stream's own generator and closes this.

    Werkzeug's ``ClosingIterator`` would do, but the server would then call
    its ``__next__`` (a Python method, so a C frame) for each item, and each
    stream's greenlet parks under it: ~0.9 KiB per open stream. ``close``
    runs ``then`` even for an answer the server never started.
    """

    __slots__ = ("_stream", "_then")

    def __init__(self, stream: Iterator[bytes], then: Callable[[], object]) -> None:
        self._stream = stream
        self._then = then

    def __iter__(self) -> Iterator[bytes]:
        return self._stream

    def close(self) -> None:
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            self._then()


def _sse_response(answer: _Answer, express: ExpressWriter | None, deadline: WriteDeadline | None) -> SSEResponse:
    """An SSE stream's answer, handed over to a greenlet of its own where it may be (:mod:`webapp.api.handover`)."""
    response = SSEResponse(answer, moves=(express,), deadline=deadline)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


# -- Server-Sent Events ----------------------------------------------------------


@bp.get("/sse/task-status/<job_name>")
def sse_status(job_name: str) -> Response:
    rt = runtime()
    first = rt.runs.status(job_name)  # 400 / 404 before any stream starts
    last_event_id = request.headers.get("Last-Event-ID")  # an EventSource reconnecting: the seq it has
    if first.terminal and last_event_id == str(first.seq):
        # The client has the final status already; 204 is how the HTML Standard tells any
        # EventSource (not only ours, which stops at ``event: end``) to stop reconnecting.
        done = Response(status=204, headers={"Cache-Control": "no-cache"})
        del done.headers["Content-Type"]  # no body
        return done
    slot = _take_stream_slot()  # 429 / 503 before any stream starts
    framing = {"HTTP/1.1": sse_chunk, "HTTP/1.0": sse_event}  # as gunicorn frames the body
    encode = framing.get(request.environ.get("SERVER_PROTOCOL", ""))
    deadline = _sse_deadline()
    express = (
        ExpressWriter.attach(
            request.environ.get("gunicorn.socket"), encode, delivered=_delivered_sse, deadline=deadline
        )
        if encode is not None
        else None
    )
    # The server writes each frame this generator yields before it asks for the next, so holding the
    # socket's write lock across a yield keeps express writes out of the stream's own.
    writing: AbstractContextManager[Any] = express.lock if express is not None else nullcontext()
    sink = None if express is None else express.in_front_of

    def stream() -> Iterator[bytes]:
        with rt.hub.subscribe(job_name, heartbeat=True, sink=sink) as subscription, _stream_opened("sse", job_name):
            with writing, _bounded(deadline):
                yield _sse_preamble()
            current = rt.hub.get(job_name) or first
            if last_event_id != str(current.seq):  # a reconnecting client that has it already waits for the next
                with writing, _bounded(deadline):
                    yield sse_event(current)
                _delivered("sse", current)
            try:
                while not current.terminal:  # not over _changes: one generator level fewer while parked
                    status = _next_change(subscription, current, express)
                    if status is None:
                        with writing, _bounded(deadline):
                            yield SSE_PING
                    elif status is not current:
                        current = status
                        with writing, _bounded(deadline):
                            yield sse_event(status)
                        _delivered("sse", status)
            except HubClosed:
                return  # shutting down: the client reconnects to another process
            except ClientGone:
                return
            with writing, _bounded(deadline):
                yield SSE_END

    # bytes, as they are; the slot is given back when the server closes the answer, even one it never started
    return _sse_response(_Answer(stream(), _then_noting_timeout(deadline, slot.release)), express, deadline)


def _runs_query() -> tuple[RunFilter, int]:
    """``status=``, ``spec=`` and ``limit=`` of a stream of every run; :class:`InvalidRequest` (400) if malformed."""
    return run_filter(request.args), list_limit(request.args, default=RUNS_DEFAULT_LIMIT)


@bp.get("/sse/runs")
@admin_required
def sse_runs() -> Response:
    """Every run: ``event: runs`` (the current list, filtered), then ``event: status`` per change, ``: ping``."""
    rt = runtime()
    wanted, limit = _runs_query()  # 400 before any stream starts (after 401 / 403)

    def list_runs() -> list[JobStatus]:
        return rt.runs.recent(limit, statuses=wanted.statuses, specs=wanted.specs)

    operator = current_operator()
    slot = _take_stream_slot()  # 429 / 503 before any stream starts
    held = ExitStack()  # the subscription: taken before the first list is read, so no change falls between
    held.callback(slot.release)
    try:
        subscription = held.enter_context(rt.hub.subscribe_all(heartbeat=True))
        first = list_runs()  # 503 before any stream when the run store cannot answer
    except BaseException:
        held.close()
        raise

    deadline = _sse_deadline()

    def stream() -> Iterator[bytes]:
        with _stream_opened("sse", None, operator=operator):
            with _bounded(deadline):
                yield _sse_preamble()
            try:
                for message in runs_feed(subscription, first=first, list_runs=list_runs, wanted=wanted):
                    if message is None:
                        frame = SSE_PING
                    elif isinstance(message, RunsList):
                        frame = sse_runs_message(message.runs)
                    else:
                        frame = sse_run_status_message(message)
                    with _bounded(deadline):
                        yield frame
                    if message is not None and not isinstance(message, RunsList):
                        _delivered("sse", message)
            except HubClosed:
                return  # shutting down: the client reconnects to another process
            except RunStoreUnavailable as error:  # a fresh list was due and the store cannot give it
                logger.warning("stream.relist_failed", extra={"transport": "sse", "error": error.message})
                return

    # the subscription and the slot are given back when the server closes the answer, even one it never started
    return _sse_response(_Answer(stream(), _then_noting_timeout(deadline, held.close)), None, deadline)


# -- WebSocket -------------------------------------------------------------------


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    """An origin as scheme, host and port (the default port filled in), to compare; ``None`` if malformed."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _origin_allowed(origin: str | None) -> bool:
    """Same scheme, host and port as this request, or listed in ``ALLOWED_ORIGINS``; no ``Origin``: no browser.

    Behind a proxy the scheme, host and port are those it forwarded (``TRUSTED_PROXY_HOPS``).
    """
    if origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    if key in {_origin_key(allowed) for allowed in runtime().settings.allowed_origins}:
        return True
    return key == _origin_key(f"{request.scheme}://{request.host}")


@bp.before_request
def _guard_websocket() -> Response | None:
    if request.endpoint not in _WS_ROUTES:
        return None
    if not any(key in request.environ for key in _SOCKET_KEYS):
        return error_response(
            501, "websocket_unsupported", "this server cannot hold WebSockets; use the SSE stream or polling"
        )
    refusal = check_handshake(request.headers)
    if refusal is not None:
        logger.info("stream.refused", extra={"transport": "ws", "reason": refusal.code})
        response = error_response(refusal.http_status, refusal.code, refusal.message)
        response.headers.update(refusal.headers)
        return response
    origin = request.headers.get("Origin")
    if not _origin_allowed(origin):
        here, origin = f"{request.scheme}://{request.host}"[:200], (origin or "")[:200]
        logger.warning("stream.refused", extra={"transport": "ws", "reason": "origin", "origin": origin, "here": here})
        return error_response(
            403,
            "forbidden",
            f"the Origin {origin} may not open WebSockets on {here} (behind a proxy, see TRUSTED_PROXY_HOPS)",
        )
    if request.endpoint == "streams.ws_runs":
        try:
            _runs_query()
        except InvalidRequest as error:  # a malformed filter is refused before the upgrade, as over SSE
            return error_response(error.http_status, error.code, error.message, fields=error.fields)
    return None


@bp.errorhandler(BrokenPipeError)
@bp.errorhandler(ConnectionResetError)
@bp.errorhandler(ConnectionAbortedError)
def _client_gone(error: ConnectionError) -> Response:
    """A stream's client went while we answered it (e.g. before its WebSocket handshake's ``101`` was written,
    inside flask-sock): its doing, not ours, so INFO and no error. Nothing reaches it any more."""
    logger.info("stream.client_gone", extra={"path": request.path, "error": type(error).__name__})
    return error_response(400, "client_gone", "the client closed the connection")


def bound_writes(ws: Server, seconds: float) -> None:
    """From now on every write to ``ws`` must go out within ``seconds`` (``STREAM_WRITE_TIMEOUT_SECONDS``), gevent only.

    The socket's timeout bounds gevent's ``send``/``sendall`` (one bound for the
    whole write); a write that outlasts it raises :class:`BrokenPipeError` through
    :class:`GuardedSocket`, which notes it (``timed_out``), and the stream ends
    (:func:`_ws_stream`). Nothing of ours reads with a blocking ``recv`` there
    (:mod:`webapp.api.ws_reader` reads with ``os.read`` and waits with its own
    deadlines). Elsewhere (threads, TLS inside the worker) simple-websocket's
    reader thread reads with ``recv``, which a short timeout would break: no bound.
    """
    if cooperative_socket(ws.sock):
        ws.sock.settimeout(seconds)
        ws.sock = GuardedSocket(ws.sock)


def _write_timed_out(ws: Server) -> bool:
    return isinstance(ws.sock, GuardedSocket) and ws.sock.timed_out


_NO_ENVIRON: dict[str, Any] = {}


class _WsRequest:
    """What a WebSocket stream reads of its request, read while there is one: the stream may outlive it (hand-over)."""

    __slots__ = ("authorization", "client", "path", "rt", "slots")

    def __init__(self) -> None:
        self.rt = runtime()
        self.slots: StreamSlots = current_app.extensions["jobpulse.stream_slots"]
        self.client = client_address()
        self.path = request.path
        self.authorization = request.headers.get("Authorization")

    def take_stream_slot(self) -> StreamSlot:
        """A place for this client's stream (:mod:`webapp.api.stream_slots`), or the error that refuses it."""
        return self.slots.take(self.client)


_WsStream = Callable[[Server, _WsRequest], None]


def _refused(ws: Server, asked: _WsRequest) -> None:
    """What follows a refusal (its Close is sent): nothing; :func:`_ws_stream` then waits for the client's Close."""


def _serve_ws(ws: Server, opening: Callable[[Server, _WsRequest], _WsStream | None]) -> None:
    """Open a WebSocket stream of this request, then run it: in a greenlet of its own, once gunicorn's request
    has let go, where it may be (:mod:`webapp.api.handover`); else here, as the request.

    ``opening`` runs here and returns the stream, or ``None`` once it has refused it (its Close sent): a
    refusal is not handed over, so that it holds one of gunicorn's connections until its closing handshake
    is done, as every connection without a stream slot does (:mod:`webapp.api.stream_slots`).
    """
    asked = _WsRequest()
    try:
        stream = opening(ws, asked)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        stream = None  # the client went before its refusal was out: its doing, no error
    if stream is None:
        _ws_stream(ws, asked, _refused)
        return
    handovers = handovers_for(ws.sock)
    if handovers is None:
        _ws_stream(ws, asked, stream)
        return
    ws.sock = take_socket(ws.sock)
    ws.environ = _NO_ENVIRON  # read only by the handshake: gunicorn's environ (its parser, its body) can go
    ws.connected = False  # flask-sock's ws.close() after this handler finds nothing to close; the stream reopens it
    handovers.spawn(_ws_handed_over, ws, asked, stream)


def _ws_handed_over(ws: Server, asked: _WsRequest, stream: _WsStream) -> None:
    """A WebSocket stream handed over, then what flask-sock and gunicorn do after a handler: its Close, TCP's end."""
    sock = ws.sock
    ws.connected = True
    try:
        _ws_stream(ws, asked, stream)
    except ConnectionClosed:
        pass
    except Exception:  # as Flask logs a handler's error
        logger.exception("stream.failed", extra={"transport": "ws", "path": asked.path})
    finally:
        with suppress(Exception):  # flask-sock: a Close (1000) if the stream has not sent one
            ws.close()
        sock.close()


def _ws_stream(ws: Server, asked: _WsRequest, stream: _WsStream) -> None:
    """Run a WebSocket ``stream``; then wait for the client's Close, or, if a write timed out, end at once."""
    seconds = asked.rt.settings.stream_write_timeout_seconds
    bound_writes(ws, seconds)
    try:
        stream(ws, asked)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        pass  # the client went (or stopped reading: the write deadline); its doing, not the server's: no error
    except OSError:
        if not _write_timed_out(ws):
            raise
    finally:
        if _write_timed_out(ws):
            _abandon(ws, path=asked.path, seconds=seconds)
        else:
            _await_peer_close(ws)


def _abandon(ws: Server, *, path: str, seconds: float) -> None:
    """End a WebSocket whose client stopped reading: no closing handshake, the connection is closed now."""
    log_write_timeout("ws", path=path, seconds=seconds)
    ws.connected = False  # nothing more is written, not even flask-sock's Close after the handler
    reader = ws.thread
    if isinstance(reader, WebSocketReader):
        reader.abandon()
    else:
        ws.sock.close()


def _refuse(ws: Server, error: Exception, *, code: str, close_code: int) -> None:
    ws.send(ws_error_message(code, str(error)))
    ws.close(reason=close_code, message=code)


def _await_peer_close(ws: Server) -> None:
    """Keep the TCP connection until the client's Close has come, at most :data:`WS_CLOSE_TIMEOUT`.

    RFC 6455 §7.1.1: after sending Close, the server closes TCP only once the
    closing handshake is complete. simple-websocket's reader answers the
    client's Close and then ends; closing before it arrives makes the client's
    Close meet a closed socket, a reset (browsers: ``wasClean`` false).
    Meanwhile the reader reads on, and nobody takes the client's messages:
    they are dropped as they come (:class:`_DroppedMessages`), else a client
    that floods instead of answering holds hundreds of MiB in the worker.
    """
    if not isinstance(ws.event, _DroppedMessages):
        ws.event = _DroppedMessages(ws)
    ws.input_buffer.clear()
    ws.thread.join(timeout=WS_CLOSE_TIMEOUT)


class _DroppedMessages:
    """Stands in for ``ws.event``, which simple-websocket's reader sets at each message: the message is dropped.

    For a WebSocket whose server reads no more messages of its client's (the
    stream, the wait for the client's Close), so that none may pile up.
    """

    __slots__ = ("_event", "_ws")

    def __init__(self, ws: Server) -> None:
        self._ws = ws
        self._event = ws.event

    def set(self) -> None:
        self._ws.input_buffer.clear()
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


class _ClientWatch(_DroppedMessages):
    """Ends a WebSocket's subscription when its client has gone, told by simple-websocket's own reader.

    That reader already reads every frame (it answers pings and the client's
    Close, and closes ``1009`` or ``1008`` itself), and closes the socket when
    it ends, whyever it ends. So no reader of ours waits in ``ws.receive()``
    (a greenlet per stream): this object stands in for ``ws.event``, which the
    reader sets at each message, and drops what the client sends, as the
    stream reads nothing more; told of the socket's close (through
    :class:`GuardedSocket`), it notes that the client :attr:`left` and closes
    the subscription, which wakes the stream for good (:class:`HubClosed`).

    Under gevent that reader is no greenlet either (:mod:`webapp.api.ws_reader`):
    the client's data and each ping that falls due nudge the subscription, and
    the stream, woken with nothing new, lets the reader do its work
    (:meth:`tend`).
    """

    __slots__ = ("_subscription", "left")

    def __init__(self, ws: Server, subscription: Subscription | AllRunsSubscription) -> None:
        super().__init__(ws)
        self._subscription = subscription
        self.left = False
        """Whether the client has gone (or the closing handshake is over): nothing more may be sent."""

    @classmethod
    def install(cls, ws: Server, subscription: Subscription | AllRunsSubscription) -> _ClientWatch:
        """Watch ``ws`` for the stream of ``subscription``: from now on, what the client sends is dropped."""
        watch = cls(ws, subscription)
        sock = ws.sock if isinstance(ws.sock, GuardedSocket) else GuardedSocket(ws.sock)
        ws.sock = sock
        ws.event = watch
        ws.input_buffer.clear()
        sock.on_close = watch.reader_ended
        if sock.closed or not ws.connected:  # it ended before it could tell us
            watch.reader_ended()
        elif isinstance(ws.thread, WebSocketReader):
            ws.thread.follow(subscription)
        return watch

    def tend(self) -> None:
        """The stream was woken with nothing new: let a reader parked on this stream read and ping."""
        if isinstance(self._ws.thread, WebSocketReader):
            self._ws.thread.tend()

    def reader_ended(self) -> None:
        self.left = True
        self._subscription.close()


@sock.route("/ws/task-status/<job_name>", bp=bp)  # type: ignore[untyped-decorator]
def ws_status(ws: Server, job_name: str) -> None:
    _serve_ws(ws, lambda ws, asked: _open_status(ws, asked, job_name))


def _open_status(ws: Server, asked: _WsRequest, job_name: str) -> _WsStream | None:
    """The job's stream, or ``None`` once it is refused (4400, 4404, 1008, 1013): its first status and its slot."""
    rt = asked.rt
    try:
        first = rt.runs.status(job_name)
    except InvalidJobName as error:
        _refuse(ws, error, code=error.code, close_code=WS_CLOSE_BAD_NAME)
        return None
    except JobNotFound as error:
        _refuse(ws, error, code=error.code, close_code=WS_CLOSE_UNKNOWN_JOB)
        return None
    except (RunStoreUnavailable, ExecutorUnavailable) as error:  # not in the hub, and the store cannot say
        _refuse(ws, error, code=error.code, close_code=WS_CLOSE_TRY_AGAIN_LATER)
        return None
    try:
        slot = asked.take_stream_slot()
    except TooManyStreams as error:
        _refuse(ws, error, code=error.code, close_code=WS_CLOSE_POLICY)
        return None
    except StreamsFull as error:
        _refuse(ws, error, code=error.code, close_code=WS_CLOSE_TRY_AGAIN_LATER)
        return None
    return lambda ws, asked: _stream_status(ws, asked, job_name, first, slot)


def _stream_status(ws: Server, asked: _WsRequest, job_name: str, first: JobStatus, slot: StreamSlot) -> None:
    rt = asked.rt
    raw = ws.sock.raw if isinstance(ws.sock, GuardedSocket) else ws.sock
    express = ExpressWriter.attach(raw, ws_frame, delivered=_delivered_ws, peer=ws)
    ws.sock = GuardedSocket(raw, express)  # one write lock: our sends, express, simple-websocket's pings and close
    with (
        slot,
        rt.hub.subscribe(job_name, sink=None if express is None else express.in_front_of) as subscription,
        _stream_opened("ws", job_name),
    ):
        watch = _ClientWatch.install(ws, subscription)
        current = rt.hub.get(job_name) or first
        try:
            ws.send(ws_message(current))
            _delivered("ws", current)
            while not current.terminal:  # not over _changes: one generator level fewer while parked
                status = _next_change(subscription, current, express)
                if status is None:
                    watch.tend()
                elif status is not current:
                    current = status
                    ws.send(ws_message(status))
                    _delivered("ws", status)
            ws.close(reason=WS_CLOSE_NORMAL, message="finished")
        except HubClosed:
            if not watch.left:
                ws.close(reason=WS_CLOSE_GOING_AWAY, message="server shutting down")
        except ClientGone:
            pass  # it left in the middle of a message: nothing more to say


@sock.route("/ws/runs", bp=bp)  # type: ignore[untyped-decorator]
def ws_runs(ws: Server) -> None:
    wanted, limit = _runs_query()  # checked before the upgrade (_guard_websocket)
    _serve_ws(ws, lambda ws, asked: _open_runs(ws, asked, wanted, limit))


def _ws_operator(ws: Server, asked: _WsRequest) -> str | None:
    """The operator this WebSocket speaks for, or ``None`` once it is closed (4401 / 4403): nothing is sent first.

    By the handshake's ``Authorization: Bearer`` if it has one, else by the client's first message,
    ``{"token": "..."}``, within :data:`WS_AUTH_SECONDS` (at most :data:`WS_MAX_MESSAGE_BYTES`, as any message).
    """
    operators = asked.rt.settings.operators
    if not operators:
        ws.close(reason=WS_CLOSE_ADMIN_DISABLED, message="forbidden")
        return None
    header = asked.authorization
    name: str | None = None
    if header is not None:
        scheme, _, given = header.partition(" ")
        name = operator_of(given.strip(), operators) if scheme.lower() == "bearer" else None
    else:
        try:
            first = _receive(ws, timeout=WS_AUTH_SECONDS)
        except ConnectionClosed:
            return None
        token = _token_of(first)
        name = operator_of(token, operators) if token is not None else None
    if name is None:
        logger.info("stream.refused", extra={"transport": "ws", "stream": "runs", "reason": "unauthorized"})
        ws.close(reason=WS_CLOSE_UNAUTHORIZED, message="unauthorized")
    return name


def _receive(ws: Server, *, timeout: float) -> str | bytes | None:
    """The client's next message, or ``None`` after ``timeout`` seconds (read here if its reader is parked)."""
    reader = ws.thread
    message = reader.receive(timeout) if isinstance(reader, WebSocketReader) else ws.receive(timeout=timeout)
    return message  # type: ignore[no-any-return]


def _token_of(message: str | bytes | None) -> str | None:
    """The token of a client's first message, ``{"token": "..."}``; ``None`` if it is anything else.

    Anything else includes JSON nested too deep for the parser (``"[" * 4000`` is under the
    message size limit and raises :class:`RecursionError`, not :class:`ValueError`).
    """
    if message is None:
        return None
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    token = body.get("token") if isinstance(body, dict) else None
    return token if isinstance(token, str) else None


def _open_runs(ws: Server, asked: _WsRequest, wanted: RunFilter, limit: int) -> _WsStream | None:
    """The stream of every run, or ``None`` once it is refused (1008, 1013): its slot (the operator comes after)."""
    try:
        slot = asked.take_stream_slot()
    except TooManyStreams as error:  # closed without a message: nothing is sent before the client is known
        ws.close(reason=WS_CLOSE_POLICY, message=error.code)
        return None
    except StreamsFull as error:
        ws.close(reason=WS_CLOSE_TRY_AGAIN_LATER, message=error.code)
        return None
    return lambda ws, asked: _stream_runs(ws, asked, wanted, limit, slot)


def _stream_runs(ws: Server, asked: _WsRequest, wanted: RunFilter, limit: int, slot: StreamSlot) -> None:
    rt = asked.rt
    with slot:
        operator = _ws_operator(ws, asked)
        if operator is None:
            return

        def list_runs() -> list[JobStatus]:
            return rt.runs.recent(limit, statuses=wanted.statuses, specs=wanted.specs)

        with rt.hub.subscribe_all() as subscription, _stream_opened("ws", None, operator=operator):
            try:
                first = list_runs()
            except RunStoreUnavailable as error:
                _refuse(ws, error, code=error.code, close_code=WS_CLOSE_TRY_AGAIN_LATER)
                return
            watch = _ClientWatch.install(ws, subscription)  # after its token a client has nothing more to say
            try:
                for message in runs_feed(subscription, first=first, list_runs=list_runs, wanted=wanted):
                    if message is None:
                        watch.tend()
                    elif isinstance(message, RunsList):
                        ws.send(ws_runs_message(message.runs))
                    else:
                        ws.send(ws_run_status_message(message))
                        _delivered("ws", message)
            except HubClosed:
                if not watch.left:
                    ws.close(reason=WS_CLOSE_GOING_AWAY, message="server shutting down")
            except RunStoreUnavailable as error:
                logger.warning("stream.relist_failed", extra={"transport": "ws", "error": error.message})
                ws.close(reason=WS_CLOSE_TRY_AGAIN_LATER, message=error.code)
