"""The local runner's line: each run waiting for a slot says its place, live, without a storm of changes.

The real local runner with real supervisors and tasks, and a real SQLite run
store; every change is counted where a stream would see it, through a hub
listener. A task waits for a file of its own, so the test decides when a slot
frees up.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import hub_status, launch_as_the_launcher_does, wait_for
from webapp.door import StatusDoor
from webapp.executors.local import LocalRunner
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def runner(store: SQLiteRunStore, tmp_path: Path) -> Iterator[LocalRunner]:
    """A local runner with one slot."""
    runner = LocalRunner(door=StatusDoor(hub=StatusHub(), store=store), log_dir=tmp_path / "logs", max_concurrency=1)
    runner.start()
    yield runner
    runner.stop()


class Changes:
    """Every change the hub accepts from now on, as the streams see them."""

    def __init__(self, runner: LocalRunner) -> None:
        self.seen: list[JobStatus] = []
        self._lock = threading.Lock()
        self.counting = False
        runner._door.hub.add_listener(self._hear)

    def _hear(self, status: JobStatus, previous: JobStatus | None) -> None:
        with self._lock:
            if self.counting:
                self.seen.append(status)

    def start(self) -> None:
        with self._lock:
            self.counting, self.seen = True, []

    def places_told(self) -> list[str]:
        """The runs whose place in line was written, once per change of place."""
        with self._lock:
            return [s.job_name for s in self.seen if s.queue_position is not None]


def _waits_for(go: Path) -> str:
    return f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)"


def _launch(runner: LocalRunner, label: str, code: str) -> str:
    status = JobStatus.new(job_name=f"task-runner-{label}-0123abcd", mode="legacy", spec=label, pipeline_run_id=label)
    container = {"name": "task", "command": [sys.executable, "-c", code]}
    manifest: dict[str, Any] = {
        "metadata": {"name": status.job_name, "annotations": {}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [container]}}},
    }
    return launch_as_the_launcher_does(runner, status, manifest)


def _status(runner: LocalRunner, job_name: str) -> JobStatus:
    status: JobStatus = hub_status(runner, job_name)
    return status


def _places(runner: LocalRunner, names: list[str]) -> list[int | None]:
    return [_status(runner, name).queue_position for name in names]


def _line_up(runner: LocalRunner, tmp_path: Path, count: int) -> list[str]:
    """One run holding the slot, then ``count`` runs in line, in launch order; each waits for its own file."""
    names = []
    for number in range(count + 1):
        name = _launch(runner, f"run{number}", _waits_for(tmp_path / f"go{number}"))
        wait_for(functools.partial(_settled, runner, name, first=number == 0), what=f"run {number} to settle")
        names.append(name)
    return names


def _settled(runner: LocalRunner, name: str, *, first: bool) -> bool:
    """The first run is running, the others have a place in line."""
    status = _status(runner, name)
    return status.status == Phase.RUNNING if first else status.queue_position is not None


def _final(runner: LocalRunner, name: str) -> JobStatus:
    def ended() -> JobStatus | None:
        status = _status(runner, name)
        return status if status.terminal else None

    final = wait_for(ended, timeout=30, what=f"{name} to end")
    assert final is not None
    return final


def test_the_runs_in_line_say_their_places_and_move_up_as_runs_ahead_finish_or_are_cancelled(
    runner: LocalRunner, tmp_path: Path
) -> None:
    names = _line_up(runner, tmp_path, 4)
    assert _places(runner, names) == [None, 1, 2, 3, 4]
    waiting = [_status(runner, name) for name in names[1:]]
    assert {(s.status, s.reason) for s in waiting} == {(Phase.QUEUED, "WaitingForSlot")}
    assert [s.message for s in waiting] == [f"1 tasks running; {ahead} ahead in line" for ahead in range(4)]

    (tmp_path / "go0").touch()  # the running one finishes: the first in line starts, the others move up
    wait_for(lambda: _places(runner, names[1:]) == [None, 1, 2, 3], what="the line to move up")
    wait_for(lambda: _status(runner, names[1]).status == Phase.RUNNING, what="the next run to start")
    assert _status(runner, names[3]).message == "1 tasks running; 1 ahead in line"

    runner.cancel(names[3])  # second in line leaves: the one behind it moves up, the one ahead stays
    assert _status(runner, names[3]).queue_position is None, "a cancelled run has no place"
    wait_for(lambda: _places(runner, [names[2], names[4]]) == [1, 2], what="the run behind to move up")
    assert _status(runner, names[4]).message == "1 tasks running; 1 ahead in line"

    for number in range(1, 5):
        (tmp_path / f"go{number}").touch()
    for name in (names[1], names[2], names[4]):
        final = _final(runner, name)
        assert (final.status, final.queue_position) == (Phase.SUCCEEDED, None), final


def test_the_running_one_finishing_moves_each_of_50_runs_in_line_up_with_one_change(
    runner: LocalRunner, tmp_path: Path
) -> None:
    names = _line_up(runner, tmp_path, 50)
    changes = Changes(runner)
    changes.start()

    (tmp_path / "go0").touch()
    wait_for(lambda: _places(runner, names[2:]) == list(range(1, 50)), timeout=30, what="the line to move up")
    wait_for(lambda: _status(runner, names[1]).status == Phase.RUNNING, what="the first in line to start")

    assert sorted(changes.places_told()) == sorted(names[2:]), "one change per run left in line"
    assert len(changes.seen) == 1 + 2 + 49, "the end, the next one's Pending and Running, one move each"


def test_a_storm_of_departures_between_two_passes_tells_each_run_left_in_line_its_place_once(
    runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """45 of 50 runs in line cancelled and the running one finishes, while the places wait for their next pass.

    Told at each departure, the 4 runs left would get about 46 changes each; a pass tells each once.
    """
    names = _line_up(runner, tmp_path, 50)
    storm_over = threading.Event()
    real_pass = runner._line._tell_places

    def pass_after_the_storm() -> None:
        assert storm_over.wait(30)
        real_pass()

    monkeypatch.setattr(runner._line, "_tell_places", pass_after_the_storm)
    changes = Changes(runner)
    changes.start()
    try:
        for name in names[1:46]:
            runner.cancel(name)
        (tmp_path / "go0").touch()
        wait_for(lambda: _status(runner, names[46]).status == Phase.RUNNING, what="the first left in line to start")
        assert changes.places_told() == [], "no place told before the pass"
    finally:
        storm_over.set()

    wait_for(lambda: _places(runner, names[47:]) == [1, 2, 3, 4], what="the runs left in line to move up")
    assert sorted(changes.places_told()) == sorted(names[47:]), "one change per run left in line"
    assert len(changes.seen) == 45 + 1 + 2 + 4, "45 cancels, the end, the next one's Pending and Running, 4 moves"


def test_stop_ends_the_line_and_its_thread_within_a_second(runner: LocalRunner, tmp_path: Path) -> None:
    names = _line_up(runner, tmp_path, 3)
    thread = runner._line._thread
    assert thread is not None and thread.is_alive()
    runner.cancel(names[1])  # a pass is due: the others move up

    started = time.monotonic()
    runner.stop()

    assert not thread.is_alive(), "the line's thread returned"
    assert time.monotonic() - started < 1 + 2, "within a second of the line's stop (the running task ends meanwhile)"
    assert [_status(runner, name).status for name in names[2:]] == [Phase.QUEUED] * 2, "handed back, still in line"
