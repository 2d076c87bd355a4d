"""The backlog of statuses a store or channel refused: newest per job, nothing lost when a retry fails."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from webapp.runstore.backlog import StatusBacklog
from webapp.status import JobStatus, Phase, utcnow


def queued(name: str, *, minutes_ago: float = 0) -> JobStatus:
    return JobStatus.new(
        job_name=f"task-runner-{name}-00000000",
        mode="legacy",
        spec="quick",
        pipeline_run_id=name,
        at=utcnow() - timedelta(minutes=minutes_ago),
    )


def test_only_the_newest_status_of_a_job_is_kept() -> None:
    backlog = StatusBacklog()
    first = queued("a")
    running = first.evolve(status=Phase.RUNNING)
    backlog.keep(running)
    backlog.keep(first)  # older: ignored
    assert len(backlog) == 1
    written: list[JobStatus] = []
    assert backlog.drain(written.append) == 1
    assert written == [running]
    assert len(backlog) == 0


def test_a_status_written_meanwhile_settles_what_is_held_unless_it_is_newer() -> None:
    backlog = StatusBacklog()
    running = queued("a").evolve(status=Phase.RUNNING)
    done = running.evolve(status=Phase.FAILED)
    backlog.keep(done)
    backlog.settled(running)
    assert backlog.job_names() == [done.job_name]
    backlog.settled(done)
    assert backlog.job_names() == []


def test_when_a_write_fails_that_status_and_every_later_one_stay_held() -> None:
    backlog = StatusBacklog()
    older, failing, younger = queued("a", minutes_ago=3), queued("b", minutes_ago=2), queued("c", minutes_ago=1)
    for status in (younger, failing, older):
        backlog.keep(status)
    written: list[JobStatus] = []

    def write(status: JobStatus) -> None:
        if status is failing:
            raise OSError("disk full")
        written.append(status)

    with pytest.raises(OSError):
        backlog.drain(write)
    assert written == [older], "oldest run first"
    assert sorted(backlog.job_names()) == sorted([failing.job_name, younger.job_name])


def test_what_is_written_is_the_newest_status_known_by_then() -> None:
    held = queued("a").evolve(status=Phase.RUNNING)
    moved_on = held.evolve(status=Phase.SUCCEEDED)
    known = {held.job_name: moved_on}
    backlog = StatusBacklog(current=known.get)
    backlog.keep(held)
    written: list[JobStatus] = []
    backlog.drain(written.append)
    assert written == [moved_on]

    backlog.keep(moved_on)
    known[held.job_name] = held  # an older one known elsewhere never replaces what is held
    backlog.drain(written.append)
    assert written == [moved_on, moved_on]


def test_what_is_being_written_is_still_held_until_its_write_went_through() -> None:
    backlog = StatusBacklog()
    first, second = queued("a", minutes_ago=2), queued("b", minutes_ago=1)
    backlog.keep(first)
    backlog.keep(second)
    seen: list[tuple[bool, int]] = []

    def write(status: JobStatus) -> None:  # what housekeeping, readiness and stop() see meanwhile
        seen.append((backlog.holds(status.job_name), len(backlog)))

    assert backlog.drain(write) == 2
    assert seen == [(True, 2), (True, 1)]
    assert len(backlog) == 0


def test_a_drain_during_another_returns_only_once_that_ones_writes_went_through() -> None:
    backlog = StatusBacklog()
    held = queued("a")
    backlog.keep(held)
    writing, go_on = threading.Event(), threading.Event()
    written: list[JobStatus] = []

    def slow_write(status: JobStatus) -> None:
        writing.set()
        assert go_on.wait(10)
        written.append(status)

    first = threading.Thread(target=backlog.drain, args=(slow_write,))
    first.start()
    assert writing.wait(10)
    seen_by_second: list[list[JobStatus]] = []

    def second_drain() -> None:  # stop()'s drain while the retry thread's is under way
        backlog.drain(written.append)
        seen_by_second.append(list(written))

    second = threading.Thread(target=second_drain)
    second.start()
    second.join(0.5)  # the second drain's chance to return too early, or to write the same status again
    go_on.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert seen_by_second == [[held]]  # it returned after the write, and wrote nothing twice
    assert written == [held]
