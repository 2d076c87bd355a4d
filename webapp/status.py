"""The status object: the one JSON shape every transport carries.

A stream carries state, not a log: each message is the whole current status,
so clients apply messages idempotently and a reconnect loses nothing. This
module is pure (no I/O): it defines the shape, the status values, and how a
status moves on (``JobStatus.evolve``), including ``seq`` and ``history``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any


class Phase(enum.StrEnum):
    """The status values of DESIGN.md, in the order a run usually meets them."""

    QUEUED = "Queued"
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})

AMENDABLE_WHEN_FINAL = frozenset({"reruns"})
"""The fields a finished status still takes: links to the runs that rerun it, added after it finished."""


_WIRE_RESOLUTION = timedelta(milliseconds=1)
"""The precision of a time in JSON (:func:`format_time`)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-28T21:01:42.123Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclasses.dataclass(frozen=True)
class Transition:
    status: Phase
    at: datetime


@dataclasses.dataclass(frozen=True, eq=False)
class Progress:
    """How far a run has got, as the task reported it (or its Indexed Job counts it)."""

    done: int
    total: int | None = None
    text: str | None = None
    at: datetime | None = None
    """When it was reported; not part of the comparison: the same progress reported again is no change."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Progress):
            return NotImplemented
        return (self.done, self.total, self.text) == (other.done, other.total, other.text)

    def __hash__(self) -> int:
        return hash((self.done, self.total, self.text))

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "text": self.text, "at": format_time(self.at)}

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> Progress | None:
        if body is None:
            return None
        return cls(done=body["done"], total=body.get("total"), text=body.get("text"), at=parse_time(body.get("at")))


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """The whole current state of one run, as clients see it."""

    job_name: str
    status: Phase
    mode: str
    spec: str
    pipeline_run_id: str
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    message: str | None = None
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    attempt: int = 0
    """The legacy local runner's execution attempt (1, 2, …) of this run; 0 before the first or when not counted."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seq: int = 1
    history: tuple[Transition, ...] = ()
    shadow_job_name: str | None = None
    progress: Progress | None = None
    """The task's last reported progress; a final status keeps it."""
    queue_position: int | None = None
    """While ``Queued``: its place in line, 1 = next to start; ``None`` otherwise."""
    observed: str | None = None
    """The source's version of what this status was made from (a Job's ``resourceVersion``); kept in the
    run store, never sent to clients: an observation older than it is stale (:mod:`webapp.door`)."""
    cancel_requested: bool = False
    """An operator asked to cancel the run (kept in the run store, never sent to clients): whichever
    instance sees its Kubernetes Job deleted knows why."""
    rerun_of: str | None = None
    """The run this one reruns (an operator's ``POST /api/jobs/<name>/rerun``), else ``None``."""
    reruns: tuple[str, ...] = ()
    """The reruns of this run, oldest first: the one thing a finished status still takes (see :meth:`evolve`)."""

    @classmethod
    def new(
        cls,
        *,
        job_name: str,
        mode: str,
        spec: str,
        pipeline_run_id: str,
        status: Phase = Phase.QUEUED,
        at: datetime | None = None,
    ) -> JobStatus:
        """The first status of a run that has just been accepted."""
        moment = at or utcnow()
        return cls(
            job_name=job_name,
            status=status,
            mode=mode,
            spec=spec,
            pipeline_run_id=pipeline_run_id,
            created_at=moment,
            updated_at=moment,
            history=(Transition(status, moment),),
        )

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def amended(self) -> bool:
        """Whether this final status's last change was an amendment (new rerun links), not its finish.

        Told from the status alone, so a hub that hears it without the one before (it forgot the run, or
        never had it) still knows: :meth:`evolve` gives a change of phase the same moment in ``history``
        as in ``updated_at``, and an amendment moves only ``updated_at``, at least a millisecond on, so the
        two stay apart in JSON. (Not ``finished_at``: a
        Kubernetes Job's is its ``completionTime``, before the status that says so.)
        """
        return self.terminal and bool(self.history) and self.updated_at > self.history[-1].at

    def evolve(self, *, at: datetime | None = None, **changes: Any) -> JobStatus:
        """The next status with ``changes`` applied, or ``self`` if nothing changed.

        ``seq`` grows by one per change; a change of ``status`` is appended to
        ``history`` and sets ``started_at`` / ``finished_at`` the first time,
        and leaving ``Queued`` clears ``queue_position``. A change of
        ``progress`` is a change (a new ``seq``) but not a new ``history`` entry.
        ``reruns`` adds links (the ones given that the status lacks, in order).
        A terminal status is final: later observations cannot move it; only
        its links to its reruns (:data:`AMENDABLE_WHEN_FINAL`) still change
        (a new ``seq``, no ``history`` entry), see :meth:`amends`.
        """
        if self.terminal:
            changes = {name: value for name, value in changes.items() if name in AMENDABLE_WHEN_FINAL}
        if "reruns" in changes:  # links are only ever added: keep every one the status has, so two writers both land
            changes["reruns"] = (*self.reruns, *(name for name in changes["reruns"] if name not in self.reruns))
        if "status" in changes:
            changes["status"] = Phase(changes["status"])
        changes = {name: value for name, value in changes.items() if getattr(self, name) != value}
        if not changes:
            return self  # (a field equal to its value is kept as it is: a progress reported again keeps its time)
        moment = at or utcnow()
        if self.terminal and self.history:  # an amendment: later than the finish even in the wire's milliseconds
            moment = max(moment, self.history[-1].at + _WIRE_RESOLUTION)
        new_status: Phase = changes.get("status", self.status)
        if new_status != self.status:
            changes["history"] = (*self.history, Transition(new_status, moment))
            if new_status != Phase.QUEUED:
                changes.setdefault("queue_position", None)
            if new_status == Phase.RUNNING and self.started_at is None:
                changes.setdefault("started_at", moment)
            if new_status.terminal:
                changes.setdefault("finished_at", moment)
                changes.setdefault("active", 0)
        return dataclasses.replace(self, seq=self.seq + 1, updated_at=moment, **changes)

    def amends(self, final: JobStatus) -> bool:
        """Whether this status is the finished ``final`` with a later ``seq`` and only its rerun links changed.

        The hub and the run store take such a status over a finished one (which they take nothing else over).
        """
        if not (final.terminal and self.terminal and self.seq > final.seq):
            return False
        same = {name: getattr(final, name) for name in (*AMENDABLE_WHEN_FINAL, "seq", "updated_at")}
        unchanged = dataclasses.replace(self, **same)
        # as the store and the relay carry it (milliseconds, not this clock's microseconds; observed, cancel_requested)
        return unchanged == final or unchanged.stored_json == final.stored_json

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_name": self.job_name,
            "status": self.status.value,
            "terminal": self.terminal,
            "mode": self.mode,
            "spec": self.spec,
            "pipeline_run_id": self.pipeline_run_id,
            "reason": self.reason,
            "message": self.message,
            "active": self.active,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "attempt": self.attempt,
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "updated_at": format_time(self.updated_at),
            "seq": self.seq,
            "history": [{"status": t.status.value, "at": format_time(t.at)} for t in self.history],
            "progress": self.progress.to_dict() if self.progress is not None else None,
            "queue_position": self.queue_position,
            "rerun_of": self.rerun_of,
            "reruns": list(self.reruns),
        }
        if self.shadow_job_name is not None:
            body["shadow_job_name"] = self.shadow_job_name
        return body

    @cached_property
    def json(self) -> str:
        """The status as one line of JSON, serialised once however many clients read it."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @property
    def stored_json(self) -> str:
        """The status as the run store keeps it: :attr:`json` plus what only jobpulse reads back."""
        internal: dict[str, Any] = {}
        if self.observed is not None:
            internal["observed"] = self.observed
        if self.cancel_requested:
            internal["cancel_requested"] = True
        if not internal:
            return self.json
        return self.json[:-1] + "," + json.dumps(internal)[1:]

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> JobStatus:
        """Inverse of :meth:`to_dict` (for the run store and the Redis channel)."""
        created = parse_time(body["created_at"])
        updated = parse_time(body["updated_at"])
        assert created is not None and updated is not None
        return cls(
            job_name=body["job_name"],
            status=Phase(body["status"]),
            mode=body["mode"],
            spec=body["spec"],
            pipeline_run_id=body["pipeline_run_id"],
            created_at=created,
            updated_at=updated,
            reason=body.get("reason"),
            message=body.get("message"),
            active=body.get("active", 0),
            succeeded=body.get("succeeded", 0),
            failed=body.get("failed", 0),
            attempt=body.get("attempt", 0),
            started_at=parse_time(body.get("started_at")),
            finished_at=parse_time(body.get("finished_at")),
            seq=body.get("seq", 1),
            history=tuple(
                Transition(Phase(h["status"]), parse_time(h["at"]) or created) for h in body.get("history", ())
            ),
            shadow_job_name=body.get("shadow_job_name"),
            progress=Progress.from_dict(body.get("progress")),
            queue_position=body.get("queue_position"),
            observed=body.get("observed"),
            cancel_requested=bool(body.get("cancel_requested", False)),
            rerun_of=body.get("rerun_of"),
            reruns=tuple(body.get("reruns") or ()),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> JobStatus:
        return cls.from_dict(json.loads(text))


def finished_by(status: JobStatus, previous: JobStatus | None) -> bool:
    """Whether the change from ``previous`` (``None``: unknown to the listener) to ``status`` finished the run.

    The one test a hub listener makes for "this run has just finished" (count it, enqueue its webhook, keep
    its log tail, compare it, admit the next run): true for a new final status, also one heard first from
    another instance; false for a final status amended with rerun links (:attr:`JobStatus.amended`), even
    when the hub forgot the run and so hears the amendment without what came before.
    """
    if not status.terminal:
        return False
    if previous is not None:
        return not previous.terminal
    return not status.amended
