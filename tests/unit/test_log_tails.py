"""Logs that outlive the pod: the keeper saves a finished run's tail once, and run control answers from it."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable
from webapp.hub import StatusHub
from webapp.log_follow import LogFollowers
from webapp.log_tails import FOLLOWED_WAITING, LogTailKeeper, last_bytes, last_lines
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


# -- what a live follow read, when the executor has nothing left --------------------------------


def test_a_follow_that_saw_the_run_end_keeps_its_output_when_the_pod_went_first(path: Path) -> None:
    store = SQLiteRunStore(path)
    door = StatusDoor(hub=StatusHub(), store=store)
    gone = FakeOutput("")  # ttlSecondsAfterFinished: 0, a busy cluster: the pod was deleted before the read
    keeper = LogTailKeeper(store=store, sources={"k8s": gone}, max_bytes=1024)
    followers = LogFollowers()
    followers.hand_output_to(keeper.take_followed)
    door.hub.add_listener(keeper.on_status)
    keeper.start()
    try:
        first = JobStatus.new(job_name=JOB, mode="k8s", spec="quick", pipeline_run_id="tail")
        door.open(first, manifest=None, client=None)
        door.announce(first)
        door.change(JOB, status=Phase.RUNNING, active=1)
        upstream: queue.Queue[str | None] = queue.Queue()
        view = followers.follow(JOB, tail_lines=10, open_upstream=lambda: iter(upstream.get, None))
        upstream.put("pod says hello\n")
        assert next(view) == "pod says hello\n"
        door.change(JOB, status=Phase.SUCCEEDED, succeeded=1)
        wait_for(lambda: gone.reads, timeout=5, what="the keeper to find the pod gone")
        upstream.put("pod is done\n")
        upstream.put(None)  # the pod's stream ends: the follow saw the run end
        assert "".join(view) == "pod is done\n"
        kept = wait_for(lambda: store.log_tail(JOB), timeout=5, what="the followed output to be kept")
    finally:
        keeper.stop()
    assert kept == "pod says hello\npod is done\n"
    assert gone.reads == [1024], "the pod was looked for once; the follow's output was not read again"


def test_a_follow_that_ended_before_the_finish_was_handled_is_kept_then(path: Path) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    gone = FakeOutput("")
    keeper = LogTailKeeper(store=store, sources={"k8s": gone}, max_bytes=12)
    keeper.take_followed(JOB, "line 1\nline 2\n")
    assert not keeper.keep_followed(JOB), "the finish is still to come: the output waits for it"
    assert store.log_tail(JOB) is None
    with captured_logs() as records:
        assert keeper.keep(JOB, mode="k8s")
    assert store.log_tail(JOB) == "line 2\n", "cut to LOG_TAIL_BYTES, at a line's start"
    assert [(r.getMessage(), getattr(r, "source", None)) for r in records] == [("log_tail.saved", "follow")]


def test_the_executors_tail_comes_first_and_the_follows_is_dropped(path: Path) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    keeper = LogTailKeeper(store=store, sources={"k8s": FakeOutput("whole 1\nwhole 2\n")}, max_bytes=1024)
    keeper.take_followed(JOB, "whole 2\n")  # the follow began late: it has less than the pod
    assert keeper.keep(JOB, mode="k8s")
    assert store.log_tail(JOB) == "whole 1\nwhole 2\n"
    keeper.take_followed(JOB, "late\n")
    assert not keeper.keep_followed(JOB)
    assert store.log_tail(JOB) == "whole 1\nwhole 2\n"


@pytest.mark.parametrize(
    "source",
    [
        FakeOutput(""),  # the pod is gone
        FakeOutput(failure=ExecutorUnavailable("the API server is away")),
    ],
)
def test_a_follow_handing_over_after_the_finish_is_kept(path: Path, source: FakeOutput) -> None:
    store = SQLiteRunStore(path)
    finished_run(store)
    keeper = LogTailKeeper(store=store, sources={"k8s": source}, max_bytes=1024)
    if source.failure is None:
        assert not keeper.keep(JOB, mode="k8s")
    else:
        with pytest.raises(ExecutorUnavailable):
            keeper.keep(JOB, mode="k8s")
    keeper.take_followed(JOB, "followed\n")
    assert keeper.keep_followed(JOB)
    assert store.log_tail(JOB) == "followed\n"


def test_another_instances_claim_does_not_lose_what_this_one_followed(path: Path) -> None:
    claimant_store, follower_store = SQLiteRunStore(path), SQLiteRunStore(path)
    finished_run(claimant_store)
    claimant = LogTailKeeper(store=claimant_store, sources={"k8s": FakeOutput("")}, max_bytes=1024)
    follower_source = FakeOutput("never read\n")
    follower = LogTailKeeper(store=follower_store, sources={"k8s": follower_source}, max_bytes=1024)
    assert not claimant.keep(JOB, mode="k8s"), "claimed, and found the pod gone"
    follower.take_followed(JOB, "followed here\n")
    assert follower.keep(JOB, mode="k8s"), "not the claimant: it saves what it followed, first save wins"
    assert follower_source.reads == []
    assert claimant_store.log_tail(JOB) == "followed here\n"


def test_followed_outputs_waiting_for_their_finish_are_bounded(path: Path) -> None:
    store = SQLiteRunStore(path)
    keeper = LogTailKeeper(store=store, sources={"k8s": FakeOutput("")}, max_bytes=1024)
    for n in range(FOLLOWED_WAITING + 1):
        keeper.take_followed(f"task-runner-tail-{n}", "x\n")
    oldest, newest = (finished_run(store, job_name=f"task-runner-tail-{n}") for n in (0, FOLLOWED_WAITING))
    assert not keeper.keep(oldest.job_name, mode="k8s"), "let go: the newest ones are held"
    assert keeper.keep(newest.job_name, mode="k8s")
