"""Completion webhooks: one signed POST of the status object for every finished run.

Every terminal status goes into the run store's outbox once (however many
instances see the Job finish); a sender loop claims due deliveries under a
lease, so exactly one instance sends each, and retries with backoff until the
receiver answers 2xx. The outbox is persistent, so a delivery survives a
restart: at least once. The body is signed with HMAC-SHA256 over the exact
bytes sent (``X-Jobpulse-Signature: sha256=<hex>``). A failed attempt's error is
stored (and shown to operators) without the receiver's URL, which may hold a
secret; the log line has it whole.

A finish the outbox cannot take (disk full, Redis down) is not lost: it waits
in a backlog, as refused status saves do, and the sender's loop puts it in
the outbox on each pass until the store takes it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import threading

import requests

from webapp.backoff import exponential_delay
from webapp.errors import RunStoreUnavailable
from webapp.identity import process_owner
from webapp.runstore import PendingWebhook, WebhookOutbox
from webapp.runstore.backlog import StatusBacklog
from webapp.status import JobStatus, finished_by

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Jobpulse-Signature"
LEASE_SECONDS = 60.0
"""How long a claimed delivery is this sender's: ample for one attempt (5 s to connect, 10 s to answer)."""
BATCH = 20
"""Deliveries sent in one pass of the sender's loop, at most."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_FAILURES: tuple[tuple[type[requests.RequestException], str], ...] = (
    (requests.exceptions.SSLError, "the TLS handshake failed"),
    (requests.exceptions.ProxyError, "the proxy failed"),
    (requests.exceptions.ConnectTimeout, "timed out connecting"),
    (requests.exceptions.ReadTimeout, "timed out waiting for the answer"),
    (requests.exceptions.Timeout, "timed out"),
    (requests.exceptions.ConnectionError, "the connection failed"),
    (requests.exceptions.TooManyRedirects, "too many redirects"),
)
"""What went wrong, by the kind of error (the first that matches: the more specific first)."""

_CAUSE_DEPTH = 16
"""How far down an error's chain :func:`delivery_failure` looks for the cause it names."""


def delivery_failure(exc: requests.RequestException) -> str:
    """What a failed delivery stores and the console shows: the kind of failure, never where it was sent.

    requests' messages name the receiver's host, port, path and query (``Max retries exceeded with
    url: /path?query``), and a path or query may hold a secret; the whole message goes to the log
    only. This says the error's type, what it means, and the system's reason at the bottom of its
    chain (an ``OSError``'s text for its errno, an OpenSSL reason code), which name no address:
    ``ConnectionError: the connection failed (Connection refused)``.
    """
    kind = next((text for cls, text in _FAILURES if isinstance(exc, cls)), "the request failed")
    cause = _system_reason(exc)
    return f"{type(exc).__name__}: {kind}" + (f" ({cause})" if cause else "")


def _system_reason(exc: BaseException) -> str | None:
    """The OpenSSL reason code or errno text of the error at the bottom of ``exc``'s chain, if it is one."""
    root = exc
    for _ in range(_CAUSE_DEPTH):
        below = root.__cause__ or root.__context__
        if below is None:
            break
        root = below
    if isinstance(root, ssl.SSLError):
        reason = root.reason  # a code such as CERTIFICATE_VERIFY_FAILED: its message may name the host
        return reason if isinstance(reason, str) else None
    if isinstance(root, OSError) and isinstance(root.strerror, str):
        return root.strerror[:100]  # set from an errno (or getaddrinfo's code): "Connection refused"
    return None


