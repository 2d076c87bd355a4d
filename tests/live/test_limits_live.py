"""Limits every stranger meets, on the real gunicorn gevent worker: open streams, and slow request bodies."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.helpers import wait_for
from tests.live.clients import ADMIN, DONATION, donate, launch, open_sse_socket, ws_collect, ws_connect
from tests.live.server import LiveServer

pytestmark = pytest.mark.live


def _no_error_logged(server: LiveServer) -> bool:
    log = server.log()
    return '"level": "ERROR"' not in log and "[ERROR]" not in log and "Traceback" not in log


def _refused_stream(server: LiveServer, name: str) -> requests.Response:
    """An SSE request that must be refused (read without waiting for a stream's end, in case it is not)."""
    with requests.get(f"{server.url}/sse/task-status/{name}", stream=True, timeout=10) as response:
        if response.status_code == 200:
            return response
        response.content  # noqa: B018 - read the error body
        return response


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    """Open client sockets, closed at the end whatever happens."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def _open(held: list[socket.socket], server: LiveServer, name: str, *, source: str = "127.0.0.1") -> bytes:
    sock, head = open_sse_socket(server, name, source=source)
    held.append(sock)
    return head


def _still_serves(server: LiveServer) -> None:
    """Probes and a donation answer."""
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert donate(server)["status"] in ("Queued", "Pending", "Running", "Succeeded")


def test_one_client_may_hold_only_so_many_streams(
    make_live_server: Callable[..., LiveServer], held: list[socket.socket]
) -> None:
    server = make_live_server(MAX_STREAMS_PER_CLIENT="3")
    name = launch(server, "slow", seconds="60")
    assert all(_open(held, server, name).startswith(b"HTTP/1.1 200") for _ in range(3))

    refused = _refused_stream(server, name)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_streams"
    assert int(refused.headers["Retry-After"]) > 0
    messages, code = ws_collect(ws_connect(server, name))
    assert code == 1008
    assert [m["error"] for m in messages] == ["too_many_streams"]

    assert _open(held, server, name, source="127.0.0.2").startswith(b"HTTP/1.1 200")  # another client is not affected
    _still_serves(server)

    held[0].close()  # a stream that ends gives its place back
    wait_for(
        lambda: _open(held, server, name).startswith(b"HTTP/1.1 200"),
        timeout=10,
        interval=0.2,
        what="the freed place to be taken again",
    )
    assert _no_error_logged(server)


def test_a_full_stream_pool_leaves_connections_for_probes_and_launches(
    make_live_server: Callable[..., LiveServer], held: list[socket.socket]
) -> None:
    server = make_live_server(WORKER_CONNECTIONS="30", MAX_STREAMS_PER_CLIENT="0")  # MAX_STREAMS: 27
    name = launch(server, "slow", seconds="60")
    heads = [_open(held, server, name, source=f"127.0.0.{2 + index % 5}") for index in range(27)]
    assert all(head.startswith(b"HTTP/1.1 200") for head in heads)

    refused = _refused_stream(server, name)
    assert refused.status_code == 503
    assert refused.json()["error"] == "streams_full"
    assert "Retry-After" in refused.headers
    _, code = ws_collect(ws_connect(server, name))
    assert code == 1013
    _still_serves(server)
    assert _no_error_logged(server)


def test_a_body_that_trickles_in_gets_408_and_the_connection_closes(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(BODY_TIMEOUT_SECONDS="1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # the deadline of this test
    sock.sendall(
        b"POST /api/donations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000\r\n\r\n{"
    )
    stop = threading.Event()

    def trickle() -> None:  # one byte at a time, never all 10,000 in this test's lifetime
        while not stop.wait(0.3):
            try:
                sock.send(b" ")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    finally:
        stop.set()
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"] == "request_timeout"
    _still_serves(server)
    assert _no_error_logged(server)


def _trickle(sock: socket.socket, piece: Callable[[], bytes], stop: threading.Event) -> None:
    """Send one small piece every 0.3 s until stopped or the server closes."""
    while not stop.wait(0.3):
        try:
            sock.send(piece())
        except OSError:
            return


def _answer_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    except ConnectionResetError:  # closed with our unread bytes in its buffer
        pass
    return answer


@pytest.mark.parametrize(
    ("first", "piece"),
    [
        pytest.param(b"1\r\n{\r\n", b"1\r\n \r\n", id="cut-in-a-size-line"),  # gunicorn: NoMoreData
        pytest.param(b"1\r\n{", b"", id="stalled-before-a-terminator"),  # gunicorn: ChunkMissingTerminator
    ],
)
def test_a_chunked_body_that_trickles_in_gets_408_or_a_closed_connection_never_500(
    make_live_server: Callable[..., LiveServer], first: bytes, piece: bytes
) -> None:
    server = make_live_server(BODY_TIMEOUT_SECONDS="1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # the deadline of this test
    sock.sendall(
        b"POST /api/donations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + first
    )
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(sock, lambda: piece, stop), daemon=True).start()
    try:
        answer = _answer_until_closed(sock)
    finally:
        stop.set()
        sock.close()
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(body)["error"] == "request_timeout"
    _still_serves(server)
    assert _no_error_logged(server)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", id="size-not-hex"),
        pytest.param(b"2\r\n{}XX0\r\n\r\n", id="no-terminator"),
    ],
)
def test_a_malformed_chunked_body_gets_400(make_live_server: Callable[..., LiveServer], chunks: bytes) -> None:
    server = make_live_server(BODY_TIMEOUT_SECONDS="30")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/donations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks
        )
        answer = _answer_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(body)["error"] == "bad_request"
    _still_serves(server)
    assert _no_error_logged(server)


def _read_head(sock: socket.socket) -> bytes:
    """One response head (status line and headers), read byte by byte so nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"closed after {head!r}"
        head += byte
    return head


def test_head_on_a_stream_answers_headers_only_and_holds_no_place(
    make_live_server: Callable[..., LiveServer], held: list[socket.socket]
) -> None:
    server = make_live_server(MAX_STREAMS_PER_CLIENT="1")
    name = launch(server, "slow", seconds="60")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # the deadline of this test
    held.append(sock)
    sock.sendall(f"HEAD /sse/task-status/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"text/event-stream" in head

    assert _open(held, server, name).startswith(b"HTTP/1.1 200")  # the HEAD took no place of this client's one
    cancelled = requests.delete(f"{server.url}/api/jobs/{name}", headers=ADMIN, timeout=10)
    assert cancelled.status_code in (200, 202), cancelled.text  # a status published while the HEAD's connection is open
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the connection serves the next request
    after = _read_head(sock)
    assert after.startswith(b"HTTP/1.1 200"), after  # not body bytes written after the HEAD's headers
    assert _no_error_logged(server)


def test_one_ipv6_slash_64_is_one_client(make_live_server: Callable[..., LiveServer]) -> None:
    # the test stands in for the trusted proxy, forwarding the addresses its clients came from
    server = make_live_server(TRUSTED_PROXY_HOPS="1", RATE_LIMIT="1/minute")

    def donate_as(address: str) -> requests.Response:
        return requests.post(
            f"{server.url}/api/donations", json=DONATION, headers={"X-Forwarded-For": address}, timeout=10
        )

    assert donate_as("2001:db8:1:2::1").status_code == 202
    refused = donate_as("2001:db8:1:2:ffff:ffff:ffff:fffe")  # another address of the same /64: the same client
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert donate_as("2001:db8:1:3::1").status_code == 202  # the next /64 is another client
    assert donate_as("192.0.2.1").status_code == 202
    assert donate_as("192.0.2.2").status_code == 202  # IPv4: each address is a client
    assert _no_error_logged(server)
