"""Every wait explained, and an Indexed Job's progress, on the real control plane (the app as its ServiceAccount).

This module's namespace is its own: a test here may put a ``ResourceQuota``
in it or label it to enforce PodSecurity ``restricted``, and takes it away
again before the next test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.cluster.controlplane import ControlPlane
from tests.conftest import ADMIN_TOKEN, PROJECT_ROOT
from tests.helpers import wait_for
from tests.k8s.apiserver import open_watches, reads
from tests.live.clients import launch, start_curl_sse, status, ws_connect
from tests.live.server import LiveServer
from webapp.status import JobStatus

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def start(client: FlaskClient, spec: str) -> str:
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="the first list")
    response = client.post("/api/jobs", json={"spec": spec}, headers=ADMIN)
    assert response.status_code == 202, response.get_json()
    name: str = response.get_json()["job_name"]
    return name


def reaches(client: FlaskClient, name: str, wanted: Any, *, timeout: float = 60, what: str) -> dict[str, Any]:
    """Poll the run until ``wanted(status)`` holds; its last status in the failure message."""
    seen: list[dict[str, Any]] = [{}]

    def reached() -> dict[str, Any] | None:
        seen[0] = client.get(f"/api/jobs/{name}").get_json()
        return seen[0] if wanted(seen[0]) else None

    try:
        return wait_for(reached, timeout=timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen: {seen[0]}") from None


@contextmanager
def pods_quota_of_zero(cluster: ControlPlane, namespace: str) -> Iterator[None]:
    """A ``ResourceQuota`` of ``pods: "0"`` in ``namespace`` (counted by the quota controller), removed after."""
    path = f"/api/v1/namespaces/{namespace}/resourcequotas"
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    cluster.request("POST", path, quota)
    try:
        wait_for(
            lambda: (cluster.request("GET", f"{path}/no-pods").get("status") or {}).get("hard"),
            timeout=30,
            what="the quota to be counted",
        )
        yield
    finally:
        cluster.request("DELETE", f"{path}/no-pods", missing_ok=True)


@contextmanager
def enforcing_restricted(cluster: ControlPlane, namespace: str) -> Iterator[None]:
    """``namespace`` labelled to enforce the ``restricted`` Pod Security Standard, unlabelled after."""
    label = "pod-security.kubernetes.io/enforce"

    def set_label(value: str | None) -> None:
        cluster.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}",
            {"metadata": {"labels": {label: value}}},
            content_type="application/merge-patch+json",
        )

    set_label("restricted")
    try:
        yield
    finally:
        set_label(None)


# -- Indexed Jobs ------------------------------------------------------------------------


def test_an_indexed_job_reports_its_progress_up_to_n_of_n_and_succeeds(k8s_app: Flask) -> None:
    published: list[JobStatus] = []
    k8s_app.extensions["jobpulse"].hub.add_listener(lambda status, previous: published.append(status))
    client = k8s_app.test_client()
    name = start(client, "indexed-example")
    done = reaches(client, name, lambda s: s["status"] == "Succeeded", what="the Indexed Job to succeed")
    assert done["progress"]["done"] == done["progress"]["total"] == 5, done
    assert done["progress"]["text"] == "5 of 5 indexes done"
    assert done["succeeded"] == 5
    grown = [s.progress.done for s in published if s.job_name == name and s.progress is not None]
    assert grown == sorted(grown) and grown[-1] == 5, grown
    assert any(0 < d < 5 for d in grown), f"progress grew piece by piece, 2 pods at a time: {grown}"
    assert [h["status"] for h in done["history"]][-1] == "Succeeded"
    assert all(h["status"] != "Succeeded" for h in done["history"][:-1]), "progress is no history entry"


# -- FailedCreate: a Job whose pods cannot be created -----------------------------------

CREATE_FAILURE_SEEN = 60
"""How long a run may take to say ``FailedCreate``: usually within a second of the Job controller's first try.

