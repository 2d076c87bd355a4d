"""The reflector's handler for our Jobs, without a control plane: listings, events, the vanished-Job diff, cancels.

A real door over a real SQLite store; only the one API read the diff makes
(is a Job missing from a listing really gone?) is a fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webapp.door import StatusDoor
from webapp.executors.k8s_watch import LAUNCH_GRACE, JobWatcher
from webapp.hub import StatusHub
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
