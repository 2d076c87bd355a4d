"""The Redis status channel between two hubs (two instances in one process), on a real redis-server.

Legacy statuses one instance originates reach the other's hub once, without
echoes; after Redis comes back the channel re-subscribes by itself and
catches up from the run store; statuses it could not publish are sent later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.helpers import wait_for
from tests.redis.conftest import RedisServer
from webapp import metrics
from webapp.backoff import Backoff
from webapp.door import StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.hub import StatusHub
from webapp.redis_relay import DEFAULT_CHANNEL, RedisStatusChannel
from webapp.runstore.redis import RedisRunStore
from webapp.status import JobStatus, Phase, finished_by

pytestmark = pytest.mark.redis

MakeChannel = Callable[..., tuple[StatusHub, RedisStatusChannel]]


@pytest.fixture
def make_channel(redis_url: str) -> Iterator[MakeChannel]:
    """An instance's hub with its started channel; all are stopped afterwards."""
    started: list[RedisStatusChannel] = []

    def make(**options: Any) -> tuple[StatusHub, RedisStatusChannel]:
        hub = StatusHub()
        channel = RedisStatusChannel(hub=hub, url=redis_url, **options)
        started.append(channel)
        channel.start()
        wait_for(lambda: channel.unready_reason() is None, timeout=10, what="the channel to subscribe")
        return hub, channel

    yield make
    for channel in started:
        channel.stop()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisRunStore]:
    opened = RedisRunStore(redis_url)
    yield opened
    opened.close()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def channel_log() -> Iterator[Captured]:
    """The channel's log records (the app's logging set-up may stop propagation to pytest's handler)."""
    handler = Captured()
    logger = logging.getLogger("webapp.redis_relay")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def door_of(hub: StatusHub, channel: RedisStatusChannel, redis_url: str) -> StatusDoor:
    """The instance's door, relaying through its channel as build_runtime wires it."""
    return StatusDoor(hub=hub, store=RedisRunStore(redis_url), relay=channel.announce)


def first(door: StatusDoor, status: JobStatus) -> None:
    """A run's first status, written as a launch writes it."""
    door.open(status, manifest=None, client=None)
    door.announce(status)


def legacy_run(name: str, *, mode: str = "legacy") -> JobStatus:
    return JobStatus.new(job_name=f"task-runner-{name}-0000beef", mode=mode, spec="slow", pipeline_run_id=name)


def seq_in(hub: StatusHub, job_name: str) -> int:
    status = hub.get(job_name)
    return status.seq if status else 0


def restarts(reason: str) -> float:
    value = metrics.REDIS_RECONNECTS.labels(reason=reason)._value.get()
    return float(value)


def test_statuses_reach_the_other_hub_once_without_echo(make_channel: MakeChannel, redis_url: str) -> None:
    origin_hub, origin = make_channel()
    other_hub, _ = make_channel()
    door = door_of(origin_hub, origin, redis_url)
    listener = redis.Redis.from_url(redis_url, decode_responses=True)
    tap = listener.pubsub()
    try:
        tap.subscribe(DEFAULT_CHANNEL)
        queued = legacy_run("echo")
        first(door, queued)
        door.change(queued.job_name, status=Phase.PENDING)
        door.change(queued.job_name, active=1)
        first(door, legacy_run("k8s-only", mode="k8s"))
        marker = legacy_run("marker")
        first(door, marker)
        wait_for(lambda: other_hub.get(marker.job_name), timeout=10, what="the marker on the other hub")

        written = origin_hub.get(queued.job_name)
        assert written is not None and (written.seq, written.status, written.active) == (3, Phase.PENDING, 1)
        assert other_hub.get(queued.job_name) == JobStatus.from_json(written.json)
        k8s_written = origin_hub.get("task-runner-k8s-only-0000beef")
        assert k8s_written is not None and other_hub.get(k8s_written.job_name) == JobStatus.from_json(
            k8s_written.json
        ), "what a door writes for a Kubernetes run (a progress report, a cancel) reaches every instance too"
        listener.publish(DEFAULT_CHANNEL, "sentinel")
        heard: list[str] = []
        wait_for(
            lambda: (
                (message := tap.get_message(timeout=0.2)) is not None
                and message["type"] == "message"
                and (heard.append(message["data"]) or message["data"] == "sentinel")
            ),
            timeout=10,
            what="the sentinel",
        )
        about_echo = [JobStatus.from_json(data).seq for data in heard[:-1] if queued.job_name in data]
        assert about_echo == [1, 2, 3], "one message per change, none echoed back by the other instance"
    finally:
        tap.close()
        listener.close()


def test_a_malformed_message_is_ignored(make_channel: MakeChannel, redis_url: str) -> None:
    hub, _ = make_channel()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.publish(DEFAULT_CHANNEL, "{not json")
        status = legacy_run("after-garbage")
        client.publish(DEFAULT_CHANNEL, status.json)
    finally:
        client.close()
    wait_for(lambda: hub.get(status.job_name), timeout=10, what="the valid message after the malformed one")