The bound leaves room for its retries on a loaded machine (a backoff that doubles from 1 s; each failed
try records the failure again). Once in CI it was not said in 20 s: the Job controller synced no Job for
up to a minute after several API server restarts in earlier tests, which the test control plane now
waits out after each restart (``ControlPlane._wait_until_jobs_run``).
"""


def test_a_pods_quota_of_zero_says_failed_create_with_the_quota_message_then_clears(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    with pods_quota_of_zero(cluster, k8s_namespace):
        name = start(client, "quick")
        waiting = reaches(
            client,
            name,
            lambda s: s["reason"] == "FailedCreate",
            timeout=CREATE_FAILURE_SEEN,
            what="the FailedCreate reason",
        )
        assert waiting["status"] == "Pending"
        assert "exceeded quota: no-pods" in waiting["message"], waiting
    # the quota is gone: the Job controller's next try creates the pod, and the run goes on to the end
    done = reaches(client, name, lambda s: s["status"] == "Succeeded", timeout=120, what="the run to succeed")
    assert done["reason"] != "FailedCreate"
    history = [h["status"] for h in done["history"]]
    assert history[-2:] == ["Running", "Succeeded"], history


def test_a_jobspec_that_violates_enforced_pod_security_says_failed_create_with_what_it_violates(
    k8s_app: Flask, cluster: ControlPlane, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    with enforcing_restricted(cluster, k8s_namespace):
        name = start(client, "quick")  # no securityContext at all
        waiting = reaches(
            client,
            name,
            lambda s: s["reason"] == "FailedCreate",
            timeout=CREATE_FAILURE_SEEN,
            what="the FailedCreate reason",
        )
        assert waiting["status"] == "Pending"
        assert 'violates PodSecurity "restricted' in waiting["message"], waiting
        assert client.delete(f"/api/jobs/{name}", headers=ADMIN).get_json()["status"] == "Cancelled"


def test_the_events_watch_costs_the_api_server_nothing_per_stream(
    k8s_live_server: LiveServer, cluster: ControlPlane, k8s_namespace: str
) -> None:
    with pods_quota_of_zero(cluster, k8s_namespace):
        name = launch(k8s_live_server, "quick")
        wait_for(
            lambda: status(k8s_live_server, name)["reason"] == "FailedCreate",
            timeout=CREATE_FAILURE_SEEN,
            what="FailedCreate",
        )
        watched = ("events", "jobs", "pods")
        before = {resource: reads(cluster, resource) for resource in watched}
        watches_before = {resource: open_watches(cluster, resource) for resource in watched}
        assert watches_before["events"] >= 1, "the metric filter sees the app's own events watch"
        curls = [start_curl_sse(k8s_live_server, name) for _ in range(20)]
        sockets = [ws_connect(k8s_live_server, name) for _ in range(20)]
        try:
            for _ in range(50):
                assert status(k8s_live_server, name)["reason"] == "FailedCreate"
            watches_during = {resource: open_watches(cluster, resource) for resource in watched}
            after = {resource: reads(cluster, resource) for resource in watched}
        finally:
            for ws in sockets:
                ws.shutdown()
            for curl in curls:
                curl.kill()
                curl.communicate()
        requests.delete(f"{k8s_live_server.url}/api/jobs/{name}", headers=ADMIN, timeout=10)
    assert watches_during == watches_before, "no watch per stream"
    assert after == before, "no read per stream or per poll"


# -- Suspended, and resumed ----------------------------------------------------------------


def test_a_job_suspended_by_hand_says_who_and_resuming_it_streams_on(
    k8s_app: Flask, kube: Any, k8s_namespace: str
) -> None:
    client = k8s_app.test_client()
    name = start(client, "medium")
    reaches(client, name, lambda s: s["status"] == "Running", what="Running")
    kube.patch_namespaced_job(name, k8s_namespace, {"spec": {"suspend": True}}, field_manager="kubectl-patch")
    suspended = reaches(client, name, lambda s: s["status"] == "Suspended", what="Suspended")
    assert suspended["message"] == "suspended by kubectl-patch", suspended
    assert suspended["reason"] == "JobSuspended"
    kube.patch_namespaced_job(name, k8s_namespace, {"spec": {"suspend": False}}, field_manager="kubectl-patch")
    done = reaches(client, name, lambda s: s["status"] == "Succeeded", timeout=90, what="Succeeded after resuming")
    history = [h["status"] for h in done["history"]]
    assert history.index("Suspended") < len(history) - 2 and history[-2:] == ["Running", "Succeeded"], history


# -- readiness: the events watch only explains waits ------------------------------------------


def test_a_role_without_events_keeps_the_app_ready_and_its_jobs_followed(
    make_app: Any, cluster: ControlPlane, k8s_namespace: str
) -> None:
    """An older Role (no ``events`` list/watch): the Events watch fails and retries; the app is ready all along."""
    from webapp import metrics

    role = next(
        d for d in yaml.safe_load_all((PROJECT_ROOT / "deploy/rbac.yaml").read_text()) if d and d["kind"] == "Role"
    )
    name = "jobpulse-no-events"
    rules = [rule for rule in role["rules"] if "events" not in rule["resources"]]
    assert len(rules) == len(role["rules"]) - 1
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces"
    cluster.request("POST", f"/api/v1/namespaces/{k8s_namespace}/serviceaccounts", {"metadata": {"name": name}})
    cluster.request("POST", f"{rbac}/{k8s_namespace}/roles", {"metadata": {"name": name}, "rules": rules})
    cluster.request(
        "POST",
        f"{rbac}/{k8s_namespace}/rolebindings",
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": k8s_namespace}],
        },
    )
    refused = metrics.WATCH_RESTARTS.labels(source="k8s-events", reason="error")
    before = refused._value.get()
    kubeconfig = cluster.service_account_kubeconfig(k8s_namespace, name)
    client = make_app(EXECUTION_MODE="k8s", KUBECONFIG=kubeconfig, K8S_NAMESPACE=k8s_namespace).test_client()
    wait_for(lambda: refused._value.get() > before, timeout=30, what="the events watch to be refused")
    # ready once the Job watch has its first list, which may come after the Events watch's refusal
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="readiness despite the refusal")
    job = start(client, "quick")
    reaches(client, job, lambda s: s["status"] == "Succeeded", what="the run to succeed")
    assert client.get("/readyz").status_code == 200
