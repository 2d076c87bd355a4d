"""Jobspecs: the YAML Job manifests in ``JOBSPECS_DIR``, loaded and rendered.

Each ``*.yaml`` file is a complete ``batch/v1`` Job manifest; its file name
without ``.yaml`` is the spec name. All are loaded and checked at start-up, so
a bad one stops start-up with its file and reason. Rendering is structural — a
deep copy with fields set — never text templating, so a parameter can never
change the manifest's shape. Loading reads files; rendering is pure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from webapp.errors import JobspecError

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "jobpulse"
PIPELINE_RUN_ID_LABEL = "jobpulse/pipeline-run-id"
SPEC_LABEL = "jobpulse/spec"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"

PROGRESS_URL_ENV = "JOBPULSE_PROGRESS_URL"
"""Where a run's task sends its progress: ``POST`` to this URL (the helper is ``webapp.tasks.progress.report``)."""
PROGRESS_TOKEN_ENV = "JOBPULSE_PROGRESS_TOKEN"  # noqa: S105 - the variable's name, not a secret
"""The run's own secret for that URL (``Authorization: Bearer ...``); good for this run only."""
PROGRESS_PATH = "/api/jobs/{job_name}/progress"
"""The path of the progress endpoint, below the service's base URL (the API routes the same template)."""


def progress_url(base_url: str, job_name: str) -> str:
    """The full URL a run's task reports its progress to."""
    return base_url.rstrip("/") + PROGRESS_PATH.format(job_name=job_name)


PARAM_NAME_PATTERN = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
SPEC_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
KUBERNETES_DEFAULT_BACKOFF_LIMIT = 6


@dataclasses.dataclass(frozen=True)
class Jobspec:
    """One validated Job manifest, by name."""

    name: str
    manifest: dict[str, Any]


def backoff_limit(manifest: Mapping[str, Any]) -> int:
    """How many failed attempts a run may retry (Kubernetes' default when the manifest does not say)."""
    return int(manifest["spec"].get("backoffLimit", KUBERNETES_DEFAULT_BACKOFF_LIMIT))


def active_deadline_seconds(manifest: Mapping[str, Any]) -> int | None:
    value = manifest["spec"].get("activeDeadlineSeconds")
    return int(value) if value is not None else None


def command(manifest: Mapping[str, Any]) -> list[str]:
    """The first container's ``command`` + ``args``: what the legacy runner executes."""
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


def load_jobspecs(folder: Path) -> dict[str, Jobspec]:
    """Load and check every ``*.yaml`` in ``folder``; raise :class:`JobspecError` on the first bad one."""
    if not folder.is_dir():
        raise JobspecError(f"{folder}: JOBSPECS_DIR is not a folder")
    specs: dict[str, Jobspec] = {}
    for path in sorted(folder.glob("*.yaml")):
        name = path.stem
        if not SPEC_NAME_PATTERN.fullmatch(name):
            raise JobspecError(f"{path}: file name {name!r} is not a valid spec name")
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as error:
            raise JobspecError(f"{path}: cannot read YAML: {error}") from error
        documents = [d for d in documents if d is not None]
        if len(documents) != 1:
            raise JobspecError(f"{path}: expected exactly one YAML document, found {len(documents)}")
        problem = check_manifest(documents[0])
        if problem:
            raise JobspecError(f"{path}: {problem}")
        specs[name] = Jobspec(name=name, manifest=documents[0])
    if not specs:
        raise JobspecError(f"{folder}: no *.yaml jobspecs found")
    return specs


def check_manifest(manifest: Any) -> str | None:
    """Why ``manifest`` is not a usable ``batch/v1`` Job, or ``None`` if it is."""
    if not isinstance(manifest, dict):
        return "not a mapping"
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        return "must be apiVersion batch/v1, kind Job"
    if not isinstance(manifest.get("metadata", {}), dict):
        return "metadata must be a mapping"
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        return "spec is required"
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"spec.{field} must be a non-negative integer"
    template = spec.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return "spec.template.spec is required"
    pod = template["spec"]
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        return "spec.template.spec.restartPolicy must be Never or OnFailure"
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        return "spec.template.spec.containers must list at least one container"
    for index, container in enumerate(containers):
        where = f"spec.template.spec.containers[{index}]"
        if not isinstance(container, dict) or not container.get("name") or not container.get("image"):
            return f"{where} needs a name and an image"
        for key in ("command", "args"):
            value = container.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                return f"{where}.{key} must be a list of strings"
        if not isinstance(container.get("env", []), list):
            return f"{where}.env must be a list"
    return None


def param_env_name(name: str) -> str:
    return "TASK_PARAM_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())


def render_job(
    spec: Jobspec,
    *,
    job_name: str,
    pipeline_run_id: str,
    params: Mapping[str, str],
    task_image: str | None = None,
    progress_url: str | None = None,
    progress_token: str | None = None,
) -> dict[str, Any]:
    """A deep copy of the spec's manifest with name, labels, parameters and image set.

    ``progress_url`` and ``progress_token`` (given together) go into every container's env as
    ``JOBPULSE_PROGRESS_URL`` and ``JOBPULSE_PROGRESS_TOKEN``: how the task reports its progress.
    """
    if (progress_url is None) != (progress_token is None):
        raise ValueError("give progress_url and progress_token together")
    manifest = copy.deepcopy(spec.manifest)
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        PIPELINE_RUN_ID_LABEL: pipeline_run_id,
        SPEC_LABEL: spec.name,
    }
    metadata = manifest.setdefault("metadata", {})
    metadata.pop("generateName", None)
    metadata.pop("namespace", None)
    metadata["name"] = job_name
    metadata.setdefault("labels", {}).update(labels)

    template = manifest["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)

    added_env = [
        {"name": "TASK_JOB_NAME", "value": job_name},
        {"name": "TASK_PIPELINE_RUN_ID", "value": pipeline_run_id},
        {"name": "TASK_PARAMS", "value": json.dumps(dict(params), sort_keys=True)},
        *({"name": param_env_name(k), "value": v} for k, v in sorted(params.items())),
    ]
    if progress_url is not None and progress_token is not None:
        added_env += [
            {"name": PROGRESS_URL_ENV, "value": progress_url},
            {"name": PROGRESS_TOKEN_ENV, "value": progress_token},
        ]
    added_names = {item["name"] for item in added_env}
    pod = template["spec"]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        kept = [item for item in container.get("env", []) if item.get("name") not in added_names]
        container["env"] = kept + copy.deepcopy(added_env)
        if task_image:
            container["image"] = task_image
    return manifest


def container_env(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Literal ``env`` values of the first container of a rendered manifest."""
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
