"""The reflector against a fake list and watch: bookmarks, 410 Gone, reconnects, backoff, readiness, stop.

The fake API serves a script: each list call takes the next listing (or
error), each watch call the next watch (or error). When the script runs out,
the fake stops the reflector, so ``run()`` returns in the test's own thread
and every test is deterministic. The end-to-end behaviour against a real API
server stays in ``tests/k8s``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from tests.helpers import captured_logs, run_under_gevent, wait_for
from webapp import metrics
from webapp.backoff import Backoff
from webapp.kube.reflector import READ_TIMEOUT, WATCH_TIMEOUT_RANGE, Reflector, WatchResponse
from webapp.status import utcnow

STOP_DEADLINE = 1.0


def job(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


def listing(version: str, *names: str) -> dict[str, Any]:
    return {"items": [job(name, version) for name in names], "metadata": {"resourceVersion": version}}


def event(kind: str, name: str, version: str) -> dict[str, Any]:
    return {"type": kind, "object": job(name, version)}


def bookmark(version: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Job", "metadata": {"resourceVersion": version}}}


def gone_event() -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version: 1 (5)"}}


class ScriptedWatch:
    """A watch response that sends ``events`` (as the API server frames them: one JSON object a line), then ends.

    ``then`` is raised after the events instead of ending normally.
    """

    def __init__(self, *events: dict[str, Any], then: Exception | None = None) -> None:
        self.events = events
        self.then = then
        self.closed = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        for item in self.events:
            yield json.dumps(item).encode() + b"\n"
        if self.then is not None:
            raise self.then

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class SocketWatch:
    """A watch response read from a real socket, as urllib3's is: a read blocks until the peer sends or shutdown()."""

    def __init__(self) -> None:
        self.ours, self.peer = socket.socketpair()

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        while chunk := self.ours.recv(4096):
            yield chunk

    def shutdown(self) -> None:
        self.ours.shutdown(socket.SHUT_RD)

    def close(self) -> None:
        self.ours.close()
        self.peer.close()

    def release_conn(self) -> None:
        pass


class RecordingBackoff(Backoff):
    """The delays the reflector would wait, recorded; it waits none of them."""

    def __init__(self) -> None:
        super().__init__(initial=1.0, maximum=4.0, jitter=0.0)
        self.delays: list[float] = []

    def next_delay(self) -> float:
        self.delays.append(super().next_delay())
        return 0.0


class Recorder:
    """The handler: what was reported, in order."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, ...]] = []
        self.requested: list[datetime] = []

    def on_list(self, objects: list[dict[str, Any]], *, requested_at: datetime) -> None:
        self.reports.append(("list", *(o["metadata"]["name"] for o in objects)))
        self.requested.append(requested_at)

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.reports.append((kind, obj["metadata"]["name"]))


class FakeApi:
    def __init__(
        self,
        *,
        lists: list[dict[str, Any] | Exception],
        watches: list[WatchResponse | Exception],
    ) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.watched_from: list[str] = []
        self.timeouts: list[int] = []
        self.readiness: list[tuple[bool, str | None]] = []
        """The reflector's ``(synced, last_error)`` at each call after the first."""
        self.handler = Recorder()
        self.backoff = RecordingBackoff()
        self.reflector = Reflector(
            list_objects=self.list_objects, watch_objects=self.watch_objects, handler=self.handler, backoff=self.backoff
        )
        self.calls = 0

    def _note(self) -> None:
        if self.calls:
            self.readiness.append((self.reflector.synced, self.reflector.last_error))
        self.calls += 1

    def list_objects(self) -> dict[str, Any]:
        self._note()
        if not self.lists:
            self.reflector.stop()
            raise OSError("the script has ended")
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch_objects(self, *, resource_version: str, timeout_seconds: int) -> WatchResponse:
        self._note()
        self.watched_from.append(resource_version)
        self.timeouts.append(timeout_seconds)
        if not self.watches:
            self.reflector.stop()
            return ScriptedWatch()
        answer = self.watches.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def run(self) -> FakeApi:
        self.reflector.run()
        return self


