"""Completion webhooks against a receiver we do not own (mocked with `responses`), with the real run store."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import responses

from tests.conftest import ADMIN_TOKEN
from tests.helpers import captured_logs, wait_for
from tests.storage import SmallDisk
from webapp.hub import StatusHub
from webapp.runstore import sqlite as sqlite_store
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus
from webapp.webhooks import LEASE_SECONDS, SIGNATURE_HEADER, WebhookSender, delivery_failure

RECEIVER = "https://hooks.example.org/jobpulse"
SECRET = "webhook-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def verify(call: Any) -> dict[str, Any]:
    body = call.request.body if isinstance(call.request.body, bytes) else call.request.body.encode()
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert call.request.headers[SIGNATURE_HEADER] == expected
    assert call.request.headers["Content-Type"] == "application/json"
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@pytest.fixture
def receiver() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def finished(name: str = "task-runner-w-0000beef") -> JobStatus:
    return JobStatus.new(job_name=name, mode="legacy", spec="quick", pipeline_run_id="w").evolve(status="Succeeded")


def sender(hub: StatusHub, store: SQLiteRunStore) -> WebhookSender:
    webhooks = WebhookSender(store=store, url=RECEIVER, secret=SECRET, first_retry_seconds=0.05, poll_seconds=0.05)
    hub.add_listener(webhooks.on_status)  # as build_runtime wires it
    return webhooks


def test_a_finished_donation_is_posted_once_signed(make_app: Any, receiver: Any) -> None:
    receiver.post(RECEIVER, status=204)
    app = make_app(COMPLETION_WEBHOOK_URL=RECEIVER, WEBHOOK_SECRET=SECRET)
    client = app.test_client()
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).get_json()["job_name"]
    wait_for(lambda: len(receiver.calls) == 1, timeout=20, what="the webhook")
    body = verify(receiver.calls[0])
    assert body == client.get(f"/api/jobs/{name}").get_json()
    assert body["status"] == "Succeeded"
    assert receiver.calls[0].request.headers["X-Jobpulse-Delivery"] == name


def test_a_failing_receiver_is_retried_with_backoff(tmp_path: Path, receiver: Any) -> None:
    receiver.post(RECEIVER, status=503)
    receiver.post(RECEIVER, body="nope")
    receiver.post(RECEIVER, status=200)
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    webhooks = sender(hub, store)
    webhooks.start()
    hub.publish(finished())
    wait_for(lambda: len(receiver.calls) == 2, timeout=10, what="the retry")
    webhooks.stop()
    assert [c.response.status_code for c in receiver.calls] == [503, 200]
    assert receiver.calls[0].request.body == receiver.calls[1].request.body


def test_a_receiver_failing_every_attempt_is_given_up_and_the_outbox_says_so(tmp_path: Path, receiver: Any) -> None:
    receiver.post(RECEIVER, status=503)
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    webhooks = WebhookSender(
        store=store, url=RECEIVER, secret=SECRET, first_retry_seconds=0.01, poll_seconds=0.05, max_attempts=3
    )
    hub.add_listener(webhooks.on_status)
    webhooks.start()
    hub.publish(finished())
    wait_for(lambda: len(receiver.calls) == 3, timeout=10, what="the last attempt")
    webhooks.stop()
    delivery = store.webhook_delivery(finished().job_name)
    assert delivery is not None
    assert delivery.to_dict() == {"state": "given_up", "attempts": 3, "last_error": "HTTP 503"}


def test_several_instances_seeing_the_same_finish_send_it_once(tmp_path: Path, receiver: Any) -> None:
    receiver.post(RECEIVER, status=200)
    store_path = tmp_path / "shared.sqlite3"
    instances = [(StatusHub(), SQLiteRunStore(store_path)) for _ in range(3)]
    senders = [sender(hub, store) for hub, store in instances]
    status = finished()
    for hub, _ in instances:
        hub.publish(status)
    for webhooks in senders:
        webhooks.deliver_due()
    late_hub, late_store = StatusHub(), SQLiteRunStore(store_path)
    late = sender(late_hub, late_store)
    late_hub.publish(status)  # an instance whose watch sees the finish after delivery
    late.deliver_due()
    assert len(receiver.calls) == 1


def test_a_delivery_survives_a_restart(tmp_path: Path, receiver: Any) -> None:
    receiver.post(RECEIVER, body=requests.ConnectionError("receiver down"))
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    first = sender(hub, store)
    hub.publish(finished())
    first.deliver_due()
    first.stop()
    receiver.replace(responses.POST, RECEIVER, status=200)
    restarted = sender(StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3"))
    wait_for(lambda: restarted.deliver_due() == 1, timeout=10, what="the delivery after the restart")
    assert isinstance(receiver.calls[0].response, requests.ConnectionError)
    assert receiver.calls[-1].response.status_code == 200
    assert len(receiver.calls) == 2


def test_webhook_settings_go_together(make_app: Any) -> None:
    from webapp.settings import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        make_app(COMPLETION_WEBHOOK_URL=RECEIVER)


@pytest.mark.storage
def test_a_finish_the_outbox_refused_on_a_full_disk_is_sent_once_the_disk_has_room(
    small_disk: SmallDisk, receiver: Any
) -> None:
    receiver.add(responses.POST, RECEIVER, status=204)
    store = SQLiteRunStore(small_disk.path / "runs.sqlite3")
    hub = StatusHub()
    webhooks = sender(hub, store)
    webhooks.start()
    try:
        small_disk.fill()
        with captured_logs() as records:
            hub.publish(done := finished())
            assert [(r.msg, r.levelname) for r in records] == [("webhook.enqueue_failed", "WARNING")]
        small_disk.free()
        wait_for(lambda: len(receiver.calls) == 1, timeout=15, what="the webhook, once the outbox took it")
    finally:
        webhooks.stop()
        store.close()
    assert verify(receiver.calls[0])["job_name"] == done.job_name


SECRET_PATH = "/hooks/s3cr3t-path?token=s3cr3t-query"
"""A receiver URL's path and query that hold a secret: requests' messages repeat them."""


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that takes connections (its backlog does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def plain_port() -> Iterator[int]:
    """A local port that answers any connection with plain HTTP: a TLS client's handshake fails."""
    stopping = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            while True:
                conn, _ = listener.accept()
                with conn:
                    if stopping.is_set():
                        return
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        yield listener.getsockname()[1]
        stopping.set()
        socket.create_connection(listener.getsockname(), timeout=5).close()  # wakes accept() to see it
        server.join(timeout=5)


