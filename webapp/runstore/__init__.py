"""The run store: launches and statuses that outlive Jobs, processes and restarts.

A finished Job may be deleted by its ``ttlSecondsAfterFinished`` and the
process may restart; the run store keeps each run's last status (and, for
runs this host executes, the rendered manifest to resume them) and the client
address that launched it (for each client's fair share of ``MAX_ACTIVE_JOBS``),
plus the idempotency keys that make a double click launch one task, the
leases that let one process at a time execute a run, dual mode's comparisons,
the outbox of completion webhooks, the audit trail of admin actions and the
last part of each finished run's output (its log tail, kept as long as the
run). SQLite by default; Redis when several
instances share the work.

The protocol is cut by concern (:class:`Runs`, :class:`IdempotencyKeys`,
:class:`Leases`, :class:`Comparisons`, :class:`WebhookOutbox`,
:class:`Audit`, :class:`LogTails`, :class:`StoreConnection`); :class:`RunStore` is all of them, and a part that
needs one concern takes only that one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from webapp.comparison import Comparison
from webapp.status import JobStatus, Phase, format_time, parse_time

WAITING_FOR_CAPACITY = "WaitingForCapacity"
"""The reason of a run accepted while ``MAX_ACTIVE_JOBS`` runs were unfinished: it waits to be admitted."""


RECENT_SCAN_LIMIT = 5000
"""At most how many of the newest runs a store without an index by status or spec reads to filter them."""


def awaits_admission(status: JobStatus) -> bool:
    """Whether ``status`` says its run waits for capacity (``Queued``, ``WaitingForCapacity``), not yet executed.

    A run first saved so waits for admission in the run store (:meth:`Runs.waiting`) until
    :meth:`Runs.admit_run` hands it on or it finishes (a cancel).
    """
    return status.status == Phase.QUEUED and status.reason == WAITING_FOR_CAPACITY


def just_admitted(status: JobStatus) -> bool:
    """Whether the run is as :meth:`~webapp.launcher.Launcher.admit` leaves it: out of the line, ``Queued`` with no
    reason, its executor not told yet (or not yet moved on by it)."""
    return status.status == Phase.QUEUED and status.reason is None


def launch_began(status: JobStatus) -> datetime:
    """When the hand-over of the run to its executor began, as far as its status tells.

    Its creation; or, for a run that waited for capacity and was just admitted (``Queued`` with no reason:
    :meth:`~webapp.launcher.Launcher.admit` takes it out of the line before its executor has it), its
    admission. Until the hand-over has had time to end, the run is being launched, not an orphan.
    """
    return status.updated_at if just_admitted(status) else status.created_at


class PendingWebhook:
    """A completion webhook waiting to be delivered (the outbox row)."""

    def __init__(self, *, job_name: str, body: str, attempts: int) -> None:
        self.job_name = job_name
        self.body = body
        self.attempts = attempts


DELIVERED, GIVEN_UP = 1, 2
"""How an outbox row marks a webhook it is done with (0: still to send); both stores keep these values."""


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """Where a run's completion webhook stands, for the console: read from its outbox row."""

    state: str
    """``pending`` (not sent yet), ``failing`` (an attempt failed; it will be tried again), ``delivered``, or
    ``given_up`` (its last attempt failed too; ``last_error`` says how)."""
    attempts: int
    """Failed attempts so far."""
    last_error: str | None

    @classmethod
    def of_row(cls, *, done: int, attempts: int, last_error: str | None) -> WebhookDelivery:
        """The delivery an outbox row describes: ``done`` is its :data:`DELIVERED` / :data:`GIVEN_UP` mark, else 0.

        An empty ``last_error`` is none.
        """
        error = last_error or None
        state = (
            "given_up"
            if done == GIVEN_UP
            else "delivered"
            if done
            else "failing"
            if error is not None or attempts > 0
            else "pending"
        )
        return cls(state=state, attempts=attempts, last_error=error)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "attempts": self.attempts, "last_error": self.last_error}


