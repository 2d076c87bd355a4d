"""The donor watches a real progress bar on every transport: the donation task reports its four steps.

The task reports through ``webapp.tasks.progress.report`` (``POST
/api/jobs/<name>/progress`` with its run's own token); the page shows a
``<progress>`` with its step text, announced politely, on WebSocket, SSE and
polling alike, without moving the rest of the panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.donation_page import TRANSPORT_LABELS, DonationPage
from tests.live.server import LiveServer

STEPS = 4
STEP_TEXTS = {1: "Donation checked", 2: "Donation recorded", 3: "Receipt issued", 4: "Receipt sent"}
"""What the donation task reports after each step (webapp/tasks/donation_receipt.py)."""


SHOWN_PROGRESS_JS = """() => {
  const bar = document.getElementById('job-progress');
  return {
    value: bar.getAttribute('value'),
    valuetext: bar.getAttribute('aria-valuetext'),
    count: document.getElementById('progress-count').textContent,
    text: document.getElementById('progress-text').textContent,
  };
}"""


def live_region(page: Page, selector: str) -> str | None:
    """The ``aria-live`` value that rules ``selector``: its own, else its nearest ancestor's."""
    value: str | None = page.evaluate(
        "sel => document.querySelector(sel).closest('[aria-live]')?.getAttribute('aria-live') ?? null",
        selector,
    )
    return value


def assert_progress_advanced(record: list[dict[str, Any]]) -> None:
    """The bar showed while running, counted up to its total, and moved nothing else on the way."""
    running = [entry for entry in record if entry["status"] == "Running"]
    shown = [entry for entry in running if entry["shown"]]
    assert shown, f"no progress shown while running: {record}"
    values = [entry["value"] for entry in shown]
    assert all(entry["max"] == STEPS for entry in shown), record
    assert len(set(values)) >= 2, f"the bar advanced while running: {values}"
    assert values == sorted(values), f"never backwards: {values}"
    assert all(entry["text"] for entry in shown), record
    laid_out = [entry for entry in running if entry["laidOut"]]
    tops = {entry["timelineTop"] for entry in laid_out}
    assert len(tops) == 1, f"no layout jump while running (the row keeps its place): {laid_out}"


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_the_progress_bar_advances_on_every_transport(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page, transport: str
) -> None:
    donation_spec(step_seconds=3)  # each step outlasts the polls' pause (2 s, 3 s once unchanged)
    server = make_live_server()
    donation = DonationPage(page, server.url).open(transport=transport)
    donation.fill().donate()
    donation.wait_for_transport(transport)

    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_be_visible(timeout=30_000)
    expect(bar).to_have_attribute("max", str(STEPS))
    expect(bar).to_have_attribute("value", re.compile("^[123]$"))  # a step on the way, live
    shown = page.evaluate(SHOWN_PROGRESS_JS)  # one look, so a step cannot pass between two reads
    done = int(shown["value"])
    assert 1 <= done <= 3, shown
    assert shown == {
        "value": str(done),
        "valuetext": f"{done} of 4: {STEP_TEXTS[done]}",
        "count": f"{done} of 4",
        "text": STEP_TEXTS[done],
    }

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.transport_text() == TRANSPORT_LABELS[transport]
    assert donation.transports_used() == {transport}
    expect(bar).to_have_attribute("value", str(STEPS))  # the outcome keeps the last progress
    expect(bar).to_have_attribute("aria-valuetext", f"4 of 4: {STEP_TEXTS[4]}")
    assert donation.timeline() == ["Queued", "Pending", "Running", "Succeeded"], "progress adds no history"
    assert_progress_advanced(donation.progress_record())


def test_the_step_text_is_announced_politely_and_the_ticks_are_not(donation_page: DonationPage) -> None:
    page = donation_page.page
    donation_page.fill().donate()
    expect(page.get_by_role("progressbar", name="Progress")).to_be_visible(timeout=30_000)

    assert live_region(page, "#progress-text") == "polite"  # a new step is read out once
    assert live_region(page, "#progress-count") == "off"  # "2 of 4" is in the bar's aria-valuetext
    assert live_region(page, "#job-elapsed") == "off"  # the clock ticks every second: never read out
    assert page.get_attribute("#job-progress", "aria-labelledby") == "progress-label"
    assert donation_page.wait_until_finished() == "Succeeded"


def test_without_progress_the_panel_is_as_before(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    """A task that reports nothing (here: it does not run the donation program) shows no bar at all."""
    donation_spec(command=["python", "-c", "import time; time.sleep(1.5)"])
    server = make_live_server()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()

    assert donation.wait_until_finished() == "Succeeded"
    expect(page.locator("#job-progress-row")).to_be_hidden()
    record = donation.progress_record()
    assert not any(entry["shown"] for entry in record), record
    assert any(entry["laidOut"] for entry in record if entry["status"] == "Running"), "its place was kept"


def test_a_report_without_a_total_shows_an_indeterminate_bar(live_server: LiveServer, page: Page) -> None:
    """No total: a bar without a value (indeterminate) and "N done"; a total later makes it determinate.

    The statuses are scripted (the page polls a routed ``/api/task-status``): the server's own
    donation task always knows its total.
    """
    now = datetime.now(UTC)
    status: dict[str, Any] = {
        "job_name": "task-runner-scripted-0123abcd",
        "status": "Running",
        "terminal": False,
        "seq": 4,
        "created_at": _iso(now - timedelta(seconds=3)),
        "started_at": _iso(now - timedelta(seconds=2)),
        "updated_at": _iso(now),
        "reason": None,
        "message": None,
        "queue_position": None,
        "progress": {"done": 37, "total": None, "text": "Counting the coins", "at": _iso(now)},
        "history": [{"status": "Queued", "at": _iso(now)}, {"status": "Running", "at": _iso(now)}],
        "links": {"status": "/api/task-status?job_name=task-runner-scripted-0123abcd"},
    }

    def answer(code: int) -> Callable[[Route], None]:
        return lambda route: route.fulfill(status=code, content_type="application/json", body=json.dumps(status))

    page.route("**/api/donations", answer(202))  # launched
    page.route("**/api/task-status*", answer(200))  # each poll: the status as it is now
    donation = DonationPage(page, live_server.url).open(transport="poll")
    donation.fill().donate()

    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_be_visible()
    assert bar.get_attribute("value") is None and bar.get_attribute("max") is None
    assert bar.evaluate("bar => bar.matches(':indeterminate')")
    expect(bar).to_have_attribute("aria-valuetext", "37 done: Counting the coins")
    expect(page.locator("#progress-count")).to_have_text("37 done")

    status.update(seq=5, progress={"done": 37, "total": 50, "text": "Counting the coins", "at": _iso(now)})
    expect(bar).to_have_attribute("value", "37", timeout=15_000)  # the next poll
    expect(bar).to_have_attribute("max", "50")
    assert not bar.evaluate("bar => bar.matches(':indeterminate')")
    expect(bar).to_have_attribute("aria-valuetext", "37 of 50: Counting the coins")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
