"""The seed-style baseline: the seed plan's own example, so the benchmarks can put it beside jobpulse.

What the project's first plan sketched: a FastAPI app under uvicorn (one
worker), one WebSocket endpoint per job, and in each connection a loop that
reads the Job with the *synchronous* official Kubernetes client, right inside
the async handler, every ``POLL_SECONDS`` (2), and sends the status when it
changed. Each read blocks the event loop for as long as the API server takes
to answer, so every other connection (and every new one waiting to be
accepted) waits behind it; that is the behaviour this baseline exists to
show, so it is kept on purpose::

    KUBECONFIG=... K8S_NAMESPACE=... uvicorn benchmarks.seed_baseline:app --ws wsproto --port 8000

It serves ``/ws/task-status/<job_name>`` (the URL jobpulse and the polling
baseline serve, so the same load generators read it) and ``/readyz``; the
messages carry the Job's own counters (``active``, ``ready``, ``succeeded``,
``failed``) and a status derived from them the plain way. No SSE and no
launches: the seed's example had neither. Benchmark-only: nothing in
``webapp`` imports or knows about it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "2"))
TERMINAL = {"Succeeded", "Failed"}


def seed_status(job: Any) -> dict[str, Any]:
    """The status the seed's example sent: the Job's counters and a phase read off them."""
    counters = job.status
    if counters.succeeded:
        phase = "Succeeded"
    elif counters.failed and not counters.active:
        phase = "Failed"
    elif counters.active:
        phase = "Running"
    else:
        phase = "Pending"
    return {
        "type": "status",
        "job_name": job.metadata.name,
        "status": phase,
        "active": counters.active or 0,
        "ready": counters.ready or 0,
        "succeeded": counters.succeeded or 0,
        "failed": counters.failed or 0,
        "started_at": counters.start_time.isoformat() if counters.start_time else None,
    }


def create_app() -> FastAPI:
    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    batch = client.BatchV1Api()
    namespace = os.environ.get("K8S_NAMESPACE", "default")
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/task-status/{job_name}")
    async def task_status(websocket: WebSocket, job_name: str) -> None:
        await websocket.accept()
        last: dict[str, Any] | None = None
        try:
            while True:
                try:
                    job = batch.read_namespaced_job(job_name, namespace)  # blocks the event loop, as the seed did
                except ApiException as error:
                    if error.status == 404:
                        await websocket.close(code=4404)
                        return
                    raise
                current = seed_status(job)
                if current != last:
                    last = current
                    await websocket.send_json(current)
                if current["status"] in TERMINAL:
                    await websocket.close(code=1000)
                    return
                await asyncio.sleep(POLL_SECONDS)
        except WebSocketDisconnect:
            return

    return app


app = create_app()
