"""Progress a task reports about itself, on its way from the progress endpoint to the door.

A task ``POST``s ``{done, total, text}`` to its run's progress URL with its
run's own token (both rendered into its manifest's env at launch, see
:func:`webapp.jobspecs.render_job`). Two parts stand between that request and
the door, one of each per process:

- :class:`ProgressTokens` checks the token against the one in the run's
  manifest in the run store (shared by every instance, kept across restarts),
  in constant time, caching a bounded number of tokens in memory. A token is
  good for its own run only; the admin token is none.
- :class:`ProgressCoalescer` keeps a chatty task from flooding the hub: at
  most :data:`WRITES_PER_SECOND` changes per run reach the door. The first
  report of a quiet run is written at once; later ones within the window are
  held (one per run: the latest replaces the one held) and written when the
  window ends, by one flusher thread for the whole process. A report that
  completes the work (``done == total``) may skip the rest of the window once,
  so the last step lands before the run's final status, which keeps it.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from webapp.door import StatusDoor
from webapp.jobspecs import PROGRESS_TOKEN_ENV, container_env
from webapp.runstore import RunStore
from webapp.status import Progress

logger = logging.getLogger(__name__)

WRITES_PER_SECOND = 4.0
"""At most this many progress changes per run reach the door (twice that when the work completes)."""

TOKEN_CACHE_SIZE = 4096
"""Runs whose progress token is kept in memory; older ones are read from the run store again."""

STOP_SECONDS = 1.0


class ProgressTokens:
    """Checks a progress report's token against its run's manifest; a bounded cache in front of the run store."""

    def __init__(self, *, store: RunStore, size: int = TOKEN_CACHE_SIZE) -> None:
        self._store = store
        self._size = size
        self._lock = threading.Lock()
        self._known: OrderedDict[str, str] = OrderedDict()

    def check(self, job_name: str, given: str) -> bool:
        """Whether ``given`` is the run's own progress token (a run launched without one accepts none).

        Raises :class:`~webapp.errors.RunStoreUnavailable` when the token is not cached and the store is down.
        """
        expected = self._token_of(job_name)
        return expected is not None and hmac.compare_digest(given.encode(), expected.encode())

    def _token_of(self, job_name: str) -> str | None:
        with self._lock:
            token = self._known.get(job_name)
            if token is not None:
                self._known.move_to_end(job_name)
                return token
        manifest = self._store.manifest(job_name)
        try:
            token = container_env(manifest).get(PROGRESS_TOKEN_ENV) if manifest else None
        except (KeyError, IndexError, TypeError, AttributeError):  # not a rendered Job manifest
            token = None
        if not token:
            return None
        with self._lock:
            self._known[job_name] = token
            self._known.move_to_end(job_name)
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return token


@dataclasses.dataclass
class _Window:
    """One run's rate window: when its last change was written, and the one report held for later."""

    opened: float
    held: Progress | None = None
    urgent_at: float = float("-inf")
    """When a completing report last skipped the window."""
    busy: bool = True
    """A write of this run is under way: the next one waits, so changes reach the door in order."""


def _completes(progress: Progress) -> bool:
    return progress.total is not None and progress.done >= progress.total


class ProgressCoalescer:
    """Rate-limits and coalesces progress reports per run on their way to the door; one flusher per process."""

    def __init__(
        self,
        *,
        door: StatusDoor,
        per_second: float = WRITES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._door = door
        self._interval = 1.0 / per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._flusher, name="progress-flusher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the flusher (within :data:`STOP_SECONDS`) and write what is held: nothing reported is dropped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        self.flush(everything=True)

    def held(self) -> int:
        """How many runs have a report waiting for their window to end."""
        with self._lock:
            return sum(1 for window in self._windows.values() if window.held is not None)

    # -- reports ---------------------------------------------------------------

    def report(self, job_name: str, progress: Progress) -> None:
        """Take a run's report: written now if its window allows, else held (the latest wins) for the flusher."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(job_name)
            if window is None:
                window = self._windows[job_name] = _Window(opened=now)
            elif self._may_write(window, progress, now):
                self._open(window, now)
            else:
                window.held = progress
                window = None
        if window is None:
            self._wake.set()
            return
        self._write(job_name, progress, window)

    def flush(self, *, everything: bool = False) -> float | None:
        """Write every held report whose window has ended (``everything``: all of them, now).

        Returns the seconds until the next window ends, or ``None`` when nothing waits. The flusher
        calls this; tests call it with an injected clock.
        """
        now = self._clock()
        due: list[tuple[str, _Window, Progress]] = []
        next_at: float | None = None
        with self._lock:
            for job_name, window in list(self._windows.items()):
                if window.busy:
                    continue
                if window.held is None:
                    if now - window.opened >= self._interval:
                        del self._windows[job_name]  # quiet again: its next report is written at once
                    else:
                        next_at = _earliest(next_at, window.opened + self._interval)
                    continue
                if everything or self._may_write(window, window.held, now):
                    due.append((job_name, window, window.held))
                    self._open(window, now)
                else:
                    next_at = _earliest(next_at, self._due_at(window, window.held))
        for job_name, window, progress in due:
            self._write(job_name, progress, window)
        if due:
            return 0.0  # look again: reports may have come in meanwhile
        return None if next_at is None else max(0.0, next_at - now)

    def _may_write(self, window: _Window, progress: Progress, now: float) -> bool:
        return not window.busy and now >= self._due_at(window, progress)

    def _due_at(self, window: _Window, progress: Progress) -> float:
        due = window.opened + self._interval
        if _completes(progress):
            due = min(due, window.urgent_at + self._interval)
        return due

    def _open(self, window: _Window, now: float) -> None:
        """Start a write of ``window``'s run (under the lock): a new window, nothing held."""
        if now < window.opened + self._interval:
            window.urgent_at = now
        window.opened = now
        window.held = None
        window.busy = True

    def _write(self, job_name: str, progress: Progress, window: _Window) -> None:
        try:
            self._door.change(job_name, progress=progress)
        except Exception as error:  # the door keeps what the store refused; anything else must not stop the flusher
            logger.warning("progress.write_failed", extra={"job_name": job_name, "error": str(error)})
        finally:
            with self._lock:
                window.busy = False
            self._wake.set()  # the flusher writes what came in meanwhile, and forgets the window once it is quiet

    def _flusher(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                delay = self.flush()
            except Exception:
                logger.exception("progress.flush_failed")
                delay = self._interval
            if delay != 0.0:
                self._wake.wait(delay)


def _earliest(current: float | None, candidate: float) -> float | None:
    return candidate if current is None else min(current, candidate)
