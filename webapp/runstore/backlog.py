"""Statuses a process could not hand on yet, kept until they go through.

A run's status moves on in memory (the hub) even while the run store refuses
writes (SQLite's disk full, Redis down) or the Redis status channel cannot
publish. What could not be written is kept here and written again once the
other side accepts it: the runtime does so for the run store, the Redis
status channel for its channel. Each message is the whole state, so only the
newest status per job is kept: a backlog never holds more than one entry per
run, however long the outage; and when it is written at last, what is written
is the newest status known by then (the hub's, if it moved on meanwhile).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from webapp.status import JobStatus

Current = Callable[[str], JobStatus | None]
"""The newest status known now of a job (the hub's ``get``), if any."""


class StatusBacklog:
    """The newest not-yet-written status of each job (thread-safe)."""

    def __init__(self, *, current: Current | None = None) -> None:
        """``current``: where a newer status than the one held may be found when it is written (the hub)."""
        self._held: dict[str, JobStatus] = {}
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._current = current

    def keep(self, status: JobStatus) -> None:
        """Hold ``status`` unless a newer one of its job is held already."""
        with self._lock:
            held = self._held.get(status.job_name)
            if held is None or status.seq > held.seq:
                self._held[status.job_name] = status

    def settled(self, status: JobStatus) -> None:
        """``status`` was written: forget what is held for its job unless it is newer."""
        with self._lock:
            held = self._held.get(status.job_name)
            if held is not None and held.seq <= status.seq:
                del self._held[status.job_name]

    def drain(self, write: Callable[[JobStatus], None]) -> int:
        """Write everything held, oldest run first; return how many went through.

        Each job's newest status is written: the one held, or the one
        ``current`` knows if it is newer. A status stays held until its write
        went through, so :meth:`holds` and ``len`` tell the truth while a drain
        is under way; one drain runs at a time (a second waits, then finds
        only what is still unwritten). On the first failure that status and
        every one after it stay held (none is lost), and the error is raised.
        """
        with self._draining:
            with self._lock:
                pending = sorted(self._held.values(), key=lambda status: status.created_at)
            for status in pending:
                written = self._newest(status)
                write(written)
                self.settled(written)
            return len(pending)

    def _newest(self, held: JobStatus) -> JobStatus:
        latest = self._current(held.job_name) if self._current is not None else None
        return latest if latest is not None and latest.seq > held.seq else held

    def forget(self, job_name: str) -> None:
        """Hold nothing more for ``job_name`` (its change was written another way)."""
        with self._lock:
            self._held.pop(job_name, None)

    def holds(self, job_name: str) -> bool:
        with self._lock:
            return job_name in self._held

    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
