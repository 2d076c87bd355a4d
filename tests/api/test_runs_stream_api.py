"""Every run for operators: filters on ``GET /api/runs``, and ``GET /sse/runs``'s auth, checks and first list."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.test_jobs_api import finished
from tests.helpers import captured_logs, parse_sse


def launched(client: FlaskClient, admin: dict[str, str], spec: str) -> str:
    name: str = client.post("/api/jobs", json={"spec": spec}, headers=admin).get_json()["job_name"]
    return name


@pytest.mark.parametrize("path", ["/sse/runs", "/sse/runs?status=Nope", "/api/runs?spec=quick"])
def test_every_run_needs_an_operator(client: FlaskClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"


def test_without_operators_the_stream_of_every_run_is_forbidden(make_app: Any) -> None:
    response = make_app(ADMIN_TOKEN="").test_client().get("/sse/runs", headers={"Authorization": "Bearer x"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


@pytest.mark.parametrize("path", ["/api/runs", "/sse/runs"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=Runing", "status"),
        ("status=running", "status"),
        ("status=Running,Bogus", "status"),
        ("spec=../etc", "spec"),
        ("spec=" + "a" * 64, "spec"),
        ("spec=" + ",".join(f"s{i}" for i in range(51)), "spec"),
        ("status=" + "Running," * 1000, "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=1e3", "limit"),
    ],
)
def test_malformed_filters_are_a_400_in_the_error_shape_and_no_error_log(
    client: FlaskClient, admin: dict[str, str], path: str, query: str, field: str
) -> None:
    with captured_logs() as records:
        response = client.get(f"{path}?{query}", headers=admin)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert field in body["fields"]
    assert not [r for r in records if r.levelno >= logging.ERROR]


def test_recent_runs_filtered_by_status_and_spec(client: FlaskClient, admin: dict[str, str]) -> None:
    quick = launched(client, admin, "quick")
    fail = launched(client, admin, "fail")
    finished(client, quick)
    finished(client, fail)

    def listed(query: str) -> list[str]:
        response = client.get(f"/api/runs?{query}", headers=admin)
        assert response.status_code == 200, response.get_json()
        return [run["job_name"] for run in response.get_json()["runs"]]

    assert listed("") == [fail, quick]
    assert listed("status=Failed") == [fail]
    assert listed("status=Succeeded,Failed") == [fail, quick]
    assert listed("status=Running") == []
    assert listed("spec=quick") == [quick]
    assert listed("spec=quick,fail&status=Failed") == [fail]
    assert listed("spec=&status=") == [fail, quick], "empty lists do not filter"
    assert listed("status=Failed,Succeeded&limit=1") == [fail]


def test_the_stream_of_every_run_starts_with_the_filtered_list(
    app: Flask, client: FlaskClient, admin: dict[str, str]
) -> None:
    quick = launched(client, admin, "quick")
    fail = launched(client, admin, "fail")
    finished(client, quick)
    finished(client, fail)
    hub = app.extensions["jobpulse"].hub
    response = client.get("/sse/runs?status=Failed", headers=admin, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert hub.all_runs_subscriber_count() == 1, "subscribed before the list was read"
    chunks = iter(response.response)
    text = ""
    while "event: runs" not in text:
        text += next(chunks).decode()
    response.close()
    (runs,) = [frame for frame in parse_sse(text) if frame.get("event") == "runs"]
    assert [run["job_name"] for run in runs["data"]["runs"]] == [fail]
    assert runs["data"]["runs"][0] == json.loads(client.get(f"/api/jobs/{fail}").get_data())
    assert hub.all_runs_subscriber_count() == 0, "closing the answer unsubscribes"
