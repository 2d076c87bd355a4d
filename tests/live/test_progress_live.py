"""Live progress on the real gunicorn gevent worker: the donation task's four steps reach ``curl -N`` in order."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.helpers import parse_sse, wait_for
from tests.live.clients import ADMIN, donate, launch, open_streams, start_curl_sse, wait_for_status
from tests.live.server import LiveServer


def test_the_donation_tasks_four_steps_arrive_over_sse_in_order(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(LEGACY_MAX_CONCURRENCY="1")
    blocker = launch(server, "slow", seconds="60")  # holds the only slot: the donation waits, Queued
    wait_for_status(server, blocker, "Running")
    name = donate(server)["job_name"]
    assert requests.get(f"{server.url}/api/jobs/{name}", timeout=10).json()["status"] == "Queued"
    curl = start_curl_sse(server, name)  # open before the task starts: every step is a change it sees
    wait_for(lambda: open_streams(server, "sse") == 1, what="the stream to open")
    assert requests.delete(f"{server.url}/api/jobs/{blocker}", headers=ADMIN, timeout=10).status_code == 200

    out, err = curl.communicate(timeout=60)
    assert curl.returncode == 0, err
    statuses = [f["data"] for f in parse_sse(out) if f.get("event") == "status"]
    steps = []
    for status in statuses:
        progress = status["progress"]
        if progress is not None and (not steps or steps[-1] != (progress["done"], progress["text"])):
            steps.append((progress["done"], progress["text"]))
    assert steps == [
        (1, "Donation checked"),
        (2, "Donation recorded"),
        (3, "Receipt issued"),
        (4, "Receipt sent"),
    ]
    assert all(s["progress"] is None or s["progress"]["total"] == 4 for s in statuses)
    final = statuses[-1]
    assert final["status"] == "Succeeded"
    assert (final["progress"]["done"], final["progress"]["text"]) == (4, "Receipt sent"), "the final status keeps it"
    assert [h["status"] for h in final["history"]] == ["Queued", "Pending", "Running", "Succeeded"]
    logs = requests.get(f"{server.url}/api/jobs/{name}/logs", headers=ADMIN, timeout=10).text
    assert "progress not reported" not in logs
