"""In dual mode a donation is one run of the donor's fair share, not two: the shadow run is nobody's.

The real launcher, SQLite store and local runner. The shadow's executor is a
second local runner standing in for Kubernetes: what is tested is what the
store counts for the client, not where the shadow runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from webapp.door import StatusDoor
from webapp.errors import TooManyActiveJobs
from webapp.executors.local import LocalRunner
from webapp.hub import StatusHub
from webapp.jobspecs import load_jobspecs
from webapp.launcher import Launcher
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.settings import Settings

CLIENT = "192.0.2.10"


@pytest.fixture
def dual_launcher(jobspecs_dir: Path, tmp_path: Path) -> Iterator[tuple[Launcher, SQLiteRunStore]]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    door = StatusDoor(hub=StatusHub(), store=store)
    runners = [
        LocalRunner(door=door, log_dir=tmp_path / f"logs-{mode}", max_concurrency=4) for mode in ("legacy", "k8s")
    ]
    for runner in runners:
        runner.start()
    settings = Settings.from_env(
        {"JOBSPECS_DIR": str(jobspecs_dir), "EXECUTION_MODE": "dual", "MAX_ACTIVE_JOBS_PER_CLIENT": "2"}
    )
    launcher = Launcher(
        settings=settings,
        specs=load_jobspecs(jobspecs_dir),
        executors={"legacy": runners[0], "k8s": runners[1]},
        door=door,
    )
    yield launcher, store
    for runner in runners:
        runner.stop()
    store.close()


def test_a_shadow_run_does_not_count_against_the_donors_share(
    dual_launcher: tuple[Launcher, SQLiteRunStore],
) -> None:
    launcher, store = dual_launcher

    def donate() -> None:
        launcher.launch(spec_name="slow", params={"seconds": "60"}, client=CLIENT, fair_share=True)

    donate()
    assert store.count_unfinished() == 2, "the primary and its shadow"
    assert store.count_unfinished(client=CLIENT) == 1
    donate()  # the share is 2 donations, not 1
    with pytest.raises(TooManyActiveJobs, match="this address"):
        donate()
