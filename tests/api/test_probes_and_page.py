from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CONTENT_TYPE_LATEST


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "mode": "legacy"}


def test_a_stopping_process_is_not_ready(app: Flask, client: FlaskClient) -> None:
    app.extensions["jobpulse"].stop()
    assert client.get("/healthz").status_code == 200  # alive: a stop is no reason to kill it
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["error"] == "not_ready"
    assert "stopping: the process is shutting down" in ready.get_json()["reasons"]


def test_metrics_count_launches_and_transitions(client: FlaskClient, admin: dict[str, str]) -> None:
    client.post("/api/jobs", json={"spec": "quick"}, headers=admin)
    text = client.get("/metrics").get_data(as_text=True)
    launched = re.search(r'^jobpulse_launches_total\{mode="legacy",result="launched"\} (\d+\.\d+)$', text, re.M)
    assert launched
    assert float(launched.group(1)) >= 1
    for name in (
        "jobpulse_launch_duration_seconds_bucket",
        "jobpulse_status_transitions_total",
        "jobpulse_open_streams",
        "jobpulse_watch_restarts_total",
        "jobpulse_status_propagation_seconds",
        "jobpulse_dual_comparisons_total",
    ):
        assert name in text
    assert "@" not in text  # no donor data in labels


def test_the_page_is_served_with_a_strict_csp(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline scripts"
    assert "style=" not in html
    assert "<style" not in html
    for code in ("USD", "EUR", "GBP"):
        assert f'<option value="{code}"' in html
    for field in ("amount", "currency", "donor_name", "donor_email", "message"):
        assert f'for="{field}"' in html, f"{field} has a label"
    assert 'aria-live="polite"' in html


def test_static_assets_are_served(client: FlaskClient) -> None:
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        response.close()


def test_metrics_name_their_charset_once(client: FlaskClient) -> None:
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type == CONTENT_TYPE_LATEST
    assert content_type.count("charset=") == 1
