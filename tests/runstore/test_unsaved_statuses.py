"""The runtime while the SQLite run store refuses writes (a real full tmpfs): nothing refused is forgotten."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from flask import Flask

from tests.helpers import wait_for
from tests.storage import SmallDisk
from webapp import runtime as runtime_module
from webapp.runtime import FORGET_FINISHED_AFTER, Runtime
from webapp.status import JobStatus, Phase, utcnow

pytestmark = pytest.mark.storage


def long_ago() -> datetime:
    return utcnow() - FORGET_FINISHED_AFTER - timedelta(minutes=1)


def opened_long_ago(runtime: Runtime, label: str) -> str:
    """A run launched long ago (its first status is saved)."""
    queued = JobStatus.new(
        job_name=f"task-runner-{label}-0000beef", mode="k8s", spec="quick", pipeline_run_id=label, at=long_ago()
    )
    runtime.door.open(queued, manifest=None, client=None)
    runtime.door.announce(queued)
    return queued.job_name


def finish_long_ago(runtime: Runtime, job_name: str) -> JobStatus:
    """Its final status, written through the door as any source writes it, dated long ago."""
    done = runtime.door.change(job_name, at=long_ago(), status=Phase.SUCCEEDED)
    assert done is not None and done.terminal
    return done


def test_a_final_status_still_unsaved_is_not_forgotten_by_the_hub(
    make_app: Callable[..., Flask], small_disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "HOUSEKEEPING_SECONDS", 0.05)
    app = make_app(DATABASE_PATH=str(small_disk.path / "jobpulse.sqlite3"))
    runtime: Runtime = app.extensions["jobpulse"]
    saved_name, unsaved_name = opened_long_ago(runtime, "saved"), opened_long_ago(runtime, "unsaved")
    saved = finish_long_ago(runtime, saved_name)
    small_disk.fill()
    unsaved = finish_long_ago(runtime, unsaved_name)  # refused by the full disk: it waits in the backlog

    wait_for(lambda: runtime.hub.get(saved.job_name) is None, timeout=10, what="housekeeping to forget the saved run")
    assert runtime.hub.get(unsaved.job_name) == unsaved, "its final status lives only here until it is saved"

    small_disk.free()
    wait_for(lambda: runtime.hub.get(unsaved.job_name) is None, timeout=10, what="forgotten once saved")
    stored = runtime.store.get(unsaved.job_name)
    assert stored is not None and (stored.status, stored.seq) == (Phase.SUCCEEDED, unsaved.seq)
