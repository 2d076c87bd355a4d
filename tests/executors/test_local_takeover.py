"""Taking over a local run whose worker died: settled from its attempt's record, never run twice.

A real SQLite run store and the real local runner; the dead worker's attempt
record is written as its supervisor would have left it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import captured_logs, wait_for
from webapp.door import StatusDoor
from webapp.executors.local import LocalRunner
from webapp.executors.task_supervisor import AttemptRecord, boot_id, start_ticks
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase

JOB = "task-runner-takeover-0badc0de"
DEAD_OWNER = "gone-host-1-abcdef"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield store
    store.close()


def _manifest(marker: Path) -> dict[str, Any]:
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('ran\\n')"]
    return {
        "metadata": {"name": JOB, "annotations": {}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "task", "command": command}]}}},
    }


def _in_flight(store: SQLiteRunStore, marker: Path, *, lease_seconds: float) -> None:
    """Attempt 1 was running when its worker died; the dead worker's lease runs for ``lease_seconds`` more."""
    status = JobStatus.new(job_name=JOB, mode="legacy", spec="takeover", pipeline_run_id="takeover")
    store.save(status.evolve(status=Phase.RUNNING, active=1, attempt=1), manifest=_manifest(marker))
    assert store.claim_run(JOB, owner=DEAD_OWNER, lease_seconds=lease_seconds)


def _record(log_dir: Path, **ended: Any) -> None:
    path = log_dir / "attempts" / f"{JOB}.1.json"
    path.parent.mkdir(parents=True)
    AttemptRecord(owner=DEAD_OWNER, boot=boot_id(), parent_pid=1, parent_start=None, pid=1, start=None, **ended).write(
        path
    )


def _take_over(store: SQLiteRunStore, log_dir: Path) -> tuple[LocalRunner, StatusHub]:
    hub = StatusHub()
    runner = LocalRunner(door=StatusDoor(hub=hub, store=store), log_dir=log_dir, max_concurrency=1)
    runner.start()
    return runner, hub


def _final(hub: StatusHub) -> JobStatus:
    return wait_for(lambda: (s := hub.get(JOB)) is not None and s.terminal and s, timeout=30, what="the end")


@pytest.mark.parametrize(
    ("ended", "outcome", "reason", "attempt", "runs"),
    [
        ({"ended": True, "exit_code": 0}, Phase.SUCCEEDED, None, 1, 0),
        ({"ended": True, "exit_code": 0, "interrupted": True}, Phase.SUCCEEDED, None, 1, 0),
        ({"ended": True, "exit_code": -15, "interrupted": True}, Phase.SUCCEEDED, None, 2, 1),
        ({"ended": True, "exit_code": None, "interrupted": True}, Phase.SUCCEEDED, None, 2, 1),
        ({"ended": True, "exit_code": 3}, Phase.FAILED, "BackoffLimitExceeded", 1, 0),
        ({"ended": False}, Phase.FAILED, "AttemptLost", 1, 0),
        (None, Phase.FAILED, "AttemptLost", 1, 0),
    ],
    ids=["finished", "finished-despite-stop", "killed", "never-started", "failed", "supervisor-vanished", "no-record"],
)
def test_the_attempt_in_flight_is_settled_from_its_record(
    store: SQLiteRunStore,
    tmp_path: Path,
    ended: dict[str, Any] | None,
    outcome: Phase,
    reason: str | None,
    attempt: int,
    runs: int,
) -> None:
    marker, log_dir = tmp_path / "ran", tmp_path / "logs"
    if ended is not None:
        _in_flight(store, marker, lease_seconds=300)  # the record proves its worker dead: taken over at once
        _record(log_dir, **ended)
    else:  # another host's attempt, or a lost record: taken over only once the lease has run out
        _in_flight(store, marker, lease_seconds=-1)

    runner, hub = _take_over(store, log_dir)
    try:
        final = _final(hub)
    finally:
        runner.stop()

    assert (final.status, final.reason, final.attempt) == (outcome, reason, attempt), final
    assert (marker.read_text().count("ran") if marker.exists() else 0) == runs, "run again only if provably unfinished"
    assert (saved := store.get(JOB)) is not None and saved.to_dict() == final.to_dict()


def _save_after_a_failed_first_attempt(store: SQLiteRunStore, marker: Path) -> None:
    """The store's copy of a run whose attempt 1 failed, waiting to retry (backoffLimit 1), nothing in flight."""
    status = JobStatus.new(job_name=JOB, mode="legacy", spec="takeover", pipeline_run_id="takeover")
    manifest = _manifest(marker)
    manifest["spec"]["backoffLimit"] = 1
    store.save(
        status.evolve(status=Phase.PENDING, reason="RetryBackoff", active=0, attempt=1, failed=1), manifest=manifest
    )


def test_an_attempt_the_store_missed_is_settled_from_its_record(store: SQLiteRunStore, tmp_path: Path) -> None:
    """The store's copy says attempt 1 failed and nothing is in flight; attempt 2's record says it finished."""
    marker, log_dir = tmp_path / "ran", tmp_path / "logs"
    _save_after_a_failed_first_attempt(store, marker)
    assert store.claim_run(JOB, owner=DEAD_OWNER, lease_seconds=300)
    _record(log_dir, ended=True, exit_code=0)
    (log_dir / "attempts" / f"{JOB}.1.json").rename(log_dir / "attempts" / f"{JOB}.2.json")

    runner, hub = _take_over(store, log_dir)
    try:
        final = _final(hub)
    finally:
        runner.stop()

    assert (final.status, final.attempt) == (Phase.SUCCEEDED, 2), final
    assert not marker.exists(), "attempt 2 finished: not run again"


def test_a_run_whose_worker_lives_on_this_host_is_not_taken_over_when_its_lease_lapses(
    store: SQLiteRunStore, tmp_path: Path
) -> None:
    """Between attempts, its lease lapsed (a stalled store, a paused worker): the live worker still owns it."""
    marker, log_dir = tmp_path / "ran", tmp_path / "logs"
    _save_after_a_failed_first_attempt(store, marker)
    assert store.claim_run(JOB, owner=DEAD_OWNER, lease_seconds=-1)  # lapsed
    path = log_dir / "attempts" / f"{JOB}.1.json"
    path.parent.mkdir(parents=True)
    worker = subprocess.Popen(["sleep", "60"])  # another worker process on this host, alive
    try:
        AttemptRecord(
            owner=DEAD_OWNER,
            boot=boot_id(),
            parent_pid=worker.pid,
            parent_start=start_ticks(worker.pid),
            pid=1,
            start=None,
            ended=True,
            exit_code=3,
        ).write(path)

        with captured_logs() as records:
            runner, _ = _take_over(store, log_dir)
            runner.stop()
    finally:
        worker.kill()
        worker.wait()

    assert [r.msg for r in records if r.msg == "job.resumed"] == [], "not taken over while its worker lives"
    assert not marker.exists()
