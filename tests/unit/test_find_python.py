"""Which interpreter the local runner gives a command that starts with ``python``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from webapp.executors.local import build_command, find_python
from webapp.settings import ConfigError, Settings

MANIFEST = {"spec": {"template": {"spec": {"containers": [{"command": ["python", "-m", "task"]}]}}}}


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_under_a_plain_interpreter_it_is_this_one() -> None:
    assert find_python() == sys.executable
    assert build_command(MANIFEST, python=find_python()) == [sys.executable, "-m", "task"]


def test_under_an_embedding_host_it_is_the_python_of_this_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uWSGI sets ``sys.executable`` to its own binary; ``sys.prefix`` is still the virtualenv."""
    venv = tmp_path / "venv"
    _executable(venv / "bin" / "uwsgi")
    python = _executable(venv / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "uwsgi"))
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "exec_prefix", str(venv))
    assert find_python() == str(python)


def test_with_no_interpreter_to_find_start_up_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(_executable(tmp_path / "uwsgi")))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="LEGACY_PYTHON"):
        find_python()


def test_legacy_python_wins_and_keeps_the_virtualenv_symlink(tmp_path: Path) -> None:
    target = _executable(tmp_path / "base" / "python3")
    link = tmp_path / "venv" / "bin" / "python3"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    settings = Settings.from_env({"LEGACY_PYTHON": str(link)})
    assert settings.legacy_python == link
    assert find_python(settings.legacy_python) == str(link)
