"""The legacy local runner: each run is a subprocess on this host.

It honours what a Job manifest says as far as a host can: the first
container's command (a leading ``python`` meaning this interpreter, found
even where ``sys.executable`` is not a Python, or ``LEGACY_PYTHON``), its
literal ``env``, ``backoffLimit`` retries, ``activeDeadlineSeconds``, and at
most ``LEGACY_MAX_CONCURRENCY`` runs at once (the rest wait, ``Queued``, in
order, each told its place: :mod:`~webapp.executors.waiting_line`). Output
goes to one file per run for the logs endpoint. Each attempt runs under
:mod:`~webapp.executors.task_supervisor`, so it dies with the worker and
leaves a record of how it ended. Runs are leased in the run store, so runs
a stopped or dead process did not finish are resumed by the next one — run
again only when that record proves the attempt did not finish. What it shares
with the HTTP runner (the runs' threads, leases, take-over, cancel, stop) is
:class:`~webapp.executors.legacy.LegacyRunner`.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from webapp.backoff import exponential_delay
from webapp.door import StatusDoor
from webapp.errors import InvalidRequest, RunStoreUnavailable
from webapp.executors import task_supervisor, waiting_line
from webapp.executors.legacy import LegacyRun, LegacyRunner, legacy_task_id
from webapp.executors.task_supervisor import AttemptRecord
from webapp.executors.waiting_line import WaitingLine
from webapp.jobspecs import active_deadline_seconds, backoff_limit
from webapp.jobspecs import command as task_command
from webapp.settings import PROJECT_ROOT, ConfigError
from webapp.status import JobStatus, Phase

logger = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 5.0
SUPERVISOR_SLACK_SECONDS = 3.0
"""How much longer than the grace period the runner waits for a supervisor to stop its task and exit."""
THREAD_JOIN_SECONDS = 2.0
"""How long :meth:`LocalRunner.stop` waits for its run threads to end, once their attempts are stopped."""
STORE_WAIT_SECONDS = 1.0
"""How often an attempt the run store refused to record is tried again."""
FOLLOW_POLL_SECONDS = 0.25
"""How often a followed run's output file is looked at for more."""
FOLLOW_CHUNK_BYTES = 64 * 1024
"""The most of a followed run's output read at once."""
RETRY_PAUSE_MAX_SECONDS = 60.0
"""The longest pause between a failed attempt and the next (pauses double from ``retry_backoff_seconds``)."""
_PASSED_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")


_PYTHON_NAME = re.compile(r"^(python|pypy)[0-9.]*$")


def find_python(configured: Path | None = None) -> str:
    """The interpreter for a command starting with ``python``: ``LEGACY_PYTHON``, else the one running jobpulse.

    ``sys.executable`` is not always a Python: an embedding host sets it to
    its own binary (under uWSGI it is ``uwsgi``, under mod_wsgi often
    ``httpd``). Then the interpreter of the same version is looked for in
    this environment's ``bin`` (``sys.prefix``: the virtualenv), then on
    ``PATH``. Raises :class:`ConfigError` naming ``LEGACY_PYTHON`` when none is found.
    """
    if configured is not None:
        return str(configured)
    if _PYTHON_NAME.match(Path(sys.executable).name):
        return sys.executable
    major, minor = sys.version_info[:2]
    names = (f"python{major}.{minor}", f"python{major}", "python")
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix)):
        for name in names:
            candidate = Path(prefix) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(names[0])
    if found is None:
        raise ConfigError(
            f"LEGACY_PYTHON: the local runner needs a Python {major}.{minor} interpreter for tasks and found none "
            f"(this process runs in {sys.executable}, not a Python); set LEGACY_PYTHON to its path"
        )
    return found


def build_command(manifest: dict[str, Any], *, python: str) -> list[str]:
    """The first container's ``command`` + ``args``; ``python`` (or ``python3``) means ``python``."""
    command = task_command(manifest)
    if not command:
        raise InvalidRequest("the jobspec's first container has no command for the legacy runner")
    if command[0] in ("python", "python3"):
        command[0] = python
    return command


