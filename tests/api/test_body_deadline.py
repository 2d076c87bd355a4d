"""The body deadline over gunicorn's own chunked reader and a real socket, under plain threads.

Under gevent a read waiting when the deadline fires is woken with an
``OSError``; a read that starts just after it finds the read side shut and
gunicorn's chunk parser raises a parse error instead. Plain threads give that
second case every time: the waiting ``recv`` returns ``b""``.
"""

from __future__ import annotations

import inspect
import socket
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from flask import Flask
from gunicorn.http.body import Body, ChunkedReader
from gunicorn.http.unreader import SocketUnreader
from werkzeug.exceptions import BadRequest, RequestTimeout

from tests.helpers import wait_for
from webapp.api.body_deadline import _WATCHDOG, WSGIApp, _TimedBody, body_deadline


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    server.settimeout(30)  # the deadline of a test
    yield client, server
    client.close()
    server.close()


def _chunked_body(server: socket.socket, *, seconds: float) -> _TimedBody:
    reader = ChunkedReader(types.SimpleNamespace(), SocketUnreader(server))
    return _TimedBody(Body(reader), server, seconds=seconds, expected=None)


def test_a_chunk_cut_short_by_the_deadline_is_a_408(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"1\r\n{")  # then nothing: the reader waits for the chunk's CRLF
    body = _chunked_body(server, seconds=0.2)
    with pytest.raises(RequestTimeout):
        body.read()


