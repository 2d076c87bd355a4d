from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import wait_for


def finished(client: FlaskClient, name: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (s := client.get(f"/api/jobs/{name}").get_json())["terminal"] and s, timeout=timeout, what=name
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/jobs"),
        ("delete", "/api/jobs/task-runner-x-00000000"),
        ("get", "/api/jobs/task-runner-x-00000000/logs"),
        ("get", "/api/runs"),
    ],
)
def test_the_admin_api_needs_the_token(client: FlaskClient, method: str, path: str) -> None:
    missing = getattr(client, method)(path)
    wrong = getattr(client, method)(path, headers={"Authorization": "Bearer wrong-token-0123456789"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


def test_without_admin_token_the_admin_api_is_forbidden(make_app: Any) -> None:
    client = make_app(ADMIN_TOKEN="").test_client()
    response = client.get("/api/runs", headers={"Authorization": "Bearer anything-at-all-here"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_launch_any_jobspec_with_params_and_pipeline_run_id(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/api/jobs", json={"spec": "quick", "params": {"who": "ops"}, "pipeline_run_id": "Nightly.42"}, headers=admin
    )
    assert response.status_code == 202
    body = response.get_json()
    assert body["pipeline_run_id"] == "Nightly.42"
    assert body["job_name"].startswith("task-runner-nightly-42-")
    assert finished(client, body["job_name"])["status"] == "Succeeded"
    logs = client.get(f"/api/jobs/{body['job_name']}/logs", headers=admin)
    assert logs.status_code == 200
    assert logs.mimetype == "text/plain"
    assert logs.get_data(as_text=True) == "quick task ops\n"


def test_an_unknown_spec_is_a_400_naming_the_known_ones(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post("/api/jobs", json={"spec": "nope"}, headers=admin)
    assert response.status_code == 400
    assert response.get_json()["error"] == "unknown_spec"
    assert "quick" in response.get_json()["fields"]["spec"][0]


def test_a_failing_task_says_why(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "fail"}, headers=admin).get_json()["job_name"]
    status = finished(client, name)
    assert status["status"] == "Failed"
    assert status["reason"] == "BackoffLimitExceeded"
    assert "exit code 3" in status["message"]
    assert status["failed"] == 1


def test_cancel_stops_the_task(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "slow"}, headers=admin).get_json()["job_name"]
    wait_for(lambda: client.get(f"/api/jobs/{name}").get_json()["status"] == "Running", what="Running")
    response = client.delete(f"/api/jobs/{name}", headers=admin)
    assert response.status_code == 200
    assert response.get_json()["status"] == "Cancelled"
    assert response.get_json()["terminal"] is True
    again = client.delete(f"/api/jobs/{name}", headers=admin)
    assert again.status_code == 409


def test_runs_are_listed_newest_first(client: FlaskClient, admin: dict[str, str]) -> None:
    names = [client.post("/api/jobs", json={"spec": "quick"}, headers=admin).get_json()["job_name"] for _ in range(3)]
    listed = client.get("/api/runs?limit=2", headers=admin).get_json()["runs"]
    assert [run["job_name"] for run in listed] == names[::-1][:2]
    assert client.get("/api/runs?limit=0", headers=admin).status_code == 400
    assert client.get("/api/runs?limit=x", headers=admin).status_code == 400


def test_logs_of_an_unknown_or_badly_named_job(client: FlaskClient, admin: dict[str, str]) -> None:
    assert client.get("/api/jobs/task-runner-none-00000000/logs", headers=admin).status_code == 404
    assert client.get("/api/jobs/Bad_Name/logs", headers=admin).status_code == 400


def test_logs_tail(client: FlaskClient, admin: dict[str, str], app: Flask) -> None:
    name = client.post("/api/jobs", json={"spec": "fail"}, headers=admin).get_json()["job_name"]
    finished(client, name)
    assert client.get(f"/api/jobs/{name}/logs?tail=1", headers=admin).get_data(as_text=True) == "about to fail\n"
    assert client.get(f"/api/jobs/{name}/logs?tail=0", headers=admin).get_data(as_text=True) == ""


def test_follow_streams_logs_until_the_end(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "slow", "params": {"seconds": "1"}}, headers=admin).get_json()[
        "job_name"
    ]
    response = client.get(f"/api/jobs/{name}/logs?follow=1", headers=admin)
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.get_data(as_text=True) == "started\nfinished\n"
    assert client.get(f"/api/jobs/{name}").get_json()["status"] == "Succeeded"
