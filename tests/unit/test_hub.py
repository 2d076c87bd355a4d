from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from tests.helpers import captured_logs
from webapp.errors import RunStoreUnavailable
from webapp.hub import HubClosed, StatusHub, after_fan_out, tally_after_fan_out
from webapp.status import JobStatus, Phase


def status(name: str = "task-runner-a-00000000") -> JobStatus:
    return JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="a")


def test_publish_keeps_the_latest_and_ignores_older_seq() -> None:
    hub = StatusHub()
    first = status()
    second = first.evolve(status="Running")
    assert hub.publish(second)
    assert not hub.publish(first)
    assert hub.get(first.job_name) == second


def test_a_terminal_status_is_never_replaced() -> None:
    hub = StatusHub()
    done = status().evolve(status="Succeeded")
    hub.publish(done)
    later = JobStatus.new(job_name=done.job_name, mode="legacy", spec="quick", pipeline_run_id="a")
    later = later.evolve(status="Running").evolve(status="Pending").evolve(status="Running")
    assert later.seq > done.seq
    assert not hub.publish(later)
    assert hub.get(done.job_name) == done


def test_a_finished_status_takes_only_itself_with_new_rerun_links() -> None:
    hub = StatusHub()
    heard: list[tuple[JobStatus, JobStatus | None]] = []
    hub.add_listener(lambda new, previous: heard.append((new, previous)))
    done = status().evolve(status="Succeeded")
    hub.publish(done)
    linked = done.evolve(reruns=("task-runner-a-11111111",))
    with hub.subscribe(done.job_name) as subscription:
        assert hub.publish(linked)
        assert subscription.get(timeout=1) == linked
    assert hub.get(done.job_name) == linked
    assert heard[-1] == (linked, done)
    assert not hub.publish(linked)  # the same seq again
    failed = JobStatus.from_dict({**linked.to_dict(), "seq": linked.seq + 1, "status": "Failed"})
    assert not hub.publish(failed)
    assert hub.get(done.job_name) == linked


def test_a_slow_subscriber_gets_the_latest_not_a_backlog() -> None:
    hub = StatusHub()
    current = status()
    with hub.subscribe(current.job_name) as subscription:
        for phase in ("Pending", "Running", "Succeeded"):
            current = current.evolve(status=phase)
            hub.publish(current)
        assert subscription.get(timeout=0) == current
        assert subscription.get(timeout=0.01) is None


def test_subscribers_hear_only_their_job() -> None:
    hub = StatusHub()
    mine, other = status("task-runner-a-00000001"), status("task-runner-b-00000002")
    with hub.subscribe(mine.job_name) as subscription:
        hub.publish(other)
        assert subscription.get(timeout=0.01) is None
        hub.publish(mine)
        assert subscription.get(timeout=1) == mine


def test_leaving_the_block_unsubscribes() -> None:
    hub = StatusHub()
    with hub.subscribe("task-runner-a-00000000"):
        assert hub.subscriber_count("task-runner-a-00000000") == 1
    assert hub.subscriber_count() == 0


def test_a_waiting_reader_is_woken_from_another_thread() -> None:
    hub = StatusHub()
    first = status()
    got: list[JobStatus | None] = []
    with hub.subscribe(first.job_name) as subscription:
        reader = threading.Thread(target=lambda: got.append(subscription.get(timeout=10)))
        reader.start()
        hub.publish(first)
        reader.join(timeout=10)
    assert got == [first]


def test_with_real_threads_no_change_is_lost_and_none_goes_backwards() -> None:
    hub = StatusHub()
    current = status()
    changes = [current := current.evolve(active=n) for n in range(1, 3001)]
    seen: list[int] = []
    with hub.subscribe(current.job_name) as subscription:
        writer = threading.Thread(target=lambda: [hub.publish(change) for change in changes])
        writer.start()
        while not seen or seen[-1] < changes[-1].seq:
            got = subscription.get(timeout=10)
            assert got is not None, f"woken for nothing or never woken; last seen seq {seen[-1:]}"
            seen.append(got.seq)
        writer.join(timeout=10)
    assert seen == sorted(set(seen))
    assert seen[-1] == changes[-1].seq


def test_close_ends_every_subscription() -> None:
    hub = StatusHub()
    with hub.subscribe("task-runner-a-00000000") as subscription:
        hub.close()
        with pytest.raises(HubClosed):
            subscription.get(timeout=10)
    with hub.subscribe("task-runner-a-00000000") as late, pytest.raises(HubClosed):
        late.get(timeout=0)


