"""jobpulse's own errors.

Executors and run stores wrap their clients' exceptions (Kubernetes
``ApiException``, Redis, SQLite, HTTP) in these, ``raise ... from error``;
the API maps each to the one JSON error shape in one place
(``webapp.api.errors``).
"""

from __future__ import annotations


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
