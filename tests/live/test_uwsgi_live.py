"""The local runner under real uWSGI, where ``sys.executable`` is not a Python."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import server_factory
from tests.helpers import wait_for
from tests.live.clients import ADMIN, donate, status
from tests.live.uwsgi_server import UwsgiServer


@pytest.fixture
def make_uwsgi_server(app_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., UwsgiServer]]:
    with server_factory(UwsgiServer, app_env, tmp_path) as start:
        yield start


def test_a_donation_task_runs_to_the_end_under_uwsgi(make_uwsgi_server: Callable[..., UwsgiServer]) -> None:
    server = make_uwsgi_server()
    name = donate(server)["job_name"]
    done = wait_for(lambda: (s := status(server, name))["terminal"] and s, timeout=60, what="the end of the run")
    assert (done["status"], done["failed"], done["succeeded"]) == ("Succeeded", 0, 1), done
    logs = requests.get(f"{server.url}/api/jobs/{name}/logs", headers=ADMIN, timeout=10).text
    assert "receipt R-" in logs, logs
    assert "unable to load configuration" not in logs
