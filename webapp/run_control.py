"""Finding, cancelling and reading runs: what the API's ``GET``, ``DELETE`` and log reads ask of the back end.

Statuses are answered from the hub's cache, then the run store, through the
door (:meth:`~webapp.door.StatusDoor.current`) — never by calling an
executor. A cancel, logs and a log follow go to the executor of the run's
mode; a finished run's logs come from its executor while it has them, else
from the tail the run store kept (:mod:`webapp.log_tails`: the pod is gone,
or another instance ran the legacy task). The migration report reads dual
mode's comparisons from the run store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from webapp.comparison import migration_report
from webapp.door import OPERATOR_CANCEL, StatusDoor
from webapp.errors import (
    Conflict,
    ExecutorUnavailable,
    InvalidJobName,
    JobNotFound,
    JobpulseError,
    RunStoreUnavailable,
)
from webapp.executors import Executor
from webapp.log_follow import LogFollowers
from webapp.log_tails import last_lines
from webapp.names import is_valid_job_name
from webapp.runstore import awaits_admission
from webapp.settings import Settings
from webapp.status import JobStatus, Phase

logger = logging.getLogger(__name__)


@runtime_checkable
class Suspendable(Protocol):
    """An executor whose runs can be suspended and resumed (Kubernetes Jobs: ``spec.suspend``)."""

    def set_suspended(self, job_name: str, *, suspended: bool, operator: str) -> None: ...


class RunControl:
    def __init__(
        self,
        *,
        settings: Settings,
        executors: Mapping[str, Executor],
        door: StatusDoor,
        followers: LogFollowers | None = None,
    ) -> None:
        self._settings = settings
        self._followers = followers if followers is not None else LogFollowers()
        self._executors = executors
        self._door = door
        self._store = door.store

    def status(self, job_name: str) -> JobStatus:
        """The current status from the hub's cache, else the run store; never from an executor."""
        check_job_name(job_name)
        status = self._door.current(job_name)
        if status is None:
            raise JobNotFound(f"no job named {job_name}")
        return status

    def cancel(self, job_name: str) -> JobStatus:
        """Cancel an unfinished run: one waiting for capacity here (no executor has it), others by their executor."""
        status = self.status(job_name)
        if status.terminal:
            return status
        executor = self._executor_for(status)
        # a run still in line has nothing to stop: it leaves the line (unless it was admitted meanwhile)
        left_line = awaits_admission(status) and (
            self._door.change(job_name, only_if=awaits_admission, **OPERATOR_CANCEL) is not None
        )
        if not left_line:
            executor.cancel(job_name)
        logger.info("job.cancelled", extra={"job_name": job_name, "mode": status.mode})
        return self.status(job_name)

    def set_suspended(self, job_name: str, *, suspended: bool, operator: str) -> JobStatus:
        """Suspend or resume a running Kubernetes Job for ``operator``; the run's status after the patch.

        :class:`Conflict` for a finished run, a run waiting for capacity (no Job yet) and a run whose executor
        cannot suspend (local and legacy runs). The watch reports the Job's new state as it comes.
        """
        status = self.status(job_name)
        doing = "suspended" if suspended else "resumed"
        if status.terminal:
            raise Conflict(f"{job_name} already finished: {status.status.value}; it cannot be {doing}")
        executor = self._executor_for(status)
        if not isinstance(executor, Suspendable):
            raise Conflict(f"{job_name} runs in {status.mode} mode: only Kubernetes Jobs can be {doing}")
        if awaits_admission(status):
            raise Conflict(f"{job_name} is waiting for capacity and has no Job yet; it cannot be {doing}")
        executor.set_suspended(job_name, suspended=suspended, operator=operator)
        return self.status(job_name)

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        status = self.status(job_name)
        if status.terminal:
            return self._finished_logs(status, tail_lines=tail_lines)
        return self._executor_for(status).logs(job_name, tail_lines=tail_lines)

    def follow_logs(
        self, job_name: str, *, tail_lines: int, still_wanted: Callable[[], bool] | None = None
    ) -> Iterator[str]:
        """The tail, then output as written until the run finishes; a finished run's logs, once, as :meth:`logs` gives.

        A running run is followed through the shared follows (:mod:`webapp.log_follow`): one
        executor follow per run in this process, whoever watches. A follow that ends without
        a byte (the run ran on another instance, its pod went first) answers as a finished
        run's logs do: the executor's, else the tail the run store kept. ``still_wanted``: see
        :meth:`~webapp.log_follow.LogFollowers.follow`.
        """
        status = self.status(job_name)
        if status.terminal:
            text = self._finished_logs(status, tail_lines=tail_lines)
            return iter((text,) if text else ())
        executor = self._executor_for(status)
        return self._followers.follow(
            job_name,
            tail_lines=tail_lines,
            open_upstream=lambda: executor.follow_logs(job_name, tail_lines=tail_lines),
            when_empty=lambda: self._logs_after_follow(job_name, tail_lines=tail_lines),
            still_wanted=still_wanted,
        )

    def _logs_after_follow(self, job_name: str, *, tail_lines: int) -> str:
        """A follow gave nothing: a run that has finished meanwhile answers from what is left of its output."""
        try:
            status = self.status(job_name)
            return self._finished_logs(status, tail_lines=tail_lines) if status.terminal else ""
        except JobpulseError as error:  # the stream has begun: there is no error answer to give any more
            logger.info("logs.unavailable", extra={"job_name": job_name, "error": error.message})
            return ""

    def _finished_logs(self, status: JobStatus, *, tail_lines: int) -> str:
        """From the executor while it has the output; else the tail the run store kept, if it kept one."""
        job_name = status.job_name
        executor = self._executors.get(status.mode)
        text = ""
        failure: Exception | None = None
        if executor is None:
            failure = self._not_enabled(status)
        else:
            try:
                text = executor.logs(job_name, tail_lines=tail_lines)
            except (ExecutorUnavailable, JobNotFound) as error:  # the API server is away, or the run ran elsewhere
                failure = error
        if text or tail_lines == 0:
            return text
        try:
            kept = self._store.log_tail(job_name)
        except RunStoreUnavailable as error:
            logger.warning("logs.tail_unavailable", extra={"job_name": job_name, "error": error.message})
            kept = None
        if kept is None:
            if failure is not None:
                raise failure
            return text
        return last_lines(kept, tail_lines)

    def _executor_for(self, status: JobStatus) -> Executor:
        executor = self._executors.get(status.mode)
        if executor is None:
            raise self._not_enabled(status)
        return executor

    def _not_enabled(self, status: JobStatus) -> Conflict:
        return Conflict(
            f"{status.job_name} ran in {status.mode} mode, which is not enabled "
            f"(EXECUTION_MODE={self._settings.execution_mode})"
        )

    def migration_report(self) -> dict[str, Any]:
        report = migration_report(self._store.comparisons())
        report["execution_mode"] = self._settings.execution_mode
        report["primary"] = self._settings.primary_mode
        return report

    def recent(self, limit: int, *, statuses: Collection[Phase] = (), specs: Collection[str] = ()) -> list[JobStatus]:
        """Newest first, from the run store; only those of ``statuses`` and ``specs`` when given."""
        return self._store.recent(limit, statuses=statuses, specs=specs)


def check_job_name(job_name: str) -> None:
    if not is_valid_job_name(job_name):
        raise InvalidJobName(f"{job_name[:80]!r} is not a valid job name (a DNS-1123 label of at most 63 characters)")
