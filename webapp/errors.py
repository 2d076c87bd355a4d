"""jobpulse's own errors.

Executors and run stores wrap their clients' exceptions (Kubernetes
``ApiException``, Redis, SQLite, HTTP) in these, ``raise ... from error``;
the API maps each to the one JSON error shape in one place
(``webapp.api.errors``). Their messages are public (answers, ``/readyz``,
statuses): a failed connection is put in words by
:func:`describe_connection_error`, and the client's own message, which names
hosts, ports and URLs, goes only to the logs.
"""

from __future__ import annotations

import ssl


class JobpulseError(Exception):
    """Base class: ``code`` is the JSON ``error`` field, ``http_status`` the answer."""

    code = "internal_error"
    http_status = 500
    retry_after: int | None = None
    """Seconds for a ``Retry-After`` header, when trying again later may succeed."""

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class InvalidRequest(JobpulseError):
    code = "invalid_request"
    http_status = 400


class InvalidJobName(JobpulseError):
    code = "invalid_job_name"
    http_status = 400


class UnknownJobspec(JobpulseError):
    code = "unknown_spec"
    http_status = 400


class JobNotFound(JobpulseError):
    code = "not_found"
    http_status = 404


class Conflict(JobpulseError):
    code = "conflict"
    http_status = 409


class TooManyActiveJobs(JobpulseError):
    code = "too_many_active_jobs"
    http_status = 429
    retry_after = 5


class TooManyStreams(JobpulseError):
    """This client already holds ``MAX_STREAMS_PER_CLIENT`` open streams."""

    code = "too_many_streams"
    http_status = 429
    retry_after = 5


class StreamsFull(JobpulseError):
    """This process already holds ``MAX_STREAMS`` open streams; the rest of its connections stay free."""

    code = "streams_full"
    http_status = 503
    retry_after = 5


class ExecutorUnavailable(JobpulseError):
    """The executor could not be reached; nothing half-created remains."""

    code = "executor_unavailable"
    http_status = 503


class RunStoreUnavailable(JobpulseError):
    """The run store cannot read or write right now (Redis unreachable, SQLite's disk full or file damaged).

    Nothing half-done is claimed; try again shortly.
    """

    code = "store_unavailable"
    http_status = 503


class JobspecError(Exception):
    """A jobspec file is not a valid Job manifest; stops start-up with file and reason."""


def describe_connection_error(error: BaseException) -> str:
    """Why a connection failed, in words anyone may read: ``Connection refused``, ``timed out``, ...

    Never a host, port, URL or socket path. The clients' own messages name
    them (urllib3's ``HTTPSConnectionPool(host='10.0.0.5', port=6443): Max
    retries exceeded with url: /apis/...``, a certificate's "not valid for
    'runner.internal'"), so only the logs may carry those. What is trusted is
    the operating system's reason (``strerror`` of an ``OSError`` with an
    ``errno``), found anywhere in the chain of causes the clients build.
    """
    chain = _causes(error)
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in chain):
        return "TLS certificate verification failed"
    if any(isinstance(cause, ssl.SSLError) for cause in chain):
        return "TLS failed"
    if any(isinstance(cause, TimeoutError) for cause in chain):
        return "timed out"
    for cause in chain:
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.strerror:
            return str(cause.strerror)
    if any(isinstance(cause, ConnectionError) for cause in chain):
        return "connection closed"  # e.g. the peer hung up without an answer
    return "connection failed"


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and every exception behind it: causes, contexts, wrapped arguments, urllib3's ``reason``."""
    seen: list[BaseException] = []
    pending: list[object] = [error]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return seen
