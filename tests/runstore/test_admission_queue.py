"""MAX_QUEUED_JOBS: launches over MAX_ACTIVE_JOBS wait in line, say their place, and start in turn.

The real launcher, admitter, SQLite store and local runner (with room for
many runs at once, so only ``MAX_ACTIVE_JOBS`` holds them back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from webapp.admission import Admitter
from webapp.door import StatusDoor
from webapp.errors import ExecutorUnavailable, InvalidRequest, TooManyActiveJobs
from webapp.executors.local import LocalRunner
from webapp.hub import StatusHub
from webapp.jobspecs import load_jobspecs
from webapp.launcher import Launcher
from webapp.run_control import RunControl
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.settings import Settings
from webapp.status import JobStatus, Phase

CLIENT = "192.0.2.20"


class Queue:
    """One process's parts over one SQLite file: launch, cancel and read runs."""

    def __init__(self, tmp_path: Path, jobspecs_dir: Path, env: dict[str, str], *, admitter: bool = True) -> None:
        self.store = SQLiteRunStore(tmp_path / "runs.sqlite3")
        self.hub = StatusHub()
        self.door = StatusDoor(hub=self.hub, store=self.store)
        self.runner = LocalRunner(door=self.door, log_dir=tmp_path / "logs", max_concurrency=50)
        settings = Settings.from_env({"JOBSPECS_DIR": str(jobspecs_dir), **env})
        executors = {"legacy": self.runner}
        self.launcher = Launcher(
            settings=settings, specs=load_jobspecs(jobspecs_dir), executors=executors, door=self.door
        )
        self.control = RunControl(settings=settings, executors=executors, door=self.door)
        self.admitter = Admitter(
            door=self.door, launcher=self.launcher, max_active=settings.max_active_jobs, pass_seconds=0.2
        )
        self.hub.add_listener(self.admitter.on_status)
        self.runner.start()
        if admitter:
            self.admitter.start()

    def donate(self, *, client: str = CLIENT, seconds: str = "60") -> JobStatus:
        status, _ = self.launcher.launch(spec_name="slow", params={"seconds": seconds}, client=client, fair_share=True)
        return status

    def status(self, job_name: str) -> JobStatus:
        return self.control.status(job_name)

    def places(self, runs: list[JobStatus]) -> list[tuple[str, str | None, int | None]]:
        return [
            (status.status.value, status.reason, status.queue_position)
            for status in (self.status(run.job_name) for run in runs)
        ]

    def stop(self) -> None:
        self.admitter.stop()
        self.runner.stop()
        self.store.close()


@pytest.fixture
def make_queue(tmp_path: Path, jobspecs_dir: Path) -> Iterator[Callable[..., Queue]]:
    made: list[Queue] = []

    def make(*, admitter: bool = True, **env: str) -> Queue:
        queue = Queue(
            tmp_path,
            jobspecs_dir,
            {"MAX_ACTIVE_JOBS": "1", "MAX_QUEUED_JOBS": "3", "MAX_ACTIVE_JOBS_PER_CLIENT": "0", **env},
            admitter=admitter,
        )
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.stop()


WAITING = "WaitingForCapacity"


