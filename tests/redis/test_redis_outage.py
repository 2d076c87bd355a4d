"""Redis going away and coming back, under real instances: streams carry on, readiness tells the truth.

This module has its own redis-server (the fixture is per module), which it
stops and restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.helpers import captured_logs, parse_sse, statuses, wait_for
from tests.live.clients import ADMIN, DONATION, launch, open_streams, start_curl_sse, status, wait_for_status
from tests.live.server import LiveServer, free_port
from tests.redis.conftest import RedisServer
from webapp import runtime as runtime_module

pytestmark = pytest.mark.redis

UNKNOWN_JOB = "task-runner-never-launched-0000beef"

StartInstance = Callable[..., LiveServer]


@pytest.fixture
def start_instance(make_live_server: Callable[..., LiveServer], redis_url: str, tmp_path: Path) -> StartInstance:
    def start(label: str) -> LiveServer:
        return make_live_server(REDIS_URL=redis_url, DATABASE_PATH=str(tmp_path / f"instance-{label}" / "db.sqlite3"))

    return start


@pytest.fixture
def redis_back_up(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Whatever a test does to Redis, it runs again before the instances stop."""
    yield redis_server
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()


def readiness(server: LiveServer) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{server.url}/readyz", timeout=10)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def finish_stream(curl: Any) -> list[dict[str, Any]]:
    out, err = curl.communicate(timeout=60)
    assert curl.returncode == 0, err
    return parse_sse(out)


@pytest.mark.live
def test_a_stream_survives_a_redis_restart(start_instance: StartInstance, redis_back_up: RedisServer) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "slow", seconds="5")
    curl = start_curl_sse(b, name)
    wait_for(lambda: open_streams(b, "sse") == 1, what="the stream on B to open")
    wait_for(lambda: status(b, name)["status"] == "Running", timeout=20, what="B to hear Running")

    redis_back_up.restart()

    frames = finish_stream(curl)
    assert statuses(frames)[-1] == "Succeeded"
    assert frames[-1] == {"event": "end", "data": {}}
    wait_for(lambda: readiness(b)[0] == 200, timeout=30, what="B ready again")
    assert '"source": "redis"' in b.log() and '"event": "watch.restarted"' in b.log()


@pytest.mark.live
def test_while_redis_is_down_b_is_unready_and_catches_up_by_itself(
    start_instance: StartInstance, redis_back_up: RedisServer
) -> None:
    a, b = start_instance("a"), start_instance("b")
    name = launch(a, "slow", seconds="3")
    curl = start_curl_sse(b, name)
    wait_for(lambda: open_streams(b, "sse") == 1, what="the stream on B to open")
    wait_for(lambda: status(b, name)["status"] == "Running", timeout=20, what="B to hear Running")

    redis_back_up.stop()
    _, body = wait_for(lambda: (r := readiness(b))[0] == 503 and r, timeout=20, what="B to say it is not ready")
    assert any(reason.startswith("redis: Redis unreachable: ") for reason in body["reasons"]), body
    address = f"127.0.0.1:{redis_back_up.port}"
    assert address not in str(body), "anyone may read /readyz: no internal address"
    wait_for(lambda: address in b.log(), what="the log to name the address, for operators")
    assert status(b, name)["status"] == "Running", "the hub keeps serving what it knows"
    missing = requests.get(f"{b.url}/api/jobs/{UNKNOWN_JOB}", timeout=10)
    assert (missing.status_code, missing.json()["error"]) == (503, "store_unavailable")
    wait_for_status(a, name, "Succeeded")  # finished on A while Redis is away: B cannot hear it yet
    assert curl.poll() is None, "B's stream is still open, waiting"

    redis_back_up.start()
    wait_for(lambda: readiness(b)[0] == 200, timeout=30, what="B to be ready again by itself")
    frames = finish_stream(curl)
    assert statuses(frames)[-1] == "Succeeded"
    assert status(b, name) == status(a, name)


# -- the app (Flask test client) while Redis is down -----------------------------------


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], redis_url: str, redis_back_up: RedisServer) -> Iterator[Flask]:
    yield make_app(REDIS_URL=redis_url)


def test_requests_needing_the_store_get_503_while_redis_is_down(redis_app: Flask, redis_server: RedisServer) -> None:
    client = redis_app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10, what="the channel to subscribe")
    redis_server.stop()

    launched = client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN)
    assert launched.status_code == 503
    assert launched.get_json()["error"] == "store_unavailable"
    assert launched.get_json()["message"].startswith("Redis unreachable: ")
    assert client.get(f"/api/jobs/{UNKNOWN_JOB}").get_json()["error"] == "store_unavailable"
    not_ready = wait_for(
        lambda: (r := client.get("/readyz")).status_code == 503 and len(r.get_json()["reasons"]) == 2 and r,
        timeout=10,
        what="both the channel and the run store in /readyz",
    )
    reasons = not_ready.get_json()["reasons"]
    assert sorted(reason.split(":")[0] for reason in reasons) == ["redis", "run store"]

    redis_server.start()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20, what="ready again by itself")
    assert client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN).status_code == 202


def test_a_donation_gets_503_not_500_while_redis_is_down(redis_app: Flask, redis_server: RedisServer) -> None:
    client = redis_app.test_client()
    redis_server.stop()
    response = client.post("/api/donations", json=DONATION)
    assert (response.status_code, response.get_json()["error"]) == (503, "store_unavailable")


def test_public_answers_name_no_redis_address_while_it_is_down(redis_app: Flask, redis_server: RedisServer) -> None:
    client = redis_app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10, what="the channel to subscribe")
    redis_server.stop()

    not_ready = wait_for(
        lambda: (r := client.get("/readyz")).status_code == 503 and len(r.get_json()["reasons"]) == 2 and r,
        timeout=10,
        what="both the channel and the run store in /readyz",
    )
    answers = {
        "readyz": not_ready,
        "launch": client.post("/api/jobs", json={"spec": "quick"}, headers=ADMIN),
        "status": client.get(f"/api/jobs/{UNKNOWN_JOB}"),
        "donation": client.post("/api/donations", json=DONATION),
    }
    for what, answer in answers.items():
        assert answer.status_code == 503, what
        text = answer.get_data(as_text=True)
        assert "127.0.0.1" not in text, (what, text)
        assert str(redis_server.port) not in text, (what, text)
        assert "Redis unreachable" in text, (what, text)


def test_the_app_starts_while_redis_is_down_and_says_so(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "Redis unreachable" in response.get_json()["message"]


def test_an_outage_is_a_warning_in_the_background_loops_not_a_traceback_each_pass(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "HOUSEKEEPING_SECONDS", 0.05)
    loops = {"housekeeping.failed", "webhook.loop_failed"}
    with captured_logs() as records:
        make_app(
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there: the store is down from the start
            COMPLETION_WEBHOOK_URL="https://hooks.example.org/jobpulse",
            WEBHOOK_SECRET="webhook-secret-0123456789",
        )
        wait_for(lambda: loops <= {r.msg for r in records}, timeout=30, what="a pass of each loop")
    failures = [record for record in records if record.msg in loops]
    assert {(r.levelname, r.exc_info) for r in failures} == {("WARNING", None)}, failures
    assert all(r.__dict__["error"].startswith("Redis unreachable") for r in failures), failures