def test_the_channel_resubscribes_by_itself_and_catches_up_from_the_run_store(
    make_channel: MakeChannel, redis_server: RedisServer, store: RedisRunStore, channel_log: Captured, redis_url: str
) -> None:
    origin_hub, origin = make_channel()
    other_hub, other = make_channel(backoff=Backoff(initial=2.0, maximum=2.0, jitter=0))
    running = legacy_run("resync").evolve(status=Phase.RUNNING)
    first(door_of(origin_hub, origin, redis_url), running)
    wait_for(lambda: seq_in(other_hub, running.job_name) == running.seq, timeout=10, what="the first status")
    errors_before = restarts("error")

    redis_server.stop()
    reason = wait_for(other.unready_reason, timeout=10, what="the channel to notice Redis is gone")
    assert reason.startswith("Redis unreachable: ")
    redis_server.start()
    finished = running.evolve(status=Phase.SUCCEEDED)
    store.save(finished)  # what the origin recorded while the other instance was away

    wait_for(lambda: other.unready_reason() is None, timeout=15, what="the channel to resubscribe")
    assert seq_in(other_hub, running.job_name) == finished.seq, "caught up from the run store"
    assert other_hub.get(running.job_name).terminal  # type: ignore[union-attr]
    assert other.subscriptions >= 2
    assert restarts("error") > errors_before
    restarted = [r for r in channel_log.records if r.getMessage() == "watch.restarted"]
    assert restarted and all(r.__dict__["source"] == "redis" for r in restarted)


def test_a_status_that_could_not_be_published_is_sent_when_redis_is_back(
    make_channel: MakeChannel, redis_server: RedisServer, redis_url: str
) -> None:
    origin_hub, origin = make_channel()
    other_hub, other = make_channel()
    door = door_of(origin_hub, origin, redis_url)
    running = legacy_run("unsent").evolve(status=Phase.RUNNING)
    first(door, running)
    wait_for(lambda: other_hub.get(running.job_name), timeout=10, what="the first status")

    redis_server.stop()
    wait_for(lambda: origin.unready_reason() and other.unready_reason(), timeout=10, what="both to notice")
    finished = door.change(running.job_name, status=Phase.SUCCEEDED)  # Redis is down: kept, to be sent later
    assert finished is not None and finished.terminal
    redis_server.start()

    wait_for(lambda: seq_in(other_hub, running.job_name) == finished.seq, timeout=20, what="the late status")
    late = RedisRunStore(redis_url)
    try:
        assert late.get(running.job_name) == JobStatus.from_json(finished.json), "saved in the store as well"
    finally:
        late.close()


def test_stop_ends_the_loop_promptly(make_channel: MakeChannel) -> None:
    _, channel = make_channel()
    began = time.monotonic()
    channel.stop()
    assert time.monotonic() - began < 2.0
    assert channel._thread is not None and not channel._thread.is_alive()


def test_the_store_says_unavailable_while_redis_is_down(store: RedisRunStore, redis_server: RedisServer) -> None:
    store.save(legacy_run("down"))
    redis_server.stop()
    try:
        with pytest.raises(RunStoreUnavailable) as raised:
            store.ping()
        assert (raised.value.code, raised.value.http_status) == ("store_unavailable", 503)
        assert raised.value.message.startswith("Redis unreachable: ")
        with pytest.raises(RunStoreUnavailable):
            store.get("task-runner-down-0000beef")
    finally:
        redis_server.start()
    store.ping()  # the client reconnects by itself


def test_a_run_finishes_once_on_every_instance_and_a_rerun_link_finishes_nothing_again(
    make_channel: MakeChannel, redis_url: str
) -> None:
    origin_hub, origin = make_channel()
    other_hub, _ = make_channel()
    heard: list[tuple[str, bool]] = []
    other_hub.add_listener(lambda status, previous: heard.append((status.job_name, finished_by(status, previous))))
    door = door_of(origin_hub, origin, redis_url)
    run = legacy_run("amended")
    first(door, run)
    door.change(run.job_name, status=Phase.FAILED, reason="Error")
    wait_for(lambda: (s := other_hub.get(run.job_name)) is not None and s.terminal, timeout=10, what="the finish")
    other_hub.forget(run.job_name)  # the other instance's housekeeping, or it restarted
    door.change(run.job_name, reruns=("task-runner-amended-0000cafe",))
    marker = legacy_run("after-amend")
    first(door, marker)
    wait_for(lambda: other_hub.get(marker.job_name), timeout=10, what="the marker on the other hub")
    amended = other_hub.get(run.job_name)
    assert amended is not None and amended.reruns == ("task-runner-amended-0000cafe",)
    assert [finished for name, finished in heard if name == run.job_name] == [False, True, False], (
        "heard: Queued, then Failed (it finished), then the link with nothing before it (it did not finish again)"
    )


def test_a_rerun_link_added_on_another_instance_reaches_the_instance_that_finished_the_run(
    make_channel: MakeChannel, redis_url: str
) -> None:
    """The finishing instance's own status has its clock's microseconds; the other's copy the wire's milliseconds."""
    origin_hub, origin = make_channel()
    other_hub, other = make_channel()
    door = door_of(origin_hub, origin, redis_url)
    run = legacy_run("linked-elsewhere")
    first(door, run)
    door.change(run.job_name, status=Phase.SUCCEEDED)
    wait_for(lambda: (s := other_hub.get(run.job_name)) is not None and s.terminal, timeout=10, what="the finish")
    door_of(other_hub, other, redis_url).change(run.job_name, reruns=("task-runner-linked-0000cafe",))
    wait_for(
        lambda: (s := origin_hub.get(run.job_name)) is not None and s.reruns == ("task-runner-linked-0000cafe",),
        timeout=10,
        what="the link on the instance that finished the run",
    )
