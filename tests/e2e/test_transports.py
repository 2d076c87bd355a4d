"""The page follows a donation live on whichever transport works, and falls back by itself.

WebSocket on gunicorn; forced SSE and polling; SSE on waitress and ``flask run``
(no WebSocket there); polling behind a proxy that carries neither; a server restart in the
middle of a task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import requests
from playwright.sync_api import Page

from tests.e2e.donation_page import TRANSPORT_LABELS, DonationPage
from tests.e2e.proxy import TransportBlockingProxy
from tests.live.server import LiveServer

FULL_TIMELINE = ["Queued", "Pending", "Running", "Succeeded"]


def test_a_donation_is_followed_live_over_websocket_to_succeeded(donation_page: DonationPage) -> None:
    donation_page.fill().donate()
    donation_page.wait_for_transport("ws")

    assert donation_page.wait_until_finished() == "Succeeded"
    assert donation_page.timeline() == FULL_TIMELINE
    assert donation_page.transport_text() == "WebSocket"
    assert donation_page.transport() == "ws"
    assert donation_page.transports_used() == {"ws"}, "no fallback on gunicorn"
    assert donation_page.statuses_seen()[-2:] == ["Running", "Succeeded"]
    record = donation_page.record()
    assert {"transport": "ws", "state": "live", "status": "Running"} in [
        {k: e[k] for k in ("transport", "state", "status")} for e in record
    ], f"the WebSocket was live while the task ran: {record}"
    assert donation_page.job_name().startswith("task-runner-")


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_a_forced_transport_follows_the_donation_to_succeeded(
    live_server: LiveServer, page: Page, transport: str
) -> None:
    donation = DonationPage(page, live_server.url).open(transport=transport)
    donation.fill().donate()

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.timeline() == FULL_TIMELINE
    assert donation.transport_text() == TRANSPORT_LABELS[transport]
    assert donation.transport() == transport
    assert donation.transports_used() == {transport}


def test_on_a_plain_wsgi_host_the_page_falls_back_to_sse_by_itself(
    make_plain_wsgi_server: Callable[..., LiveServer], page: Page
) -> None:
    """waitress has no socket to hand over; ``flask run`` has one but writes a response after the Close frame."""
    server = make_plain_wsgi_server()
    refused = requests.get(
        f"{server.url}/ws/task-status/task-runner-x-0123abcd",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        timeout=10,
    )
    assert refused.status_code == 501
    assert refused.json()["error"] == "websocket_unsupported"

    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.timeline() == FULL_TIMELINE
    assert donation.transport() == "sse"
    assert donation.transport_text() == "Server-Sent Events"
    assert donation.transports_used() == {"sse"}, "WebSocket never delivered, polling was not needed"
    assert len(sockets) == 1, f"one WebSocket try, then SSE: {sockets}"
    assert "/ws/task-status/task-runner-" in sockets[0]
    assert server.stop() == 0, "a clean stop on SIGINT"
    assert_quiet_log(server.log())


# What Werkzeug's development server prints besides the app's lines: its banner (which always warns
# that it is a development server) and one INFO access line per request, e.g. `... "GET / HTTP/1.1" 200 -`.
_WERKZEUG_BANNER = re.compile(r"^( \* |Press CTRL\+C to quit|WARNING: This is a development server\.)")
_WERKZEUG_ACCESS = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] ".*" ([1-4]\d\d|501) -$')  # 501: the refused WebSocket
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def assert_quiet_log(log: str) -> None:
    """No tracebacks and nothing above INFO: a refused WebSocket is not an error storm."""
    assert "Traceback" not in log, log[-3000:]

    def quiet(line: str) -> bool:  # the app's JSON lines, waitress's own "INFO:waitress:...", Werkzeug's own
        if line.startswith("{"):
            return bool(json.loads(line)["level"] == "INFO")
        return line.startswith("INFO:") or bool(_WERKZEUG_BANNER.match(line) or _WERKZEUG_ACCESS.match(line))

    loud = [line for line in _ANSI.sub("", log).splitlines() if line.strip() and not quiet(line)]
    assert not loud, "\n".join(loud)


def test_behind_a_proxy_without_websocket_or_sse_the_page_polls_to_the_end(
    blocking_proxy: TransportBlockingProxy, page: Page
) -> None:
    donation = DonationPage(page, blocking_proxy.url).open()
    donation.fill().donate()

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.timeline() == FULL_TIMELINE
    assert donation.transport() == "poll"
    assert donation.transport_text() == "Polling"
    assert donation.transports_used() == {"poll"}
    assert blocking_proxy.refused_kinds() == {"websocket", "event-stream"}, "each transport was tried first"
    assert any(path.startswith("/api/task-status") for _, path, _ in blocking_proxy.passed)


def test_the_page_reconnects_after_a_server_restart_and_shows_the_outcome(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    donation_spec(step_seconds=2)  # a task of ~6 s: time to restart the server while it runs
    server = make_live_server()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()
    donation.wait_for_status("Running")
    donation.wait_for_transport("ws")

    server.restart()

    assert donation.wait_until_finished(timeout=90) == "Succeeded"
    timeline = donation.timeline()
    assert timeline[:3] == ["Queued", "Pending", "Running"]
    assert "Queued" in timeline[3:], f"the new server resumed the interrupted run: {timeline}"
    assert timeline[-1] == "Succeeded"
    record = donation.record()
    states = [entry["state"] for entry in record]
    assert "reconnecting" in states, record
    after_drop = record[states.index("reconnecting") :]
    assert any(e["state"] in ("live", "closed") and e["transport"] != "none" for e in after_drop), record
