"""Live progress on the real gunicorn gevent worker: the donation task's four steps reach ``curl -N`` in order."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path

import requests

from tests.conftest import server_factory
from tests.helpers import parse_sse, wait_for
from tests.live.clients import ADMIN, DONATION, donate, launch, open_streams, start_curl_sse, wait_for_status
from tests.live.server import LiveServer
from webapp.jobspecs import PROGRESS_URL_ENV


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


class UnixSocketServer(LiveServer):
    """gunicorn listening on its loopback port and on a unix socket, as behind a proxy that connects to a socket."""

    @property
    def socket_path(self) -> Path:
        return self.log_path.with_suffix(".sock")

    def command(self) -> list[str]:  # the command line's binds replace gunicorn.conf.py's BIND
        return [*super().command(), "--bind", f"127.0.0.1:{self.port}", "--bind", f"unix:{self.socket_path}"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self.path))


def test_a_host_header_sent_over_a_unix_socket_never_chooses_where_a_task_sends_its_token(
    app_env: dict[str, str], tmp_path: Path
) -> None:
    """On a unix socket gunicorn makes ``SERVER_NAME`` of the client's ``Host``: no address of this server to use."""
    with server_factory(UnixSocketServer, app_env, tmp_path) as start:
        server = start()
        connection = _UnixConnection(server.socket_path)
        hostile = {"Host": "attacker.example:9999", "Content-Type": "application/json"}
        connection.request("POST", "/api/donations", body=json.dumps(DONATION), headers=hostile)
        answer = connection.getresponse()
        assert answer.status == 202
        name = json.loads(answer.read())["job_name"]
        connection.close()
        details = requests.get(f"{server.url}/api/jobs/{name}/details", headers=ADMIN, timeout=10).json()
        env = {
            item["name"]: item.get("value")
            for item in details["manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert "attacker" not in json.dumps(env)
        assert PROGRESS_URL_ENV not in env  # no SERVICE_URL: the run reports no progress, rather than to a stranger
