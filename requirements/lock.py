"""Write, or check, the dependency lock in requirements/.

setup.cfg keeps version *ranges*, because jobpulse is also installed as a
package; the files here pin the exact versions (with hashes) that `make run`,
`make test`, `make benchmarks`, CI and the Dockerfile install, so a new
upstream release never changes a build by itself. uv's resolver writes them;
a pin that still fits setup.cfg is kept (uv reads the old file as its
preferences), so a refresh moves only what has to move.

    python requirements/lock.py                       # refresh after editing setup.cfg or pyproject.toml
    python requirements/lock.py --upgrade             # every pin to the newest version the ranges allow
    python requirements/lock.py --upgrade-package X   # just X (and what X needs)
    python requirements/lock.py --check               # exit 1 if the lock no longer satisfies the ranges

`make lock` and `make lock-check` run these; docs/DEPENDENCIES.md explains them.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "requirements"
# The oldest Python that setup.cfg allows; --universal adds markers for newer ones.
PYTHON_VERSION = "3.11"


@dataclass(frozen=True)
class Lock:
    """One lock file: what it is resolved from, and which other locks it must agree with."""

    name: str
    sources: tuple[str, ...]
    all_extras: bool = False
    constraints: tuple[str, ...] = ()
    stdin: str | None = None


def build_requires() -> str:
    """The build backend named in pyproject.toml, one requirement a line."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        return "\n".join(tomllib.load(file)["build-system"]["requires"]) + "\n"


def locks() -> list[Lock]:
    # Order matters: each lock is constrained by the ones before it, so a
    # package pinned in two files has the same version in both.
    return [
        Lock("build.txt", sources=("-",), stdin=build_requires()),
        Lock("app.txt", sources=("setup.cfg",), constraints=("build.txt",)),
        Lock("dev.txt", sources=("setup.cfg",), all_extras=True, constraints=("build.txt", "app.txt")),
    ]


def compile_lock(lock: Lock, *, output: Path, constraints_dir: Path, upgrade: list[str]) -> None:
    """Resolve one lock into `output`; the pins already in `output` are preferred."""
    command = [
        sys.executable, "-m", "uv", "pip", "compile", *lock.sources,
        "--universal", "--python-version", PYTHON_VERSION,
        "--generate-hashes", "--quiet",
        "--custom-compile-command", "make lock",
        "--output-file", str(output),
    ]  # fmt: skip
    if lock.all_extras:
        command.append("--all-extras")
    for constraint in lock.constraints:
        command += ["--constraints", str(constraints_dir / constraint)]
    if "setup.cfg" in lock.sources:
        # Reading setup.cfg runs the build backend: the locked one, not whatever is newest today.
        command += ["--build-constraints", str(constraints_dir / "build.txt")]
    command += upgrade
    subprocess.run(command, cwd=ROOT, input=lock.stdin, text=True, check=True)


def pins(text: str) -> list[str]:
    """The `name==version ; marker` lines of a lock, without hashes or comments."""
    return [line.rstrip(" \\") for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]


def write(upgrade: list[str]) -> int:
    for lock in locks():
        compile_lock(lock, output=HERE / lock.name, constraints_dir=HERE, upgrade=upgrade)
        print(f"requirements/{lock.name}: {len(pins((HERE / lock.name).read_text()))} pins")
    return 0


def check() -> int:
    """Re-resolve each lock from its committed pins; any pin that has to move means it is stale."""
    stale = False
    with tempfile.TemporaryDirectory(prefix="jobpulse-lock-") as scratch:
        scratch_dir = Path(scratch)
        for lock in locks():
            committed = HERE / lock.name
            if not committed.exists():
                print(f"requirements/{lock.name} is missing", file=sys.stderr)
                stale = True
                continue
            resolved = scratch_dir / lock.name
            shutil.copyfile(committed, resolved)
            compile_lock(lock, output=resolved, constraints_dir=scratch_dir, upgrade=[])
            before, after = pins(committed.read_text()), pins(resolved.read_text())
            if before != after:
                stale = True
                sys.stderr.writelines(
                    difflib.unified_diff(
                        [f"{line}\n" for line in before],
                        [f"{line}\n" for line in after],
                        fromfile=f"requirements/{lock.name} (committed)",
                        tofile=f"requirements/{lock.name} (what setup.cfg needs)",
                    )
                )
    if stale:
        print(
            "\nThe lock no longer satisfies setup.cfg / pyproject.toml: run `make lock` and commit requirements/.",
            file=sys.stderr,
        )
        return 1
    print("requirements/: the lock satisfies setup.cfg and pyproject.toml")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if a pin has to move")
    mode.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed version")
    mode.add_argument("--upgrade-package", action="append", default=[], metavar="NAME", help="move NAME's pin only")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    upgrade = ["--upgrade"] if args.upgrade else [f"--upgrade-package={name}" for name in args.upgrade_package]
    return write(upgrade)


if __name__ == "__main__":
    sys.exit(main())
