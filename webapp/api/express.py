"""The express path of fan-out: a change written straight to each waiting stream's socket.

Under the gevent worker every open stream is a greenlet waiting on its
subscription. Waking ten thousand greenlets so that each formats nothing new
and writes the same bytes costs about three quarters of the fan-out (see
docs/PERFORMANCE.md). Instead, an :class:`ExpressWriter` stands in front of
the stream's subscription as the sink the hub offers changes to
(:meth:`webapp.hub.StatusHub.subscribe`): while the stream waits, it writes
the change's bytes (built once per change, :mod:`webapp.api.frames`) to the
socket itself, with one non-blocking write, and the stream's greenlet sleeps
on. Anything else it hands to the subscription, which wakes the stream.

One lock per socket (:attr:`ExpressWriter.lock`) orders every writer of it:
express writes go only while it is free (else the change goes the usual
way; nothing else runs during one, so it need not take it), the stream
holds it while the server writes the stream's own frames, and
simple-websocket's pings, pongs and close take it through
:class:`GuardedSocket`. A write the socket cannot take whole leaves its end
pending; the stream's greenlet wakes and finishes it (:meth:`flush`), and any
other writer finishes it first, so no frame is ever torn. Final statuses
always take the usual path, so each stream still ends itself
(``event: end``, close 1000).

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
from contextlib import nullcontext
from typing import Any

from webapp.api.write_deadline import WriteDeadline
from webapp.hub import Subscription
from webapp.status import JobStatus


def _cooperative() -> bool:
    """Whether this process runs on gevent's monkey-patched sockets (the gunicorn gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def cooperative_socket(sock: Any) -> bool:
    """Whether ``sock`` is a plain non-blocking socket of a gevent worker: bytes may go to and from its fd as they are.

    Then nothing runs between a check and the write or read that follows it,
    and a read or write never waits; not so with TLS (bytes must go through
    SSL) or under threads.
    """
    if sock is None or not _cooperative() or hasattr(sock, "getpeercert"):
        return False
    try:
        return not os.get_blocking(sock.fileno())
    except (OSError, ValueError):
        return False


class ClientGone(Exception):
    """Finishing an express write failed: the client has gone."""


