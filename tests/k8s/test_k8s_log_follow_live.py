"""Following a real Job's output: one pod log follow per Job per process, however many operators watch."""

from __future__ import annotations

from collections.abc import Callable

from tests.cluster.controlplane import ControlPlane
from tests.k8s.apiserver import _samples
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
