"""The console in Chromium as an operator uses it: the fallback behind a proxy, filters, a rerun, live logs, a bound.

Runs are launched through the API of a real gunicorn server in local mode;
the page is watched for script errors and CSP violations by the e2e fixtures.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.e2e.proxy import TransportBlockingProxy
from tests.e2e.test_console import ALICE, Console
from tests.e2e.test_console_transports import stream_urls
from tests.helpers import wait_for
from tests.live.server import LiveServer

AS_ALICE = {"Authorization": f"Bearer {ALICE}"}


@pytest.fixture
def server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server(ADMIN_TOKENS=f"alice:{ALICE}")


def launch(server: LiveServer, spec: str, *, session: requests.Session | None = None, **params: str) -> str:
    response = (session or requests).post(
        f"{server.url}/api/jobs", json={"spec": spec, "params": params}, headers=AS_ALICE, timeout=10
    )
    assert response.status_code == 202, response.text
    name: str = response.json()["job_name"]
    return name


def status_of(server: LiveServer, name: str) -> str:
    answer: str = requests.get(f"{server.url}/api/jobs/{name}", timeout=10).json()["status"]
    return answer


@pytest.fixture
def proxy(server: LiveServer) -> Iterator[TransportBlockingProxy]:
    """The console's server behind a proxy that carries neither WebSocket nor SSE."""
    blocking = TransportBlockingProxy(server.url)
    blocking.start()
    yield blocking
    blocking.stop()


def test_behind_a_proxy_without_streams_the_list_falls_back_to_polling_and_stays_live(
    server: LiveServer, proxy: TransportBlockingProxy, page: Page
) -> None:
    console = Console(page, proxy.url).open().sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator("body")).to_have_attribute("data-transport", "poll")
    expect(page.locator("#transport-name")).to_have_text("Polling")
    name = launch(server, "slow", seconds="2")
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=15_000)
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    assert proxy.refused_kinds() == {"websocket", "event-stream"}, "each stream was tried first"
    assert any(path.startswith("/api/runs?") for _, path, _ in proxy.passed)


def test_the_spec_filter_and_the_search_show_only_matching_runs(server: LiveServer, page: Page) -> None:
    console = Console(page, server.url)
    urls = stream_urls(page, console)
    console.open().sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    quick = launch(server, "quick")
    slow = launch(server, "slow", seconds="30")
    expect(console.row(quick)).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    expect(console.row(slow)).to_have_attribute("data-status", "Running", timeout=30_000)

    page.select_option("#spec-filter", "quick")
    expect(console.row(slow)).to_have_count(0)
    expect(console.row(quick)).to_be_visible()
    expect(page.locator("#runs-body tr")).to_have_count(1)
    later = launch(server, "slow", seconds="30")  # a run of another spec never shows while the filter is on
    quick_later = launch(server, "quick")
    expect(console.row(quick_later)).to_be_visible(timeout=15_000)
    expect(console.row(later)).to_have_count(0)
    assert any("spec=quick" in url for url in urls()), "the filter went to the server"

    page.select_option("#spec-filter", "")
    expect(console.row(later)).to_be_visible(timeout=15_000)
    page.fill("#search", slow)
    expect(page.locator("#runs-body tr")).to_have_count(1)
    expect(console.row(slow)).to_be_visible()
    page.fill("#search", slow.upper())  # case does not matter
    expect(console.row(slow)).to_be_visible()
    page.fill("#search", "")
    expect(page.locator("#runs-body tr")).to_have_count(4)


