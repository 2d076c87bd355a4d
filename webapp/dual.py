"""Dual mode's referee: when both runs of a pipeline run have finished, compare and record them.

A hub listener (:meth:`DualComparator.on_status`). Each run's status names the other (``shadow_job_name``); the
second of the pair to finish triggers the comparison. The run store records
one comparison per pipeline run, so with several instances only the one that
records it counts it in the metrics.
"""

from __future__ import annotations

import logging

from webapp import metrics
from webapp.comparison import Comparison, compare
from webapp.door import StatusDoor
from webapp.runstore import Comparisons
from webapp.status import JobStatus, finished_by

logger = logging.getLogger(__name__)


class DualComparator:
    def __init__(self, *, door: StatusDoor) -> None:
        self._door = door

    def on_status(self, status: JobStatus, previous: JobStatus | None) -> None:
        if not finished_by(status, previous) or not status.shadow_job_name:
            return
        other = self._door.current(status.shadow_job_name)
        if other is None or not other.terminal:
            return
        record(self._door.store, compare(status, other))


def record(store: Comparisons, comparison: Comparison) -> None:
    """Record a comparison once; count and log it if this process recorded it."""
    if not store.record_comparison(comparison):
        return
    result = "match" if comparison.matched else "mismatch"
    metrics.DUAL_COMPARISONS.labels(result=result).inc()
    logger.log(
        logging.INFO if comparison.matched else logging.WARNING,
        "dual.compared",
        extra={
            "pipeline_run_id": comparison.pipeline_run_id,
            "result": result,
            "legacy": comparison.legacy_status,
            "k8s": comparison.k8s_status,
        },
    )
