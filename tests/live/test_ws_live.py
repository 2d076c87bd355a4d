"""WebSocket on the real gunicorn gevent worker, with a real WebSocket client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import websocket
from wsproto.events import BytesMessage, TextMessage

from tests.helpers import wait_for
from tests.live.clients import (
    UPGRADE_HEADERS,
    RawWebSocket,
    donate,
    launch,
    masked_frame_header,
    open_streams,
    raw_handshake,
    wait_for_status,
    worker_rss,
    ws_collect,
    ws_connect,
)
from tests.live.server import LiveServer

MiB = 1 << 20


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
    # Read while the server stops: it waits for our answer to its Close (RFC 6455) before it exits.
    live_server.begin_stop()
    _, code = ws_collect(ws)
    assert code == 1001
    live_server.stop()  # and it exits


def test_bad_handshakes_get_400_or_426_and_no_error_in_the_log(live_server: LiveServer) -> None:
    path = "/ws/task-status/task-runner-nobody-00000000"
    cases: dict[str, dict[str, str | None]] = {
        "version 8": {"Sec-WebSocket-Version": "8"},
        "no version": {"Sec-WebSocket-Version": None},
        "no key": {"Sec-WebSocket-Key": None},
        "a key of 3 bytes": {"Sec-WebSocket-Key": "YWJj"},
        "a key that is not base64": {"Sec-WebSocket-Key": "not base64, not at all!!"},
        "no Host": {"Host": None},
        "a Host that is no host name": {"Host": "xn--"},
        "a malformed deflate offer": {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=x"},
    }
    answers = {}
    for case, changes in cases.items():
        headers = {**UPGRADE_HEADERS, **changes}
        status, answer_headers, body = raw_handshake(
            live_server, path, {k: v for k, v in headers.items() if v is not None}
        )
        answers[case] = (status, answer_headers["Sec-WebSocket-Version"], json.loads(body or b"{}").get("error"))

    too_old = (426, "13", "unsupported_websocket_version")
    bad = (400, None, "invalid_handshake")
    assert answers == {
        "version 8": too_old,
        "no version": too_old,
        "no key": bad,
        "a key of 3 bytes": bad,
        "a key that is not base64": bad,
        "no Host": bad,
        "a Host that is no host name": bad,
        "a malformed deflate offer": bad,
    }
    assert raw_handshake(live_server, path, UPGRADE_HEADERS)[0] == 101, "the same handshake, well formed"
    log = live_server.log()
    assert '"level": "ERROR"' not in log
    assert "Traceback" not in log


def _unfinished_deflate_fragments(ws: RawWebSocket) -> None:
    """256 fragments without FIN, each 1 MiB of zeros deflated to about 1 KiB: ~260 KiB on the wire."""
    assert ws.deflate, "the server accepted permessage-deflate"
    for _ in range(256):
        if not ws.send_raw(ws.ws.send(BytesMessage(data=bytes(MiB), message_finished=False))):
            return


def _unfinished_plain_fragments(ws: RawWebSocket) -> None:
    """96 fragments of 1 MiB without FIN: a 96 MiB message that never ends."""
    for _ in range(96):
        if not ws.send_raw(ws.ws.send(BytesMessage(data=bytes(MiB), message_finished=False))):
            return


def _a_frame_of_2_to_the_62_bytes(ws: RawWebSocket) -> None:
    """One binary frame whose header announces 2**62 bytes, then 96 MiB of its payload."""
    header, mask = masked_frame_header(opcode=0x2, length=1 << 62)
    if not ws.send_raw(header):
        return
    zeros = mask * (MiB // 4)  # zeros, masked
    for _ in range(96):
        if not ws.send_raw(zeros):
            return


@pytest.mark.parametrize(
    "attack", [_unfinished_deflate_fragments, _unfinished_plain_fragments, _a_frame_of_2_to_the_62_bytes]
)
def test_a_message_over_the_limit_is_closed_1009_and_the_worker_stays_small(
    live_server: LiveServer, attack: Callable[[RawWebSocket], None]
) -> None:
    name = launch(live_server, "slow", seconds="60")
    ws = RawWebSocket(live_server, name, deflate=attack is _unfinished_deflate_fragments)
    before = worker_rss(live_server)
    attack(ws)
    close = ws.until_close(timeout=15)
    grown = worker_rss(live_server) - before
    ws.shutdown()
    assert grown < 48 * MiB, f"the worker grew by {grown / MiB:.0f} MiB"
    assert close is not None, "the server closed the connection"
    assert close.code == 1009


def test_a_client_that_floods_instead_of_answering_the_close_leaves_the_worker_small(live_server: LiveServer) -> None:
    """While the server waits for the client's Close (nobody reads its messages then), what it sends is dropped."""
    ws = RawWebSocket(live_server, "task-runner-nobody-00000000")  # refused 4404: no subscription, no slot
    flood = ws.ws.send(TextMessage(data="y" * 4000)) * 16  # each message under the size limit
    close = ws.until_close()
    assert close is not None and close.code == 4404
    before = largest = worker_rss(live_server)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and ws.send_raw(flood):  # until the server gives up on its Close
        largest = max(largest, worker_rss(live_server))
    ws.shutdown()
    assert time.monotonic() < deadline, "the server ends the connection once its wait for the Close is over"
    grown = largest - before
    assert grown < 48 * MiB, f"the worker grew by {grown / MiB:.0f} MiB"


@pytest.mark.parametrize(("job", "close_code"), [("finished", 1000), ("unknown", 4404)])
def test_the_server_waits_for_the_clients_close_before_closing_tcp(
    live_server: LiveServer, job: str, close_code: int
) -> None:
    if job == "finished":
        name = donate(live_server)["job_name"]
        wait_for_status(live_server, name, "Succeeded")
    else:
        name = "task-runner-nobody-00000000"
    ws = RawWebSocket(live_server, name)
    close = ws.until_close()
    assert close is not None
    assert close.code == close_code
    assert not ws.server_closed_tcp_within(2.0), "the server closed TCP before the client's Close (RFC 6455 §7.1.1)"
    assert ws.answer_close_and_wait_for_eof(), "after the client's Close the server ends TCP cleanly, without a reset"
    ws.shutdown()
