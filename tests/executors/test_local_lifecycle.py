"""The local runner's own races and faults: shutdown, cancels in line, errors mid-attempt.

The real local runner with real supervisors and tasks, and a real SQLite run
store. The moment that matters is forced with a hook (an event the runner's
thread waits on), never with a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import captured_logs, hub_status, launch_as_the_launcher_does, wait_for
from tests.storage import SmallDisk
from webapp.door import StatusDoor
from webapp.executors import local
from webapp.executors.local import LocalRunner
from webapp.executors.task_supervisor import AttemptRecord
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield store
    store.close()


def _manifest(name: str, code: str, *, backoff_limit: int = 0) -> dict[str, Any]:
    container = {"name": "task", "command": [sys.executable, "-c", code]}
    return {
        "metadata": {"name": name, "annotations": {}},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": {"containers": [container]}}},
    }


def _runner(store: SQLiteRunStore, log_dir: Path, *, max_concurrency: int = 1, **options: Any) -> LocalRunner:
    hub = StatusHub()
    runner = LocalRunner(
        door=StatusDoor(hub=hub, store=store), log_dir=log_dir, max_concurrency=max_concurrency, **options
    )
    runner.start()
    return runner


def _launch(store: SQLiteRunStore, runner: LocalRunner, label: str, code: str, **options: Any) -> str:
    status = JobStatus.new(job_name=f"task-runner-{label}-0123abcd", mode="legacy", spec=label, pipeline_run_id=label)
    manifest = _manifest(status.job_name, code, **options)
    return launch_as_the_launcher_does(runner, status, manifest)


def _status(runner: LocalRunner, job_name: str) -> JobStatus:
    status: JobStatus = hub_status(runner, job_name)
    return status


def _processes_of(job_name: str) -> list[psutil.Process]:
    """The live supervisors and task processes of a run (they carry ``JOBPULSE_RUN_ID``)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("JOBPULSE_RUN_ID") == job_name:
                found.append(process)
    return found


def _happens(condition: Callable[[], object], *, within: float) -> bool:
    """Whether ``condition`` comes true within the deadline (for a hook that lets the other side go first)."""
    try:
        wait_for(condition, timeout=within)
    except AssertionError:
        return False
    return True


def _record(log_dir: Path, job_name: str, attempt: int = 1) -> AttemptRecord | None:
    return AttemptRecord.read(log_dir / "attempts" / f"{job_name}.{attempt}.json")


def test_no_attempt_starts_after_a_shutdown_recorded_the_run_as_interrupted(
    store: SQLiteRunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "logs"
    runner = _runner(store, log_dir)
    in_popen, started = threading.Event(), list[subprocess.Popen[bytes]]()
    real_popen = subprocess.Popen

    def popen_meeting_a_shutdown(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        """The supervisor is being started when the shutdown comes; it lets the shutdown go first if it can."""
        in_popen.set()
        runner._stopping.wait(10)
        job_name = kwargs["env"]["JOBPULSE_RUN_ID"]
        # with the race open, the shutdown says Interrupted meanwhile; closed, it waits for this process
        _happens(lambda: _status(runner, job_name).reason == "Interrupted", within=3)
        started.append(real_popen(*args, **kwargs))
        return started[0]

    monkeypatch.setattr(subprocess, "Popen", popen_meeting_a_shutdown)  # the one the runner calls
    job_name = _launch(store, runner, "late", "import time; time.sleep(60)")
    assert in_popen.wait(10)
    stopping = threading.Thread(target=runner.stop)
    stopping.start()
    stopping.join(30)
    (supervisor,) = wait_for(lambda: started, what="the supervisor to be started")
    try:
        final = _status(runner, job_name)
        assert (final.status, final.reason, final.active) == (Phase.QUEUED, "Interrupted", 0), final
        assert supervisor.poll() is not None, "once a shutdown is over, no attempt of its runs runs on"
        record = _record(log_dir, job_name)
        assert record is None or (record.ended and record.interrupted), record  # None: stopped before it began
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.mark.storage
def test_a_task_that_succeeded_during_a_shutdown_is_succeeded_even_if_its_end_could_not_be_recorded(
    store: SQLiteRunStore, small_disk: SmallDisk, tmp_path: Path
) -> None:
    log_dir, ready = small_disk.path / "logs", tmp_path / "ready"
    runner = _runner(store, log_dir)
    finishes_when_told = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)"
    )
    job_name = _launch(store, runner, "stopped", finishes_when_told)
    wait_for(lambda: ready.exists() and (r := _record(log_dir, job_name)) and r.task_pid, what="the task to start")

    small_disk.fill()  # the supervisor cannot record the end: only its exit code (the task's: 0) tells
    runner.stop()

    final = _status(runner, job_name)
    assert (final.status, final.active) == (Phase.SUCCEEDED, 0), final
    assert (saved := store.get(job_name)) is not None and saved.status == Phase.SUCCEEDED


