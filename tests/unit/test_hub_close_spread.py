"""A stopping hub may spread its subscriptions' closes over a few seconds, so clients do not all reconnect at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.helpers import wait_for
from webapp.hub import AllRunsSubscription, HubClosed, StatusHub, Subscription
from webapp.status import JobStatus


def status(name: str) -> JobStatus:
    return JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="a")


def is_closed(subscription: Subscription | AllRunsSubscription) -> bool:
    try:
        subscription.get(timeout=0)
    except HubClosed:
        return True
    return False


@contextmanager
def subscribed(hub: StatusHub, count: int) -> Iterator[list[Subscription]]:
    with ExitStack() as stack:
        yield [stack.enter_context(hub.subscribe(f"task-runner-{i:03d}-00000000")) for i in range(count)]


@contextmanager
def closing(hub: StatusHub, **options: object) -> Iterator[threading.Thread]:
    closer = threading.Thread(target=hub.close, kwargs=options, daemon=True)
    closer.start()
    try:
        yield closer
    finally:
        closer.join(timeout=30)
        assert not closer.is_alive(), "close(over=...) returns once it has closed everyone"


def test_closes_spread_over_the_window_end_every_subscription() -> None:
    hub = StatusHub()
    with subscribed(hub, 200) as subscriptions, closing(hub, over=2.0) as closer:
        wait_for(lambda: 0 < sum(map(is_closed, subscriptions)) < len(subscriptions), what="some closed, some not")
        closer.join(timeout=30)
        assert all(map(is_closed, subscriptions))


def test_the_order_is_shuffled_and_a_stream_not_yet_closed_still_gets_changes() -> None:
    hub = StatusHub()
    orders: list[list[str]] = []

    def reverse(everyone: list[Subscription | AllRunsSubscription]) -> None:
        everyone.reverse()
        orders.append([s.job_name for s in everyone if isinstance(s, Subscription)])

    with subscribed(hub, 100) as subscriptions, closing(hub, over=2.0, shuffle=reverse):
        first, last = subscriptions[0], subscriptions[-1]
        wait_for(lambda: is_closed(last), what="the first in the shuffled order to close")
        assert orders == [[s.job_name for s in reversed(subscriptions)]]
        hub.publish(status(first.job_name))
        assert first.get(timeout=0) == hub.get(first.job_name), "open until its turn, and still fed"


def test_a_subscription_opened_while_closing_is_closed_at_once() -> None:
    hub = StatusHub()
    with subscribed(hub, 50) as subscriptions, closing(hub, over=2.0):
        wait_for(lambda: any(map(is_closed, subscriptions)), what="the closing to begin")
        with hub.subscribe("task-runner-late-00000000") as late, hub.subscribe_all() as follower:
            with pytest.raises(HubClosed):
                late.get(timeout=0)
            with pytest.raises(HubClosed):
                follower.get(timeout=0)


def test_followers_of_every_run_are_spread_too() -> None:
    hub = StatusHub()
    with ExitStack() as stack:
        followers = [stack.enter_context(hub.subscribe_all()) for _ in range(20)]
        with closing(hub, over=1.0):
            pass
        assert all(map(is_closed, followers))


@pytest.mark.parametrize("over", [0.0, -1.0])
def test_no_window_closes_everyone_at_once(over: float) -> None:
    hub = StatusHub()
    with subscribed(hub, 10) as subscriptions:
        hub.close(over=over)
        assert all(map(is_closed, subscriptions))
