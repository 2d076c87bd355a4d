"""The pod prober against a fake pod list: why a waiting Job waits, and a quick stop."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tests.helpers import wait_for
from webapp.executors.k8s_watch import PodProber
from webapp.kube.client import JOB_NAME_LABEL

STOP_DEADLINE = 1.0


def pod(job_name: str, created: str, reason: str | None) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": f"{reason} message"}} if reason else {"running": {}}
    return {
        "metadata": {
            "name": f"{job_name}-{created}",
            "labels": {JOB_NAME_LABEL: job_name},
            "creationTimestamp": created,
        },
        "status": {"containerStatuses": [{"state": state}]},
    }


class Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """``CoreV1Api.list_namespaced_pod`` with ``_preload_content=False``: serves ``pods``, counts the calls."""

    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.lists = 0

    def list_namespaced_pod(self, namespace: str, **options: Any) -> Answer:
        assert options["label_selector"] == "app.kubernetes.io/managed-by=jobpulse"
        self.lists += 1
        return Answer({"items": self.pods})


def test_a_waiting_job_is_probed_at_once_and_observed_again_when_its_reason_changes() -> None:
    core = FakeCore()
    core.pods = [pod("a", "2026-12-01T10:00:00Z", "ErrImagePull"), pod("a", "2026-12-01T10:00:05Z", "ImagePullBackOff")]
    changed: list[str] = []
    prober = PodProber(core=core, namespace="ns", on_change=lambda job: changed.append(job["metadata"]["name"]))  # type: ignore[arg-type]
    thread = threading.Thread(target=prober.run, daemon=True)
    thread.start()
    try:
        prober.track("a", {"metadata": {"name": "a"}}, waiting=True)
        prober.track("b", {"metadata": {"name": "b"}}, waiting=True)  # no pod yet: no reason, nothing to say
        wait_for(lambda: changed, timeout=5, what="the first probe")
        assert prober.reason("a") == ("ImagePullBackOff", "ImagePullBackOff message")  # the newest pod's
        assert prober.reason("b") is None
        assert changed == ["a"]
        prober.track("a", {"metadata": {"name": "a"}}, waiting=False)  # running now: forgotten
        assert prober.reason("a") is None
    finally:
        started = time.monotonic()
        prober.stop()
        thread.join(STOP_DEADLINE)
    assert not thread.is_alive() and time.monotonic() - started < STOP_DEADLINE
