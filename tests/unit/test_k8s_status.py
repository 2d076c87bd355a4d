from __future__ import annotations

from typing import Any

import pytest

from webapp.k8s_status import job_fields, new_status_for, pod_waiting
from webapp.status import Phase


def job(status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "task-runner-x-00000000", **metadata}, "status": status or {}}


def cond(kind: str, reason: str | None = None, status: str = "True", message: str | None = None) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-28T12:00:05Z",
    }


@pytest.mark.parametrize(
    ("status", "phase", "reason"),
    [
        ({}, Phase.PENDING, None),
        ({"active": 1}, Phase.PENDING, None),
        ({"active": 1, "ready": 0}, Phase.PENDING, None),
        ({"active": 1, "ready": 1}, Phase.RUNNING, None),
        (
            {"succeeded": 1, "conditions": [cond("SuccessCriteriaMet", "CompletionsReached")]},
            Phase.RUNNING,
            "CompletionsReached",
        ),
        (
            {
                "succeeded": 1,
                "conditions": [
                    cond("SuccessCriteriaMet", "CompletionsReached"),
                    cond("Complete", "CompletionsReached"),
                ],
            },
            Phase.SUCCEEDED,
            "CompletionsReached",
        ),
        (
            {"failed": 1, "conditions": [cond("FailureTarget", "BackoffLimitExceeded")]},
            Phase.RUNNING,
            "BackoffLimitExceeded",
        ),
        (
            {
                "failed": 1,
                "conditions": [cond("FailureTarget", "BackoffLimitExceeded"), cond("Failed", "BackoffLimitExceeded")],
            },
            Phase.FAILED,
            "BackoffLimitExceeded",
        ),
        (
            {
                "conditions": [
                    cond("Failed", "DeadlineExceeded", message="Job was active longer than specified deadline")
                ]
            },
            Phase.FAILED,
            "DeadlineExceeded",
        ),
        ({"conditions": [cond("Suspended", "JobSuspended")]}, Phase.SUSPENDED, "JobSuspended"),
        (
            {"conditions": [cond("Suspended", "JobResumed", status="False")], "active": 1, "ready": 1},
            Phase.RUNNING,
            None,
        ),
        ({"failed": 1, "active": 0}, Phase.PENDING, "BackOff"),
        ({"conditions": [cond("Complete", status="False")], "active": 1}, Phase.PENDING, None),
    ],
)
def test_job_status_mapping(status: dict[str, Any], phase: Phase, reason: str | None) -> None:
    fields = job_fields(job(status))
    assert fields["status"] == phase
    assert fields["reason"] == reason


def test_counters_are_pod_counts() -> None:
    fields = job_fields(job({"active": 2, "succeeded": 3, "failed": 1, "ready": 1}))
    assert (fields["active"], fields["succeeded"], fields["failed"]) == (2, 3, 1)


def test_times_come_from_the_job() -> None:
    fields = job_fields(
        job(
            {
                "startTime": "2026-11-28T12:00:00Z",
                "completionTime": "2026-11-28T12:00:09Z",
                "conditions": [cond("Complete")],
            }
        )
    )
    assert fields["started_at"].isoformat() == "2026-11-28T12:00:00+00:00"
    assert fields["finished_at"].isoformat() == "2026-11-28T12:00:09+00:00"


@pytest.mark.parametrize(
    ("kwargs", "metadata"),
    [({"deleted": True}, {}), ({}, {"deletionTimestamp": "2026-11-28T12:00:00Z"})],
)
def test_a_job_deleted_before_it_finished_is_cancelled(kwargs: dict[str, Any], metadata: dict[str, Any]) -> None:
    fields = job_fields(job({"active": 1}, **metadata), **kwargs)
    assert (fields["status"], fields["reason"]) == (Phase.CANCELLED, "Deleted")


def test_a_finished_job_deleted_later_keeps_its_outcome() -> None:
    fields = job_fields(job({"succeeded": 1, "conditions": [cond("Complete")]}), deleted=True)
    assert fields["status"] == Phase.SUCCEEDED


def test_the_pods_waiting_reason_explains_pending() -> None:
    fields = job_fields(job({"active": 1}), pod_waiting=("ImagePullBackOff", "Back-off pulling image"))
    assert (fields["status"], fields["reason"], fields["message"]) == (
        Phase.PENDING,
        "ImagePullBackOff",
        "Back-off pulling image",
    )


@pytest.mark.parametrize(
    ("pod_status", "expected"),
    [
        ({}, None),
        (
            {
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
                ]
            },
            ("Unschedulable", "0/1 nodes"),
        ),
        ({"conditions": [{"type": "PodScheduled", "status": "True"}]}, None),
        ({"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}, None),
        (
            {"containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]},
            ("ErrImagePull", "not found"),
        ),
        (
            {"initContainerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
            ("CrashLoopBackOff", None),
        ),
    ],
)
def test_pod_waiting(pod_status: dict[str, Any], expected: tuple[str, str | None] | None) -> None:
    assert pod_waiting({"status": pod_status}) == expected


def test_a_managed_job_from_elsewhere_gets_a_first_status() -> None:
    status = new_status_for(
        job(
            labels={"jobpulse/spec": "quick", "jobpulse/pipeline-run-id": "p1"},
            creationTimestamp="2026-11-28T12:00:00Z",
        )
    )
    assert (status.mode, status.spec, status.pipeline_run_id, status.status) == ("k8s", "quick", "p1", Phase.QUEUED)
