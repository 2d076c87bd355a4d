"""The legacy runners' shared skeleton, with a runner whose runs only wait: what every legacy runner does.

A real hub, door and SQLite run store; the runner under test carries out no
task (its runs go ``Running`` and wait to be told to stop), so each test
watches the skeleton alone: crash to ``Failed``, cancels, stop, take-over.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, JobNotFound
from webapp.executors.legacy import LEGACY_TASK_ID_ANNOTATION, LegacyRun, LegacyRunner, legacy_task_id
from webapp.hub import StatusHub
from webapp.names import new_job_name
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, utcnow

MANIFEST: dict[str, Any] = {"metadata": {"annotations": {}}, "spec": {}}


class WaitingRunner(LegacyRunner[LegacyRun]):
    """Each run goes ``Running`` and waits to be told to stop; it records what the skeleton asks of it."""

    def __init__(self, door: StatusDoor) -> None:
        super().__init__(
            door=door, title="the waiting runner", thread_prefix="waiting", leases_name="waiting-leases", join_seconds=2
        )
        self.buggy: set[str] = set()
        self.halted: list[str] = []
        self.orphans: list[str] = []
        self.resumed: list[str] = []

    def launch(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        self._accept(status.job_name)
        self._start(LegacyRun(status))

    def _execute(self, run: LegacyRun) -> None:
        self._update(run, status=Phase.RUNNING, active=1)
        if run.status.job_name in self.buggy:
            raise RuntimeError("a bug in the runner")
        assert run.wake.wait(30), "nobody told the run to stop"

    def _halt(self, run: LegacyRun) -> None:
        self.halted.append(run.status.job_name)

    def _cancel_orphan(self, job_name: str) -> None:
        self.orphans.append(job_name)

    def _resume(self, stored: JobStatus) -> None:
        self.resumed.append(stored.job_name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def door(store: SQLiteRunStore) -> StatusDoor:
    return StatusDoor(hub=StatusHub(), store=store)


@pytest.fixture
def runner(door: StatusDoor) -> Iterator[WaitingRunner]:
    runner = WaitingRunner(door)
    yield runner
    runner.stop()


def _new(label: str, *, age: timedelta = timedelta(0)) -> JobStatus:
    return JobStatus.new(
        job_name=new_job_name(label), mode="legacy", spec="waiting", pipeline_run_id=label, at=utcnow() - age
    )


def _launch(door: StatusDoor, runner: WaitingRunner, label: str) -> str:
    """What the launcher does: record the run, hand it over, publish its first status; then wait for it to run."""
    status = _new(label)
    door.open(status, manifest=MANIFEST, client=None)
    runner.launch(status, MANIFEST)
    door.announce(status)
    wait_for(lambda: _phase(door, status.job_name) == Phase.RUNNING, what=f"{label} to run")
    return status.job_name


def _phase(door: StatusDoor, job_name: str) -> Phase | None:
    status = door.current(job_name)
    return status.status if status is not None else None


def _thread_alive(runner: WaitingRunner, job_name: str) -> bool:
    run = runner._runs.get(job_name)
    return run is not None and run.thread is not None and run.thread.is_alive()


def test_a_run_whose_thread_fails_is_failed_and_let_go(door: StatusDoor, runner: WaitingRunner) -> None:
    status = _new("buggy")
    runner.buggy.add(status.job_name)
    door.open(status, manifest=MANIFEST, client=None)
    with captured_logs() as records:
        runner.launch(status, MANIFEST)
        failed = wait_for(lambda: (s := door.current(status.job_name)) is not None and s.terminal and s, what="Failed")
        wait_for(lambda: status.job_name not in runner._runs, what="the run to be let go")
    assert (failed.status, failed.reason, failed.message, failed.active) == (
        Phase.FAILED,
        "RunnerError",
        "a bug in the runner",
        0,
    )
    assert [(r.msg, r.levelname) for r in records if r.levelname == "ERROR"] == [("job.error", "ERROR")]
    assert runner._held_runs() == []


def test_a_second_launch_of_a_run_it_holds_is_a_conflict(door: StatusDoor, runner: WaitingRunner) -> None:
    job_name = _launch(door, runner, "twice")
    again = door.current(job_name)
    assert again is not None
    with pytest.raises(Conflict, match="is already with the waiting runner"):
        runner.launch(again, MANIFEST)


def test_cancel_of_a_held_run_marks_it_cancelled_and_halts_it(door: StatusDoor, runner: WaitingRunner) -> None:
    job_name = _launch(door, runner, "held")
    runner.cancel(job_name)
    cancelled = door.current(job_name)
    assert cancelled is not None
    assert (cancelled.status, cancelled.reason, cancelled.message) == (
        Phase.CANCELLED,
        "Cancelled",
        "cancelled by an operator",
    )
    assert (runner.halted, runner.orphans) == ([job_name], [])
    wait_for(lambda: job_name not in runner._runs, what="the run's thread to end")


def test_cancel_of_a_run_nobody_executes_is_recorded_and_an_unknown_one_is_not_found(
    door: StatusDoor, store: SQLiteRunStore, runner: WaitingRunner
) -> None:
    orphan, finished = _new("orphan"), _new("finished")
    store.save(orphan, manifest=MANIFEST)
    store.save(finished.evolve(status=Phase.SUCCEEDED), manifest=MANIFEST)
    runner.cancel(orphan.job_name)
    runner.cancel(finished.job_name)
    assert _phase(door, orphan.job_name) == Phase.CANCELLED
    assert _phase(door, finished.job_name) == Phase.SUCCEEDED
    assert (runner.orphans, runner.halted) == ([orphan.job_name], [])
    with pytest.raises(JobNotFound):
        runner.cancel("task-runner-nope-00000000")


def test_a_cancel_from_another_instance_halts_the_run_once(door: StatusDoor, runner: WaitingRunner) -> None:
    job_name = _launch(door, runner, "remote")
    running = door.current(job_name)
    assert running is not None
    cancelled = running.evolve(status=Phase.CANCELLED, reason="Cancelled")
    runner.on_status(cancelled, running)
    runner.on_status(cancelled, running)
    wait_for(lambda: runner.halted == [job_name], what="the run to be halted")
    wait_for(lambda: not _thread_alive(runner, job_name), what="the run's thread to end")
    assert runner.halted == [job_name]


def test_stop_ends_every_run_thread_and_hands_the_runs_back(
    door: StatusDoor, store: SQLiteRunStore, runner: WaitingRunner
) -> None:
    runner.start()
    jobs = [_launch(door, runner, label) for label in ("first", "second")]
    threads = [runner._runs[job_name].thread for job_name in jobs]
    assert runner.unready_reason() is None

    runner.stop()

    assert not [thread for thread in threads if thread is not None and thread.is_alive()]
    assert runner.unready_reason() == "the waiting runner is stopping"
    assert [_phase(door, job_name) for job_name in jobs] == [Phase.RUNNING, Phase.RUNNING], "left for the next process"
    for job_name in jobs:
        assert store.claim_run(job_name, owner="the-next-process", lease_seconds=30)
    with pytest.raises(ExecutorUnavailable, match="the waiting runner is shutting down"):
        runner.launch(_new("late"), MANIFEST)


def test_take_over_is_offered_only_runs_nobody_holds_launches_or_finished(
    door: StatusDoor, store: SQLiteRunStore, runner: WaitingRunner
) -> None:
    held = _launch(door, runner, "held")
    orphan, launching, finished_here = _new("orphan", age=timedelta(hours=1)), _new("launching"), _new("done")
    kubernetes = JobStatus.new(job_name=new_job_name("k8s"), mode="k8s", spec="waiting", pipeline_run_id="k8s")
    for status in (orphan, launching, finished_here.evolve(status=Phase.RUNNING), kubernetes):
        store.save(status, manifest=MANIFEST)
    door.hub.publish(finished_here.evolve(status=Phase.SUCCEEDED))  # the store refused its final status

    runner.start()

    assert runner.resumed == [orphan.job_name]
    assert held in runner._held_runs()


def test_a_task_id_is_read_from_the_manifests_annotation() -> None:
    annotated = {"metadata": {"annotations": {LEGACY_TASK_ID_ANNOTATION: 42}}}
    assert [legacy_task_id(m) for m in (annotated, MANIFEST, {}, None)] == ["42", None, None, None]
