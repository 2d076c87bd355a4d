"""An operator's rerun, suspend and resume of Kubernetes Jobs, on the real control plane, as the app's ServiceAccount.

The app runs under exactly the Role in deploy/rbac.yaml (``k8s_env``'s
kubeconfig), so a suspend that works here works with the rights production has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.cluster.controlplane import ControlPlane
from tests.conftest import ADMIN_TOKEN
from tests.helpers import parse_sse, statuses, wait_for
from tests.k8s.conftest import jobs_in
from tests.live.clients import start_curl_sse
from tests.live.server import LiveServer
from webapp.jobspecs import PIPELINE_RUN_ID_LABEL, PROGRESS_TOKEN_ENV

ALICE = "alice-token-0123456789"
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def ready(client: FlaskClient) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")


def reaches(client: FlaskClient, name: str, wanted: Callable[[dict[str, Any]], bool], *, what: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = [{}]

    def reached() -> Any:
        seen[0] = client.get(f"/api/jobs/{name}").get_json()
        return seen[0] if wanted(seen[0]) else None

    try:
        found: dict[str, Any] = wait_for(reached, timeout=60, what=what)
        return found
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen: {seen[0]}") from None


def job_env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def test_a_rerun_of_a_finished_job_is_a_new_job_linked_both_ways_that_finishes(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    ready(client)
    launched = client.post(
        "/api/jobs", json={"spec": "quick", "params": {"who": "ops"}, "pipeline_run_id": "again-1"}, headers=ADMIN
    )
    assert launched.status_code == 202, launched.get_json()
    old = launched.get_json()["job_name"]
    reaches(client, old, lambda s: s["status"] == "Succeeded", what="the first run Succeeded")

    response = client.post(f"/api/jobs/{old}/rerun", headers=ADMIN)
    assert response.status_code == 202, response.get_json()
    new = response.get_json()["job_name"]
    assert response.get_json()["rerun_of"] == old and response.get_json()["mode"] == "k8s"

    done = reaches(client, new, lambda s: s["terminal"], what="the rerun finished")
    assert (done["status"], done["rerun_of"]) == ("Succeeded", old)
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [new]

    jobs = {job["metadata"]["name"]: job for job in jobs_in(cluster, k8s_namespace)}
    assert {old, new} <= set(jobs)
    first, second = job_env(jobs[old]), job_env(jobs[new])
    assert (second["TASK_PARAMS"], second["TASK_JOB_NAME"]) == (first["TASK_PARAMS"], new)
    assert second[PROGRESS_TOKEN_ENV] and second[PROGRESS_TOKEN_ENV] != first[PROGRESS_TOKEN_ENV]
    assert jobs[new]["metadata"]["labels"][PIPELINE_RUN_ID_LABEL] == "again-1"


def test_an_operator_suspends_and_resumes_a_running_job_and_a_live_stream_sees_both(
    make_live_server: Callable[..., LiveServer], k8s_env: dict[str, str], kube: Any, k8s_namespace: str
) -> None:
    server = make_live_server(**k8s_env, ADMIN_TOKENS=f"alice:{ALICE}")
    wait_for(lambda: requests.get(f"{server.url}/readyz", timeout=5).status_code == 200, timeout=30, what="ready")
    launched = requests.post(f"{server.url}/api/jobs", json={"spec": "medium"}, headers=AS_ALICE, timeout=10)
    assert launched.status_code == 202, launched.text
    name = launched.json()["job_name"]

    def now() -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{server.url}/api/jobs/{name}", timeout=10).json()
        return body

    curl = start_curl_sse(server, name)
    try:
        wait_for(lambda: now()["status"] == "Running", timeout=60, what="Running")
        suspended = requests.post(f"{server.url}/api/jobs/{name}/suspend", headers=AS_ALICE, timeout=10)
        assert suspended.status_code == 200, suspended.text
        assert suspended.json()["job_name"] == name
        assert kube.read_namespaced_job(name, k8s_namespace).spec.suspend is True
        said = wait_for(lambda: (s := now())["status"] == "Suspended" and s, timeout=60, what="Suspended")
        assert said["message"] == "suspended by operator alice (jobpulse)", said
        assert said["reason"] == "JobSuspended"
        resumed = requests.post(f"{server.url}/api/jobs/{name}/resume", headers=AS_ALICE, timeout=10)
        assert resumed.status_code == 200, resumed.text
        assert kube.read_namespaced_job(name, k8s_namespace).spec.suspend is False
        output, _ = curl.communicate(timeout=90)  # curl ends by itself once the run has finished
    finally:
        curl.kill()
        curl.communicate()
    frames = parse_sse(output)
    seen = statuses(frames)
    assert "Suspended" in seen, seen
    after = seen[seen.index("Suspended") + 1 :]
    assert "Running" in after and seen[-1] == "Succeeded", seen
    suspended_frame = next(f for f in frames if f.get("event") == "status" and f["data"]["status"] == "Suspended")
    assert suspended_frame["data"]["message"] == "suspended by operator alice (jobpulse)"
    assert frames[-1]["event"] == "end"

    actions = requests.get(f"{server.url}/api/audit", headers=AS_ALICE, timeout=10).json()["actions"]
    assert [(a["actor"], a["action"], a["target"], a["outcome"]["status"]) for a in actions[:2]] == [
        ("alice", "resume", name, 200),
        ("alice", "suspend", name, 200),
    ]
    assert requests.post(f"{server.url}/api/jobs/{name}/suspend", headers=AS_ALICE, timeout=10).status_code == 409


def test_in_dual_mode_a_rerun_runs_in_its_runs_mode_only_and_is_never_compared(
    make_app: Any, k8s_env: dict[str, str], cluster: ControlPlane, k8s_namespace: str
) -> None:
    app: Flask = make_app(**{**k8s_env, "EXECUTION_MODE": "dual"})
    client = app.test_client()
    ready(client)
    launched = client.post("/api/jobs", json={"spec": "quick", "pipeline_run_id": "dual-again"}, headers=ADMIN)
    assert launched.status_code == 202
    primary = launched.get_json()
    shadow = primary["shadow_job_name"]

    def compared() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get("/api/migration/report", headers=ADMIN).get_json()
        return body if body["totals"]["runs"] == 1 else None

    wait_for(compared, timeout=60, what="the pair compared")
    reruns = []
    for old in (primary["job_name"], shadow):
        response = client.post(f"/api/jobs/{old}/rerun", headers=ADMIN)
        assert response.status_code == 202, response.get_json()
        body = response.get_json()
        assert "shadow_job_name" not in body
        reruns.append(body)
    assert [r["mode"] for r in reruns] == ["legacy", "k8s"]
    for rerun in reruns:
        reaches(client, rerun["job_name"], lambda s: s["status"] == "Succeeded", what="the rerun Succeeded")
    labelled = [
        job["metadata"]["name"]
        for job in jobs_in(cluster, k8s_namespace)
        if job["metadata"]["labels"].get(PIPELINE_RUN_ID_LABEL) == "dual-again"
    ]
    assert sorted(labelled) == sorted([shadow, reruns[1]["job_name"]])  # the legacy rerun made no Job
    report = client.get("/api/migration/report", headers=ADMIN).get_json()
    assert report["totals"]["runs"] == 1, json.dumps(report)
    comparisons = app.extensions["jobpulse"].store.comparisons()
    assert [(c.legacy_job, c.k8s_job) for c in comparisons] == [(primary["job_name"], shadow)]