def failure_of(url: str, *, timeout: tuple[float, float] = (5, 5)) -> requests.RequestException:
    try:
        requests.post(url, data=b"{}", timeout=timeout)
    except requests.RequestException as exc:
        return exc
    raise AssertionError(f"{url} answered")


@pytest.mark.parametrize(
    ("fails", "shown"),
    [
        (
            lambda ports: failure_of(f"http://127.0.0.1:{ports['closed']}{SECRET_PATH}"),
            r"ConnectionError: the connection failed \(Connection refused\)",
        ),
        (
            lambda ports: failure_of(f"http://127.0.0.1:{ports['silent']}{SECRET_PATH}", timeout=(5, 0.2)),
            r"ReadTimeout: timed out waiting for the answer",
        ),
        (
            lambda ports: failure_of(f"https://127.0.0.1:{ports['plain']}{SECRET_PATH}"),
            r"SSLError: the TLS handshake failed \([A-Z_]+\)",
        ),
        (
            lambda ports: requests.TooManyRedirects(f"Exceeded 30 redirects: {SECRET_PATH}"),
            "TooManyRedirects: too many redirects",
        ),
        (lambda ports: requests.RequestException(f"failed for {SECRET_PATH}"), "RequestException: the request failed"),
    ],
    ids=["refused", "read-timeout", "tls", "redirects", "other"],
)
def test_a_failure_is_stored_without_the_receivers_address(
    closed_port: int,
    silent_port: int,
    plain_port: int,
    fails: Callable[[dict[str, int]], requests.RequestException],
    shown: str,
) -> None:
    error = fails({"closed": closed_port, "silent": silent_port, "plain": plain_port})
    assert "s3cr3t" in str(error) or isinstance(error, requests.Timeout)  # requests' own message names the URL
    text = delivery_failure(error)
    assert re.fullmatch(shown, text), text
    assert not any(word in text for word in ("s3cr3t", "/hooks", "token", "127.0.0.1")), text
    assert not any(str(port) in text for port in (closed_port, silent_port, plain_port)), text


