"""The line of runs waiting for a slot, on its own: places, departures, and how often places are told."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from webapp.executors.waiting_line import WaitingLine


class Run:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = False
        self.admitted = False
        self.wake = threading.Event()
        self.got_slot: bool | None = None


class Told:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.places: list[tuple[str, int]] = []

    def __call__(self, run: Run, place: int) -> None:
        with self.lock:
            self.places.append((run.name, place))

    def clear(self) -> None:
        with self.lock:
            self.places.clear()

    def last(self, name: str) -> int | None:
        with self.lock:
            return next((place for told, place in reversed(self.places) if told == name), None)


@pytest.fixture
def told() -> Told:
    return Told()


@pytest.fixture
def line(told: Told) -> Iterator[WaitingLine[Run]]:
    line = WaitingLine[Run](slots=1, tell=told, refresh_seconds=0.5)
    line.start()
    yield line
    line.stop()


def _join(line: WaitingLine[Run], count: int) -> tuple[list[Run], list[threading.Thread]]:
    """``count`` runs in line behind one holding the only slot, each waiting in a thread of its own."""
    assert line.wait_for_slot(Run("holder"))
    runs, threads = [], []
    for number in range(count):
        run = Run(f"run{number}")
        thread = threading.Thread(target=lambda run=run: setattr(run, "got_slot", line.wait_for_slot(run)))
        thread.start()
        wait_for(functools.partial(line.place, run), what=f"{run.name} to be in line")
        runs.append(run)
        threads.append(thread)
    return runs, threads


def _end(runs: list[Run], threads: list[threading.Thread]) -> None:
    for run in runs:
        run.wake.set()
    for thread in threads:
        thread.join(5)


def test_each_run_is_told_its_place_as_it_joins_and_when_runs_ahead_leave(line: WaitingLine[Run], told: Told) -> None:
    runs, threads = _join(line, 4)
    try:
        assert told.places == [("run0", 1), ("run1", 2), ("run2", 3), ("run3", 4)]
        told.clear()

        line.release()  # the holder ends: run0 gets the slot, the others move up
        wait_for(lambda: runs[0].got_slot, what="run0 to be admitted")
        wait_for(lambda: told.last("run3") == 3, what="run3 to be told it moved up")
        assert sorted(told.places) == [("run1", 1), ("run2", 2), ("run3", 3)]
        told.clear()

        runs[1].cancelled = True  # as a cancel does, before it wakes the run
        runs[1].wake.set()
        wait_for(lambda: runs[1].got_slot is False, what="the cancelled run to leave")
        wait_for(lambda: told.last("run3") == 2, what="run3 to be told it moved up")
        assert [line.place(run) for run in runs] == [None, None, 1, 2]
        assert sorted(told.places) == [("run2", 1), ("run3", 2)], "each run whose place changed, once"
    finally:
        _end(runs, threads)


def test_a_slot_freed_goes_past_cancelled_runs_to_the_first_still_waiting(line: WaitingLine[Run]) -> None:
    runs, threads = _join(line, 3)
    try:
        runs[0].cancelled = True  # its thread has not woken yet
        assert line.place(runs[1]) == 1
        line.release()
        wait_for(lambda: runs[1].got_slot, what="run1 to be admitted")
        assert not runs[0].admitted
    finally:
        _end(runs, threads)


def test_a_line_that_drains_at_once_costs_each_waiting_run_a_change_per_pass_not_per_departure(
    line: WaitingLine[Run], told: Told
) -> None:
    """99 departures in a row: told each time, the runs behind would get 4,950 changes."""
    runs, threads = _join(line, 100)
    try:
        told.clear()
        for _ in range(99):
            line.release()  # the run holding the slot ends; the next one starts (and ends at once)
        wait_for(lambda: told.last("run99") == 1, what="the last run to be told it is next")
        assert len(told.places) <= 2 * 100, "at most two passes (one may start amid the departures)"
    finally:
        _end(runs, threads)


def test_stop_ends_the_lines_thread_within_a_second(told: Told) -> None:
    line = WaitingLine[Run](slots=1, tell=told, refresh_seconds=3600)
    line.start()
    runs, threads = _join(line, 2)
    line.release()  # a pass runs at once; the next is an hour away

    line.stop()

    assert line._thread is not None and not line._thread.is_alive()
    _end(runs, threads)
