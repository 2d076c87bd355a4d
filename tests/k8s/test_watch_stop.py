"""Stopping the watches while they wait for an event: ``stop()`` and all three threads end within a second.

An idle watch sits in a TLS read until the API server's next bookmark (about
a minute). ``stop()`` must wake that read, not wait for it, under plain
threads and under gevent's monkey-patching (the gunicorn worker). The watch
runs against the real API server, in a namespace with no Jobs, so nothing
but a bookmark could end the read; the same holds for the ``FailedCreate``
Events watch and the pod probe.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.helpers import wait_for

JOIN_DEADLINE = 5.0
"""A correctness bound, not a timing target: before the fix ``stop()`` blocked for about a minute."""


def stop_idle_watch(kubeconfig: str, namespace: str, database: Path) -> list[str]:
    """Start a watcher, wait until its watch is open and idle, stop it; what did not end in time."""
    from kubernetes import config

    from webapp.door import StatusDoor
    from webapp.executors.k8s_watch import JobWatcher
    from webapp.hub import StatusHub
    from webapp.runstore.sqlite import SQLiteRunStore

    api = config.new_client_from_config(config_file=kubeconfig)
    store = SQLiteRunStore(database)
    watcher = JobWatcher(door=StatusDoor(hub=StatusHub(), store=store), api=api, namespace=namespace)
    others = set(threading.enumerate())
    watcher.start()
    try:
        wait_for(
            lambda: watcher.unready_reason() is None and watcher.watching and watcher.events.reflector.watching,
            timeout=30,
            what="both watches to open",
        )
        watch_threads = [t for t in threading.enumerate() if t not in others]
        assert len(watch_threads) == 3, watch_threads
        stopper = threading.Thread(target=watcher.stop, name="stopper", daemon=True)
        stopper.start()
        stopper.join(JOIN_DEADLINE)
        for thread in watch_threads:
            thread.join(max(0.0, JOIN_DEADLINE - 1.0))
        return [thread.name for thread in (stopper, *watch_threads) if thread.is_alive()]
    finally:
        api.close()
        store.close()


def test_stop_ends_an_idle_watch_at_once_under_threads(app_kubeconfig: str, k8s_namespace: str, tmp_path: Path) -> None:
    still_running = stop_idle_watch(app_kubeconfig, k8s_namespace, tmp_path / "runs.sqlite3")
    assert still_running == [], f"still running {JOIN_DEADLINE:g}s after stop(): {still_running}"


def test_stop_ends_an_idle_watch_at_once_under_gevent(app_kubeconfig: str, k8s_namespace: str, tmp_path: Path) -> None:
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.k8s.test_watch_stop import stop_idle_watch\n"
        "still_running = stop_idle_watch(sys.argv[1], sys.argv[2], Path(sys.argv[3]))\n"
        "print('still running:', still_running)\n"
        "sys.exit(1 if still_running else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, app_kubeconfig, k8s_namespace, str(tmp_path / "runs.sqlite3")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
