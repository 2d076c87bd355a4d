"""The one door for statuses: every change of every run's status goes through :class:`StatusDoor`.

A source (the Kubernetes watch, the legacy runners, a cancel, dual mode) says
which fields changed; the door, under a lock of that job's own,

1. reads the current status (the hub's, else the run store's),
2. applies the change (:meth:`JobStatus.evolve`: a terminal status stays
   terminal, ``seq`` grows by one, ``history`` records a new phase),
3. saves it in the run store, which takes it only if it is newer than what it
   holds, and
4. publishes it, once: into this process's hub (which tells the streams and
   the listeners) and, for statuses other instances cannot see by themselves,
   to the relay between instances.

``seq`` comes from the shared run store, not from each process: when the
store refuses a save because another instance got there first, the door reads
the store's status and applies the change to that. Two instances watching the
same Job therefore give the same status the same ``seq``.

A change the store refuses for an outage (disk full, Redis down) is still
published, and its fields are kept: :meth:`StatusDoor.save_unsaved` (and the
job's next change) applies them again to what the store holds by then —
another instance may have moved the run on meanwhile — under a ``seq``
above every one this process published, so no instance's change is lost and
every client sees the seqs grow. A source that asked for ``durable=True``
(it must not act before the store knows) gets the error instead, and nothing
moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from webapp.errors import RunStoreUnavailable
from webapp.hub import StatusHub
from webapp.runstore import RunStore
from webapp.runstore.backlog import StatusBacklog
from webapp.status import JobStatus, Phase

logger = logging.getLogger(__name__)

OPERATOR_CANCEL: Mapping[str, Any] = MappingProxyType(
    {"status": Phase.CANCELLED, "reason": "Cancelled", "message": "cancelled by an operator"}
)
"""The change an operator's cancel makes, whoever carries it out."""
CANCEL_REQUESTED: Mapping[str, Any] = MappingProxyType(
    {
        "reason": "Cancelling",
        "message": "an operator asked to cancel it; its pods are being stopped",
        "cancel_requested": True,
    }
)
"""Said before a Kubernetes Job is deleted for a cancel, so that every instance's watch knows why it went."""

SAVE_ATTEMPTS = 5
"""How many times a change is applied again to a status another instance saved meanwhile."""

Relay = Callable[[JobStatus], None]
"""Hands a status this process wrote to the other instances (the Redis status channel)."""


