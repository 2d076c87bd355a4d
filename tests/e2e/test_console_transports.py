"""The console's list live in Chromium on each transport the server serves: /ws/runs, /sse/runs, polling /api/runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.e2e.test_console import ALICE, Console
from tests.live.server import LiveServer


@pytest.fixture
def server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server(ADMIN_TOKENS=f"alice:{ALICE}")


def stream_urls(page: Page, console: Console) -> Callable[[], list[str]]:
    """The URLs the page opened streams and polls of every run on (WebSockets are not in its requests)."""
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    return lambda: [url for url in [*sockets, *(url for url, _ in console.requests)] if "/runs?" in url]


def launch(server: LiveServer, spec: str, **params: str) -> str:
    response = requests.post(
        f"{server.url}/api/jobs",
        json={"spec": spec, "params": params},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    name: str = response.json()["job_name"]
    return name


LABELS = {"ws": "WebSocket", "sse": "Server-Sent Events", "poll": "Polling"}


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_the_list_follows_runs_live_on_each_transport(server: LiveServer, page: Page, transport: str) -> None:
    console = Console(page, server.url)
    urls = stream_urls(page, console)
    console.open(f"?transport={transport}").sign_in(ALICE)
    expect(page.locator("body")).to_have_attribute("data-transport", transport)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    expect(page.locator("#transport-name")).to_have_text(LABELS[transport])  # the operator sees which one is live
    name = launch(server, "slow", seconds="2")
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=15_000)
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    assert urls() and all("token" not in url and ALICE not in url for url in urls()), "the token never in a URL"


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_a_status_filter_goes_to_the_stream_and_drops_a_run_that_stops_matching(
    server: LiveServer, page: Page, transport: str
) -> None:
    console = Console(page, server.url)
    urls = stream_urls(page, console)
    console.open(f"?transport={transport}").sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    page.check('#filters input[name="status"][value="Running"]')
    name = launch(server, "slow", seconds="2")
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=15_000)
    expect(row).to_have_count(0, timeout=30_000)  # it finished: the stream's last word (or the next poll) drops it
    assert any("status=Running" in url for url in urls())
