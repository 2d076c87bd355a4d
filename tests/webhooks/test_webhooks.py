"""Completion webhooks against a receiver we do not own (mocked with `responses`), with the real run store."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from tests.conftest import ADMIN_TOKEN
from tests.helpers import captured_logs, wait_for
from tests.storage import SmallDisk
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus
from webapp.webhooks import SIGNATURE_HEADER, WebhookSender

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
