"""The reflector's handler for our Jobs, without a control plane: listings, events, the vanished-Job diff, cancels.

A real door over a real SQLite store; only the one API read the diff makes
(is a Job missing from a listing really gone?) is a fake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webapp.door import StatusDoor
from webapp.executors.k8s_events import CreateFailureWatcher
from webapp.executors.k8s_watch import LAUNCH_GRACE, JobWatcher
from webapp.hub import StatusHub
from webapp.runstore import WAITING_FOR_CAPACITY
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, utcnow


class FakeBatch:
    """``read_namespaced_job``: the Jobs in ``existing`` are there, any other is a 404."""

    def __init__(self) -> None:
        self.existing: set[str] = set()
        self.reads: list[str] = []

    def read_namespaced_job(self, name: str, namespace: str, **options: Any) -> object:
        self.reads.append(name)
        if name not in self.existing:
            raise ApiException(status=404, reason="Not Found")
        return object()


@pytest.fixture
def door(tmp_path: Path) -> Iterator[StatusDoor]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield StatusDoor(hub=StatusHub(), store=store)
    store.close()


@pytest.fixture
def watcher(door: StatusDoor) -> Iterator[JobWatcher]:
    api = client.ApiClient()
    watcher = JobWatcher(door=door, api=api, namespace="ns")
    watcher._batch = FakeBatch()  # type: ignore[assignment]
    yield watcher
    api.close()


def run(door: StatusDoor, name: str, *, age: timedelta = timedelta(0), mode: str = "k8s") -> None:
    first = JobStatus.new(job_name=name, mode=mode, spec="quick", pipeline_run_id="watch", at=utcnow() - age)
    door.open(first, manifest={"kind": "Job"}, client=None)
    door.announce(first)


def job(name: str, version: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version, "creationTimestamp": "2026-12-01T10:00:00Z"},
        "status": status,
    }


def status_of(door: StatusDoor, name: str) -> JobStatus:
    current = door.current(name)
    assert current is not None
    return current


def test_a_listing_writes_each_job_and_cancels_the_runs_whose_jobs_vanished_unfinished(
    door: StatusDoor, watcher: JobWatcher
) -> None:
    settled = LAUNCH_GRACE + timedelta(seconds=60)
    run(door, "task-runner-w-0000000a", age=settled)  # listed
    run(door, "task-runner-w-0000000b", age=settled)  # not listed, and gone
    run(door, "task-runner-w-0000000c", age=settled)  # not listed, but there (created after the list)
    run(door, "task-runner-w-0000000d")  # not listed, but too young to tell
    batch: FakeBatch = watcher._batch  # type: ignore[assignment]
    batch.existing = {"task-runner-w-0000000c"}

    watcher.on_list([job("task-runner-w-0000000a", "10", active=1, ready=1)], requested_at=utcnow())

    assert status_of(door, "task-runner-w-0000000a").status == Phase.RUNNING
    gone = status_of(door, "task-runner-w-0000000b")
    assert (gone.status, gone.reason) == (Phase.CANCELLED, "Deleted")
    assert status_of(door, "task-runner-w-0000000c").status == Phase.QUEUED
    assert status_of(door, "task-runner-w-0000000d").status == Phase.QUEUED
    assert sorted(batch.reads) == ["task-runner-w-0000000b", "task-runner-w-0000000c"]  # the young one: no call


def test_a_run_admitted_from_the_line_just_now_is_not_cancelled_as_vanished(
    door: StatusDoor, watcher: JobWatcher
) -> None:
    """A run that waited for capacity long ago and was just admitted has its Job being created: not vanished.

    Admission takes it out of the line in the store before the Job is created (``Launcher.admit``); a
    listing in between must not call it ``Cancelled`` (``Deleted``): its Job would then run unseen.
    """
    name = "task-runner-w-0000000e"
    joined = JobStatus.new(
        job_name=name, mode="k8s", spec="quick", pipeline_run_id="watch", at=utcnow() - LAUNCH_GRACE * 2
    )
    joined = dataclasses.replace(joined, reason=WAITING_FOR_CAPACITY, queue_position=1)
    door.open(joined, manifest={"kind": "Job"}, client=None)
    door.announce(joined)
    door.change(name, durable=True, reason=None, message=None, queue_position=None)  # admitted: as Launcher.admit
    door.store.admit_run(name)

    watcher.on_list([], requested_at=utcnow())  # the Job is not created yet: a read now finds none

    assert (status_of(door, name).status, status_of(door, name).reason) == (Phase.QUEUED, None)


def test_events_move_a_run_on_and_a_deletion_before_the_end_is_a_cancel(door: StatusDoor, watcher: JobWatcher) -> None:
    run(door, "task-runner-w-0000000a")
    watcher.on_event("ADDED", job("task-runner-w-0000000a", "11", active=1))
    assert status_of(door, "task-runner-w-0000000a").status == Phase.PENDING
    watcher.on_event("MODIFIED", job("task-runner-w-0000000a", "12", active=1, ready=1))
    assert status_of(door, "task-runner-w-0000000a").status == Phase.RUNNING
    watcher.on_event("DELETED", job("task-runner-w-0000000a", "13", active=1, ready=1))
    deleted = status_of(door, "task-runner-w-0000000a")
    assert (deleted.status, deleted.reason, deleted.terminal) == (Phase.CANCELLED, "Deleted", True)


def test_a_deletion_the_app_expected_is_an_operators_cancel(door: StatusDoor, watcher: JobWatcher) -> None:
    run(door, "task-runner-w-0000000a")
    watcher.expect_cancel("task-runner-w-0000000a")
    watcher.on_event("DELETED", job("task-runner-w-0000000a", "11", active=1))
    cancelled = status_of(door, "task-runner-w-0000000a")
    assert (cancelled.status, cancelled.reason, cancelled.message) == (
        Phase.CANCELLED,
        "Cancelled",
        "cancelled by an operator",
    )


def test_a_job_no_record_names_starts_one_and_a_legacy_run_is_left_alone(door: StatusDoor, watcher: JobWatcher) -> None:
    watcher.on_event("ADDED", job("task-runner-w-0000000e", "11", active=1))
    assert status_of(door, "task-runner-w-0000000e").mode == "k8s"
    run(door, "task-runner-w-0000000f", mode="legacy")
    before = status_of(door, "task-runner-w-0000000f")
    watcher.on_event("MODIFIED", job("task-runner-w-0000000f", "12", active=1, ready=1))
    assert status_of(door, "task-runner-w-0000000f") == before


def test_a_job_waiting_with_an_active_pod_is_probed(door: StatusDoor, watcher: JobWatcher) -> None:
    run(door, "task-runner-w-0000000a")
    watcher.on_event("ADDED", job("task-runner-w-0000000a", "11", active=1))
    assert watcher.pods._waiting_jobs.keys() == {"task-runner-w-0000000a"}
    watcher.on_event("MODIFIED", job("task-runner-w-0000000a", "12", active=1, ready=1))
    assert watcher.pods._waiting_jobs == {}


# -- FailedCreate: why a Job has no pod ------------------------------------------------


def failed_create_event(job_name: str, message: str, at: str, kind: str = "Job") -> dict[str, Any]:
    return {
        "metadata": {"name": f"{job_name}.1", "resourceVersion": "1"},
        "involvedObject": {"kind": kind, "name": job_name},
        "reason": "FailedCreate",
        "type": "Warning",
        "message": message,
        "lastTimestamp": at,
    }


def test_a_failed_create_says_pending_with_its_message_until_a_pod_is_active(
    door: StatusDoor, watcher: JobWatcher
) -> None:
    run(door, "task-runner-w-00000010")
    watcher.on_event("ADDED", job("task-runner-w-00000010", "11"))
    watcher.create_failed("task-runner-w-00000010", "exceeded quota: no-pods")
    failing = status_of(door, "task-runner-w-00000010")
    assert (failing.status, failing.reason, failing.message) == (
        Phase.PENDING,
        "FailedCreate",
        "exceeded quota: no-pods",
    )
    watcher.on_event("MODIFIED", job("task-runner-w-00000010", "12", startTime="2026-12-01T10:00:01Z"))
    assert status_of(door, "task-runner-w-00000010").reason == "FailedCreate", "a Job change without a pod keeps it"
    watcher.on_event("MODIFIED", job("task-runner-w-00000010", "13", active=1, ready=1))
    running = status_of(door, "task-runner-w-00000010")
    assert (running.status, running.reason, running.message) == (Phase.RUNNING, None, None)
    watcher.on_event("MODIFIED", job("task-runner-w-00000010", "14", failed=1))
    assert status_of(door, "task-runner-w-00000010").reason == "BackOff", "an active pod cleared the old failure"


def test_a_failed_create_before_the_jobs_first_object_is_said_when_it_comes(
    door: StatusDoor, watcher: JobWatcher
) -> None:
    run(door, "task-runner-w-00000011")
    watcher.create_failed("task-runner-w-00000011", "violates PodSecurity")
    assert status_of(door, "task-runner-w-00000011").status == Phase.QUEUED
    watcher.on_event("ADDED", job("task-runner-w-00000011", "11"))
    assert status_of(door, "task-runner-w-00000011").message == "violates PodSecurity"


def test_a_failed_create_of_a_job_that_is_not_ours_or_finished_is_ignored(
    door: StatusDoor, watcher: JobWatcher
) -> None:
    watcher.create_failed("someone-elses-job", "exceeded quota")
    assert door.current("someone-elses-job") is None
    run(door, "task-runner-w-00000012", mode="legacy")
    watcher.create_failed("task-runner-w-00000012", "exceeded quota")
    assert status_of(door, "task-runner-w-00000012").reason is None
    run(door, "task-runner-w-00000013")
    watcher.on_event(
        "ADDED", job("task-runner-w-00000013", "11", succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    )
    watcher.create_failed("task-runner-w-00000013", "exceeded quota")
    assert status_of(door, "task-runner-w-00000013").status == Phase.SUCCEEDED
    assert watcher._create_failures == {} and watcher._unfinished == {}


def test_the_events_handler_reports_failed_creates_oldest_first_and_ignores_expiries() -> None:
    seen: list[tuple[str, str]] = []
    events = CreateFailureWatcher(
        core=client.CoreV1Api(client.ApiClient()),  # never called: the test hands the handler its events
        namespace="ns",
        on_failed_create=lambda *failure: seen.append(failure),
    )
    events.on_list(
        [
            failed_create_event("a", "second", "2026-12-01T10:00:09Z"),
            failed_create_event("a", "first", "2026-12-01T10:00:01Z"),
            failed_create_event("r", "not a Job", "2026-12-01T10:00:05Z", kind="ReplicaSet"),
        ],
        requested_at=utcnow(),
    )
    assert seen == [("a", "first"), ("a", "second")]
    events.on_event("DELETED", failed_create_event("a", "expired", "2026-12-01T10:00:01Z"))
    events.on_event("MODIFIED", failed_create_event("a", "again", "2026-12-01T10:00:30Z"))
    assert seen[2:] == [("a", "again")]
    assert events.reflector.source == "k8s-events"


def test_an_indexed_jobs_progress_is_stamped_and_grows(door: StatusDoor, watcher: JobWatcher) -> None:
    run(door, "task-runner-w-00000014")
    indexed = job("task-runner-w-00000014", "11", active=2, ready=2, succeeded=1, completedIndexes="0")
    indexed["spec"] = {"completionMode": "Indexed", "completions": 3}
    watcher.on_event("ADDED", indexed)
    first = status_of(door, "task-runner-w-00000014")
    assert first.progress is not None and (first.progress.done, first.progress.total) == (1, 3)
    assert first.progress.at is not None
    watcher.on_event("MODIFIED", {**indexed, "metadata": {**indexed["metadata"], "resourceVersion": "12"}})
    assert status_of(door, "task-runner-w-00000014").seq == first.seq, "the same progress again is no change"
    indexed["status"] = {"active": 1, "ready": 1, "succeeded": 2, "completedIndexes": "0-1"}
    indexed["metadata"] = {**indexed["metadata"], "resourceVersion": "13"}
    watcher.on_event("MODIFIED", indexed)
    later = status_of(door, "task-runner-w-00000014")
    assert later.progress is not None and later.progress.done == 2 and later.seq == first.seq + 1
    assert [t.status for t in later.history] == [t.status for t in first.history], "progress adds no history"


def test_a_job_whose_only_news_is_its_resource_version_is_neither_saved_nor_published(
    door: StatusDoor, watcher: JobWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the launch's own Pending, then the watch's ADDED of the Job just created: nothing it says is new
    run(door, "task-runner-w-0000000a")
    door.change("task-runner-w-0000000a", status=Phase.PENDING)
    saved: list[int] = []
    real_save = door.store.save
    monkeypatch.setattr(door.store, "save", lambda status, **kw: saved.append(status.seq) or real_save(status, **kw))
    published: list[int] = []
    door.hub.add_listener(lambda new, previous: published.append(new.seq))
    before = status_of(door, "task-runner-w-0000000a")

    watcher.on_event("ADDED", job("task-runner-w-0000000a", "11"))
    watcher.on_event("MODIFIED", job("task-runner-w-0000000a", "12"))  # a Job controller's write we show nothing of

    assert (saved, published) == ([], [])
    assert status_of(door, "task-runner-w-0000000a") == before
    watcher.on_event("MODIFIED", job("task-runner-w-0000000a", "13", active=1))  # news: one save, one publish
    assert saved == published == [before.seq + 1]
