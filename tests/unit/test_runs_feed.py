"""The feed of every run: first list, filtered changes, a last word for runs that stop matching, bounded memory."""

from __future__ import annotations

import json
from collections.abc import Iterator

from webapp.api.run_filters import RunFilter
from webapp.api.runs_feed import (
    RunsList,
    runs_feed,
    sse_run_status_message,
    sse_runs_message,
    ws_run_status_message,
    ws_runs_message,
)
from webapp.hub import StatusHub
from webapp.status import JobStatus, Phase

Message = RunsList | JobStatus | None


def run(name: str, spec: str = "quick") -> JobStatus:
    return JobStatus.new(job_name=f"task-runner-{name}-00000000", mode="legacy", spec=spec, pipeline_run_id=name)


def read(feed: Iterator[Message], count: int) -> list[Message]:
    return [next(feed) for _ in range(count)]


def test_after_the_first_list_each_wanted_change_and_a_last_word_for_a_run_that_stops_matching() -> None:
    hub = StatusHub()
    running = run("a").evolve(status=Phase.RUNNING)
    hub.publish(running)
    listed_again: list[bool] = []
    with hub.subscribe_all() as subscription:
        feed = runs_feed(
            subscription,
            first=[running],
            list_runs=lambda: listed_again.append(True) or [],
            wanted=RunFilter(statuses=frozenset({Phase.RUNNING, Phase.QUEUED})),
        )
        assert next(feed) == RunsList([running])
        other = run("b", spec="slow")
        hub.publish(other)
        assert next(feed) == other
        done = running.evolve(status=Phase.SUCCEEDED)
        hub.publish(done)
        assert next(feed) == done, "one last message: it no longer matches"
        failed = other.evolve(status=Phase.FAILED)
        hub.publish(run("c").evolve(status=Phase.SUCCEEDED))  # never matched, never sent: skipped
        hub.publish(failed)
        assert next(feed) == failed
        hub.publish(run("d"))
        assert next(feed).job_name == run("d").job_name  # type: ignore[union-attr]
    assert not listed_again


def test_a_change_that_raced_the_first_list_is_not_sent_again() -> None:
    hub = StatusHub()
    queued = run("a")
    with hub.subscribe_all(heartbeat=True) as subscription:
        hub.publish(queued)
        running = queued.evolve(status=Phase.RUNNING)
        hub.publish(running)  # both while the list is read: the list already has it
        hub.nudge_all()  # and a heartbeat: it is not lost behind the changes the feed skips
        feed = runs_feed(subscription, first=[running], list_runs=list, wanted=RunFilter())
        assert next(feed) == RunsList([running])
        assert next(feed) is None, "the raced change was skipped; then the heartbeat"


def test_an_overflowed_mailbox_brings_a_fresh_list() -> None:
    hub = StatusHub()
    fresh = [run("z")]
    with hub.subscribe_all(capacity=2) as subscription:
        feed = runs_feed(subscription, first=[], list_runs=lambda: fresh, wanted=RunFilter())
        assert next(feed) == RunsList([])
        for name in "abc":
            hub.publish(run(name))
        assert next(feed) == RunsList(fresh)
        d = run("d")
        hub.publish(d)
        assert next(feed) == d


def test_too_many_remembered_runs_bring_a_fresh_list() -> None:
    hub = StatusHub()
    fresh = [run("z")]
    with hub.subscribe_all() as subscription:
        feed = runs_feed(subscription, first=[], list_runs=lambda: fresh, wanted=RunFilter(), tracked_limit=3)
        assert next(feed) == RunsList([])
        runs = [run(name) for name in "defg"]
        for each in runs:
            hub.publish(each)
        messages = read(feed, 5)
        assert messages[:4] == runs
        assert messages[4] == RunsList(fresh), "four unfinished runs remembered, more than 3: relist"


def test_spec_filter() -> None:
    hub = StatusHub()
    with hub.subscribe_all() as subscription:
        feed = runs_feed(subscription, first=[], list_runs=list, wanted=RunFilter(specs=frozenset({"slow"})))
        next(feed)
        hub.publish(run("a"))
        hub.publish(run("b", spec="slow"))
        assert next(feed).spec == "slow"  # type: ignore[union-attr]


def test_wire_forms() -> None:
    status = run("a")
    assert sse_runs_message([status]) == f'event: runs\ndata: {{"runs":[{status.json}]}}\n\n'.encode()
    assert sse_run_status_message(status) == f"event: status\ndata: {status.json}\n\n".encode()
    assert json.loads(ws_runs_message([status])) == {"type": "runs", "runs": [json.loads(status.json)]}
    assert json.loads(ws_runs_message([])) == {"type": "runs", "runs": []}
    assert json.loads(ws_run_status_message(status)) == {"type": "status", "status": json.loads(status.json)}
