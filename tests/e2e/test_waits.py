"""Every wait explained on the page: the time it takes, and why it waits, in plain words.

Real runs on the real server: the elapsed time ticks while a donation runs and
freezes at its outcome; a donation waiting for a free slot of the local runner
says so, and says its place in line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.donation_page import DonationPage
from tests.live.server import LiveServer

WAITING_FOR_SLOT = "Other donations are being processed right now. Yours starts as soon as there is room."


def test_the_elapsed_time_ticks_while_running_and_freezes_at_the_outcome(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    donation_spec(step_seconds=2)  # ~6 s of running: time to see it tick
    server = make_live_server()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()
    donation.wait_for_status("Running")

    elapsed = page.locator("#job-elapsed")
    expect(elapsed).to_have_text(re.compile(r"^Running for \d+ s$"))
    expect(elapsed).to_have_attribute("data-ticking", "true")
    first = elapsed.inner_text()
    expect(elapsed).not_to_have_text(first, timeout=3000)  # a second later, without a new status
    expect(page.locator("#job-elapsed-row")).to_have_attribute("aria-live", "off")  # a tick is not announced

    assert donation.wait_until_finished() == "Succeeded"
    expect(elapsed).to_have_attribute("data-ticking", "false")
    expect(elapsed).to_have_text(re.compile(r"^Finished in \d+ s$"))
    # frozen: what finished_at - started_at says, not what the clock says now
    from_status = page.evaluate(
        "() => window.jobpulseWords.elapsed(window.jobpulse.status, true, Date.now() + 3600e3).text"
    )
    assert elapsed.inner_text() == from_status
    seconds = int(elapsed.get_attribute("data-seconds") or -1)
    assert 3 <= seconds < 30, seconds


def test_a_donation_waiting_for_a_slot_says_why_and_its_place_in_line(
    donation_spec: Callable[..., None],
    make_live_server: Callable[..., LiveServer],
    new_context: Callable[..., BrowserContext],
) -> None:
    donation_spec(step_seconds=2)
    server = make_live_server(LEGACY_MAX_CONCURRENCY="1")  # one at a time: the others wait in line
    context = new_context()
    first, second, third = (DonationPage(context.new_page(), server.url).open() for _ in range(3))
    first.fill(donor_name="First").donate()
    first.wait_for_status("Running")
    second.fill(donor_name="Second").donate()
    expect(second.page.locator("#job-reason")).to_have_attribute("data-reason", "WaitingForSlot")
    third.fill(donor_name="Third").donate()

    reason = third.page.locator("#job-reason")
    expect(reason).to_have_attribute("data-reason", "WaitingForSlot")
    expect(third.page.locator("#job-status")).to_have_text("Queued")
    expect(third.page.locator("#job-explanation")).to_have_text(f"{WAITING_FOR_SLOT} You are number 2 in line.")
    expect(third.page.locator("#job-elapsed")).to_have_text(re.compile(r"^Waiting for \d+ s$"))
    assert "WaitingForSlot" not in third.explanation()
    assert third.reason().startswith("WaitingForSlot: "), "the raw reason stays for support"
    # as the first finishes, the line moves up
    expect(third.page.locator("#job-explanation")).to_have_text(
        f"{WAITING_FOR_SLOT} You are next in line.", timeout=30_000
    )

    for tab in (first, second, third):
        assert tab.wait_until_finished(timeout=90) == "Succeeded"
        expect(tab.page.locator("#job-reason-row")).to_be_hidden()
