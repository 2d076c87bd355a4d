"""Pictures for the docs: a donation mid-task (its progress bar halfway) and finished; the operator console.

They go to a temporary folder; with ``JOBPULSE_SCREENSHOTS=1`` (``make screenshots``)
they replace the ones committed in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import requests
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.donation_page import DonationPage
from tests.e2e.test_console import ALICE, DONATION, Console
from tests.e2e.test_console_live import AS_ALICE, launch
from tests.live.server import PROJECT_ROOT, LiveServer

DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def show_whole_panel(page: Page) -> None:
    """Scroll as a donor would to read the whole timeline (it grows below the fold)."""
    page.locator("#status-panel").evaluate("panel => panel.scrollIntoView({block: 'end'})")


def test_screenshots_of_a_donation_running_and_succeeded(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page, tmp_path: Path
) -> None:
    folder = DOCS_SCREENSHOTS if os.environ.get("JOBPULSE_SCREENSHOTS") == "1" else tmp_path
    donation_spec(step_seconds=2)  # long enough to catch it running
    server = make_live_server()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()
    donation.wait_for_status("Running")
    expect(page.locator("#job-progress")).to_have_attribute("value", "2")  # halfway, the bar and its step
    folder.mkdir(parents=True, exist_ok=True)
    running = folder / "donation-running.png"
    show_whole_panel(page)
    page.screenshot(path=running)

    assert donation.wait_until_finished() == "Succeeded"
    succeeded = folder / "donation-succeeded.png"
    show_whole_panel(page)
    page.screenshot(path=succeeded)

    for picture in (running, succeeded):
        data = picture.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert 10_000 < len(data) < 400_000, f"{picture.name}: {len(data)} bytes"


def test_screenshot_of_the_console_with_runs_of_every_outcome_and_one_open(
    make_live_server: Callable[..., LiveServer], new_context: Callable[..., BrowserContext], tmp_path: Path
) -> None:
    folder = DOCS_SCREENSHOTS if os.environ.get("JOBPULSE_SCREENSHOTS") == "1" else tmp_path
    server = make_live_server(ADMIN_TOKENS=f"alice:{ALICE}")
    page = new_context(viewport={"width": 1200, "height": 1250}).new_page()  # the list and the top of a detail
    console = Console(page, server.url).open().sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    outcomes = {
        launch(server, "quick", who="ops"): "Succeeded",
        launch(server, "fail"): "Failed",
        launch(server, "slow", seconds="0.5"): "Succeeded",
        launch(server, "slow", seconds="60"): "Running",
    }
    cancelled = launch(server, "slow", seconds="60")
    expect(console.row(cancelled)).to_have_attribute("data-status", "Running", timeout=30_000)
    assert requests.delete(f"{server.url}/api/jobs/{cancelled}", headers=AS_ALICE, timeout=10).status_code == 200
    outcomes[cancelled] = "Cancelled"
    donation = requests.post(f"{server.url}/api/donations", json=DONATION, timeout=10).json()["job_name"]
    outcomes[donation] = "Succeeded"
    for name, outcome in outcomes.items():
        expect(console.row(name)).to_have_attribute("data-status", outcome, timeout=30_000)

    console.row(donation).get_by_role("button", name=donation).click()
    expect(page.locator("#detail-manifest")).to_contain_text("•••")
    expect(page.locator("#detail-logs")).to_contain_text("done: thank you")
    folder.mkdir(parents=True, exist_ok=True)
    picture = folder / "console.png"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=picture)
    data = picture.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 10_000 < len(data) < 400_000, f"{picture.name}: {len(data)} bytes"
