"""Fixtures shared by every test: apps on temporary state, clients, the live server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.browser import browser, new_context, page  # noqa: F401  (one browser for e2e and control-plane tests)
from tests.live.server import LiveServer
from tests.storage import SmallDisk
from webapp import create_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_JOBSPECS = Path(__file__).resolve().parent / "jobspecs"
ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def jobspecs_dir(tmp_path: Path) -> Path:
    """The project's jobspecs plus the test ones (quick, fail, retry, slow, deadline)."""
    folder = tmp_path / "jobspecs"
    folder.mkdir()
    for source in [*(PROJECT_ROOT / "jobspecs").glob("*.yaml"), *TEST_JOBSPECS.glob("*.yaml")]:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture
def app_env(tmp_path: Path, jobspecs_dir: Path) -> dict[str, str]:
    """Environment variables for an app whose state lives in this test's temp folder."""
    return {
        "DATABASE_PATH": str(tmp_path / "state" / "jobpulse.sqlite3"),
        "JOBSPECS_DIR": str(jobspecs_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT": "1000/minute",
        "SSE_HEARTBEAT_SECONDS": "0.5",
    }


@pytest.fixture
def make_app(app_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """Build apps with extra settings; every runtime built is stopped afterwards."""
    built: list[Flask] = []

    def build(**overrides: str) -> Flask:
        app = create_app({**app_env, **overrides})
        app.config["TESTING"] = True
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["jobpulse"].stop()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


Server = TypeVar("Server", bound=LiveServer)


@contextmanager
def server_factory(
    server_class: type[Server], app_env: dict[str, str], folder: Path
) -> Iterator[Callable[..., Server]]:
    """Start real servers of ``server_class`` with extra settings; stop them all on the way out."""
    servers: list[Server] = []

    def start(**overrides: str) -> Server:
        env = {**app_env, "LOG_LEVEL": "INFO", **overrides}
        server = server_class(env=env, log_path=folder / f"{server_class.name}-{len(servers)}.log")
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        # Signal them all first: each stop is mostly the server's own shutdown ticks, which can overlap.
        for server in servers:
            server.begin_stop()
        failures = []
        for server in servers:
            try:
                server.stop()
            except AssertionError as failure:  # one that did not stop must not leave the others running
                failures.append(failure)
        if failures:
            raise failures[0]


@pytest.fixture
def make_live_server(app_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real gunicorn servers with extra settings; all are stopped afterwards."""
    with server_factory(LiveServer, app_env, tmp_path) as start:
        yield start


@pytest.fixture
def live_server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(mount_point)
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
