"""``POST /api/jobs/<name>/progress``: a task reports its progress with its run's own token, and only that."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.test_donations import DONATION
from tests.conftest import ADMIN_TOKEN
from tests.helpers import captured_logs, wait_for
from webapp.jobspecs import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV, container_env


def launch(client: FlaskClient, admin: dict[str, str], spec: str = "slow", **params: str) -> str:
    response = client.post("/api/jobs", json={"spec": spec, "params": params}, headers=admin)
    assert response.status_code == 202, response.get_json()
    name: str = response.get_json()["job_name"]
    return name


def task_env(app: Flask, name: str) -> dict[str, str]:
    """The env jobpulse rendered for the run's task, as the run store keeps it."""
    manifest = app.extensions["jobpulse"].store.manifest(name)
    assert manifest is not None
    return container_env(manifest)


def token_of(app: Flask, name: str) -> str:
    return task_env(app, name)[PROGRESS_TOKEN_ENV]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_progress(client: FlaskClient, name: str, body: Any, token: str | None, **kwargs: Any) -> Any:
    headers = bearer(token) if token is not None else {}
    return client.post(f"/api/jobs/{name}/progress", json=body, headers=headers, **kwargs)


@pytest.fixture
def running(client: FlaskClient, admin: dict[str, str]) -> str:
    name = launch(client, admin, seconds="60")
    wait_for(lambda: client.get(f"/api/jobs/{name}").get_json()["status"] == "Running", what="Running")
    return name


@pytest.fixture
def webapp_logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs() as records:
        yield records


def test_a_report_with_the_runs_token_is_accepted_and_shows_in_the_status(
    client: FlaskClient, app: Flask, running: str
) -> None:
    before = client.get(f"/api/jobs/{running}").get_json()
    response = post_progress(client, running, {"done": 2, "total": 4, "text": "Receipt issued"}, token_of(app, running))
    assert response.status_code == 202
    assert response.get_json() == {"job_name": running, "accepted": True}
    after = client.get(f"/api/jobs/{running}").get_json()
    assert after["progress"]["done"] == 2
    assert after["progress"]["total"] == 4
    assert after["progress"]["text"] == "Receipt issued"
    assert after["progress"]["at"].endswith("Z")
    assert after["seq"] == before["seq"] + 1
    assert after["history"] == before["history"], "a progress tick is no history entry"


def test_total_and_text_are_optional(client: FlaskClient, app: Flask, running: str) -> None:
    response = post_progress(client, running, {"done": 7}, token_of(app, running))
    assert response.status_code == 202
    progress = client.get(f"/api/jobs/{running}").get_json()["progress"]
    assert (progress["done"], progress["total"], progress["text"]) == (7, None, None)


def test_the_progress_url_and_token_are_in_the_tasks_env(client: FlaskClient, app: Flask, running: str) -> None:
    env = task_env(app, running)
    assert (
        env[PROGRESS_URL_ENV] == f"http://localhost/api/jobs/{running}/progress"
    )  # the address the request came in on
    assert len(env[PROGRESS_TOKEN_ENV]) >= 40
    assert env[PROGRESS_TOKEN_ENV] != ADMIN_TOKEN


@pytest.mark.parametrize("trusted_hops", ["0", "1"])
def test_a_requests_host_headers_never_choose_where_a_task_sends_its_token(
    make_app: Any, admin: dict[str, str], trusted_hops: str
) -> None:
    """Unset ``SERVICE_URL``: the base is the address the request came in on, not the ``Host`` a client sent."""
    app = make_app(TRUSTED_PROXY_HOPS=trusted_hops)
    hostile = {"Host": "attacker.example:9999", "X-Forwarded-Host": "attacker.example", "X-Forwarded-For": "192.0.2.9"}
    response = app.test_client().post("/api/jobs", json={"spec": "quick"}, headers={**admin, **hostile})
    assert response.status_code == 202, response.get_json()
    name = response.get_json()["job_name"]
    url = task_env(app, name)[PROGRESS_URL_ENV]
    assert url == f"http://localhost/api/jobs/{name}/progress"
    assert "attacker" not in url


def test_service_url_is_the_base_when_set(make_app: Any, admin: dict[str, str]) -> None:
    app = make_app(SERVICE_URL="http://jobpulse.donations.svc:8000/")
    name = launch(app.test_client(), admin, spec="quick")
    assert task_env(app, name)[PROGRESS_URL_ENV] == f"http://jobpulse.donations.svc:8000/api/jobs/{name}/progress"


def test_each_run_has_its_own_token(client: FlaskClient, app: Flask, admin: dict[str, str], running: str) -> None:
    other = launch(client, admin, seconds="60")
    assert token_of(app, running) != token_of(app, other)
    response = post_progress(client, running, {"done": 1}, token_of(app, other))
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert client.get(f"/api/jobs/{running}").get_json()["progress"] is None