class _JobLocks:
    """One lock per job, held only while someone uses it (no lock outlives its last holder)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, job_name: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(job_name) or (threading.Lock(), 0)
            self._locks[job_name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[job_name]
                if users == 1:
                    del self._locks[job_name]
                else:
                    self._locks[job_name] = (lock, users - 1)


class StatusDoor:
    def __init__(self, *, hub: StatusHub, store: RunStore, relay: Relay | None = None) -> None:
        self.hub = hub
        self.store = store
        self.relay = relay
        """Set once at start-up when statuses must reach other instances (``REDIS_URL``)."""
        self._locks = _JobLocks()
        self._unsaved = StatusBacklog(current=hub.get)
        self._unsaved_fields: dict[str, dict[str, Any]] = {}
        """Per job, the fields of this process's changes the store refused (guarded by the job's lock)."""
        self._unsaved_base: dict[str, int] = {}
        """Per job, the seq of the saved status the first refused change was made from."""
        self._unsaved_error: str | None = None

    # -- reading ----------------------------------------------------------------

    def current(self, job_name: str) -> JobStatus | None:
        """The newest status this process knows: the hub's, else the run store's."""
        return self.hub.get(job_name) or self.store.get(job_name)

    # -- a run's first status ---------------------------------------------------------

    def open(self, status: JobStatus, *, manifest: dict[str, Any] | None, client: str | None) -> None:
        """Record a new run before its executor starts it (raises :class:`RunStoreUnavailable`); not published yet."""
        self.store.save(status, manifest=manifest, client=client)

    def announce(self, status: JobStatus) -> JobStatus:
        """Publish a run's first status once its executor has it (a no-op if a newer one is out already)."""
        with self._locks.hold(status.job_name):
            self._publish(status)
        return self.current(status.job_name) or status

    def withdraw(self, job_name: str) -> None:
        """Forget a run whose executor could not start it: nothing remains of it."""
        self.store.delete(job_name)

    # -- every later change -----------------------------------------------------------

    def change(
        self,
        job_name: str,
        *,
        durable: bool = False,
        manifest: dict[str, Any] | None = None,
        only_mode: str | None = None,
        default: Callable[[], JobStatus] | None = None,
        observed: str | None = None,
        only_if: Callable[[JobStatus], bool] | None = None,
        known: JobStatus | None = None,
        **fields: Any,
    ) -> JobStatus | None:
        """Apply ``fields`` to the run's status, save and publish the result; return the run's status now.

        ``None`` if the run is unknown (and no ``default`` says where it starts) or not of ``only_mode``.
        ``durable``: raise :class:`RunStoreUnavailable` if the store refuses, and publish nothing.
        ``manifest``: saved with the status (a new version of the run's manifest).
        ``observed``: the version of the object the fields were read from (a Job's ``resourceVersion``): a
        change read from an older version than the status's own is stale (another instance's watch is
        ahead of this one's), and changes nothing.
        ``only_if``: apply the change only to a status it holds for, checked again on the store's copy when
        another instance wrote first; ``None`` when it does not hold.
        ``known``: a status of this run this process saved itself (a launch's first, before it is announced):
        taken as current when the hub has none, instead of reading it back from the store. The store still
        takes the change only over an older status; when another instance wrote meanwhile, the change is
        applied to the store's copy, as always.
        """
        with self._locks.hold(job_name):
            if job_name in self._unsaved_fields:  # write what the store refused before, if it takes it now
                with contextlib.suppress(RunStoreUnavailable):
                    self._save_refused(job_name)
            current = self.hub.get(job_name) or known or self.store.get(job_name)
            unrecorded = current is None and default is not None
            if unrecorded:
                assert default is not None
                current = default()
            if current is None or (only_mode is not None and current.mode != only_mode):
                return None
            for _ in range(SAVE_ATTEMPTS):
                if only_if is not None and not only_if(current):
                    return None
                changed = current if _older(observed, current.observed) else current.evolve(**fields)
                if changed is not current and observed is not None:
                    changed = dataclasses.replace(changed, observed=observed)
                if changed is current and not unrecorded:
                    if self.hub.get(job_name) is not None or not current.terminal:
                        self.hub.publish(current)  # the store's copy may be newer than the hub's: catch the hub up
                    return current
                unrecorded = False
                refused = {**fields, "observed": observed} if observed is not None else fields
                if self._save(changed, fields=refused, manifest=manifest, durable=durable):
                    self._publish(changed)
                    return changed
                stored = self.store.get(job_name)  # another instance moved it on: apply the change to that
                if stored is None:
                    return None
                current = stored
            logger.warning("door.contended", extra={"job_name": job_name, "seq": current.seq})
            if durable:
                raise RunStoreUnavailable(f"the run store kept refusing the change of {job_name}: others moved it on")
            self.hub.publish(current)
            return current

    def _save(
        self, status: JobStatus, *, fields: dict[str, Any], manifest: dict[str, Any] | None, durable: bool
    ) -> bool:
        """Save ``status``; whether the store took it (``False``: it holds a newer one).

        An outage keeps the change's ``fields`` to apply again later, and counts as taken (unless ``durable``).
        """
        try:
            taken = self.store.save(status, manifest=manifest)
        except RunStoreUnavailable as error:
            if durable:
                raise
            self._unsaved.keep(status)
            self._unsaved_fields.setdefault(status.job_name, {}).update(fields)
            self._unsaved_base.setdefault(status.job_name, status.seq - 1)
            self._unsaved_error = error.message
            logger.warning(
                "store.save_failed",
                extra={
                    "job_name": status.job_name,
                    "mode": status.mode,
                    "pipeline_run_id": status.pipeline_run_id,
                    "status": status.status.value,
                    "error": error.message,
                },
            )
            return True
        return taken

    def _publish(self, status: JobStatus) -> None:
        if self.hub.publish(status) and self.relay is not None:
            self.relay(status)

    # -- changes the store refused ----------------------------------------------------

    def save_unsaved(self) -> None:
        """Write the backlog of changes the store refused; what fails again stays for the next try."""
        if not len(self._unsaved):
            return
        try:
            self._unsaved.drain(self._save_late)
        except RunStoreUnavailable as error:
            self._unsaved_error = error.message

    def _save_late(self, status: JobStatus) -> None:
        with self._locks.hold(status.job_name):
            self._save_refused(status.job_name)

    def _save_refused(self, job_name: str) -> None:
        """Apply the fields the store refused to what it holds now, and save and publish that (the job's lock held).

        Raises :class:`RunStoreUnavailable` while the store still refuses: the fields stay for the next try.
        """
        fields = self._unsaved_fields.get(job_name, {})
        base = self._unsaved_base.get(job_name)
        published = self.hub.get(job_name)
        floor = published.seq if published is not None else 0
        written: JobStatus | None = None
        for _ in range(SAVE_ATTEMPTS):
            stored = self.store.get(job_name)
            unmoved = stored is None or stored.seq == base  # nobody else wrote meanwhile: ours go in as they are
            if unmoved and published is not None and self.store.save(published):
                written = published
                break
            if stored is None:  # gone (withdrawn, purged) meanwhile
                break
            merged = stored.evolve(**fields)
            if merged.seq <= floor:  # above every seq this process published: each client sees them grow
                merged = dataclasses.replace(merged, seq=floor + 1)
            if stored.terminal:  # another instance finished it: the store's word stands
                written = merged
                break
            if self.store.save(merged):
                written = merged
                break
        self._unsaved_fields.pop(job_name, None)
        self._unsaved_base.pop(job_name, None)
        self._unsaved.forget(job_name)
        if written is None:
            return
        if (written is published or self.hub.publish(written, correction=True)) and self.relay is not None:
            self.relay(written)  # again, if it went out before: a status relayed while the store refused it may
            # have reached an instance that re-synced from the store before this save
        logger.info(
            "store.saved_late",
            extra={"job_name": job_name, "mode": written.mode, "status": written.status.value, "seq": written.seq},
        )

    def holds_unsaved(self, job_name: str) -> bool:
        return self._unsaved.holds(job_name)

    def unsaved_reason(self) -> str | None:
        """Why the process is not ready while changes wait to be saved, or ``None``."""
        if unsaved := len(self._unsaved):
            return f"{unsaved} status change(s) not saved yet ({self._unsaved_error})"
        return None

    def report_unsaved_at_exit(self) -> None:
        if unsaved := self._unsaved.job_names():
            logger.error(
                "store.unsaved_at_exit",
                extra={"job_names": unsaved, "count": len(unsaved), "error": self._unsaved_error},
            )


def _older(observed: str | None, than: str | None) -> bool:
    """Whether version ``observed`` comes before ``than`` (Kubernetes resource versions compare as integers)."""
    if observed is None or than is None or not observed.isdigit() or not than.isdigit():
        return False
    return int(observed) < int(than)
