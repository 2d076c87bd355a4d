"""Two real instances (gunicorn, gevent worker) that share nothing but one real redis-server.

Each instance has its own SQLite path and task-output folder, so whatever the
second one knows about a run launched on the first came through Redis: the
run store, the idempotency keys, the rate-limit counters and the legacy
status channel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import parse_sse, statuses, wait_for
from tests.live.clients import (
    ADMIN,
    DONATION,
    curl_sse,
    launch,
    start_curl_sse,
    status,
    wait_for_status,
    ws_collect,
    ws_connect,
)
from tests.live.server import LiveServer

pytestmark = [pytest.mark.redis, pytest.mark.live]

StartInstance = Callable[..., LiveServer]


@pytest.fixture
def start_instance(make_live_server: Callable[..., LiveServer], redis_url: str, tmp_path: Path) -> StartInstance:
    """Start an instance with its own local state, sharing only ``REDIS_URL`` with the others."""

    def start(label: str, **overrides: str) -> LiveServer:
        """``label`` names the instance's own state folder."""
        return make_live_server(
            REDIS_URL=redis_url, DATABASE_PATH=str(tmp_path / f"instance-{label}" / "jobpulse.sqlite3"), **overrides
        )

    return start


def test_a_task_launched_on_one_instance_streams_to_a_client_of_the_other(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "slow", seconds="2")
    code, frames, raw = curl_sse(b, name)
    assert code == 0, raw
    seen = statuses(frames)
    assert seen[-2:] == ["Running", "Succeeded"], "B followed the run live, not just its end"
    seqs = [f["data"]["seq"] for f in frames if f.get("event") == "status"]
    assert seqs == sorted(set(seqs))
    assert frames[-1] == {"event": "end", "data": {}}
    assert status(b, name) == status(a, name)


def test_a_websocket_on_one_instance_follows_a_donation_made_on_the_other(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "slow", seconds="1")
    messages, code = ws_collect(ws_connect(b, name))
    assert code == 1000
    assert messages[-1]["status"] == "Succeeded"


def test_an_idempotency_key_makes_one_job_across_instances(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    headers = {"Idempotency-Key": "double-click-across-instances"}
    first = requests.post(f"{a.url}/api/donations", json=DONATION, headers=headers, timeout=10)
    again = requests.post(f"{b.url}/api/donations", json=DONATION, headers=headers, timeout=10)
    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert again.json()["job_name"] == first.json()["job_name"]
    runs = requests.get(f"{b.url}/api/runs", headers=ADMIN, timeout=10).json()["runs"]
    assert [run["job_name"] for run in runs] == [first.json()["job_name"]], "one run in the shared store"


def test_the_rate_limit_counts_across_instances(start_instance: StartInstance) -> None:
    a, b = start_instance("a", RATE_LIMIT="3/minute"), start_instance("b", RATE_LIMIT="3/minute")
    codes = [requests.post(f"{server.url}/api/donations", json=DONATION, timeout=10) for server in (a, b, a)]
    assert [response.status_code for response in codes] == [202, 202, 202]
    refused = requests.post(f"{b.url}/api/donations", json=DONATION, timeout=10)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_status_finished_on_one_instance_answers_on_others_after_it_stopped(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "quick", who="redis")
    done = wait_for_status(a, name, "Succeeded")
    a.stop()
    assert status(b, name) == done
    c = start_instance("c")  # never saw the run: it can only come from the shared run store
    assert status(c, name) == done
    code, frames, _ = curl_sse(c, name, timeout=10)
    assert code == 0
    assert [f.get("event") for f in frames if "event" in f] == ["status", "end"]


def test_several_workers_of_one_server_follow_each_others_runs(start_instance: StartInstance) -> None:
    server = start_instance("workers", WEB_CONCURRENCY="2")
    names = [launch(server, "slow", seconds="2") for _ in range(6)]
    streams = [start_curl_sse(server, name) for name in names]
    for curl in streams:
        out, err = curl.communicate(timeout=60)
        assert curl.returncode == 0, err
        frames = parse_sse(out)
        assert statuses(frames)[-1] == "Succeeded", "each stream hears the end, whichever worker runs the task"
        assert frames[-1] == {"event": "end", "data": {}}


def _task_processes(job_name: str) -> list[int]:
    """Pids of the processes running a job's task (the runner puts TASK_JOB_NAME in their environment)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/environ"):
        try:
            environ = path.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
        if f"TASK_JOB_NAME={job_name}".encode() in environ:
            found.append(int(path.parent.name))
    return found


def test_a_cancel_through_the_other_instance_stops_the_task(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "slow", seconds="60")
    wait_for_status(a, name, "Running")
    assert _task_processes(name), "the task runs as a process on A"
    assert requests.delete(f"{b.url}/api/jobs/{name}", headers=ADMIN, timeout=10).status_code == 200
    assert wait_for_status(a, name, "Cancelled")["reason"] == "Cancelled"
    wait_for(lambda: not _task_processes(name), timeout=15, what="the task's process on instance A to be stopped")


def test_a_legacy_runs_logs_are_answered_by_the_instance_that_did_not_run_it(start_instance: StartInstance) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "quick", who="instance-a")
    wait_for_status(a, name, "Succeeded")

    def logs_on_b() -> str:
        answer = requests.get(f"{b.url}/api/jobs/{name}/logs", headers=ADMIN, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.text

    assert wait_for(logs_on_b, timeout=10, what="B to answer with the kept tail") == "quick task instance-a\n"
    followed = requests.get(f"{b.url}/api/jobs/{name}/logs?follow=1", headers=ADMIN, timeout=10)
    assert followed.text == "quick task instance-a\n"
    on_a = requests.get(f"{a.url}/api/jobs/{name}/logs", headers=ADMIN, timeout=10)
    assert on_a.text == "quick task instance-a\n", "A still answers from the output it has"