def test_the_admin_token_is_no_progress_token(client: FlaskClient, running: str) -> None:
    response = post_progress(client, running, {"done": 1}, ADMIN_TOKEN)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "token"}],
    ids=["none", "empty", "basic", "no-scheme"],
)
def test_a_missing_token_is_a_401(client: FlaskClient, running: str, headers: dict[str, str]) -> None:
    response = client.post(f"/api/jobs/{running}/progress", json={"done": 1}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


def test_an_unknown_run_is_a_404_and_a_bad_name_a_400(client: FlaskClient) -> None:
    unknown = post_progress(client, "task-runner-nobody-0000beef", {"done": 1}, "whatever-token")
    assert unknown.status_code == 404
    assert unknown.get_json()["error"] == "not_found"
    bad = post_progress(client, "Not_A_Name", {"done": 1}, "whatever-token")
    assert bad.status_code == 400
    assert bad.get_json()["error"] == "invalid_job_name"


def test_a_finished_run_is_a_409_and_keeps_its_last_progress(
    client: FlaskClient, app: Flask, admin: dict[str, str], running: str
) -> None:
    token = token_of(app, running)
    assert post_progress(client, running, {"done": 3, "total": 4}, token).status_code == 202
    assert client.delete(f"/api/jobs/{running}", headers=admin).status_code == 200
    response = post_progress(client, running, {"done": 4, "total": 4}, token)
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"
    final = client.get(f"/api/jobs/{running}").get_json()
    assert final["status"] == "Cancelled"
    assert (final["progress"]["done"], final["progress"]["total"]) == (3, 4)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "done"),
        ({"done": -1}, "done"),
        ({"done": 1.5}, "done"),
        ({"done": 1.0}, "done"),
        ({"done": "1"}, "done"),
        ({"done": True}, "done"),
        ({"done": None}, "done"),
        ({"done": 2**53}, "done"),
        ({"done": 5, "total": 4}, "total"),
        ({"done": 1, "total": -1}, "total"),
        ({"done": 1, "text": "x" * 201}, "text"),
        ({"done": 1, "text": "step\nFORGED"}, "text"),
        ({"done": 1, "text": "step \u202eevil"}, "text"),
        ({"done": 1, "text": 3}, "text"),
        ({"done": 1, "percent": 25}, "percent"),
        ([1, 4], "_schema"),
    ],
)
def test_a_bad_report_is_a_400_naming_the_field_and_logs_no_error(
    client: FlaskClient, app: Flask, running: str, webapp_logs: list[logging.LogRecord], body: Any, field: str
) -> None:
    response = post_progress(client, running, body, token_of(app, running))
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "validation_error"
    assert field in answer["fields"]
    assert client.get(f"/api/jobs/{running}").get_json()["progress"] is None
    assert not [r for r in webapp_logs if r.levelno >= logging.ERROR]


def test_a_body_that_is_not_json_or_too_long_is_refused(client: FlaskClient, app: Flask, running: str) -> None:
    token = token_of(app, running)
    not_json = client.post(f"/api/jobs/{running}/progress", data="done=1", headers=bearer(token))
    assert not_json.status_code == 415
    assert not_json.get_json()["error"] == "unsupported_media_type"
    long = json.dumps({"done": 1, "text": "x" * 2000})
    too_long = client.post(
        f"/api/jobs/{running}/progress", data=long, content_type="application/json", headers=bearer(token)
    )
    assert too_long.status_code == 413
    assert too_long.get_json()["error"] == "payload_too_large"


def test_no_answer_and_no_log_line_shows_a_token(
    client: FlaskClient, app: Flask, admin: dict[str, str], webapp_logs: list[logging.LogRecord]
) -> None:
    answers = []
    donation = client.post("/api/donations", json=DONATION)
    answers.append(donation.get_data(as_text=True))
    launched = client.post("/api/jobs", json={"spec": "slow", "params": {"seconds": "60"}}, headers=admin)
    answers.append(launched.get_data(as_text=True))
    names = [donation.get_json()["job_name"], launched.get_json()["job_name"]]
    tokens = [token_of(app, name) for name in names]
    post_progress(client, names[1], {"done": 1}, tokens[0])  # refused: logged, without either token
    post_progress(client, names[1], {"done": 1}, tokens[1])
    for name in names:
        answers.append(client.get(f"/api/jobs/{name}").get_data(as_text=True))
        answers.append(client.get(f"/api/task-status?job_name={name}").get_data(as_text=True))
    answers.append(client.get("/api/runs", headers=admin).get_data(as_text=True))
    logged = [json.dumps(record.__dict__, default=str) for record in webapp_logs]
    assert any("progress.refused" in line for line in logged)
    for token in tokens:
        assert not [answer for answer in answers if token in answer]
        assert not [line for line in logged if token in line]
