"""The operator console's reads: who is signed in, and everything about one run in one answer.

``GET /api/jobs/<name>/details`` gathers what the console's detail view shows
besides the logs: the run's status (with its history), its rendered manifest
with personal data and secrets masked (:mod:`webapp.api.masking`), its
dual-mode comparison and where its completion webhook stands. Only reads: the
hub's cache and the run store, never an executor.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from webapp.api import runtime
from webapp.api.auth import admin_required, current_operator
from webapp.api.masking import masked_manifest
from webapp.comparison import Comparison
from webapp.runstore import RunStore
from webapp.status import JobStatus

bp = Blueprint("console", __name__)


@bp.get("/api/whoami")
@admin_required
def whoami() -> Response:
    """The operator the token belongs to: ``{"operator": name}`` (the console's "Signed in as")."""
    return jsonify({"operator": current_operator()})


@bp.get("/api/jobs/<job_name>/details")
@admin_required
def run_details(job_name: str) -> Response:
    """``{"status", "manifest", "comparison", "webhook"}``; each of the last three ``null`` when there is none."""
    rt = runtime()
    status = rt.runs.status(job_name)  # 400 for a malformed name, 404 for an unknown run
    store = rt.store
    manifest = store.manifest(job_name)
    delivery = store.webhook_delivery(job_name)
    comparison = _comparison_of(status, store)
    body: dict[str, Any] = {
        "status": status.to_dict(),
        "manifest": masked_manifest(manifest) if manifest is not None else None,
        "comparison": comparison.to_dict() if comparison is not None else None,
        "webhook": delivery.to_dict() if delivery is not None else None,
    }
    return jsonify(body)


def _comparison_of(status: JobStatus, store: RunStore) -> Comparison | None:
    """Dual mode's comparison of the pipeline run this run belongs to, when one was recorded."""
    return next(
        (
            found
            for found in store.comparisons()
            if found.pipeline_run_id == status.pipeline_run_id and status.job_name in (found.legacy_job, found.k8s_job)
        ),
        None,
    )