def build_env(manifest: dict[str, Any]) -> dict[str, str]:
    """A clean environment: a few host basics plus the container's literal ``env``.

    The app's own environment (tokens, URLs) is not passed on.
    """
    env = {name: os.environ[name] for name in _PASSED_THROUGH_ENV if name in os.environ}
    env.update(PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env.update({item["name"]: str(item["value"]) for item in container.get("env", []) if "value" in item})
    return env


class _LocalRun(LegacyRun):
    """A run on this host: its manifest, its place in line for a slot, and the process of its attempt."""

    def __init__(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        super().__init__(status)
        self.manifest = manifest
        self.starting = threading.Lock()
        """Held from "may an attempt start?" until its process is known: a shutdown sees no attempt, or its process."""
        self.admitted = False
        """Given a slot by the line (:class:`~webapp.executors.waiting_line.WaitingLine`) after waiting in it."""
        self.let_go = False
        """Another process may hold the run now (its lease was lost or ran out): this one starts nothing more."""
        self.process: subprocess.Popen[bytes] | None = None


class LocalRunner(LegacyRunner[_LocalRun]):
    """An :class:`~webapp.executors.Executor` running tasks as local subprocesses."""

    def __init__(
        self,
        *,
        door: StatusDoor,
        log_dir: Path,
        max_concurrency: int,
        retry_backoff_seconds: float = 1.0,
        workdir: Path = PROJECT_ROOT,
        python: str | None = None,
        queue_refresh_seconds: float = waiting_line.REFRESH_SECONDS,
    ) -> None:
        """``python``: the interpreter for commands starting with ``python`` (default: :func:`find_python`);
        ``queue_refresh_seconds``: the shortest time between two passes that tell the runs in line their places."""
        super().__init__(
            door=door,
            title="the local runner",
            thread_prefix="run",
            leases_name="local-runner-leases",
            join_seconds=THREAD_JOIN_SECONDS,
        )
        self._python = python or find_python()
        self._log_dir = log_dir
        self._max_concurrency = max_concurrency
        self._retry_backoff = retry_backoff_seconds
        self._workdir = workdir
        self._line = WaitingLine[_LocalRun](
            slots=max_concurrency, tell=self._tell_place, refresh_seconds=queue_refresh_seconds
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        (self._log_dir / "attempts").mkdir(parents=True, exist_ok=True)
        self._line.start()
        super().start()

    def _stop_runs(self, runs: list[_LocalRun]) -> None:
        """Stop every attempt's process, then record how each attempt ended."""
        self._line.stop()  # the runs in line leave it now: no place is worth telling any more
        for run in runs:  # all at once: one by one, a few stuck tasks would outlast gunicorn's graceful_timeout
            with run.starting:  # an attempt being started has its process by now, and no other starts after this
                run.wake.set()
                self._ask_to_stop(run)
        deadline = time.monotonic() + KILL_GRACE_SECONDS + SUPERVISOR_SLACK_SECONDS
        for run in runs:
            self._await_stop(run, deadline=deadline)
        for run in runs:
            self._record_interruption(run)

    def _record_interruption(self, run: _LocalRun) -> None:
        """After a shutdown stopped an attempt: it finished after all, its end is unknown, or it runs again."""
        status = run.status
        if status.terminal or not status.active:
            return
        record = AttemptRecord.read(self._record_path(status.job_name, status.attempt))
        process = run.process
        code = (
            _task_exit_code(process.returncode, record)
            if process is not None and process.returncode is not None
            else None
        )
        if code == 0 or (record is not None and record.finished):
            self._update(run, status=Phase.SUCCEEDED, succeeded=1, active=0, reason=None, message=None)
            return
        if record is not None and not record.ended and code is None:
            _kill_task_group(record)
            self._update(run, **_attempt_lost(status.attempt))
            return
        self._update(
            run,
            status=Phase.QUEUED,
            reason="Interrupted",
            message=f"attempt {status.attempt} was stopped by a server shutdown before it finished; "
            f"it runs again as attempt {status.attempt + 1} when a server takes the run over",
            active=0,
        )

    # -- launching -------------------------------------------------------------

    def launch(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        build_command(manifest, python=self._python)  # refuse a spec we cannot run before anything starts
        self._accept(status.job_name)
        self._start(_LocalRun(status, manifest))

    def _resume(self, stored: JobStatus) -> None:
        """Take over a run that a stopped or dead process accepted but did not finish.

        A run whose attempt was in flight (``active``) is settled from that
        attempt's record (:mod:`~webapp.executors.task_supervisor`) before
        anything else: it finished (``Succeeded``), failed (counted against
        ``backoffLimit``), or was stopped before it finished (run again as
        the next attempt). Without a record that says how it ended — its
        worker was on another host, or the record is gone — its outcome is
        unknown, and it is not run again (``Failed``, ``AttemptLost``): a
        donation must never run twice. An attempt recorded on this host that
        is newer than the store's copy is settled the same way, whatever the
        copy says of ``active``.
        """
        manifest = self._store.manifest(stored.job_name)
        if manifest is None or legacy_task_id(manifest) is not None:
            return  # nothing to run, or a run the legacy service owns (LEGACY_RUNNER=http)
        latest = self._latest_recorded_attempt(stored.job_name)
        # a record newer than the store's copy: that attempt started, whatever the copy says; settle it
        status = stored.evolve(attempt=latest, active=1) if latest > stored.attempt else stored
        record = None
        if status.active and status.attempt:
            record = AttemptRecord.read(self._record_path(status.job_name, status.attempt))
            if record is not None and record.supervisor_running:
                return  # its worker is alive, or the supervisor is still stopping the task: not ours (yet)
        if record is None and latest:
            record = AttemptRecord.read(self._record_path(stored.job_name, latest))
        if record is not None and record.worker_running and record.parent_pid != os.getpid():
            return  # its worker lives on this host (its lease lapsed): it may start the next attempt any moment
        dead_owner = record.owner if record is not None and not record.worker_running else None
        if not self._leases.claim(status.job_name, replacing=dead_owner):
            return
        self._take_over(status, manifest, record)

    def _take_over(self, status: JobStatus, manifest: dict[str, Any], record: AttemptRecord | None) -> None:
        job_name, attempt = status.job_name, status.attempt
        change = _settled_attempt(status, manifest, record)
        logger.info(
            "job.resumed",
            extra={"job_name": job_name, "mode": self.mode, "attempt": attempt, "reason": change.get("reason")},
        )
        # ``attempt``: a record on this host may name a newer attempt than the store's copy does
        resumed = self._door.change(job_name, attempt=attempt, **change)
        if resumed is None:
            return
        if resumed.terminal:
            self._forget_records(job_name)
        else:
            self._start(_LocalRun(resumed, manifest))

    def _lose(self, run: _LocalRun) -> None:
        """This process lost the run's lease: stop its attempt now, before another process may start one."""
        run.let_go = True
        run.wake.set()
        threading.Thread(target=self._halt, args=(run,), daemon=True).start()

    # -- executing -------------------------------------------------------------

    def _execute(self, run: _LocalRun) -> None:
        if self._wait_for_slot(run):
            try:
                self._attempts(run)
            finally:
                self._line.release()

    def _abandon(self, run: _LocalRun) -> None:
        self._halt(run)  # an attempt nobody follows any more must not run on

    def _ended(self, run: _LocalRun) -> None:
        if run.status.terminal:
            self._forget_records(run.status.job_name)

    def _wait_for_slot(self, run: _LocalRun) -> bool:
        if not self._line.wait_for_slot(run):
            return False  # woken by a cancel, a lost lease or a shutdown while in line
        run.wake.clear()  # it woke us to admit us; from now on it means cancelled or stopping
        if run.cancelled or self._stopping.is_set():
            self._line.release()  # admitted, but will not use the slot: hand it on
            return False
        return True

    def _tell_place(self, run: _LocalRun, place: int) -> None:
        """The run waits in line at ``place`` (1 = next to start): its status says so (called by the line)."""
        self._update(
            run,
            status=Phase.QUEUED,
            reason="WaitingForSlot",
            message=f"{self._max_concurrency} tasks running; {place - 1} ahead in line",
            queue_position=place,
        )

    def _attempts(self, run: _LocalRun) -> None:
        retries = backoff_limit(run.manifest)
        deadline_seconds = active_deadline_seconds(run.manifest)
        started = time.monotonic()
        deadline = started + deadline_seconds if deadline_seconds is not None else None
        failures = run.status.failed  # attempts used before a restart still count
        job_name = run.status.job_name
        log_path = self.log_path(job_name)
        while True:
            with run.starting:
                if run.cancelled or run.let_go or self._stopping.is_set():
                    return
                attempt = run.status.attempt + 1
                announced = self._announce(run, attempt)
            if announced is None:
                if not run.cancelled:
                    logger.warning(
                        "job.lease_lost", extra={"job_name": job_name, "mode": self.mode, "attempt": attempt}
                    )
                return  # another process holds the run now (it runs the attempt, not this one), or it was cancelled
            if not announced:
                if run.wake.wait(STORE_WAIT_SECONDS):
                    return  # cancelled or stopping while the store refused
                continue
            with run.starting:
                if run.cancelled or run.let_go or self._stopping.is_set():
                    return
                record_path = self._record_path(job_name, attempt)
                command = task_supervisor.command_line(
                    self._python,
                    record=record_path,
                    parent=os.getpid(),
                    owner=self._leases.owner,
                    grace=KILL_GRACE_SECONDS,
                    command=build_command(run.manifest, python=self._python),
                )
                env = {**build_env(run.manifest), "JOBPULSE_RUN_ID": job_name, "JOBPULSE_ATTEMPT": str(attempt)}
                with log_path.open("ab") as output:
                    if attempt > 1:
                        retried = f", retry {failures} of {retries}" if failures else ""
                        output.write(f"[jobpulse] attempt {attempt}{retried}\n".encode())
                        output.flush()
                    try:
                        # in a session of its own: a cancel stops the supervisor's group, never this server's
                        run.process = subprocess.Popen(
                            command,
                            env=env,
                            cwd=self._workdir,
                            stdin=subprocess.DEVNULL,
                            stdout=output,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    except OSError as error:
                        self._update(run, status=Phase.FAILED, reason="StartError", message=str(error), active=0)
                        return
            if run.cancelled or run.let_go:
                self._halt(run)
                return
            self._update(run, status=Phase.RUNNING, active=1)
            timeout = max(0.0, deadline - time.monotonic()) if deadline is not None else None
            try:
                supervisor_code = run.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._halt(run)
                self._update(
                    run,
                    status=Phase.FAILED,
                    reason="DeadlineExceeded",
                    message=f"Job was active longer than specified deadline ({deadline_seconds}s)",
                    active=0,
                    failed=failures + 1,
                )
                return
            if run.cancelled:
                return
            record = AttemptRecord.read(record_path)
            code = _task_exit_code(supervisor_code, record)
            if code == 0:  # even if a shutdown came meanwhile: it must not run again
                self._update(run, status=Phase.SUCCEEDED, succeeded=1, active=0, reason=None, message=None)
                return
            if self._stopping.is_set():
                return  # stop() records how the attempt ended
            if run.let_go:
                return  # whoever holds the run now settles the attempt from its record
            if code is None:
                _kill_task_group(record)  # whatever of the task's group its death left behind
                self._update(run, **_attempt_lost(attempt))
                return
            failures += 1
            exit_text = _describe_exit(code)
            if code == task_supervisor.UNRECORDED and record is None:
                exit_text = "the attempt could not be recorded (is the disk full?), so its task was not started"
            if failures > retries:
                self._update(run, **_backoff_exceeded(exit_text, failures, retries))
                return
            pause = exponential_delay(failures - 1, initial=self._retry_backoff, maximum=RETRY_PAUSE_MAX_SECONDS)
            self._update(
                run,
                status=Phase.PENDING,
                reason="RetryBackoff",
                message=f"{exit_text}; retrying in {pause:g}s",
                active=0,
                failed=failures,
            )
            if run.wake.wait(pause):  # cancelled or stopping during the pause
                return

    def _announce(self, run: _LocalRun, attempt: int) -> bool | None:
        """Renew the run's lease and save that the attempt may be running, before it starts.

        ``False`` if the store refuses, ``None`` if another process holds the
        lease now (it lapsed; then that process runs the attempt, not this one)
        or the run was cancelled meanwhile. Saved durably (a refused write
        would wait in a backlog a restart loses): a process that takes the run
        over must know that this attempt may have run, or it would run it again.
        """
        try:
            if not self._leases.claim(run.status.job_name):
                return None
            self._update(run, durable=True, status=Phase.PENDING, reason=None, message=None, active=1, attempt=attempt)
        except RunStoreUnavailable as error:
            if run.status.reason != "WaitingForRunStore":
                self._update(
                    run,
                    status=Phase.PENDING,
                    reason="WaitingForRunStore",
                    message=f"attempt {attempt} starts once the run store can record it: {error.message}",
                )
            return False
        if run.status.terminal:  # cancelled meanwhile, by another instance: nothing more starts
            run.cancelled = True
            return None
        return True

    def _halt(self, run: _LocalRun) -> None:
        """Stop the attempt: its supervisor stops the task (``SIGTERM``, ``SIGKILL`` after the grace period)."""
        self._ask_to_stop(run)
        self._await_stop(run, deadline=time.monotonic() + KILL_GRACE_SECONDS + SUPERVISOR_SLACK_SECONDS)

    @staticmethod
    def _ask_to_stop(run: _LocalRun) -> None:
        process = run.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def _await_stop(self, run: _LocalRun, *, deadline: float) -> None:
        """Wait for the supervisor until ``deadline``; then kill it and the task's group (the supervisor is stuck)."""
        process = run.process
        if process is None:
            return
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            record = AttemptRecord.read(self._record_path(run.status.job_name, run.status.attempt))
            _kill_task_group(record)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _record_path(self, job_name: str, attempt: int) -> Path:
        return self._log_dir / "attempts" / f"{job_name}.{attempt}.json"

    def _latest_recorded_attempt(self, job_name: str) -> int:
        """The highest attempt of the run with a record on this host (0 if none)."""
        numbers = [path.name.removeprefix(f"{job_name}.").removesuffix(".json") for path in self._records(job_name)]
        return max((int(number) for number in numbers if number.isdigit()), default=0)

    def _records(self, job_name: str) -> list[Path]:
        return list((self._log_dir / "attempts").glob(f"{job_name}.*.json"))

    def _forget_records(self, job_name: str) -> None:
        """A finished run's attempt records are no longer needed, once the run store knows it finished.

        Until then (the store refused the final status, which waits in the
        runtime's backlog, and a restart would lose it) they are what tells a
        process that takes the run over that its last attempt ended, and how.
        """
        try:
            stored = self._store.get(job_name)
        except RunStoreUnavailable:
            return
        if stored is None or not stored.terminal:
            return
        for path in self._records(job_name):
            path.unlink(missing_ok=True)

    # -- output --------------------------------------------------------------

    def log_path(self, job_name: str) -> Path:
        return self._log_dir / f"{job_name}.log"

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        path = self.log_path(job_name)
        if not path.exists():
            return ""
        lines = path.read_bytes().decode("utf-8", "replace").splitlines(keepends=True)
        return "".join(lines[-tail_lines:]) if tail_lines else ""

    def follow_logs(self, job_name: str, *, tail_lines: int) -> OutputFollow:
        """The run's output file as it is written (``tail -f``), until the run finishes or the follow is closed."""
        return OutputFollow(self.log_path(job_name), tail_lines=tail_lines, finished=lambda: self._finished(job_name))

    def _finished(self, job_name: str) -> bool:
        status = self._door.current(job_name)
        return status is None or status.terminal


class OutputFollow:
    """A local run's output file, followed: its last lines, then what is appended, until the run finishes.

    Polls the file every ``FOLLOW_POLL_SECONDS``, as ``tail -f`` does, reading
    at most ``FOLLOW_CHUNK_BYTES`` at a time. :meth:`close` (from any thread)
    ends the iteration at its next poll.
    """

    def __init__(self, path: Path, *, tail_lines: int, finished: Callable[[], bool]) -> None:
        self._path = path
        self._tail_lines = tail_lines
        self._finished = finished
        self._closed = threading.Event()
        self._chunks = self._read()

    def close(self) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def _read(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a chunk may end inside a character
        position = 0
        if self._path.exists():
            with self._path.open("rb") as source:
                data = source.read()
            position = len(data)
            lines = decoder.decode(data).splitlines(keepends=True)
            tail = "".join(lines[-self._tail_lines :]) if self._tail_lines else ""
            if tail:
                yield tail
        while not self._closed.is_set():
            finished = self._finished()  # asked before reading: output written before the end is read after it
            chunk = b""
            if self._path.exists():
                with self._path.open("rb") as source:
                    source.seek(position)
                    chunk = source.read(FOLLOW_CHUNK_BYTES)
            if chunk:
                position += len(chunk)
                if text := decoder.decode(chunk):
                    yield text
            elif finished:
                return
            else:
                self._closed.wait(FOLLOW_POLL_SECONDS)


def _settled_attempt(status: JobStatus, manifest: dict[str, Any], record: AttemptRecord | None) -> dict[str, Any]:
    """The change that settles a run taken over: its last attempt from its record, and whether it runs again."""
    attempt = status.attempt
    if not status.active or not attempt:  # no attempt in flight: start the next one
        return {
            "status": Phase.QUEUED,
            "reason": "Resumed",
            "message": "restarted after the server restarted",
            "active": 0,
            "queue_position": None,  # a place in the stopped process's line: it takes a new one here, if it waits
        }
    if record is None or not record.ended:
        return {
            "status": Phase.FAILED,
            "reason": "AttemptLost",
            "message": f"attempt {attempt} was running when its worker stopped, and nothing on this host recorded "
            "how it ended; it is not run again, so that it never runs twice",
            "active": 0,
        }
    if record.finished:
        return {
            "status": Phase.SUCCEEDED,
            "succeeded": 1,
            "active": 0,
            "reason": None,
            "message": f"attempt {attempt} finished after its worker stopped",
        }
    if record.interrupted:
        return {
            "status": Phase.QUEUED,
            "reason": "Interrupted",
            "message": f"attempt {attempt} was stopped before it finished, when its worker stopped; "
            f"it runs again as attempt {attempt + 1}",
            "active": 0,
        }
    assert record.exit_code is not None  # ended, not interrupted: the task ran and exited
    failures = status.failed + 1
    retries = backoff_limit(manifest)
    exit_text = _describe_exit(record.exit_code)
    if failures > retries:
        return _backoff_exceeded(exit_text, failures, retries)
    return {
        "status": Phase.QUEUED,
        "reason": "Resumed",
        "message": f"{exit_text} in attempt {attempt}, after its worker stopped; retrying",
        "active": 0,
        "failed": failures,
    }


def _backoff_exceeded(exit_text: str, failures: int, backoff_limit: int) -> dict[str, Any]:
    attempts = "attempt" if failures == 1 else "attempts"
    return {
        "status": Phase.FAILED,
        "reason": "BackoffLimitExceeded",
        "message": f"{exit_text} ({failures} {attempts}, backoffLimit {backoff_limit})",
        "active": 0,
        "failed": failures,
    }


def _task_exit_code(supervisor_code: int, record: AttemptRecord | None) -> int | None:
    """How the task ended: as its supervisor recorded it, else the supervisor's exit code (the task's).

    ``None`` when nobody knows: the supervisor was killed (a negative exit
    code) after it recorded the attempt's start but before it recorded its end.
    """
    if record is not None and record.ended:
        return record.exit_code if record.exit_code is not None else supervisor_code
    if record is not None and supervisor_code < 0:
        return None
    return supervisor_code


def _kill_task_group(record: AttemptRecord | None) -> None:
    """Kill what is left of a task whose supervisor died: the task died with it, its children may not have."""
    if record is not None and record.task_pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.task_pid, signal.SIGKILL)


def _attempt_lost(attempt: int) -> dict[str, Any]:
    return {
        "status": Phase.FAILED,
        "reason": "AttemptLost",
        "message": f"the supervisor of attempt {attempt} was killed before it recorded how the task ended; "
        "it is not run again, so that it never runs twice",
        "active": 0,
    }


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
