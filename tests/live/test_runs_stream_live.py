"""Every run for operators on the real gunicorn gevent worker: curl -N on /sse/runs, websocket-client on /ws/runs."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import websocket

from tests.conftest import ADMIN_TOKEN
from tests.helpers import assert_sse_preamble, parse_sse, wait_for
from tests.live.clients import curl_sse, donate, launch, open_streams, wait_for_status, ws_collect
from tests.live.server import LiveServer

BEARER = f"Authorization: Bearer {ADMIN_TOKEN}"


class CurlStream:
    """``curl -N`` on a stream, its output collected as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._chunks.append(line)

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def frames(self) -> list[dict[str, Any]]:
        complete, _, _ = self.text.rpartition("\n\n")
        return parse_sse(complete + "\n\n") if complete else []

    def statuses_of(self, name: str) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames() if f.get("event") == "status" and f["data"]["job_name"] == name]


@contextmanager
def curl_runs(server: LiveServer, query: str = "") -> Iterator[CurlStream]:
    process = subprocess.Popen(
        ["curl", "-N", "-sS", "--max-time", "60", "-H", BEARER, f"{server.url}/sse/runs{query}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield CurlStream(process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)


def first_list(stream: CurlStream) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        runs = [f["data"]["runs"] for f in stream.frames() if f.get("event") == "runs"]
        return runs[0] if runs else None

    listed: list[dict[str, Any]] = wait_for(lambda: (runs := found()) is not None and [runs], what="the first list")[0]
    return listed


def test_curl_sees_the_list_then_each_change_of_a_launched_run_to_its_end(live_server: LiveServer) -> None:
    before = donate(live_server)["job_name"]
    done = wait_for_status(live_server, before, "Succeeded")
    with curl_runs(live_server) as stream:
        assert first_list(stream)[0] == done
        assert_sse_preamble(stream.text)
        name = launch(live_server, "slow", seconds="1")
        per_job = curl_sse(live_server, name)  # a per-job stream alongside works as before
        wait_for(lambda: [s["status"] for s in stream.statuses_of(name)][-1:] == ["Succeeded"], what="its end")
        seen = stream.statuses_of(name)
        assert [s["seq"] for s in seen] == sorted({s["seq"] for s in seen}), "each newer than the last"
        assert {"Running", "Succeeded"} <= {s["status"] for s in seen}
        assert seen[-1] == wait_for_status(live_server, name, "Succeeded")
        assert per_job[0] == 0 and per_job[1][-1]["event"] == "end"
        wait_for(lambda: any(f.get("comment") == "ping" for f in stream.frames()), what="a heartbeat")
        assert open_streams(live_server, "sse") == 1
    wait_for(lambda: open_streams(live_server, "sse") == 0, what="the stream's place to be given back")
    log = live_server.log()
    assert '"stream": "runs"' in log and '"operator": "admin"' in log
    assert ADMIN_TOKEN not in log


def test_filters_pick_the_runs_and_a_run_that_stops_matching_gets_a_last_message(live_server: LiveServer) -> None:
    with curl_runs(live_server, "?status=Running&spec=slow") as stream:
        assert first_list(stream) == []
        quick = launch(live_server, "quick")
        name = launch(live_server, "slow", seconds="1")
        wait_for(lambda: [s["status"] for s in stream.statuses_of(name)][-1:] == ["Succeeded"], what="its last word")
        wait_for_status(live_server, quick, "Succeeded")
        assert [s["status"] for s in stream.statuses_of(name)] == ["Running", "Succeeded"]
        assert quick not in stream.text


def test_curl_without_the_token_gets_401_and_a_bad_filter_400(live_server: LiveServer) -> None:
    def answer(*options: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *options],
            capture_output=True,
            text=True,
            check=True,
        )
        body, _, code = done.stdout.rpartition("\n")
        return int(code), json.loads(body)

    assert answer(f"{live_server.url}/sse/runs")[1]["error"] == "unauthorized"
    code, body = answer("-H", BEARER, f"{live_server.url}/sse/runs?status=Sleeping")
    assert (code, body["error"]) == (400, "invalid_request")
    assert open_streams(live_server, "sse") == 0


def ws_runs(server: LiveServer, query: str = "", **options: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"{server.ws_url}/ws/runs{query}", timeout=30, **options)


def test_websocket_with_the_header_gets_the_list_then_each_change(live_server: LiveServer) -> None:
    ws = ws_runs(live_server, header=[BEARER])
    first = json.loads(ws.recv())
    assert first == {"type": "runs", "runs": []}
    name = launch(live_server, "slow", seconds="1")
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] != "Succeeded":
        message = json.loads(ws.recv())
        assert message["type"] == "status"
        seen.append(message["status"])
    assert {s["job_name"] for s in seen} == {name}
    assert [s["seq"] for s in seen] == sorted({s["seq"] for s in seen})
    assert open_streams(live_server, "ws") == 1
    ws.close()
    wait_for(lambda: open_streams(live_server, "ws") == 0, what="the stream's place to be given back")