class ExpressWriter:
    """Writes statuses straight to one client's socket while its stream waits, if the socket takes them at once.

    The hub's sink for one stream (:meth:`in_front_of` its subscription);
    the stream reads its changes through :meth:`next_change`. Other writers
    of the same socket hold :attr:`lock` (simple-websocket's, through
    :class:`GuardedSocket`), so nothing is ever written into the middle of a
    frame an express write left unfinished.
    """

    __slots__ = (
        "_deadline",
        "_delivered",
        "_encode",
        "_fd",
        "_peer",
        "_sock",
        "_subscription",
        "lock",
        "pending",
        "sent_seq",
        "timed_out",
        "waiting",
    )

    def __init__(
        self,
        sock: Any,
        encode: Callable[[JobStatus], bytes],
        *,
        delivered: Callable[[JobStatus], None],
        peer: Any = None,
        deadline: WriteDeadline | None = None,
    ) -> None:
        """``delivered`` hears of each status written; with a ``peer``, writes only while ``peer.connected``.

        ``peer`` is the stream's simple-websocket ``Server``, so that nothing follows its Close (an
        object the stream holds anyway, and ``delivered`` a shared function: no closure per stream).
        With a ``deadline``, finishing a write (:meth:`flush`) is bounded by it (else by the socket's timeout).
        """
        self._sock = sock
        self._deadline = deadline
        self._fd: int = sock.fileno()
        self._encode = encode
        self._delivered = delivered
        self._peer = peer
        self.lock = threading.Lock()
        """The socket's one write lock: every writer holds it (and may wait for the client); express never waits."""
        self.pending = b""
        """The unsent end of a write the socket took only in part: :meth:`flush` sends it."""
        self.sent_seq = 0
        """The newest status that went this way (the stream must not send it again)."""
        self.waiting = False
        """Whether the stream waits in :meth:`next_change` with nothing to send: only then do changes go express."""
        self.timed_out = False
        """Whether finishing a write outlasted the socket's timeout (the client stopped reading)."""
        self._subscription: Subscription | None = None

    @classmethod
    def attach(cls, sock: Any, encode: Callable[[JobStatus], bytes], **kwargs: Any) -> ExpressWriter | None:
        """A writer for ``sock`` if the express path is safe there, else ``None``."""
        return cls(sock, encode, **kwargs) if cooperative_socket(sock) else None

    def move_to(self, sock: Any) -> None:
        """Write to ``sock`` from now on: the same connection, taken from the server (:mod:`webapp.api.handover`)."""
        self._sock = sock
        self._fd = sock.fileno()

    def __call__(self, status: JobStatus) -> bool:
        """Write ``status`` now; ``True`` if the client's socket took it whole.

        Only if no other writer holds :attr:`lock`; it is not taken for the
        write itself: on the gevent worker (the only place an express writer
        is made, :meth:`attach`) nothing else runs between this check and the
        ``os.write``, which never yields, so no other writer can start.
        """
        if self.pending or self.lock.locked() or (self._peer is not None and not self._peer.connected):
            return False
        data = self._encode(status)
        try:
            written = os.write(self._fd, data)  # never blocks: the socket is non-blocking
        except OSError:  # full (EAGAIN) or gone: the stream's greenlet takes over and finds out which
            return False
        if written < len(data):
            self.pending = data[written:]
        self.sent_seq = status.seq
        self._delivered(status)
        return not self.pending

    # -- the hub's sink for one stream --------------------------------------------

    def in_front_of(self, subscription: Subscription) -> ExpressWriter:
        """Stand in front of ``subscription``: the hub offers its changes here (``StatusHub.subscribe(sink=...)``)."""
        self._subscription = subscription
        return self

    def offer(self, status: JobStatus) -> None:
        """While the stream waits, write a non-final ``status`` at once; otherwise, or if that fails, hand it on."""
        if self.waiting and not status.terminal and self(status):
            return
        self.waiting = False  # the stream is woken with something to do: nothing may overtake it
        assert self._subscription is not None, "in_front_of() a subscription first"
        self._subscription.offer(status)

    def next_change(self) -> JobStatus | None:
        """The subscription's next status or nudge (:meth:`Subscription.get`); changes go express meanwhile.

        Whatever wakes the stream, an express write the socket took only in
        part is finished before anything else (:meth:`flush`).
        """
        assert self._subscription is not None, "in_front_of() a subscription first"
        self.waiting = True
        try:
            return self._subscription.get()
        finally:
            self.waiting = False
            self.flush()

    # -- everyone else who writes to the socket -----------------------------------

    def flush(self) -> None:
        """Finish a write the socket took only in part (waiting, if need be, in the calling greenlet only).

        Raises :class:`ClientGone` if the client cannot take it any more.
        """
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.pending:
            rest, self.pending = self.pending, b""
            try:
                with self._deadline.bounding() if self._deadline is not None else nullcontext():
                    self._sock.sendall(rest)
            except OSError as error:
                self.timed_out = isinstance(error, TimeoutError)
                raise ClientGone(str(error)) from error

    def already_sent(self, status: JobStatus) -> bool:
        return status.seq <= self.sent_seq


class GuardedSocket:
    """A client socket shared by several writers: each write takes the socket's one lock and goes whole.

    With an :class:`ExpressWriter`, its lock, and an unfinished express
    write is finished first; without one (no express path), a lock of its
    own, so that a WebSocket's pings never land inside a message.

    Whoever closes it (simple-websocket's reader, as it ends) tells
    :attr:`on_close`, if set; :attr:`closed` says whether that has happened.
    A write that outlasts the socket's timeout (``STREAM_WRITE_TIMEOUT_SECONDS``,
    :func:`webapp.api.streams.bound_writes`) raises :class:`BrokenPipeError`, as for
    a client that has gone, and :attr:`timed_out` says so.
    """

    __slots__ = ("_lock", "_sock", "_timed_out", "_writer", "closed", "on_close")

    def __init__(self, sock: Any, writer: ExpressWriter | None = None) -> None:
        self._sock = sock
        self._writer = writer
        self._lock = writer.lock if writer is not None else threading.Lock()
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        """Called once the socket is closed, by whoever closed it."""
        self._timed_out = False

    @property
    def raw(self) -> Any:
        """The socket it guards."""
        return self._sock

    @property
    def timed_out(self) -> bool:
        """Whether a write to it (by any writer) outlasted the socket's timeout: the client stopped reading."""
        return self._timed_out or (self._writer is not None and self._writer.timed_out)

    def close(self) -> None:
        self._sock.close()
        self.closed = True
        if self.on_close is not None:
            self.on_close()

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        with self._lock:
            if self._writer is not None:
                try:
                    self._writer._flush_locked()
                except ClientGone as error:
                    raise BrokenPipeError(str(error)) from error
            try:
                self._sock.sendall(data)
            except TimeoutError as error:
                self._timed_out = True
                raise BrokenPipeError(str(error)) from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