def test_a_rerun_appears_in_the_list_and_links_both_ways(server: LiveServer, page: Page) -> None:
    console = Console(page, server.url).open().sign_in(ALICE)
    first = launch(server, "quick", who="ops")
    row = console.row(first)
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    row.get_by_role("button", name=first).click()
    expect(page.locator("#detail-name")).to_have_text(first)
    page.get_by_role("button", name="Rerun").click()
    expect(page.locator("#confirm-text")).to_have_text(f"Start a rerun of {first}?")
    page.click("#confirm-yes")
    expect(page.locator("#detail-message")).to_have_text("Rerun started.")

    # the detail now shows the new run, which links back to the one it reran
    links = page.locator("#detail-links")
    expect(links).to_contain_text(f"A rerun of {first}.")
    second = page.locator("#detail-name").inner_text()
    assert second != first
    expect(console.row(second)).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    expect(page.locator("#detail-logs")).to_contain_text("quick task ops")

    links.get_by_role("button", name=first).click()
    expect(page.locator("#detail-name")).to_have_text(first)
    expect(links).to_contain_text(f"Rerun as {second}.")
    links.get_by_role("button", name=second).click()
    expect(page.locator("#detail-name")).to_have_text(second)
    assert requests.get(f"{server.url}/api/jobs/{second}", timeout=10).json()["rerun_of"] == first


TICKER = """\
# Prints a burst of BURST lines at once, then one line every TASK_PARAM_STEP seconds, TICKS times.
apiVersion: batch/v1
kind: Job
metadata:
  name: ticker
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
              import os, time
              for n in range(int(os.environ.get("TASK_PARAM_BURST", "0"))):
                  print(f"burst {n:04d}")
              for n in range(int(os.environ.get("TASK_PARAM_TICKS", "5"))):
                  print(f"tick {n}", flush=True)
                  time.sleep(float(os.environ.get("TASK_PARAM_STEP", "0.5")))
              print("ticker done", flush=True)
"""


def test_a_running_tasks_output_arrives_as_it_is_written_and_load_earlier_reads_more(
    jobspecs_dir: Path, make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    (jobspecs_dir / "ticker.yaml").write_text(textwrap.dedent(TICKER))
    server = make_live_server(ADMIN_TOKENS=f"alice:{ALICE}")
    console = Console(page, server.url).open().sign_in(ALICE)
    name = launch(server, "ticker", burst="1200", ticks="6", step="0.5")
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=15_000)
    logs_url = f"{server.url}/api/jobs/{name}/logs?tail=1"
    wait_for(
        lambda: "tick 0" in requests.get(logs_url, headers=AS_ALICE, timeout=10).text,
        timeout=15,
        what="the burst to be written (the follow then starts with its last 500 lines)",
    )
    row.get_by_role("button", name=name).click()
    logs = page.locator("#detail-logs")
    expect(page.locator("#logs-state")).to_have_text("following as it is written")
    expect(logs).to_contain_text("tick 1", timeout=15_000)
    assert status_of(server, name) == "Running", "the line came before the task ended"
    text = logs.inner_text()
    assert "ticker done" not in text
    assert "burst 1199" in text and "burst 0000" not in text, "the first view is a bounded tail"

    expect(logs).to_contain_text("ticker done", timeout=15_000)
    expect(page.locator("#logs-state")).to_have_text("the task ended")
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=15_000)

    page.get_by_role("button", name="Load earlier").click()
    expect(logs).to_contain_text("burst 0000")
    expect(logs).to_contain_text("ticker done")
    assert any("tail=2000" in url for url, _ in console.requests)


def test_with_more_than_500_runs_at_most_500_rows_are_in_the_page(
    make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    # one run at a time, the rest wait in line (Queued): 520 launches are quick and each is a change
    server = make_live_server(ADMIN_TOKENS=f"alice:{ALICE}", MAX_ACTIVE_JOBS="1", MAX_QUEUED_JOBS="1000")
    console = Console(page, server.url).open().sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    with requests.Session() as session:
        names = [launch(server, "slow", session=session, seconds="60") for _ in range(520)]
    expect(page.locator("#runs-summary")).to_have_text("Showing the newest 500 of 520 runs.", timeout=20_000)
    assert page.evaluate("() => document.querySelectorAll('#runs-body tr').length") == 500
    expect(console.row(names[-1])).to_be_visible()
    expect(console.row(names[0])).to_have_count(0)  # the oldest are left out
