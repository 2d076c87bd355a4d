"""Named operators and the audit trail: who launched and cancelled what, and how it ended."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_TOKEN
from tests.helpers import captured_logs
from webapp.errors import RunStoreUnavailable

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
REVOKED = "carol-token-0123456789"
"""Carol's token, no longer in ``ADMIN_TOKENS``."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app(ADMIN_TOKENS=f"alice:{ALICE},bob:{BOB}")  # and ADMIN_TOKEN, the operator "admin"


@pytest.fixture
def webapp_logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs() as records:
        yield records


def audit(client: FlaskClient, query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/api/audit{query}", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200, response.get_json()
    actions: list[dict[str, Any]] = response.get_json()["actions"]
    return actions


def test_each_operator_is_recorded_under_its_name_with_the_outcome(client: FlaskClient) -> None:
    launched = client.post("/api/jobs", json={"spec": "slow"}, headers=bearer(ALICE))
    assert launched.status_code == 202
    name = launched.get_json()["job_name"]
    assert client.delete(f"/api/jobs/{name}", headers=bearer(BOB)).status_code == 200
    assert client.delete(f"/api/jobs/{name}", headers=bearer(BOB)).status_code == 409
    assert client.post("/api/jobs", json={"spec": "nope"}, headers=bearer(ALICE)).status_code == 400
    assert client.post("/api/jobs", json={"spec": 5}, headers=bearer(ADMIN_TOKEN)).status_code == 400

    actions = audit(client)
    assert [(a["actor"], a["action"], a["target"], a["outcome"]) for a in actions] == [
        ("admin", "launch", "", {"status": 400, "error": "validation_error"}),
        ("alice", "launch", "nope", {"status": 400, "error": "unknown_spec"}),
        ("bob", "cancel", name, {"status": 409, "error": "conflict"}),
        ("bob", "cancel", name, {"status": 200, "error": None}),
        ("alice", "launch", name, {"status": 202, "error": None}),
    ]
    assert list(actions[0]) == ["id", "at", "actor", "action", "target", "outcome"]
    assert [a["id"] for a in actions] == sorted((a["id"] for a in actions), reverse=True)
    assert [a["at"] for a in actions] == sorted((a["at"] for a in actions), reverse=True)
    assert all(a["at"].endswith("Z") for a in actions)


def test_each_action_is_logged_and_no_token_is_logged_or_answered(
    client: FlaskClient, webapp_logs: list[logging.LogRecord]
) -> None:
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=bearer(ALICE)).get_json()["job_name"]
    logged = [record for record in webapp_logs if record.getMessage() == "admin.action"]
    assert [
        (r.actor, r.action, r.target, r.http_status, r.error)  # type: ignore[attr-defined]
        for r in logged
    ] == [("alice", "launch", name, 202, None)]
    answered = client.get("/api/audit", headers=bearer(ALICE)).get_data(as_text=True)
    for record in webapp_logs:
        text = f"{record.getMessage()} {record.__dict__}"
        assert ALICE not in text
        assert ADMIN_TOKEN not in text
    assert ALICE not in answered
    assert "token" not in answered


@pytest.mark.parametrize("token", [REVOKED, ALICE[:-1], f"{ALICE}x", ""])
def test_a_revoked_or_wrong_token_is_refused_and_nothing_is_recorded(
    client: FlaskClient, webapp_logs: list[logging.LogRecord], token: str
) -> None:
    launch = client.post("/api/jobs", json={"spec": "quick"}, headers=bearer(token))
    cancel = client.delete("/api/jobs/task-runner-x-00000000", headers=bearer(token))
    listing = client.get("/api/audit", headers=bearer(token))
    for response in (launch, cancel, listing):
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
    assert audit(client) == []
    assert not [record for record in webapp_logs if record.getMessage() == "admin.action"]


def test_admin_token_alone_is_the_operator_admin(make_app: Any) -> None:
    client = make_app().test_client()
    assert client.post("/api/jobs", json={"spec": "quick"}, headers=bearer(ADMIN_TOKEN)).status_code == 202
    assert client.post("/api/jobs", json={"spec": "quick"}, headers=bearer(ALICE)).status_code == 401
    assert [a["actor"] for a in audit(client)] == ["admin"]


def test_admin_tokens_alone_enable_the_admin_api(make_app: Any) -> None:
    client = make_app(ADMIN_TOKEN="", ADMIN_TOKENS=f"alice:{ALICE}").test_client()
    assert client.get("/api/audit", headers=bearer(ALICE)).status_code == 200
    assert client.get("/api/audit", headers=bearer(ADMIN_TOKEN)).status_code == 401


def test_without_any_operator_the_audit_is_forbidden(make_app: Any) -> None:
    client = make_app(ADMIN_TOKEN="").test_client()
    response = client.get("/api/audit", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_the_audit_needs_a_token(client: FlaskClient) -> None:
    response = client.get("/api/audit")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


def test_limit_and_before_page_through_newest_first(client: FlaskClient) -> None:
    for _ in range(4):
        assert client.post("/api/jobs", json={"spec": "nope"}, headers=bearer(BOB)).status_code == 400
    every = audit(client)
    assert len(every) == 4
    assert audit(client, "?limit=2") == every[:2]
    assert audit(client, f"?limit=2&before={every[1]['id']}") == every[2:]
    assert audit(client, f"?before={every[3]['id']}") == []
    assert len(audit(client, "?limit=500")) == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?limit=0", "limit must be a whole number from 1 to 500"),
        ("?limit=501", "limit must be a whole number from 1 to 500"),
        ("?limit=-1", "limit must be a whole number from 1 to 500"),
        ("?limit=ten", "limit must be a whole number from 1 to 500"),
        ("?limit=%205", "limit must be a whole number from 1 to 500"),
        ("?limit=1_0", "limit must be a whole number from 1 to 500"),
        ("?limit=", "limit must be a whole number from 1 to 500"),
        ("?before=0", "before must be an action's id, a whole number from 1"),
        ("?before=x", "before must be an action's id, a whole number from 1"),
        ("?actor=alice", "actor is not a parameter of this route"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(client: FlaskClient, query: str, message: str) -> None:
    response = client.get(f"/api/audit{query}", headers=bearer(ALICE))
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert body["message"] == message
    assert list(body["fields"]) == [message.split(maxsplit=1)[0]]


def test_a_store_that_cannot_take_the_entry_leaves_the_action_and_logs_it_unrecorded(
    app: Flask, client: FlaskClient, webapp_logs: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(action: Any) -> int:
        raise RunStoreUnavailable("Redis unreachable: cannot connect")

    monkeypatch.setattr(app.extensions["jobpulse"].store, "record_action", refuse)
    launched = client.post("/api/jobs", json={"spec": "quick"}, headers=bearer(ALICE))
    assert launched.status_code == 202
    unrecorded = [record for record in webapp_logs if record.getMessage() == "admin.action.unrecorded"]
    assert [
        (r.levelno, r.actor, r.action, r.target, r.reason)  # type: ignore[attr-defined]
        for r in unrecorded
    ] == [(logging.ERROR, "alice", "launch", launched.get_json()["job_name"], "Redis unreachable: cannot connect")]
