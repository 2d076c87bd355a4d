"""The bound on an SSE stream's writes: a write its client never takes ends within the deadline, with EPIPE.

Real gevent sockets over loopback, with small buffers; the client side never
reads (a zero TCP window), as a client that stopped reading.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gsocket

from webapp.api.express import ClientGone, ExpressWriter
from webapp.api.frames import sse_chunk
from webapp.api.write_deadline import WriteDeadline, each_write_bounded

BIG = b"x" * 8_000_000  # far more than both buffers hold


@pytest.fixture
def stalled() -> Iterator[tuple[gsocket.socket, gsocket.socket]]:
    """A gevent loopback connection: (server side, small send buffer; client side, small receive buffer)."""
    with gsocket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = gsocket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with server, client:
        yield server, client


def test_a_write_the_client_never_takes_ends_at_the_deadline(stalled: tuple[gsocket.socket, gsocket.socket]) -> None:
    server, _ = stalled
    deadline = WriteDeadline(server, 0.2)
    started = time.monotonic()
    with pytest.raises(BrokenPipeError), deadline.bounding():
        server.sendall(BIG)
    assert deadline.expired
    assert time.monotonic() - started < 5


def test_a_slow_client_that_reads_within_the_deadline_is_not_cut(
    stalled: tuple[gsocket.socket, gsocket.socket],
) -> None:
    server, client = stalled
    deadline = WriteDeadline(server, 5)
    data = b"y" * 200_000
    received = bytearray()

    def read_all() -> None:
        while len(received) < len(data):
            received.extend(client.recv(65536))

    reader = gevent.spawn(read_all)
    with deadline.bounding():
        server.sendall(data)
    reader.get(timeout=10)
    assert bytes(received) == data
    assert not deadline.expired


def test_an_express_writes_unfinished_end_is_bounded_too(stalled: tuple[gsocket.socket, gsocket.socket]) -> None:
    server, _ = stalled
    deadline = WriteDeadline(server, 0.2)
    writer = ExpressWriter(server, sse_chunk, delivered=lambda _: None, deadline=deadline)
    writer.pending = BIG  # as an express write the socket took only in part leaves it
    with pytest.raises(ClientGone):
        writer.flush()
    assert deadline.expired


def test_each_item_of_a_streamed_answer_is_written_within_the_deadline(
    stalled: tuple[gsocket.socket, gsocket.socket],
) -> None:
    """As gunicorn writes a live log follow: each item as it is yielded; the one the client never takes ends it."""
    server, _ = stalled
    deadline = WriteDeadline(server, 0.2)
    written = []
    answer = each_write_bounded(iter([b"first\n", BIG, b"never\n"]), deadline)
    with pytest.raises(BrokenPipeError):
        for item in answer:
            server.sendall(item)
            written.append(len(item))
    assert deadline.expired
    assert written == [6], "the first went out; the second outlasted the deadline; the third was never asked for"
