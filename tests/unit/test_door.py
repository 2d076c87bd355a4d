"""The one door for statuses: read, apply, number, save and publish each change once, under a per-job lock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from webapp.door import OPERATOR_CANCEL, StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, Progress

JOB = "task-runner-door-0123abcd"


class CountingStore(SQLiteRunStore):
    """A real SQLite store that counts the saves it took, and refuses every write while ``down``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.taken: list[JobStatus] = []
        self.down = False

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None, client: str | None = None) -> bool:
        if self.down:
            raise RunStoreUnavailable("the run store's disk is full")
        taken = super().save(status, manifest=manifest, client=client)
        if taken:
            self.taken.append(status)
        return taken


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "runs.sqlite3")


def heard(hub: StatusHub) -> list[JobStatus]:
    """Every status the hub accepts from now on, in order."""
    accepted: list[JobStatus] = []
    hub.add_listener(lambda status, previous: accepted.append(status))
    return accepted


def opened(door: StatusDoor, *, mode: str = "legacy") -> JobStatus:
    first = JobStatus.new(job_name=JOB, mode=mode, spec="quick", pipeline_run_id="door")
    door.open(first, manifest={"kind": "Job"}, client="192.0.2.1")
    return door.announce(first)


def test_a_change_is_numbered_saved_and_published_once(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    published = heard(door.hub)
    relayed: list[JobStatus] = []
    door.relay = relayed.append
    opened(door)

    running = door.change(JOB, status=Phase.RUNNING, active=1)

    assert running is not None and (running.seq, running.status, running.active) == (2, Phase.RUNNING, 1)
    assert [s.seq for s in published] == [1, 2] == [s.seq for s in relayed]
    assert [s.seq for s in store.taken] == [1, 2]
    assert store.get(JOB) == JobStatus.from_json(running.json)
    assert store.manifest(JOB) == {"kind": "Job"}, "a change keeps the run's manifest"
    assert door.change(JOB, status=Phase.RUNNING, active=1) == running, "no change: nothing saved or published"
    assert [s.seq for s in published] == [1, 2] and len(store.taken) == 2


def test_a_final_status_stays_final(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    opened(door)
    cancelled = door.change(JOB, **OPERATOR_CANCEL)
    assert cancelled is not None and (cancelled.status, cancelled.reason) == (Phase.CANCELLED, "Cancelled")

    assert door.change(JOB, status=Phase.SUCCEEDED, succeeded=1) == cancelled
    stored = store.get(JOB)
    assert stored is not None and stored.status == Phase.CANCELLED and stored.seq == cancelled.seq


def test_two_instances_give_one_status_the_same_seq(store: CountingStore, tmp_path: Path) -> None:
    """Each instance's watch sees the same Job change; the shared store, not each process, numbers it."""
    first = StatusDoor(hub=StatusHub(), store=store)
    second = StatusDoor(hub=StatusHub(), store=SQLiteRunStore(tmp_path / "runs.sqlite3"))
    opened(first, mode="k8s")
    second.hub.publish(first.hub.get(JOB))  # type: ignore[arg-type]  # both have seen the first status
    heard_by_second = heard(second.hub)

    first.change(JOB, status=Phase.PENDING, active=1, observed="101")
    first.change(JOB, status=Phase.RUNNING, observed="102")
    # the second instance's watch lags: it sees the Pending version only now, then the Running one
    behind = second.change(JOB, status=Phase.PENDING, active=1, observed="101")
    assert behind is not None and (behind.seq, behind.status) == (3, Phase.RUNNING), "stale: the store's status"
    level = second.change(JOB, status=Phase.RUNNING, observed="102")

    assert level is not None and level.seq == 3 == first.hub.get(JOB).seq  # type: ignore[union-attr]
    assert second.hub.get(JOB).json == first.hub.get(JOB).json  # type: ignore[union-attr]
    assert [s.seq for s in store.taken] == [1, 2, 3], "each seq saved once, by whichever instance came first"
    assert [s.status for s in heard_by_second] == [Phase.RUNNING], "never back to Pending"


def test_changes_from_many_threads_are_numbered_one_after_another(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    published = heard(door.hub)
    opened(door)
    go = threading.Barrier(8)

    def source(n: int) -> None:
        go.wait()
        for step in range(10):
            door.change(JOB, message=f"source {n} step {step}")

    threads = [threading.Thread(target=source, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    seqs = [s.seq for s in published]
    assert seqs == list(range(1, len(seqs) + 1)), "no seq skipped or given twice"
    assert [s.seq for s in store.taken] == seqs
    assert len(seqs) >= 2


def test_a_change_the_store_refuses_is_published_and_saved_later(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    opened(door)
    store.down = True

    running = door.change(JOB, status=Phase.RUNNING)

    assert running is not None and door.hub.get(JOB) == running
    assert door.holds_unsaved(JOB)
    assert door.unsaved_reason() == "1 status change(s) not saved yet (the run store's disk is full)"
    door.save_unsaved()  # still down: kept
    assert door.holds_unsaved(JOB)
    store.down = False
    door.save_unsaved()
    assert store.get(JOB) == JobStatus.from_json(running.json) and door.unsaved_reason() is None


def test_a_durable_change_the_store_refuses_raises_and_moves_nothing(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    first = opened(door)
    published = heard(door.hub)
    store.down = True

    with pytest.raises(RunStoreUnavailable):
        door.change(JOB, durable=True, status=Phase.PENDING, active=1, attempt=1)

    assert door.hub.get(JOB) == first and published == [] and not door.holds_unsaved(JOB)


def test_an_unknown_run_changes_nothing_unless_the_source_says_where_it_starts(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    assert door.change(JOB, status=Phase.RUNNING) is None
    assert store.get(JOB) is None and door.hub.get(JOB) is None

    def start() -> JobStatus:
        return JobStatus.new(job_name=JOB, mode="k8s", spec="quick", pipeline_run_id="outside")

    assert door.change(JOB, only_mode="legacy", default=start, status=Phase.RUNNING) is None
    found = door.change(JOB, default=start, status=Phase.QUEUED)
    assert found is not None and found.seq == 1 and store.get(JOB) == JobStatus.from_json(found.json)


def test_a_withdrawn_launch_leaves_nothing(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    first = JobStatus.new(job_name=JOB, mode="legacy", spec="quick", pipeline_run_id="door")
    door.open(first, manifest=None, client=None)
    door.withdraw(JOB)
    assert door.current(JOB) is None


def two_instances(tmp_path: Path) -> tuple[StatusDoor, StatusDoor, CountingStore, CountingStore]:
    """Two instances' doors on one store, each with its own connection to it, relaying to each other."""
    a_store, b_store = CountingStore(tmp_path / "runs.sqlite3"), CountingStore(tmp_path / "runs.sqlite3")
    a, b = StatusDoor(hub=StatusHub(), store=a_store), StatusDoor(hub=StatusHub(), store=b_store)
    a.relay = lambda status: None if a_store.down else b.hub.publish(status) and None  # Redis blinks with the store
    b.relay = lambda status: None if b_store.down else a.hub.publish(status) and None
    opened(a)
    a.change(JOB, status=Phase.RUNNING, active=1)
    assert b.hub.get(JOB) is not None and b.hub.get(JOB).seq == 2  # type: ignore[union-attr]
    return a, b, a_store, b_store


def test_changes_both_instances_made_while_the_store_blinked_are_both_kept_under_one_seq(tmp_path: Path) -> None:
    """A finishes the run and B takes a progress report while neither can write; then both write them late."""
    a, b, a_store, b_store = two_instances(tmp_path)
    a_store.down = b_store.down = True
    b.change(JOB, progress=Progress(done=3, total=4, text="Receipt issued"))
    a.change(JOB, status=Phase.SUCCEEDED, succeeded=1)
    a_store.down = b_store.down = False

    b.save_unsaved()
    a.save_unsaved()

    final = a_store.get(JOB)
    assert final is not None and final.status == Phase.SUCCEEDED and final.seq == 4
    assert final.progress == Progress(done=3, total=4, text="Receipt issued"), "B's change is not lost"
    for door in (a, b):
        assert door.hub.get(JOB).json == final.json  # type: ignore[union-attr]
        assert door.unsaved_reason() is None


def test_a_change_made_while_the_store_refused_is_not_built_on_by_later_ones_over_anothers(tmp_path: Path) -> None:
    """A's change waits unsaved while B saves one; A's next change keeps B's."""
    a, b, a_store, _ = two_instances(tmp_path)
    a_store.down = True
    a.change(JOB, message="checking the receipt")
    b.change(JOB, progress=Progress(done=1, total=4))
    a_store.down = False

    latest = a.change(JOB, message="sending the receipt")

    assert latest is not None and latest.progress == Progress(done=1, total=4) and latest.seq == 5
    assert a_store.get(JOB).json == latest.json == b.hub.get(JOB).json  # type: ignore[union-attr]


def test_a_finished_run_the_hub_forgot_is_not_announced_again_when_a_watch_sees_it(store: CountingStore) -> None:
    door = StatusDoor(hub=StatusHub(), store=store)
    opened(door, mode="k8s")
    door.change(JOB, status=Phase.SUCCEEDED)
    door.hub.forget(JOB)
    published = heard(door.hub)

    again = door.change(JOB, only_mode="k8s", status=Phase.SUCCEEDED)  # a relist sees the finished Job

    assert again is not None and again.terminal
    assert published == [] and door.hub.get(JOB) is None


def test_a_durable_change_that_never_gets_in_raises(tmp_path: Path) -> None:
    class AlwaysBehind(CountingStore):
        def save(self, status: JobStatus, **kwargs: Any) -> bool:
            return False if status.seq > 1 else super().save(status, **kwargs)

    door = StatusDoor(hub=StatusHub(), store=AlwaysBehind(tmp_path / "runs.sqlite3"))
    opened(door)
    with pytest.raises(RunStoreUnavailable):
        door.change(JOB, durable=True, status=Phase.PENDING, active=1, attempt=1)
    assert door.hub.get(JOB).seq == 1  # type: ignore[union-attr]


def test_reruns_linked_by_two_instances_at_once_are_both_kept(tmp_path: Path) -> None:
    """Each instance links its rerun to the same finished run from a hub that has not heard of the other's link."""
    a_store, b_store = CountingStore(tmp_path / "runs.sqlite3"), CountingStore(tmp_path / "runs.sqlite3")
    a, b = StatusDoor(hub=StatusHub(), store=a_store), StatusDoor(hub=StatusHub(), store=b_store)
    opened(a)
    a.change(JOB, status=Phase.FAILED, reason="BackoffLimitExceeded")
    b.hub.publish(a.hub.get(JOB))  # type: ignore[arg-type]  # no relay: b hears nothing of a's changes from here

    a.change(JOB, reruns=("task-runner-x-0000000a",))
    linked = b.change(JOB, reruns=("task-runner-x-0000000b",))

    assert linked is not None and linked.reruns == ("task-runner-x-0000000a", "task-runner-x-0000000b")
    assert a_store.get(JOB).reruns == linked.reruns  # type: ignore[union-attr]
