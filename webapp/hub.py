"""The status hub: one per process, the heart of jobpulse.

Sources (executors, the Kubernetes watch, the Redis channel) publish whole
status objects; transports subscribe to one job each and only ever read from
here, so a thousand browsers cost an executor nothing more than one.

Written against stdlib ``threading`` and ``queue``: under the gevent worker
(monkey-patched) they are greenlets, under a threaded WSGI host they are
threads. Each subscription holds at most the latest status: every message is
the whole state, so a slow subscriber gets the latest, never a backlog.

The hub hands changes to :class:`StatusSink` objects, which have one method,
``offer``. A subscription is one; a transport may put its own sink in front
of its subscription (:meth:`StatusHub.subscribe`'s ``sink``). The hub knows
nothing of frames or sockets. A sink's bookkeeping (a message counted) can
wait until every sink has had the change (:func:`after_fan_out`), and be
done for all the sinks at once (:func:`tally_after_fan_out`), so the last
stream of a fan-out waits for the others' writes only. Each fan-out's own
time, from the first sink offered the change to the last, is
``jobpulse_fan_out_seconds``.

An operator's console follows every job at once (:meth:`StatusHub.subscribe_all`):
an :class:`AllRunsSubscription` keeps the latest status per job, at most
:data:`ALL_RUNS_PENDING_JOBS` jobs; past that it drops them all and tells its
reader to read the whole list afresh, so a slow reader never holds a backlog.

At shutdown :meth:`StatusHub.close` may spread the closes over a few seconds
(``over``), in random order, so the clients do not all reconnect to the
process that takes them over in the same instant.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from webapp import metrics
from webapp.errors import RunStoreUnavailable
from webapp.status import JobStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")

Listener = Callable[[JobStatus, JobStatus | None], None]
"""Called with (new status, previous status) after each accepted change."""


class StatusSink(Protocol):
    """Where the hub offers one job's changes: called on the publisher's thread, so it must not block."""

    def offer(self, status: JobStatus) -> None: ...


class _FanOut(threading.local):
    """The work this thread's (greenlet's) current fan-out put off until every sink has been offered the change."""

    deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] | None = None
    tallies: dict[Callable[[list[Any]], None], list[Any]] | None = None
    """Per tally (:func:`tally_after_fan_out`), its items of this fan-out, in the order they came."""


_FAN_OUT = _FanOut()
_FAN_OUT_SECONDS = metrics.FAN_OUT_SECONDS


def after_fan_out(call: Callable[..., None], *args: Any) -> None:
    """Run ``call(*args)`` once the fan-out in progress has offered its change to every sink; outside one, now.

    For a sink's own bookkeeping (a message counted, its delay observed): done
    inside the fan-out it would hold up every sink after it, so the last
    stream would wait for all the others' bookkeeping as well as their writes.
    A value that must be taken at the moment (when a message was written) is
    taken by the caller and passed in ``args``.
    """
    deferred = _FAN_OUT.deferred
    if deferred is None:
        call(*args)
    else:
        deferred.append((call, args))


def tally_after_fan_out(tally: Callable[[list[T]], None], item: T) -> None:
    """Give ``item`` to ``tally``, with the fan-out's other items, once the fan-out is over; outside one, now.

    For bookkeeping that costs less done for many at once than one by one (a
    counter incremented by n, a histogram's observations folded): the sinks
    of a fan-out each add an item, and ``tally`` is called once with them
    all, in the order they came, after every sink has had the change. The
    same ``tally`` object must be passed by each sink (one per kind, made
    once); outside a fan-out it is called at once with ``[item]``.
    """
    tallies = _FAN_OUT.tallies
    if tallies is None:
        tally([item])
        return
    items = tallies.get(tally)
    if items is None:
        tallies[tally] = [item]
    else:
        items.append(item)


class HubClosed(Exception):
    """The process is shutting down; streams should end (WebSocket close 1001)."""


class _Mailbox:
    """What both kinds of subscription share: a reader's wake-up, its heartbeat nudge and its close.

    Flags change under the lock that the reader clears the event under, so no
    wake-up is lost. The reader's ``get`` takes what waits under that lock.
    Slotted, as there is one per open stream.
    """

    __slots__ = ("_closed", "_lock", "_nudged", "_wake", "heartbeat")

    def __init__(self, *, heartbeat: bool) -> None:
        self.heartbeat = heartbeat
        """Whether :meth:`StatusHub.nudge_all` wakes this one (SSE sends keep-alives; WebSocket pings by itself)."""
        self._closed = False
        self._nudged = False
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def nudge(self) -> None:
        """Wake the reader with nothing new: ``get`` returns ``None`` (time for a heartbeat)."""
        with self._lock:
            self._nudged = True
        self._wake.set()

    def close(self) -> None:
        """Wake the reader for good: ``get`` raises :class:`HubClosed` from now on."""
        with self._lock:
            self._closed = True
        self._wake.set()

    def _wait(self, deadline: float | None) -> bool:
        """Wait for a wake-up until ``deadline`` (``time.monotonic``); ``False`` once it has passed."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        self._wake.wait(remaining)
        return True


class Subscription(_Mailbox):
    """One transport's view of one job: a one-slot mailbox that keeps the latest status (a :class:`StatusSink`).

    Cheap on the fan-out path: :meth:`offer` swaps one reference under an
    uncontended lock and sets an event; nothing is queued or copied, and no
    timer is armed per wait (idle streams are woken by the hub's heartbeat,
    :meth:`StatusHub.nudge_all`, one timer for the whole process).
    """

    __slots__ = ("_latest", "job_name")

    def __init__(self, job_name: str, *, heartbeat: bool = False) -> None:
        super().__init__(heartbeat=heartbeat)
        self.job_name = job_name
        self._latest: JobStatus | None = None

    def offer(self, status: JobStatus) -> None:
        """Replace what is waiting with ``status`` (newer ``seq`` wins) and wake the reader."""
        with self._lock:
            if self._latest is None or status.seq >= self._latest.seq:
                self._latest = status
        self._wake.set()

    def get(self, timeout: float | None = None) -> JobStatus | None:
        """The next status; ``None`` when nudged (after the status that waited, if any), or after ``timeout`` seconds.

        A nudge is not always a heartbeat to skip: a WebSocket's parked reader
        (:mod:`webapp.api.ws_reader`) nudges when its client sent something, and
        reads only once woken with ``None``. So a nudge that meets a status waits
        behind it, for the next ``get``, as :meth:`AllRunsSubscription.get` does.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._wake.clear()
                closed = self._closed
                status, self._latest = self._latest, None
                nudged, self._nudged = self._nudged, self._nudged and status is not None
            if closed:
                raise HubClosed(self.job_name)
            if status is not None or nudged:
                return status
            if not self._wait(deadline):
                return None


CLOSE_STEP_SECONDS = 0.01
"""How often a spread-out :meth:`StatusHub.close` closes its next slice of subscriptions."""

ALL_RUNS_PENDING_JOBS = 1000
"""The most jobs an :class:`AllRunsSubscription` holds changes of before it drops them and asks for a fresh list."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunChanges:
    """What an :class:`AllRunsSubscription` had waiting: the latest status of each job that changed."""

    statuses: tuple[JobStatus, ...]
    """Per job the latest, in the order the jobs first changed since the last read."""
    overflowed: bool = False
    """More jobs changed than the mailbox holds: what was waiting was dropped; read the whole list afresh."""


class AllRunsSubscription(_Mailbox):
    """One transport's view of every job: a mailbox of the latest status per job (a :class:`StatusSink`).

    As cheap on the fan-out path as a :class:`Subscription`: :meth:`offer` puts
    one reference in a dict under an uncontended lock and sets an event. At most
    ``capacity`` jobs wait; one more and the mailbox is emptied and marked
    overflowed until read, so memory is bounded however slow the reader is.
    """

    __slots__ = ("_capacity", "_overflowed", "_pending")

    def __init__(self, *, heartbeat: bool = False, capacity: int = ALL_RUNS_PENDING_JOBS) -> None:
        super().__init__(heartbeat=heartbeat)
        self._capacity = capacity
        self._pending: dict[str, JobStatus] = {}
        self._overflowed = False

    def offer(self, status: JobStatus) -> None:
        """Keep ``status`` as its job's latest (newer ``seq`` wins) and wake the reader."""
        with self._lock:
            if not self._overflowed:
                held = self._pending.get(status.job_name)
                if held is None:
                    if len(self._pending) >= self._capacity:
                        self._pending.clear()
                        self._overflowed = True
                    else:
                        self._pending[status.job_name] = status
                elif status.seq >= held.seq:
                    self._pending[status.job_name] = status
        self._wake.set()

    def get(self, timeout: float | None = None) -> RunChanges | None:
        """What waits; ``None`` when nudged (after what waited, if anything), or after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._wake.clear()
                closed = self._closed
                pending, self._pending = self._pending, {}
                overflowed, self._overflowed = self._overflowed, False
                # A nudge waits behind changes (the reader may send none of them: its filter), for the next get.
                nudged, self._nudged = self._nudged, self._nudged and bool(pending or overflowed)
            if closed:
                raise HubClosed("all runs")
            if pending or overflowed:
                return RunChanges(tuple(pending.values()), overflowed=overflowed)
            if nudged or not self._wait(deadline):
                return None


class StatusHub:
    """Latest status per job, and the subscriptions that want to hear of changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, JobStatus] = {}
        self._subscriptions: dict[str, dict[Subscription, StatusSink]] = {}
        """Per job, each subscription and the sink its changes are offered to (itself, or a transport's in front)."""
        self._all_runs: tuple[AllRunsSubscription, ...] = ()
        """Those following every job; replaced (never changed in place) so :meth:`publish` reads it without copying."""
        self._listeners: list[Listener] = []
        self._closed = False

    def add_listener(self, listener: Listener) -> None:
        """Hear of every accepted change (metrics, run store, webhooks, Redis fan-out)."""
        self._listeners.append(listener)

    def get(self, job_name: str) -> JobStatus | None:
        return self._latest.get(job_name)

    def publish(self, status: JobStatus, *, correction: bool = False) -> bool:
        """Take ``status`` if it is newer than what is known; tell subscribers and listeners.

        Returns whether the status was accepted. Older or equal ``seq`` values
        are ignored, so sources may repeat themselves and Redis may echo.
        A finished status takes only itself with new links to its reruns (:meth:`JobStatus.amends`).
        ``correction``: the run store's word after an outage (:meth:`StatusDoor.save_unsaved`) — taken
        even over a final status this process published but the store never took.
        """
        with self._lock:
            previous = self._latest.get(status.job_name)
            final = previous is not None and previous.terminal and not (correction or status.amends(previous))
            if previous is not None and (final or status.seq <= previous.seq):
                return False
            self._latest[status.job_name] = status
            sinks = tuple(self._subscriptions.get(status.job_name, {}).values())
            followers = self._all_runs
        self._fan_out(status, sinks, followers)
        for listener in self._listeners:
            try:
                listener(status, previous)
            except RunStoreUnavailable as error:  # an outage, not a bug: the store says why, no traceback
                logger.warning("hub.listener_failed", extra={"job_name": status.job_name, "error": error.message})
            except Exception:
                logger.exception("hub.listener_failed", extra={"job_name": status.job_name})
        return True

    @staticmethod
    def _fan_out(status: JobStatus, sinks: tuple[StatusSink, ...], followers: tuple[AllRunsSubscription, ...]) -> None:
        """Offer ``status`` to every sink, then do what they put off (:func:`after_fan_out`, its tallies)."""
        if _FAN_OUT.deferred is not None:  # a sink published again, inside a fan-out: the outer one runs it all
            for sink in sinks:
                sink.offer(status)
            for follower in followers:
                follower.offer(status)
            return
        deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        tallies: dict[Callable[[list[Any]], None], list[Any]] = {}
        _FAN_OUT.deferred, _FAN_OUT.tallies = deferred, tallies
        started = time.perf_counter()
        try:
            for sink in sinks:
                sink.offer(status)
            for follower in followers:
                follower.offer(status)
        finally:
            took = time.perf_counter() - started
            _FAN_OUT.deferred = _FAN_OUT.tallies = None
            for call, args in deferred:
                try:
                    call(*args)
                except Exception:  # bookkeeping: its failure must not keep the change from the listeners
                    logger.exception("hub.deferred_failed", extra={"job_name": status.job_name})
            for tally, items in tallies.items():
                try:
                    tally(items)
                except Exception:
                    logger.exception("hub.deferred_failed", extra={"job_name": status.job_name})
            if sinks or followers:
                _FAN_OUT_SECONDS.observe(took)

    def forget(self, job_name: str) -> None:
        """Drop a finished job from memory (the run store still answers for it)."""
        with self._lock:
            if not self._subscriptions.get(job_name):
                self._latest.pop(job_name, None)

    def known_jobs(self) -> list[JobStatus]:
        with self._lock:
            return list(self._latest.values())

    @contextmanager
    def subscribe(
        self,
        job_name: str,
        *,
        heartbeat: bool = False,
        sink: Callable[[Subscription], StatusSink] | None = None,
    ) -> Iterator[Subscription]:
        """Subscribe to one job for the ``with`` block; always unsubscribes on the way out.

        ``heartbeat``: also wake it with ``None`` at each :meth:`nudge_all`.
        ``sink``: given the new subscription, the sink to offer this job's
        changes to instead of it (a transport that delivers some changes
        itself and hands the subscription the rest); by default the
        subscription itself. Nudges and :meth:`close` go to the subscription.
        """
        subscription = Subscription(job_name, heartbeat=heartbeat)
        target: StatusSink = subscription if sink is None else sink(subscription)
        with self._lock:
            if self._closed:
                subscription.close()
            self._subscriptions.setdefault(job_name, {})[subscription] = target
        try:
            yield subscription
        finally:
            with self._lock:
                subscribers = self._subscriptions.get(job_name)
                if subscribers is not None:
                    subscribers.pop(subscription, None)
                    if not subscribers:
                        del self._subscriptions[job_name]

    @contextmanager
    def subscribe_all(
        self, *, heartbeat: bool = False, capacity: int = ALL_RUNS_PENDING_JOBS
    ) -> Iterator[AllRunsSubscription]:
        """Follow every job's changes for the ``with`` block; always unsubscribes on the way out.

        ``heartbeat``: also wake it with ``None`` at each :meth:`nudge_all`.
        ``capacity``: the most jobs its mailbox holds (:class:`AllRunsSubscription`).
        """
        subscription = AllRunsSubscription(heartbeat=heartbeat, capacity=capacity)
        with self._lock:
            if self._closed:
                subscription.close()
            self._all_runs = (*self._all_runs, subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                self._all_runs = tuple(s for s in self._all_runs if s is not subscription)

    def all_runs_subscriber_count(self) -> int:
        return len(self._all_runs)

    def subscriber_count(self, job_name: str | None = None) -> int:
        with self._lock:
            if job_name is not None:
                return len(self._subscriptions.get(job_name, ()))
            return sum(len(s) for s in self._subscriptions.values())

    def nudge_all(self, *, batch: int = 500) -> None:
        """Wake every subscription that wants heartbeats, with nothing new, so each sends its keep-alive.

        In batches, yielding between them (``time.sleep(0)`` lets other
        greenlets or threads run), so a change that arrives meanwhile is not
        held up behind ten thousand pings.
        """
        with self._lock:
            everyone: list[Subscription | AllRunsSubscription] = [
                s for subs in self._subscriptions.values() for s in subs if s.heartbeat
            ]
            everyone.extend(s for s in self._all_runs if s.heartbeat)
        for start in range(0, len(everyone), batch):
            for subscription in everyone[start : start + batch]:
                subscription.nudge()
            time.sleep(0)

    def close(
        self, *, over: float = 0.0, shuffle: Callable[[list[Subscription | AllRunsSubscription]], None] = random.shuffle
    ) -> None:
        """End every subscription (server shutting down); one opened from now on is closed at once.

        ``over``: seconds to spread the closes over, in random order (``shuffle``),
        a slice every :data:`CLOSE_STEP_SECONDS`, so that the clients, which
        reconnect elsewhere, do not all arrive there in the same instant. Returns
        within ``over`` (plus one step); until its close each stream keeps
        receiving changes. ``0``: all at once.
        """
        with self._lock:
            self._closed = True
            everyone: list[Subscription | AllRunsSubscription] = [*self._all_runs]
            everyone.extend(s for subs in self._subscriptions.values() for s in subs)
        if over <= 0 or len(everyone) < 2:
            for subscription in everyone:
                subscription.close()
            return
        shuffle(everyone)
        steps = max(1, min(len(everyone), int(over / CLOSE_STEP_SECONDS)))
        started = time.monotonic()
        for step in range(steps):
            for subscription in everyone[step * len(everyone) // steps : (step + 1) * len(everyone) // steps]:
                subscription.close()
            if step + 1 < steps:
                time.sleep(max(0.0, started + over * (step + 1) / steps - time.monotonic()))
