"""Hostile input at the edge: each is a 4xx in the one error shape, launches nothing and logs no ERROR."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.test_donations import DONATION, runs

KNOWN_SHAPE = "task-runner-unknown-0000beef"


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the ``webapp`` loggers (which do not propagate to pytest's root handler)."""
    logger = logging.getLogger("webapp")
    logger.addHandler(caplog.handler)
    try:
        yield caplog.records
    finally:
        logger.removeHandler(caplog.handler)


def no_errors(records: list[logging.LogRecord]) -> bool:
    return not [record for record in records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("donor_name", "Ann\nFORGED [4/4] notify: receipt sent"),
        ("donor_name", "Ann\r[1/4] validate: ok"),
        ("donor_name", "Ann\tDonor"),
        ("donor_name", "Ann\x85Donor"),
        ("donor_name", "Ann\x9b31mDonor"),
        ("donor_name", "Ann\u2028Donor"),
        ("donor_name", "Ann \u202erongiS"),
        ("message", "Keep\tit up"),
        ("message", "Keep it up\rFORGED"),
        ("message", "Keep\u2029it up"),
        ("message", "Keep \u2066it\u2069 up"),
        ("amount", "1_000"),
        ("amount", "\u0661\u0660"),
    ],
)
def test_a_donation_with_forging_or_foreign_characters_is_refused(
    client: FlaskClient, app: Flask, errors_logged: list[logging.LogRecord], field: str, value: str
) -> None:
    response = client.post("/api/donations", json={**DONATION, field: value})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert list(body["fields"]) == [field]
    assert runs(app) == []
    assert no_errors(errors_logged)


def test_a_multi_line_message_is_accepted(client: FlaskClient) -> None:
    response = client.post("/api/donations", json={**DONATION, "message": "Keep it up!\r\nFrom all of us"})
    assert response.status_code == 202


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_json_nested_too_deep_is_a_400(
    client: FlaskClient, app: Flask, errors_logged: list[logging.LogRecord], depth: int
) -> None:
    body = '{"amount": ' + "[" * depth + "]" * depth + "}"
    assert len(body) < 16 * 1024
    response = client.post("/api/donations", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "nested" in response.get_json()["message"]
    assert runs(app) == []
    assert no_errors(errors_logged)


def test_a_number_too_long_to_read_is_a_400_that_says_so(
    client: FlaskClient, app: Flask, errors_logged: list[logging.LogRecord]
) -> None:
    body = '{"amount": ' + "9" * 5_000 + ', "currency": "EUR", "donor_name": "A", "donor_email": "a@example.org"}'
    response = client.post("/api/donations", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.get_json()["message"] == "the body's JSON has a number of 5000 digits: too long to read"
    assert runs(app) == []
    assert no_errors(errors_logged)


@pytest.mark.parametrize(
    "path",
    [
        f"/api/task-status?job_name={KNOWN_SHAPE}%0A",
        f"/api/task-status?job_name={KNOWN_SHAPE}%0D%0A",
        f"/api/jobs/{KNOWN_SHAPE}%0A",
        f"/sse/task-status/{KNOWN_SHAPE}%0A",
    ],
)
def test_a_job_name_with_a_trailing_newline_is_a_bad_name_not_an_unknown_job(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_job_name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": "quick", "pipeline_run_id": "nightly\n"}, "pipeline_run_id"),
        ({"spec": "quick", "params": {"SECONDS\n": "1"}}, "params"),
        ({"spec": "quick\n"}, "spec"),
    ],
)
def test_a_launch_with_a_trailing_newline_in_a_name_stores_nothing(
    client: FlaskClient, app: Flask, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/jobs", json=body, headers=admin)
    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert runs(app) == []


@pytest.mark.parametrize("value", ["a\u0000b", "\ud800", "ok \udfff"], ids=["nul", "lone-high-surrogate", "lone-low"])
def test_a_launch_param_no_process_environment_can_hold_is_a_400_not_a_failed_run(
    client: FlaskClient, app: Flask, admin: dict[str, str], errors_logged: list[logging.LogRecord], value: str
) -> None:
    """A NUL or a lone surrogate cannot be put in a task's environment: refused at the edge, not launched to fail."""
    body = json.dumps({"spec": "quick", "params": {"NOTE": value}})  # the raw escapes, as a client sends them
    response = client.post("/api/jobs", data=body, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_error"
    assert list(response.get_json()["fields"]) == ["params"]
    assert runs(app) == []
    assert no_errors(errors_logged)


@pytest.mark.parametrize("value", ["\u0661\u0660", "1_0", " 5", "+5", "5 "])
def test_tail_and_limit_take_plain_ascii_digits_only(client: FlaskClient, admin: dict[str, str], value: str) -> None:
    runs_answer = client.get("/api/runs", query_string={"limit": value}, headers=admin)
    assert (runs_answer.status_code, runs_answer.get_json()["error"]) == (400, "invalid_request")
    logs = client.get(f"/api/jobs/{KNOWN_SHAPE}/logs", query_string={"tail": value}, headers=admin)
    assert (logs.status_code, logs.get_json()["error"]) == (400, "invalid_request")
