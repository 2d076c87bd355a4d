"""Fixtures for the page in a real browser, against real servers.

The browser, its contexts and pages come from :mod:`tests.browser` (one
browser for the whole run, offered by ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page

from tests.conftest import server_factory
from tests.e2e.donation_page import DonationPage
from tests.e2e.flask_run_server import FlaskRunServer
from tests.e2e.proxy import TransportBlockingProxy
from tests.e2e.waitress_server import WaitressServer
from tests.live.server import LiveServer

# axe-core's exact version and integrity hash are locked in axe/package-lock.json; the cached
# install is keyed by that file, so a new lock brings a fresh install.
AXE_LOCK = Path(__file__).parent / "axe"
AXE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "jobpulse"
    / f"axe-core-{hashlib.sha256((AXE_LOCK / 'package-lock.json').read_bytes()).hexdigest()[:12]}"
)


@pytest.fixture
def donation_spec(jobspecs_dir: Path) -> Callable[..., None]:
    """Change this test's copy of the donation jobspec (before its server starts)."""

    def change(
        *, step_seconds: float | None = None, command: list[str] | None = None, backoff_limit: int | None = None
    ) -> None:
        path = jobspecs_dir / "donation-receipt.yaml"
        manifest = yaml.safe_load(path.read_text())
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        if step_seconds is not None:
            for variable in container["env"]:
                if variable["name"] == "TASK_STEP_SECONDS":
                    variable["value"] = str(step_seconds)
        if command is not None:
            container["command"] = command
        if backoff_limit is not None:
            manifest["spec"]["backoffLimit"] = backoff_limit
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))

    return change


@pytest.fixture
def make_waitress_server(app_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WaitressServer]]:
    """Start the app under waitress with extra settings; all are stopped afterwards."""
    with server_factory(WaitressServer, app_env, tmp_path) as start:
        yield start


@pytest.fixture(params=[WaitressServer, FlaskRunServer], ids=["waitress", "flask-run"])
def make_plain_wsgi_server(
    request: pytest.FixtureRequest, app_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Start the app under a WSGI server that cannot hold our WebSockets (waitress, ``flask run``)."""
    with server_factory(request.param, app_env, tmp_path) as start:
        yield start


@pytest.fixture
def blocking_proxy(live_server: LiveServer) -> Iterator[TransportBlockingProxy]:
    """The live gunicorn server behind a proxy that carries neither WebSocket nor SSE."""
    proxy = TransportBlockingProxy(live_server.url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core from npm, as locked, installed once into the user's cache (nothing from node_modules is committed)."""
    script = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found: install the Debian package 'npm' to fetch axe-core for the accessibility tests")
    staging = AXE_DIR.with_name(f"{AXE_DIR.name}.{os.getpid()}")
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(AXE_LOCK / name, staging / name)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(staging), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm ci of {AXE_LOCK} failed:\n{done.stdout}\n{done.stderr}")
    try:
        staging.rename(AXE_DIR)
    except OSError:  # another test process installed it first
        shutil.rmtree(staging, ignore_errors=True)
    if not script.exists():
        pytest.fail(f"axe-core installed but {script} is missing")
    return script


@pytest.fixture
def donation_page(live_server: LiveServer, page: Page) -> DonationPage:
    """The donation page of a fresh gunicorn server, opened in a fresh browser context."""
    return DonationPage(page, live_server.url).open()