def test_a_failed_delivery_stores_no_url_and_logs_it_whole(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}{SECRET_PATH}"
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    webhooks = WebhookSender(store=store, url=url, secret=SECRET, max_attempts=2, first_retry_seconds=0)
    hub.add_listener(webhooks.on_status)
    hub.publish(finished())
    with captured_logs("webapp.webhooks") as records:
        webhooks.deliver_due()
        failing = store.webhook_delivery(finished().job_name)
        webhooks.deliver_due()  # due again at once (first_retry_seconds=0): the last attempt
        given_up = store.webhook_delivery(finished().job_name)
    refused = "ConnectionError: the connection failed (Connection refused)"
    assert failing is not None and failing.to_dict() == {"state": "failing", "attempts": 1, "last_error": refused}
    assert given_up is not None and given_up.to_dict() == {"state": "given_up", "attempts": 2, "last_error": refused}
    logged = {r.getMessage(): r for r in records}
    retry, abandoned = logged["webhook.retry"], logged["webhook.abandoned"]
    assert (retry.levelname, abandoned.levelname) == ("WARNING", "ERROR")
    for record in (retry, abandoned):  # the log keeps the whole message, as it did: where it went and why
        error = record.__dict__["error"]
        assert error.startswith("ConnectionError: HTTPConnectionPool(host='127.0.0.1'")
        assert "/hooks/s3cr3t-path?token=s3cr3t-query" in error and "Connection refused" in error


def test_a_redirect_is_not_followed_nor_taken_for_a_delivery(tmp_path: Path, receiver: Any) -> None:
    """A 302 would turn the POST into a GET of another page: its 2xx says nothing of the status sent."""
    login = "https://hooks.example.org/login"
    receiver.post(RECEIVER, status=302, headers={"Location": login})
    receiver.get(login, status=200)
    receiver.post(login, status=200)
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    webhooks = sender(hub, store)
    hub.publish(finished())
    assert webhooks.deliver_due() == 0
    assert [call.request.method for call in receiver.calls] == ["POST"]
    delivery = store.webhook_delivery(finished().job_name)
    assert delivery is not None
    assert delivery.to_dict() == {"state": "failing", "attempts": 1, "last_error": "HTTP 302"}


@pytest.fixture
def answers_200_then_stalls() -> Iterator[tuple[int, list[bytes]]]:
    """A receiver that answers ``200 OK`` and a long body's first bytes at once, then nothing until the test ends."""
    requests_seen: list[bytes] = []
    ending = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                requests_seen.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\nok")
                ending.wait()

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        yield listener.getsockname()[1], requests_seen
        ending.set()
        server.join(timeout=5)


def test_a_2xx_is_a_delivery_however_long_or_slow_its_body(
    tmp_path: Path, answers_200_then_stalls: tuple[int, list[bytes]]
) -> None:
    """The status line decides: the body is not read (it could be endless, or trickle in for ever)."""
    port, requests_seen = answers_200_then_stalls
    hub, store = StatusHub(), SQLiteRunStore(tmp_path / "db.sqlite3")
    webhooks = WebhookSender(store=store, url=f"http://127.0.0.1:{port}/hooks", secret=SECRET)
    hub.add_listener(webhooks.on_status)
    hub.publish(finished())
    assert webhooks.deliver_due() == 1
    assert len(requests_seen) == 1
    delivery = store.webhook_delivery(finished().job_name)
    assert delivery is not None
    assert delivery.to_dict() == {"state": "delivered", "attempts": 0, "last_error": None}


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_deliveries_a_slow_receiver_keeps_waiting_are_not_sent_again_by_another_instance(
    tmp_path: Path, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each delivery's lease covers its own attempt: one not started yet when a batch's first lease ran out is not
    claimed by a second sender and then sent again by the first."""
    clock = _Clock()
    monkeypatch.setattr(sqlite_store, "time", SimpleNamespace(time=clock.time, monotonic=time.monotonic))
    path = tmp_path / "shared.sqlite3"
    first = WebhookSender(store=SQLiteRunStore(path), url=RECEIVER, secret=SECRET)
    second = WebhookSender(store=SQLiteRunStore(path), url=RECEIVER, secret=SECRET)
    names = [f"task-runner-w-0000bee{i}" for i in range(6)]
    store = SQLiteRunStore(path)
    for name in names:
        store.enqueue_webhook(name, finished(name).json)
        clock.now += 0.001
    started = clock.now
    second_ran = False

    def slow_answer(request: Any) -> tuple[int, dict[str, str], str]:
        nonlocal second_ran
        if clock.now - started > LEASE_SECONDS and not second_ran:  # the other instance's sender looks now
            second_ran = True
            second.deliver_due()
        clock.now += 15  # each attempt takes as long as the timeouts allow (5 s to connect, 10 s to answer)
        return 200, {}, ""

    receiver.add_callback(responses.POST, RECEIVER, callback=slow_answer)
    first.deliver_due()
    first.deliver_due()
    assert second_ran
    sent = Counter(call.request.headers["X-Jobpulse-Delivery"] for call in receiver.calls)
    assert sent == dict.fromkeys(names, 1)
