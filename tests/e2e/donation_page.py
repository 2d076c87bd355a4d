"""The donation page as a donor uses it, in Playwright terms: open, fill, donate, watch.

Every page opened through the fixtures carries ``RECORDER_JS``: it notes each
change of the transport (``body[data-transport]``, ``data-transport-state``),
of the shown status (``#status-panel[data-status]``) and of the progress bar,
so a test can tell afterwards what the donor saw on the way, not only where
the page ended.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

TERMINAL = ("Succeeded", "Failed", "Cancelled")
TRANSPORT_LABELS = {"ws": "WebSocket", "sse": "Server-Sent Events", "poll": "Polling"}

DONOR = {
    "amount": "25.00",
    "currency": "EUR",
    "donor_name": "Ada Lovelace",
    "donor_email": "ada@example.org",
    "message": "For the analytical engine fund.",
}

RECORDER_JS = """
(() => {
  const log = [];
  const progress = [];
  window.__e2e = { log, progress };
  const noteProgress = () => {
    const panel = document.getElementById('status-panel');
    const row = document.getElementById('job-progress-row');
    if (!panel || panel.hidden || !row) return;
    const bar = document.getElementById('job-progress');
    const entry = {
      status: panel.dataset.status || null,
      shown: !row.hidden && !row.classList.contains('is-reserved'),
      laidOut: !row.hidden,
      value: bar.hasAttribute('value') ? Number(bar.getAttribute('value')) : null,
      max: bar.hasAttribute('max') ? Number(bar.getAttribute('max')) : null,
      valuetext: bar.getAttribute('aria-valuetext'),
      text: document.getElementById('progress-text').textContent,
      timelineTop: Math.round(document.getElementById('timeline').getBoundingClientRect().top + window.scrollY),
    };
    const last = progress[progress.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(entry)) progress.push(entry);
  };
  const note = () => {
    const body = document.body;
    const panel = document.getElementById('status-panel');
    const entry = {
      at: Math.round(performance.now()),
      transport: body.dataset.transport || null,
      state: body.dataset.transportState || null,
      status: panel && !panel.hidden ? panel.dataset.status || null : null,
    };
    const last = log[log.length - 1];
    if (!last || last.transport !== entry.transport || last.state !== entry.state || last.status !== entry.status) {
      log.push(entry);
    }
  };
  const watch = () => {
    note();
    new MutationObserver(note).observe(document.body, {
      attributes: true,
      subtree: true,
      attributeFilter: ['data-transport', 'data-transport-state', 'data-status', 'hidden'],
    });
    new MutationObserver(noteProgress).observe(document.body, {
      attributes: true,
      characterData: true,
      childList: true,
      subtree: true,
      attributeFilter: ['data-status', 'hidden', 'class', 'value', 'max', 'aria-valuetext'],
    });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', watch);
  else watch();
})();
"""

_FINISHED_JS = f"""() => {{
  const panel = document.getElementById('status-panel');
  return Boolean(panel) && !panel.hidden && {list(TERMINAL)!r}.includes(panel.dataset.status);
}}"""


class DonationPage:
    """One browser tab on the donation page of the server at ``base_url``."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url

    def open(self, *, transport: str | None = None) -> DonationPage:
        query = f"?transport={transport}" if transport else ""
        self.page.goto(f"{self.base_url}/{query}")
        expect(self.page.locator("body")).to_have_attribute("data-transport-state", "idle")
        return self

    def fill(self, **fields: str) -> DonationPage:
        """Fill the form with ``DONOR`` overridden by ``fields``."""
        for name, value in {**DONOR, **fields}.items():
            if name == "currency":
                self.page.select_option("#currency", value)
            else:
                self.page.fill(f"#{name}", value)
        return self

    def donate(self) -> DonationPage:
        self.page.click("#donate")
        return self

    def wait_for_status(self, status: str, *, timeout: float = 60) -> None:
        expect(self.page.locator("#status-panel")).to_have_attribute("data-status", status, timeout=timeout * 1000)

    def wait_for_transport(self, kind: str, *, timeout: float = 30) -> None:
        """Wait until ``kind`` (ws, sse, poll) has delivered a status and is live."""
        body = self.page.locator("body")
        expect(body).to_have_attribute("data-transport", kind, timeout=timeout * 1000)
        expect(body).to_have_attribute("data-transport-state", "live", timeout=timeout * 1000)

    def wait_until_finished(self, *, timeout: float = 60) -> str:
        """Wait for a terminal status and for the transports to stop; return the status shown."""
        self.page.wait_for_function(_FINISHED_JS, timeout=timeout * 1000)
        expect(self.page.locator("body")).to_have_attribute("data-transport-state", "closed", timeout=10_000)
        return self.shown_status()

    def shown_status(self) -> str:
        return str(self.page.get_attribute("#status-panel", "data-status"))

    def timeline(self) -> list[str]:
        return [
            str(status)
            for status in self.page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.status)")
        ]

    def transport(self) -> str:
        return str(self.page.get_attribute("body", "data-transport"))

    def transport_text(self) -> str:
        return self.page.inner_text("#transport")

    def job_name(self) -> str:
        return self.page.inner_text("#job-name")

    def reason(self) -> str:
        """The raw reason and message, as support sees them (folded away under the donor's sentence)."""
        return str(self.page.text_content("#job-raw-reason") or "")

    def raw_reason(self) -> str | None:
        """Only the raw ``reason`` field, as ``#job-reason[data-reason]`` keeps it."""
        return self.page.get_attribute("#job-reason", "data-reason")

    def explanation(self) -> str:
        """The plain sentence the donor reads under "Details"."""
        return self.page.inner_text("#job-explanation")

    def elapsed(self) -> str:
        return self.page.inner_text("#job-elapsed")

    def record(self) -> list[dict[str, Any]]:
        """What RECORDER_JS noted: ``{at, transport, state, status}`` per change."""
        entries: list[dict[str, Any]] = self.page.evaluate("() => window.__e2e.log")
        return entries

    def progress_record(self) -> list[dict[str, Any]]:
        """What RECORDER_JS noted of the progress row, per change: ``{status, shown, laidOut, value, max,
        valuetext, text, timelineTop}`` (``timelineTop``: where the timeline starts, to catch a layout jump)."""
        entries: list[dict[str, Any]] = self.page.evaluate("() => window.__e2e.progress")
        return entries

    def transports_used(self) -> set[str]:
        """The transports that delivered at least one status (were ``live`` or ``closed`` with it)."""
        return {e["transport"] for e in self.record() if e["transport"] != "none" and e["state"] in ("live", "closed")}

    def statuses_seen(self) -> list[str]:
        """Each status the panel showed, in order, without repeats."""
        seen: list[str] = []
        for entry in self.record():
            if entry["status"] and (not seen or seen[-1] != entry["status"]):
                seen.append(entry["status"])
        return seen
