from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, TEST_JOBSPECS
from webapp.errors import JobspecError
from webapp.jobspecs import (
    active_deadline_seconds,
    backoff_limit,
    command,
    container_env,
    load_jobspecs,
    progress_url,
    render_job,
)


def test_the_project_jobspecs_load() -> None:
    specs = load_jobspecs(PROJECT_ROOT / "jobspecs")
    donation = specs["donation-receipt"]
    assert command(donation.manifest) == ["python", "-m", "webapp.tasks.donation_receipt"]
    assert backoff_limit(donation.manifest) == 1
    assert active_deadline_seconds(donation.manifest) == 120


def test_the_test_jobspecs_load() -> None:
    assert set(load_jobspecs(TEST_JOBSPECS)) == {
        "quick",
        "fail",
        "retry",
        "slow",
        "medium",
        "marked",
        "deadline",
        "unschedulable",
        "k8s-fails",
        "gone",
    }


GOOD = yaml.safe_load((TEST_JOBSPECS / "quick.yaml").read_text())


def _without(path: str) -> dict:
    manifest = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = manifest
    for key in parents:
        node = node[key] if not key.isdigit() else node[int(key)]
    del node[last]
    return manifest


def _with(path: str, value: object) -> dict:
    manifest = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = manifest
    for key in parents:
        node = node[key] if not key.isdigit() else node[int(key)]
    node[last] = value
    return manifest


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ("just text", "not a mapping"),
        (_with("kind", "CronJob"), "kind Job"),
        (_with("apiVersion", "batch/v2"), "apiVersion batch/v1"),
        (_without("spec"), "spec is required"),
        (_without("spec.template"), "spec.template.spec is required"),
        (_with("spec.backoffLimit", -1), "spec.backoffLimit"),
        (_with("spec.activeDeadlineSeconds", "10"), "spec.activeDeadlineSeconds"),
        (_with("spec.template.spec.restartPolicy", "Always"), "restartPolicy"),
        (_with("spec.template.spec.containers", []), "at least one container"),
        (_without("spec.template.spec.containers.0.image"), "needs a name and an image"),
        (_with("spec.template.spec.containers.0.command", "python run.py"), "command must be a list of strings"),
    ],
)
def test_a_bad_jobspec_stops_loading_with_file_and_reason(tmp_path: Path, manifest: object, reason: str) -> None:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(JobspecError) as caught:
        load_jobspecs(tmp_path)
    assert "broken.yaml" in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "no *.yaml jobspecs"),
        ({"two.yaml": "a: 1\n---\nb: 2\n"}, "exactly one YAML document"),
        ({"bad.yaml": "a: [1,\n"}, "cannot read YAML"),
        ({"Bad Name.yaml": yaml.safe_dump(GOOD)}, "not a valid spec name"),
    ],
)
def test_folder_problems(tmp_path: Path, files: dict[str, str], reason: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(JobspecError, match=r".*") as caught:
        load_jobspecs(tmp_path)
    assert reason in str(caught.value)


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(JobspecError, match="not a folder"):
        load_jobspecs(tmp_path / "nope")


def test_render_sets_name_labels_env_and_leaves_the_spec_untouched() -> None:
    spec = load_jobspecs(PROJECT_ROOT / "jobspecs")["donation-receipt"]
    before = copy.deepcopy(spec.manifest)
    params = {"amount": "10.00", "currency": "EUR", "donor_name": "{{ .Values.x }} $(HOME)"}
    job = render_job(spec, job_name="task-runner-r1-0123abcd", pipeline_run_id="r1", params=params)

    assert spec.manifest == before
    assert job["metadata"]["name"] == "task-runner-r1-0123abcd"
    expected_labels = {
        "app.kubernetes.io/managed-by": "jobpulse",
        "jobpulse/pipeline-run-id": "r1",
        "jobpulse/spec": "donation-receipt",
    }
    assert expected_labels.items() <= job["metadata"]["labels"].items()
    assert expected_labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    env = container_env(job)
    assert env["TASK_PARAM_AMOUNT"] == "10.00"
    assert env["TASK_PARAM_DONOR_NAME"] == "{{ .Values.x }} $(HOME)"  # data, never a template
    assert json.loads(env["TASK_PARAMS"]) == params
    assert env["TASK_STEP_SECONDS"] == "0.75"  # the spec's own env is kept
    assert env["TASK_JOB_NAME"] == "task-runner-r1-0123abcd"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "jobpulse:latest"


def test_render_overrides_the_image_and_reaches_every_container() -> None:
    spec = load_jobspecs(TEST_JOBSPECS)["quick"]
    spec.manifest["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    job = render_job(
        spec, job_name="task-runner-x-00000000", pipeline_run_id="x", params={"who": "me"}, task_image="reg/app:2"
    )
    pod = job["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["image"] == "reg/app:2"
        assert {"name": "TASK_PARAM_WHO", "value": "me"} in container["env"]


def test_a_param_cannot_duplicate_a_spec_env_name() -> None:
    spec = load_jobspecs(TEST_JOBSPECS)["quick"]
    spec.manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "TASK_PARAM_WHO", "value": "old"}]
    job = render_job(spec, job_name="task-runner-x-00000000", pipeline_run_id="x", params={"who": "new"})
    names = [item["name"] for item in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names.count("TASK_PARAM_WHO") == 1
    assert container_env(job)["TASK_PARAM_WHO"] == "new"


def test_render_gives_every_container_the_runs_progress_url_and_token() -> None:
    spec = load_jobspecs(TEST_JOBSPECS)["quick"]
    spec.manifest["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    spec.manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "JOBPULSE_PROGRESS_TOKEN", "value": "the spec's own cannot stay"}
    ]
    url = progress_url("http://jobpulse.ns.svc:8000/", "task-runner-x-00000000")
    assert url == "http://jobpulse.ns.svc:8000/api/jobs/task-runner-x-00000000/progress"
    job = render_job(
        spec,
        job_name="task-runner-x-00000000",
        pipeline_run_id="x",
        params={},
        progress_url=url,
        progress_token="secret-of-this-run",
    )
    pod = job["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        env = [(item["name"], item["value"]) for item in container["env"] if item["name"].startswith("JOBPULSE_")]
        assert env == [("JOBPULSE_PROGRESS_URL", url), ("JOBPULSE_PROGRESS_TOKEN", "secret-of-this-run")]


def test_render_without_a_progress_url_gives_no_progress_env() -> None:
    spec = load_jobspecs(TEST_JOBSPECS)["quick"]
    job = render_job(spec, job_name="task-runner-x-00000000", pipeline_run_id="x", params={})
    assert not [name for name in container_env(job) if name.startswith("JOBPULSE_PROGRESS")]
    with pytest.raises(ValueError, match="together"):
        render_job(spec, job_name="task-runner-x-00000000", pipeline_run_id="x", params={}, progress_token="t")
