from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.live.server import LiveServer


@pytest.fixture
def make_live_server(app_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real gunicorn servers with extra settings; all are stopped afterwards."""
    servers: list[LiveServer] = []

    def start(**overrides: str) -> LiveServer:
        env = {**app_env, "LOG_LEVEL": "INFO", **overrides}
        server = LiveServer(env=env, log_path=tmp_path / f"gunicorn-{len(servers)}.log")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server()
