"""Jobs: the admin API (launch any jobspec, cancel, rerun, suspend, resume, logs, recent runs) and status polling."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context
from werkzeug.exceptions import BadRequest

from webapp.api import runtime
from webapp.api.audit import audited, note_target
from webapp.api.auth import admin_required, current_operator
from webapp.api.clients import client_address, own_root
from webapp.api.express import cooperative_socket
from webapp.api.links import with_links
from webapp.api.run_filters import list_limit, run_filter
from webapp.api.schemas import JobLaunchSchema, idempotency_key, json_body
from webapp.api.write_deadline import WriteDeadline, each_write_bounded, log_write_timeout
from webapp.errors import Conflict, InvalidRequest
from webapp.launcher import request_fingerprint
from webapp.run_control import check_job_name

bp = Blueprint("jobs", __name__)

DEFAULT_TAIL_LINES = 200
MAX_TAIL_LINES = 10_000


def _int_arg(name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # int() also takes " 5", "1_0" and other scripts' digits: only plain ASCII digits are a number here.
    value = int(raw) if raw.isascii() and raw.isdigit() else low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", fields={name: ["out of range"]})
    return value


@bp.post("/api/jobs")
@audited("launch")
@admin_required
def launch_job() -> Response:
    key = idempotency_key(request)
    body = JobLaunchSchema().load(json_body(request))
    note_target(body["spec"])
    status, created = runtime().launcher.launch(
        spec_name=body["spec"],
        params=body["params"],
        pipeline_run_id=body["pipeline_run_id"],
        idempotency_key=key,
        fingerprint=request_fingerprint(body),
        client=client_address(),
        request_root=own_root(),
    )
    response = jsonify(with_links(status))
    response.status_code = 202 if created else 200
    return response


@bp.get("/api/task-status")
def task_status() -> Response:
    """Polling, answered from the hub's cache with an ETag: costs no executor call."""
    job_name = request.args.get("job_name")
    if not job_name:
        raise BadRequest("the job_name query parameter is required")
    return _status_response(job_name)


@bp.get("/api/jobs/<job_name>")
def get_job(job_name: str) -> Response:
    return _status_response(job_name)


def _status_response(job_name: str) -> Response:
    status = runtime().runs.status(job_name)
    response = Response(status.json, mimetype="application/json")
    response.set_etag(f"{status.job_name}.{status.seq}")
    response.headers["Cache-Control"] = "no-cache"
    response.make_conditional(request)
    return response


@bp.delete("/api/jobs/<job_name>")
@audited("cancel")
@admin_required
def cancel_job(job_name: str) -> Response:
    runs = runtime().runs
    status = runs.status(job_name)
    if status.terminal:
        raise Conflict(f"{job_name} already finished: {status.status.value}")
    return jsonify(runs.cancel(job_name).to_dict())


@bp.get("/api/jobs/<job_name>/logs")
@admin_required
def job_logs(job_name: str) -> Response:
    tail = _int_arg("tail", default=DEFAULT_TAIL_LINES, low=0, high=MAX_TAIL_LINES)
    runs = runtime().runs
    if request.args.get("follow") in ("1", "true", "yes"):
        client_socket = request.environ.get("gunicorn.socket")
        chunks = runs.follow_logs(
            job_name,
            tail_lines=tail,
            still_wanted=(lambda: _client_connected(client_socket)) if client_socket is not None else None,
        )
        if client_socket is not None and cooperative_socket(client_socket):  # as a status stream's, under gevent
            seconds = runtime().settings.stream_write_timeout_seconds
            chunks = _write_bounded(chunks, WriteDeadline(client_socket, seconds), path=request.path, seconds=seconds)
        response = Response(stream_with_context(chunks), mimetype="text/plain")
        response.headers["X-Accel-Buffering"] = "no"
        response.headers["Cache-Control"] = "no-cache"
        return response
    return Response(runs.logs(job_name, tail_lines=tail), mimetype="text/plain")


def _write_bounded(chunks: Iterator[str], deadline: WriteDeadline, *, path: str, seconds: float) -> Iterator[str]:
    """``chunks``, each of whose writes must be done within ``seconds`` (``STREAM_WRITE_TIMEOUT_SECONDS``).

    Else ``deadline`` shuts the socket down, the server closes the answer, the viewer leaves
    its follow, and ``stream.write_timeout`` is logged: a client that stops reading (a zero
    TCP window) cannot hold its connection, its viewer's place and the run's follow.
    """
    try:
        yield from each_write_bounded(chunks, deadline)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if deadline.expired:
            log_write_timeout("http", path=path, seconds=seconds)


def _client_connected(sock: socket.socket) -> bool:
    """Whether the client of a quiet stream is still there: its socket has not been closed by the peer.

    A write would tell, but a quiet log writes nothing for minutes; a peek with
    no wait tells now (a readable socket with nothing to read is at its end).
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable or sock.recv(1, socket.MSG_PEEK) != b""
    except (OSError, ValueError):  # closed or reset
        return False


@bp.get("/api/runs")
@admin_required
def recent_runs() -> Response:
    """The newest runs, optionally only some statuses and specs (``status=``, ``spec=``: comma-separated).

    Filtered by the run store: SQLite in its query, Redis over a bounded scan of the newest runs
    (:data:`~webapp.runstore.RECENT_SCAN_LIMIT`).
    """
    limit = list_limit(request.args, default=50)
    wanted = run_filter(request.args)
    runs = runtime().runs.recent(limit, statuses=wanted.statuses, specs=wanted.specs)
    return jsonify({"runs": [status.to_dict() for status in runs]})


@bp.get("/api/migration/report")
@admin_required
def migration_report() -> Response:
    """Dual mode: how the legacy runs and the Kubernetes Jobs of the same pipeline runs compare."""
    return jsonify(runtime().runs.migration_report())


@bp.post("/api/jobs/<job_name>/rerun")
@audited("rerun")
@admin_required
def rerun_job(job_name: str) -> Response:
    """A new run of a finished run's manifest and params: ``202`` + its status (``rerun_of`` names the old run).

    ``Idempotency-Key`` as for a launch: the same key again for the same run answers ``200`` and that rerun.
    """
    note_target(job_name)
    check_job_name(job_name)
    key = idempotency_key(request)
    status, created = runtime().launcher.rerun(
        job_name, client=client_address(), request_root=own_root(), idempotency_key=key
    )
    response = jsonify(with_links(status))
    response.status_code = 202 if created else 200
    return response


@bp.post("/api/jobs/<job_name>/suspend")
@audited("suspend")
@admin_required
def suspend_job(job_name: str) -> Response:
    """Suspend a running Kubernetes Job (``spec.suspend``): ``200`` + the status after the patch."""
    return _set_suspended(job_name, suspended=True)


@bp.post("/api/jobs/<job_name>/resume")
@audited("resume")
@admin_required
def resume_job(job_name: str) -> Response:
    """Resume a suspended Kubernetes Job: ``200`` + the status after the patch."""
    return _set_suspended(job_name, suspended=False)


def _set_suspended(job_name: str, *, suspended: bool) -> Response:
    operator = current_operator() or "admin"
    status = runtime().runs.set_suspended(job_name, suspended=suspended, operator=operator)
    return jsonify(status.to_dict())
