"""An Idempotency-Key whose launch met a full disk (a real full tmpfs) does not block its retries.

The real launcher, local runner and SQLite store. The disk fills for real
right after the key is claimed, as the run is about to be saved (the one
thing the store subclass below does), so the run's save and the key's release both meet ``SQLITE_FULL``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import captured_logs
from tests.storage import SmallDisk
from webapp.door import StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.executors.local import LocalRunner
from webapp.hub import StatusHub
from webapp.jobspecs import load_jobspecs
from webapp.launcher import Launcher
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.settings import Settings
from webapp.status import JobStatus

pytestmark = pytest.mark.storage

KEY = "double-click-0001"
CLIENT = "192.0.2.10"


class DiskFillsAfterTheClaim(SQLiteRunStore):
    def __init__(self, path: Path, disk: SmallDisk) -> None:
        super().__init__(path)
        self.disk: SmallDisk | None = disk

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None, client: str | None = None) -> None:
        if self.disk is not None:  # the first save is the launch's, right after its claim
            self.disk.fill()
        super().save(status, manifest=manifest, client=client)


@pytest.fixture
def launcher_on_small_disk(
    small_disk: SmallDisk, jobspecs_dir: Path, tmp_path: Path
) -> Iterator[tuple[Launcher, DiskFillsAfterTheClaim]]:
    store = DiskFillsAfterTheClaim(small_disk.path / "runs.sqlite3", small_disk)
    door = StatusDoor(hub=StatusHub(), store=store)
    runner = LocalRunner(door=door, log_dir=tmp_path / "logs", max_concurrency=2)
    settings = Settings.from_env({"JOBSPECS_DIR": str(jobspecs_dir)})
    launcher = Launcher(settings=settings, specs=load_jobspecs(jobspecs_dir), executors={"legacy": runner}, door=door)
    yield launcher, store
    runner.stop()
    store.close()


def _launch(launcher: Launcher) -> tuple[str, bool]:
    status, new = launcher.launch(
        spec_name="quick", params={}, idempotency_key=KEY, fingerprint="same-request", client=CLIENT
    )
    return status.job_name, new


def test_a_launch_whose_save_and_key_release_both_fail_reports_the_save_and_frees_the_key_later(
    launcher_on_small_disk: tuple[Launcher, DiskFillsAfterTheClaim], small_disk: SmallDisk
) -> None:
    launcher, store = launcher_on_small_disk
    with captured_logs() as records, pytest.raises(RunStoreUnavailable, match="disk is full"):
        _launch(launcher)
    events = [(record.msg, record.levelname) for record in records]
    assert events == [("idempotency.release_failed", "WARNING"), ("job.error", "WARNING")], events

    store.disk = None
    small_disk.free()
    with sqlite3.connect(store.path) as other:  # the failed launch was an hour ago
        other.execute("UPDATE idempotency_keys SET created_at = created_at - 3600")
    other.close()

    job_name, new = _launch(launcher)  # the retry: not a 409 for the rest of the day
    assert new, "the retry launched the run that the failed launch never made"
    assert _launch(launcher) == (job_name, False), "the key now belongs to the retry's run"