def test_launches_over_the_limit_wait_in_line_until_the_line_is_full(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    first = queue.donate()
    assert first.reason != WAITING
    waiting = [queue.donate() for _ in range(3)]
    assert [(s.status, s.reason, s.queue_position) for s in waiting] == [
        (Phase.QUEUED, WAITING, place) for place in (1, 2, 3)
    ]
    assert waiting[0].message == "1 tasks are running; waiting for one to finish (next in line)"
    assert waiting[2].message == "1 tasks are running; waiting for one to finish (2 ahead in line)"
    with pytest.raises(TooManyActiveJobs, match="1 tasks are already unfinished and 3 wait in line"):
        queue.donate()
    assert queue.store.count_waiting() == 3
    assert queue.store.count_unfinished() == 4
    assert [s.job_name for s in queue.store.unfinished()] == [first.job_name], "no executor sees a waiting run"
    assert [s.job_name for s in queue.store.waiting()] == [s.job_name for s in waiting]


def test_places_move_up_as_runs_ahead_finish_or_leave_the_line(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    first = queue.donate()
    second, third, fourth = (queue.donate() for _ in range(3))

    queue.control.cancel(third.job_name)  # a waiting run leaves the line: the one behind it moves up
    wait_for(lambda: queue.status(fourth.job_name).queue_position == 2, what="the last run to move up to 2")
    assert queue.places([second, third]) == [
        ("Queued", WAITING, 1),
        ("Cancelled", "Cancelled", None),
    ]

    queue.control.cancel(first.job_name)  # the running one ends: the next in line starts, the rest move up
    wait_for(lambda: queue.status(second.job_name).status == Phase.RUNNING, what="the next run to start")
    wait_for(lambda: queue.status(fourth.job_name).queue_position == 1, what="the last run to move up to 1")
    admitted = queue.status(second.job_name)
    assert admitted.queue_position is None
    assert [t.status for t in admitted.history] == [Phase.QUEUED, Phase.PENDING, Phase.RUNNING]
    assert queue.store.count_waiting() == 1
    assert [s.job_name for s in queue.store.unfinished()] == [second.job_name]


def test_a_runs_place_is_told_once_per_pass_however_many_leave_the_line(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(MAX_QUEUED_JOBS="10", admitter=False)
    queue.donate()
    line = [queue.donate() for _ in range(6)]
    last = line[-1]
    seen: list[int | None] = []
    queue.hub.add_listener(
        lambda status, previous: seen.append(status.queue_position) if status.job_name == last.job_name else None
    )
    for status in line[:4]:
        queue.control.cancel(status.job_name)
    queue.admitter.make_pass()
    assert seen == [2], "one change for the four that left"
    assert queue.places(line[4:]) == [("Queued", WAITING, 1), ("Queued", WAITING, 2)]


def test_a_clients_waiting_runs_count_against_its_fair_share(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(MAX_ACTIVE_JOBS_PER_CLIENT="2")
    queue.donate()
    assert queue.donate().queue_position == 1
    with pytest.raises(TooManyActiveJobs, match="this address already has 2 unfinished tasks"):
        queue.donate()
    assert queue.donate(client="198.51.100.7").queue_position == 2, "another address still gets in line"


def test_without_max_queued_jobs_a_launch_over_the_limit_is_refused_as_before(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(MAX_QUEUED_JOBS="0", admitter=False)
    queue.donate()
    with pytest.raises(TooManyActiveJobs) as refused:
        queue.donate()
    assert refused.value.message == "1 tasks are already unfinished; try again shortly"
    assert queue.store.count_waiting() == 0


def test_a_run_its_executor_refuses_when_its_turn_comes_fails_and_is_not_lost(
    make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(admitter=False)
    first = queue.donate()
    waiting = queue.donate()
    queue.control.cancel(first.job_name)

    def refuse(status: JobStatus, manifest: dict[str, Any]) -> None:
        raise InvalidRequest("the task has no command")

    monkeypatch.setattr(queue.runner, "launch", refuse)
    queue.admitter.make_pass()
    failed = queue.status(waiting.job_name)
    assert (failed.status, failed.reason) == (Phase.FAILED, "StartError")
    assert failed.message == "it could not be started: the task has no command"
    assert queue.store.count_waiting() == 0
    assert queue.store.count_unfinished() == 0


def test_a_run_its_executor_cannot_take_now_waits_on_in_line_and_is_admitted_later(
    make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An accepted run is not lost to a passing refusal (the API server away, a runner stopping) at its turn."""
    queue = make_queue(admitter=False)
    first = queue.donate()
    waiting = queue.donate()
    behind = queue.donate()
    queue.control.cancel(first.job_name)
    launch = queue.runner.launch

    def unavailable(status: JobStatus, manifest: dict[str, Any]) -> None:
        raise ExecutorUnavailable("the local runner is shutting down")

    monkeypatch.setattr(queue.runner, "launch", unavailable)
    queue.admitter.make_pass()
    assert queue.places([waiting, behind]) == [("Queued", WAITING, 1), ("Queued", WAITING, 2)]
    assert queue.status(waiting.job_name).message == (
        "it could not be started yet (the local runner is shutting down); it waits in line"
    )
    assert [s.job_name for s in queue.store.waiting()] == [waiting.job_name, behind.job_name]
    assert queue.store.unfinished() == [], "no executor sees it"

    monkeypatch.setattr(queue.runner, "launch", launch)
    queue.admitter.make_pass()
    wait_for(lambda: queue.status(waiting.job_name).status == Phase.RUNNING, what="the run to be admitted at last")
    assert queue.places([behind]) == [("Queued", WAITING, 1)]


def test_the_line_outlives_a_restart(make_queue: Callable[..., Queue]) -> None:
    before = make_queue(admitter=False)
    first = before.donate()
    waiting = before.donate()
    before.control.cancel(first.job_name)
    before.stop()

    after = make_queue()
    wait_for(lambda: after.status(waiting.job_name).status == Phase.RUNNING, what="the waiting run to start")


def test_a_waiting_run_is_admitted_once_by_two_admitters_at_once(
    make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(admitter=False)
    queue.donate()
    waiting = queue.donate()
    launched: list[str] = []
    launch = queue.runner.launch

    def count(status: JobStatus, manifest: dict[str, Any]) -> None:
        launched.append(status.job_name)
        launch(status, manifest)

    monkeypatch.setattr(queue.runner, "launch", count)
    admitters = [Admitter(door=queue.door, launcher=queue.launcher, max_active=0) for _ in range(2)]  # no limit
    passes = [threading.Thread(target=admitter.make_pass) for admitter in admitters]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join()
    assert launched == [waiting.job_name]
    assert queue.status(waiting.job_name).reason != WAITING
    assert queue.store.count_waiting() == 0


def test_the_admitter_stops_within_a_second(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    started = time.monotonic()
    queue.admitter.stop()
    assert time.monotonic() - started < 1.0
    assert not any(thread.name == "admission" and thread.is_alive() for thread in threading.enumerate())


def test_a_run_being_admitted_is_not_taken_over_by_another_runner_meanwhile(
    make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between leaving the line in the store and its hand-over, an admitted run is being launched, not an orphan.

    Another instance's runner renewing its leases (every 10 s) in that moment must not take it over: it would
    start the run while the admitting instance's hand-over is refused and calls it ``Failed`` (``StartError``),
    a run executed under a status that says it never started.
    """
    admitting = make_queue(admitter=False)
    other = make_queue(admitter=False)
    first = admitting.donate()
    waiting = admitting.donate()
    admitting.control.cancel(first.job_name)
    admit_run = admitting.store.admit_run

    def admit_then_renew(job_name: str) -> bool:
        admitted = admit_run(job_name)
        other.runner._leases.adopt_now()  # the other instance's lease renewal falls right here
        return admitted

    monkeypatch.setattr(admitting.store, "admit_run", admit_then_renew)
    admitting.admitter.make_pass()
    assert admitting.status(waiting.job_name).reason != "StartError"
    assert other.runner._held_runs() == []
    wait_for(lambda: admitting.status(waiting.job_name).status == Phase.RUNNING, what="the admitted run to start")
    assert admitting.runner._held_runs() == [waiting.job_name]