def test_websocket_authenticated_by_its_first_message(live_server: LiveServer) -> None:
    done = donate(live_server)["job_name"]
    wait_for_status(live_server, done, "Succeeded")
    ws = ws_runs(live_server, "?status=Succeeded&limit=1", origin=live_server.url)
    ws.send(json.dumps({"token": ADMIN_TOKEN}))
    first = json.loads(ws.recv())
    assert first["type"] == "runs"
    assert [run["job_name"] for run in first["runs"]] == [done]
    ws.close()


@pytest.mark.parametrize(
    ("options", "first"),
    [
        ({"header": ["Authorization: Bearer wrong-token-0123456789"]}, None),
        ({}, json.dumps({"token": "wrong-token-0123456789"})),
        ({}, "not json"),
        ({}, None),  # no token at all: closed once WS_AUTH_SECONDS have passed
        ({}, json.dumps(["token", ADMIN_TOKEN])),
        ({}, json.dumps({"token": "\ud800"})),  # valid JSON, a lone surrogate: no UTF-8 bytes to compare
        ({}, "[" * 4000),  # under the message limit, too deep for the JSON parser
        ({"header": ["Authorization: Bearer caf\u00e9-\u00ff-token-0123456789"]}, None),  # bytes over 0x7f
    ],
    ids=["wrong-header", "wrong-token", "not-json", "silent", "a-list", "surrogate", "deep-json", "high-bytes"],
)
def test_a_bad_token_is_closed_4401_with_nothing_sent(
    live_server: LiveServer, options: dict[str, Any], first: str | None
) -> None:
    ws = ws_runs(live_server, **options)
    if first is not None:
        ws.send(first)
    messages, code = ws_collect(ws)
    assert (messages, code) == ([], 4401)
    assert open_streams(live_server, "ws") == 0
    assert '"level": "ERROR"' not in live_server.log()


def test_admin_disabled_is_closed_4403_and_a_bad_filter_refused_before_the_upgrade(make_live_server: Any) -> None:
    server = make_live_server(ADMIN_TOKEN="")
    messages, code = ws_collect(ws_runs(server, header=[BEARER]))
    assert (messages, code) == ([], 4403)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_runs(server, "?spec=no/such")
    assert refused.value.status_code == 400


def test_a_server_shutdown_ends_both_streams_of_every_run(live_server: LiveServer) -> None:
    ws = ws_runs(live_server, header=[BEARER])
    assert json.loads(ws.recv())["type"] == "runs"
    with curl_runs(live_server) as stream:
        first_list(stream)
        live_server.begin_stop()
        _, code = ws_collect(ws)
        assert code == 1001
        assert stream.process.wait(timeout=30) == 0, "curl ends cleanly with the stream"
    live_server.stop()
