"""WebSocket on the real gunicorn gevent worker, with a real WebSocket client."""

from __future__ import annotations

import pytest
import websocket

from tests.helpers import wait_for
from tests.live.clients import donate, launch, open_streams, wait_for_status, ws_collect, ws_connect
from tests.live.server import LiveServer


def test_websocket_streams_a_donation_and_closes_1000(live_server: LiveServer) -> None:
    name = donate(live_server)["job_name"]
    ws = ws_connect(live_server, name, origin=live_server.url)
    messages, code = ws_collect(ws)
    assert code == 1000
    assert all(m["type"] == "status" for m in messages)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs))
    assert messages[-1]["status"] == "Succeeded"
    assert messages[-1]["job_name"] == name


def test_a_failing_task_over_websocket(live_server: LiveServer) -> None:
    name = launch(live_server, "fail")
    messages, code = ws_collect(ws_connect(live_server, name))
    assert code == 1000
    assert (messages[-1]["status"], messages[-1]["reason"]) == ("Failed", "BackoffLimitExceeded")


@pytest.mark.parametrize(
    ("name", "close_code", "error"),
    [("task-runner-nobody-00000000", 4404, "not_found"), ("Not_A_Job", 4400, "invalid_job_name")],
)
def test_unknown_or_bad_names_get_an_error_then_a_close_code(
    live_server: LiveServer, name: str, close_code: int, error: str
) -> None:
    messages, code = ws_collect(ws_connect(live_server, name))
    assert code == close_code
    assert messages == [{"type": "error", "error": error, "message": messages[0]["message"]}]


def test_a_foreign_origin_is_refused_before_the_handshake(make_live_server) -> None:  # type: ignore[no-untyped-def]
    server = make_live_server(ALLOWED_ORIGINS="https://donate.example.org")
    name = donate(server)["job_name"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(server, name, origin="https://evil.example.com")
    assert refused.value.status_code == 403
    ws_collect(ws_connect(server, name, origin="https://donate.example.org"))
    ws_collect(ws_connect(server, name, origin=server.url))
    assert '"event": "stream.refused"' in server.log()


@pytest.mark.parametrize("scheme", ["https", "ws"])
def test_an_origin_with_another_scheme_is_refused(live_server: LiveServer, scheme: str) -> None:
    name = donate(live_server)["job_name"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(live_server, name, origin=f"{scheme}://127.0.0.1:{live_server.port}")
    assert refused.value.status_code == 403
    ws_collect(ws_connect(live_server, name, origin=f"HTTP://127.0.0.1:{live_server.port}"))


def test_a_client_that_leaves_frees_its_subscription_at_once(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    ws = ws_connect(live_server, name)
    assert ws.recv()
    wait_for(lambda: open_streams(live_server, "ws") == 1, what="the stream to open")
    ws.sock.close()  # vanish without a close frame, as a killed tab does
    wait_for(lambda: open_streams(live_server, "ws") == 0, timeout=5, what="the subscription to be freed")
    ws.shutdown()


def test_a_server_shutdown_closes_streams_with_1001(live_server: LiveServer) -> None:
    name = launch(live_server, "slow", seconds="60")
    wait_for_status(live_server, name, "Running")
    ws = ws_connect(live_server, name)
    assert ws.recv()
    live_server.stop()
    _, code = ws_collect(ws)
    assert code == 1001
