"""From a Kubernetes Job object to the fields of our status: the mapping of DESIGN.md.

Pure: it takes the Job as the API server sends it (a JSON dict, camelCase)
and, when known, the waiting reason of its pod. The rules:

- terminal only on the ``Complete`` / ``Failed`` conditions; since 1.31
  ``SuccessCriteriaMet`` / ``FailureTarget`` come first while pods are still
  terminating: stay ``Running`` and say so in ``reason``;
- ``Suspended=True`` → ``Suspended``;
- a ready pod → ``Running``; no pod ready yet → ``Pending`` (with the pod's
  waiting reason, e.g. ``ImagePullBackOff`` or ``Unschedulable``, if any);
- a Job deleted before it finished → ``Cancelled`` with reason ``Deleted``.

The counters are pod counts from the Job's status, not outcomes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from webapp.jobspecs import PIPELINE_RUN_ID_LABEL, SPEC_LABEL
from webapp.status import JobStatus, Phase, parse_time


def _conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or () if c.get("status") == "True"}


def job_fields(
    job: dict[str, Any], *, deleted: bool = False, pod_waiting: tuple[str, str | None] | None = None
) -> dict[str, Any]:
    """The status fields a Job object says, ready for :meth:`JobStatus.evolve`."""
    status = job.get("status") or {}
    conditions = _conditions(job)
    fields: dict[str, Any] = {
        "active": int(status.get("active") or 0),
        "succeeded": int(status.get("succeeded") or 0),
        "failed": int(status.get("failed") or 0),
        "reason": None,
        "message": None,
    }
    if start := parse_time(status.get("startTime")):
        fields["started_at"] = start

    def finished(phase: Phase, condition: dict[str, Any]) -> dict[str, Any]:
        moment: datetime | None = parse_time(status.get("completionTime")) or parse_time(
            condition.get("lastTransitionTime")
        )
        fields.update(status=phase, reason=condition.get("reason"), message=condition.get("message"))
        if moment is not None:
            fields["finished_at"] = moment
        return fields

    if "Complete" in conditions:
        return finished(Phase.SUCCEEDED, conditions["Complete"])
    if "Failed" in conditions:
        return finished(Phase.FAILED, conditions["Failed"])
    if deleted or (job.get("metadata") or {}).get("deletionTimestamp"):
        fields.update(status=Phase.CANCELLED, reason="Deleted", message="the Job was deleted before it finished")
        return fields
    for interim in ("FailureTarget", "SuccessCriteriaMet"):
        if interim in conditions:
            condition = conditions[interim]
            fields.update(
                status=Phase.RUNNING,
                reason=condition.get("reason") or interim,
                message=condition.get("message") or f"{interim}: waiting for pods to terminate",
            )
            return fields
    if "Suspended" in conditions:
        condition = conditions["Suspended"]
        fields.update(status=Phase.SUSPENDED, reason=condition.get("reason"), message=condition.get("message"))
        return fields
    if int(status.get("ready") or 0) > 0:
        fields["status"] = Phase.RUNNING
        return fields
    fields["status"] = Phase.PENDING
    if pod_waiting is not None and fields["active"]:
        fields["reason"], fields["message"] = pod_waiting
    elif fields["failed"] and not fields["active"]:
        fields["reason"] = "BackOff"
        fields["message"] = f"{fields['failed']} pod(s) failed; the Job controller will retry"
    return fields


def new_status_for(job: dict[str, Any]) -> JobStatus:
    """A first status for a managed Job this process has no record of (launched elsewhere)."""
    metadata = job.get("metadata") or {}
    labels = metadata.get("labels") or {}
    created = parse_time(metadata.get("creationTimestamp"))
    return JobStatus.new(
        job_name=metadata["name"],
        mode="k8s",
        spec=labels.get(SPEC_LABEL, "unknown"),
        pipeline_run_id=labels.get(PIPELINE_RUN_ID_LABEL, "unknown"),
        status=Phase.QUEUED,
        at=created,
    )


def pod_waiting(pod: dict[str, Any]) -> tuple[str, str | None] | None:
    """Why a pod is not running yet, as (reason, message): a container's waiting reason, or the scheduler's."""
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
            return str(waiting["reason"]), waiting.get("message")
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), condition.get("message")
    return None
