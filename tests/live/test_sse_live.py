"""SSE on the real gunicorn gevent worker, read by real ``curl -N``."""

from __future__ import annotations

import signal

import requests

from tests.helpers import assert_sse_preamble, parse_sse, statuses, wait_for
from tests.live.clients import (
    ADMIN,
    curl_sse,
    curl_sse_reconnect,
    donate,
    launch,
    open_streams,
    start_curl_sse,
    wait_for_status,
)
from tests.live.server import LiveServer


def test_curl_follows_a_donation_to_the_end_and_exits_by_itself(live_server: LiveServer) -> None:
    name = donate(live_server)["job_name"]
    code, frames, raw = curl_sse(live_server, name)
    assert code == 0, raw
    assert_sse_preamble(raw)
    status_frames = [f for f in frames if f.get("event") == "status"]
    seqs = [int(f["id"]) for f in status_frames]
    assert seqs == sorted(set(seqs)), "each frame is newer than the last"
    assert all(int(f["id"]) == f["data"]["seq"] for f in status_frames)
    last = status_frames[-1]["data"]
    assert last["status"] == "Succeeded"
    assert last["terminal"] is True
    assert [h["status"] for h in last["history"]] == ["Queued", "Pending", "Running", "Succeeded"]
    assert frames[-1] == {"event": "end", "data": {}}


def test_the_stream_shows_each_change_live_with_heartbeats(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="2")
    code, frames, raw = curl_sse(live_server, name)
    assert code == 0, raw
    seen = statuses(frames)
    assert seen[-2:] == ["Running", "Succeeded"]
    assert any(f.get("comment") == "ping" for f in frames), "heartbeats on an idle stream"


def test_headers_of_the_stream(live_server: LiveServer) -> None:
    name = donate(live_server)["job_name"]
    with requests.get(
        f"{live_server.url}/sse/task-status/{name}", stream=True, timeout=30, headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in response.headers
        body = response.raw.read().decode()
    assert parse_sse(body)[-1]["event"] == "end"


def test_a_failing_task_ends_the_stream_with_its_reason(live_server: LiveServer) -> None:
    name = launch(live_server, "fail")
    code, frames, _ = curl_sse(live_server, name)
    assert code == 0
    last = [f for f in frames if f.get("event") == "status"][-1]["data"]
    assert last["status"] == "Failed"
    assert last["reason"] == "BackoffLimitExceeded"
    assert "exit code 3" in last["message"]
    assert frames[-1]["event"] == "end"


def test_a_cancel_ends_the_open_stream(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    wait_for_status(live_server, name, "Running")
    curl = start_curl_sse(live_server, name)
    wait_for(lambda: open_streams(live_server, "sse") == 1, what="the stream to open")
    assert requests.delete(f"{live_server.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    out, _ = curl.communicate(timeout=30)
    assert curl.returncode == 0
    frames = parse_sse(out)
    last = [f for f in frames if f.get("event") == "status"][-1]["data"]
    assert (last["status"], last["reason"]) == ("Cancelled", "Cancelled")
    assert frames[-1]["event"] == "end"


def test_a_client_that_leaves_frees_its_stream(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    curl = start_curl_sse(live_server, name)
    wait_for(lambda: open_streams(live_server, "sse") == 1, what="the stream to open")
    curl.send_signal(signal.SIGKILL)
    curl.communicate()
    wait_for(lambda: open_streams(live_server, "sse") == 0, timeout=10, what="the server to notice")
    assert '"event": "stream.closed"' in live_server.log()


def test_a_finished_status_survives_a_restart(live_server: LiveServer) -> None:
    name = donate(live_server)["job_name"]
    done = wait_for_status(live_server, name, "Succeeded")
    live_server.restart()
    after = requests.get(f"{live_server.url}/api/task-status", params={"job_name": name}, timeout=10).json()
    assert after == done
    code, frames, _ = curl_sse(live_server, name, timeout=10)
    assert code == 0
    assert [f.get("event") for f in frames if "event" in f] == ["status", "end"]
    assert frames[1]["data"] == done


def test_a_run_cut_short_by_a_restart_is_resumed_and_finishes(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="2")
    wait_for_status(live_server, name, "Running")
    live_server.restart()
    done = wait_for_status(live_server, name, "Succeeded")
    assert "Queued" in [h["status"] for h in done["history"][1:]], "the run went back in line after the restart"
    assert '"event": "job.resumed"' in live_server.log()


def test_a_reconnect_that_already_has_the_final_status_gets_204(live_server: LiveServer) -> None:
    name = donate(live_server)["job_name"]
    code, frames, raw = curl_sse(live_server, name)  # no Last-Event-ID: the whole stream
    assert code == 0, raw
    final = [f for f in frames if f.get("event") == "status"][-1]
    assert final["data"]["terminal"] is True
    assert frames[-1]["event"] == "end"

    # any EventSource reconnects after the stream ends; 204 is what makes it stop (HTML Standard)
    assert curl_sse_reconnect(live_server, name, final["id"]) == (204, "")

    status, body = curl_sse_reconnect(live_server, name, str(int(final["id"]) - 1))  # it missed the final one
    assert status == 200
    assert [f.get("event") for f in parse_sse(body) if "event" in f] == ["status", "end"]
    assert parse_sse(body)[1]["data"] == final["data"]


def test_a_running_job_keeps_streaming_to_a_client_with_its_current_seq(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="2")
    running = wait_for_status(live_server, name, "Running")
    status, body = curl_sse_reconnect(live_server, name, str(running["seq"]))
    assert status == 200
    frames = parse_sse(body)
    assert frames[-1]["event"] == "end"
    sent = [int(frame["id"]) for frame in frames if frame.get("event") == "status"]
    assert sent, body
    assert min(sent) > running["seq"], "the status the client already had is not sent again"
