"""Logs that outlive the pod: the last part of each finished run's output, kept in the run store.

A pod's log goes with the pod (the Job's ``ttlSecondsAfterFinished``, garbage
collection, ``kubectl delete``), and a local run's output lives only on the
instance that ran it. So when the hub sees a run finish, :class:`LogTailKeeper`
reads the last ``LOG_TAIL_BYTES`` of its output from its executor and saves
them with the run (:class:`~webapp.runstore.LogTails`), where run control
finds them once the executor has nothing left to show.

When the executor has nothing left to read (a pod deleted the moment its Job
finished, ``ttlSecondsAfterFinished: 0`` on a busy cluster), the keeper keeps
what a live follow of the run read instead: a follow of this process that saw
the run end hands its recent output over (:meth:`LogTailKeeper.take_followed`,
wired by :func:`~webapp.runtime.build_runtime` to
:meth:`~webapp.log_follow.LogFollowers.hand_output_to`), in memory, so
nothing is read from the API server again. The executor's read comes first
when it has the output: a follow holds only what it read since it began (its
first viewer's ``tail``, at most ``RECENT_BYTES``), the executor the run's
whole end. A follow's output is saved without a claim (the instance that
claimed the run may have found the pod gone): the first save wins.

Off the hub's publish path: the hub listener only queues the run's name (a
bounded queue; a full one drops the run and says so), and one worker thread
reads and saves. Once per run across instances: a pod's log can be read by
any instance, so an instance claims the run in the store first and only the
claimant fetches it; a legacy run's output is read where it is (a local read,
empty on every instance but the one that ran it) and the first save wins.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from webapp.errors import JobpulseError
from webapp.runstore import LogTails
from webapp.status import JobStatus, finished_by

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
"""Finished runs waiting for their tail to be read; beyond, a run's tail is not kept (and the log says so)."""

CLAIM_SECONDS = 60.0
"""How long a claim to save a run's tail holds other instances off; an instance that died lets go after it."""

LOCAL_OUTPUT_MODES = frozenset({"legacy"})
"""Modes whose output only the instance that ran the run has: every instance reads its own, no claim needed."""


FOLLOWED_WAITING = 64
"""Followed outputs held for a run whose finish is still to come here; beyond, the oldest is let go."""

FOLLOWED = ""
"""The mode queued with a run whose output a live follow handed over (:meth:`LogTailKeeper.take_followed`)."""


class OutputSource(Protocol):
    """What the keeper asks of an executor: the last lines of a run's output."""

    def logs(self, job_name: str, *, tail_lines: int) -> str: ...


def last_bytes(text: str, limit: int) -> str:
    """The end of ``text`` within ``limit`` UTF-8 bytes, from the start of a line when the cut falls inside one."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    if limit <= 0:
        return ""
    start = len(data) - limit
    cut = data[start:]
    newline = cut.find(b"\n")
    if data[start - 1 : start] != b"\n" and 0 <= newline < len(cut) - 1:  # the cut falls inside a line
        cut = cut[newline + 1 :]
    return cut.decode("utf-8", "ignore")  # a cut inside one long line may split a character: drop its part


def last_lines(text: str, count: int) -> str:
    """The last ``count`` lines of ``text`` (none for 0), as an executor's ``logs(tail_lines=count)`` gives."""
    if count <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-count:])