def restarts(reason: str) -> float:
    value: float = metrics.WATCH_RESTARTS.labels(source="k8s", reason=reason)._value.get()
    return value


def test_lists_then_watches_from_the_listings_version_with_a_random_server_timeout() -> None:
    before = utcnow()
    with captured_logs("webapp.kube") as records:
        api = FakeApi(lists=[listing("10", "a", "b")], watches=[]).run()
    assert api.handler.reports == [("list", "a", "b")]
    assert api.watched_from == ["10"]
    assert WATCH_TIMEOUT_RANGE[0] <= api.timeouts[0] <= WATCH_TIMEOUT_RANGE[1]
    assert before <= api.handler.requested[0] <= utcnow()
    (listed,) = [r for r in records if r.getMessage() == "watch.listed"]
    assert (listed.source, listed.jobs, listed.resource_version) == ("k8s", 2, "10")  # type: ignore[attr-defined]
    assert api.reflector.synced and api.reflector.last_error is None


def test_bookmarks_advance_the_resource_version_without_reporting_objects() -> None:
    api = FakeApi(
        lists=[listing("10", "a")],
        watches=[ScriptedWatch(bookmark("15"), bookmark("20"))],
    ).run()
    assert api.handler.reports == [("list", "a")]
    assert api.watched_from == ["10", "20"]
    assert api.reflector.resource_version == "20"


