"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (can take work), ``/metrics``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webapp.api import runtime

bp = Blueprint("probes", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    reasons = runtime().unready_reasons()
    if reasons:
        response = jsonify({"error": "not_ready", "message": "; ".join(reasons), "reasons": reasons})
        response.status_code = 503
        return response
    return jsonify({"status": "ready", "mode": runtime().settings.execution_mode})


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)  # mimetype= would add a second charset
