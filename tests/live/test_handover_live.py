"""Open streams handed over from gunicorn's requests (webapp/api/handover.py), on the real gunicorn gevent worker."""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable

import requests

from tests.helpers import parse_sse, statuses, wait_for
from tests.live.clients import ADMIN, launch, open_streams, start_curl_sse, wait_for_status
from tests.live.server import LiveServer


def handed_over(server: LiveServer) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^jobpulse_handed_over_streams (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _healthz(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def test_sse_streams_leave_gunicorns_requests_and_still_get_every_status(
    make_live_server: Callable[..., LiveServer],
) -> None:
    # Three connections per worker, two of them streams (MAX_STREAMS: nine tenths, 2).
    server = make_live_server(WORKER_CONNECTIONS="3")
    name = launch(server, "slow", seconds="60")
    wait_for_status(server, name, "Running")
    curls = [start_curl_sse(server, name) for _ in range(2)]
    wait_for(lambda: handed_over(server) == 2 and open_streams(server, "sse") == 2, what="two handed-over streams")

    # Were the streams still gunicorn's requests, its pool (3) would leave room for one more connection at
    # a time: the second below would wait for the first's keep-alive to run out (gunicorn closes it).
    held = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(3)]
    try:
        assert [_healthz(connection) for connection in held] == [200, 200, 200]
        assert [_healthz(connection) for connection in held] == [200, 200, 200], "all three held at once"
    finally:
        for connection in held:
            connection.close()

    assert requests.delete(f"{server.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    for curl in curls:
        out, err = curl.communicate(timeout=30)
        assert curl.returncode == 0, err  # the chunked body ended properly
        frames = parse_sse(out)
        assert statuses(frames)[-1] == "Cancelled"
        assert frames[-1] == {"event": "end", "data": {}}
    wait_for(lambda: handed_over(server) == 0 and open_streams(server, "sse") == 0, what="the streams to end")
    assert "stream.failed" not in server.log()