def test_events_are_reported_and_a_watch_that_ends_is_reopened_from_the_last_version() -> None:
    api = FakeApi(
        lists=[listing("10", "a")],
        watches=[
            ScriptedWatch(event("ADDED", "b", "11"), event("MODIFIED", "a", "12"), event("DELETED", "b", "13")),
            ScriptedWatch(event("MODIFIED", "a", "14")),
        ],
    ).run()
    assert api.handler.reports == [
        ("list", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("MODIFIED", "a"),
    ]
    assert api.watched_from == ["10", "13", "14"]
    assert len(api.lists) == 0 and api.handler.reports.count(("list", "a")) == 1  # never relisted


@pytest.mark.parametrize(
    "gone",
    [
        pytest.param(lambda: ScriptedWatch(event("ADDED", "b", "11"), gone_event()), id="error-event"),
        pytest.param(lambda: ApiException(status=410, reason="Gone"), id="api-exception"),
    ],
)
def test_410_gone_relists_and_reports_the_whole_new_listing(gone: Any) -> None:
    before = restarts("gone")
    with captured_logs("webapp.kube") as records:
        api = FakeApi(lists=[listing("10", "a", "b"), listing("30", "a", "c")], watches=[gone()]).run()
    assert api.handler.reports[0] == ("list", "a", "b")
    assert api.handler.reports[-1] == ("list", "a", "c")  # b vanished: the handler sees the listing without it
    assert api.watched_from == ["10", "30"]
    assert api.backoff.delays == []  # a relist is not an error
    assert restarts("gone") == before + 1
    assert [(r.source, r.reason) for r in records if r.getMessage() == "watch.restarted"] == [("k8s", "gone")]  # type: ignore[attr-defined]


def test_errors_back_off_longer_each_time_then_the_delay_resets_after_a_watch_ends_well() -> None:
    unreachable = ConnectionRefusedError(111, "Connection refused")
    api = FakeApi(
        lists=[unreachable, unreachable, unreachable, listing("10", "a")],
        watches=[ScriptedWatch(bookmark("11")), ApiException(status=500, reason="Internal Server Error")],
    ).run()
    assert api.backoff.delays == [1.0, 2.0, 4.0, 1.0]
    assert api.handler.reports == [("list", "a")]
    assert api.watched_from == ["10", "11", "11"]  # the failed watch is retried from where it was, without a relist


def test_the_backoff_stops_growing_at_its_maximum() -> None:
    api = FakeApi(lists=[OSError("down")] * 5 + [listing("1")], watches=[]).run()
    assert api.backoff.delays == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_not_synced_while_failing_and_saying_why_in_public_words() -> None:
    api = FakeApi(
        lists=[OSError("10.0.0.5: connection reset"), listing("10")],
        watches=[ApiException(status=403, reason="Forbidden")],
    ).run()
    assert api.readiness == [
        (False, "the Kubernetes API server is unreachable: connection failed"),  # second list: no address
        (True, None),  # first watch, after the listing
        (False, "the Kubernetes API server answered 403 Forbidden"),  # second watch
    ]
    assert api.reflector.synced  # the last watch opened


def test_an_error_event_is_an_error_and_the_watch_is_reopened_from_the_last_version() -> None:
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd is sad"}}
    before = restarts("error")
    api = FakeApi(lists=[listing("10")], watches=[ScriptedWatch(event("ADDED", "a", "12"), error)]).run()
    assert api.handler.reports == [("list",), ("ADDED", "a")]
    assert api.watched_from == ["10", "12"]
    assert api.backoff.delays == [1.0]
    assert restarts("error") == before + 1


def test_a_silent_watch_is_reopened_at_once_from_the_last_version() -> None:
    silence = urllib3.exceptions.ReadTimeoutError(None, "/apis/batch/v1/jobs", "Read timed out.")  # type: ignore[arg-type]
    with captured_logs("webapp.kube") as records:
        api = FakeApi(lists=[listing("10")], watches=[ScriptedWatch(bookmark("11"), then=silence)]).run()
    assert api.watched_from == ["10", "11"]
    assert api.backoff.delays == []
    assert [r.detail for r in records if r.getMessage() == "watch.restarted"] == [  # type: ignore[attr-defined]
        f"no event for {READ_TIMEOUT:g}s; reopening the watch"
    ]


def test_a_watch_that_drops_mid_stream_is_an_error_and_the_response_is_closed() -> None:
    dropped = ScriptedWatch(
        event("ADDED", "a", "12"), then=urllib3.exceptions.ProtocolError("Response ended prematurely")
    )
    api = FakeApi(lists=[listing("10")], watches=[dropped]).run()
    assert dropped.closed
    assert api.watched_from == ["10", "12"]
    assert api.backoff.delays == [1.0]


def test_the_loop_never_dies_on_a_handler_error() -> None:
    api = FakeApi(lists=[listing("10", "a"), listing("10", "a")], watches=[])

    def fail_once(objects: list[dict[str, Any]], *, requested_at: datetime) -> None:
        api.handler.on_list = Recorder.on_list.__get__(api.handler)  # type: ignore[method-assign]
        raise RuntimeError("a bad object")

    api.handler.on_list = fail_once  # type: ignore[method-assign]
    api.run()
    assert api.handler.reports == [("list", "a")]
    assert api.backoff.delays == [1.0]
    assert api.readiness[0] == (False, "the call to the Kubernetes API server failed (RuntimeError)")


def test_stop_returns_at_once_while_the_watch_waits_in_a_read() -> None:
    watch = SocketWatch()
    api = FakeApi(lists=[listing("10")], watches=[watch])
    thread = threading.Thread(target=api.reflector.run, name="reflector", daemon=True)
    thread.start()
    try:
        watch.peer.sendall(json.dumps(event("ADDED", "a", "11")).encode() + b"\n")
        wait_for(lambda: ("ADDED", "a") in api.handler.reports, timeout=5, what="the event to be reported")
        assert api.reflector.watching  # now blocked in recv(): nothing more will come
        started = time.monotonic()
        api.reflector.stop()
        thread.join(STOP_DEADLINE)
        assert not thread.is_alive(), f"run() still running {STOP_DEADLINE:g}s after stop()"
        assert time.monotonic() - started < STOP_DEADLINE
        assert api.watched_from == ["10"]  # stopped: not reopened
        assert not api.reflector.watching
    finally:
        api.reflector.stop()
        thread.join(STOP_DEADLINE)


def test_stop_returns_at_once_under_gevent() -> None:
    """The same, with gevent's monkey-patching, as under the gunicorn worker."""
    run_under_gevent(
        "from tests.unit.test_reflector import test_stop_returns_at_once_while_the_watch_waits_in_a_read as check\n"
        "check()\n"
    )