class LogTailKeeper:
    """Saves the tail of every run that finishes, once per run across instances (a runtime service)."""

    name = "log-tails"

    def __init__(
        self,
        *,
        store: LogTails,
        sources: Mapping[str, OutputSource],
        max_bytes: int,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._store = store
        self._sources = sources
        self._max_bytes = max_bytes
        self._finished: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._remembered = queue_size
        self._followed: OrderedDict[str, str] = OrderedDict()
        """Output live follows handed over, by run, not yet saved or given up (the newest ``FOLLOWED_WAITING``)."""
        self._followed_lock = threading.Lock()
        self._looked_at: OrderedDict[str, tuple[bool, str]] = OrderedDict()
        """Runs whose finish the worker handled: whether it saved their tail, and their mode (the newest ones)."""

    def on_status(self, status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: a run that has just finished is queued for its tail to be kept (never blocks)."""
        if not self._max_bytes or not finished_by(status, previous):
            return
        if status.mode not in self._sources:
            return
        try:
            self._finished.put_nowait((status.job_name, status.mode))
        except queue.Full:
            logger.warning("log_tail.dropped", extra={"job_name": status.job_name, "mode": status.mode})

    def take_followed(self, job_name: str, output: str) -> None:
        """A live follow of the run saw it end: keep ``output`` if its executor has none (never blocks).

        The follow's hand-over (:meth:`~webapp.log_follow.LogFollowers.hand_output_to`). Saved
        by the worker: at once if it has already handled the run's finish and kept nothing,
        else when it does and the executor has nothing left.
        """
        if not self._max_bytes or not output:
            return
        with self._followed_lock:
            self._followed[job_name] = last_bytes(output, self._max_bytes)
            self._followed.move_to_end(job_name)
            while len(self._followed) > FOLLOWED_WAITING:
                self._followed.popitem(last=False)
        try:
            self._finished.put_nowait((job_name, FOLLOWED))
        except queue.Full:  # its output waits in _followed for the run's finish, if that is still to come
            logger.warning("log_tail.dropped", extra={"job_name": job_name, "mode": FOLLOWED})

    def start(self) -> None:
        if self._thread is None and self._max_bytes:
            self._thread = threading.Thread(target=self.run, name="log-tail-keeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker: the run being read is finished, the runs still queued are not kept."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # a full queue: the worker is busy and sees _stopping next
            self._finished.put_nowait(None)  # wakes a waiting worker
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        left = self._finished.qsize()
        if left > 1:
            logger.info("log_tail.not_kept_at_exit", extra={"count": left - 1})

    def unready_reason(self) -> str | None:
        return None  # a tail not kept costs the logs of a finished run, not the service

    def run(self) -> None:
        while not self._stopping.is_set():
            item = self._finished.get()
            if item is None or self._stopping.is_set():
                return
            job_name, mode = item
            try:
                if mode == FOLLOWED:
                    self.keep_followed(job_name)
                else:
                    self.keep(job_name, mode=mode)
            except JobpulseError as error:  # the store or the executor says why (Redis down, API server away)
                logger.warning("log_tail.failed", extra={"job_name": job_name, "mode": mode, "error": error.message})
            except Exception:
                logger.exception("log_tail.failed", extra={"job_name": job_name, "mode": mode})

    def keep(self, job_name: str, *, mode: str) -> bool:
        """Read the run's tail from its executor and save it; ``False`` if another instance does or there is none.

        When the executor has nothing (the pod is gone), cannot be read, or another instance
        claimed the run, what a live follow of this process handed over is saved instead
        (first save wins), if it has.
        """
        source = self._sources.get(mode)
        if source is None:
            return False
        saved = False
        try:
            text = ""
            failure: JobpulseError | None = None
            try:
                if mode in LOCAL_OUTPUT_MODES or self._store.claim_log_tail(job_name, lease_seconds=CLAIM_SECONDS):
                    # every line has at least its newline: this many lines hold at least max_bytes, if there are
                    text = last_bytes(source.logs(job_name, tail_lines=self._max_bytes), self._max_bytes)
            except JobpulseError as error:  # the API server or the store is away: a follow may have the output
                failure = error
            if text:
                saved = self._save(job_name, text, mode=mode)
                self._take_followed(job_name)  # the executor's tail is kept: the follow's is not needed
            elif (followed := self._take_followed(job_name)) is not None:
                saved = self._save(job_name, followed, mode=mode, source="follow")
            if failure is not None and not saved:
                raise failure
        finally:
            self._looked_at[job_name] = (saved, mode)
            self._looked_at.move_to_end(job_name)
            while len(self._looked_at) > self._remembered:
                self._looked_at.popitem(last=False)
        return saved

    def keep_followed(self, job_name: str) -> bool:
        """Save what a live follow handed over, if the run's finish was handled here and kept nothing.

        A run whose finish is still to come keeps its follow's output waiting for :meth:`keep`.
        """
        looked_at = self._looked_at.get(job_name)
        if looked_at is None:
            return False  # the finish is still queued (or was never heard here): keep() takes it
        kept, mode = looked_at
        followed = self._take_followed(job_name)
        if kept or followed is None:
            return False
        return self._save(job_name, followed, mode=mode, source="follow")

    def _take_followed(self, job_name: str) -> str | None:
        with self._followed_lock:
            return self._followed.pop(job_name, None)

    def _save(self, job_name: str, text: str, *, mode: str, source: str = "executor") -> bool:
        saved = self._store.save_log_tail(job_name, text)
        if saved:
            extra = {"job_name": job_name, "mode": mode, "bytes": len(text.encode("utf-8")), "source": source}
            logger.info("log_tail.saved", extra=extra)
        return saved
