"""A running task's output, followed live with ``curl -N`` from the real gunicorn gevent worker (local runner)."""

from __future__ import annotations

import requests

from tests.helpers import wait_for
from tests.live.clients import ADMIN, launch, status, wait_for_status
from tests.live.log_clients import log_follows_open, read_lines, start_curl_logs
from tests.live.server import LiveServer


def test_curl_gets_a_slow_tasks_output_line_by_line_and_exits_when_it_ends(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="4")
    curl = start_curl_logs(live_server, name)
    assert read_lines(curl, 1) == ["started\n"]
    assert status(live_server, name)["status"] in ("Pending", "Running"), "the first line came before the end"
    out, err = curl.communicate(timeout=60)
    assert (curl.returncode, out, err) == (0, "finished\n", ""), "curl exits by itself once the task ended"
    assert status(live_server, name)["status"] == "Succeeded"
    wait_for(lambda: log_follows_open(live_server) == 0, what="the follow to be closed")


def test_viewers_share_one_follow_and_leaving_frees_it(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    wait_for_status(live_server, name, "Running")
    curls = [start_curl_logs(live_server, name) for _ in range(2)]
    try:
        assert [read_lines(curl, 1) for curl in curls] == [["started\n"], ["started\n"]]
        assert log_follows_open(live_server) == 1
        for curl in curls:  # both leave mid-stream, while the task writes nothing
            curl.kill()
            curl.communicate()
        wait_for(lambda: log_follows_open(live_server) == 0, timeout=10, what="the follow to be closed")
    finally:
        for curl in curls:
            if curl.poll() is None:
                curl.kill()
                curl.communicate()
        requests.delete(f"{live_server.url}/api/jobs/{name}", headers=ADMIN, timeout=10)
    late = start_curl_logs(live_server, name)  # a finished run: its output, once
    out, _ = late.communicate(timeout=30)
    assert late.returncode == 0 and out.startswith("started\n"), out


def test_a_server_shutdown_ends_the_follow(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    curl = start_curl_logs(live_server, name)
    try:
        assert read_lines(curl, 1) == ["started\n"]
        live_server.begin_stop()
        out, _ = curl.communicate(timeout=8)  # well within GRACEFUL_TIMEOUT (10 s): the stream did not hold it
        assert curl.returncode == 0, out
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.communicate()
