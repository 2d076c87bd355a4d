"""The WebSocket reader that is no greenlet of its own (:mod:`webapp.api.ws_reader`), on the real gevent worker.

The stream's greenlet does simple-websocket's reading when its socket or its
ping timer nudges it: pings are answered, the server's pings are sent and a
missed pong closes ``1008``, a client's Close mid-stream is answered and frees
the subscription, and what the client sends is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from tests.helpers import wait_for
from tests.live.clients import RawWebSocket, launch, open_streams, wait_for_status
from tests.live.server import LiveServer


def _streaming(server: LiveServer) -> RawWebSocket:
    """A raw client on a stream that stays open (a running slow task), past its first status."""
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    ws = RawWebSocket(server, name)
    assert isinstance(ws._next_event(), TextMessage)
    wait_for(lambda: open_streams(server, "ws") == 1, what="the stream to open")
    return ws


def test_a_clients_ping_is_answered_and_its_messages_dropped_while_the_stream_waits(live_server: LiveServer) -> None:
    ws = _streaming(live_server)
    ws.send(TextMessage(data="hello, anyone?"))
    ws.send(Ping(payload=b"are you there"))
    event = ws._next_event()
    assert isinstance(event, Pong), event
    assert event.payload == b"are you there"
    assert open_streams(live_server, "ws") == 1
    ws.shutdown()


def test_a_clients_close_mid_stream_is_answered_and_frees_the_subscription(live_server: LiveServer) -> None:
    ws = _streaming(live_server)
    ws.send(CloseConnection(code=1000, reason="bye"))
    event = ws._next_event()
    assert isinstance(event, CloseConnection), event
    assert event.code == 1000
    wait_for(lambda: open_streams(live_server, "ws") == 0, timeout=5, what="the subscription to be freed")
    assert ws._next_event() is None, "then the server ends TCP"
    ws.shutdown()


def _pings_until(
    ws: RawWebSocket, *, answer: bool, enough: Callable[[int], bool]
) -> tuple[int, CloseConnection | None]:
    """Read the server's pings (answering them or not) until ``enough(pings)`` or its Close; (pings, Close)."""
    pings = 0
    ws.sock.settimeout(30)
    while not enough(pings):
        event = ws._next_event()
        if event is None or isinstance(event, CloseConnection):
            return pings, event
        if isinstance(event, Ping):
            pings += 1
            if answer:
                ws.send(event.response())
    return pings, None


def test_the_server_pings_and_a_client_that_answers_stays(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(WS_PING_SECONDS="0.1")
    ws = _streaming(server)
    pings, close = _pings_until(ws, answer=True, enough=lambda pings: pings >= 5)
    assert (pings, close) == (5, None)
    assert open_streams(server, "ws") == 1
    ws.shutdown()


def test_a_client_that_misses_a_pong_is_closed_1008(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(WS_PING_SECONDS="0.1")
    ws = _streaming(server)
    pings, close = _pings_until(ws, answer=False, enough=lambda pings: pings > 5)
    assert pings == 1, "one unanswered ping, then the close"
    assert close is not None
    assert (close.code, close.reason) == (1008, "Ping/Pong timeout")
    wait_for(lambda: open_streams(server, "ws") == 0, timeout=5, what="the subscription to be freed")
    ws.shutdown()


def test_a_pong_that_came_while_the_worker_was_held_up_counts_when_the_next_ping_falls_due(
    make_live_server: Callable[..., LiveServer],
) -> None:
    """The worker held up past a ping's time (a long collection, a busy loop): the pong that came meanwhile counts.

    On waking, the socket's data and the ping timer nudge the stream together: the pong is read before the ping
    is checked, and the next ping falls due an interval after the late one, not at once as the timer catches up;
    either way round a healthy client was closed ``1008``.
    """
    server = make_live_server(WS_PING_SECONDS="0.5")
    ws = _streaming(server)
    ws.sock.settimeout(30)
    ping = ws._next_event()
    assert isinstance(ping, Ping), ping
    assert server.process is not None
    (worker,) = psutil.Process(server.process.pid).children()
    worker.suspend()
    try:
        ws.send(ping.response())  # it reaches the worker's socket at once, and waits there to be read
        time.sleep(1.2)  # past the next ping's time
    finally:
        worker.resume()
    pings, close = _pings_until(ws, answer=True, enough=lambda pings: pings >= 3)
    assert (pings, close) == (3, None)
    assert open_streams(server, "ws") == 1
    ws.shutdown()
