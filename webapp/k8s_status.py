"""From a Kubernetes Job object to the fields of our status: the mapping of DESIGN.md.

Pure: it takes the Job as the API server sends it (a JSON dict, camelCase)
and, when known, what else explains a wait: its pod's waiting reason, the
message of a ``FailedCreate`` event (its pods cannot be created). The same
inputs always give the same fields, on every instance. The rules:

- terminal only on the ``Complete`` / ``Failed`` conditions; since 1.31
  ``SuccessCriteriaMet`` / ``FailureTarget`` come first while pods are still
  terminating: stay ``Running`` and say so in ``reason``;
- ``Suspended=True`` → ``Suspended``, saying who suspended it when the Job's
  ``managedFields`` name the manager that set ``spec.suspend``;
- a ready pod → ``Running``; no pod ready yet → ``Pending``, saying why when
  known: the pod's waiting reason (``ImagePullBackOff``, ``Unschedulable``,
  ...; with the retry countdown the kubelet gives), or ``FailedCreate`` while
  no pod could be created, or ``BackOff`` between retries; a Pending that says
  why also says by when the Job's ``activeDeadlineSeconds`` ends it (a time,
  not a countdown: a countdown would make a new status every time it is read);
- a Job deleted before it finished → ``Cancelled`` with reason ``Deleted``;
- an Indexed Job (``completionMode: Indexed``) reports ``progress``: its
  succeeded indexes out of ``completions``; its failed indexes show in
  ``reason`` / ``message``.

The counters are pod counts from the Job's status, not outcomes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from webapp.jobspecs import PIPELINE_RUN_ID_LABEL, SPEC_LABEL
from webapp.status import JobStatus, Phase, Progress, parse_time

FAILED_CREATE = "FailedCreate"
"""The Job controller's event reason when it cannot create a pod (quota, PodSecurity, an admission webhook)."""
FAILED_INDEXES = "FailedIndexes"
"""Our reason for a running Indexed Job some of whose indexes failed (the Job controller's, once it fails)."""

_BACK_OFF = re.compile(r"\bback-off ((?:\d+h)?(?:\d+m)?(?:\d+(?:\.\d+)?s)?)", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_SECONDS_PER_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def _conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or () if c.get("status") == "True"}


def job_fields(
    job: dict[str, Any],
    *,
    deleted: bool = False,
    pod_waiting: tuple[str, str | None] | None = None,
    create_failure: str | None = None,
) -> dict[str, Any]:
    """The status fields a Job object says, ready for :meth:`JobStatus.evolve`.

    ``create_failure``: the message of the Job's latest ``FailedCreate`` event, if any.
    Only an Indexed Job has a ``progress`` field here (any other Job's progress is its task's to report).
    """
    fields = _phase_fields(job, deleted=deleted, pod_waiting=pod_waiting, create_failure=create_failure)
    if (progress := indexed_progress(job)) is not None:
        fields["progress"] = progress
    if failed_indexes := (job.get("status") or {}).get("failedIndexes"):
        if fields["reason"] is None:
            fields["reason"] = FAILED_INDEXES
            fields["message"] = f"indexes {failed_indexes} failed; the others go on"
        else:
            fields["message"] = _joined(fields["message"], f"failed indexes: {failed_indexes}")
    waits_for_a_reason = fields["status"] == Phase.PENDING and fields["reason"] is not None
    if waits_for_a_reason and (left := deadline_left(job)) is not None:
        fields["message"] = _joined(fields["message"], left)
    return fields


def _phase_fields(
    job: dict[str, Any],
    *,
    deleted: bool,
    pod_waiting: tuple[str, str | None] | None,
    create_failure: str | None,
) -> dict[str, Any]:
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
        manager = suspended_by(job)
        fields.update(
            status=Phase.SUSPENDED,
            reason=condition.get("reason"),
            message=f"suspended by {manager}" if manager else condition.get("message"),
        )
        return fields
    if int(status.get("ready") or 0) > 0:
        fields["status"] = Phase.RUNNING
        return fields
    fields["status"] = Phase.PENDING
    if pod_waiting is not None and fields["active"]:
        fields["reason"], fields["message"] = pod_waiting
    elif create_failure is not None and not fields["active"]:
        fields["reason"], fields["message"] = FAILED_CREATE, create_failure
    elif fields["failed"] and not fields["active"]:
        fields["reason"] = "BackOff"
        fields["message"] = f"{fields['failed']} pod(s) failed; the Job controller will retry"
    return fields


