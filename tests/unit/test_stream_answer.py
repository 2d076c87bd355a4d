"""What the streams loop over, and the SSE answer the server iterates and closes.

The streams park one level shallower than a generator over a generator
(docs/PERFORMANCE.md, "Memory per stream, fourth pass"): these pin what
that flattening must keep.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webapp.api.streams import _Answer, _next_change
from webapp.hub import StatusHub
from webapp.status import JobStatus


def running() -> JobStatus:
    first = JobStatus.new(job_name="task-runner-a-00000000", mode="k8s", spec="quick", pipeline_run_id="a")
    return first.evolve(status="Running", active=1)


def test_the_next_change_is_a_newer_status_none_at_a_heartbeat_and_the_current_one_for_nothing_to_send() -> None:
    hub = StatusHub()
    current = running()
    with hub.subscribe(current.job_name) as subscription:
        subscription.offer(current)  # not newer: nothing to send
        assert _next_change(subscription, current, None) is current
        following = current.evolve(active=2)
        subscription.offer(following)
        assert _next_change(subscription, current, None) == following
        subscription.nudge()  # a heartbeat
        assert _next_change(subscription, following, None) is None


def test_the_server_iterates_the_streams_own_generator() -> None:
    def stream() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    generator = stream()
    answer = _Answer(generator, lambda: None)
    assert iter(answer) is generator  # no __next__ of ours between the server and the stream
    assert list(answer) == [b"a", b"b"]


def test_closing_an_answer_never_started_still_gives_back_what_it_holds() -> None:
    given_back: list[str] = []
    left: list[str] = []

    def stream() -> Iterator[bytes]:
        try:
            yield b"a"
        finally:
            left.append("stream")

    _Answer(stream(), lambda: given_back.append("slot")).close()
    assert given_back == ["slot"] and left == []  # never started: nothing of the stream ran


def test_closing_an_answer_mid_stream_ends_the_stream_then_gives_back_what_it_holds() -> None:
    order: list[str] = []

    def stream() -> Iterator[bytes]:
        try:
            yield b"a"
            yield b"b"
        finally:
            order.append("stream")

    answer = _Answer(stream(), lambda: order.append("slot"))
    assert next(iter(answer)) == b"a"
    answer.close()  # the client left
    assert order == ["stream", "slot"]


def test_a_stream_that_fails_to_close_still_gives_back_what_it_holds() -> None:
    given_back: list[str] = []

    def stream() -> Iterator[bytes]:
        try:
            yield b"a"
        finally:
            raise RuntimeError("closing failed")

    answer = _Answer(stream(), lambda: given_back.append("slot"))
    next(iter(answer))
    with pytest.raises(RuntimeError):
        answer.close()
    assert given_back == ["slot"]
