"""A Kubernetes log follow's Job watcher outlives a run store that is away, so the follow still ends with its Job."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.executors import k8s
from webapp.executors.k8s import KubernetesExecutor, PodLogFollow
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus

JOB = "task-runner-follow-0123abcd"


class FlakyStore(SQLiteRunStore):
    """A real SQLite store whose reads fail while ``down``, counting them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = True
        self.reads = 0

    def get(self, job_name: str) -> JobStatus | None:
        self.reads += 1
        if self.down:
            raise RunStoreUnavailable("the run store is not answering")
        return super().get(job_name)


class PodlessExecutor:
    """What a follow asks of its executor: the door, and the newest pod (none: the Job's pod is not there yet)."""

    def __init__(self, door: StatusDoor) -> None:
        self._door = door
        self.pod_lookups = 0

    def _newest_pod(self, job_name: str) -> str | None:
        self.pod_lookups += 1
        return None


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlakyStore:
    monkeypatch.setattr(k8s, "STATUS_RETRY_SECONDS", 0.05)  # retries at 0.05 s, 0.1 s, 0.2 s...
    return FlakyStore(tmp_path / "runs.sqlite3")


def test_the_job_watcher_retries_a_store_that_is_away_and_the_follow_ends_with_the_job(store: FlakyStore) -> None:
    executor = PodlessExecutor(StatusDoor(hub=StatusHub(), store=store))
    with captured_logs("webapp.executors") as records:
        follow = PodLogFollow(cast(KubernetesExecutor, executor), JOB, tail_lines=10, first_pod=None)
        read: list[str] = []
        reader = threading.Thread(target=lambda: read.extend(follow), daemon=True)
        reader.start()
        wait_for(lambda: store.reads >= 3, what="the watcher to ask the store again after it failed")
        store.down = False  # back, and it has no such run: the Job is over for this follow
        wait_for(lambda: not reader.is_alive(), what="the follow to end with its Job")
    assert read == []
    assert executor.pod_lookups <= 1  # ended by the watcher, not found out by polling for pods
    warnings = [r for r in records if r.getMessage() == "log_follow.status_unavailable"]
    assert [(r.levelname, getattr(r, "job_name", None)) for r in warnings] == [("WARNING", JOB)]  # once per outage


def test_closing_a_follow_stops_a_watcher_that_is_retrying(store: FlakyStore) -> None:
    executor = PodlessExecutor(StatusDoor(hub=StatusHub(), store=store))
    follow = PodLogFollow(cast(KubernetesExecutor, executor), JOB, tail_lines=10, first_pod=None)
    reader = threading.Thread(target=lambda: list(follow), daemon=True)
    reader.start()
    wait_for(lambda: store.reads >= 2, what="the watcher to retry")
    follow.close()
    wait_for(
        lambda: not reader.is_alive() and not any(t.name == "log-follow-job" for t in threading.enumerate()),
        timeout=1.0,
        what="the follow and its watcher to end within a second of close()",
    )
