"""The operator console in Chromium: sign-in, the run list, a run's details with the donor masked, the token's home.

The live transports of the list (``/ws/runs``, ``/sse/runs``) are tested where they are served;
here the list is followed by whichever transport the server offers, polling at least.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.conftest import ADMIN_TOKEN
from tests.e2e.test_accessibility import axe_findings
from tests.live.server import LiveServer

ALICE = "alice-token-0123456789"
DONATION = {"amount": "12.50", "currency": "USD", "donor_name": "Grace Donor", "donor_email": "grace@example.org"}


@pytest.fixture
def server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server(ADMIN_TOKENS=f"alice:{ALICE}")


class Console:
    """One tab on the console, every request it makes recorded (URL and whether it carried a token)."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.requests: list[tuple[str, str | None]] = []
        page.on("request", self._note)

    def _note(self, request: Request) -> None:
        self.requests.append((request.url, request.headers.get("authorization")))

    def open(self, query: str = "") -> Console:
        self.page.goto(f"{self.base_url}/admin{query}")  # waits for the load event: admin.js (deferred) has run
        return self

    def sign_in(self, token: str) -> Console:
        self.page.fill("#token", token)
        self.page.click("#sign-in")
        return self

    def api_requests(self) -> list[tuple[str, str | None]]:
        return [(url, auth) for url, auth in self.requests if "/static/" not in url and not url.endswith("/admin")]

    def row(self, job_name: str) -> Any:
        return self.page.locator(f'#runs-body tr[data-job="{job_name}"]')


@pytest.fixture
def console(server: LiveServer, page: Page) -> Iterator[Console]:
    yield Console(page, server.url)


def donate(server: LiveServer) -> dict[str, Any]:
    response = requests.post(f"{server.url}/api/donations", json=DONATION, timeout=10)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_unauthenticated_visit_shows_only_the_login_and_fetches_nothing(console: Console) -> None:
    page = console.open().page
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    expect(page.locator("#token")).to_have_attribute("type", "password")
    page.wait_for_load_state("networkidle")
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#who")).to_be_hidden()
    assert console.api_requests() == [], "no run data is asked for without a token"


def test_a_wrong_token_is_refused_with_a_message(console: Console) -> None:
    page = console.open().sign_in("not-anyones-token").page
    expect(page.locator("#login-error")).to_contain_text("not an operator")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_an_empty_token_is_asked_for(console: Console) -> None:
    page = console.open().sign_in("").page
    expect(page.locator("#login-error")).to_have_text("Enter your operator token.")
    assert console.api_requests() == []


