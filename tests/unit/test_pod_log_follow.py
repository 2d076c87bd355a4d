"""A Kubernetes log follow: its Job watcher outlives a run store that is away, so the follow still ends with its Job;
a pod whose log cannot be read yet is asked for again at the Job's next change, not given up.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.executors import k8s
from webapp.executors.k8s import KubernetesExecutor, PodLogFollow
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase

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


# -- a pod whose log cannot be read yet ---------------------------------------------------------


class FakePodLog:
    """An open pod log stream: the chunks the test writes, until it ends or is shut."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue()

    def write(self, text: str) -> None:
        self._chunks.put(text.encode())

    def end(self) -> None:
        self._chunks.put(None)

    def stream(self, amt: int, decode_content: bool) -> Iterator[bytes]:
        while (chunk := self._chunks.get()) is not None:
            yield chunk

    def shutdown(self) -> None:
        self.end()

    def release_conn(self) -> None:
        pass


class FakeListing:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """The ``CoreV1Api`` calls a follow makes: the Job's pods, and their logs.

    Until a pod has ``started``, its log is what the API server answers for a pod whose container is waiting to
    start (``refused``: the kubelet's 400) or that has no node yet (``empty``: an empty log that ends at once).
    """

    def __init__(self, unstarted: str) -> None:
        self.unstarted = unstarted
        self.pods: list[str] = []
        self.started: dict[str, FakePodLog] = {}
        self.log_requests: list[tuple[str, int | None, int]] = []  # (pod, tail_lines, the answer's status)

    def list_namespaced_pod(self, namespace: str, **options: Any) -> FakeListing:
        items = [
            {"metadata": {"name": pod, "creationTimestamp": f"2026-12-05T12:00:0{n}Z"}}  # in order of creation
            for n, pod in enumerate(self.pods)
        ]
        return FakeListing({"items": items})

    def read_namespaced_pod_log(self, name: str, namespace: str, *, tail_lines: int | None, **options: Any) -> Any:
        log = self.started.get(name)
        if log is not None:
            self.log_requests.append((name, tail_lines, 200))
            return log
        if self.unstarted == "empty":
            self.log_requests.append((name, tail_lines, 200))
            nothing = FakePodLog()
            nothing.end()
            return nothing
        self.log_requests.append((name, tail_lines, 400))
        body = {"message": f'container "task" in pod "{name}" is waiting to start: ContainerCreating'}
        raise ApiException(status=400, reason="Bad Request", body=json.dumps(body))


@pytest.fixture(params=["refused", "empty"])
def starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[KubernetesExecutor, FakeCore]]:
    """A real executor whose Job has one pod, not started yet; only the Kubernetes client is a fake.

    The recheck is made long, so the follow wakes only when the test changes the Job.
    """
    monkeypatch.setattr(k8s, "POD_RECHECK_SECONDS", 600.0)
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    door = StatusDoor(hub=StatusHub(), store=store)
    api = client.ApiClient()
    executor = KubernetesExecutor(door=door, api=api, namespace="ns")
    core = FakeCore(request.param)
    executor._core = core  # type: ignore[assignment]
    first = JobStatus.new(job_name=JOB, mode="k8s", spec="quick", pipeline_run_id="follow")
    door.open(first, manifest=None, client=None)
    door.announce(first)
    core.pods.append(f"{JOB}-a")
    yield executor, core
    api.close()
    store.close()


def read_in_background(follow: PodLogFollow) -> tuple[list[str], threading.Thread]:
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.extend(follow), daemon=True)
    reader.start()
    return read, reader


def test_a_pod_that_had_not_started_is_followed_once_it_has(starting: tuple[KubernetesExecutor, FakeCore]) -> None:
    executor, core = starting
    door, pod = executor._door, f"{JOB}-a"
    unstarted = 400 if core.unstarted == "refused" else 200
    follow = executor.follow_logs(JOB, tail_lines=5)  # the console opened right after the launch
    read, reader = read_in_background(follow)
    wait_for(lambda: core.log_requests, what="the follow to ask for the pod's log")
    assert core.log_requests == [(pod, 5, unstarted)], "not started yet"

    core.started[pod] = log = FakePodLog()
    log.write("hello from the pod\n")
    door.change(JOB, status=Phase.RUNNING, active=1)
    wait_for(lambda: read == ["hello from the pod\n"], what="the pod's output once it started")
    assert core.log_requests == [(pod, 5, unstarted), (pod, 5, 200)], "asked again at the change, with its tail"

    log.end()  # the container exited; its Job retries in a new pod, whose whole log is followed
    core.pods.append(f"{JOB}-b")
    core.started[f"{JOB}-b"] = retry = FakePodLog()
    retry.write("second try\n")
    retry.end()
    door.change(JOB, active=1, failed=1)
    wait_for(lambda: len(read) == 2, what="the retry's output")
    door.change(JOB, status=Phase.SUCCEEDED, active=0, succeeded=1)
    wait_for(lambda: not reader.is_alive(), what="the follow to end with its Job")
    assert read == ["hello from the pod\n", "second try\n"]
    assert core.log_requests == [(pod, 5, unstarted), (pod, 5, 200), (f"{JOB}-b", None, 200)], "each pod read once"


def test_a_pod_that_never_starts_costs_one_log_request_per_change(
    starting: tuple[KubernetesExecutor, FakeCore],
) -> None:
    executor, core = starting
    door, pod = executor._door, f"{JOB}-a"
    unstarted = 400 if core.unstarted == "refused" else 200
    follow = executor.follow_logs(JOB, tail_lines=5)
    read, reader = read_in_background(follow)
    wait_for(lambda: len(core.log_requests) == 1, what="the follow to ask for the pod's log")
    for changes in range(1, 4):  # the image cannot be pulled: the Job changes, its pod never starts
        door.change(JOB, status=Phase.PENDING, message=f"ImagePullBackOff ({changes})")
        wait_for(lambda n=changes: len(core.log_requests) == 1 + n, what="the follow to ask again at the change")
    door.change(JOB, status=Phase.FAILED, message="DeadlineExceeded")
    wait_for(lambda: not reader.is_alive(), what="the follow to end with its Job")
    assert read == []
    assert core.log_requests == [(pod, 5, unstarted)] * 4, "one request at the start and one per change, no more"
