"""Logs that outlive the pod: a Job garbage-collected at once still has its logs, capped, from the run store."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.cluster.controlplane import ControlPlane
from tests.conftest import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.k8s.conftest import jobs_in
from tests.k8s.test_k8s_jobs import until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def pods_of(cluster: ControlPlane, namespace: str, job_name: str) -> list[dict[str, Any]]:
    selector = f"batch.kubernetes.io%2Fjob-name%3D{job_name}"
    listing = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    items: list[dict[str, Any]] = listing["items"]
    return items


def test_the_logs_of_a_garbage_collected_job_come_from_the_run_store(
    make_app: Any, k8s_env: dict[str, str], cluster: ControlPlane, k8s_namespace: str
) -> None:
    lines = [f"step {n:03d} of 200: ok" for n in range(200)]  # 20 bytes a line
    cluster.set_pod_log(lines)
    app: Flask = make_app(**k8s_env, LOG_TAIL_BYTES="210")
    client = app.test_client()
    name = client.post("/api/jobs", json={"spec": "gone"}, headers=ADMIN).get_json()["job_name"]
    until(client, name, "Succeeded")
    store = app.extensions["jobpulse"].store
    kept = wait_for(lambda: store.log_tail(name), timeout=30, what="the tail to be kept")
    assert kept == "".join(f"{line}\n" for line in lines[-10:]), "the last whole lines within LOG_TAIL_BYTES"

    wait_for(
        lambda: (
            not any(j["metadata"]["name"] == name for j in jobs_in(cluster, k8s_namespace))
            and not pods_of(cluster, k8s_namespace, name)
        ),
        timeout=60,
        what="the Job and its pod to be garbage-collected",
    )
    answer = client.get(f"/api/jobs/{name}/logs", headers=ADMIN)
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, kept)
    assert client.get(f"/api/jobs/{name}/logs?tail=2", headers=ADMIN).get_data(as_text=True) == (
        "step 198 of 200: ok\nstep 199 of 200: ok\n"
    )
    followed = client.get(f"/api/jobs/{name}/logs?follow=1", headers=ADMIN)
    assert followed.get_data(as_text=True) == kept
