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
