"""What a rerun is rendered from: the old run's stored manifest without what belonged to that run alone."""

from __future__ import annotations

from pathlib import Path

from webapp.executors.http_runner import TASK_ID_ANNOTATION
from webapp.executors.legacy import legacy_task_id
from webapp.jobspecs import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV, Jobspec, container_env, load_jobspecs, render_job
from webapp.launcher import rerun_source

JOBSPECS = Path(__file__).resolve().parents[2] / "jobspecs"


def test_a_rerun_keeps_the_manifest_but_not_the_old_runs_task_id_progress_secret_or_server_fields() -> None:
    spec = load_jobspecs(JOBSPECS)["donation-receipt"]
    stored = render_job(
        spec,
        job_name="task-runner-abc-00000001",
        pipeline_run_id="abc",
        params={"amount": "5"},
        progress_url="http://x/api/jobs/task-runner-abc-00000001/progress",
        progress_token="old-secret",
    )
    stored["metadata"]["annotations"] = {TASK_ID_ANNOTATION: "task-41", "team": "payments"}  # the HTTP runner's
    stored["metadata"].update(resourceVersion="7", uid="u-1", creationTimestamp="2026-01-01T00:00:00Z")
    stored["status"] = {"succeeded": 1}
    source = rerun_source(stored)
    assert legacy_task_id(source) is None, "a rerun must never follow the old run's task"
    assert source["metadata"]["annotations"] == {"team": "payments"}  # the jobspec's own annotations stay
    assert not {"resourceVersion", "uid", "creationTimestamp"} & set(source["metadata"]) and "status" not in source
    rerun = render_job(
        Jobspec(name=spec.name, manifest=source),
        job_name="task-runner-abc-00000002",
        pipeline_run_id="abc",
        params={"amount": "5"},
    )
    env = container_env(rerun)
    assert PROGRESS_URL_ENV not in env and PROGRESS_TOKEN_ENV not in env
    assert legacy_task_id(rerun) is None and env["TASK_JOB_NAME"] == "task-runner-abc-00000002"
    assert legacy_task_id(stored) == "task-41"  # the stored manifest itself is untouched
