"""Progress from inside a pod, on the real control plane.

With KWOK the pod runs no code, so the test does what the task would: it
reads ``JOBPULSE_PROGRESS_URL`` and ``JOBPULSE_PROGRESS_TOKEN`` from the
created Job's pod template (as the admin, not as the app) and sends the
report with the task's own helper. The pod needs no Kubernetes RBAC for it:
only the URL (``SERVICE_URL``) and its run's token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import parse_sse
from tests.live.clients import ADMIN, curl_sse, launch, start_curl_sse, wait_for_status
from tests.live.server import LiveServer
from webapp.tasks.progress import TOKEN_ENV, URL_ENV, report


def test_a_pod_reports_progress_with_its_runs_token_and_the_stream_shows_it(
    app_env: dict[str, str], k8s_env: dict[str, str], kube: Any, k8s_namespace: str, tmp_path: Path
) -> None:
    server = LiveServer(env={**app_env, "LOG_LEVEL": "INFO", **k8s_env}, log_path=tmp_path / "gunicorn.log")
    service_url = f"http://localhost:{server.port}"  # not the launch request's own root (127.0.0.1)
    server.env["SERVICE_URL"] = service_url
    server.start()
    try:
        name = launch(server, "medium")
        job = kube.read_namespaced_job(name, k8s_namespace)
        for container in job.spec.template.spec.containers:
            env = {item.name: item.value for item in container.env or []}
            assert env[URL_ENV] == f"{service_url}/api/jobs/{name}/progress"
            assert env[TOKEN_ENV]
        wait_for_status(server, name, "Running", timeout=60)
        stream = start_curl_sse(server, name)

        assert report(3, 10, "Three of ten", environ=env) is True  # exactly what the task sends
        other = launch(server, "medium")
        assert report(1, 1, "not mine", environ={**env, URL_ENV: f"{service_url}/api/jobs/{other}/progress"}) is False

        out, _ = stream.communicate(timeout=90)
        _, frames, _ = curl_sse(server, name, timeout=10)  # the finished run, read again: it keeps its progress
    finally:
        server.stop()
    live = [f["data"] for f in parse_sse(out) if f.get("event") == "status"]
    reported = [s for s in live if s["progress"] is not None]
    assert reported, live
    assert (reported[0]["status"], reported[0]["progress"]["done"], reported[0]["progress"]["total"]) == (
        "Running",
        3,
        10,
    )
    assert reported[0]["progress"]["text"] == "Three of ten"
    final = [f["data"] for f in frames if f.get("event") == "status"][-1]
    assert final["status"] == "Succeeded"
    assert (final["progress"]["done"], final["progress"]["text"]) == (3, "Three of ten")
    assert ADMIN["Authorization"] != f"Bearer {env[TOKEN_ENV]}"
