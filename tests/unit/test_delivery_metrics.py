"""Messages written to clients are counted, with their delay, whether a stream or a fan-out wrote them."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY

from webapp import metrics
from webapp.api import streams
from webapp.api.express import ExpressWriter
from webapp.api.frames import sse_chunk
from webapp.hub import StatusHub
from webapp.status import JobStatus


def counted() -> tuple[float, float]:
    """(messages written over SSE, delays observed for them) so far."""
    messages = REGISTRY.get_sample_value("jobpulse_stream_messages_total", {"transport": "sse"}) or 0.0
    delays = REGISTRY.get_sample_value("jobpulse_status_propagation_seconds_count", {"transport": "sse"}) or 0.0
    return messages, delays


def test_express_writes_of_a_fan_out_are_each_counted_once_the_fan_out_is_over() -> None:
    hub = StatusHub()
    first = JobStatus.new(job_name="task-runner-a-00000000", mode="k8s", spec="quick", pipeline_run_id="a")
    pairs = [socket.socketpair() for _ in range(3)]
    heard: list[tuple[float, float]] = []
    hub.add_listener(lambda new, previous: heard.append(counted()))  # listeners run after the fan-out
    try:
        with (
            hub.subscribe(
                first.job_name, sink=ExpressWriter(pairs[0][0], sse_chunk, delivered=streams._delivered_sse).in_front_of
            ) as one,
            hub.subscribe(
                first.job_name, sink=ExpressWriter(pairs[1][0], sse_chunk, delivered=streams._delivered_sse).in_front_of
            ),
            hub.subscribe(
                first.job_name, sink=ExpressWriter(pairs[2][0], sse_chunk, delivered=streams._delivered_sse).in_front_of
            ),
        ):
            for writer in hub._subscriptions[first.job_name].values():
                assert isinstance(writer, ExpressWriter)
                writer.waiting = True
            before = counted()
            change = first.evolve(status="Running", active=1)
            assert hub.publish(change)
            for _server, client in pairs:
                assert client.recv(65536) == sse_chunk(change)  # written express, by the fan-out
            assert one.get(timeout=0) is None  # no stream was woken to write it
            assert heard == [(before[0] + 3, before[1] + 3)]
            streams._delivered("sse", change)  # a stream's own write: counted at once
            assert counted() == (before[0] + 4, before[1] + 4)
    finally:
        for server, client in pairs:
            server.close()
            client.close()


def test_a_fan_outs_messages_counted_at_once_read_as_one_by_one() -> None:
    change = JobStatus.new(job_name="task-runner-a-00000000", mode="k8s", spec="quick", pipeline_run_id="a")
    observed = change.updated_at.timestamp()
    written = [(change, observed + delay) for delay in (0.0005, 0.003, 0.03, 2.0, -1.0)]
    messages = REGISTRY.get_sample_value("jobpulse_stream_messages_total", {"transport": "ws"}) or 0.0
    buckets = {
        bound: REGISTRY.get_sample_value("jobpulse_status_propagation_seconds_bucket", {"transport": "ws", "le": bound})
        or 0.0
        for bound in ("0.001", "0.005", "0.05", "2.5", "+Inf")
    }
    metrics.StreamDeliveries("ws")(written)
    assert REGISTRY.get_sample_value("jobpulse_stream_messages_total", {"transport": "ws"}) == messages + 5
    after = {
        bound: REGISTRY.get_sample_value("jobpulse_status_propagation_seconds_bucket", {"transport": "ws", "le": bound})
        for bound in buckets
    }  # cumulative: the late write (clock step back) counts as 0
    assert after == {
        "0.001": buckets["0.001"] + 2,
        "0.005": buckets["0.005"] + 3,
        "0.05": buckets["0.05"] + 4,
        "2.5": buckets["2.5"] + 5,
        "+Inf": buckets["+Inf"] + 5,
    }
