"""With the API server stopped, the real gunicorn server's public answers name no address; its log does."""

from __future__ import annotations

import requests

from tests.cluster.controlplane import ControlPlane
from tests.helpers import wait_for
from tests.live.clients import ADMIN, DONATION, launch
from tests.live.server import LiveServer


def test_answers_name_no_api_server_address_while_it_is_down_and_the_log_does(
    k8s_live_server: LiveServer, cluster: ControlPlane
) -> None:
    name = launch(k8s_live_server, "slow")
    port = str(cluster.ports["apiserver"])
    url = k8s_live_server.url
    seen: list[requests.Response] = []

    def refused() -> bool:  # (a 503 Response is falsy)
        seen.append(requests.get(f"{url}/readyz", timeout=10))
        return "Connection refused" in seen[-1].text

    with cluster.apiserver_stopped():
        try:
            wait_for(refused, timeout=60, what="/readyz to say the API server refuses connections")
        except AssertionError as error:
            raise AssertionError(f"{error}; last answer: {seen[-1].status_code} {seen[-1].text}") from None
        ready = seen[-1]
        answers = {
            "readyz": ready,
            "donation": requests.post(f"{url}/api/donations", json=DONATION, timeout=30),
            "admin launch": requests.post(f"{url}/api/jobs", json={"spec": "quick"}, headers=ADMIN, timeout=30),
            "logs": requests.get(f"{url}/api/jobs/{name}/logs", headers=ADMIN, timeout=30),
            "cancel": requests.delete(f"{url}/api/jobs/{name}", headers=ADMIN, timeout=30),
        }
    assert ready.json()["reasons"] == [
        "k8s: the Job watch is not synced: the Kubernetes API server is unreachable: Connection refused"
    ]
    for what, answer in answers.items():
        assert answer.status_code == 503, (what, answer.text)
        for address in (cluster.server_url, f"127.0.0.1:{port}", f"port={port}", port, "/apis/", "https://"):
            assert address not in answer.text, (what, address, answer.text)
    assert answers["donation"].json() == {
        "error": "executor_unavailable",
        "message": "could not create the Job: the Kubernetes API server is unreachable: Connection refused",
    }
    log = k8s_live_server.log()
    for event in ('"event": "watch.restarted"', '"event": "k8s.call_failed"'):
        assert any(event in line and f"port={port}" in line for line in log.splitlines()), event
