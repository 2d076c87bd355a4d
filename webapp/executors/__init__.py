"""Executors run tasks: the legacy runner (local subprocesses or an HTTP service) or Kubernetes.

Each executor writes the statuses of the runs it executes through the door
(:mod:`webapp.door`); the API never asks an executor for a status. Only executor modules do I/O with
subprocesses, Kubernetes or the legacy service, and they raise our own errors
(``webapp.errors``), never their clients'.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from webapp.status import JobStatus


class Executor(Protocol):
    mode: str
    """``legacy`` or ``k8s``: the ``mode`` field of the statuses it publishes."""

    def start(self) -> None:
        """Begin background work (watches, resuming runs after a restart)."""

    def stop(self) -> None:
        """Stop background work; leave runs resumable by the next process."""

    def launch(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        """Start the run described by ``manifest`` (recorded with ``status``, its first status).

        Raises :class:`~webapp.errors.ExecutorUnavailable` when it cannot, with
        nothing left behind.
        """

    def cancel(self, job_name: str) -> None:
        """Stop the run; its status becomes ``Cancelled``."""

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of the run's output."""

    def follow_logs(self, job_name: str, *, tail_lines: int) -> Iterator[str]:
        """The tail, then new output as it comes, until the run is finished."""

    def unready_reason(self) -> str | None:
        """Why the executor cannot take work now, or ``None`` when it can."""