def test_listeners_hear_accepted_changes_with_the_previous_status() -> None:
    hub = StatusHub()
    heard: list[tuple[Phase, Phase | None]] = []
    hub.add_listener(lambda new, old: heard.append((new.status, old.status if old else None)))
    first = status()
    hub.publish(first)
    hub.publish(first)  # a repeat is not a change
    hub.publish(first.evolve(status="Running"))
    assert heard == [(Phase.QUEUED, None), (Phase.RUNNING, Phase.QUEUED)]


def test_heartbeats_wake_only_the_subscriptions_that_want_them() -> None:
    hub = StatusHub()
    first = status()
    with (
        hub.subscribe(first.job_name, heartbeat=True) as sse,
        hub.subscribe(first.job_name) as ws,
    ):
        got: list[JobStatus | None] = []
        reader = threading.Thread(target=lambda: got.append(sse.get()))  # no timeout: only a wake ends it
        reader.start()
        hub.nudge_all(batch=1)
        reader.join(timeout=10)
        assert got == [None]  # woken with nothing new: time for a keep-alive
        assert not ws._nudged and not ws._wake.is_set()  # the WebSocket one was left alone
        hub.publish(first)
        assert sse.get() == first
        assert ws.get() == first  # its first wake is the change: the heartbeat passed it by


def test_a_nudge_that_meets_a_change_waits_behind_it_for_the_next_get() -> None:
    """A WebSocket's parked reader nudges when its client sent something, and reads only when woken with ``None``."""
    hub = StatusHub()
    first = status()
    with hub.subscribe(first.job_name) as subscription:
        hub.publish(first)
        subscription.nudge()  # the client's Close arrives as the change does
        assert subscription.get() == first
        got: list[JobStatus | str | None] = []

        def read() -> None:  # no timeout: only a wake ends it
            try:
                got.append(subscription.get())
            except HubClosed:
                got.append("closed")

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=5)
        subscription.close()  # frees the reader if the nudge was lost
        reader.join(timeout=5)
        assert got == [None], "the nudge was lost: the reader would never read the client's Close"


def test_a_listener_meeting_an_unavailable_store_is_a_warning_without_traceback() -> None:
    hub = StatusHub()

    def store_down(new: JobStatus, old: JobStatus | None) -> None:
        raise RunStoreUnavailable("SQLite: database or disk is full (the disk is full)")

    def bug(new: JobStatus, old: JobStatus | None) -> None:
        raise KeyError("a bug")

    heard: list[JobStatus] = []
    for listener in (store_down, bug, lambda new, old: heard.append(new)):
        hub.add_listener(listener)
    with captured_logs("webapp.hub") as records:
        hub.publish(status())

    assert len(heard) == 1, "a failing listener does not stop the others"
    outage, failure = (record for record in records if record.msg == "hub.listener_failed")
    assert (outage.levelname, outage.exc_info) == ("WARNING", None)
    assert outage.__dict__["error"] == "SQLite: database or disk is full (the disk is full)"

    assert failure.levelname == "ERROR" and failure.exc_info is not None, "a bug keeps its traceback"


def test_changes_go_to_the_sink_put_in_front_of_a_subscription_and_control_to_the_subscription() -> None:
    hub = StatusHub()
    first = status()
    offered: list[JobStatus] = []

    class Sink:
        def offer(self, status: JobStatus) -> None:
            offered.append(status)

    with hub.subscribe(first.job_name, heartbeat=True, sink=lambda subscription: Sink()) as subscription:
        hub.publish(first)
        assert offered == [first]
        assert subscription.get(timeout=0) is None, "the sink took it; nothing reached the subscription"
        hub.nudge_all()
        assert subscription._nudged
        assert hub.subscriber_count(first.job_name) == 1
        hub.close()
        with pytest.raises(HubClosed):
            subscription.get(timeout=0)
    assert hub.subscriber_count() == 0


class Recording:
    """A sink that notes each offer and puts off its bookkeeping until the fan-out is over."""

    def __init__(self, name: str, notes: list[str]) -> None:
        self.name = name
        self.notes = notes

    def offer(self, status: JobStatus) -> None:
        self.notes.append(f"offered {self.name}")
        after_fan_out(self.notes.append, f"counted {self.name}")


