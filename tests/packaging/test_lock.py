"""The lock in requirements/: exact, hashed, complete, and refused by the check once setup.cfg moves past it."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import PROJECT_ROOT

REQUIREMENTS = PROJECT_ROOT / "requirements"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)(?: ; (?P<marker>.+?))?(?: \\)?$")


def locked(name: str) -> dict[str, set[str]]:
    """Each package of a lock file with its pinned version(s) (a version per Python where they differ)."""
    versions: dict[str, set[str]] = {}
    lines = (REQUIREMENTS / name).read_text().splitlines()
    for number, line in enumerate(lines):
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{name}: not an exact pin: {line!r}"
        assert lines[number + 1].lstrip().startswith("--hash=sha256:"), f"{name}: no hash for {line!r}"
        versions.setdefault(canonicalize_name(match["name"]), set()).add(match["version"])
    return versions


def declared() -> dict[str, list[Requirement]]:
    """setup.cfg's install_requires and each extra, parsed."""
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / "setup.cfg")

    def parse(text: str) -> list[Requirement]:
        return [Requirement(line) for line in text.strip().splitlines() if line.strip()]

    groups = {"install_requires": parse(config["options"]["install_requires"])}
    groups.update({extra: parse(text) for extra, text in config["options.extras_require"].items()})
    return groups


def test_each_lock_pins_exact_versions_with_hashes() -> None:
    for name in ("build.txt", "app.txt", "dev.txt"):
        assert locked(name), name


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("app.txt", ["install_requires"]), ("dev.txt", ["install_requires", "test", "bench", "dev"])],
)
def test_every_declared_requirement_is_locked_within_its_range(lock: str, groups: list[str]) -> None:
    pins = locked(lock)
    for group in groups:
        for requirement in declared()[group]:
            versions = pins.get(canonicalize_name(requirement.name))
            assert versions, f"{requirement} ({group}) is missing from requirements/{lock}: run `make lock`"
            assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), (requirement, versions)


def test_the_app_and_the_tests_run_the_same_versions() -> None:
    app, dev, build = locked("app.txt"), locked("dev.txt"), locked("build.txt")
    assert {name: dev[name] for name in app} == app
    assert {name: build[name] for name in set(build) & set(dev)} == {name: dev[name] for name in set(build) & set(dev)}
    assert {"setuptools", "wheel"} <= set(build), "the build backend of pyproject.toml is locked"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """What lock.py reads, in a scratch folder, so a test can edit setup.cfg."""
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_ROOT / "webapp", tmp_path / "webapp", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(project / "requirements" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_check_passes_on_the_committed_lock(project_copy: Path) -> None:
    done = check(project_copy)
    assert done.returncode == 0, done.stderr
    assert "the lock satisfies setup.cfg" in done.stdout


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("    redis>=5.0\n", "    redis>=5.0,<8\n"), "+redis==7."),  # a range the pin has left
        (("    requests>=2.31\n", "    requests>=2.31\n    six>=1.16\n"), "+six=="),  # a new dependency
        (("    types-requests\n", ""), "-types-requests=="),  # a dependency dropped
    ],
    ids=["narrowed-range", "new-dependency", "dropped-dependency"],
)
def test_the_check_says_to_run_make_lock_when_setup_cfg_moved(
    project_copy: Path, edit: tuple[str, str], expected: str
) -> None:
    setup_cfg = project_copy / "setup.cfg"
    text = setup_cfg.read_text()
    assert edit[0] in text
    setup_cfg.write_text(text.replace(edit[0], edit[1], 1))
    before = {path.name: path.read_bytes() for path in (project_copy / "requirements").glob("*.txt")}

    done = check(project_copy)

    assert done.returncode == 1
    assert "run `make lock`" in done.stderr
    assert expected in done.stderr
    after = {path.name: path.read_bytes() for path in (project_copy / "requirements").glob("*.txt")}
    assert after == before, "the check changes nothing"
