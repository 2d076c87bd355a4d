"""Dual mode's comparison of a legacy run and a Kubernetes run of the same pipeline run.

Pure: given both terminal statuses, say whether they agree (same outcome) and
how long each took; given many comparisons, the totals of the migration report.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from webapp.status import JobStatus, format_time, parse_time, utcnow


@dataclasses.dataclass(frozen=True)
class Comparison:
    pipeline_run_id: str
    legacy_job: str
    k8s_job: str
    legacy_status: str
    k8s_status: str
    legacy_reason: str | None
    k8s_reason: str | None
    legacy_seconds: float | None
    k8s_seconds: float | None
    compared_at: datetime

    @property
    def matched(self) -> bool:
        return self.legacy_status == self.k8s_status

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["compared_at"] = format_time(self.compared_at)
        body["matched"] = self.matched
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Comparison:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in body.items() if k in fields}
        values["compared_at"] = parse_time(body["compared_at"])
        return cls(**values)


def duration(status: JobStatus) -> float | None:
    start = status.started_at or status.created_at
    if status.finished_at is None:
        return None
    return round((status.finished_at - start).total_seconds(), 3)


def compare(first: JobStatus, second: JobStatus) -> Comparison:
    """Compare the two finished runs of one pipeline run, whichever is the legacy one."""
    legacy, k8s = (first, second) if first.mode == "legacy" else (second, first)
    return Comparison(
        pipeline_run_id=legacy.pipeline_run_id,
        legacy_job=legacy.job_name,
        k8s_job=k8s.job_name,
        legacy_status=legacy.status.value,
        k8s_status=k8s.status.value,
        legacy_reason=legacy.reason,
        k8s_reason=k8s.reason,
        legacy_seconds=duration(legacy),
        k8s_seconds=duration(k8s),
        compared_at=utcnow(),
    )


def shadow_launch_failed(primary: JobStatus, *, shadow_mode: str, shadow_job: str, error: str) -> Comparison:
    """A shadow that could not even start: recorded as a mismatch with its reason."""
    missing = {"status": "NotLaunched", "reason": error, "seconds": None}
    own = {"status": primary.status.value, "reason": primary.reason, "seconds": None}
    legacy, k8s = (own, missing) if shadow_mode == "k8s" else (missing, own)
    return Comparison(
        pipeline_run_id=primary.pipeline_run_id,
        legacy_job=primary.job_name if shadow_mode == "k8s" else shadow_job,
        k8s_job=shadow_job if shadow_mode == "k8s" else primary.job_name,
        legacy_status=str(legacy["status"]),
        k8s_status=str(k8s["status"]),
        legacy_reason=legacy["reason"],
        k8s_reason=k8s["reason"],
        legacy_seconds=None,
        k8s_seconds=None,
        compared_at=utcnow(),
    )


def migration_report(comparisons: Iterable[Comparison], *, recent_mismatches: int = 20) -> dict[str, Any]:
    """Totals and the recent mismatches, newest first (``comparisons`` may come in any order)."""
    items = sorted(comparisons, key=lambda c: c.compared_at, reverse=True)
    legacy_times = [c.legacy_seconds for c in items if c.legacy_seconds is not None]
    k8s_times = [c.k8s_seconds for c in items if c.k8s_seconds is not None]
    mismatches = [c for c in items if not c.matched]
    return {
        "totals": {
            "runs": len(items),
            "both_succeeded": sum(1 for c in items if c.matched and c.legacy_status == "Succeeded"),
            "both_failed": sum(1 for c in items if c.matched and c.legacy_status == "Failed"),
            "matches": len(items) - len(mismatches),
            "mismatches": len(mismatches),
            "median_seconds": {
                "legacy": statistics.median(legacy_times) if legacy_times else None,
                "k8s": statistics.median(k8s_times) if k8s_times else None,
            },
        },
        "recent_mismatches": [c.to_dict() for c in mismatches[:recent_mismatches]],
    }
