"""What the console shows of a manifest: which values are masked, and which are not (a table of cases)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from webapp.api.masking import MASK, masked_manifest
from webapp.jobspecs import Jobspec, render_job

SPEC = Jobspec(
    name="donation-receipt",
    manifest={
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "donation-receipt", "annotations": {"owner": "ops@example.org", "team": "payments"}},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "task",
                            "image": "jobpulse:latest",
                            "env": [
                                {"name": "TASK_STEP_SECONDS", "value": "0.75"},
                                {"name": "SMTP_PASSWORD", "value": "hunter2"},
                                {"name": "RECEIPT_API_KEY", "value": "k-123"},
                                {"name": "REPLY_TO", "value": "Help <help@example.org>"},
                                {
                                    "name": "DB_SECRET",
                                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                                },
                            ],
                        }
                    ]
                }
            },
        },
    },
)
PARAMS = {
    "amount": "12.50",
    "currency": "EUR",
    "donor_name": "Ada Lovelace",
    "donor_email": "ada@example.org",
    "message": "for the lab",
    "loyalty_number": "LN-99",
}


def rendered() -> dict[str, Any]:
    return render_job(
        SPEC,
        job_name="task-runner-pr-1-0000abcd",
        pipeline_run_id="pr-1",
        params=PARAMS,
        progress_url="http://jobpulse/api/jobs/task-runner-pr-1-0000abcd/progress",
        progress_token="run-secret-token-0123",
    )


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("TASK_PARAM_DONOR_NAME", MASK),  # personal
        ("TASK_PARAM_DONOR_EMAIL", MASK),
        ("TASK_PARAM_MESSAGE", MASK),
        ("TASK_PARAM_LOYALTY_NUMBER", MASK),  # a parameter no rule knows: masked by default
        ("TASK_PARAM_AMOUNT", "12.50"),  # the parameters known to be harmless
        ("TASK_PARAM_CURRENCY", "EUR"),
        ("JOBPULSE_PROGRESS_TOKEN", MASK),  # the run's own secret
        ("SMTP_PASSWORD", MASK),  # secret-looking names
        ("RECEIPT_API_KEY", MASK),
        ("REPLY_TO", MASK),  # holds an e-mail address
        ("DB_SECRET", {"secretKeyRef": {"name": "db", "key": "password"}}),  # a reference holds no secret
        ("TASK_STEP_SECONDS", "0.75"),
        ("TASK_JOB_NAME", "task-runner-pr-1-0000abcd"),
        ("TASK_PIPELINE_RUN_ID", "pr-1"),
        ("JOBPULSE_PROGRESS_URL", "http://jobpulse/api/jobs/task-runner-pr-1-0000abcd/progress"),
    ],
)
def test_each_env_value_is_masked_or_shown(name: str, shown: Any) -> None:
    assert env_of(masked_manifest(rendered()))[name] == shown


def test_the_params_json_shows_only_the_harmless_parameters() -> None:
    params = json.loads(env_of(masked_manifest(rendered()))["TASK_PARAMS"])
    assert params == {
        "amount": "12.50",
        "currency": "EUR",
        "donor_email": MASK,
        "donor_name": MASK,
        "loyalty_number": MASK,
        "message": MASK,
    }


@pytest.mark.parametrize("text", ["not json", '["ada@example.org"]', '"Ada"'])
def test_params_that_are_not_a_json_object_are_masked_whole(text: str) -> None:
    manifest = {"env": [{"name": "TASK_PARAMS", "value": text}]}
    assert masked_manifest(manifest) == {"env": [{"name": "TASK_PARAMS", "value": MASK}]}


def test_personal_and_secret_keys_are_masked_anywhere_and_the_rest_is_kept() -> None:
    manifest = {
        "metadata": {"annotations": {"donor_email": "x", "auth-token": "t", "owner": "ops@example.org", "team": "p"}},
        "spec": {"backoffLimit": 1, "activeDeadlineSeconds": 120, "automountServiceAccountToken": False},
        "tokens": {"first": "t1"},
    }
    assert masked_manifest(manifest) == {
        "metadata": {"annotations": {"donor_email": MASK, "auth-token": MASK, "owner": MASK, "team": "p"}},
        "spec": {"backoffLimit": 1, "activeDeadlineSeconds": 120, "automountServiceAccountToken": False},
        "tokens": MASK,
    }


def test_no_personal_value_or_secret_is_left_anywhere() -> None:
    text = json.dumps(masked_manifest(rendered()))
    for value in ("Ada Lovelace", "ada@example.org", "for the lab", "LN-99", "run-secret-token-0123", "hunter2"):
        assert value not in text


def test_the_manifest_given_is_not_changed() -> None:
    manifest = rendered()
    before = copy.deepcopy(manifest)
    masked_manifest(manifest)
    assert manifest == before
