"""The hub's all-runs subscription: latest per job, bounded, woken by heartbeats, ended by close."""

from __future__ import annotations

import threading

import pytest

from webapp.hub import AllRunsSubscription, HubClosed, RunChanges, StatusHub
from webapp.status import JobStatus


def status(name: str) -> JobStatus:
    return JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="a")


def test_a_slow_reader_gets_the_latest_of_each_job_in_the_order_they_first_changed() -> None:
    hub = StatusHub()
    a, b = status("task-runner-a-00000000"), status("task-runner-b-00000000")
    with hub.subscribe_all() as follower:
        hub.publish(a)
        hub.publish(b)
        running = a.evolve(status="Running")
        hub.publish(running)
        done = running.evolve(status="Succeeded")
        hub.publish(done)
        changes = follower.get(timeout=0)
        assert changes == RunChanges((done, b))
        assert follower.get(timeout=0) is None, "nothing is held after a read"


def test_an_older_offer_never_replaces_a_newer_one() -> None:
    follower = AllRunsSubscription()
    first = status("task-runner-a-00000000")
    second = first.evolve(status="Running")
    follower.offer(second)
    follower.offer(first)
    assert follower.get(timeout=0) == RunChanges((second,))


def test_past_its_capacity_the_mailbox_drops_everything_and_asks_for_a_fresh_list() -> None:
    hub = StatusHub()
    with hub.subscribe_all(capacity=3) as follower:
        runs = [status(f"task-runner-{i}-00000000") for i in range(5)]
        for run in runs[:3]:
            hub.publish(run)
        hub.publish(runs[0].evolve(status="Running"))  # a job already waiting takes no more room
        assert len(follower._pending) == 3
        hub.publish(runs[3])
        hub.publish(runs[4])  # dropped too: the reader relists anyway
        assert follower.get(timeout=0) == RunChanges((), overflowed=True)
        hub.publish(runs[4].evolve(status="Running"))
        changes = follower.get(timeout=0)
        assert changes is not None and not changes.overflowed
        assert [s.job_name for s in changes.statuses] == [runs[4].job_name]


def test_a_waiting_reader_wakes_on_a_change() -> None:
    hub = StatusHub()
    got: list[RunChanges | None] = []
    with hub.subscribe_all() as follower:
        reader = threading.Thread(target=lambda: got.append(follower.get(timeout=10)))
        reader.start()
        hub.publish(status("task-runner-a-00000000"))
        reader.join(timeout=10)
    assert got and got[0] is not None and got[0].statuses[0].job_name == "task-runner-a-00000000"


def test_heartbeats_wake_only_followers_that_want_them() -> None:
    hub = StatusHub()
    with hub.subscribe_all(heartbeat=True) as pinged, hub.subscribe_all() as quiet:
        hub.nudge_all()
        assert pinged._nudged and not quiet._nudged
        assert pinged.get(timeout=0) is None
        hub.publish(status("task-runner-a-00000000"))
        hub.nudge_all()
        assert pinged.get(timeout=0) is not None
        assert pinged.get(timeout=0) is None, "a heartbeat that came with changes comes next, not lost"
        assert pinged.get(timeout=0) is None and not pinged._nudged


def test_close_ends_followers_and_one_that_comes_after_is_closed_at_once() -> None:
    hub = StatusHub()
    with hub.subscribe_all() as follower:
        hub.close()
        with pytest.raises(HubClosed):
            follower.get(timeout=5)
    with hub.subscribe_all() as late, pytest.raises(HubClosed):
        late.get(timeout=5)


def test_leaving_the_block_unsubscribes_and_per_job_subscribers_still_hear_their_job() -> None:
    hub = StatusHub()
    run = status("task-runner-a-00000000")
    with hub.subscribe(run.job_name) as one, hub.subscribe_all() as follower:
        assert hub.all_runs_subscriber_count() == 1
        hub.publish(run)
        assert one.get(timeout=0) == run
        assert follower.get(timeout=0) == RunChanges((run,))
    assert hub.all_runs_subscriber_count() == 0
    assert hub.subscriber_count() == 0
