"""The pieces of the stream hand-over (webapp/api/handover.py) on real sockets and real greenlets."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import gevent
import gevent.event
import gevent.socket
import pytest
from flask import Flask

from webapp.api import handover
from webapp.api.handover import SSEResponse, StreamHandovers, serve_chunked
from webapp.api.write_deadline import WriteDeadline


class _Body:
    """A stream body as the SSE views make one: an iterable of frames, closed by whoever serves it."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.frames)

    def close(self) -> None:
        self.closed = True


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_serve_chunked_writes_the_head_each_frame_as_a_chunk_and_the_last_chunk_then_closes() -> None:
    server, client = socket.socketpair()
    body = _Body([b"retry: 1000\n\n", b"", b"event: end\ndata: {}\n\n"])
    head = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"]
    with client:
        serve_chunked(server, body, head, "/sse/task-status/x")
        received = _read_all(client)
    assert received == (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"D\r\nretry: 1000\n\n\r\n"  # an empty frame is no chunk: it would end the body
        b"15\r\nevent: end\ndata: {}\n\n\r\n"
        b"0\r\n\r\n"
    )
    assert body.closed
    assert server.fileno() == -1, "the connection is closed"
    assert head == [], "the head is not kept for the stream's life"


def test_serve_chunked_closes_the_body_quietly_when_the_client_has_gone() -> None:
    server, client = socket.socketpair()
    client.close()
    body = _Body([b"retry: 1000\n\n"] * 3)
    serve_chunked(server, body, [b"HTTP/1.1 200 OK\r\n\r\n"], "/sse/task-status/x")
    assert body.closed
    assert server.fileno() == -1


def test_the_last_chunk_is_bounded_by_the_write_deadline() -> None:
    """A client that stopped reading as the body ended cannot hold the stream on the last chunk's write."""
    server, client = gevent.socket.socketpair()
    deadline = WriteDeadline(server, 0.05)

    def body() -> Iterator[bytes]:
        yield b"event: end\ndata: {}\n\n"
        server.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the client reads nothing more: fill the connection
            while True:
                server.send(b"x" * 65536)
        server.setblocking(True)

    with client:
        serving = gevent.spawn(serve_chunked, server, body(), [b"HTTP/1.1 200 OK\r\n\r\n"], "/sse/x", deadline)
        serving.join(10)
        assert serving.dead, "the last chunk's write never ended"
    assert deadline.expired
    assert server.fileno() == -1


def test_stream_handovers_are_counted_until_they_end_and_waited_for() -> None:
    handovers = StreamHandovers()
    release = gevent.event.Event()
    ended: list[str] = []

    def stream(name: str) -> None:
        release.wait()
        ended.append(name)

    handovers.spawn(stream, "a")
    handovers.spawn(stream, "b")
    assert len(handovers) == 2
    assert not handovers.wait(0), "still open"
    release.set()
    assert handovers.wait(10)
    assert sorted(ended) == ["a", "b"]
    assert len(handovers) == 0


def test_waiting_for_handed_over_streams_keeps_the_workers_heartbeat() -> None:
    """A stopping worker beats while it waits (else gunicorn's arbiter aborts it as hung), and stops at its bound."""
    handovers = StreamHandovers()
    release = gevent.event.Event()
    beats: list[float] = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 3:
            release.set()

    handovers.spawn(release.wait)
    assert handovers.wait(10, beat=beat, every=0.01)
    assert len(beats) == 3, "beat while it waited, and no more once the stream ended"

    stuck = gevent.event.Event()
    handovers.spawn(stuck.wait)  # does not end while waited for
    beats.clear()
    assert not handovers.wait(0.05, beat=lambda: beats.append(time.monotonic()), every=0.01)
    assert beats, "beat until the bound"
    stuck.set()
    assert handovers.wait(10)


def test_an_sse_answer_that_fails_before_it_is_handed_over_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that never starts is closed all the same: its close gives the stream's slot back."""
    monkeypatch.setattr(handover, "handovers_for", lambda sock: StreamHandovers())
    app = Flask(__name__)
    server, client = socket.socketpair()
    body = _Body([b"retry: 1000\n\n"])
    answer = SSEResponse(body)
    answer.headers["X-Not-Latin-1"] = "\u2603"  # no header of jobpulse's can be this; anything that fails will do
    environ = {"gunicorn.socket": server, "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/"}
    with client, server, app.app_context(), pytest.raises(UnicodeEncodeError):
        answer(environ, lambda *args: None)
    assert body.closed