def test_an_attempt_whose_supervisor_was_killed_is_lost_not_retried_and_its_task_group_is_killed(
    store: SQLiteRunStore, tmp_path: Path
) -> None:
    log_dir, executions, child = tmp_path / "logs", tmp_path / "executions", tmp_path / "child"
    runner = _runner(store, log_dir, retry_backoff_seconds=0.01)
    leaves_a_child = (
        "import pathlib, subprocess, time\n"
        f"open({str(executions)!r}, 'a').write('ran\\n')\n"
        "sleeper = subprocess.Popen(['sleep', '60'])\n"
        f"pathlib.Path({str(child)!r}).write_text(str(sleeper.pid))\n"
        "time.sleep(60)"
    )
    job_name = _launch(store, runner, "orphaned", leaves_a_child, backoff_limit=2)
    record = wait_for(lambda: child.exists() and (r := _record(log_dir, job_name)) and r.task_pid and r, what="start")
    sleeper = psutil.Process(int(child.read_text()))
    try:
        os.kill(record.pid, signal.SIGKILL)  # the OOM killer picks the supervisor: nobody records the task's end

        def settled() -> JobStatus | None:
            status = _status(runner, job_name)
            return status if status.terminal or status.attempt > 1 else None

        final = wait_for(settled, what="the attempt to be settled")
        assert (final.status, final.reason, final.attempt) == (Phase.FAILED, "AttemptLost", 1), final
        assert executions.read_text().count("ran") == 1, "its outcome is unknown: not run again"
        wait_for(lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE, what="the child gone")
    finally:
        runner.stop()
        with contextlib.suppress(psutil.NoSuchProcess):
            sleeper.kill()


