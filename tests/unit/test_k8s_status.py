from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from webapp.k8s_status import (
    count_indexes,
    deadline_left,
    failed_create,
    indexed_progress,
    job_fields,
    new_status_for,
    pod_waiting,
    retry_countdown,
    suspended_by,
)
from webapp.status import Phase, Progress


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


# -- Indexed Jobs: progress from the Job's own status ----------------------------------


def indexed(status: dict[str, Any], completions: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": "task-runner-x-00000000"},
        "spec": {"completionMode": "Indexed", "completions": completions, "parallelism": 2},
        "status": status,
    }


@pytest.mark.parametrize(
    ("ranges", "count"),
    [("", 0), ("0", 1), ("0-2", 3), ("0-2,5", 4), ("1,3,5-7", 5), ("0-99999", 100000)],
)
def test_count_indexes(ranges: str, count: int) -> None:
    assert count_indexes(ranges) == count


@pytest.mark.parametrize(
    ("status", "progress"),
    [
        ({}, Progress(done=0, total=8, text="0 of 8 indexes done")),
        ({"active": 2, "succeeded": 3}, Progress(done=3, total=8, text="3 of 8 indexes done")),
        ({"succeeded": 4, "completedIndexes": "0-2,5"}, Progress(done=4, total=8, text="4 of 8 indexes done")),
        (
            {"succeeded": 3, "failed": 1, "completedIndexes": "0-2", "failedIndexes": "4"},
            Progress(done=3, total=8, text="3 of 8 indexes done, 1 failed"),
        ),
        ({"completedIndexes": "0-7", "succeeded": 8}, Progress(done=8, total=8, text="8 of 8 indexes done")),
    ],
)
def test_an_indexed_job_reports_its_succeeded_indexes_as_progress(status: dict[str, Any], progress: Progress) -> None:
    assert indexed_progress(indexed(status)) == progress
    assert job_fields(indexed(status))["progress"] == progress


@pytest.mark.parametrize(
    "spec",
    [{}, {"completions": 3}, {"completionMode": "NonIndexed", "completions": 3}, {"completionMode": "Indexed"}],
)
def test_any_other_job_says_nothing_of_progress(spec: dict[str, Any]) -> None:
    other = {"metadata": {"name": "task-runner-x-00000000"}, "spec": spec, "status": {"succeeded": 1}}
    assert indexed_progress(other) is None
    assert "progress" not in job_fields(other)  # the task's own progress stays as it reported it


def test_failed_indexes_show_while_the_others_go_on_and_in_the_final_status() -> None:
    running = job_fields(indexed({"active": 2, "ready": 2, "failed": 2, "failedIndexes": "1,4"}))
    assert (running["status"], running["reason"], running["message"]) == (
        Phase.RUNNING,
        "FailedIndexes",
        "indexes 1,4 failed; the others go on",
    )
    final = job_fields(
        indexed(
            {
                "failed": 2,
                "succeeded": 6,
                "failedIndexes": "1,4",
                "completedIndexes": "0,2-3,5-7",
                "conditions": [cond("Failed", "FailedIndexes", message="Job has failed indexes")],
            }
        )
    )
    assert (final["status"], final["reason"], final["message"]) == (
        Phase.FAILED,
        "FailedIndexes",
        "Job has failed indexes; failed indexes: 1,4",
    )
    assert final["progress"] == Progress(done=6, total=8, text="6 of 8 indexes done, 2 failed")


# -- every wait explained ----------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 1, 0, tzinfo=UTC)


def test_a_failed_create_explains_a_pending_job_without_pods() -> None:
    message = 'Error creating: pods "x" is forbidden: exceeded quota: no-pods'
    fields = job_fields(job({}), create_failure=message)
    assert (fields["status"], fields["reason"], fields["message"]) == (Phase.PENDING, "FailedCreate", message)


def test_an_active_pod_outweighs_a_failed_create() -> None:
    assert job_fields(job({"active": 1}), create_failure="quota")["reason"] is None
    assert job_fields(job({"active": 1, "ready": 1}), create_failure="quota")["status"] == Phase.RUNNING
    waiting = job_fields(job({"active": 1}), create_failure="quota", pod_waiting=("Unschedulable", "0/1 nodes"))
    assert waiting["reason"] == "Unschedulable"


