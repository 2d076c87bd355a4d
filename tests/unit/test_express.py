"""Express writes: a change written straight to a waiting stream's socket, and the fall-backs."""

from __future__ import annotations

import socket
import threading

from webapp.api.express import ExpressWriter
from webapp.hub import StatusHub
from webapp.status import JobStatus
from webapp.wire import sse_status_chunk, ws_status_frame


def running(active: int = 1) -> JobStatus:
    first = JobStatus.new(job_name="task-runner-a-00000000", mode="k8s", spec="quick", pipeline_run_id="a")
    return first.evolve(status="Running", active=active)


def test_a_status_the_socket_takes_whole_is_written_once_and_counted() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setblocking(False)
        delivered: list[int] = []
        writer = ExpressWriter(server, sse_status_chunk, delivered=lambda s: delivered.append(s.seq))
        status = running()
        assert writer(status)
        assert client.recv(65536) == sse_status_chunk(status)
        assert delivered == [status.seq]
        assert writer.already_sent(status) and not writer.pending


def test_a_full_socket_falls_back_and_a_partial_write_is_finished_by_flush_in_order() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.setblocking(False)
        writer = ExpressWriter(server, ws_status_frame, delivered=lambda s: None)
        sent = b""
        status = running()
        while True:  # the client reads nothing: the socket fills up
            status = status.evolve(active=status.active + 1)
            if not writer(status):
                break
            sent += ws_status_frame(status)
        if writer.pending:  # a write the socket took only in part
            sent += ws_status_frame(status)
            assert writer.already_sent(status)
        else:  # the socket took none of it: the stream sends it the usual way
            assert not writer.already_sent(status)
        assert not writer(status.evolve(active=0)), "nothing goes express while a write is unfinished"

        received = bytearray()
        reader = threading.Thread(target=lambda: _read_exactly(client, len(sent), received))
        reader.start()
        server.setblocking(True)  # as the stream's own greenlet would: it may wait
        writer.flush()
        reader.join(timeout=10)
        assert bytes(received) == sent  # whole frames, in order, nothing torn or doubled
        assert writer.pending == b""


def _read_exactly(sock: socket.socket, size: int, into: bytearray) -> None:
    while len(into) < size:
        into += sock.recv(65536)


def test_express_is_not_used_outside_a_gevent_worker_or_on_blocking_or_tls_sockets() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setblocking(False)
        # the test process is not monkey-patched by gevent: never express here
        assert ExpressWriter.attach(server, sse_status_chunk, delivered=lambda s: None) is None
        assert ExpressWriter.attach(None, sse_status_chunk, delivered=lambda s: None) is None


def test_a_waiting_reader_is_not_woken_for_what_went_express() -> None:
    hub = StatusHub()
    status = running()
    taken: list[JobStatus] = []

    def express(offered: JobStatus) -> bool:
        taken.append(offered)
        return True

    with hub.subscribe(status.job_name) as subscription:
        got: list[JobStatus | None] = []
        reader = threading.Thread(target=lambda: got.append(subscription.get(timeout=10, express=express)))
        reader.start()
        _wait_until(lambda: subscription._express is not None)
        hub.publish(status)
        following = status.evolve(status="Succeeded")
        hub.publish(following)  # final: always the usual way, so the stream can end itself
        reader.join(timeout=10)
    assert taken == [status]
    assert got == [following]


def test_what_express_cannot_take_wakes_the_reader_with_it() -> None:
    hub = StatusHub()
    status = running()
    with hub.subscribe(status.job_name) as subscription:
        got: list[JobStatus | None] = []
        reader = threading.Thread(target=lambda: got.append(subscription.get(timeout=10, express=lambda s: False)))
        reader.start()
        _wait_until(lambda: subscription._express is not None)
        hub.publish(status)
        reader.join(timeout=10)
    assert got == [status]


def _wait_until(condition: object) -> None:
    from tests.helpers import wait_for

    wait_for(condition, timeout=10, what="the reader to wait")  # type: ignore[arg-type]
