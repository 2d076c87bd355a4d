"""What the two legacy runners share: the runs this process executes, and how they start, end, stop and move on.

A legacy run has no Kubernetes Job to keep its state: the process that
executes it keeps it, in a thread of its own. :class:`LegacyRunner` is that
bookkeeping, written once; a subclass says only how one run is carried out —
as attempts of a local subprocess (:mod:`~webapp.executors.local`) or as a
task of the legacy HTTP service (:mod:`~webapp.executors.http_runner`). The
skeleton owns:

- the registry of runs (:class:`LegacyRun`: status, lock, thread, wake-up
  signal) and their threads; a run whose thread crashes is ``Failed``
  (``RunnerError``), never left unfinished;
- every status change, through the door (:meth:`LegacyRunner._update`);
- leases in the run store (:mod:`~webapp.executors.leases`): one process
  executes a run at a time, and runs a stopped or dead process did not finish
  are taken over (the resume loop, :meth:`LegacyRunner._resume`);
- cancels, including those of runs no process executes any more, and cancels
  made by another instance (:meth:`LegacyRunner.on_status`);
- :meth:`LegacyRunner.stop`: every run's thread is told to stop and joined,
  and the unfinished runs are handed back to the run store for the next process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Generic, TypeVar

from webapp.door import OPERATOR_CANCEL, StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, JobNotFound
from webapp.executors.leases import RunLeases, being_launched
from webapp.status import JobStatus, Phase

logger = logging.getLogger(__name__)

LEGACY_TASK_ID_ANNOTATION = "jobpulse/legacy-task-id"
"""Marks a run that the legacy task-runner service (``LEGACY_RUNNER=http``) executes: its task id there."""


def legacy_task_id(manifest: dict[str, Any] | None) -> str | None:
    """The run's task id at the legacy service, kept on its manifest in the run store, if it has one."""
    if manifest is None:
        return None
    task_id = ((manifest.get("metadata") or {}).get("annotations") or {}).get(LEGACY_TASK_ID_ANNOTATION)
    return str(task_id) if task_id else None


class LegacyRun:
    """What a runner knows of one run it executes: its latest status, its thread, and what tells it to stop."""

    def __init__(self, status: JobStatus) -> None:
        self.status = status
        self.lock = threading.Lock()
        self.wake = threading.Event()
        """Ends the run's waits: it was cancelled or let go, or the runner is stopping (the local runner also
        uses it to admit a queued run)."""
        self.cancelled = False
        self.thread: threading.Thread | None = None


RunT = TypeVar("RunT", bound=LegacyRun)


