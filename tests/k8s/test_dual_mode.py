"""Dual mode: each launch runs on the legacy runner and as a Kubernetes Job; the pair is compared."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.k8s.conftest import write_kubeconfig_to_nowhere

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DONATION = {"amount": "5.00", "currency": "EUR", "donor_name": "Dual Donor", "donor_email": "dual@example.org"}


def report(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/migration/report", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def ready(client: FlaskClient) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")


def test_a_donation_runs_both_and_the_pair_is_compared(make_app: Any, k8s_env: dict[str, str]) -> None:
    app: Flask = make_app(**{**k8s_env, "EXECUTION_MODE": "dual"})
    client = app.test_client()
    ready(client)
    launched = client.post("/api/donations", json=DONATION)
    assert launched.status_code == 202
    primary = launched.get_json()
    assert primary["mode"] == "legacy"
    shadow_name = primary["shadow_job_name"]
    shadow = client.get(f"/api/jobs/{shadow_name}").get_json()
    assert shadow["mode"] == "k8s"
    assert shadow["shadow_job_name"] == primary["job_name"]
    assert shadow["pipeline_run_id"] == primary["pipeline_run_id"]
    totals = wait_for(
        lambda: report(client)["totals"]["runs"] == 1 and report(client), timeout=60, what="the comparison"
    )
    assert totals["totals"]["both_succeeded"] == 1
    assert totals["totals"]["mismatches"] == 0
    assert totals["totals"]["median_seconds"]["legacy"] > 0
    assert totals["execution_mode"] == "dual"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'^jobpulse_dual_comparisons_total\{result="match"\} [1-9]', metrics, re.M)


def test_both_failing_and_a_mismatch_are_told_apart(make_app: Any, k8s_env: dict[str, str]) -> None:
    client = make_app(**{**k8s_env, "EXECUTION_MODE": "dual"}).test_client()
    ready(client)
    for spec in ("fail", "k8s-fails"):
        assert client.post("/api/jobs", json={"spec": spec}, headers=ADMIN).status_code == 202
    done = wait_for(
        lambda: report(client)["totals"]["runs"] == 2 and report(client), timeout=60, what="two comparisons"
    )
    assert done["totals"]["both_failed"] == 1
    assert done["totals"]["mismatches"] == 1
    (mismatch,) = done["recent_mismatches"]
    assert (mismatch["legacy_status"], mismatch["k8s_status"]) == ("Succeeded", "Failed")
    assert mismatch["k8s_reason"] == "BackoffLimitExceeded"


def test_the_donor_follows_the_k8s_job_when_it_is_primary(make_app: Any, k8s_env: dict[str, str]) -> None:
    client = make_app(**{**k8s_env, "EXECUTION_MODE": "dual", "DUAL_PRIMARY": "k8s"}).test_client()
    ready(client)
    primary = client.post("/api/donations", json=DONATION).get_json()
    assert primary["mode"] == "k8s"
    assert client.get(f"/api/jobs/{primary['shadow_job_name']}").get_json()["mode"] == "legacy"


def test_a_shadow_that_cannot_start_never_fails_the_donor(
    make_app: Any, k8s_env: dict[str, str], tmp_path: Path
) -> None:
    nowhere = write_kubeconfig_to_nowhere(k8s_env["KUBECONFIG"], tmp_path / "nowhere.kubeconfig")
    client = make_app(**{**k8s_env, "EXECUTION_MODE": "dual", "KUBECONFIG": nowhere}).test_client()
    launched = client.post("/api/donations", json=DONATION)
    assert launched.status_code == 202
    assert launched.get_json()["mode"] == "legacy"
    assert "shadow_job_name" not in launched.get_json(), "no shadow to point to"
    body = report(client)
    assert body["totals"]["mismatches"] == 1
    (mismatch,) = body["recent_mismatches"]
    assert mismatch["k8s_status"] == "NotLaunched"
    assert "unreachable" in mismatch["k8s_reason"]


def test_the_shadow_of_a_run_waiting_for_capacity_waits_too(
    make_app: Any, k8s_env: dict[str, str], cluster: Any, k8s_namespace: str
) -> None:
    """Over ``MAX_ACTIVE_JOBS`` a launch waits in line: its shadow must not start past the limit meanwhile.

    Else every launch in a line of ``MAX_QUEUED_JOBS`` starts its shadow at once, and the other mode runs
    that many tasks over the limit the line exists to keep.
    """
    env = {"EXECUTION_MODE": "dual", "MAX_ACTIVE_JOBS": "2", "MAX_QUEUED_JOBS": "4", "MAX_ACTIVE_JOBS_PER_CLIENT": "0"}
    client = make_app(**{**k8s_env, **env}).test_client()
    ready(client)
    first = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN).get_json()
    second = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN).get_json()
    assert (second["status"], second["reason"]) == ("Queued", "WaitingForCapacity")
    shadow = client.get(f"/api/jobs/{second['shadow_job_name']}").get_json()
    assert (shadow["status"], shadow["reason"], shadow["queue_position"]) == ("Queued", "WaitingForCapacity", 2)
    jobs = f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/"
    assert cluster.request("GET", jobs + second["shadow_job_name"], missing_ok=True) is None

    for name in (first["job_name"], first["shadow_job_name"]):  # capacity frees: both wait no more
        assert client.delete(f"/api/jobs/{name}", headers=ADMIN).status_code == 200
    for name in (second["job_name"], second["shadow_job_name"]):
        wait_for(
            lambda name=name: client.get(f"/api/jobs/{name}").get_json()["status"] == "Running",
            timeout=60,
            what=f"{name} to be admitted and run",
        )
