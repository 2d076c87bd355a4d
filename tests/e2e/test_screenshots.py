"""Pictures of the page for the docs: a donation mid-task (its progress bar halfway) and finished.

They go to a temporary folder; with ``JOBPULSE_SCREENSHOTS=1`` (``make screenshots``)
they replace the ones committed in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.donation_page import DonationPage
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
