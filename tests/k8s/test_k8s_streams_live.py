"""Real Jobs streamed by the real gunicorn gevent worker to real clients, and what disturbs them."""

from __future__ import annotations

import re
import threading
from typing import Any

import requests

from tests.cluster.controlplane import ControlPlane
from tests.helpers import parse_sse, statuses, wait_for
from tests.k8s.apiserver import reads
from tests.live.clients import (
    ADMIN,
    curl_sse,
    donate,
    launch,
    open_streams,
    start_curl_sse,
    status,
    wait_for_status,
    ws_collect,
    ws_connect,
)
from tests.live.server import LiveServer


def job_reads(cluster: ControlPlane) -> float:
    """Requests the API server has answered that read Jobs one by one or as lists (not watches)."""
    return reads(cluster, "jobs")


def test_sse_and_websocket_follow_a_real_job(k8s_live_server: LiveServer) -> None:
    name = launch(k8s_live_server, "slow")
    ws = ws_connect(k8s_live_server, name)
    ws_result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: ws_result.update(zip(("messages", "code"), ws_collect(ws), strict=True)))
    reader.start()
    code, frames, raw = curl_sse(k8s_live_server, name)
    reader.join(timeout=60)
    assert code == 0, raw
    seen = statuses(frames)
    assert seen[-2:] == ["Running", "Succeeded"], seen
    assert frames[-1] == {"event": "end", "data": {}}
    assert ws_result["code"] == 1000
    assert [m["status"] for m in ws_result["messages"]][-1] == "Succeeded"
    history = [h["status"] for h in frames[-2]["data"]["history"]]
    assert history[:2] == ["Queued", "Pending"] and history[-2:] == ["Running", "Succeeded"]


def test_a_donation_streams_to_the_end(k8s_live_server: LiveServer) -> None:
    name = donate(k8s_live_server)["job_name"]
    code, frames, _ = curl_sse(k8s_live_server, name)
    assert code == 0
    assert statuses(frames)[-1] == "Succeeded"


def test_many_streams_and_polls_cost_no_job_reads(k8s_live_server: LiveServer, cluster: ControlPlane) -> None:
    name = launch(k8s_live_server, "medium")
    wait_for_status(k8s_live_server, name, "Running")
    before = job_reads(cluster)
    assert before > 0, "the metric filter sees the app's own list of Jobs"
    curls = [start_curl_sse(k8s_live_server, name) for _ in range(20)]
    sockets = [ws_connect(k8s_live_server, name) for _ in range(20)]
    for _ in range(100):
        assert status(k8s_live_server, name)["status"] == "Running"
    after = job_reads(cluster)
    for ws in sockets:
        ws.shutdown()
    for curl in curls:
        curl.kill()
        curl.communicate()
    assert after - before == 0, f"{after - before} Job reads at the API server for 40 streams and 100 polls"


def test_an_api_server_restart_mid_stream_resumes_and_ends_right(
    k8s_live_server: LiveServer, cluster: ControlPlane
) -> None:
    name = launch(k8s_live_server, "medium")
    wait_for_status(k8s_live_server, name, "Running")
    curl = start_curl_sse(k8s_live_server, name)
    wait_for(lambda: open_streams(k8s_live_server, "sse") == 1, what="the stream to open")
    cluster.restart_apiserver()
    out, _ = curl.communicate(timeout=90)
    frames = parse_sse(out)
    assert statuses(frames)[-1] == "Succeeded"
    assert frames[-1]["event"] == "end"
    assert '"event": "watch.restarted"' in k8s_live_server.log()
    wait_for(
        lambda: requests.get(f"{k8s_live_server.url}/readyz", timeout=5).status_code == 200,
        timeout=30,
        what="readiness to come back once the watch is open again",
    )


def test_a_compacted_watch_relists_and_loses_no_terminal_status(
    k8s_live_server: LiveServer, cluster: ControlPlane
) -> None:
    name = launch(k8s_live_server, "slow")
    wait_for_status(k8s_live_server, name, "Running")
    cluster.compact_etcd()  # the app's resourceVersion is now too old; the Job finishes meanwhile
    done = wait_for_status(k8s_live_server, name, "Succeeded", timeout=90)
    assert done["terminal"] is True
    metrics = requests.get(f"{k8s_live_server.url}/metrics", timeout=10).text
    assert re.search(r'jobpulse_watch_restarts_total\{reason="gone",source="k8s"\} [1-9]', metrics), metrics


def test_a_finished_job_deleted_still_answers_also_after_a_restart(
    k8s_live_server: LiveServer, cluster: ControlPlane, k8s_namespace: str
) -> None:
    name = launch(k8s_live_server, "quick")
    done = wait_for_status(k8s_live_server, name, "Succeeded")
    cluster.request(
        "DELETE", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}", {"propagationPolicy": "Background"}
    )
    wait_for(
        lambda: (
            cluster.request("GET", f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/{name}", missing_ok=True) is None
        ),
        what="the Job to be gone, as its TTL would make it",
    )
    assert status(k8s_live_server, name) == done
    k8s_live_server.restart()
    assert status(k8s_live_server, name) == done
    code, frames, _ = curl_sse(k8s_live_server, name, timeout=10)
    assert code == 0
    assert statuses(frames) == ["Succeeded"]


def test_cancel_over_the_api_ends_open_streams(k8s_live_server: LiveServer) -> None:
    name = launch(k8s_live_server, "medium")
    wait_for_status(k8s_live_server, name, "Running")
    curl = start_curl_sse(k8s_live_server, name)
    wait_for(lambda: open_streams(k8s_live_server, "sse") == 1, what="the stream to open")
    assert requests.delete(f"{k8s_live_server.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    out, _ = curl.communicate(timeout=30)
    last = [f for f in parse_sse(out) if f.get("event") == "status"][-1]["data"]
    assert (last["status"], last["reason"]) == ("Cancelled", "Cancelled")
