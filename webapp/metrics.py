"""Prometheus metrics: what operators scrape from ``/metrics``.

Labels never carry job names or anything about donors: only modes, results,
statuses and transports, so cardinality stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from webapp.status import JobStatus

LAUNCHES = Counter(
    "jobpulse_launches_total",
    "Launch requests by execution mode and result (launched, repeat, refused, unavailable).",
    ["mode", "result"],
)
LAUNCH_SECONDS = Histogram(
    "jobpulse_launch_duration_seconds",
    "Time from an accepted launch request to the executor having started the run.",
    ["mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
)
TRANSITIONS = Counter(
    "jobpulse_status_transitions_total",
    "Status changes seen by this process, by mode and new status.",
    ["mode", "status"],
)
OPEN_STREAMS = Gauge(
    "jobpulse_open_streams",
    "Status streams open now, by transport.",
    ["transport"],
)
HANDED_OVER_STREAMS = Gauge(
    "jobpulse_handed_over_streams",
    "Open streams running outside the server's request (the gevent worker's hand-over, webapp/api/handover.py).",
)
STREAM_MESSAGES = Counter(
    "jobpulse_stream_messages_total",
    "Status messages written to clients, by transport.",
    ["transport"],
)
WATCH_RESTARTS = Counter(
    "jobpulse_watch_restarts_total",
    "Times the Kubernetes Job watch had to be reopened (source k8s), by reason (gone, silence, error).",
    ["source", "reason"],
)
REDIS_RECONNECTS = Counter(
    "jobpulse_redis_reconnects_total",
    "Times the Redis status channel had to subscribe again, by reason (error, silence).",
    ["reason"],
)
LEGACY_POLL_FAILURES = Counter(
    "jobpulse_legacy_poll_failures_total",
    "Polls of the legacy task-runner service that got no usable answer, by kind "
    "(timeout, unreachable, server_error, bad_answer).",
    ["reason"],
)
PROPAGATION_SECONDS = Histogram(
    "jobpulse_status_propagation_seconds",
    "Delay from a status being observed by this process to its message being written to a client.",
    ["transport"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FAN_OUT_SECONDS = Histogram(
    "jobpulse_fan_out_seconds",
    "Time one status change took to be offered to every stream following it in this process "
    "(from the first stream's write to the last's; changes no stream follows are not counted).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
DUAL_COMPARISONS = Counter(
    "jobpulse_dual_comparisons_total",
    "Dual-mode pairs compared once both runs finished, by result (match, mismatch).",
    ["result"],
)
LOG_FOLLOWS_OPEN = Gauge(
    "jobpulse_log_follows_open",
    "Follows of a run's output open to its executor now: one per followed run, shared by all its viewers.",
)


def observe_each(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(amount)`` for each of ``amounts`` (prometheus_client has no batch observe)."""
    for amount in amounts:
        histogram.observe(amount)


class StreamDeliveries:
    """Counts the messages written to one transport's clients, with their delays, many at once.

    Called with ``(status, when written)`` pairs (``time.time()``), e.g. a
    whole fan-out's (:func:`webapp.hub.tally_after_fan_out`): one
    ``jobpulse_stream_messages_total`` increment by their number and the
    ``jobpulse_status_propagation_seconds`` observations, one each.
    """

    __slots__ = ("_messages", "_propagation")

    def __init__(self, transport: str) -> None:
        self._messages = STREAM_MESSAGES.labels(transport=transport)
        self._propagation = PROPAGATION_SECONDS.labels(transport=transport)

    def __call__(self, written: Sequence[tuple[JobStatus, float]]) -> None:
        if not written:
            return
        self._messages.inc(len(written))
        delays = []
        last: JobStatus | None = None
        observed = 0.0
        for status, written_at in written:
            if status is not last:  # a fan-out's are all one status: its timestamp once
                last, observed = status, status.updated_at.timestamp()
            delays.append(max(0.0, written_at - observed))
        observe_each(self._propagation, delays)