def _joined(message: str | None, more: str) -> str:
    return f"{message}; {more}" if message else more


def indexed_progress(job: dict[str, Any]) -> Progress | None:
    """An Indexed Job's progress: its succeeded indexes of ``completions``; ``None`` for any other Job.

    ``at`` is left unset (the translator knows no clock): the watcher stamps it.
    """
    spec = job.get("spec") or {}
    total = spec.get("completions")
    if spec.get("completionMode") != "Indexed" or not isinstance(total, int) or total < 1:
        return None
    status = job.get("status") or {}
    completed = status.get("completedIndexes")
    done = count_indexes(completed) if completed else int(status.get("succeeded") or 0)
    text = f"{done} of {total} indexes done"
    if failed := status.get("failedIndexes"):
        text += f", {count_indexes(failed)} failed"
    return Progress(done=min(done, total), total=total, text=text)


def count_indexes(ranges: str) -> int:
    """How many indexes an interval list names, as the Job status writes it: ``"0-2,5"`` → 4."""
    count = 0
    for part in ranges.split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            count += int(last) - int(first) + 1 if last.isdigit() else 1
    return count


def suspended_by(job: dict[str, Any]) -> str | None:
    """The field manager that last set ``spec.suspend`` (e.g. ``kubectl-patch``), from the Job's ``managedFields``."""
    owners = [
        entry
        for entry in (job.get("metadata") or {}).get("managedFields") or ()
        if "f:suspend" in (((entry.get("fieldsV1") or {}).get("f:spec")) or {}) and entry.get("manager")
    ]
    if not owners:
        return None
    latest = max(owners, key=lambda entry: str(entry.get("time") or ""))
    return str(latest["manager"])


def deadline_left(job: dict[str, Any]) -> str | None:
    """By when ``activeDeadlineSeconds`` (counted from ``status.startTime``) ends the Job, in words."""
    seconds = (job.get("spec") or {}).get("activeDeadlineSeconds")
    start = parse_time((job.get("status") or {}).get("startTime"))
    if not isinstance(seconds, int) or start is None:
        return None
    deadline = start + timedelta(seconds=seconds)
    return f"it must finish by {deadline.strftime('%H:%M:%S')} UTC ({_about(seconds)} after it started)"


def _about(seconds: float) -> str:
    if seconds < 120:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def retry_countdown(message: str | None) -> str | None:
    """The kubelet's retry delay in a waiting message (``"back-off 40s restarting failed container=…"``), in words."""
    match = _BACK_OFF.search(message or "")
    if match is None or not match.group(1):
        return None
    seconds = sum(float(value) * _SECONDS_PER_UNIT[unit] for value, unit in _DURATION_PART.findall(match.group(1)))
    return f"retrying in about {_about(seconds)}"


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
    """Why a pod is not running yet, as (reason, message): a container's waiting reason, or the scheduler's.

    When the kubelet says when it retries (``CrashLoopBackOff``, ``ImagePullBackOff``: "back-off 40s ..."),
    the message starts with that in plain words: "retrying in about 40 s (back-off 40s ...)".
    """
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
            message = waiting.get("message")
            if countdown := retry_countdown(message):
                message = f"{countdown} ({message})"
            return str(waiting["reason"]), message
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), condition.get("message")
    return None


def failed_create(event: dict[str, Any]) -> tuple[str, str] | None:
    """(Job name, message) of a core/v1 Event saying a Job's pods cannot be created; ``None`` for any other Event."""
    involved = event.get("involvedObject") or {}
    if event.get("reason") != FAILED_CREATE or involved.get("kind") != "Job" or not involved.get("name"):
        return None
    return str(involved["name"]), str(event.get("message") or "the Job controller cannot create its pods")
