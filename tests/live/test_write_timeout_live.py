"""A client that never reads cannot hold a stream, on the real gunicorn gevent worker.

Each client here floods pings on a socket with a tiny receive buffer and reads
nothing: the server's pongs fill both buffers and its write blocks. Within
``STREAM_WRITE_TIMEOUT_SECONDS`` the stream ends, the connection is closed and
the client's stream slot is free again (``MAX_STREAMS_PER_CLIENT=1``: a new
stream is taken). A slow client that reads within the timeout keeps its stream.
An SSE client asks for a first list of megabytes (``/sse/runs`` over a seeded
run store) and reads none of it.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Ping, Request, TextMessage

from tests.helpers import wait_for
from tests.live.clients import ADMIN, launch, open_streams, status, wait_for_status
from tests.live.log_clients import log_follows_open
from tests.live.server import LiveServer
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase

pytestmark = pytest.mark.live

WRITE_TIMEOUT = 1.0


class _NonReader:
    """A WebSocket client with a tiny receive buffer that floods pings and reads nothing until told to."""

    def __init__(self, server: LiveServer, target: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", server.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=target)))
        self.events: list[Event] = []
        while not any(isinstance(event, AcceptConnection) for event in self.events):
            data = self.sock.recv(512)
            assert data, "the server closed before accepting"
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        self.ping = self.ws.send(Ping(payload=b"p" * 125)) * 64

    def __enter__(self) -> _NonReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def flood_until_the_server_stops_reading(self) -> None:
        """Send pings until the server takes none for two seconds (stuck writing pongs nobody reads) or cuts it off."""
        self.sock.setblocking(False)
        unsent = b""
        while True:
            unsent = unsent or self.ping
            try:
                unsent = unsent[self.sock.send(unsent) :]  # whole frames only: the rest of a torn one goes next
            except BlockingIOError:
                if not select.select([], [self.sock], [], 2)[1]:
                    return
            except (BrokenPipeError, ConnectionResetError):
                return

    def read_all(self, *, until_closed: bool) -> bytes:
        """Read what the server sent; until it closes TCP, or (``until_closed`` false) until nothing comes for 1 s."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a reader now: megabytes of pongs wait
        self.sock.setblocking(True)
        self.sock.settimeout(10 if until_closed else 1)
        received = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return received
            except TimeoutError:
                assert not until_closed, "the server did not close the connection"
                return received
            if not data:
                return received
            received += data


@contextlib.contextmanager
def _request_read_by_nobody(server: LiveServer, path: str) -> Iterator[socket.socket]:
    """A GET of ``path`` (as the admin) from a socket with a tiny receive buffer, whose answer nobody reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {ADMIN['Authorization']}\r\n\r\n".encode()
        )
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def _cut_off_by_the_write_bound(server: LiveServer) -> Iterator[None]:
    """What the block does ends a stream by its write bound: ``stream.write_timeout`` is logged, and no error."""
    yield
    log = server.log()
    assert "stream.write_timeout" in log
    assert _no_error_logged(server), log[-3000:]


def _slot_free(server: LiveServer, name: str) -> bool:
    """Whether this client may open a stream (``MAX_STREAMS_PER_CLIENT=1``): a finished job's SSE stream answers 200."""
    response = requests.get(f"{server.url}/sse/task-status/{name}", timeout=10)
    return response.status_code == 200


def _no_error_logged(server: LiveServer) -> bool:
    log = server.log()
    return '"level": "ERROR"' not in log and "[ERROR]" not in log and "Traceback" not in log


def _server(make_live_server: Callable[..., LiveServer]) -> tuple[LiveServer, str]:
    server = make_live_server(MAX_STREAMS_PER_CLIENT="1", STREAM_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT))
    finished = launch(server, "quick")
    wait_for_status(server, finished, "Succeeded")
    return server, finished


def test_a_stranger_flooding_pings_before_its_token_is_cut_off(make_live_server: Callable[..., LiveServer]) -> None:
    server, finished = _server(make_live_server)
    with _NonReader(server, "/ws/runs") as client, _cut_off_by_the_write_bound(server):
        client.flood_until_the_server_stops_reading()
        wait_for(lambda: _slot_free(server, finished), timeout=10, what="the stranger's slot to be freed")
        client.read_all(until_closed=True)