class LegacyRunner(Generic[RunT]):
    """An :class:`~webapp.executors.Executor` skeleton: a thread per run, leased in the run store.

    A subclass carries out one run (:meth:`_execute`), takes over one unfinished
    run found in the store (:meth:`_resume`) and stops what carries a run out
    (:meth:`_halt`); the rest it may leave as it is.
    """

    mode = "legacy"

    def __init__(
        self, *, door: StatusDoor, title: str, thread_prefix: str, leases_name: str, join_seconds: float
    ) -> None:
        """``title`` names the runner in messages ("``title`` is stopping"); a run's thread is named
        ``{thread_prefix}-{job_name}``; ``join_seconds``: how long :meth:`stop` waits for the runs' threads,
        once they were told to stop."""
        self.title = title
        self._thread_prefix = thread_prefix
        self._door = door
        self._store = door.store
        self._join_seconds = join_seconds
        self._lock = threading.Lock()
        self._runs: dict[str, RunT] = {}
        self._stopping = threading.Event()
        self._leases = RunLeases(
            store=door.store,
            held=self._held_runs,
            adopt=self._resume_unfinished,
            lost=self._let_go,
            name=leases_name,
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._leases.adopt_now()
        self._leases.start()

    def stop(self) -> None:
        """Stop every run's thread and hand the unfinished runs back to the run store."""
        self._stopping.set()
        with self._lock:
            runs = list(self._runs.values())
        self._stop_runs(runs)
        self._leases.stop()
        # Each run's thread has only its last bookkeeping left (it may read the run store): let it finish
        # before the caller closes the store.
        deadline = time.monotonic() + self._join_seconds
        for run in runs:
            if run.thread is not None and run.thread is not threading.current_thread():
                run.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        lingering = [run.status.job_name for run in runs if run.thread is not None and run.thread.is_alive()]
        if lingering:
            logger.warning("runner.threads_lingering", extra={"mode": self.mode, "jobs": lingering})

    def _stop_runs(self, runs: list[RunT]) -> None:
        """Tell each run's thread to stop (all at once: one by one, a few slow runs would outlast a graceful stop)."""
        for run in runs:
            run.wake.set()

    def unready_reason(self) -> str | None:
        return f"{self.title} is stopping" if self._stopping.is_set() else None

    # -- launching -------------------------------------------------------------

    def _accept(self, job_name: str) -> None:
        """Take the lease of a run being launched, or raise why this process cannot execute it."""
        if self._stopping.is_set():
            raise ExecutorUnavailable(f"{self.title} is shutting down")
        with self._lock:
            if job_name in self._runs:
                raise Conflict(f"run {job_name} is already with {self.title}")
        if not self._leases.claim(job_name):
            raise ExecutorUnavailable(f"run {job_name} is held by another process")

    def _start(self, run: RunT) -> None:
        """Hold the run and carry it out in a thread of its own."""
        job_name = run.status.job_name
        with self._lock:
            self._runs[job_name] = run
        run.thread = threading.Thread(
            target=self._carry_out, args=(run,), name=f"{self._thread_prefix}-{job_name}", daemon=True
        )
        run.thread.start()

    def _carry_out(self, run: RunT) -> None:
        job_name = run.status.job_name
        try:
            self._execute(run)
        except Exception as error:  # never leave a run hanging unfinished
            logger.exception("job.error", extra={"job_name": job_name, "mode": self.mode})
            self._abandon(run)
            self._update(
                run, status=Phase.FAILED, reason="RunnerError", message=str(error) or type(error).__name__, active=0
            )
        finally:
            self._ended(run)
            if run.status.terminal or not self._stopping.is_set():  # a run stopped unfinished stays for stop()
                with self._lock:
                    if self._runs.get(job_name) is run:
                        del self._runs[job_name]

    def _execute(self, run: RunT) -> None:
        """Carry the run out until its status is terminal, or its ``wake`` says stop (in the run's thread)."""
        raise NotImplementedError

    def _abandon(self, run: RunT) -> None:
        """The run's thread failed: stop whatever of the run must not go on unobserved (nothing by default)."""

    def _ended(self, run: RunT) -> None:
        """The run's thread is ending (the run finished, or was stopped): last bookkeeping (none by default)."""

    def _update(self, run: RunT, *, durable: bool = False, **changes: Any) -> bool:
        """Move the run's status on through the door; whether anything changed.

        ``durable``: raise :class:`~webapp.errors.RunStoreUnavailable` if the store refuses the change.
        """
        status = self._door.change(run.status.job_name, durable=durable, **changes)
        with run.lock:
            if status is None or status is run.status:
                return False
            run.status = status
        return True

    # -- leases: taking runs over, letting them go ----------------------------------------

    def _held_runs(self) -> list[str]:
        """The runs whose leases this process renews: not those already finished (the store holds no lease on them)."""
        with self._lock:
            return [job_name for job_name, run in self._runs.items() if not run.status.terminal]

    def _resume_unfinished(self) -> None:
        """Take over runs that a stopped or dead process accepted but did not finish.

        A run the hub knows as finished is left alone whatever the store
        says: the store refused its final status (which waits in the door's
        backlog), so the store's copy is out of date.
        """
        for stored in self._store.unfinished(mode=self.mode):
            if self._stopping.is_set():
                return
            with self._lock:
                if stored.job_name in self._runs or being_launched(stored):
                    continue
            known = self._door.hub.get(stored.job_name)
            if known is not None and known.terminal:
                continue  # it finished; the store has not taken its final status yet (disk full, Redis down)
            self._resume(stored)

    def _resume(self, stored: JobStatus) -> None:
        """Take over one unfinished run no process holds (claim its lease first), or leave it."""
        raise NotImplementedError

    def _let_go(self, job_name: str) -> None:
        """This process lost the run's lease (another process may hold it now)."""
        with self._lock:
            run = self._runs.get(job_name)
        if run is not None:
            self._lose(run)

    def _lose(self, run: RunT) -> None:
        """What a lost lease means for a run this process executes (nothing by default)."""

    # -- cancelling ------------------------------------------------------------

    def cancel(self, job_name: str) -> None:
        """Mark the run ``Cancelled`` and stop what carries it out; a run nobody executes any more is cancelled too."""
        with self._lock:
            run = self._runs.get(job_name)
        if run is None:
            if not self._known(job_name).terminal:  # accepted by a process that is gone; nobody executes it
                self._door.change(job_name, **OPERATOR_CANCEL)
                self._cancel_orphan(job_name)
            return
        run.cancelled = True
        run.wake.set()
        self._update(run, **OPERATOR_CANCEL)
        self._halt(run)

    def on_status(self, status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: another instance cancelled a run this one executes (the status came over Redis): stop it."""
        if status.status != Phase.CANCELLED:
            return
        with self._lock:
            run = self._runs.get(status.job_name)
        if run is None or run.cancelled:
            return
        run.cancelled = True
        run.wake.set()
        with run.lock:
            run.status = status
        threading.Thread(target=self._halt, args=(run,), daemon=True).start()

    def _halt(self, run: RunT) -> None:
        """Stop what carries out a cancelled run (its thread was told already)."""
        raise NotImplementedError

    def _cancel_orphan(self, job_name: str) -> None:
        """A run nobody executes any more was cancelled: stop whatever of it may still run (nothing by default)."""

    def _known(self, job_name: str) -> JobStatus:
        """The run's status now (the hub's, else the run store's); :class:`JobNotFound` if there is no such run."""
        status = self._door.current(job_name)
        if status is None:
            raise JobNotFound(f"no job named {job_name}")
        return status
