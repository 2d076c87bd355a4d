"""A crashed server never runs a task twice, and leaves no task running unsupervised.

The real gunicorn (gevent worker) runs the ``marked`` jobspec, whose every
execution leaves a marker file (and an ``overlap`` marker if it starts while
another execution of the same run is alive); the test kills the worker, or
the master, with ``SIGKILL`` mid-run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import wait_for
from tests.live.clients import launch, status
from tests.live.server import LiveServer


def _executions(markers: Path) -> tuple[list[str], list[str]]:
    return sorted(p.stem for p in markers.glob("*.started")), sorted(p.stem for p in markers.glob("*.finished"))


def _task_processes(job_name: str) -> list[psutil.Process]:
    """Live processes of this run: its supervisors and task processes (they carry ``JOBPULSE_RUN_ID``)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("JOBPULSE_RUN_ID") == job_name:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _terminal(server: LiveServer, name: str) -> dict[str, Any]:
    return wait_for(lambda: (s := status(server, name))["terminal"] and s, timeout=90, what=f"{name} to finish")


def _start_marked_run(server: LiveServer, markers: Path) -> str:
    markers.mkdir()
    name = launch(server, "marked", markers=str(markers), seconds="4")
    wait_for(lambda: _executions(markers)[0], timeout=30, what="the task to start")
    return name


def _worker(server: LiveServer) -> psutil.Process:
    assert server.process is not None
    (worker,) = psutil.Process(server.process.pid).children()
    return worker


def test_a_killed_worker_takes_its_task_along_and_the_next_runs_it_once_more_as_attempt_2(
    make_live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_live_server()
    markers = tmp_path / "markers"
    name = _start_marked_run(server, markers)

    _worker(server).send_signal(signal.SIGKILL)

    done = _terminal(server, name)
    started, finished = _executions(markers)
    assert len(started) == 2 and len(finished) == 1, "the first execution died with its worker, the second finished"
    assert not (markers / "overlap").exists(), "never two live executions of one run"
    assert sorted((markers / f"{pid}.started").read_text() for pid in started) == ["1", "2"], "JOBPULSE_ATTEMPT"
    assert (done["status"], done["attempt"], done["succeeded"], done["failed"]) == ("Succeeded", 2, 1, 0), done
    assert "Queued" in [h["status"] for h in done["history"][3:]], "the run went back in line"
    assert '"reason": "Interrupted"' in server.log()
    assert not _task_processes(name), "nothing of the run is left running"


def test_a_killed_master_leaves_no_task_behind_and_the_next_server_runs_it_as_attempt_2(
    make_live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    first = make_live_server()
    markers = tmp_path / "markers"
    name = _start_marked_run(first, markers)
    worker = _worker(first)

    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    worker.wait(timeout=30)  # the orphaned worker notices and stops, stopping its task
    assert not _task_processes(name), "no task outlives its worker"

    second = make_live_server()
    done = _terminal(second, name)
    started, finished = _executions(markers)
    assert len(started) == 2 and len(finished) == 1
    assert not (markers / "overlap").exists()
    assert (done["status"], done.get("attempt"), done["succeeded"]) == ("Succeeded", 2, 1), done
    assert '"reason": "Interrupted"' in first.log()