def test_a_failed_create_outweighs_the_backoff_after_a_failed_pod() -> None:
    assert job_fields(job({"failed": 1}), create_failure="quota")["reason"] == "FailedCreate"
    assert job_fields(job({"failed": 1}))["reason"] == "BackOff"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"reason": "FailedCreate", "involvedObject": {"kind": "Job", "name": "j"}, "message": "forbidden"},
            ("j", "forbidden"),
        ),
        ({"reason": "FailedCreate", "involvedObject": {"kind": "ReplicaSet", "name": "r"}, "message": "x"}, None),
        ({"reason": "SuccessfulCreate", "involvedObject": {"kind": "Job", "name": "j"}, "message": "x"}, None),
        ({"reason": "FailedCreate", "involvedObject": {"kind": "Job"}}, None),
    ],
)
def test_failed_create_reads_the_jobs_name_and_message_from_an_event(
    event: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    assert failed_create(event) == expected


@pytest.mark.parametrize(
    ("message", "countdown"),
    [
        ("back-off 40s restarting failed container=task pod=p_ns(uid)", "retrying in about 40 s"),
        ("back-off 5m0s restarting failed container=task pod=p_ns(uid)", "retrying in about 5 min"),
        ("back-off 1m20s restarting failed container=task", "retrying in about 80 s"),
        ('Back-off 10s pulling image "nope:1"', "retrying in about 10 s"),
        ('Back-off pulling image "nope:1"', None),
        (None, None),
    ],
)
def test_retry_countdown(message: str | None, countdown: str | None) -> None:
    assert retry_countdown(message) == countdown


def test_a_waiting_pod_says_when_it_is_retried_in_plain_words() -> None:
    crash = "back-off 40s restarting failed container=task pod=p_ns(uid)"
    pod = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff", "message": crash}}}]}}
    assert pod_waiting(pod) == ("CrashLoopBackOff", f"retrying in about 40 s ({crash})")


def with_deadline(status: dict[str, Any], seconds: int = 120) -> dict[str, Any]:
    return {
        "metadata": {"name": "task-runner-x-00000000"},
        "spec": {"activeDeadlineSeconds": seconds},
        "status": status,
    }


@pytest.mark.parametrize(
    ("seconds", "by"),
    [
        (120, "it must finish by 12:02:00 UTC (2 min after it started)"),
        (600, "it must finish by 12:10:00 UTC (10 min after it started)"),
    ],
)
def test_the_deadline_is_a_time_counted_from_the_jobs_start(seconds: int, by: str) -> None:
    assert deadline_left(with_deadline({"startTime": "2026-11-28T12:00:00Z"}, seconds)) == by


def test_no_deadline_or_no_start_says_nothing() -> None:
    assert deadline_left(job({"startTime": "2026-11-28T12:00:00Z"})) is None
    assert deadline_left(with_deadline({})) is None


def test_a_pending_that_says_why_also_says_the_time_left() -> None:
    started = {"startTime": "2026-11-28T12:00:00Z"}
    waiting = job_fields(
        with_deadline({**started, "active": 1}), pod_waiting=("Unschedulable", "0/1 nodes are available")
    )
    assert waiting["message"] == "0/1 nodes are available; it must finish by 12:02:00 UTC (2 min after it started)"
    failing = job_fields(with_deadline(started), create_failure="exceeded quota")
    assert failing["message"] == "exceeded quota; it must finish by 12:02:00 UTC (2 min after it started)"
    # a plain Pending (pods being created) or Running says nothing of the deadline
    assert job_fields(with_deadline({**started, "active": 1}))["message"] is None
    assert job_fields(with_deadline({**started, "active": 1, "ready": 1}))["message"] is None


def managed(manager: str, time: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"manager": manager, "operation": "Update", "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields}


def test_a_suspended_job_says_who_suspended_it() -> None:
    suspended = {
        "metadata": {
            "name": "task-runner-x-00000000",
            "managedFields": [
                managed("jobpulse", "2026-11-28T12:00:00Z", {"f:spec": {"f:template": {}}}),
                managed("kube-controller-manager", "2026-11-28T12:00:02Z", {"f:status": {"f:active": {}}}),
                managed("kubectl-patch", "2026-11-28T12:00:05Z", {"f:spec": {"f:suspend": {}}}),
            ],
        },
        "spec": {"suspend": True},
        "status": {"conditions": [cond("Suspended", "JobSuspended", message="Job suspended")]},
    }
    assert suspended_by(suspended) == "kubectl-patch"
    fields = job_fields(suspended)
    assert (fields["status"], fields["reason"], fields["message"]) == (
        Phase.SUSPENDED,
        "JobSuspended",
        "suspended by kubectl-patch",
    )


def test_a_suspended_job_whose_manager_is_unknown_keeps_the_conditions_words() -> None:
    fields = job_fields(job({"conditions": [cond("Suspended", "JobSuspended", message="Job suspended")]}))
    assert (fields["status"], fields["message"]) == (Phase.SUSPENDED, "Job suspended")
