"""What the donor sees for each outcome: a failure and its reason, their own mistakes, and many tabs.

The admin API (``GET /api/runs``) is the witness of what was really launched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.conftest import ADMIN_TOKEN
from tests.e2e.donation_page import DonationPage
from tests.helpers import wait_for
from tests.live.server import LiveServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def runs(server: LiveServer) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/runs", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["runs"]
    return found


def donation_posts(page: Page) -> list[str]:
    """Start counting the page's ``POST /api/donations`` requests."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/api/donations" in r.url else None)
    return posts


def test_a_failing_task_shows_failed_with_its_reason(
    donation_spec: Callable[..., None], make_live_server: Callable[..., LiveServer], page: Page
) -> None:
    donation_spec(command=["python", "-c", "import sys; sys.exit(3)"], backoff_limit=0)
    server = make_live_server()
    donation = DonationPage(page, server.url).open()
    donation.fill().donate()

    assert donation.wait_until_finished() == "Failed"
    assert donation.timeline()[-1] == "Failed"
    expect(page.locator("#job-reason-row")).to_be_visible()
    assert donation.reason().startswith("BackoffLimitExceeded"), donation.reason()
    assert "exit code 3" in donation.reason()
    assert donation.raw_reason() == "BackoffLimitExceeded"
    # the donor reads plain words; the raw reason is folded away for support
    assert donation.explanation() == "We could not prepare your receipt and have stopped trying."
    expect(page.locator("#job-raw-reason")).to_be_hidden()
    page.click("#job-support summary")
    expect(page.locator("#job-raw-reason")).to_be_visible()
    expect(page.locator("#job-raw-reason")).to_contain_text("exit code 3")
    expect(page.locator("#job-status")).to_have_text("Failed")


def field_error(page: Page, field: str) -> str:
    """The error shown for ``field``; asserts it sits in the field's own block and is tied to it."""
    error = page.locator(f"#{field}-error")
    expect(error).to_be_visible()
    expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate(
        "([field, error]) => document.getElementById(field).closest('.field').contains(document.getElementById(error))",
        [field, f"{field}-error"],
    ), f"#{field}-error is not next to #{field}"
    described_by = (page.get_attribute(f"#{field}", "aria-describedby") or "").split()
    assert f"{field}-error" in described_by
    return error.inner_text()


def no_field_error(page: Page, field: str) -> None:
    expect(page.locator(f"#{field}-error")).to_be_hidden()
    assert page.get_attribute(f"#{field}", "aria-invalid") is None


def test_validation_errors_appear_next_to_their_fields_and_nothing_is_launched(
    live_server: LiveServer, page: Page
) -> None:
    posts = donation_posts(page)
    donation = DonationPage(page, live_server.url).open()

    donation.donate()  # an empty form: caught in the page, nothing sent
    assert field_error(page, "amount") == "Enter an amount."
    assert field_error(page, "donor_name") == "Enter your name."
    assert field_error(page, "donor_email") == "Enter your email address."
    expect(page.locator("#amount")).to_be_focused()
    assert posts == []

    donation.fill(amount="12.345", donor_email="not-an-email")
    donation.donate()  # the server's 400 is the source of truth
    expect(page.locator("#amount-error")).to_contain_text("2 decimal places")
    field_error(page, "amount")
    assert "email" in field_error(page, "donor_email").lower()
    no_field_error(page, "donor_name")
    no_field_error(page, "currency")
    no_field_error(page, "message")
    expect(page.locator("#amount")).to_be_focused()
    expect(page.locator("#form-error")).to_be_hidden()
    expect(page.locator("#status-panel")).to_be_hidden()
    expect(page.locator("#donate")).to_be_enabled()
    assert len(posts) == 1
    assert runs(live_server) == []


def test_a_double_click_launches_one_task(live_server: LiveServer, page: Page) -> None:
    posts = donation_posts(page)
    donation = DonationPage(page, live_server.url).open()
    donation.fill()
    page.dblclick("#donate")

    assert donation.wait_until_finished() == "Succeeded"
    launched = runs(live_server)
    assert [run["job_name"] for run in launched] == [donation.job_name()]
    assert len(posts) == 1, posts  # the busy button takes no second click


def test_eight_tabs_each_follow_their_donation_live_to_succeeded(
    live_server: LiveServer, new_context: Callable[..., BrowserContext]
) -> None:
    context = new_context()
    tabs = [DonationPage(context.new_page(), live_server.url).open() for _ in range(8)]
    for number, tab in enumerate(tabs, start=1):
        tab.fill(donor_name=f"Donor {number}", amount=f"{number}.00").donate()

    for tab in tabs:
        assert tab.wait_until_finished(timeout=90) == "Succeeded"
    for tab in tabs:
        assert tab.timeline()[-1] == "Succeeded"
        assert tab.transport() == "ws"
        assert tab.transports_used() == {"ws"}, tab.record()
    names = {tab.job_name() for tab in tabs}
    assert len(names) == 8
    assert {run["job_name"] for run in runs(live_server)} == names


def losing_the_first_answer(page: Page) -> list[str]:
    """The page's first donation is launched, but its answer is lost on the way; the list gets its job name."""
    lost: list[str] = []

    def lose_first_answer(route: Route) -> None:
        if lost:
            route.continue_()
            return
        answer = route.fetch()  # the server launches the task ...
        lost.append(answer.json()["job_name"])
        route.abort("connectionreset")  # ... but the donor never hears of it

    page.route("**/api/donations", lose_first_answer)
    return lost


def test_a_retry_after_a_lost_answer_shows_the_first_task_and_launches_nothing_new(
    live_server: LiveServer, page: Page
) -> None:
    lost = losing_the_first_answer(page)
    donation = DonationPage(page, live_server.url).open()
    donation.fill().donate()
    expect(page.locator("#form-error")).to_contain_text("Could not reach the server")
    wait_for(lambda: [run["terminal"] for run in runs(live_server)] == [True], timeout=60, what="the task to finish")

    donation.donate()  # the same form, so the same Idempotency-Key

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.job_name() == lost[0]
    assert donation.transport_text() == "Not needed (finished)"
    assert [run["job_name"] for run in runs(live_server)] == lost


def test_an_edited_form_after_a_lost_answer_is_a_new_donation_not_a_conflict(
    live_server: LiveServer, page: Page
) -> None:
    """The same fill keeps its Idempotency-Key (above); a fill the donor changed since is another donation."""
    lost = losing_the_first_answer(page)
    donation = DonationPage(page, live_server.url).open()
    donation.fill(amount="5.00").donate()
    expect(page.locator("#form-error")).to_contain_text("Could not reach the server")

    donation.fill(amount="7.00").donate()  # the donor changed the amount: not the request the key went with

    assert donation.wait_until_finished() == "Succeeded"
    assert donation.job_name() not in lost
    assert len(lost) == 1
    assert {run["job_name"] for run in runs(live_server)} == {lost[0], donation.job_name()}
