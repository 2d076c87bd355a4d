"""Following a real Job's output: one pod log follow per Job per process, however many operators watch;
a follow begun before the pod's log can be read gets the output once it can."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from tests.cluster.controlplane import NODE_NAME, ControlPlane
from tests.helpers import wait_for
from tests.k8s.apiserver import _samples
from tests.k8s.test_k8s_log_tails import pods_of
from tests.live.clients import launch, status, wait_for_status
from tests.live.log_clients import log_follows_open, read_lines, start_curl_logs
from tests.live.server import LiveServer


def pod_log_reads(cluster: ControlPlane) -> float:
    """Reads of pods' logs the API server has answered (follows included, counted once they end)."""
    return sum(
        value
        for labels, value in _samples(cluster, "apiserver_request_total")
        if labels.get("resource") == "pods" and labels.get("subresource") == "log"
    )


def test_two_curls_share_one_pod_log_follow_that_ends_with_the_job(
    make_live_server: Callable[..., LiveServer], k8s_env: dict[str, str], cluster: ControlPlane
) -> None:
    cluster.set_pod_log(["line one", "line two"])
    server = make_live_server(**k8s_env, LOG_TAIL_BYTES="0")  # no tail kept at the end: every log read is a follow
    before = pod_log_reads(cluster)
    name = launch(server, "medium")  # Running for 15 s
    wait_for_status(server, name, "Running")
    curls = [start_curl_logs(server, name) for _ in range(2)]
    try:
        for curl in curls:
            assert read_lines(curl, 2) == ["line one\n", "line two\n"]
        assert log_follows_open(server) == 1, "one follow for both viewers"
        assert status(server, name)["status"] == "Running"
        for curl in curls:
            out, err = curl.communicate(timeout=60)
            assert (curl.returncode, out, err) == (0, "", ""), "curl exits by itself when the Job has ended"
    finally:
        for curl in curls:
            if curl.poll() is None:
                curl.kill()
                curl.communicate()
    assert status(server, name)["status"] == "Succeeded"
    assert log_follows_open(server) == 0
    assert pod_log_reads(cluster) - before == 1, "one read of the pod's log at the API server"


# Its pod waits for a node with the label the test gives the node (until then the API server answers its log with
# an empty one, which ends at once: a pod with no node has no kubelet to ask), then runs for a few seconds.
WAITS_FOR_A_NODE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: waits-for-a-node
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        jobpulse-test/run-for: 10s
    spec:
      restartPolicy: Never
      nodeSelector:
        {label}: "true"
      containers:
        - name: task
          image: jobpulse:latest
          command: ["python", "-c", "print('runs once it has a node')"]
"""


def label_node(cluster: ControlPlane, label: str, value: str | None) -> None:
    patch = {"metadata": {"labels": {label: value}}}
    cluster.request("PATCH", f"/api/v1/nodes/{NODE_NAME}", patch, content_type="application/merge-patch+json")


def test_a_follow_begun_before_the_pods_log_can_be_read_gets_it_once_it_can(
    make_live_server: Callable[..., LiveServer],
    k8s_env: dict[str, str],
    cluster: ControlPlane,
    k8s_namespace: str,
    jobspecs_dir: Path,
) -> None:
    """The console opened right after the launch: the pod is there, its log is not yet (it has no node).

    The simulated kubelet serves a pod's log as soon as the pod has a node, so the wait for a node stands in for
    a real kubelet's 400 ("waiting to start"), which the unit tests cover.
    """
    label = f"jobpulse-test/follow-{secrets.token_hex(4)}"
    (jobspecs_dir / "waits-for-a-node.yaml").write_text(WAITS_FOR_A_NODE.format(label=label))
    cluster.set_pod_log(["started late", "and ran"])
    server = make_live_server(**k8s_env)
    name = launch(server, "waits-for-a-node")
    wait_for(lambda: pods_of(cluster, k8s_namespace, name), timeout=30, what="the Job's pod, not scheduled")
    before = pod_log_reads(cluster)
    curl = start_curl_logs(server, name)
    try:
        wait_for(
            lambda: pod_log_reads(cluster) > before,
            timeout=30,
            what="the follow's read of the pod's log to end empty: the pod has no node yet",
        )
        label_node(cluster, label, "true")  # the pod is scheduled, starts, and its log can be read
        assert read_lines(curl, 2) == ["started late\n", "and ran\n"]
        assert status(server, name)["status"] == "Running", "read while the pod runs, not once the run has ended"
        out, err = curl.communicate(timeout=60)
        assert (curl.returncode, out, err) == (0, "", ""), "curl exits by itself when the Job has ended"
    finally:
        label_node(cluster, label, None)
        if curl.poll() is None:
            curl.kill()
            curl.communicate()
    assert status(server, name)["status"] == "Succeeded"
