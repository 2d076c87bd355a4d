"""The runtime while the SQLite run store refuses writes (a real full tmpfs): nothing refused is forgotten."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask

from tests.helpers import wait_for
from tests.storage import SmallDisk
from webapp import runtime as runtime_module
from webapp.runtime import FORGET_FINISHED_AFTER, Runtime
from webapp.status import JobStatus, Phase, utcnow

pytestmark = pytest.mark.storage


def finished_long_ago(label: str) -> JobStatus:
    queued = JobStatus.new(job_name=f"task-runner-{label}-0000beef", mode="k8s", spec="quick", pipeline_run_id=label)
    done = queued.evolve(status=Phase.SUCCEEDED)
    return dataclasses.replace(done, updated_at=utcnow() - FORGET_FINISHED_AFTER - timedelta(minutes=1))


def test_a_final_status_still_unsaved_is_not_forgotten_by_the_hub(
    make_app: Callable[..., Flask], small_disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "HOUSEKEEPING_SECONDS", 0.05)
    app = make_app(DATABASE_PATH=str(small_disk.path / "jobpulse.sqlite3"))
    runtime: Runtime = app.extensions["jobpulse"]
    saved, unsaved = finished_long_ago("saved"), finished_long_ago("unsaved")
    runtime.hub.publish(saved)
    small_disk.fill()
    runtime.hub.publish(unsaved)  # refused by the full disk: it waits in the backlog

    wait_for(lambda: runtime.hub.get(saved.job_name) is None, timeout=10, what="housekeeping to forget the saved run")
    assert runtime.hub.get(unsaved.job_name) == unsaved, "its final status lives only here until it is saved"

    small_disk.free()
    wait_for(lambda: runtime.hub.get(unsaved.job_name) is None, timeout=10, what="forgotten once saved")
    stored = runtime.store.get(unsaved.job_name)
    assert stored is not None and (stored.status, stored.seq) == (Phase.SUCCEEDED, unsaved.seq)
