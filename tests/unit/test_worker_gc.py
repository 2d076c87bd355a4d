"""The gunicorn worker leaves what loading the app made out of the garbage collector's sight (gunicorn.conf.py)."""

from __future__ import annotations

import gc
import runpy
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tests.conftest import PROJECT_ROOT


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_the_worker_freezes_the_loaded_app_before_serving(unfrozen: None) -> None:
    settings = runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))
    loaded = SimpleNamespace(wsgi=SimpleNamespace(extensions={}))  # a worker whose app has no runtime to stop
    assert gc.get_freeze_count() == 0
    settings["post_worker_init"](loaded)
    assert gc.get_freeze_count() > 1000  # the modules and objects loaded so far, not a handful


def test_a_stopping_worker_waits_for_its_streams_only_until_the_arbiter_would_kill_it() -> None:
    """worker_exit's wait ends half a second before the earliest signal's deadline; with no signal, graceful_timeout."""
    settings = runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))
    stop_by, exit_wait = settings["stop_by"], settings["exit_wait"]
    worker = SimpleNamespace(cfg=SimpleNamespace(graceful_timeout=20))
    assert exit_wait(worker, now=100.0) == 20  # max_requests: no signal, gunicorn's own bound
    stop_by(worker, 100.0 + 20)  # SIGTERM at 100
    assert exit_wait(worker, now=112.0) == 7.5  # the spread took 12 s: 8 s left, less the margin
    stop_by(worker, 113.0 + settings["quick_stop_seconds"])  # then SIGQUIT: quick shutdown
    assert exit_wait(worker, now=113.2) == pytest.approx(0.3)
    stop_by(worker, 200.0)  # a later, looser deadline changes nothing
    assert exit_wait(worker, now=113.2) == pytest.approx(0.3)
    assert exit_wait(worker, now=150.0) == 0.0