@pytest.mark.parametrize("framing", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"], ids=["size", "terminator"])
def test_broken_chunked_framing_is_a_400(pair: tuple[socket.socket, socket.socket], framing: bytes) -> None:
    client, server = pair
    client.sendall(framing)
    body = _chunked_body(server, seconds=30)
    with pytest.raises(BadRequest) as raised:
        body.read()
    assert raised.value.code == 400
    body.finish()


def test_a_sooner_deadline_wakes_the_one_watchdog(pair: tuple[socket.socket, socket.socket]) -> None:
    # one thread keeps every deadline: one due sooner than all it waits for must wake it
    client, server = pair
    later_client, later_server = socket.socketpair()
    try:
        later = _chunked_body(later_server, seconds=60)
        # the thread is asleep until the later deadline (CPython's Condition lists its waiters)
        wait_for(lambda: _WATCHDOG._due._waiters, what="the watchdog waiting")  # type: ignore[attr-defined]
        client.sendall(b"1\r\n{")
        sooner = _chunked_body(server, seconds=0.2)
        with pytest.raises(RequestTimeout):  # not the socket's own 30 s timeout
            sooner.read()
        later.finish()
    finally:
        later_client.close()
        later_server.close()


def test_a_finished_body_is_left_alone_when_its_deadline_passes(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"2\r\n{}\r\n0\r\n\r\n")
    body = _chunked_body(server, seconds=0.2)
    assert body.read() == b"{}"
    body.finish()  # as the middleware does when the answer is done
    wait_for(lambda: all(entry[2] is not body for entry in list(_WATCHDOG._deadlines)), what="the deadline passing")
    assert not body.expired
    client.sendall(b"next request")  # the connection is still whole: kept alive for the next request
    assert server.recv(64) == b"next request"


def test_a_body_finished_while_its_deadline_fires_keeps_its_socket() -> None:
    # Under threads the watchdog may find the body unfinished, then the request finish and its
    # connection go on to the next request (keep-alive): the read side must not be shut after that.
    events: list[str] = []
    in_window, go_on = threading.Event(), threading.Event()

    class Socket:
        def shutdown(self, how: int) -> None:
            events.append("shut")

    class Racing(_TimedBody):
        @property  # type: ignore[override]
        def expired(self) -> bool:
            return bool(self.__dict__.get("_expired", False))

        @expired.setter
        def expired(self, value: bool) -> None:
            if value:  # the watchdog found it unfinished and is about to shut its socket
                in_window.set()
                go_on.wait(5)
            self.__dict__["_expired"] = value

    body = Racing(None, Socket(), seconds=0.05, expected=None)  # type: ignore[arg-type]
    assert in_window.wait(5), "the watchdog never fired"

    def finish() -> None:
        body.finish()
        events.append("finished")  # from here on the connection may carry the next request

    finishing = threading.Thread(target=finish)
    finishing.start()
    finishing.join(0.2)
    go_on.set()
    finishing.join(5)
    wait_for(lambda: "shut" in events and "finished" in events, what="both ends of the race")
    assert events == ["shut", "finished"]


def test_the_watchdog_stops_within_a_second_and_a_later_body_starts_it_again(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    _chunked_body(server, seconds=60).finish()
    thread = _WATCHDOG._thread
    assert thread is not None and thread.is_alive()
    _WATCHDOG.stop()  # as the runtime's stop does
    assert not thread.is_alive()  # stop() joins it, for at most a second
    client.sendall(b"1\r\n{")
    with pytest.raises(RequestTimeout):  # a new thread keeps the next body's deadline
        _chunked_body(server, seconds=0.2).read()


def test_a_body_whose_expiry_fails_does_not_end_every_deadline(
    pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    client, server = pair

    class Broken(_TimedBody):
        def expire(self) -> None:
            raise RuntimeError("broken")

    other_client, other_server = socket.socketpair()
    try:
        reader = ChunkedReader(types.SimpleNamespace(), SocketUnreader(other_server))
        Broken(Body(reader), other_server, seconds=0.05, expected=None)
        client.sendall(b"1\r\n{")
        with pytest.raises(RequestTimeout):
            _chunked_body(server, seconds=0.3).read()
    finally:
        other_client.close()
        other_server.close()
    assert "body_deadline.expire_failed" in caplog.text


# -- the dispatch: how the deadline sits in front of the app -----------------------------


def _answering(seen: list[dict[str, Any]], answer: Iterable[bytes]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(environ)
        return answer

    return app


def test_a_request_without_a_body_goes_straight_to_the_app(pair: tuple[socket.socket, socket.socket]) -> None:
    # every stream: nothing wraps its input or its answer, so no frame of ours stays under its parked greenlet
    _, server = pair
    seen: list[dict[str, Any]] = []
    answer = [b"ok"]
    stream_input = object()
    environ = {"gunicorn.socket": server, "CONTENT_LENGTH": "", "wsgi.input": stream_input}
    assert body_deadline(_answering(seen, answer), seconds=30)(environ, lambda *a: None) is answer
    assert seen[0]["wsgi.input"] is stream_input


@pytest.mark.parametrize(
    "headers",
    [{"CONTENT_LENGTH": "2"}, {"HTTP_TRANSFER_ENCODING": "chunked"}],
    ids=["length", "chunked"],
)
def test_a_request_with_a_body_reads_it_against_the_deadline(
    pair: tuple[socket.socket, socket.socket], headers: dict[str, str]
) -> None:
    _, server = pair
    seen: list[dict[str, Any]] = []
    environ = {"gunicorn.socket": server, "wsgi.input": object(), **headers}
    answer = body_deadline(_answering(seen, [b"ok"]), seconds=30)(environ, lambda *a: None)
    body = seen[0]["wsgi.input"]
    assert isinstance(body, _TimedBody)
    assert list(answer) == [b"ok"]
    answer.close()  # type: ignore[attr-defined]  # as the server does
    assert body.finished


@pytest.mark.parametrize("hops", ["0", "1"])
def test_the_app_is_wrapped_in_plain_calls_that_python_runs_without_a_c_frame(
    make_app: Callable[..., Flask], hops: str
) -> None:
    # an instance with __call__ as a WSGI layer costs every parked stream ~1 KiB (docs/PERFORMANCE.md, fourth pass)
    app = make_app(TRUSTED_PROXY_HOPS=hops)
    assert inspect.isfunction(app.wsgi_app) or inspect.ismethod(app.wsgi_app), app.wsgi_app
