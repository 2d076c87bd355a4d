"""``POST /api/jobs/<job_name>/progress``: a task reports how far it has got.

The caller is the run's own task, holding the run's own token (rendered into
its env at launch as ``JOBPULSE_PROGRESS_TOKEN``, next to the URL of this
endpoint as ``JOBPULSE_PROGRESS_URL``). The report goes through the process's
coalescer (:mod:`webapp.progress_reports`) to the door, so the answer is
``202``: accepted, perhaps merged with the reports around it. The token is
never logged nor answered.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from webapp.api import runtime
from webapp.api.schemas import ProgressReportSchema, json_body
from webapp.errors import Conflict
from webapp.jobspecs import PROGRESS_PATH
from webapp.status import Progress, utcnow

logger = logging.getLogger(__name__)

bp = Blueprint("progress", __name__)

MAX_PROGRESS_BODY_BYTES = 1024
"""A report is three small fields; anything longer is refused (413) before it is read."""


@bp.post(PROGRESS_PATH.format(job_name="<job_name>"))
def report_progress(job_name: str) -> Response:
    request.max_content_length = MAX_PROGRESS_BODY_BYTES
    rt = runtime()
    status = rt.runs.status(job_name)  # 400 for a bad name, 404 for an unknown run (as GET answers anyone)
    if not rt.progress_tokens.check(job_name, _bearer_token()):
        logger.warning("progress.refused", extra={"job_name": job_name, "mode": status.mode})
        raise Forbidden(f"this token does not report progress for {job_name}")
    report = ProgressReportSchema().load(json_body(request))
    status = rt.runs.status(job_name)
    if status.terminal:
        raise Conflict(f"{job_name} already finished: {status.status.value}")
    progress = Progress(done=report["done"], total=report["total"], text=report["text"] or None, at=utcnow())
    rt.progress.report(job_name, progress)
    response = jsonify({"job_name": job_name, "accepted": True})
    response.status_code = 202
    return response


def _bearer_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "the run's progress token is required (Authorization: Bearer $JOBPULSE_PROGRESS_TOKEN)",
            www_authenticate=WWWAuthenticate("bearer", {"realm": "jobpulse"}),
        )
    return token
