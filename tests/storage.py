"""Real storage faults for tests: a small tmpfs, filled, freed and remounted read-only for real.

Mounting needs root or ``CAP_SYS_ADMIN``; tests that use it carry the
``storage`` mark.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class SmallDisk:
    """A tmpfs of 1 MiB: filled, freed and remounted read-only for real."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (the kernel answers ENOSPC when none is left)."""
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(descriptor, b"\0" * size)
                except OSError as error:
                    assert error.errno == 28, error  # ENOSPC
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, option: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{option}", str(self.path)], check=True, capture_output=True)
