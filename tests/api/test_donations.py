from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient

from tests.helpers import wait_for
from webapp.api.links import _writes_like_status_json, answer_with_links, with_links
from webapp.api.ratelimit import limiter
from webapp.status import JobStatus, Phase, Progress

DONATION: dict[str, Any] = {
    "amount": "25.00",
    "currency": "EUR",
    "donor_name": "Ann Donor",
    "donor_email": "ann@example.org",
    "message": "Keep it up",
}


def runs(app: Flask) -> list[Any]:
    return app.extensions["jobpulse"].store.recent(100)


def test_a_donation_starts_its_task_and_answers_202_with_links(client: FlaskClient, app: Flask) -> None:
    response = client.post("/api/donations", json=DONATION)
    assert response.status_code == 202
    body = response.get_json()
    name = body["job_name"]
    assert name.startswith("task-runner-")
    assert body["mode"] == "legacy"
    assert body["spec"] == "donation-receipt"
    assert body["status"] in ("Queued", "Pending", "Running")
    assert body["terminal"] is False
    assert body["links"] == {
        "status": f"/api/task-status?job_name={name}",
        "events": f"/sse/task-status/{name}",
        "websocket": f"/ws/task-status/{name}",
    }
    assert response.headers["Location"] == body["links"]["status"]
    done = wait_for(
        lambda: (s := client.get(f"/api/jobs/{name}").get_json())["terminal"] and s, timeout=20, what="the task to end"
    )
    assert done["status"] == "Succeeded"
    assert [h["status"] for h in done["history"]] == ["Queued", "Pending", "Running", "Succeeded"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DONATION, "amount": "-1"}, "amount"),
        ({**DONATION, "amount": 1.005}, "amount"),
        ({**DONATION, "currency": "XXX"}, "currency"),
        ({**DONATION, "donor_email": "nope"}, "donor_email"),
        ({**DONATION, "donor_name": ""}, "donor_name"),
        ({k: v for k, v in DONATION.items() if k != "amount"}, "amount"),
        ({**DONATION, "is_admin": True}, "is_admin"),
    ],
)
def test_invalid_donations_are_explained_and_launch_nothing(
    client: FlaskClient, app: Flask, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/donations", json=body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "validation_error"
    assert field in error["fields"]
    assert error["message"]
    assert runs(app) == []


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("amount=5", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("{not json", "application/json", 400, "invalid_request"),
        ("[1, 2]", "application/json", 400, "validation_error"),
        ("null", "application/json", 400, "validation_error"),
        ('{"x": "' + "a" * 20000 + '"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_bodies(client: FlaskClient, app: Flask, data: str, content_type: str, status: int, code: str) -> None:
    response = client.post("/api/donations", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert runs(app) == []


def test_the_same_idempotency_key_returns_the_same_job(client: FlaskClient, app: Flask) -> None:
    headers = {"Idempotency-Key": "click-0001"}
    first = client.post("/api/donations", json=DONATION, headers=headers)
    second = client.post("/api/donations", json=DONATION, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.get_json()["job_name"] == second.get_json()["job_name"]
    assert len(runs(app)) == 1


def test_an_idempotency_key_reused_for_another_donation_is_a_conflict(client: FlaskClient, app: Flask) -> None:
    headers = {"Idempotency-Key": "click-0002"}
    assert client.post("/api/donations", json=DONATION, headers=headers).status_code == 202
    other = client.post("/api/donations", json={**DONATION, "amount": "99"}, headers=headers)
    assert other.status_code == 409
    assert other.get_json()["error"] == "conflict"
    assert len(runs(app)) == 1


@pytest.mark.parametrize("key", ["", "a" * 65, "has space", "semi;colon", "ünï"])
def test_a_malformed_idempotency_key_is_refused(client: FlaskClient, app: Flask, key: str) -> None:
    response = client.post("/api/donations", json=DONATION, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["fields"]
    assert runs(app) == []


def test_the_rate_limit_answers_429_with_retry_after(make_app: Any) -> None:
    client = make_app(RATE_LIMIT="2/minute").test_client()
    assert [client.post("/api/donations", json=DONATION).status_code for _ in range(2)] == [202, 202]
    limited = client.post("/api/donations", json=DONATION)
    assert limited.status_code == 429
    assert limited.get_json()["error"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def test_the_rate_limit_is_checked_in_the_donation_view_only(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_app(RATE_LIMIT="2/minute").test_client()
    passes: list[bool] = []  # each of Flask-Limiter's passes that looked for limits: whether it ran before the view
    resolve = limiter.limit_manager.resolve_limits
    monkeypatch.setattr(limiter.limit_manager, "resolve_limits", lambda *args: passes.append(args[4]) or resolve(*args))

    assert client.get("/healthz").status_code == 200
    assert client.get("/api/task-status", query_string={"job_name": "task-runner-none-00000000"}).status_code == 404
    assert passes == []  # no limit on these: nothing looked for one
    assert [client.post("/api/donations", json=DONATION).status_code for _ in range(3)] == [202, 202, 429]
    assert passes == [False, False, False]  # one check per donation, in the view, and it still counts


def test_max_active_jobs_refuses_launches_while_full(make_app: Any, admin: dict[str, str]) -> None:
    app = make_app(MAX_ACTIVE_JOBS="1")
    client = app.test_client()
    slow = client.post("/api/jobs", json={"spec": "slow", "params": {"seconds": "30"}}, headers=admin)
    assert slow.status_code == 202
    refused = client.post("/api/donations", json=DONATION)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "too_many_active_jobs"
    assert refused.headers["Retry-After"] == "5"
    assert len(runs(app)) == 1
    client.delete(f"/api/jobs/{slow.get_json()['job_name']}", headers=admin)
    assert client.post("/api/donations", json=DONATION).status_code == 202


@pytest.mark.parametrize("debug", [False, True])
def test_the_launch_answer_is_what_jsonify_writes(app: Flask, debug: bool) -> None:
    status = JobStatus.new(
        job_name="task-runner-answer-0000000a", mode="k8s", spec="donation-receipt", pipeline_run_id="a"
    )
    status = status.evolve(status=Phase.PENDING, message="wartet auf „Knoten“ 🙂", progress=Progress(done=1, total=3))
    app.debug = debug  # debug mode: jsonify indents, and so does the answer
    with app.test_request_context("/api/donations", method="POST"):
        assert _writes_like_status_json(app.json) is not debug  # the splice, or jsonify itself in debug mode
        answer = answer_with_links(status, code=202)
        expected = jsonify(with_links(status))
    assert answer.get_data() == expected.get_data()
    assert (answer.status_code, answer.mimetype) == (202, expected.mimetype)
    assert answer.headers["Location"] == f"/api/task-status?job_name={status.job_name}"
