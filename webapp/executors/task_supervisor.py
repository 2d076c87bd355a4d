"""The task supervisor: a tiny program between the local runner and one attempt of a task.

The local runner never starts a task directly. It starts this program, by
path (``python -I -S task_supervisor.py --record FILE --parent PID --owner
OWNER --grace SECONDS -- COMMAND...``: no site, no ``webapp`` import, so it
starts in milliseconds), in a session of its own. The supervisor

- dies with the worker that started it: it asks the kernel for ``SIGTERM``
  when the thread that forked it dies (``PR_SET_PDEATHSIG``; a worker killed
  with ``kill -9`` included), then checks that its parent is still that
  worker, so a worker that died in between is noticed too;
- starts the task in a process group of its own, and the task asks for
  ``SIGKILL`` when the supervisor dies, so no task process outlives its
  supervisor;
- on ``SIGTERM``, ``SIGINT`` or ``SIGHUP`` (a cancel, a deadline, a shutdown,
  or its worker's death) stops the task's group: ``SIGTERM``, then
  ``SIGKILL`` after the grace period;
- writes the attempt's record to FILE, atomically: once when it starts (its
  pid and start time, its worker's, the lease owner) and once when the task
  has ended (the exit code, and whether it was interrupted). If the disk
  refuses the first record, the task is not started (exit code
  :data:`UNRECORDED`); if it refuses a later one, the supervisor goes on, and
  its exit code (the task's) still tells the worker how the task ended.

A worker that takes over a run whose worker died reads the record
(:class:`AttemptRecord`) to learn, for certain, whether the attempt finished.
Linux only (``/proc``, ``prctl``); elsewhere the task does not die with its
worker. Standard library only: the local runner imports this module too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
UNRECORDED = 125
"""The supervisor's exit code when it could not write the attempt's first record, so did not start the task."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def boot_id() -> str:
    """This boot of this host: process ids and start times only mean something within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or ``None`` if it is gone or a zombie.

    A pid with the same start time is the same process: pids are reused, start times are not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of proc(5), counted from field 3


def die_with_parent(sig: signal.Signals) -> bool:
    """Ask the kernel to send ``sig`` when the thread that forked us dies (Linux); ``False`` elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclasses.dataclass
class AttemptRecord:
    """What one attempt's supervisor wrote: who ran it, and how it ended (once it has)."""

    owner: str
    """The lease owner of the worker that started the attempt."""
    boot: str
    parent_pid: int
    parent_start: int | None
    pid: int
    start: int | None
    task_pid: int | None = None
    ended: bool = False
    exit_code: int | None = None
    """The task's exit code, negative for a signal; ``None`` if the task never started."""
    interrupted: bool = False
    """The supervisor was told to stop (cancel, deadline, shutdown, its worker died) before the task ended."""

    @classmethod
    def read(cls, path: Path) -> AttemptRecord | None:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in body.items() if name in fields})

    def write(self, path: Path) -> None:
        """Replace ``path`` at once: a reader sees the old record or the new one, never half of one."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(dataclasses.asdict(self)))
        os.replace(partial, path)

    def _running(self, pid: int, start: int | None) -> bool:
        return start is not None and self.boot == boot_id() and start_ticks(pid) == start

    @property
    def supervisor_running(self) -> bool:
        return self._running(self.pid, self.start)

    @property
    def worker_running(self) -> bool:
        return self._running(self.parent_pid, self.parent_start)

    @property
    def finished(self) -> bool:
        """The task completed successfully, whether or not a stop was asked for meanwhile."""
        return self.ended and self.exit_code == 0


class _Stop(Exception):
    """Raised by the signal handler to leave a blocking wait for the task."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one attempt of a task for the jobpulse local runner.")
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True, help="the worker's pid")
    parser.add_argument("--owner", required=True, help="the worker's lease owner")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs="+")
    return parser.parse_args(argv)


def _say(text: str) -> None:
    """A line for the run's output, unbuffered: on a full disk a buffered one would make the exit code 120."""
    with contextlib.suppress(OSError):
        os.write(2, f"[jobpulse] {text}\n".encode())


def _recorded(record: AttemptRecord, path: Path) -> bool:
    """Write the record; ``False`` (and a line saying why) if the disk refuses it."""
    try:
        record.write(path)
    except OSError as error:
        _say(f"cannot write the attempt's record {path}: {error.strerror or error}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    interrupted = False
    armed = False
    task: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted, armed
        if not interrupted:
            interrupted = True
            if task is not None:
                _signal_group(task.pid, signal.SIGTERM)
        if armed:
            armed = False
            raise _Stop

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != args.parent:
        interrupted = True  # the worker died before the kernel could be asked to tell us

    me = os.getpid()
    record = AttemptRecord(
        owner=args.owner,
        boot=boot_id(),
        parent_pid=args.parent,
        parent_start=start_ticks(args.parent),
        pid=me,
        start=start_ticks(me),
    )
    if not _recorded(record, args.record):
        return UNRECORDED  # a task must not start unrecorded: whoever takes the run over could not settle it

    def die_with_supervisor() -> None:  # in the task, between fork and exec
        die_with_parent(signal.SIGKILL)
        if os.getppid() != me:
            os.kill(os.getpid(), signal.SIGKILL)

    code: int | None = None
    if not interrupted:
        try:
            # the supervisor has no threads, so a preexec_fn is safe here
            task = subprocess.Popen(args.command, process_group=0, preexec_fn=die_with_supervisor)  # noqa: PLW1509
        except OSError as error:
            _say(f"cannot start the task: {error}")
            code = 127
    if task is not None:
        record.task_pid = task.pid
        _recorded(record, args.record)
        if interrupted:  # told to stop while the task was being started
            _signal_group(task.pid, signal.SIGTERM)
        try:
            armed = True
            if not interrupted:
                code = task.wait()
            armed = False
        except _Stop:
            pass
        if code is None:
            try:
                code = task.wait(timeout=args.grace)
            except subprocess.TimeoutExpired:
                _signal_group(task.pid, signal.SIGKILL)
                code = task.wait()
        _signal_group(task.pid, signal.SIGKILL)  # whatever the task left running in its group
    if interrupted:
        _say("attempt stopped before the task ended")
    record.ended, record.exit_code, record.interrupted = True, code, interrupted
    _recorded(record, args.record)  # if the disk refuses it, the exit code below still tells the worker
    if code is None:
        return 128 + signal.SIGTERM
    return code if code >= 0 else 128 - code


def command_line(python: str, *, record: Path, parent: int, owner: str, grace: float, command: list[str]) -> list[str]:
    """The command that runs ``command`` under this supervisor."""
    options: list[Any] = ["--record", record, "--parent", parent, "--owner", owner, "--grace", grace]
    return [python, "-I", "-S", __file__, *map(str, options), "--", *command]


if __name__ == "__main__":
    sys.exit(main())