def test_a_status_stream_whose_client_never_reads_ends(make_live_server: Callable[..., LiveServer]) -> None:
    server, finished = _server(make_live_server)
    running = launch(server, "slow", seconds="60")
    wait_for_status(server, running, "Running")
    with _NonReader(server, f"/ws/task-status/{running}") as client, _cut_off_by_the_write_bound(server):
        wait_for(lambda: open_streams(server, "ws") == 1, what="the stream to open")
        client.flood_until_the_server_stops_reading()
        wait_for(lambda: open_streams(server, "ws") == 0, timeout=10, what="the stream to end")
        wait_for(lambda: _slot_free(server, finished), timeout=10, what="the client's slot to be freed")
        client.read_all(until_closed=True)


def test_a_slow_client_that_reads_within_the_timeout_keeps_its_stream(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(STREAM_WRITE_TIMEOUT_SECONDS="10")
    running = launch(server, "slow", seconds="60")
    wait_for_status(server, running, "Running")
    with _NonReader(server, f"/ws/task-status/{running}") as client:
        wait_for(lambda: open_streams(server, "ws") == 1, what="the stream to open")
        client.flood_until_the_server_stops_reading()
        received = client.read_all(until_closed=False)  # well within the 10 s: the server's write goes on
        client.ws.receive_data(received)
        client.events.extend(client.ws.events())
        assert any(isinstance(event, TextMessage) for event in client.events), "its first status came"
        assert open_streams(server, "ws") == 1
    assert "stream.write_timeout" not in server.log()


def _seed_big_finished_runs(database: Path, count: int) -> list[str]:
    """``count`` finished runs with long messages in the run store: the first list of ``/sse/runs`` is megabytes."""
    store = SQLiteRunStore(database)
    names = []
    try:
        for number in range(count):
            name = f"task-runner-{number:012x}-0000abcd"
            queued = JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id=f"{number:012x}")
            store.save(queued.evolve(status=Phase.SUCCEEDED, message="m" * 16_000))
            names.append(name)
    finally:
        store.close()
    return names


def test_an_sse_stream_whose_client_never_reads_ends(
    make_live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    database = tmp_path / "seeded" / "jobpulse.sqlite3"
    finished = _seed_big_finished_runs(database, 500)  # about 8 MB in one `event: runs`
    server = make_live_server(
        DATABASE_PATH=str(database), MAX_STREAMS_PER_CLIENT="1", STREAM_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT)
    )
    with _request_read_by_nobody(server, "/sse/runs?limit=500"), _cut_off_by_the_write_bound(server):
        wait_for(lambda: open_streams(server, "sse") == 1, what="the stream to open")
        wait_for(lambda: open_streams(server, "sse") == 0, timeout=15, what="the stream to end")
        wait_for(lambda: _slot_free(server, finished[0]), timeout=10, what="the client's slot to be freed")


# Writes 64 KiB of output every 50 ms (about 1.3 MB/s) for up to a minute: more than any socket buffer holds.
CHATTY = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: chatty
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: task
          image: jobpulse:latest
          command:
            - python
            - -c
            - |
              import sys, time
              block = ("x" * 1023 + "\\n") * 64
              for _ in range(1200):
                  sys.stdout.write(block)
                  sys.stdout.flush()
                  time.sleep(0.05)
"""


def test_a_log_follow_whose_client_never_reads_ends(
    make_live_server: Callable[..., LiveServer], jobspecs_dir: Path
) -> None:
    (jobspecs_dir / "chatty.yaml").write_text(CHATTY)
    server = make_live_server(STREAM_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT))
    running = launch(server, "chatty")
    wait_for_status(server, running, "Running")
    try:
        with (
            _request_read_by_nobody(server, f"/api/jobs/{running}/logs?follow=1") as sock,
            _cut_off_by_the_write_bound(server),
        ):
            wait_for(lambda: log_follows_open(server) == 1, what="the follow to open")
            wait_for(lambda: log_follows_open(server) == 0, timeout=15, what="the follow to end with its only viewer")
            assert status(server, running)["status"] == "Running", "cut off by the write bound, not ended by the run"
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):  # what the buffers held, then the end: the server closed the connection
                    pass
    finally:
        requests.delete(f"{server.url}/api/jobs/{running}", headers=ADMIN, timeout=10)
    assert '"path": "/api/jobs/' in server.log()
