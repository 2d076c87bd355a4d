"""Logs that outlive the pod: the keeper saves a finished run's tail once, and run control answers from it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable
from webapp.hub import StatusHub
from webapp.log_tails import LogTailKeeper, last_bytes, last_lines
from webapp.run_control import RunControl
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.settings import Settings
from webapp.status import JobStatus, Phase

JOB = "task-runner-tail-0123abcd"


class FakeOutput:
    """An executor's output: ``text`` (or a failure), counting the reads."""

    def __init__(self, text: str = "", *, failure: Exception | None = None) -> None:
        self.text = text
        self.failure = failure
        self.reads: list[int] = []
        self.gate: threading.Event | None = None

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        self.reads.append(tail_lines)
        if self.gate is not None:
            self.gate.wait(5)
        if self.failure is not None:
            raise self.failure
        return last_lines(self.text, tail_lines)

    def follow_logs(self, job_name: str, *, tail_lines: int) -> list[str]:
        return ["followed:" + self.logs(job_name, tail_lines=tail_lines)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.sqlite3"


def finished_run(store: SQLiteRunStore, *, mode: str = "k8s", job_name: str = JOB) -> JobStatus:
    status = JobStatus.new(job_name=job_name, mode=mode, spec="quick", pipeline_run_id="tail")
    done = status.evolve(status=Phase.SUCCEEDED)
    store.save(done)
    return done


@pytest.mark.parametrize(
    ("text", "limit", "kept"),
    [
        ("one\ntwo\n", 100, "one\ntwo\n"),
        ("one\ntwo\n", 8, "one\ntwo\n"),
        ("one\ntwo\nthree\n", 9, "three\n"),  # the cut falls inside "two": that line goes whole
        ("one\ntwo\nthree\n", 10, "two\nthree\n"),
        ("aaaa✓bbbb", 6, "bbbb"),  # one long line: the cut character is dropped, not mangled
        ("abcdef", 3, "def"),
        ("abc\n", 0, ""),
    ],
)
def test_last_bytes_keeps_whole_lines_within_the_cap(text: str, limit: int, kept: str) -> None:
    assert last_bytes(text, limit) == kept
    assert len(kept.encode()) <= limit


def test_a_pods_log_is_fetched_by_one_instance_and_capped(path: Path) -> None:
    first_store, second_store = SQLiteRunStore(path), SQLiteRunStore(path)
    finished_run(first_store)
    output = "".join(f"line {n:04d}\n" for n in range(1000))  # 10 bytes a line
    first, second = FakeOutput(output), FakeOutput(output)
    keepers = [
        LogTailKeeper(store=store, sources={"k8s": source}, max_bytes=95)
        for store, source in ((first_store, first), (second_store, second))
    ]
    assert keepers[0].keep(JOB, mode="k8s")
    assert not keepers[1].keep(JOB, mode="k8s")
    assert (first.reads, second.reads) == ([95], []), "the second instance never reads the pod's log"
    kept = second_store.log_tail(JOB)
    assert kept == "".join(f"line {n:04d}\n" for n in range(991, 1000))


def test_a_legacy_runs_output_is_kept_by_the_instance_that_has_it(path: Path) -> None:
    first_store, second_store = SQLiteRunStore(path), SQLiteRunStore(path)
    finished_run(first_store, mode="legacy")
    elsewhere, here = FakeOutput(""), FakeOutput("done\n")
    assert not LogTailKeeper(store=first_store, sources={"legacy": elsewhere}, max_bytes=1024).keep(JOB, mode="legacy")
    assert LogTailKeeper(store=second_store, sources={"legacy": here}, max_bytes=1024).keep(JOB, mode="legacy")
    assert first_store.log_tail(JOB) == "done\n"


def test_the_keeper_saves_off_the_publish_path_and_stops_within_a_second(path: Path) -> None:
    store = SQLiteRunStore(path)
    door = StatusDoor(hub=StatusHub(), store=store)
    source = FakeOutput("hello\n")
    keeper = LogTailKeeper(store=store, sources={"k8s": source}, max_bytes=1024)
    door.hub.add_listener(keeper.on_status)
    keeper.start()
    source.gate = threading.Event()  # the read waits: the publish must not
    first = JobStatus.new(job_name=JOB, mode="k8s", spec="quick", pipeline_run_id="tail")
    door.open(first, manifest=None, client=None)
    door.announce(first)
    door.change(JOB, status=Phase.RUNNING, active=1)
    done = door.change(JOB, status=Phase.SUCCEEDED, succeeded=1)
    assert done is not None and done.terminal, "published while the read is held"
    wait_for(lambda: source.reads, timeout=5, what="the keeper to read the output")
    source.gate.set()
    assert wait_for(lambda: store.log_tail(JOB), timeout=5, what="the tail to be saved") == "hello\n"
    assert source.reads == [1024], "read once: running statuses are not finishes"

    started = time.monotonic()
    keeper.stop()
    assert time.monotonic() - started < 1.0
    assert not any(thread.name == "log-tail-keeper" for thread in threading.enumerate())


def test_a_full_queue_drops_the_run_and_says_so(path: Path) -> None:
    store = SQLiteRunStore(path)
    keeper = LogTailKeeper(store=store, sources={"k8s": FakeOutput("x\n")}, max_bytes=1024, queue_size=1)
    done = [finished_run(store, job_name=f"task-runner-tail-{n}") for n in range(2)]
    with captured_logs() as records:
        for status in done:
            keeper.on_status(status, None)
    assert [(r.getMessage(), getattr(r, "job_name", None)) for r in records] == [
        ("log_tail.dropped", "task-runner-tail-1")
    ]


def test_log_tail_bytes_0_keeps_nothing_and_starts_no_thread(path: Path) -> None:
    store = SQLiteRunStore(path)
    source = FakeOutput("x\n")
    keeper = LogTailKeeper(store=store, sources={"k8s": source}, max_bytes=0, queue_size=1)
    keeper.start()
    for n in range(3):
        keeper.on_status(finished_run(store, job_name=f"task-runner-tail-{n}"), None)
    keeper.stop()
    assert (source.reads, store.log_tail("task-runner-tail-0")) == ([], None)
    assert not any(thread.name == "log-tail-keeper" for thread in threading.enumerate())


def run_control(store: SQLiteRunStore, executors: dict[str, FakeOutput]) -> RunControl:
    door = StatusDoor(hub=StatusHub(), store=store)
    return RunControl(settings=Settings(), executors=executors, door=door)  # type: ignore[arg-type]


def test_a_finished_runs_logs_come_from_its_executor_while_it_has_them(path: Path) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    store.save_log_tail(JOB, "kept 1\nkept 2\n")
    runs = run_control(store, {"k8s": FakeOutput("live 1\nlive 2\n")})
    assert runs.logs(JOB, tail_lines=10) == "live 1\nlive 2\n"
    assert list(runs.follow_logs(JOB, tail_lines=1)) == ["live 2\n"]


@pytest.mark.parametrize(
    "executors",
    [
        {"k8s": FakeOutput("")},  # the pod is gone, or the legacy run ran on another instance
        {"k8s": FakeOutput(failure=ExecutorUnavailable("the API server is away"))},
        {},  # the run's mode is no longer enabled
    ],
)
def test_then_from_the_tail_the_run_store_kept(path: Path, executors: dict[str, FakeOutput]) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    store.save_log_tail(JOB, "kept 1\nkept 2\n")
    runs = run_control(store, executors)
    assert runs.logs(JOB, tail_lines=10) == "kept 1\nkept 2\n"
    assert runs.logs(JOB, tail_lines=1) == "kept 2\n"
    assert runs.logs(JOB, tail_lines=0) == ""
    assert list(runs.follow_logs(JOB, tail_lines=10)) == ["kept 1\nkept 2\n"]


def test_without_a_kept_tail_a_finished_run_answers_as_before(path: Path) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    assert run_control(store, {"k8s": FakeOutput("")}).logs(JOB, tail_lines=10) == ""
    assert list(run_control(store, {"k8s": FakeOutput("")}).follow_logs(JOB, tail_lines=10)) == []
    with pytest.raises(ExecutorUnavailable):
        run_control(store, {"k8s": FakeOutput(failure=ExecutorUnavailable("away"))}).logs(JOB, tail_lines=10)
    with pytest.raises(Conflict):
        run_control(store, {}).logs(JOB, tail_lines=10)


def test_a_running_runs_logs_still_follow_from_its_executor(path: Path) -> None:
    store = SQLiteRunStore(path)
    store.save(JobStatus.new(job_name=JOB, mode="k8s", spec="quick", pipeline_run_id="tail"))
    store.save_log_tail(JOB, "never read\n")
    runs = run_control(store, {"k8s": FakeOutput("live\n")})
    assert list(runs.follow_logs(JOB, tail_lines=10)) == ["followed:live\n"]
