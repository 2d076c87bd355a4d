"""Jobs for real: the app (as its ServiceAccount) against the real control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.cluster.controlplane import ControlPlane
from tests.conftest import ADMIN_TOKEN, PROJECT_ROOT
from tests.helpers import wait_for
from tests.k8s.conftest import jobs_in, write_kubeconfig_to_nowhere
from webapp.admission import Admitter
from webapp.jobspecs import load_jobspecs, render_job

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DONATION = {"amount": "30.00", "currency": "GBP", "donor_name": "K8s Donor", "donor_email": "k8s@example.org"}


def until(client: FlaskClient, name: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    seen: list[dict[str, Any]] = [{}]

    def reached() -> dict[str, Any] | None:
        seen[0] = client.get(f"/api/jobs/{name}").get_json()
        return seen[0] if seen[0].get("status") == wanted else None

    try:
        return wait_for(reached, timeout=timeout, what=f"{name} to be {wanted}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen: {seen[0]}") from None


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "jobspecs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_jobspec_passes_server_side_dry_run(path: Path, cluster: ControlPlane, k8s_namespace: str) -> None:
    spec = load_jobspecs(path.parent)[path.stem]
    manifest = render_job(spec, job_name="task-runner-dryrun-0000abcd", pipeline_run_id="dryrun", params={"a": "1"})
    created = cluster.request("POST", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs?dryRun=All", manifest)
    assert created["metadata"]["name"] == "task-runner-dryrun-0000abcd"
    assert jobs_in(cluster, k8s_namespace) == [] or all(
        j["metadata"]["name"] != "task-runner-dryrun-0000abcd" for j in jobs_in(cluster, k8s_namespace)
    )


def test_a_donation_becomes_a_job_with_name_labels_and_env(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")
    response = client.post("/api/donations", json=DONATION)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["mode"] == "k8s"
    name = body["job_name"]
    job = cluster.request("GET", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}")
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "jobpulse"
    assert labels["jobpulse/spec"] == "donation-receipt"
    assert labels["jobpulse/pipeline-run-id"] == body["pipeline_run_id"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TASK_PARAM_AMOUNT"] == "30.00"
    assert env["TASK_PARAM_CURRENCY"] == "GBP"
    assert json.loads(env["TASK_PARAMS"])["donor_name"] == "K8s Donor"
    done = until(client, name, "Succeeded")
    assert done["succeeded"] == 1
    assert done["history"][0]["status"] == "Queued"
    assert done["history"][-1]["status"] == "Succeeded"


def test_a_failing_pod_fails_the_job_with_the_controllers_reason(k8s_app: Flask) -> None:
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "fail"}, headers=ADMIN).get_json()["job_name"]
    failed = until(client, name, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failed["failed"] == 1


def test_an_active_deadline_fails_with_deadline_exceeded(k8s_app: Flask) -> None:
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "deadline"}, headers=ADMIN).get_json()["job_name"]
    assert until(client, name, "Failed")["reason"] == "DeadlineExceeded"


def test_pending_says_why_the_pod_waits(k8s_app: Flask) -> None:
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "unschedulable"}, headers=ADMIN).get_json()["job_name"]
    waiting = wait_for(
        lambda: (s := client.get(f"/api/jobs/{name}").get_json())["reason"] == "Unschedulable" and s,
        timeout=30,
        what="the Unschedulable reason",
    )
    assert waiting["status"] == "Pending"
    assert client.delete(f"/api/jobs/{name}", headers=ADMIN).get_json()["status"] == "Cancelled"


def test_cancel_deletes_the_job(k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str) -> None:
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN).get_json()["job_name"]
    until(client, name, "Running")
    cancelled = client.delete(f"/api/jobs/{name}", headers=ADMIN)
    assert cancelled.status_code == 200
    assert (cancelled.get_json()["status"], cancelled.get_json()["reason"]) == ("Cancelled", "Cancelled")
    wait_for(
        lambda: (
            cluster.request("GET", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}", missing_ok=True) is None
        ),
        timeout=30,
        what="the Job to be gone",
    )


def test_a_job_deleted_outside_the_app_is_cancelled(k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str) -> None:
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN).get_json()["job_name"]
    until(client, name, "Running")
    cluster.request(
        "DELETE", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}", {"propagationPolicy": "Background"}
    )
    cancelled = until(client, name, "Cancelled")
    assert cancelled["reason"] == "Deleted"


def test_a_job_without_our_label_is_invisible(k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str) -> None:
    client = k8s_app.test_client()
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "task-runner-foreign-0badf00d"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}},
        },
    }
    cluster.request("POST", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs", foreign)
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="sync")
    for path in ("/api/jobs/task-runner-foreign-0badf00d", "/sse/task-status/task-runner-foreign-0badf00d"):
        assert client.get(path).status_code == 404


def test_the_same_idempotency_key_never_creates_a_second_job(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    headers = {"Idempotency-Key": "k8s-double-click"}
    first = client.post("/api/donations", json=DONATION, headers=headers)
    second = client.post("/api/donations", json=DONATION, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    name = first.get_json()["job_name"]
    assert second.get_json()["job_name"] == name
    same_run = [
        j
        for j in jobs_in(cluster, k8s_namespace)
        if j["metadata"]["labels"].get("jobpulse/pipeline-run-id") == first.get_json()["pipeline_run_id"]
    ]
    assert [j["metadata"]["name"] for j in same_run] == [name]


def test_logs_come_from_the_pod(k8s_app: Flask, cluster: ControlPlane) -> None:
    cluster.set_pod_log(["[1/4] validate: ok", "done"])
    client = k8s_app.test_client()
    name = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).get_json()["job_name"]
    until(client, name, "Succeeded")
    text = wait_for(
        lambda: client.get(f"/api/jobs/{name}/logs", headers=ADMIN).get_data(as_text=True), what="the pod log"
    )
    assert "[1/4] validate: ok" in text


def test_an_unreachable_api_server_is_503_and_leaves_nothing(
    make_app: Any, k8s_env: dict[str, str], tmp_path: Path, cluster: ControlPlane, k8s_namespace: str
) -> None:
    nowhere = write_kubeconfig_to_nowhere(k8s_env["KUBECONFIG"], tmp_path / "nowhere.kubeconfig")
    app = make_app(**{**k8s_env, "KUBECONFIG": nowhere})
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "k8s" in ready.get_json()["message"]
    before = len(jobs_in(cluster, k8s_namespace))
    refused = client.post("/api/donations", json=DONATION, headers={"Idempotency-Key": "when-down"})
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "executor_unavailable"
    assert app.extensions["jobpulse"].store.recent(10) == []
    assert len(jobs_in(cluster, k8s_namespace)) == before


def test_a_cancel_while_the_job_is_being_created_leaves_no_job_running(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is recorded before its Job is created: a cancel in between finds no Job to delete.

    The Job the launch then creates must not run on under a run that says ``Cancelled`` (nobody would ever
    see or stop it).
    """
    client = k8s_app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")
    runtime = k8s_app.extensions["jobpulse"]
    executor = runtime.executors["k8s"]
    create = executor._create_job

    def cancel_then_create(manifest: dict[str, Any]) -> Any:
        runtime.runs.cancel(manifest["metadata"]["name"])  # an operator's cancel, just before the create lands
        return create(manifest)

    monkeypatch.setattr(executor, "_create_job", cancel_then_create)
    launched = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN)
    assert launched.status_code == 202, launched.get_json()
    name = launched.get_json()["job_name"]
    assert (until(client, name, "Cancelled")["reason"]) == "Cancelled"
    wait_for(
        lambda: (
            cluster.request("GET", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}", missing_ok=True) is None
        ),
        timeout=30,
        what="the Job created after the cancel to be deleted",
    )


