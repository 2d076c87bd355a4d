"""A local run that finished while the run store refused writes is never run again.

A real SQLite run store on a real full tmpfs (only the database's disk is
full: the tasks' output and attempt records are elsewhere, so tasks run on),
the real local runner with real subprocesses, and the real runtime, whose
backlog holds the statuses the store refused. The runtime is not started:
each test plays the moment that matters itself (the lease renewal's pass, a
shutdown) before the backlog's once-a-second retry could hide it.

The run waited in line behind another one (``LEGACY_MAX_CONCURRENCY`` 1) for
longer than a launch takes (its creation is dated back rather than waited
for). The store records each attempt before it starts, so its last copy of
the run says ``Running``, attempt 1: only the attempt's record tells that it
finished.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import captured_logs, wait_for
from tests.storage import SmallDisk
from webapp.door import StatusDoor
from webapp.executors.leases import LAUNCH_SECONDS
from webapp.executors.local import LocalRunner
from webapp.executors.task_supervisor import AttemptRecord
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.runtime import Runtime
from webapp.settings import Settings
from webapp.status import JobStatus, Phase, utcnow

pytestmark = pytest.mark.storage


def _manifest(name: str, code: str) -> dict[str, Any]:
    container = {"name": "task", "command": [sys.executable, "-c", code]}
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [container]}}}}


class StoreWatchedAtRelease(SQLiteRunStore):
    """The real store, noting what it says of each run at the moment leases are handed back."""

    at_release: dict[str, JobStatus | None]

    def release_runs(self, *, owner: str) -> None:
        self.at_release = {status.job_name: self.get(status.job_name) for status in self.recent(10)}
        super().release_runs(owner=owner)


@dataclass
class Outage:
    store: StoreWatchedAtRelease
    hub: StatusHub
    runner: LocalRunner
    runtime: Runtime
    job_name: str
    executions: Path

    def count(self) -> int:
        return self.executions.read_text().count("ran") if self.executions.exists() else 0


def _launch(outage_parts: tuple[StoreWatchedAtRelease, LocalRunner], label: str, code: str) -> str:
    _, runner = outage_parts
    launched = utcnow() - timedelta(seconds=LAUNCH_SECONDS + 5)  # no longer "being launched" by anyone
    status = JobStatus.new(
        job_name=f"task-runner-{label}-0123abcd", mode="legacy", spec=label, pipeline_run_id=label, at=launched
    )
    manifest = _manifest(status.job_name, code)
    runner._door.open(status, manifest=manifest, client=None)  # as the launcher does
    runner.launch(status, manifest)
    runner._door.announce(status)
    return status.job_name


@pytest.fixture
def finished_during_the_outage(small_disk: SmallDisk, tmp_path: Path) -> Iterator[Outage]:
    """A run that finished (``Succeeded``) while the store refused every write; the disk has room again now."""
    store = StoreWatchedAtRelease(small_disk.path / "runs.sqlite3")
    hub = StatusHub()
    door = StatusDoor(hub=hub, store=store)
    runner = LocalRunner(door=door, log_dir=tmp_path / "logs", max_concurrency=1)
    runtime = Runtime(
        settings=Settings.from_env({"JOBSPECS_DIR": str(tmp_path)}),
        specs={},
        door=door,
        executors={"legacy": runner},
    )
    runner.start()
    go, finish, executions = tmp_path / "go", tmp_path / "finish", tmp_path / "executions"
    wait_for_go = f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"
    _launch((store, runner), "blocker", wait_for_go)
    donation = (
        f"import pathlib, time\nwhile not pathlib.Path({str(finish)!r}).exists(): time.sleep(0.05)\n"
        f"open({str(executions)!r}, 'a').write('ran\\n')"
    )
    job_name = _launch((store, runner), "donation", donation)
    wait_for(lambda: (s := hub.get(job_name)) and s.reason == "WaitingForSlot", what="the run to wait in line")
    go.touch()  # the blocker ends; the run gets its slot, and the store records its attempt before it starts
    wait_for(lambda: (s := hub.get(job_name)) and s.status == Phase.RUNNING, what="the run to start")

    small_disk.fill()
    finish.touch()  # the run finishes: the store takes none of it
    wait_for(lambda: (s := hub.get(job_name)) is not None and s.terminal, timeout=30, what="the run to finish")
    small_disk.free()
    outage = Outage(store, hub, runner, runtime, job_name, executions)
    assert (done := hub.get(job_name)) is not None and done.status == Phase.SUCCEEDED and outage.count() == 1
    stored = store.get(job_name)
    assert stored is not None and (stored.status, stored.attempt, stored.active) == (Phase.RUNNING, 1, 1), "behind"
    try:
        yield outage
    finally:
        runtime.stop()
        store.close()


def test_the_lease_renewal_does_not_run_again_a_run_whose_final_status_is_not_saved_yet(
    finished_during_the_outage: Outage,
) -> None:
    outage = finished_during_the_outage
    with captured_logs() as records:
        outage.runner._leases.adopt_now()  # the lease renewal's pass (every 10 s), with the store writable again

    assert [r.__dict__ for r in records if r.msg == "job.resumed"] == [], "a finished run is not taken over"
    outage.runtime.stop()
    assert outage.count() == 1, "the task ran exactly once"
    stored = outage.store.get(outage.job_name)
    assert stored is not None and stored.status == Phase.SUCCEEDED


def test_a_shutdown_saves_final_statuses_before_it_hands_the_runs_back(finished_during_the_outage: Outage) -> None:
    outage = finished_during_the_outage
    outage.runtime.stop()

    handed_back = outage.store.at_release[outage.job_name]
    assert handed_back is not None and handed_back.status == Phase.SUCCEEDED, (
        "when its lease is handed back, the store already says the run finished: nobody adopts it"
    )
    assert outage.count() == 1


def test_a_restart_that_lost_the_unsaved_final_status_settles_the_run_from_its_attempt_record(
    finished_during_the_outage: Outage, tmp_path: Path
) -> None:
    outage = finished_during_the_outage
    outage.store.release_runs(owner=outage.runner._leases.owner)  # the worker died: its lease is over, backlog lost
    record_path = tmp_path / "logs" / "attempts" / f"{outage.job_name}.1.json"
    record = AttemptRecord.read(record_path)
    assert record is not None and record.finished
    dataclasses.replace(record, parent_start=None).write(record_path)  # as a dead worker's record reads
    hub = StatusHub()
    restarted = LocalRunner(door=StatusDoor(hub=hub, store=outage.store), log_dir=tmp_path / "logs", max_concurrency=1)
    restarted.start()
    try:
        final = wait_for(lambda: (s := hub.get(outage.job_name)) and s.terminal and s, timeout=30, what="the end")
    finally:
        restarted.stop()

    assert (final.status, final.attempt) == (Phase.SUCCEEDED, 1), final
    assert outage.count() == 1, "the task ran exactly once"


def test_an_attempt_the_store_cannot_record_does_not_start_until_it_can(small_disk: SmallDisk, tmp_path: Path) -> None:
    store = StoreWatchedAtRelease(small_disk.path / "runs.sqlite3")
    hub = StatusHub()
    runner = LocalRunner(door=StatusDoor(hub=hub, store=store), log_dir=tmp_path / "logs", max_concurrency=1)
    runner.start()
    go, executions = tmp_path / "go", tmp_path / "executions"
    try:
        wait_for_go = f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"
        _launch((store, runner), "blocker", wait_for_go)
        job_name = _launch((store, runner), "donation", f"open({str(executions)!r}, 'a').write('ran\\n')")
        wait_for(lambda: (s := hub.get(job_name)) and s.reason == "WaitingForSlot", what="the run to wait in line")

        small_disk.fill()
        go.touch()  # the run gets its slot while the store refuses every write
        waiting = wait_for(lambda: (s := hub.get(job_name)) and s.reason != "WaitingForSlot" and s, what="a change")
        assert (waiting.status, waiting.reason, waiting.active) == (Phase.PENDING, "WaitingForRunStore", 0), waiting
        assert not executions.exists(), "an attempt the store does not know of never starts"

        small_disk.free()
        final = wait_for(lambda: (s := hub.get(job_name)) and s.terminal and s, timeout=30, what="the run to end")
        assert (final.status, final.attempt) == (Phase.SUCCEEDED, 1), final
        assert executions.read_text().count("ran") == 1
    finally:
        go.touch()
        runner.stop()
        store.close()


def test_a_runner_that_cannot_renew_its_lease_stops_its_attempt_before_the_lease_runs_out_for_others(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    store = StoreWatchedAtRelease(small_disk.path / "runs.sqlite3")
    hub = StatusHub()
    runner = LocalRunner(door=StatusDoor(hub=hub, store=store), log_dir=tmp_path / "logs", max_concurrency=1)
    runner._leases._lease_seconds = 0.9  # renewed every 0.3 s
    runner.start()
    try:
        job_name = _launch((store, runner), "fenced", "import time; time.sleep(60)")
        wait_for(lambda: (s := hub.get(job_name)) and s.status == Phase.RUNNING, what="the run to start")
        process = runner._runs[job_name].process
        assert process is not None

        small_disk.fill()  # every renewal fails from now on
        wait_for(lambda: process.poll() is not None, timeout=20, what="the attempt to be stopped")
        wait_for(lambda: job_name not in runner._held_runs(), what="the run to be let go")
    finally:
        small_disk.free()
        runner.stop()
        store.close()
