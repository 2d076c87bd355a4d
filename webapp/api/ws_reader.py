"""simple-websocket's reader, done by the stream's own greenlet instead of a second one per WebSocket.

simple-websocket reads each connection in a thread of its own (a greenlet
under gevent): it answers pings and the client's Close, closes ``1009`` for
an oversized message and ``1008`` for a missed pong, and closes the socket
when it ends. Parked for the life of the stream, that greenlet, its
``Thread`` and its selector cost about as much memory as the stream itself
(docs/PERFORMANCE.md, "Memory per stream, third pass").

:class:`WebSocketReader` is the ``thread_class`` given to simple-websocket
(``SOCK_SERVER_OPTIONS``). Under the gevent worker, on a plain non-blocking
socket, it starts nothing: the stream that follows a subscription
(:meth:`follow`) has a socket watcher and a ping timer on gevent's loop that
only *nudge* the subscription, and the stream's greenlet, woken with nothing
new, does the reader's work (:meth:`tend`) with simple-websocket's own event
handling (``Server._handle_events``), so every frame is answered as before.
Before and after the stream (the first-message token of ``/ws/runs``, the
wait for the client's Close) the greenlet reads for itself (:meth:`receive`,
:meth:`join`). Anywhere else (threads, TLS inside the worker) it is a real
thread running simple-websocket's reader, unchanged.

Either way, once the upgrade is done the connection drops wsproto's HTTP
handshake (an h11 connection it keeps for the socket's life but never uses
again).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from gevent import get_hub
from gevent.socket import wait_read
from wsproto.events import Event, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from webapp.api.express import cooperative_socket


class _Upgraded:
    """What stands for wsproto's HTTP handshake once it is over: it has no events left to give."""

    __slots__ = ()

    @staticmethod
    def events() -> Iterator[Event]:
        return iter(())


_UPGRADED = _Upgraded()


class _Nudgeable(Protocol):
    """What the reader wakes: a stream's subscription (``nudge``: its ``get`` returns ``None``)."""

    def nudge(self) -> None: ...


class WebSocketReader:
    """simple-websocket's ``thread_class``: its reader, run by the stream's greenlet when gevent allows it.

    Constructed by simple-websocket with ``target`` its ``Server._thread``,
    once the handshake is done; :meth:`start` either starts that thread
    (:attr:`parked` false) or nothing.
    """

    __slots__ = ("_io", "_ping_due", "_subscription", "_thread", "_timer", "_ws", "ended", "name", "parked")

    def __init__(self, *, target: Callable[[], None], **_: Any) -> None:
        self._ws: Any = target.__self__  # type: ignore[attr-defined]  # the simple-websocket Server it reads for
        self.name = "simple_websocket reader"
        self.parked = False
        """Whether the stream's own greenlet does the reading (no thread of its own)."""
        self.ended = False
        """Whether the reader has finished (the socket is closed), as a thread that has returned."""
        self._thread: threading.Thread | None = None
        self._io: Any = None
        self._timer: Any = None
        self._ping_due = False
        self._subscription: _Nudgeable | None = None
        connection = self._ws.ws
        if connection.connection is not None:  # upgraded: the handshake's h11 connection is never used again
            connection.handshake = _UPGRADED

    def start(self) -> None:
        if cooperative_socket(self._ws.sock):
            self.parked = True
            return
        self._thread = threading.Thread(target=self._ws._thread, name=self.name)
        self._thread.start()

    def is_alive(self) -> bool:
        return not self.ended if self._thread is None else self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Until the reader ends (the client's Close, or TCP gone), at most ``timeout`` seconds; reads meanwhile."""
        if self._thread is not None:
            self._thread.join(timeout)
            return
        self._stop_watching()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ended and self._wait_readable(deadline):
            self._read()

    def receive(self, timeout: float) -> Any:
        """The client's next message, read by the calling greenlet (or the thread's); ``None`` after ``timeout``."""
        ws = self._ws
        if self._thread is not None:
            return ws.receive(timeout=timeout)
        deadline = time.monotonic() + timeout
        while ws.connected and not ws.input_buffer and self._wait_readable(deadline):
            self._read()
        return ws.receive(timeout=0)  # the message, ``None``, or ConnectionClosed

    # -- while a stream follows a subscription ---------------------------------------

    def follow(self, subscription: _Nudgeable) -> None:
        """From now on, data from the client and each ping that falls due nudge ``subscription``; call :meth:`tend`."""
        if self._thread is not None or self.ended:
            return
        loop = get_hub().loop
        ws = self._ws
        self._subscription = subscription
        self._io = loop.io(ws.sock.fileno(), 1)
        self._io.start(self._readable)
        if ws.ping_interval:
            self._timer = loop.timer(ws.ping_interval, ws.ping_interval)
            self._timer.start(self._ping_falls_due)

    def _readable(self) -> None:  # on gevent's loop: must not block
        self._io.stop()  # one nudge per readiness: tend() reads, then watches again
        assert self._subscription is not None
        self._subscription.nudge()

    def _ping_falls_due(self) -> None:  # on gevent's loop: must not block
        self._ping_due = True
        assert self._subscription is not None
        self._subscription.nudge()

    def tend(self) -> None:
        """The reader's work, when the stream was nudged: what the client sent if anything, then a ping if one is due.

        Reading comes first: when the socket's data and the ping timer nudge the stream together (the stream
        was busy, or the worker held up, past a ping's time), a pong that came in time is in that data.
        """
        if self._io is None or self.ended:
            return
        self._read()
        if self.ended:
            return
        ws = self._ws
        if self._ping_due:
            self._ping_due = False
            if not ws.pong_received:
                if ws.connected:
                    ws.close(reason=CloseReason.POLICY_VIOLATION, message="Ping/Pong timeout")
                ws.event.set()
                self._end()
                return
            ws.pong_received = False
            try:
                ws.sock.send(ws.ws.send(Ping()))
            except OSError:
                self._end()
                return
            # The next one falls due a whole interval after this ping, however late it went: a timer left on its
            # schedule fires at once after a hold-up (libev catches up), before the client could answer.
            self._timer.again(self._ping_falls_due)
            self._ping_due = False  # a tick while a slow client took the ping belongs to this ping, not the next
        self._io.start(self._readable)

    def abandon(self) -> None:
        """End now, reading nothing more: the client stopped reading (a write timed out), so no closing handshake."""
        self._end()

    # -- the reader's own steps --------------------------------------------------------

    def _wait_readable(self, deadline: float | None) -> bool:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        try:
            wait_read(self._ws.sock.fileno(), timeout=remaining)
        except TimeoutError:
            return False
        except OSError:  # closed under us
            self._end()
            return False
        return True

    def _read(self) -> None:
        """One step of simple-websocket's reader: what the socket has now, through its event handling."""
        ws = self._ws
        try:
            data = os.read(ws.sock.fileno(), ws.receive_bytes)  # the socket is non-blocking: never waits
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if not data:
                raise ConnectionResetError
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()
        except (OSError, LocalProtocolError):
            ws.connected = False
            ws.event.set()
        if not ws.connected:
            self._end()

    def _stop_watching(self) -> None:
        for watcher in (self._io, self._timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._io = self._timer = None
        self._subscription = None

    def _end(self) -> None:
        """As simple-websocket's reader ends: not connected, and the socket closed (which tells the stream)."""
        if self.ended:
            return
        self.ended = True
        self._ws.connected = False
        self._stop_watching()
        self._ws.sock.close()
