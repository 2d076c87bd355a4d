"""Admitting runs that wait for capacity: one admitter per process hands them to their executors in turn.

With ``MAX_QUEUED_JOBS``, a launch over ``MAX_ACTIVE_JOBS`` is recorded as
waiting (``Queued``, ``WaitingForCapacity``) instead of refused
(:mod:`webapp.launcher`). The line is the run store's
(:meth:`~webapp.runstore.Runs.waiting`, oldest first): shared by every
instance, kept across restarts, and invisible to the executors until a run is
admitted. The :class:`Admitter` makes a pass when a run finishes or joins or
leaves the line (its hub listener), and every ``PASS_SECONDS`` anyway; a pass

1. admits the oldest waiting runs while fewer than ``MAX_ACTIVE_JOBS``
   admitted runs are unfinished. Each is claimed first
   (:meth:`~webapp.runstore.Runs.claim_admission`, a lease: one instance
   admits it), handed to its executor by the launcher
   (:meth:`~webapp.launcher.Launcher.admit`), then marked admitted
   (:meth:`~webapp.runstore.Runs.admit_run`). A run another instance is
   admitting ends the pass: nobody is admitted past it. So does a run its
   executor cannot take now: the launcher puts it back in line, for a later pass.
2. tells each waiting run whose place changed its place now
   (``queue_position``, 1 = next), through the door, only if the run still
   waits when the change is saved.

Passes are at most every ``REFRESH_SECONDS`` apart: however many runs finish
in a burst, a waiting run gets one change per pass (as in the local runner's
line, :mod:`webapp.executors.waiting_line`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from webapp.door import StatusDoor
from webapp.errors import RunStoreUnavailable
from webapp.identity import process_owner
from webapp.runstore import awaits_admission
from webapp.status import JobStatus, finished_by

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 0.25
"""The shortest time between two passes."""
PASS_SECONDS = 2.0
"""A pass at least this often, woken or not (a run another instance admitted, a store that came back)."""
ADMISSION_LEASE_SECONDS = 30.0
"""How long a claim to admit a run holds: an admitter that died meanwhile lets another admit it after this."""
STOP_SECONDS = 1.0
"""How long :meth:`Admitter.stop` waits for a pass under way to end."""


class Admits(Protocol):
    """What the admitter asks of the launcher."""

    def admit(self, job_name: str) -> JobStatus | None:
        """Hand a waiting run to its executor; its status (waiting again if the executor cannot take it now)."""

    def waiting_fields(self, place: int) -> dict[str, Any]:
        """The status fields of a run waiting at ``place``."""


class Admitter:
    """Admits waiting runs as capacity frees up, and keeps their places told."""

    def __init__(
        self,
        *,
        door: StatusDoor,
        launcher: Admits,
        max_active: int,
        refresh_seconds: float = REFRESH_SECONDS,
        pass_seconds: float = PASS_SECONDS,
        lease_seconds: float = ADMISSION_LEASE_SECONDS,
    ) -> None:
        """``max_active``: ``MAX_ACTIVE_JOBS`` (0: no limit, every waiting run is admitted)."""
        self.owner = process_owner()
        self._door = door
        self._store = door.store
        self._launcher = launcher
        self._max_active = max_active
        self._refresh = refresh_seconds
        self._pass_seconds = pass_seconds
        self._lease_seconds = lease_seconds
        self._unmarked: set[str] = set()
        """Runs this admitter handed to their executors whose admission the store has not taken yet (an outage)."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._admit_in_turn, name="admission", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Admit nothing more; returns once a pass under way has ended (its run handed over, or not yet claimed)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_SECONDS)
            if self._thread.is_alive():
                logger.warning("admission.thread_lingering")

    def on_status(self, status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: a run finished, or joined or left the line: make a pass soon."""
        finished = finished_by(status, previous)
        if finished or awaits_admission(status) != (previous is not None and awaits_admission(previous)):
            self._wake.set()

    def _admit_in_turn(self) -> None:
        last_pass = time.monotonic() - self._refresh
        while not self._stopping.is_set():
            self._wake.wait(self._pass_seconds)
            pause = last_pass + self._refresh - time.monotonic()
            if self._stopping.is_set() or (pause > 0 and self._stopping.wait(pause)):
                return
            self._wake.clear()
            last_pass = time.monotonic()
            try:
                self.make_pass()
            except RunStoreUnavailable as error:  # the store says why (disk full, Redis down): no traceback
                logger.warning("admission.failed", extra={"error": error.message})
            except Exception:  # a bug must not stop admissions for good
                logger.exception("admission.failed")

    # -- one pass --------------------------------------------------------------

    def make_pass(self) -> None:
        """Admit what capacity allows, oldest first, then tell the runs still waiting their places."""
        for job_name in list(self._unmarked):
            self._mark_admitted(job_name)
        waiting = [status for status in self._store.waiting() if status.job_name not in self._unmarked]
        admitted = 0
        for status in waiting[: self._free_slots(len(waiting))]:
            if self._stopping.is_set():
                return
            if not self._store.claim_admission(status.job_name, owner=self.owner, lease_seconds=self._lease_seconds):
                break  # another instance is admitting it: it counts as active in the next pass
            if (now := self._launcher.admit(status.job_name)) is not None and awaits_admission(now):
                self._wake.clear()  # (its return to the line woke us: the next pass is the regular one)
                break  # its executor cannot take it now: it waits on, and so does everyone behind it
            self._unmarked.add(status.job_name)
            self._mark_admitted(status.job_name)
            admitted += 1
        self._tell_places(waiting[admitted:])

    def _free_slots(self, waiting: int) -> int:
        """How many waiting runs may be admitted now (read after the line, so a run admitted meanwhile counts)."""
        if not self._max_active:
            return waiting
        active = self._store.count_unfinished() - self._store.count_waiting() + len(self._unmarked)
        return max(0, self._max_active - active)

    def _mark_admitted(self, job_name: str) -> None:
        try:
            self._store.admit_run(job_name)
        except RunStoreUnavailable as error:  # its executor has it: only the store's mark is left to write
            logger.warning("admission.unmarked", extra={"job_name": job_name, "error": error.message})
            return
        self._unmarked.discard(job_name)

    def _tell_places(self, line: list[JobStatus]) -> None:
        for place, status in enumerate(line, start=1):
            if self._stopping.is_set():
                return
            if status.queue_position != place:
                self._door.change(status.job_name, only_if=awaits_admission, **self._launcher.waiting_fields(place))