def test_a_waiting_run_admitted_while_the_api_server_is_down_is_not_failed(
    make_app: Any, k8s_env: dict[str, str], cluster: ControlPlane
) -> None:
    """A run accepted into the line (``202``) must not be lost because the API server blinked at its turn.

    Its hand-over is refused for a reason that passes (``ExecutorUnavailable``): it should wait on and be
    admitted again, not end ``Failed`` (``StartError``) as if its spec could never run.
    """
    app = make_app(**{**k8s_env, "MAX_ACTIVE_JOBS": "1", "MAX_QUEUED_JOBS": "3", "MAX_ACTIVE_JOBS_PER_CLIENT": "0"})
    runtime = app.extensions["jobpulse"]
    runtime.admitter.stop()  # this test makes the one pass, at the moment it wants
    client = app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")
    first = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).get_json()["job_name"]
    waiting = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).get_json()
    assert (waiting["status"], waiting["reason"]) == ("Queued", "WaitingForCapacity")
    until(client, first, "Succeeded")
    with cluster.apiserver_stopped():
        Admitter(door=runtime.door, launcher=runtime.launcher, max_active=1).make_pass()
        after = client.get(f"/api/jobs/{waiting['job_name']}").get_json()
    assert (after["status"], after["reason"]) == ("Queued", "WaitingForCapacity"), after
    Admitter(door=runtime.door, launcher=runtime.launcher, max_active=1).make_pass()  # the API server is back
    until(client, waiting["job_name"], "Succeeded")


def test_a_run_waiting_for_capacity_is_cancelled_while_the_api_server_is_down(
    make_app: Any, k8s_env: dict[str, str], cluster: ControlPlane
) -> None:
    """A waiting run has no Job yet: cancelling it needs nothing of the API server, and it never starts after."""
    app = make_app(**{**k8s_env, "MAX_ACTIVE_JOBS": "1", "MAX_QUEUED_JOBS": "3", "MAX_ACTIVE_JOBS_PER_CLIENT": "0"})
    client = app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")
    first = client.post("/api/jobs", json={"spec": "medium"}, headers=ADMIN).get_json()["job_name"]
    waiting = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).get_json()["job_name"]
    with cluster.apiserver_stopped():
        cancelled = client.delete(f"/api/jobs/{waiting}", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.get_json()
    assert (cancelled.get_json()["status"], cancelled.get_json()["reason"]) == ("Cancelled", "Cancelled")
    assert app.extensions["jobpulse"].store.count_waiting() == 0
    until(client, first, "Succeeded")  # its slot is free again: the cancelled run must not take it
    app.extensions["jobpulse"].admitter.make_pass()
    after = client.get(f"/api/jobs/{waiting}").get_json()
    assert (after["status"], after["reason"]) == ("Cancelled", "Cancelled"), after
