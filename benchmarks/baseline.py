"""The baseline: status streams served the naive way, for the benchmarks to compare against.

What a straightforward implementation does: every open stream reads its Job
from the Kubernetes API server every ``POLL_SECONDS`` (2) and sends the status
when it changed. It serves the same URLs and the same JSON status fields as
jobpulse (the Job→status mapping is jobpulse's own, so only the way statuses
reach the client differs), under the same gunicorn gevent worker::

    KUBECONFIG=... K8S_NAMESPACE=... gunicorn benchmarks.baseline:app -c gunicorn.conf.py

It also takes donations the plain way (render the Job, create it, answer) so
launch throughput has something to be compared with. Benchmark-only: nothing
in ``webapp`` imports or knows about it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_sock import Sock
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from webapp.jobspecs import load_jobspecs, render_job
from webapp.k8s_status import job_fields

POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "2"))
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def _api() -> tuple[client.BatchV1Api, str]:
    configuration = client.Configuration()
    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    configuration.connection_pool_maxsize = 256  # generous: a small pool would make the baseline slower still
    return client.BatchV1Api(client.ApiClient(configuration)), os.environ.get("K8S_NAMESPACE", "default")


def create_app() -> Flask:
    app = Flask(__name__)
    sock = Sock(app)
    batch, namespace = _api()
    specs = load_jobspecs(Path(os.environ["JOBSPECS_DIR"])) if "JOBSPECS_DIR" in os.environ else {}
    donation_spec = os.environ.get("DONATION_JOBSPEC", "donation-receipt")

    def read_status(job_name: str) -> dict[str, Any] | None:
        """One GET of the Job: the whole cost of one poll."""
        try:
            response: Any = batch.read_namespaced_job(job_name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        job = json.loads(response.data)
        fields = job_fields(job)
        return {"job_name": job_name, **{k: (str(v) if k.endswith("_at") else v) for k, v in fields.items()}}

    def polled(job_name: str, first: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The first status, then each one that differs from the last, polling every POLL_SECONDS."""
        last = first
        yield first
        while last["status"] not in TERMINAL:
            time.sleep(POLL_SECONDS)
            current = read_status(job_name)
            if current is None:
                return
            if current != last:
                last = current
                yield current

    @app.get("/readyz")
    def ready() -> Response:
        return jsonify(status="ok")

    @app.get("/sse/task-status/<job_name>")
    def sse(job_name: str) -> Response | tuple[Response, int]:
        first = read_status(job_name)
        if first is None:
            return jsonify(error="not_found"), 404

        def stream() -> Iterator[str]:
            yield "retry: 2000\n\n"
            for status in polled(job_name, first):
                yield f"event: status\ndata: {json.dumps(status)}\n\n"
            yield "event: end\ndata: {}\n\n"

        return Response(stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    @sock.route("/ws/task-status/<job_name>")  # type: ignore[untyped-decorator]
    def ws(socket: Any, job_name: str) -> None:
        first = read_status(job_name)
        if first is None:
            socket.close(reason=4404)
            return
        for status in polled(job_name, first):
            socket.send(json.dumps({"type": "status", **status}))
        socket.close(reason=1000)

    @app.post("/api/donations")
    def donate() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        params = {key: str(body[key]) for key in ("amount", "currency", "donor_name", "donor_email") if key in body}
        run_id = uuid.uuid4().hex
        job_name = f"donation-{run_id[:12]}"
        manifest = render_job(specs[donation_spec], job_name=job_name, pipeline_run_id=run_id, params=params)
        batch.create_namespaced_job(namespace, manifest)
        return jsonify(job_name=job_name, status="Pending"), 202

    return app


app = create_app()
