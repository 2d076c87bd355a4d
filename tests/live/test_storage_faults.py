"""The SQLite run store meets real storage faults, under the real gunicorn gevent server.

Faults are made for real, not mocked:

- a full disk: ``DATABASE_PATH`` lives on a small tmpfs mounted for the test,
  and a filler file takes its last byte, so SQLite gets ``SQLITE_FULL`` from
  the kernel exactly as on a full production disk (a tmpfs rather than
  ``PRAGMA max_page_count``: the app's own connection must hit the limit,
  and the WAL file must meet ENOSPC as it would);
- a read-only file: the same tmpfs remounted read-only (root ignores file
  modes, so ``chmod`` would prove nothing here);
- a damaged file: bytes overwritten in the database file itself.

Mounting needs root or ``CAP_SYS_ADMIN``; without it these tests fail and
say so (deselect them with ``-m "not storage"``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for
from tests.live.clients import ADMIN, launch, status, wait_for_status, ws_collect, ws_connect
from tests.live.server import LiveServer
from tests.storage import SmallDisk
from webapp.executors.task_supervisor import AttemptRecord
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase

pytestmark = [pytest.mark.live, pytest.mark.storage]

UNKNOWN_JOB = "task-runner-nobody-0123abcd"

FAIL_ONCE_SPEC = """\
# Waits for the file TASK_PARAM_GO, then fails (exit 3) the first time it runs and succeeds after.
# Each execution adds a line to TASK_PARAM_MARKER.
apiVersion: batch/v1
kind: Job
metadata:
  name: fail-once
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: task
          image: jobpulse:latest
          command:
            - python
            - -c
            - |
              import os, pathlib, sys, time
              go = pathlib.Path(os.environ["TASK_PARAM_GO"])
              marker = pathlib.Path(os.environ["TASK_PARAM_MARKER"])
              while not go.exists():
                  time.sleep(0.05)
              first = not marker.exists()
              with marker.open("a") as executions:
                  executions.write("ran\\n")
              sys.exit(3 if first else 0)
"""

SUCCEED_SPEC = (
    FAIL_ONCE_SPEC.replace("name: fail-once", "name: succeed")
    .replace("backoffLimit: 0", "backoffLimit: 2")
    .replace("sys.exit(3 if first else 0)", "sys.exit(0)")
)
"""The same, but it always succeeds, and a failed attempt would be retried twice."""


def executions(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


def task_started(small_disk: SmallDisk, name: str) -> None:
    """Wait until the attempt's supervisor has started the task and recorded it (before the disk is filled)."""
    record = small_disk.path / "logs" / "attempts" / f"{name}.1.json"
    wait_for(lambda: (found := AttemptRecord.read(record)) and found.task_pid, timeout=30, what="the task to start")


@pytest.fixture
def start_on_small_disk(
    small_disk: SmallDisk, jobspecs_dir: Path, make_live_server: Callable[..., LiveServer]
) -> Callable[[], LiveServer]:
    """Start a real server whose run store (and task output) is on the small disk."""
    (jobspecs_dir / "fail-once.yaml").write_text(FAIL_ONCE_SPEC)
    (jobspecs_dir / "succeed.yaml").write_text(SUCCEED_SPEC)

    def start() -> LiveServer:
        return make_live_server(DATABASE_PATH=str(small_disk.path / "jobpulse.sqlite3"))

    return start


def readiness(server: LiveServer) -> tuple[int, dict[str, object]]:
    response = requests.get(f"{server.url}/readyz", timeout=15)
    body: dict[str, object] = response.json()
    return response.status_code, body


def running_fail_once(server: LiveServer, small_disk: SmallDisk, tmp_path: Path) -> str:
    """Launch the fail-once task and wait until its process is really running (its start recorded on the disk)."""
    name = launch(server, "fail-once", go=str(tmp_path / "go"), marker=str(tmp_path / "marker"))
    wait_for_status(server, name, "Running")
    task_started(small_disk, name)
    return name


# -- a full disk -------------------------------------------------------------------


def test_on_a_full_disk_launches_answer_503_and_a_final_status_waits_in_memory_until_it_is_saved(
    start_on_small_disk: Callable[[], LiveServer], small_disk: SmallDisk, tmp_path: Path
) -> None:
    server = start_on_small_disk()
    name = running_fail_once(server, small_disk, tmp_path)

    small_disk.fill()
    refused = requests.post(f"{server.url}/api/jobs", json={"spec": "quick"}, headers=ADMIN, timeout=15)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable"
    assert "disk is full" in refused.json()["message"]

    (tmp_path / "go").touch()  # the task ends while its status cannot be saved
    assert wait_for_status(server, name, "Failed")["reason"] == "BackoffLimitExceeded"
    code, body = readiness(server)
    assert code == 503, body
    assert "not saved yet" in str(body["message"]) and "disk is full" in str(body["message"]), body

    small_disk.free()
    wait_for(lambda: readiness(server)[0] == 200, timeout=15, what="ready again once the disk has room")
    assert status(server, name)["status"] == "Failed"
    other_view = SQLiteRunStore(small_disk.path / "jobpulse.sqlite3")
    saved = other_view.get(name)
    other_view.close()
    assert saved is not None and saved.status == Phase.FAILED, "saved once the disk had room"
    assert launch(server, "quick")
    assert "Traceback" not in server.log()
    assert executions(tmp_path / "marker") == 1, "the task ran exactly once"