def test_bookkeeping_a_sink_puts_off_runs_once_every_sink_has_the_change_and_before_the_listeners() -> None:
    hub = StatusHub()
    notes: list[str] = []
    hub.add_listener(lambda new, previous: notes.append("listener"))
    with (
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Recording("a", notes)),
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Recording("b", notes)),
    ):
        hub.publish(status())
        assert notes == ["offered a", "offered b", "counted a", "counted b", "listener"]
        notes.clear()
        after_fan_out(notes.append, "now")  # outside a fan-out: at once
        assert notes == ["now"]


def test_bookkeeping_that_fails_is_logged_and_the_rest_still_runs() -> None:
    hub = StatusHub()
    notes: list[str] = []
    hub.add_listener(lambda new, previous: notes.append("listener"))

    class Failing:
        def offer(self, status: JobStatus) -> None:
            after_fan_out(lambda: 1 / 0)

    with (
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Failing()),
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Recording("b", notes)),
        captured_logs() as records,
    ):
        assert hub.publish(status())
    assert notes == ["offered b", "counted b", "listener"]
    assert [r.getMessage() for r in records] == ["hub.deferred_failed"]
    after_fan_out(notes.append, "later")  # the failed fan-out left no fan-out behind
    assert notes[-1] == "later"


class Tallying:
    """A sink that adds an item to one shared tally per offer."""

    def __init__(self, name: str, tally: Tally) -> None:
        self.name = name
        self.tally = tally

    def offer(self, status: JobStatus) -> None:
        self.tally.notes.append(f"offered {self.name}")
        tally_after_fan_out(self.tally, (self.name, status.seq))


class Tally:
    """Notes each call with the items it was given."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self.calls: list[list[tuple[str, int]]] = []

    def __call__(self, items: list[tuple[str, int]]) -> None:
        self.calls.append(items)
        self.notes.append(f"tallied {len(items)}")


def test_a_tally_is_called_once_per_fan_out_with_every_sinks_item_in_order_before_the_listeners() -> None:
    hub = StatusHub()
    notes: list[str] = []
    tally = Tally(notes)
    hub.add_listener(lambda new, previous: notes.append("listener"))
    with (
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Tallying("a", tally)),
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Tallying("b", tally)),
        hub.subscribe("task-runner-a-00000000", sink=lambda s: Tallying("c", tally)),
    ):
        first = status()
        hub.publish(first)
        assert notes == ["offered a", "offered b", "offered c", "tallied 3", "listener"]
        assert tally.calls == [[("a", first.seq), ("b", first.seq), ("c", first.seq)]]
        tally_after_fan_out(tally, ("now", 0))  # outside a fan-out: at once, alone
        assert tally.calls[-1] == [("now", 0)]


def test_a_tally_that_fails_is_logged_and_the_listeners_still_hear() -> None:
    hub = StatusHub()
    notes: list[str] = []
    hub.add_listener(lambda new, previous: notes.append("listener"))

    def failing(items: list[int]) -> None:
        raise RuntimeError("tally")

    class Sink:
        def offer(self, status: JobStatus) -> None:
            tally_after_fan_out(failing, 1)

    with hub.subscribe("task-runner-a-00000000", sink=lambda s: Sink()), captured_logs() as records:
        assert hub.publish(status())
    assert notes == ["listener"]
    assert [r.getMessage() for r in records] == ["hub.deferred_failed"]
    seen: list[list[int]] = []
    tally_after_fan_out(seen.append, 2)  # the failed fan-out left no fan-out behind
    assert seen == [[2]]


def fan_outs() -> float:
    return REGISTRY.get_sample_value("jobpulse_fan_out_seconds_count") or 0.0


def test_each_fan_out_to_a_stream_is_timed_once_and_a_change_nobody_follows_is_not() -> None:
    hub = StatusHub()
    before = fan_outs()
    hub.publish(status("task-runner-b-00000000"))  # no stream follows it
    assert fan_outs() == before
    with hub.subscribe("task-runner-a-00000000"), hub.subscribe("task-runner-a-00000000"):
        first = status()
        hub.publish(first)
        hub.publish(first.evolve(status="Running"))
    assert fan_outs() == before + 2
    with hub.subscribe_all():
        hub.publish(status("task-runner-c-00000000"))  # an operator's console follows every job
    assert fan_outs() == before + 3
