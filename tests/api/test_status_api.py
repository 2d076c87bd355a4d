from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.helpers import assert_sse_preamble, parse_sse, statuses, wait_for


def test_task_status_polling_with_etag(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "slow"}, headers=admin).get_json()["job_name"]
    wait_for(lambda: client.get(f"/api/jobs/{name}").get_json()["status"] == "Running", what="Running")
    first = client.get(f"/api/task-status?job_name={name}")
    assert first.status_code == 200
    assert first.get_json()["job_name"] == name
    etag = first.headers["ETag"]
    same = client.get(f"/api/task-status?job_name={name}", headers={"If-None-Match": etag})
    assert same.status_code == 304  # Running, and nothing changes while the task sleeps
    client.delete(f"/api/jobs/{name}", headers=admin)
    changed = client.get(f"/api/task-status?job_name={name}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["status"] == "Cancelled"
    assert client.get(f"/api/jobs/{name}").get_json() == changed.get_json()


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/task-status", 400, "bad_request"),
        ("/api/task-status?job_name=Not_A_Name", 400, "invalid_job_name"),
        ("/api/task-status?job_name=task-runner-unknown-00000000", 404, "not_found"),
        ("/api/jobs/" + "a" * 64, 400, "invalid_job_name"),
        ("/api/jobs/task-runner-unknown-00000000", 404, "not_found"),
        ("/sse/task-status/BAD", 400, "invalid_job_name"),
        ("/sse/task-status/task-runner-unknown-00000000", 404, "not_found"),
        ("/no/such/page", 404, "not_found"),
    ],
)
def test_lookups_fail_in_the_one_error_shape(client: FlaskClient, path: str, status: int, code: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str)


def test_a_method_not_allowed_is_json_too(client: FlaskClient) -> None:
    response = client.put("/api/donations")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_sse_stream_through_the_test_client(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=admin).get_json()["job_name"]
    response = client.get(f"/sse/task-status/{name}")
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    text = response.get_data(as_text=True)
    assert_sse_preamble(text)
    frames = parse_sse(text)
    seen = statuses(frames)
    assert seen[-1] == "Succeeded"
    seqs = [int(f["id"]) for f in frames if f.get("event") == "status"]
    assert seqs == sorted(set(seqs))
    assert frames[-1] == {"event": "end", "data": {}}


def test_each_sse_stream_draws_its_own_retry(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=admin).get_json()["job_name"]
    delays = {assert_sse_preamble(client.get(f"/sse/task-status/{name}").get_data(as_text=True)) for _ in range(8)}
    assert len(delays) > 1, "not one retry for every stream: their EventSources would come back together"


def test_a_websocket_route_without_upgrade_is_refused_cleanly(client: FlaskClient, admin: dict[str, str]) -> None:
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=admin).get_json()["job_name"]
    response = client.get(f"/ws/task-status/{name}")
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
