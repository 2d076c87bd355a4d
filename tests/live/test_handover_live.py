"""Open streams handed over from gunicorn's requests (webapp/api/handover.py), on the real gunicorn gevent worker."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import requests

from tests.helpers import parse_sse, statuses, wait_for
from tests.live.clients import (
    ADMIN,
    RawWebSocket,
    launch,
    open_streams,
    start_curl_sse,
    wait_for_status,
    ws_collect,
    ws_connect,
)
from tests.live.server import PROJECT_ROOT, LiveServer, free_port


def handed_over(server: LiveServer) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^jobpulse_handed_over_streams (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _healthz(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def assert_three_connections_held_beside(server: LiveServer) -> None:
    """Three keep-alive connections served at once beside the open streams of a worker of three connections.

    Were the streams still gunicorn's requests, its pool would leave room for one connection at a time:
    the second would wait for the first's keep-alive to run out (gunicorn closes it), and the first's
    second request would fail.
    """
    held = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(3)]
    try:
        assert [_healthz(connection) for connection in held] == [200, 200, 200]
        assert [_healthz(connection) for connection in held] == [200, 200, 200], "all three held at once"
    finally:
        for connection in held:
            connection.close()


def test_sse_streams_leave_gunicorns_requests_and_still_get_every_status(
    make_live_server: Callable[..., LiveServer],
) -> None:
    # Three connections per worker, two of them streams (MAX_STREAMS: nine tenths, 2).
    server = make_live_server(WORKER_CONNECTIONS="3")
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    curls = [start_curl_sse(server, name) for _ in range(2)]
    wait_for(lambda: handed_over(server) == 2 and open_streams(server, "sse") == 2, what="two handed-over streams")

    assert_three_connections_held_beside(server)
    third = requests.get(f"{server.url}/sse/task-status/{name}", timeout=10)
    assert (third.status_code, third.json()["error"]) == (503, "streams_full"), "MAX_STREAMS still counts them"

    assert requests.delete(f"{server.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    for curl in curls:
        out, err = curl.communicate(timeout=30)
        assert curl.returncode == 0, err  # the chunked body ended properly
        frames = parse_sse(out)
        assert statuses(frames)[-1] == "Cancelled"
        assert frames[-1] == {"event": "end", "data": {}}
    wait_for(lambda: handed_over(server) == 0 and open_streams(server, "sse") == 0, what="the streams to end")
    assert "stream.failed" not in server.log()


def test_websockets_leave_gunicorns_requests_and_still_get_every_status(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(WORKER_CONNECTIONS="3")
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    clients = [ws_connect(server, name) for _ in range(2)]
    for ws in clients:
        assert json.loads(ws.recv())["status"] == "Running"
    wait_for(lambda: handed_over(server) == 2 and open_streams(server, "ws") == 2, what="two handed-over streams")

    assert_three_connections_held_beside(server)

    assert requests.delete(f"{server.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    for ws in clients:
        messages, code = ws_collect(ws)
        assert messages[-1]["status"] == "Cancelled"
        assert code == 1000
    wait_for(lambda: handed_over(server) == 0 and open_streams(server, "ws") == 0, what="the streams to end")
    assert "stream.failed" not in server.log()


def test_a_stopping_worker_ends_its_handed_over_streams_and_waits_for_their_closing_handshakes(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(GRACEFUL_TIMEOUT="4")  # the ends spread over 2 s
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    curl = start_curl_sse(server, name)
    raw = RawWebSocket(server, name)
    try:
        wait_for(lambda: handed_over(server) == 2, what="both streams handed over")

        server.begin_stop()
        close = raw.until_close()
        assert close is not None and close.code == 1001
        out, err = curl.communicate(timeout=30)
        assert curl.returncode == 0, err  # the SSE stream ended with its last chunk: the client reconnects elsewhere
        assert statuses(parse_sse(out))[-1] == "Running"

        # gunicorn's own graceful stop is over (it had no request left), and the worker still waits for our answer.
        wait_for(lambda: "Waiting for 1 handed-over streams to end" in server.log(), what="the worker to wait")
        assert server.process is not None and server.process.poll() is None
        assert raw.answer_close_and_wait_for_eof(), "the closing handshake completes, then TCP ends cleanly"
    finally:
        raw.shutdown()
    assert server.stop() == 0
    assert "still open at exit" not in server.log()


def test_a_worker_told_to_stop_at_once_does_not_wait_for_a_closing_handshake_past_its_deadline(
    make_live_server: Callable[..., LiveServer],
) -> None:
    """SIGTERM, then SIGQUIT (gunicorn's quick shutdown, 2 s): the worker leaves by itself before the arbiter's kill.

    Its WebSocket client never answers the Close, which the worker would otherwise wait for (5 s).
    """
    server = make_live_server(GRACEFUL_TIMEOUT="30")  # the spread alone would take 15 s
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    raw = RawWebSocket(server, name)
    try:
        wait_for(lambda: handed_over(server) == 1, what="the stream handed over")
        server.begin_stop()
        wait_for(lambda: "Handling signal: term" in server.log(), what="the stop to begin")
        server.begin_stop(signal.SIGQUIT)
        close = raw.until_close()  # and never answered
        assert close is not None and close.code == 1001
        assert server.stop() == 0
    finally:
        raw.shutdown()
    log = server.log()
    assert "Handed-over streams still open at exit: 1" in log, log[-3000:]
    assert "SIGKILL" not in log, log[-3000:]


def test_a_websocket_client_gone_right_after_its_handshake_is_no_server_error(
    make_live_server: Callable[..., LiveServer],
) -> None:
    # The client sends its handshake and closes at once: the 101 goes out (the kernel takes it), the peer answers
    # with a reset, and the stream's first message meets a broken pipe. A client's doing: logged below ERROR.
    server = make_live_server()
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(
            f"GET /ws/task-status/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        sock.close()
    wait_for(lambda: handed_over(server) == 0 and open_streams(server, "ws") == 0, what="the streams to end")
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert '"level": "ERROR"' not in server.log()


def test_a_refused_websocket_is_not_handed_over(make_live_server: Callable[..., LiveServer]) -> None:
    # A refusal (4404 an unknown job, 1013 no stream slot left) holds no stream slot: handed over, nothing but
    # time (its closing handshake) would bound how many a client keeps open. It stays gunicorn's request.
    server = make_live_server(WORKER_CONNECTIONS="4")  # MAX_STREAMS: 3
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    streams = [ws_connect(server, name) for _ in range(3)]
    for ws in streams:
        assert json.loads(ws.recv())["status"] == "Running"
    wait_for(lambda: handed_over(server) == 3, what="three handed-over streams")

    refused = [RawWebSocket(server, "nosuchjob-0"), RawWebSocket(server, name)]
    try:
        closes = [raw.until_close() for raw in refused]
        assert [close.code if close else None for close in closes] == [4404, 1013]
        assert handed_over(server) == 3, "the refusals are not handed over"  # they wait for our Close meanwhile
        assert all(raw.answer_close_and_wait_for_eof() for raw in refused)
    finally:
        for raw in refused:
            raw.shutdown()
        for ws in streams:
            ws.close()
    wait_for(lambda: handed_over(server) == 0, what="the streams to end")
    assert '"level": "ERROR"' not in server.log()


def test_a_worker_that_fails_to_boot_says_why_once(app_env: dict[str, str]) -> None:
    # No app was loaded, so there is nothing handed over to wait for: worker_exit must not fail on the worker.
    env = {**os.environ, **app_env, "BIND": f"127.0.0.1:{free_port()}", "RATE_LIMIT": "garbage"}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "RATE_LIMIT: not a rate limit" in done.stderr
    assert "Exception during worker exit" not in done.stderr
