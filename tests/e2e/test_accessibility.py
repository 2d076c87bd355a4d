"""The page for everyone: no serious axe-core findings in any state, and a donation by keyboard alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.donation_page import DONOR, DonationPage
from tests.live.server import LiveServer

BLOCKING_IMPACTS = ("serious", "critical")


def axe_findings(page: Page, axe_script: Path) -> list[str]:
    """Run axe-core on the page as it is now; return the serious and critical violations, readable."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=str(axe_script))
    results: dict[str, Any] = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    assert results["testEngine"]["name"] == "axe-core"
    assert len(results["passes"]) > 10, "axe checked the page"
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]


def test_no_serious_accessibility_violations_in_any_state(
    live_server: LiveServer, new_context: Callable[..., BrowserContext], axe_script: Path
) -> None:
    # axe is injected as an inline script, which the page's strict CSP rightly refuses
    page = new_context(bypass_csp=True).new_page()
    donation = DonationPage(page, live_server.url).open()
    assert axe_findings(page, axe_script) == [], "the empty form"

    donation.donate()
    expect(page.locator("#amount-error")).to_be_visible()
    assert axe_findings(page, axe_script) == [], "the form with errors"

    donation.fill().donate()
    expect(page.get_by_role("progressbar", name="Progress")).to_be_visible(timeout=30_000)
    assert axe_findings(page, axe_script) == [], "the running status panel with its progress bar"
    assert donation.wait_until_finished() == "Succeeded"
    assert axe_findings(page, axe_script) == [], "the finished status panel"


def test_no_serious_accessibility_violations_with_a_reason_and_its_support_details(
    donation_spec: Callable[..., None],
    make_live_server: Callable[..., LiveServer],
    new_context: Callable[..., BrowserContext],
    axe_script: Path,
) -> None:
    donation_spec(command=["python", "-c", "import sys; sys.exit(3)"], backoff_limit=0)
    server = make_live_server()
    page = new_context(bypass_csp=True).new_page()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()
    assert donation.wait_until_finished() == "Failed"
    expect(page.locator("#job-explanation")).to_be_visible()
    assert axe_findings(page, axe_script) == [], "a failure explained, support details folded"
    page.click("#job-support summary")
    expect(page.locator("#job-raw-reason")).to_be_visible()
    assert axe_findings(page, axe_script) == [], "the support details open"


def test_a_donation_by_keyboard_alone(live_server: LiveServer, page: Page) -> None:
    donation = DonationPage(page, live_server.url).open()
    keyboard = page.keyboard

    def focused() -> str:
        return str(page.evaluate("() => document.activeElement.id || document.activeElement.className"))

    keyboard.press("Tab")
    assert focused() == "skip-link"
    keyboard.press("Tab")
    assert focused() == "amount"
    keyboard.type("7.50")
    keyboard.press("Tab")
    assert focused() == "currency"
    keyboard.type("GBP")  # a select picks the option typed
    keyboard.press("Tab")
    assert focused() == "donor_name"
    keyboard.type(DONOR["donor_name"])
    keyboard.press("Tab")
    assert focused() == "donor_email"
    keyboard.type(DONOR["donor_email"])
    keyboard.press("Tab")
    assert focused() == "message"
    keyboard.type("Sent without a mouse.")
    keyboard.press("Tab")
    assert focused() == "donate"
    expect(page.locator("#currency")).to_have_value("GBP")

    keyboard.press("Space")

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.timeline()[-1] == "Succeeded"
    expect(page.locator("#status-panel")).to_have_attribute("aria-live", "polite")


def test_enter_in_a_field_submits_the_form(live_server: LiveServer, page: Page) -> None:
    donation = DonationPage(page, live_server.url).open()
    donation.fill()
    page.focus("#donor_email")
    page.keyboard.press("Enter")
    assert donation.wait_until_finished() == "Succeeded"
