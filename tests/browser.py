"""The real browser for every test that needs one: Debian's chromium driven by Playwright.

One browser for the whole run (a second ``sync_playwright`` in the same thread
cannot start while the first runs), offered from ``tests/conftest.py`` to the
e2e tests and to the console tests on the real control plane alike; a fresh
context (its own cookies and storage) per test. Every page is watched: an
uncaught script error or a Content Security Policy violation fails the test
that caused it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, sync_playwright

from tests.e2e.donation_page import RECORDER_JS

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 800}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; Playwright's own browser downloads are never used."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"chromium not found at {CHROMIUM}: install the Debian package 'chromium' (tests/system-deps.sh)")
    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary user-data dir, removed on close
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts (like fresh browser profiles); each page in them is watched for errors."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def watch(page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                problems.append(f"CSP violation on {page.url}: {message.text}")

        def on_page_error(error: Error) -> None:
            problems.append(f"uncaught error on {page.url}: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)

    def open_context(**options: Any) -> BrowserContext:
        settings: dict[str, Any] = {
            "viewport": VIEWPORT,
            "locale": "en-US",
            "timezone_id": "UTC",
            "reduced_motion": "reduce",
        }
        context = browser.new_context(**{**settings, **options})
        context.set_default_timeout(30_000)
        context.add_init_script(RECORDER_JS)
        context.on("page", watch)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()
