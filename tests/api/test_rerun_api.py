"""Rerun, suspend and resume through the admin API, with the local runner: what is reused, what is new, the 409s."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import captured_logs, wait_for
from webapp import launcher, metrics
from webapp.jobspecs import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV, container_env

ALICE = "alice-token-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app(ADMIN_TOKENS=f"alice:{ALICE}")


@pytest.fixture
def webapp_logs() -> Iterator[list[logging.LogRecord]]:
    with captured_logs() as records:
        yield records


def finished(client: FlaskClient, name: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (s := client.get(f"/api/jobs/{name}").get_json())["terminal"] and s, timeout=timeout, what=name
    )


def launched(client: FlaskClient, spec: str, **body: Any) -> str:
    response = client.post("/api/jobs", json={"spec": spec, **body}, headers=bearer(ALICE))
    assert response.status_code == 202, response.get_json()
    name: str = response.get_json()["job_name"]
    return name


def audit(client: FlaskClient) -> list[tuple[str, str, str, int, str | None]]:
    actions = client.get("/api/audit", headers=bearer(ALICE)).get_json()["actions"]
    return [(a["actor"], a["action"], a["target"], a["outcome"]["status"], a["outcome"]["error"]) for a in actions]


def test_a_rerun_is_a_new_run_of_the_same_manifest_and_params_linked_both_ways(app: Flask, client: FlaskClient) -> None:
    old = launched(client, "quick", params={"who": "ops"}, pipeline_run_id="nightly-7")
    first = finished(client, old)
    assert first["status"] == "Succeeded"
    assert (first["rerun_of"], first["reruns"]) == (None, [])

    response = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE))
    assert response.status_code == 202, response.get_json()
    new = response.get_json()
    assert new["job_name"] != old and new["job_name"].startswith("task-runner-nightly-7-")
    assert (new["rerun_of"], new["reruns"], new["spec"], new["mode"]) == (old, [], "quick", first["mode"])
    assert new["pipeline_run_id"] == "nightly-7"
    assert new["links"]["status"].endswith(f"job_name={new['job_name']}")

    again = finished(client, new["job_name"])
    assert again["status"] == "Succeeded" and again["rerun_of"] == old
    logs = client.get(f"/api/jobs/{new['job_name']}/logs", headers=bearer(ALICE)).get_data(as_text=True)
    assert logs == "quick task ops\n"  # the old run's params

    linked = client.get(f"/api/jobs/{old}").get_json()
    assert linked["reruns"] == [new["job_name"]]
    assert linked["seq"] == first["seq"] + 1  # a new seq ...
    assert linked["history"] == first["history"]  # ... and no new phase: it stays finished as it was
    assert {k: v for k, v in linked.items() if k not in ("reruns", "seq", "updated_at")} == {
        k: v for k, v in first.items() if k not in ("reruns", "seq", "updated_at")
    }

    store = app.extensions["jobpulse"].store
    old_env, new_env = container_env(store.manifest(old)), container_env(store.manifest(new["job_name"]))
    assert new_env[PROGRESS_TOKEN_ENV] and new_env[PROGRESS_TOKEN_ENV] != old_env[PROGRESS_TOKEN_ENV]
    assert new_env[PROGRESS_URL_ENV].endswith(f"/api/jobs/{new['job_name']}/progress")
    assert (new_env["TASK_PARAMS"], new_env["TASK_PIPELINE_RUN_ID"]) == (old_env["TASK_PARAMS"], "nightly-7")
    assert new_env["TASK_JOB_NAME"] == new["job_name"]
    assert store.get(old).reruns == (new["job_name"],)  # kept in the run store, not only in the hub

    runs = client.get("/api/runs", headers=bearer(ALICE)).get_json()["runs"]
    assert {r["job_name"]: (r["rerun_of"], r["reruns"]) for r in runs} == {
        old: (None, [new["job_name"]]),
        new["job_name"]: (old, []),
    }


def test_a_rerun_of_a_rerun_chains_and_the_old_run_lists_each_of_its_reruns(client: FlaskClient) -> None:
    old = launched(client, "quick")
    finished(client, old)
    second = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).get_json()["job_name"]
    third = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).get_json()["job_name"]
    finished(client, second)
    fourth = client.post(f"/api/jobs/{second}/rerun", headers=bearer(ALICE)).get_json()
    assert fourth["rerun_of"] == second
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [second, third]
    assert client.get(f"/api/jobs/{second}").get_json()["reruns"] == [fourth["job_name"]]


def test_a_run_lists_a_bounded_number_of_reruns(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "MAX_RERUNS", 2)
    old = launched(client, "quick")
    finished(client, old)
    for _ in range(2):
        assert client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).status_code == 202
    refused = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE))
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "conflict"
    assert "too many reruns" in refused.get_json()["message"]
    assert len(client.get(f"/api/jobs/{old}").get_json()["reruns"]) == 2


def test_rerun_refusals_are_4xx_in_the_error_shape_audited_and_not_logged_as_errors(
    client: FlaskClient, webapp_logs: list[logging.LogRecord]
) -> None:
    running = launched(client, "slow")
    unfinished = client.post(f"/api/jobs/{running}/rerun", headers=bearer(ALICE))
    unknown = client.post("/api/jobs/task-runner-x-00000000/rerun", headers=bearer(ALICE))
    bad = client.post("/api/jobs/Not_A_Name/rerun", headers=bearer(ALICE))
    nobody = client.post(f"/api/jobs/{running}/rerun")
    assert (unfinished.status_code, unfinished.get_json()["error"]) == (409, "conflict")
    assert "has not finished" in unfinished.get_json()["message"]
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "not_found")
    assert bad.status_code == 400 and set(bad.get_json()) >= {"error", "message"}
    assert nobody.status_code == 401
    assert audit(client) == [
        ("alice", "rerun", "Not_A_Name", 400, bad.get_json()["error"]),
        ("alice", "rerun", "task-runner-x-00000000", 404, "not_found"),
        ("alice", "rerun", running, 409, "conflict"),
        ("alice", "launch", running, 202, None),
    ]
    assert not [r for r in webapp_logs if r.levelno >= logging.ERROR]
    assert client.get(f"/api/jobs/{running}").get_json()["reruns"] == []


def test_a_successful_rerun_is_audited_under_its_operator_against_the_run_it_reran(client: FlaskClient) -> None:
    old = launched(client, "quick")
    finished(client, old)
    new = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).get_json()["job_name"]
    assert audit(client)[0] == ("alice", "rerun", old, 202, None)
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [new]  # where the trail leads to the new run


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_only_kubernetes_jobs_suspend_or_resume_and_each_refusal_is_audited(client: FlaskClient, action: str) -> None:
    running = launched(client, "slow")
    done = launched(client, "quick")
    finished(client, done)
    local = client.post(f"/api/jobs/{running}/{action}", headers=bearer(ALICE))
    final = client.post(f"/api/jobs/{done}/{action}", headers=bearer(ALICE))
    unknown = client.post(f"/api/jobs/task-runner-x-00000000/{action}", headers=bearer(ALICE))
    assert (local.status_code, local.get_json()["error"]) == (409, "conflict")
    assert "only Kubernetes Jobs" in local.get_json()["message"]
    assert (final.status_code, final.get_json()["error"]) == (409, "conflict")
    assert "already finished" in final.get_json()["message"]
    assert unknown.status_code == 404
    assert client.post(f"/api/jobs/{running}/{action}").status_code == 401
    assert audit(client)[:3] == [
        ("alice", action, "task-runner-x-00000000", 404, "not_found"),
        ("alice", action, done, 409, "conflict"),
        ("alice", action, running, 409, "conflict"),
    ]
    assert client.get(f"/api/jobs/{running}").get_json()["status"] == "Running"


@pytest.mark.parametrize(("queued", "answer"), [("0", 429), ("2", 202)])
def test_a_rerun_meets_the_launch_limits_refused_or_waiting_in_line(make_app: Any, queued: str, answer: int) -> None:
    client = make_app(ADMIN_TOKENS=f"alice:{ALICE}", MAX_ACTIVE_JOBS="1", MAX_QUEUED_JOBS=queued).test_client()
    old = launched(client, "quick")
    finished(client, old)
    launched(client, "slow")  # takes the one slot
    response = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE))
    assert response.status_code == answer, response.get_json()
    if answer == 429:
        assert response.get_json()["error"] == "too_many_active_jobs"
        assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == []
        return
    waiting = response.get_json()
    assert (waiting["status"], waiting["reason"], waiting["queue_position"]) == ("Queued", "WaitingForCapacity", 1)
    assert waiting["rerun_of"] == old
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [waiting["job_name"]]


def test_a_rerun_of_a_run_the_hub_forgot_does_not_finish_the_old_run_again(app: Flask, client: FlaskClient) -> None:
    old = launched(client, "quick")
    finished(client, old)
    app.extensions["jobpulse"].hub.forget(old)  # what housekeeping does once it finished a while ago

    def succeeded() -> float:
        return sum(
            s.value
            for m in metrics.TRANSITIONS.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.labels["status"] == "Succeeded"
        )

    before = succeeded()
    with captured_logs() as records:
        new = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).get_json()["job_name"]
        finished(client, new)
    assert [r for r in records if r.getMessage() == "job.status" and getattr(r, "job_name", None) == old] == []
    assert succeeded() - before == 1  # the rerun's finish only
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [new]


def test_a_rerun_with_an_idempotency_key_happens_once_and_the_key_serves_one_request(client: FlaskClient) -> None:
    old, other = launched(client, "quick"), launched(client, "quick")
    finished(client, old)
    finished(client, other)
    key = {**bearer(ALICE), "Idempotency-Key": "rerun-old-1"}
    first = client.post(f"/api/jobs/{old}/rerun", headers=key)
    again = client.post(f"/api/jobs/{old}/rerun", headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["job_name"] == first.get_json()["job_name"] and again.get_json()["rerun_of"] == old
    elsewhere = client.post(f"/api/jobs/{other}/rerun", headers=key)
    as_launch = client.post("/api/jobs", json={"spec": "quick"}, headers=key)
    assert (elsewhere.status_code, elsewhere.get_json()["error"]) == (409, "conflict")
    assert as_launch.status_code == 409
    bad = client.post(f"/api/jobs/{old}/rerun", headers={**bearer(ALICE), "Idempotency-Key": "not a key!"})
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_request")
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == [first.get_json()["job_name"]]
    assert client.get(f"/api/jobs/{other}").get_json()["reruns"] == []


def test_a_refused_rerun_gives_its_idempotency_key_back(client: FlaskClient) -> None:
    running = launched(client, "slow")
    key = {**bearer(ALICE), "Idempotency-Key": "rerun-too-early"}
    assert client.post(f"/api/jobs/{running}/rerun", headers=key).status_code == 409
    client.delete(f"/api/jobs/{running}", headers=bearer(ALICE))
    finished(client, running)
    assert client.post(f"/api/jobs/{running}/rerun", headers=key).status_code == 202


def test_reruns_at_once_stay_within_the_bound(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "MAX_RERUNS", 2)
    app = make_app(ADMIN_TOKENS=f"alice:{ALICE}")
    old = launched(app.test_client(), "quick")
    finished(app.test_client(), old)
    together = threading.Barrier(6)
    answers: list[int] = []

    def rerun() -> None:
        together.wait(timeout=10)
        answers.append(app.test_client().post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE)).status_code)

    threads = [threading.Thread(target=rerun) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [202, 202, 409, 409, 409, 409]
    assert len(app.test_client().get(f"/api/jobs/{old}").get_json()["reruns"]) == 2


def test_a_rerun_the_process_never_linked_is_linked_when_it_is_next_heard_of(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = launched(client, "slow")  # its rerun runs long enough to be heard of again
    assert client.delete(f"/api/jobs/{old}", headers=bearer(ALICE)).status_code == 200
    finished(client, old)
    door = app.extensions["jobpulse"].door
    real_change = door.change

    def dies_before_linking(job_name: str, **fields: Any) -> Any:
        return None if "reruns" in fields else real_change(job_name, **fields)

    monkeypatch.setattr(door, "change", dies_before_linking)
    new = client.post(f"/api/jobs/{old}/rerun", headers=bearer(ALICE), json={}).get_json()["job_name"]
    assert client.get(f"/api/jobs/{old}").get_json()["reruns"] == []  # the one-way link a crash leaves
    monkeypatch.setattr(door, "change", real_change)  # the process is back (or another instance hears of it)
    assert client.delete(f"/api/jobs/{new}", headers=bearer(ALICE)).status_code == 200
    wait_for(lambda: client.get(f"/api/jobs/{old}").get_json()["reruns"] == [new], timeout=10, what="the link")