class WebhookSender:
    name = "webhooks"

    def __init__(
        self,
        *,
        store: WebhookOutbox,
        url: str,
        secret: str,
        session: requests.Session | None = None,
        poll_seconds: float = 5.0,
        max_attempts: int = 12,
        first_retry_seconds: float = 1.0,
        max_retry_seconds: float = 600.0,
    ) -> None:
        self._store = store
        self._url = url
        self._secret = secret
        self._session = session or requests.Session()
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self._first_retry = first_retry_seconds
        self._max_retry = max_retry_seconds
        self._owner = process_owner()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._unqueued = StatusBacklog()
        """Finishes the outbox refused (a storage fault), to put in it on the next pass."""

    def on_status(self, status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: a run that has just finished gets its webhook put in the outbox."""
        if not finished_by(status, previous):
            return
        try:
            self._enqueue(status)
        except RunStoreUnavailable as error:
            self._unqueued.keep(status)
            logger.warning("webhook.enqueue_failed", extra={"job_name": status.job_name, "error": error.message})

    def _enqueue(self, status: JobStatus) -> None:
        if self._store.enqueue_webhook(status.job_name, status.json):
            self._wake.set()

    def start(self) -> None:
        threading.Thread(target=self.run, name="webhook-sender", daemon=True).start()

    def stop(self) -> None:
        """Stop the loop; finishes still waiting for the outbox are tried once more, and named if refused again."""
        self._stopping.set()
        self._wake.set()
        try:
            self._unqueued.drain(self._enqueue)
        except RunStoreUnavailable as error:
            unqueued = self._unqueued.job_names()
            logger.error(
                "webhook.unqueued_at_exit",
                extra={"job_names": unqueued, "count": len(unqueued), "error": error.message},
            )

    def unready_reason(self) -> str | None:
        return None  # a receiver that is down delays deliveries; it does not make us unready

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._unqueued.drain(self._enqueue)
                self.deliver_due()
            except RunStoreUnavailable as error:  # the store says why (disk full, Redis down): no traceback
                logger.warning("webhook.loop_failed", extra={"error": error.message})
            except Exception:
                logger.exception("webhook.loop_failed")
            self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def deliver_due(self) -> int:
        """Send what is due now (at most :data:`BATCH` deliveries); return how many were delivered.

        Each delivery is claimed just before its attempt, so its lease covers that attempt alone: a batch
        claimed at once would outlast the lease of its last ones behind a slow receiver, and another
        instance would claim and send those while this one still meant to.
        """
        delivered = 0
        tried: set[str] = set()
        for _ in range(BATCH):
            claimed = self._store.claim_webhooks(owner=self._owner, lease_seconds=LEASE_SECONDS, limit=1)
            if not claimed or claimed[0].job_name in tried:  # one attempt per pass (it stays ours for the next)
                break
            tried.add(claimed[0].job_name)
            delivered += self._deliver(claimed[0])
        return delivered

    def _deliver(self, item: PendingWebhook) -> bool:
        body = item.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            "X-Jobpulse-Delivery": item.job_name,
            "User-Agent": "jobpulse-webhooks/1",
        }
        try:
            # Not streamed, the answer's body would be read whole, however long or slow; the status line
            # decides. A redirect is not followed: a 302 turns the POST into a GET of another page.
            with self._session.post(
                self._url, data=body, headers=headers, timeout=(5, 10), stream=True, allow_redirects=False
            ) as response:
                code = response.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"  # names the URL: for the log only
            shown = delivery_failure(exc)
        else:
            if 200 <= code < 300:
                self._store.complete_webhook(item.job_name)
                logger.info("webhook.delivered", extra={"job_name": item.job_name, "attempts": item.attempts + 1})
                return True
            error = shown = f"HTTP {code}"
        attempts = item.attempts + 1
        if attempts >= self._max_attempts:
            self._store.complete_webhook(item.job_name, gave_up=shown)
            logger.error("webhook.abandoned", extra={"job_name": item.job_name, "attempts": attempts, "error": error})
            return False
        delay = exponential_delay(item.attempts, initial=self._first_retry, maximum=self._max_retry, jitter=0.2)
        self._store.reschedule_webhook(item.job_name, delay=delay, error=shown)
        logger.warning(
            "webhook.retry", extra={"job_name": item.job_name, "attempts": attempts, "error": error, "delay": delay}
        )
        return False
