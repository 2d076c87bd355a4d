"""Express writes: a change written straight to a waiting stream's socket, and the fall-backs."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from webapp.api import express as express_module
from webapp.api.express import ClientGone, ExpressWriter, GuardedSocket
from webapp.api.frames import sse_chunk, ws_frame
from webapp.api.streams import _changes
from webapp.hub import HubClosed, StatusHub
from webapp.status import JobStatus


def running(message: str | None = None) -> JobStatus:
    first = JobStatus.new(job_name="task-runner-a-00000000", mode="k8s", spec="quick", pipeline_run_id="a")
    return first.evolve(status="Running", active=1, message=message)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection with small buffers: (server side, non-blocking; client side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.setblocking(False)
    with server, client:
        yield server, client


def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(received)} of {size} bytes"
        received += chunk
    return received


def test_a_status_the_socket_takes_whole_is_written_once_and_counted() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setblocking(False)
        delivered: list[int] = []
        writer = ExpressWriter(server, sse_chunk, delivered=lambda s: delivered.append(s.seq))
        status = running()
        assert writer(status)
        assert client.recv(65536) == sse_chunk(status)
        assert delivered == [status.seq]
        assert writer.already_sent(status) and not writer.pending


def test_a_partial_write_is_finished_before_any_other_write_on_the_socket(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = tcp_pair
    writer = ExpressWriter(server, ws_frame, delivered=lambda s: None)
    big = running(message="x" * 300_000)  # far more than the socket buffers hold
    assert not writer(big)
    assert writer.pending, "the socket should have taken only part of the frame"
    assert writer.already_sent(big)  # the stream must not send it again
    assert not writer(running()), "nothing goes express while a frame is unfinished"

    expected = ws_frame(big) + b"\x89\x00"  # the frame, then a ping from simple-websocket's reader
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_exactly(client, len(expected))))
    reader.start()
    server.setblocking(True)  # as a greenlet may: wait for the client
    GuardedSocket(server, writer).send(b"\x89\x00")  # another writer of the socket: it finishes ours first
    reader.join(timeout=10)
    assert received == [expected]
    assert writer.pending == b""


def test_a_client_gone_in_the_middle_of_a_frame_is_said_so(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = tcp_pair
    writer = ExpressWriter(server, sse_chunk, delivered=lambda s: None)
    assert not writer(running(message="x" * 300_000))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
    client.close()
    server.setblocking(True)
    with pytest.raises(ClientGone):
        writer.flush()


def test_express_only_on_a_gevent_worker_and_a_plain_non_blocking_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setblocking(False)
        # this test process is not monkey-patched by gevent: never express here
        assert ExpressWriter.attach(server, sse_chunk, delivered=lambda s: None) is None
        monkeypatch.setattr(express_module, "_cooperative", lambda: True)
        assert isinstance(ExpressWriter.attach(server, sse_chunk, delivered=lambda s: None), ExpressWriter)
        assert ExpressWriter.attach(None, sse_chunk, delivered=lambda s: None) is None

        class TlsSocket:  # bytes must go through the TLS layer, never straight to the file descriptor
            def fileno(self) -> int:
                return server.fileno()

            def getpeercert(self) -> None: ...

        assert ExpressWriter.attach(TlsSocket(), sse_chunk, delivered=lambda s: None) is None
        server.setblocking(True)  # a write could block the publisher
        assert ExpressWriter.attach(server, sse_chunk, delivered=lambda s: None) is None


class StubExpress(ExpressWriter):
    """Takes every status it is offered, as a socket with room for everything would; counts flushes."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, sse_chunk, delivered=lambda s: None)
        self.taken: list[JobStatus] = []
        self.flushes = 0

    def __call__(self, status: JobStatus) -> bool:
        self.taken.append(status)
        self.sent_seq = status.seq
        return True

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
def stub() -> Iterator[StubExpress]:
    server, client = socket.socketpair()
    with server, client:
        yield StubExpress(server)


def test_a_stream_skips_what_went_express_and_ends_at_the_final_status(stub: StubExpress) -> None:
    hub = StatusHub()
    current = running()
    with hub.subscribe(current.job_name, sink=stub.in_front_of) as subscription:
        got: list[JobStatus | None] = []
        reader = threading.Thread(target=lambda: got.extend(_changes(subscription, current, stub)))
        reader.start()
        wait_for(lambda: stub.waiting, timeout=10, what="the stream to wait")
        following = current.evolve(active=2)
        hub.publish(following)
        final = following.evolve(status="Succeeded")
        hub.publish(final)
        reader.join(timeout=10)
    assert stub.taken == [following]
    assert got == [final]
    assert stub.flushes >= 1  # flushed before the final status was written


def test_an_unfinished_express_write_is_finished_even_when_the_server_shuts_down(stub: StubExpress) -> None:
    hub = StatusHub()
    current = running()
    with hub.subscribe(current.job_name, sink=stub.in_front_of) as subscription:
        outcome: list[BaseException] = []

        def stream() -> None:
            try:
                list(_changes(subscription, current, stub))
            except HubClosed as error:
                outcome.append(error)

        reader = threading.Thread(target=stream)
        reader.start()
        wait_for(lambda: stub.waiting, timeout=10, what="the stream to wait")
        hub.close()
        reader.join(timeout=10)
    assert len(outcome) == 1 and stub.flushes == 1


def test_changes_go_express_only_while_the_stream_waits(stub: StubExpress) -> None:
    hub = StatusHub()
    current = running()
    with hub.subscribe(current.job_name, sink=stub.in_front_of) as subscription:
        following = current.evolve(active=2)
        hub.publish(following)  # the stream is busy (not waiting): its subscription has it
        assert stub.taken == [] and subscription.get(timeout=0) == following
        stub.waiting = True  # as in next_change()
        final = following.evolve(status="Failed")
        hub.publish(final)  # a final status never goes express: the stream ends itself
        assert stub.taken == [] and subscription.get(timeout=0) == final
        assert not stub.waiting, "once the stream is woken, nothing may overtake what woke it"


def test_the_stream_and_other_writers_hold_one_lock_that_express_never_waits_for() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.setblocking(False)
        writer = ExpressWriter(server, sse_chunk, delivered=lambda s: None)
        with writer.lock:  # the stream, or simple-websocket's reader, is writing
            assert not writer(running()), "an express write never goes between another writer's bytes"
        status = running()
        assert writer(status)
        assert client.recv(65536) == sse_chunk(status)
        guarded = GuardedSocket(server, writer)
        assert guarded._lock is writer.lock
        assert GuardedSocket(server)._lock is not writer.lock  # without express, a lock of its own
