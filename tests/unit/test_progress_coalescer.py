"""Progress reports on their way to the door: a few changes a second per run, the latest always wins."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers import run_under_gevent, wait_for
from webapp.door import StatusDoor
from webapp.hub import StatusHub
from webapp.jobspecs import PROGRESS_TOKEN_ENV, load_jobspecs, render_job
from webapp.progress_reports import STOP_SECONDS, ProgressCoalescer, ProgressTokens
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, Progress

JOB = "task-runner-progress-0123abcd"
OTHER = "task-runner-progress-4567cdef"
JOBSPECS = Path(__file__).resolve().parents[2] / "jobspecs"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def door(tmp_path: Path) -> StatusDoor:
    return running_door(tmp_path)


def running_door(folder: Path) -> StatusDoor:
    """A door on a SQLite store in ``folder`` with two runs, both ``Running``."""
    door = StatusDoor(hub=StatusHub(), store=SQLiteRunStore(folder / "runs.sqlite3"))
    for name in (JOB, OTHER):
        first = JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="progress")
        door.open(first, manifest=None, client=None)
        door.announce(first)
        door.change(name, status=Phase.RUNNING)
    return door


def progress_heard(hub: StatusHub, job_name: str = JOB) -> list[Progress | None]:
    """The progress of every status of ``job_name`` the hub accepts from now on (one per door change)."""
    heard: list[Progress | None] = []
    hub.add_listener(lambda status, _: heard.append(status.progress) if status.job_name == job_name else None)
    return heard


def step(done: int, total: int | None = 1000, text: str | None = None) -> Progress:
    return Progress(done=done, total=total, text=text)


def test_the_first_report_of_a_quiet_run_is_written_at_once(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock)
    heard = progress_heard(door.hub)
    coalescer.report(JOB, step(1, 4, "validated"))
    assert heard == [step(1, 4, "validated")]
    current = door.current(JOB)
    assert current is not None and current.progress == step(1, 4, "validated")
    assert [t.status for t in current.history] == [Phase.QUEUED, Phase.RUNNING], "progress is no history entry"


def test_a_flood_of_a_thousand_reports_in_a_second_makes_a_handful_of_changes_and_the_last_wins(
    door: StatusDoor,
) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock, per_second=4)
    heard = progress_heard(door.hub)
    start = clock.now
    for done in range(1000):
        clock.now = start + done / 1000  # 1,000 reports spread over one second
        coalescer.report(JOB, step(done, 2000))
        coalescer.flush()  # the flusher wakes as often as it likes
    assert coalescer.held() == 1, "the last report waits for its window"
    clock.now = start + 1.25
    assert coalescer.flush() == 0.0
    assert coalescer.held() == 0
    assert len(heard) <= 5, heard  # one per quarter second, and the last
    assert heard[-1] == step(999, 2000)
    assert [p.done for p in heard if p is not None] == sorted(p.done for p in heard if p is not None)
    current = door.current(JOB)
    assert current is not None and current.progress == step(999, 2000)


def test_a_held_report_waits_for_its_window_and_the_latest_replaces_it(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock, per_second=4)
    heard = progress_heard(door.hub)
    coalescer.report(JOB, step(1))
    clock.now += 0.1
    coalescer.report(JOB, step(2))
    coalescer.report(JOB, step(3))
    assert coalescer.flush() == pytest.approx(0.15)
    assert heard == [step(1)] and coalescer.held() == 1
    clock.now += 0.15
    assert coalescer.flush() == 0.0
    assert heard == [step(1), step(3)]
    assert coalescer.held() == 0


def test_runs_have_windows_of_their_own(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock)
    coalescer.report(JOB, step(1))
    coalescer.report(OTHER, step(7))
    for name, done in ((JOB, 1), (OTHER, 7)):
        current = door.current(name)
        assert current is not None and current.progress == step(done)


def test_a_report_that_completes_the_work_skips_the_window_once(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock, per_second=4)
    heard = progress_heard(door.hub)
    coalescer.report(JOB, step(3, 4))
    clock.now += 0.01
    coalescer.report(JOB, step(4, 4, "done"))  # the task exits next: this one must land before the final status
    assert heard == [step(3, 4), step(4, 4, "done")]
    clock.now += 0.01
    coalescer.report(JOB, step(4, 4, "really done"))  # a second skip in the same window is held
    assert len(heard) == 2 and coalescer.held() == 1


def test_a_final_status_keeps_the_last_progress(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock)
    coalescer.report(JOB, step(4, 4, "Receipt sent"))
    door.change(JOB, status=Phase.SUCCEEDED)
    clock.now += 1
    coalescer.report(JOB, step(5, 5))  # the endpoint answers 409 before this; the door changes nothing anyway
    final = door.current(JOB)
    assert final is not None and final.terminal
    assert final.progress == step(4, 4, "Receipt sent")


def test_a_quiet_run_is_forgotten_once_its_window_ends(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock)
    coalescer.report(JOB, step(1))
    assert coalescer.flush() == pytest.approx(0.25)  # the flusher wakes then, to forget the window
    clock.now += 0.25
    assert coalescer.flush() is None  # nothing left: memory is one window per reporting run, and it goes


def test_the_flusher_writes_what_is_held_and_stops_within_a_second(door: StatusDoor) -> None:
    flood_and_stop(door)


def test_the_flusher_stops_within_a_second_under_gevent() -> None:
    """The same, with gevent's monkey-patching, as under the gunicorn worker."""
    run_under_gevent(
        "import tempfile; from pathlib import Path\n"
        "from tests.unit.test_progress_coalescer import flood_and_stop, running_door\n"
        "with tempfile.TemporaryDirectory() as folder: flood_and_stop(running_door(Path(folder)))\n"
    )