@dataclasses.dataclass(frozen=True)
class AdminAction:
    """One admin action in the audit trail: who did what to which run, when, and how it ended.

    Never the token: an operator is known by name only.
    """

    actor: str
    """The operator's name (``ADMIN_TOKENS``; ``admin`` for ``ADMIN_TOKEN``)."""
    action: str
    """What was asked: ``launch``, ``cancel``."""
    target: str
    """The run: its job name, or the spec asked for when no run came of it."""
    status: int
    """The HTTP status of the answer."""
    error: str | None
    """The answer's error code (``conflict``, ``validation_error``…); ``None`` when it succeeded."""
    at: datetime
    id: int | None = None
    """Given by the store when it records the action; increases with each one recorded."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": format_time(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": {"status": self.status, "error": self.error},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdminAction:
        at = parse_time(data["at"])
        if at is None:
            raise ValueError("an admin action has a time")
        return cls(
            id=data.get("id"),
            at=at,
            actor=data["actor"],
            action=data["action"],
            target=data["target"],
            status=int(data["outcome"]["status"]),
            error=data["outcome"]["error"],
        )


class IdempotencyClaim:
    """The outcome of claiming an ``Idempotency-Key``: ours, or someone's earlier job."""

    def __init__(self, *, won: bool, job_name: str, fingerprint: str, claimed_at: float) -> None:
        self.won = won
        self.job_name = job_name
        self.fingerprint = fingerprint
        self.claimed_at = claimed_at
        """When the key was bound to ``job_name`` (``time.time()``)."""


class Runs(Protocol):
    """Each run's last status, the manifest to resume it and the client that launched it."""

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None, client: str | None = None) -> bool:
        """Insert or update a run; ``False`` if the store refused it, holding a newer ``seq`` or a finished run.

        A finished run takes only the same outcome again with a newer ``seq``: its links to its reruns
        (:meth:`JobStatus.amends`; the door writes nothing else over a finished status).

        So the first writer of each ``seq`` wins, whichever instance it runs in.

        ``client``, the address that launched the run, is recorded when the run is first saved; so is whether
        it waits for admission (:func:`awaits_admission` of its first status).
        """

    def get(self, job_name: str) -> JobStatus | None: ...

    def recent(self, limit: int, *, statuses: Collection[Phase] = (), specs: Collection[str] = ()) -> list[JobStatus]:
        """At most ``limit`` runs, newest first; with ``statuses`` or ``specs``, only those with one of them.

        An empty ``statuses`` or ``specs`` does not filter. SQLite filters in its query; Redis, which indexes
        runs by creation time only, reads the newest :data:`RECENT_SCAN_LIMIT` runs at most to find them.
        """

    def unfinished(self, *, mode: str | None = None) -> list[JobStatus]:
        """Runs handed to their executor and not yet terminal, oldest first: not those waiting for admission."""

    def count_unfinished(self, *, client: str | None = None) -> int:
        """Runs not yet terminal, those waiting for admission included: all of them, or those ``client`` launched."""

    def waiting(self) -> list[JobStatus]:
        """Runs waiting for admission (see :func:`awaits_admission`), oldest first."""

    def count_waiting(self) -> int:
        """How many runs wait for admission."""

    def claim_admission(self, job_name: str, *, owner: str, lease_seconds: float) -> bool:
        """Take charge of admitting a waiting run unless another live admitter holds it (a lease of its own).

        So one instance hands the run to its executor; an admitter that died meanwhile holds it no longer
        once its lease runs out. The run still waits (it is in no executor's :meth:`unfinished`) until
        :meth:`admit_run`.
        """

    def admit_run(self, job_name: str) -> bool:
        """The run no longer waits for admission (its executor has it); ``False`` if it did not wait (any more)."""

    def return_to_line(self, job_name: str) -> bool:
        """An admitted run waits for admission again, claimed by nobody (its executor could not take it now).

        ``False`` if it is finished. It keeps its place: the line is in order of creation.
        """

    def manifest(self, job_name: str) -> dict[str, Any] | None: ...

    def delete(self, job_name: str) -> None: ...

    def purge(self, *, before: datetime) -> int:
        """Forget finished runs last updated before ``before``; return how many."""


