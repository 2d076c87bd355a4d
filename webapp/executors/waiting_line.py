"""The local runner's slots: at most ``LEGACY_MAX_CONCURRENCY`` runs at once, the others in line, each told its place.

A run that finds every slot taken joins a first-come, first-served line and
waits there (``Queued``, ``WaitingForSlot``) until a run ends and hands it its
slot. Its place (``queue_position``, 1 = next to start) is part of its status,
and it changes each time a run ahead leaves the line: admitted, cancelled, or
let go. Told at each change, a line of n runs draining would cost about n²/2
status changes, each saved and sent to every stream. So a run is told its
place when it joins, and after that by one background pass, at most every
``refresh_seconds``, that tells each waiting run whose place changed its
place now: however many runs left meanwhile, a waiting run gets one change
per pass.

The line knows nothing of statuses: ``tell(run, place)`` writes one (the
runner's, through the door). A run's telling is serialised with its leaving:
once :meth:`WaitingLine.wait_for_slot` returns, no place is told of that run
any more, so the status its runner writes next is the last word.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 0.25
"""The shortest time between two passes that tell waiting runs their new places."""
STOP_SECONDS = 1.0
"""How long :meth:`WaitingLine.stop` waits for a pass under way to end."""


class Waiter(Protocol):
    """What the line needs of a run: whether it was cancelled, whether it was given a slot, and what wakes it."""

    cancelled: bool
    admitted: bool
    wake: threading.Event


W = TypeVar("W", bound=Waiter)


class WaitingLine(Generic[W]):
    """``slots`` slots and a FIFO of runs waiting for one; keeps each waiting run's status told of its place."""

    def __init__(
        self,
        *,
        slots: int,
        tell: Callable[[W, int], None],
        refresh_seconds: float = REFRESH_SECONDS,
        thread_name: str = "queue-places",
    ) -> None:
        """``tell(run, place)`` writes that ``run`` waits at ``place`` (1 = next); called on the run's own thread
        when it joins, and on the line's thread when its place changed."""
        self.slots = slots
        self._tell = tell
        self._refresh = refresh_seconds
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: collections.deque[W] = collections.deque()
        self._told: dict[W, int] = {}
        """The place each waiting run's status says."""
        self._telling: dict[W, threading.Lock] = {}
        """Per waiting run: held while its place is told, so that leaving the line waits for a tell under way."""
        self._moved = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._keep_places, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Tell no more places (the runs are being stopped); returns once a pass under way has ended."""
        self._stopping.set()
        self._moved.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_SECONDS)
            if self._thread.is_alive():
                logger.warning("line.thread_lingering", extra={"thread": self._thread_name})

    # -- slots -----------------------------------------------------------------

    def wait_for_slot(self, run: W) -> bool:
        """Take a free slot, or wait in line for one; ``False`` if ``run.wake`` ended the wait first.

        ``True``: the run holds a slot (its ``wake`` was set to admit it, and
        is still set). ``False``: it was woken by something else (a cancel, a
        stop) and has left the line; it holds no slot.
        """
        with self._lock:
            if self._running < self.slots:
                self._running += 1
                return True
            self._waiting.append(run)
            self._telling[run] = threading.Lock()
        self._tell_place(run, self.place(run))
        run.wake.wait()
        with self._lock:
            admitted = run.admitted
            if not admitted:  # woken by a cancel or a stop: out of the line, so never admitted
                with contextlib.suppress(ValueError):
                    self._waiting.remove(run)
        self._forget(run)
        if not admitted:
            self._moved.set()
        return admitted

    def release(self) -> None:
        """A slot is free: hand it to the first run in line that was not cancelled, else keep it free."""
        with self._lock:
            if self._waiting:
                self._moved.set()
            while self._waiting:
                following = self._waiting.popleft()
                if not following.cancelled:
                    following.admitted = True
                    following.wake.set()
                    return
            self._running -= 1

    def place(self, run: W) -> int | None:
        """Where ``run`` waits now (1 = next to start), or ``None`` if it does not wait."""
        return self._places().get(run)

    def _places(self) -> dict[W, int]:
        """Each waiting run's place now."""
        with self._lock:
            in_line = [run for run in self._waiting if not run.cancelled]
        return {run: place for place, run in enumerate(in_line, start=1)}

    # -- telling places --------------------------------------------------------

    def _tell_place(self, run: W, place: int | None) -> None:
        """Tell ``run`` its ``place`` if it still waits and its status says one further back.

        A place only ever moves forward (nobody joins ahead of a waiting run),
        so a ``place`` computed before a departure is never told over a newer
        one; the departure asked for a pass, which tells the right one.
        """
        with self._lock:
            telling = self._telling.get(run)
        if telling is None or place is None:
            return  # it left the line
        with telling:
            told = self._told.get(run)
            if run.admitted or run.cancelled or run not in self._telling or (told is not None and told <= place):
                return
            self._tell(run, place)
            self._told[run] = place

    def _forget(self, run: W) -> None:
        """``run`` left the line: once a tell under way has ended, none follows."""
        with self._lock:
            telling = self._telling.get(run)
        if telling is None:
            return
        with telling, self._lock:
            del self._telling[run]
            self._told.pop(run, None)

    def _keep_places(self) -> None:
        """One pass per change of the line, at most every ``refresh_seconds``: the places that changed are told."""
        last_pass = time.monotonic() - self._refresh
        while True:
            self._moved.wait()
            if self._stopping.is_set():
                return
            pause = last_pass + self._refresh - time.monotonic()
            if pause > 0 and self._stopping.wait(pause):
                return
            self._moved.clear()
            last_pass = time.monotonic()
            try:
                self._tell_places()
            except Exception:  # a bug must not stop places being told for good
                logger.exception("line.places_failed")

    def _tell_places(self) -> None:
        for run, place in self._places().items():
            if self._stopping.is_set():
                return
            self._tell_place(run, place)
