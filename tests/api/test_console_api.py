"""The console's reads: ``GET /api/whoami`` and ``GET /api/jobs/<name>/details``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_TOKEN
from webapp.comparison import Comparison
from webapp.status import utcnow

ALICE = "alice-token-0123456789"
DONATION = {"amount": "12.50", "currency": "USD", "donor_name": "Ada Donor", "donor_email": "ada@example.org"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app(ADMIN_TOKENS=f"alice:{ALICE}")


def donate(client: FlaskClient) -> dict[str, Any]:
    response = client.post("/api/donations", json=DONATION)
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def details(client: FlaskClient, name: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{name}/details", headers=bearer(ALICE))
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_whoami_names_the_operator_of_the_token(client: FlaskClient) -> None:
    assert client.get("/api/whoami", headers=bearer(ALICE)).get_json() == {"operator": "alice"}
    assert client.get("/api/whoami", headers=bearer(ADMIN_TOKEN)).get_json() == {"operator": "admin"}


@pytest.mark.parametrize("path", ["/api/whoami", "/api/jobs/task-runner-x/details"])
@pytest.mark.parametrize(
    "headers", [{}, bearer("not-a-token"), {"Authorization": f"Basic {ALICE}"}], ids=["none", "wrong", "basic"]
)
def test_the_console_reads_need_an_operator_token(client: FlaskClient, path: str, headers: dict[str, str]) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_the_console_reads_are_refused_when_the_admin_api_is_off(make_app: Any) -> None:
    client = make_app(ADMIN_TOKEN="").test_client()
    response = client.get("/api/jobs/task-runner-x/details", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_an_unknown_run_is_404_and_a_malformed_name_400(client: FlaskClient) -> None:
    unknown = client.get("/api/jobs/task-runner-nobody-00000000/details", headers=bearer(ALICE))
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "not_found")
    malformed = client.get(f"/api/jobs/{'X' * 300}/details", headers=bearer(ALICE))
    assert (malformed.status_code, malformed.get_json()["error"]) == (400, "invalid_job_name")


def test_the_details_show_the_run_and_mask_the_donor(client: FlaskClient) -> None:
    name = donate(client)["job_name"]
    body = details(client, name)
    assert list(body) == ["status", "manifest", "comparison", "webhook"]
    assert body["status"]["job_name"] == name
    assert body["status"]["history"][0]["status"] == "Queued"
    assert body["comparison"] is None
    assert body["webhook"] is None

    answered = json.dumps(body, ensure_ascii=False)
    assert "ada@example.org" not in answered
    assert "Ada Donor" not in answered
    env = {
        item["name"]: item.get("value") for item in body["manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TASK_PARAM_DONOR_EMAIL"] == "•••"
    assert env["TASK_PARAM_DONOR_NAME"] == "•••"
    assert env["TASK_PARAM_AMOUNT"] == "12.50"
    assert json.loads(env["TASK_PARAMS"]) == {
        "amount": "12.50",
        "currency": "USD",
        "donor_email": "•••",
        "donor_name": "•••",
    }
    assert env["JOBPULSE_PROGRESS_TOKEN"] == "•••"
    assert env["TASK_JOB_NAME"] == name
    assert body["manifest"]["metadata"]["name"] == name


def test_the_details_tell_where_the_webhook_stands(app: Flask, client: FlaskClient) -> None:
    name = donate(client)["job_name"]
    store = app.extensions["jobpulse"].store
    store.enqueue_webhook(name, "{}")
    assert details(client, name)["webhook"] == {"state": "pending", "attempts": 0, "last_error": None}
    store.reschedule_webhook(name, delay=60, error="HTTP 503 from the receiver")
    assert details(client, name)["webhook"] == {
        "state": "failing",
        "attempts": 1,
        "last_error": "HTTP 503 from the receiver",
    }
    store.complete_webhook(name)
    assert details(client, name)["webhook"]["state"] == "delivered"


def test_the_details_show_the_runs_dual_mode_comparison(app: Flask, client: FlaskClient) -> None:
    run = donate(client)
    store = app.extensions["jobpulse"].store
    other = Comparison(
        pipeline_run_id="another-pipeline-run",
        legacy_job="task-runner-another-legacy",
        k8s_job="task-runner-another-k8s",
        legacy_status="Succeeded",
        k8s_status="Succeeded",
        legacy_reason=None,
        k8s_reason=None,
        legacy_seconds=1.0,
        k8s_seconds=1.0,
        compared_at=utcnow(),
    )
    ours = Comparison(
        pipeline_run_id=run["pipeline_run_id"],
        legacy_job=run["job_name"],
        k8s_job="task-runner-shadow-k8s",
        legacy_status="Succeeded",
        k8s_status="Failed",
        legacy_reason=None,
        k8s_reason="BackoffLimitExceeded",
        legacy_seconds=3.0,
        k8s_seconds=None,
        compared_at=utcnow(),
    )
    store.record_comparison(other)
    store.record_comparison(ours)
    comparison = details(client, run["job_name"])["comparison"]
    assert comparison["k8s_job"] == "task-runner-shadow-k8s"
    assert comparison["matched"] is False


def test_the_console_page_is_served_with_the_strict_policy(client: FlaskClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.get_data(as_text=True)
    assert '<script src="/static/admin.js"' in page
    assert "<style" not in page and " style=" not in page and "<script>" not in page