def test_a_run_cancelled_between_being_admitted_and_waking_hands_its_slot_on(
    store: SQLiteRunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go, log_dir, go_on = tmp_path / "go", tmp_path / "logs", threading.Event()

    class WakesLate(threading.Event):
        """A run's wake-up signal whose thread, once woken, waits for the test before it goes on."""

        def wait(self, timeout: float | None = None) -> bool:
            woken = super().wait(timeout)
            assert go_on.wait(30)
            return woken

    class RunWakingLate(local._LocalRun):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.wake = WakesLate()

    monkeypatch.setattr(local, "_LocalRun", RunWakingLate)
    runner = _runner(store, log_dir)
    try:
        wait_for_go = f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"
        _launch(store, runner, "blocker", wait_for_go)
        admitted = _launch(store, runner, "admitted", "pass")
        wait_for(lambda: _status(runner, admitted).reason == "WaitingForSlot", what="the run to wait in line")

        go.touch()  # the blocker ends and hands its slot to the run in line, whose thread does not wake yet
        wait_for(lambda: runner._runs[admitted].admitted, what="the run to be admitted")
        runner.cancel(admitted)
        go_on.set()

        after = _launch(store, runner, "after", "pass")
        final = wait_for(lambda: (s := _status(runner, after)).terminal and s, timeout=30, what="the next run to end")
        assert final.status == Phase.SUCCEEDED, "the cancelled run's slot went to the next run"
    finally:
        go_on.set()
        runner.stop()


class _FailsOnRunning(LocalRunner):
    """A runner with a bug that shows once the attempt's process has started."""

    def _update(self, run: Any, **changes: Any) -> None:
        if changes.get("status") == Phase.RUNNING:
            raise RuntimeError("a bug after the attempt started")
        super()._update(run, **changes)


def test_an_attempt_is_stopped_when_the_runner_fails_after_starting_it(store: SQLiteRunStore, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    hub = StatusHub()
    runner = _FailsOnRunning(door=StatusDoor(hub=hub, store=store), log_dir=log_dir, max_concurrency=1)
    runner.start()
    try:
        with captured_logs() as records:
            job_name = _launch(store, runner, "buggy", "import time; time.sleep(60)")
            final = wait_for(lambda: (s := _status(runner, job_name)).terminal and s, what="the run to fail")
        assert (final.status, final.reason, final.active) == (Phase.FAILED, "RunnerError", 0), final
        assert [r.msg for r in records if r.levelname == "ERROR"] == ["job.error"]
        wait_for(lambda: not _processes_of(job_name), timeout=15, what="the attempt's supervisor and task to stop")
    finally:
        runner.stop()


def test_a_shutdown_signals_every_attempt_before_it_waits_for_any(store: SQLiteRunStore, tmp_path: Path) -> None:
    """Each task finishes only once the other was told to stop too: stopped one by one, the first is killed."""
    log_dir = tmp_path / "logs"
    runner = _runner(store, log_dir, max_concurrency=2)
    jobs = []
    for me, other in (("first", "second"), ("second", "first")):
        finishes_once_both_are_told = (
            "import pathlib, signal, sys, time\n"
            f"me, other = pathlib.Path({str(tmp_path / me)!r}), pathlib.Path({str(tmp_path / other)!r})\n"
            "def stop(*_):\n"
            "    me.touch()\n"
            "    deadline = time.monotonic() + 30\n"  # far beyond the supervisor's grace period
            "    while not other.exists() and time.monotonic() < deadline:\n"
            "        time.sleep(0.05)\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            f"pathlib.Path({str(tmp_path / (me + '.ready'))!r}).touch()\n"
            "time.sleep(60)"
        )
        jobs.append(_launch(store, runner, me, finishes_once_both_are_told))
    wait_for(lambda: all((tmp_path / f"{me}.ready").exists() for me in ("first", "second")), what="both to start")

    runner.stop()

    for job_name in jobs:
        final = _status(runner, job_name)
        assert final.status == Phase.SUCCEEDED, f"{job_name} was killed before the other was asked to stop: {final}"


def test_a_run_that_waited_in_line_is_retried_after_a_failure(store: SQLiteRunStore, tmp_path: Path) -> None:
    go = tmp_path / "go"
    runner = _runner(store, tmp_path / "logs", retry_backoff_seconds=0.01)
    try:
        _launch(
            store,
            runner,
            "blocker",
            f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)",
        )
        failing = _launch(store, runner, "failing", "raise SystemExit(3)", backoff_limit=1)
        wait_for(lambda: _status(runner, failing).reason == "WaitingForSlot", what="the run to wait in line")
        with captured_logs() as records:
            go.touch()
            final = wait_for(lambda: (s := _status(runner, failing)).terminal and s, timeout=30, what="the end")
        assert (final.status, final.reason, final.attempt) == (Phase.FAILED, "BackoffLimitExceeded", 2), final
        assert [r.msg for r in records if r.msg == "job.resumed"] == [], "retried by its own thread, not dropped"
    finally:
        runner.stop()


def test_no_attempt_starts_once_another_process_holds_the_run(store: SQLiteRunStore, tmp_path: Path) -> None:
    executions = tmp_path / "executions"
    runner = _runner(store, tmp_path / "logs", retry_backoff_seconds=0.01)

    def lease_lapses_and_another_takes_it(status: JobStatus, previous: JobStatus | None) -> None:
        if status.reason == "RetryBackoff":  # the runner's thread, just before its pause
            store.release_runs(owner=runner._leases.owner)
            assert store.claim_run(status.job_name, owner="another-host-1-abcdef", lease_seconds=300)

    runner._door.hub.add_listener(lease_lapses_and_another_takes_it)
    try:
        fails = f"open({str(executions)!r}, 'a').write('ran\\n'); raise SystemExit(3)"
        job_name = _launch(store, runner, "fenced", fails, backoff_limit=1)
        wait_for(lambda: job_name not in runner._held_runs(), what="the runner to let the run go")
        assert executions.read_text().count("ran") == 1, "attempt 2 is the new holder's to run, not this runner's"
        assert _status(runner, job_name).attempt == 1
    finally:
        runner.stop()


def test_stop_returns_only_once_its_run_threads_are_done_with_the_store(
    store: SQLiteRunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller closes the store right after stop() (the runtime does): no run thread may still use it then."""
    runner = _runner(store, tmp_path / "logs")
    in_bookkeeping, stop_returned = threading.Event(), threading.Event()
    seen_by_the_thread: list[bool] = []
    forget = runner._forget_records

    def slow_bookkeeping(job_name: str) -> None:  # the run's last use of the store, held until stop() is under way
        in_bookkeeping.set()
        seen_by_the_thread.append(stop_returned.wait(timeout=1.0))
        forget(job_name)

    monkeypatch.setattr(runner, "_forget_records", slow_bookkeeping)
    _launch(store, runner, "joined", "pass")
    wait_for(in_bookkeeping.is_set, timeout=20, what="the finished run's last bookkeeping")

    runner.stop()
    stop_returned.set()

    assert seen_by_the_thread == [False], "stop() returned while a run thread still had the store to use"