class IdempotencyKeys(Protocol):
    """``Idempotency-Key``s bound to the job they launched, so a double click launches one task."""

    def claim_idempotency_key(
        self, key: str, *, fingerprint: str, job_name: str, replacing: str | None = None
    ) -> IdempotencyClaim:
        """Atomically bind ``key`` to ``job_name`` unless it is already bound.

        ``replacing``: a job the key may be taken from, because its launch left
        no run behind; the key is taken only if it is still bound to that job.
        """

    def release_idempotency_key(self, key: str, *, job_name: str) -> None:
        """Undo a claim whose launch failed (nothing half-created remains)."""


class Leases(Protocol):
    """Which process executes each run this host runs, so a run is executed by one process at a time."""

    def claim_run(self, job_name: str, *, owner: str, lease_seconds: float, replacing: str | None = None) -> bool:
        """Take charge of executing a run unless another live owner holds its lease.

        ``replacing``: an owner known to be dead (its process is gone), whose lease is taken at once.
        """

    def release_runs(self, *, owner: str) -> None:
        """Give up every lease ``owner`` holds (graceful shutdown)."""


class Comparisons(Protocol):
    """Dual mode's comparisons, one per pipeline run."""

    def record_comparison(self, comparison: Comparison) -> bool:
        """Record a dual-mode comparison once per pipeline run; ``False`` if one was already recorded."""

    def comparisons(self) -> list[Comparison]:
        """Every comparison still within retention."""


class WebhookOutbox(Protocol):
    """Completion webhooks waiting to be delivered, each delivered once by one sender."""

    def enqueue_webhook(self, job_name: str, body: str) -> bool:
        """Put a run's completion webhook in the outbox once; ``False`` if it is already there."""

    def claim_webhooks(self, *, owner: str, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        """Due webhooks that no other live sender holds, leased to ``owner``."""

    def complete_webhook(self, job_name: str, *, gave_up: str | None = None) -> None:
        """Delivered; or, with ``gave_up`` (the last attempt's error), given up after its last attempt.

        Either way never claimed again, and kept (until purged) so it is never re-enqueued.
        """

    def reschedule_webhook(self, job_name: str, *, delay: float, error: str) -> None:
        """Delivery failed: try again after ``delay`` seconds."""

    def webhook_delivery(self, job_name: str) -> WebhookDelivery | None:
        """Where the run's webhook stands; ``None`` when it has none in the outbox (none enqueued, or purged)."""


class Audit(Protocol):
    """The audit trail: every admin action, kept as long as finished runs (:meth:`Runs.purge` forgets it too)."""

    def record_action(self, action: AdminAction) -> int:
        """Keep ``action``; return the id it is listed under."""

    def actions(self, limit: int, before: int | None = None) -> list[AdminAction]:
        """At most ``limit`` actions, newest first; with ``before``, those recorded before the action of that id."""


class LogTails(Protocol):
    """The last part of each finished run's output, kept with the run (and purged or deleted with it).

    Saved once per run across instances: an instance :meth:`claim_log_tail`s a run before it reads the
    output, so one reader fetches a pod's log however many instances see the run finish.
    """

    def claim_log_tail(self, job_name: str, *, lease_seconds: float) -> bool:
        """Take charge of saving the run's tail unless it is saved or a claim younger than its lease holds it.

        ``False`` also when the run is not in the store. A claim whose instance died runs out after
        ``lease_seconds``.
        """

    def save_log_tail(self, job_name: str, text: str) -> bool:
        """Keep ``text`` as the run's tail unless one is already kept (first writer wins) or the run is unknown."""

    def log_tail(self, job_name: str) -> str | None:
        """The kept tail, or ``None`` when none was saved."""


class StoreConnection(Protocol):
    """The store's own connection."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def close(self) -> None: ...


class RunStore(Runs, IdempotencyKeys, Leases, Comparisons, WebhookOutbox, Audit, LogTails, StoreConnection, Protocol):
    """Everything the run store does: what the runtime builds (SQLite or Redis) and hands on.

    A part that needs only one concern takes that protocol instead.
    """