def test_an_operator_signs_in_sees_a_run_appear_and_opens_it_with_the_donor_masked(
    server: LiveServer, console: Console
) -> None:
    page = console.open().sign_in(ALICE).page
    expect(page.locator("#operator-name")).to_have_text("alice")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")

    run = donate(server)
    name = run["job_name"]
    row = console.row(name)
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    expect(row.locator("td").nth(1)).to_have_text("donation-receipt")

    page.fill("#search", run["pipeline_run_id"])
    expect(page.locator("#runs-body tr")).to_have_count(1)
    page.fill("#search", "no-such-run")
    expect(page.locator("#runs-body tr")).to_have_count(0)
    page.fill("#search", "")

    opener = row.get_by_role("button", name=name)
    opener.focus()
    page.keyboard.press("Enter")  # a row is a button: the keyboard opens it
    expect(page.locator("#detail-heading")).to_be_focused()
    expect(page.locator("#detail-heading")).to_contain_text(name)
    manifest = page.locator("#detail-manifest")
    expect(manifest).to_contain_text('"name": "TASK_PARAM_DONOR_EMAIL"')
    expect(manifest).to_contain_text("•••")
    expect(page.locator("#detail-history")).to_contain_text("Succeeded")
    expect(page.locator("#detail-webhook")).to_contain_text("No completion webhook")
    expect(page.locator("#detail-logs")).to_contain_text("done: thank you")
    expect(page.get_by_role("button", name="Rerun")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()

    text = page.evaluate("() => document.body.innerText")
    assert DONATION["donor_email"] not in text
    assert DONATION["donor_email"] not in page.content()

    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(opener).to_be_focused()


def test_the_token_lives_in_session_storage_only_and_never_in_a_url(server: LiveServer, console: Console) -> None:
    page = console.open().sign_in(ALICE).page
    expect(page.locator("#operator-name")).to_have_text("alice")
    name = donate(server)["job_name"]
    console.row(name).get_by_role("button", name=name).click()
    expect(page.locator("#detail-manifest")).to_contain_text("TASK_PARAMS")

    assert page.evaluate("() => Object.values(sessionStorage)") == [ALICE]
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
    assert page.context.cookies() == []
    urls = [url for url, _ in console.requests]
    assert urls and not [url for url in urls if ALICE in url]
    api = console.api_requests()
    assert {auth for url, auth in api if "/ws/" not in url} == {f"Bearer {ALICE}"}, api

    page.reload()  # the tab keeps its session
    expect(page.locator("#operator-name")).to_have_text("alice")
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_a_token_refused_later_brings_back_the_login_with_a_message(console: Console) -> None:
    page = console.open().page
    page.evaluate("() => sessionStorage.setItem('jobpulse.operatorToken', 'revoked-token-0000')")
    page.reload()
    expect(page.locator("#login-error")).to_contain_text("Your token was refused")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_the_audit_section_lists_who_did_what(server: LiveServer, console: Console) -> None:
    launched = requests.post(
        f"{server.url}/api/jobs", json={"spec": "quick"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )
    assert launched.status_code == 202
    page = console.open().sign_in(ALICE).page
    page.click("#tab-audit")
    expect(page.locator("#tab-audit")).to_have_attribute("aria-current", "page")
    first = page.locator("#audit-body tr").first
    expect(first).to_contain_text("admin")
    expect(first).to_contain_text("launch")
    expect(first).to_contain_text(launched.json()["job_name"])


def test_axe_finds_nothing_on_the_login_the_list_and_the_detail(
    server: LiveServer, new_context: Callable[..., BrowserContext], axe_script: Path
) -> None:
    # axe is injected as an inline script, which the page's strict CSP rightly refuses
    console = Console(new_context(bypass_csp=True).new_page(), server.url)
    page = console.open().page
    assert axe_findings(page, axe_script) == [], "the login"
    console.sign_in("wrong-token-000000")
    expect(page.locator("#login-error")).to_be_visible()
    assert axe_findings(page, axe_script) == [], "the login with its error"

    console.sign_in(ALICE)
    name = donate(server)["job_name"]
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    assert axe_findings(page, axe_script) == [], "the list"

    row.get_by_role("button", name=name).click()
    expect(page.locator("#detail-manifest")).to_contain_text("TASK_PARAMS")
    expect(page.locator("#detail-logs")).to_contain_text("done")
    assert axe_findings(page, axe_script) == [], "the detail"

    page.get_by_role("button", name="Rerun").click()
    expect(page.locator("#confirm")).to_be_visible()
    assert axe_findings(page, axe_script) == [], "the confirmation"
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()


def test_a_running_runs_logs_are_followed_and_cancel_asks_first(server: LiveServer, console: Console) -> None:
    launched = requests.post(
        f"{server.url}/api/jobs",
        json={"spec": "slow", "params": {"seconds": "60"}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert launched.status_code == 202, launched.text
    name = launched.json()["job_name"]
    page = console.open().sign_in(ALICE).page
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=30_000)
    row.get_by_role("button", name=name).click()
    expect(page.locator("#detail-logs")).to_contain_text("started")
    expect(page.locator("#logs-state")).to_have_text("following as it is written")
    assert any("follow=1" in url for url, _ in console.requests)

    cancel = page.get_by_role("button", name="Cancel run")
    cancel.click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_have_text(f"Cancel run {name}?")
    expect(page.locator("#confirm-no")).to_be_focused()  # the safe choice is the default
    page.click("#confirm-no")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(cancel).to_be_focused()
    assert not [url for url, _ in console.requests if url.endswith(f"/api/jobs/{name}")], "kept: nothing was sent"

    cancel.click()
    page.click("#confirm-yes")
    expect(page.locator("#detail-message")).to_have_text("Cancelled.")
    expect(row).to_have_attribute("data-status", "Cancelled", timeout=30_000)
    expect(page.locator("#detail-facts")).to_contain_text("Cancelled")
    expect(page.get_by_role("button", name="Rerun")).to_be_visible()
    expect(page.locator("#logs-state")).to_have_text("the task ended", timeout=30_000)

    cancel_again = requests.delete(
        f"{server.url}/api/jobs/{name}", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10
    )
    assert cancel_again.status_code == 409
    page.click("#tab-audit")
    expect(page.locator("#audit-body tr").nth(1)).to_contain_text("alice")
    expect(page.locator("#audit-body tr").nth(1)).to_contain_text("cancel")


def test_an_action_refused_shows_the_servers_error(server: LiveServer, console: Console) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    launched = requests.post(f"{server.url}/api/jobs", json={"spec": "slow"}, headers=admin, timeout=10)
    name = launched.json()["job_name"]
    page = console.open().sign_in(ALICE).page
    row = console.row(name)
    row.get_by_role("button", name=name).click()
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#confirm")).to_be_visible()
    # another operator cancels it while this one is asked to confirm
    assert requests.delete(f"{server.url}/api/jobs/{name}", headers=admin, timeout=10).status_code == 200
    expect(row).to_have_attribute("data-status", "Cancelled", timeout=30_000)
    page.click("#confirm-yes")
    expect(page.locator("#detail-error")).to_have_text(f"{name} already finished: Cancelled (409 conflict)")


def test_the_console_fits_a_narrow_screen(server: LiveServer, new_context: Callable[..., BrowserContext]) -> None:
    console = Console(new_context(viewport={"width": 360, "height": 740}).new_page(), server.url)
    page = console.open().sign_in(ALICE).page
    name = donate(server)["job_name"]
    console.row(name).get_by_role("button", name=name).click()
    expect(page.locator("#detail-manifest")).to_contain_text("TASK_PARAMS")
    # wide parts (the table, the manifest) scroll inside their own boxes; the page itself does not
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    expect(page.get_by_role("button", name="Close")).to_be_in_viewport()
