"""A WebSocket stream hears that its client has gone from simple-websocket's own reader: no reader of ours.

A real simple-websocket ``Server`` (its reader a real thread) on one end of a
socket pair; the test plays the client with hand-made masked frames.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from simple_websocket import Server

from tests.helpers import wait_for
from webapp.api.express import GuardedSocket
from webapp.api.streams import WS_MAX_MESSAGE_BYTES, _ClientWatch
from webapp.api.ws_reader import WebSocketReader
from webapp.hub import HubClosed, Subscription

HANDSHAKE = {
    "HTTP_HOST": "jobpulse.test",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked with a zero key (so the payload reads as it is)."""
    if len(payload) < 126:
        head = bytes([0x80 | opcode, 0x80 | len(payload)])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", len(payload))
    return head + b"\0\0\0\0" + payload


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next server frame (unmasked, short): its opcode and payload."""
    head = sock.recv(2, socket.MSG_WAITALL)
    assert len(head) == 2, "the server closed the connection"
    length = head[1] & 0x7F
    return head[0] & 0x0F, sock.recv(length, socket.MSG_WAITALL) if length else b""


@pytest.fixture(params=[None, WebSocketReader], ids=["simple-websocket's thread", "WebSocketReader as a thread"])
def connection(request: pytest.FixtureRequest) -> Iterator[tuple[Server, socket.socket]]:
    """An open WebSocket: (the server, its reader running; the client's socket, past the 101).

    Its reader is simple-websocket's own thread, or :class:`WebSocketReader`, which runs that same thread
    where it cannot be parked on the stream (here: no gevent).
    """
    server_side, client = socket.socketpair()
    ws = Server(
        {**HANDSHAKE, "gunicorn.socket": server_side},
        ping_interval=None,
        max_message_size=WS_MAX_MESSAGE_BYTES,
        thread_class=request.param,
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101")
    try:
        yield ws, client
    finally:
        client.close()
        ws.thread.join(timeout=5)
        server_side.close()


def test_what_the_client_sends_is_dropped_and_its_leaving_closes_the_subscription(
    connection: tuple[Server, socket.socket],
) -> None:
    ws, client = connection
    subscription = Subscription("task-runner-a-00000000")
    watch = _ClientWatch.install(ws, subscription)
    assert isinstance(ws.sock, GuardedSocket)
    client.sendall(client_frame(0x1, b"hello") * 3 + client_frame(0x9, b"after"))  # three messages, then a ping
    assert read_frame(client) == (0xA, b"after")  # the reader has handled all three messages
    assert ws.input_buffer == [] and not watch.left
    assert subscription.get(timeout=0) is None  # still open: nothing to read, no HubClosed

    client.shutdown(socket.SHUT_WR)  # the client goes away without a Close
    wait_for(lambda: watch.left, what="the watch to hear the client has gone")
    with pytest.raises(HubClosed):
        subscription.get(timeout=0)


def test_a_message_over_the_limit_closes_1009_and_the_subscription(connection: tuple[Server, socket.socket]) -> None:
    ws, client = connection
    subscription = Subscription("task-runner-a-00000000")
    watch = _ClientWatch.install(ws, subscription)
    client.sendall(client_frame(0x1, b"x" * (WS_MAX_MESSAGE_BYTES + 1)))
    opcode, payload = read_frame(client)
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1009)
    wait_for(lambda: watch.left, what="the watch to hear the reader has ended")
    with pytest.raises(HubClosed):
        subscription.get(timeout=0)


def test_a_client_that_left_before_the_watch_was_installed_is_seen_at_once(
    connection: tuple[Server, socket.socket],
) -> None:
    ws, client = connection
    client.sendall(client_frame(0x8, struct.pack("!H", 1000)))  # the client's Close
    assert read_frame(client)[0] == 0x8  # answered by the reader, which then ends
    ws.thread.join(timeout=5)
    subscription = Subscription("task-runner-a-00000000")
    watch = _ClientWatch.install(ws, subscription)
    assert watch.left
    with pytest.raises(HubClosed):
        subscription.get(timeout=0)


def test_without_gevent_the_reader_is_a_thread_and_the_upgrade_drops_wsprotos_http_handshake() -> None:
    server_side, client = socket.socketpair()
    ws = Server({**HANDSHAKE, "gunicorn.socket": server_side}, thread_class=WebSocketReader)
    try:
        assert isinstance(ws.thread, WebSocketReader)
        assert not ws.thread.parked and ws.thread.is_alive()
        assert list(ws.ws.events()) == []
        assert not hasattr(ws.ws.handshake, "_h11_connection"), "the h11 connection of the upgrade is let go"
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(4096)
        client.sendall(client_frame(0x9, b"still here"))
        assert read_frame(client) == (0xA, b"still here")
    finally:
        client.close()
        ws.thread.join(timeout=5)
        server_side.close()
    assert not ws.thread.is_alive()