def flood_and_stop(door: StatusDoor) -> None:
    """A thousand reports as fast as they come: a few changes, the last one wins; ``stop`` returns within a second."""
    coalescer = ProgressCoalescer(door=door, per_second=4)
    heard = progress_heard(door.hub)
    coalescer.start()
    try:
        started = time.monotonic()
        for done in range(1000):
            coalescer.report(JOB, step(done))
        flood_seconds = time.monotonic() - started
        wait_for(lambda: heard and heard[-1] == step(999), timeout=5, what="the last report to be written")
        assert len(heard) <= 2 + 2 * (flood_seconds + 0.5) * 4, (len(heard), flood_seconds)
    finally:
        stopping = time.monotonic()
        coalescer.stop()
        assert time.monotonic() - stopping < STOP_SECONDS
    assert not [t for t in threading.enumerate() if t.name == "progress-flusher" and t.is_alive()]


def test_stop_writes_what_is_still_held(door: StatusDoor) -> None:
    clock = Clock()
    coalescer = ProgressCoalescer(door=door, clock=clock)
    coalescer.report(JOB, step(1))
    coalescer.report(JOB, step(2))
    coalescer.stop()
    current = door.current(JOB)
    assert current is not None and current.progress == step(2)


def test_a_token_is_checked_against_its_own_runs_manifest_and_cached(tmp_path: Path) -> None:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    spec = load_jobspecs(JOBSPECS)["donation-receipt"]
    for name, token in ((JOB, "token-of-the-first-run-0123456789"), (OTHER, "token-of-the-other-run-987654321")):
        manifest = render_job(
            spec,
            job_name=name,
            pipeline_run_id="progress",
            params={},
            progress_url=f"http://jobpulse.test/api/jobs/{name}/progress",
            progress_token=token,
        )
        store.save(JobStatus.new(job_name=name, mode="legacy", spec=spec.name, pipeline_run_id="p"), manifest=manifest)
    unrendered = "task-runner-progress-89abcdef"
    store.save(JobStatus.new(job_name=unrendered, mode="legacy", spec="quick", pipeline_run_id="p"), manifest=None)

    tokens = ProgressTokens(store=store, size=1)
    assert tokens.check(JOB, "token-of-the-first-run-0123456789")
    assert not tokens.check(JOB, "token-of-the-other-run-987654321"), "a token is good for its own run only"
    assert tokens.check(OTHER, "token-of-the-other-run-987654321")  # evicts the first (size 1)
    assert tokens.check(JOB, "token-of-the-first-run-0123456789")  # read from the store again
    assert not tokens.check(JOB, "")
    assert not tokens.check(unrendered, "anything"), "a run launched without a token accepts none"
    assert not tokens.check("task-runner-nobody-00000000", "anything")
    assert PROGRESS_TOKEN_ENV == "JOBPULSE_PROGRESS_TOKEN"