def test_a_final_status_refused_by_a_full_disk_is_still_final_after_a_restart(
    start_on_small_disk: Callable[[], LiveServer], small_disk: SmallDisk, tmp_path: Path
) -> None:
    server = start_on_small_disk()
    name = running_fail_once(server, small_disk, tmp_path)
    small_disk.fill()
    (tmp_path / "go").touch()
    wait_for_status(server, name, "Failed")

    small_disk.free()
    wait_for(lambda: readiness(server)[0] == 200, timeout=15, what="ready once the disk has room")
    server.restart()

    after = status(server, name)
    assert (after["status"], after["reason"]) == ("Failed", "BackoffLimitExceeded"), after
    assert [step["status"] for step in after["history"]][-1] == "Failed"
    assert executions(tmp_path / "marker") == 1, "the task ran exactly once"


def test_a_task_that_succeeds_while_the_disk_is_full_succeeded_and_is_not_run_again(
    start_on_small_disk: Callable[[], LiveServer], small_disk: SmallDisk, tmp_path: Path
) -> None:
    server = start_on_small_disk()
    marker = tmp_path / "marker"
    name = launch(server, "succeed", go=str(tmp_path / "go"), marker=str(marker))
    wait_for_status(server, name, "Running")
    task_started(small_disk, name)
    small_disk.fill()  # the attempt's record cannot be written to the end: its supervisor's exit code says it all
    (tmp_path / "go").touch()
    done = wait_for(lambda: (s := status(server, name))["terminal"] and s, timeout=60, what="the run to end")
    assert (done["status"], done["failed"], done["attempt"]) == ("Succeeded", 0, 1), done  # not exit code 1

    small_disk.free()
    wait_for(lambda: readiness(server)[0] == 200, timeout=15, what="ready once the disk has room")
    server.restart()
    after = status(server, name)
    assert (after["status"], after["attempt"]) == ("Succeeded", 1), after
    assert executions(marker) == 1, "the task ran exactly once"


# -- a damaged or read-only file -----------------------------------------------------


def a_store_with_runs(path: Path) -> None:
    store = SQLiteRunStore(path)
    for index in range(40):
        queued = JobStatus.new(
            job_name=f"task-runner-old-{index:08x}", mode="legacy", spec="quick", pipeline_run_id="old"
        )
        store.save(queued.evolve(status=Phase.SUCCEEDED))
    store.close()


def garble_pages(path: Path) -> None:
    """Overwrite everything after the first page (header and schema intact): SQLite opens it, then reads garbage."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(bytes((index * 7919) % 251 for index in range(size - 4096)))


def garble_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"this is not an SQLite header " * 3)


def cut_short(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(3 * 4096)


def failed_start(start: Callable[[], LiveServer]) -> str:
    """Start a server that must refuse to start; return what it said."""
    with pytest.raises(AssertionError, match="exited with") as refused:
        start()
    return str(refused.value)


@pytest.mark.parametrize("damage", [garble_pages, garble_header, cut_short], ids=lambda damage: damage.__name__)
def test_start_up_refuses_a_damaged_database_naming_the_setting_and_the_path(
    damage: Callable[[Path], None], tmp_path: Path, make_live_server: Callable[..., LiveServer]
) -> None:
    database = tmp_path / "state" / "jobpulse.sqlite3"
    a_store_with_runs(database)
    damage(database)

    said = failed_start(lambda: make_live_server(DATABASE_PATH=str(database)))
    assert f"DATABASE_PATH: cannot use {database} as the run store" in said, said
    assert "damaged" in said, said


@pytest.mark.parametrize("existing", [True, False], ids=["existing-file", "new-file"])
def test_start_up_refuses_a_read_only_database_naming_the_setting_and_the_path(
    existing: bool, small_disk: SmallDisk, make_live_server: Callable[..., LiveServer]
) -> None:
    database = small_disk.path / "jobpulse.sqlite3"
    if existing:
        a_store_with_runs(database)
    small_disk.remount("ro")
    try:
        said = failed_start(lambda: make_live_server(DATABASE_PATH=str(database)))
    finally:
        small_disk.remount("rw")
    assert f"DATABASE_PATH: cannot use {database} as the run store" in said, said
    assert "writable" in said or "read-only" in said, said


def test_a_file_damaged_under_a_running_server_answers_503_and_readiness_says_so(
    tmp_path: Path, make_live_server: Callable[..., LiveServer]
) -> None:
    database = tmp_path / "state" / "jobpulse.sqlite3"
    a_store_with_runs(database)
    server = make_live_server(DATABASE_PATH=str(database))

    other = sqlite3.connect(database, isolation_level=None)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file, where the damage goes
    garble_pages(database)
    other.execute("PRAGMA user_version = 1")  # another writer: the server's page cache is stale, it must re-read
    other.close()

    looked_up = requests.get(f"{server.url}/api/jobs/{UNKNOWN_JOB}", timeout=15)
    assert (looked_up.status_code, looked_up.json()["error"]) == (503, "store_unavailable"), looked_up.text
    assert "damaged" in looked_up.json()["message"]
    launched = requests.post(f"{server.url}/api/jobs", json={"spec": "quick"}, headers=ADMIN, timeout=15)
    assert (launched.status_code, launched.json()["error"]) == (503, "store_unavailable"), launched.text
    code, body = readiness(server)
    assert code == 503, body
    assert "run store: SQLite: database disk image is malformed" in str(body["message"]), body

    messages, close_code = ws_collect(ws_connect(server, UNKNOWN_JOB))  # not in the hub: only the store could say
    assert close_code == 1013, "try again later, said on the WebSocket (not an HTTP 503 written onto it)"
    assert messages == [{"type": "error", "error": "store_unavailable", "message": messages[0]["message"]}]
    assert "damaged" in messages[0]["message"]
