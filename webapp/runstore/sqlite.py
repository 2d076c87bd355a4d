"""The SQLite run store: the embedded default, one file, no server.

Storage faults are ours to explain, not SQLite's to leak as 500s: a full
disk, an I/O error, a read-only file or a damaged one raise
:class:`~webapp.errors.RunStoreUnavailable` (HTTP 503) naming the fault. The
file is checked when the store opens it (a sound database that takes a
write), and :meth:`SQLiteRunStore.ping` writes a probe row (at most once a
second, however often readiness is asked), so readiness says whether writes
go through now. A damaged file does not heal: once seen, every read and write
is refused until an operator restores or replaces the file (and restarts).
A mistake in our own SQL is not a storage fault: it stays an error (a 500
with a traceback), to be fixed, not waited out.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from webapp.comparison import Comparison
from webapp.errors import RunStoreUnavailable
from webapp.runstore import (
    DELIVERED,
    GIVEN_UP,
    AdminAction,
    IdempotencyClaim,
    PendingWebhook,
    WebhookDelivery,
    awaits_admission,
)
from webapp.status import JobStatus, Phase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    job_name        TEXT PRIMARY KEY,
    mode            TEXT NOT NULL,
    spec            TEXT NOT NULL,
    pipeline_run_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    terminal        INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    body            TEXT NOT NULL,
    manifest        TEXT,
    owner           TEXT,
    lease_until     REAL NOT NULL DEFAULT 0,
    client          TEXT,
    waiting         INTEGER NOT NULL DEFAULT 0,
    admitter        TEXT,
    admit_until     REAL NOT NULL DEFAULT 0,
    log_tail        TEXT,
    log_claim_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_terminal ON runs (terminal, mode);
CREATE TABLE IF NOT EXISTS comparisons (
    pipeline_run_id TEXT PRIMARY KEY,
    compared_at     REAL NOT NULL,
    body            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    job_name        TEXT PRIMARY KEY,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    owner           TEXT,
    lease_until     REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_name    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_actions (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    body   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_actions_by_time ON admin_actions (at);
CREATE TABLE IF NOT EXISTS write_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    written_at REAL NOT NULL
);
"""

PROBE_SECONDS = 1.0
"""How long one probe write of :meth:`SQLiteRunStore.ping` answers for readiness."""

_PROBE_WRITE = """
INSERT INTO write_probe (id, written_at) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at
"""

_STORAGE_FAULTS = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
)
"""SQLite's primary result codes that say the file or the disk is at fault, not the statement."""
_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_REPAIR = "the file is damaged: restore it from a backup, or move it away to start empty"
_HINTS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "the disk reported an I/O error",
    "SQLITE_READONLY": "the file or its folder is read-only",
    "SQLITE_CANTOPEN": "the file cannot be opened or created: is its folder writable?",
    "SQLITE_CORRUPT": _REPAIR,
    "SQLITE_NOTADB": _REPAIR,
}


def storage_fault(error: sqlite3.Error) -> str | None:
    """The primary result code (``SQLITE_FULL``…) if ``error`` is a fault of the file or the disk, else ``None``.

    Decided by SQLite's result code, not the exception class: a mistake in
    our SQL (``no such table``, a syntax error) is an ``OperationalError``
    too, with ``SQLITE_ERROR``. Extended codes (``SQLITE_IOERR_WRITE``) count
    as their primary one.
    """
    name = getattr(error, "sqlite_errorname", None) or ""
    return next((fault for fault in _STORAGE_FAULTS if name == fault or name.startswith(f"{fault}_")), None)


def is_storage_fault(error: sqlite3.Error) -> bool:
    """A fault of the file or the disk (full, I/O, read-only, damaged, busy or locked), not a mistake in our SQL."""
    return storage_fault(error) is not None


def describe_sqlite_error(error: sqlite3.Error) -> str:
    """Words for error answers, ``/readyz`` and start-up: what SQLite said, and what it means."""
    hint = _HINTS.get(storage_fault(error) or "")
    return f"SQLite: {error}" + (f" ({hint})" if hint else "")


class SQLiteRunStore:
    """A :class:`~webapp.runstore.RunStore` in one SQLite file (WAL, one connection, one lock).

    Opening checks the file: it must be a sound SQLite database (``PRAGMA
    quick_check``) that takes a write; if not, :class:`RunStoreUnavailable`
    says why, and nothing starts on top of it.
    """

    def __init__(self, path: Path, *, probe_seconds: float = PROBE_SECONDS) -> None:
        """``probe_seconds``: how long :meth:`ping`'s probe write answers for (see :data:`PROBE_SECONDS`)."""
        self.path = path
        self._lock = threading.Lock()
        self._damage: str | None = None
        self._probe_seconds = probe_seconds
        self._probed: tuple[float, str | None] | None = None
        """When the last probe write was made (``time.monotonic()``) and why it failed, if it did."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunStoreUnavailable(f"cannot create the folder {path.parent}: {error.strerror}") from error
        try:
            self._db = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
            self._db.create_function("amends", 2, _amends, deterministic=True)
        except sqlite3.Error as error:
            raise RunStoreUnavailable(describe_sqlite_error(error)) from error
        try:
            with self._storage() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                if "client" not in columns:  # a file from before runs recorded their client
                    db.execute("ALTER TABLE runs ADD COLUMN client TEXT")
                if "waiting" not in columns:  # a file from before runs could wait for admission
                    db.execute("ALTER TABLE runs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0")
                    db.execute("ALTER TABLE runs ADD COLUMN admitter TEXT")
                    db.execute("ALTER TABLE runs ADD COLUMN admit_until REAL NOT NULL DEFAULT 0")
                if "log_tail" not in columns:  # a file from before finished runs kept their output
                    db.execute("ALTER TABLE runs ADD COLUMN log_tail TEXT")
                    db.execute("ALTER TABLE runs ADD COLUMN log_claim_until REAL NOT NULL DEFAULT 0")
                db.execute("CREATE INDEX IF NOT EXISTS runs_by_client ON runs (client, terminal)")
                report = "\n".join(row for (row,) in db.execute("PRAGMA quick_check(3)").fetchall())
            problems = [line for line in report.splitlines() if line not in ("ok", "*** in database main ***")]
            if problems:
                self._damage = f"SQLite: {'; '.join(problems[:3])} ({_REPAIR})"
            self.ping()
        except RunStoreUnavailable:
            self._db.close()
            raise

    @contextmanager
    def _storage(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a storage fault leaves as :class:`RunStoreUnavailable` (HTTP 503).

        A file once seen damaged is not used again: every later call is refused
        with what was seen.
        """
        with self._lock:
            if self._damage is not None:
                raise RunStoreUnavailable(self._damage)
            try:
                yield self._db
            except sqlite3.Error as error:
                fault = storage_fault(error)
                if fault is None:
                    raise
                description = describe_sqlite_error(error)
                if fault in _DAMAGED:
                    self._damage = description
                raise RunStoreUnavailable(description) from error

    def _write(self, sql: str, parameters: tuple[Any, ...] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self._storage() as db:
            return db.execute(sql, parameters).rowcount

    def _one(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        with self._storage() as db:
            return db.execute(sql, parameters).fetchone()

    def _all(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._storage() as db:
            return db.execute(sql, parameters).fetchall()

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None, client: str | None = None) -> bool:
        changed = self._write(
            """
            INSERT INTO runs (job_name, mode, spec, pipeline_run_id, status, terminal, seq,
                              created_at, updated_at, body, manifest, client, waiting)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (job_name) DO UPDATE SET
                status = excluded.status, terminal = excluded.terminal, seq = excluded.seq,
                updated_at = excluded.updated_at, body = excluded.body,
                manifest = COALESCE(excluded.manifest, runs.manifest)
            WHERE excluded.seq > runs.seq
              AND (runs.terminal = 0 OR amends(excluded.body, runs.body))
            """,
            (
                status.job_name,
                status.mode,
                status.spec,
                status.pipeline_run_id,
                status.status.value,
                int(status.terminal),
                status.seq,
                status.created_at.timestamp(),
                status.updated_at.timestamp(),
                status.stored_json,
                json.dumps(manifest) if manifest is not None else None,
                client,
                int(awaits_admission(status)),
            ),
        )
        return changed == 1

    def get(self, job_name: str) -> JobStatus | None:
        row = self._one("SELECT body FROM runs WHERE job_name = ?", (job_name,))
        return JobStatus.from_json(row[0]) if row else None

    def recent(self, limit: int, *, statuses: Collection[Phase] = (), specs: Collection[str] = ()) -> list[JobStatus]:
        """Newest first, filtered in the query (walking ``runs_by_created`` until ``limit`` rows match)."""
        where: list[str] = []
        parameters: list[Any] = []
        for column, values in (("status", [Phase(s).value for s in statuses]), ("spec", list(specs))):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                parameters.extend(values)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._all(
            f"SELECT body FROM runs {clause}ORDER BY created_at DESC, job_name LIMIT ?",  # noqa: S608 (placeholders)
            (*parameters, limit),
        )
        return [JobStatus.from_json(body) for (body,) in rows]

    def unfinished(self, *, mode: str | None = None) -> list[JobStatus]:
        sql = "SELECT body FROM runs WHERE terminal = 0 AND waiting = 0"
        rows = (
            self._all(sql + " AND mode = ? ORDER BY created_at", (mode,))
            if mode
            else self._all(sql + " ORDER BY created_at")
        )
        return [JobStatus.from_json(body) for (body,) in rows]

    def count_unfinished(self, *, client: str | None = None) -> int:
        if client is None:
            (count,) = self._one("SELECT COUNT(*) FROM runs WHERE terminal = 0")
        else:
            (count,) = self._one("SELECT COUNT(*) FROM runs WHERE client = ? AND terminal = 0", (client,))
        return int(count)

    def waiting(self) -> list[JobStatus]:
        rows = self._all("SELECT body FROM runs WHERE terminal = 0 AND waiting = 1 ORDER BY created_at, job_name")
        return [JobStatus.from_json(body) for (body,) in rows]

    def count_waiting(self) -> int:
        (count,) = self._one("SELECT COUNT(*) FROM runs WHERE terminal = 0 AND waiting = 1")
        return int(count)

    def claim_admission(self, job_name: str, *, owner: str, lease_seconds: float) -> bool:
        now = time.time()
        claimed = self._write(
            """
            UPDATE runs SET admitter = ?, admit_until = ?
            WHERE job_name = ? AND terminal = 0 AND waiting = 1
              AND (admitter IS NULL OR admitter = ? OR admit_until < ?)
            """,
            (owner, now + lease_seconds, job_name, owner, now),
        )
        return bool(claimed)

    def admit_run(self, job_name: str) -> bool:
        return bool(
            self._write("UPDATE runs SET waiting = 0 WHERE job_name = ? AND waiting = 1 AND terminal = 0", (job_name,))
        )

    def return_to_line(self, job_name: str) -> bool:
        return bool(
            self._write(
                "UPDATE runs SET waiting = 1, admitter = NULL, admit_until = 0 WHERE job_name = ? AND terminal = 0",
                (job_name,),
            )
        )

    def manifest(self, job_name: str) -> dict[str, Any] | None:
        row = self._one("SELECT manifest FROM runs WHERE job_name = ?", (job_name,))
        return json.loads(row[0]) if row and row[0] else None

    def claim_idempotency_key(
        self, key: str, *, fingerprint: str, job_name: str, replacing: str | None = None
    ) -> IdempotencyClaim:
        now = time.time()
        with self._storage() as db:
            bound = db.execute(
                "INSERT OR IGNORE INTO idempotency_keys VALUES (?, ?, ?, ?)", (key, fingerprint, job_name, now)
            ).rowcount
            if not bound and replacing is not None:
                bound = db.execute(
                    "UPDATE idempotency_keys SET fingerprint = ?, job_name = ?, created_at = ? "
                    "WHERE key = ? AND job_name = ?",
                    (fingerprint, job_name, now, key, replacing),
                ).rowcount
            if bound:
                return IdempotencyClaim(won=True, job_name=job_name, fingerprint=fingerprint, claimed_at=now)
            held_job, held_print, claimed_at = db.execute(
                "SELECT job_name, fingerprint, created_at FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
        return IdempotencyClaim(won=False, job_name=held_job, fingerprint=held_print, claimed_at=claimed_at)

    def release_idempotency_key(self, key: str, *, job_name: str) -> None:
        self._write("DELETE FROM idempotency_keys WHERE key = ? AND job_name = ?", (key, job_name))

    def delete(self, job_name: str) -> None:
        self._write("DELETE FROM runs WHERE job_name = ?", (job_name,))

    def claim_run(self, job_name: str, *, owner: str, lease_seconds: float, replacing: str | None = None) -> bool:
        now = time.time()
        claimed = self._write(
            """
            UPDATE runs SET owner = ?, lease_until = ?
            WHERE job_name = ? AND terminal = 0 AND (owner IS NULL OR owner IN (?, ?) OR lease_until < ?)
            """,
            (owner, now + lease_seconds, job_name, owner, replacing or owner, now),
        )
        return bool(claimed)

    def release_runs(self, *, owner: str) -> None:
        self._write("UPDATE runs SET owner = NULL, lease_until = 0 WHERE owner = ?", (owner,))

    def purge(self, *, before: datetime) -> int:
        cutoff = before.timestamp()
        with self._storage() as db:
            db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,))
            db.execute("DELETE FROM comparisons WHERE compared_at < ?", (cutoff,))
            db.execute("DELETE FROM webhook_outbox WHERE delivered <> 0 AND next_attempt_at < ?", (cutoff,))
            db.execute("DELETE FROM admin_actions WHERE at < ?", (cutoff,))
            return db.execute("DELETE FROM runs WHERE terminal = 1 AND updated_at < ?", (cutoff,)).rowcount

    def claim_log_tail(self, job_name: str, *, lease_seconds: float) -> bool:
        now = time.time()
        claimed = self._write(
            "UPDATE runs SET log_claim_until = ? WHERE job_name = ? AND log_tail IS NULL AND log_claim_until < ?",
            (now + lease_seconds, job_name, now),
        )
        return bool(claimed)

    def save_log_tail(self, job_name: str, text: str) -> bool:
        saved = self._write("UPDATE runs SET log_tail = ? WHERE job_name = ? AND log_tail IS NULL", (text, job_name))
        return bool(saved)

    def log_tail(self, job_name: str) -> str | None:
        row = self._one("SELECT log_tail FROM runs WHERE job_name = ?", (job_name,))
        return None if row is None else row[0]

    def record_comparison(self, comparison: Comparison) -> bool:
        return bool(
            self._write(
                "INSERT OR IGNORE INTO comparisons VALUES (?, ?, ?)",
                (
                    comparison.pipeline_run_id,
                    comparison.compared_at.timestamp(),
                    json.dumps(comparison.to_dict()),
                ),
            )
        )

    def comparisons(self) -> list[Comparison]:
        rows = self._all("SELECT body FROM comparisons ORDER BY compared_at DESC")
        return [Comparison.from_dict(json.loads(body)) for (body,) in rows]

    def enqueue_webhook(self, job_name: str, body: str) -> bool:
        return bool(
            self._write(
                "INSERT OR IGNORE INTO webhook_outbox (job_name, body, next_attempt_at) VALUES (?, ?, ?)",
                (job_name, body, time.time()),
            )
        )

    def claim_webhooks(self, *, owner: str, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        now = time.time()
        with self._storage() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    """
                    SELECT job_name, body, attempts FROM webhook_outbox
                    WHERE delivered = 0 AND next_attempt_at <= ?
                      AND (owner IS NULL OR owner = ? OR lease_until < ?)
                    ORDER BY next_attempt_at LIMIT ?
                    """,
                    (now, owner, now, limit),
                ).fetchall()
                db.executemany(
                    "UPDATE webhook_outbox SET owner = ?, lease_until = ? WHERE job_name = ?",
                    [(owner, now + lease_seconds, name) for name, _, _ in rows],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return [PendingWebhook(job_name=name, body=body, attempts=attempts) for name, body, attempts in rows]

    def complete_webhook(self, job_name: str, *, gave_up: str | None = None) -> None:
        # kept as done (until purged) so an instance that sees the finish later does not send it again
        if gave_up is None:
            self._write(
                "UPDATE webhook_outbox SET delivered = ?, owner = NULL WHERE job_name = ?", (DELIVERED, job_name)
            )
            return
        self._write(
            """
            UPDATE webhook_outbox SET delivered = ?, owner = NULL, attempts = attempts + 1, last_error = ?
            WHERE job_name = ?
            """,
            (GIVEN_UP, gave_up[:500], job_name),
        )

    def reschedule_webhook(self, job_name: str, *, delay: float, error: str) -> None:
        self._write(
            """
            UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, owner = NULL,
                lease_until = 0, last_error = ?
            WHERE job_name = ?
            """,
            (time.time() + delay, error[:500], job_name),
        )

    def webhook_delivery(self, job_name: str) -> WebhookDelivery | None:
        row = self._one("SELECT delivered, attempts, last_error FROM webhook_outbox WHERE job_name = ?", (job_name,))
        if row is None:
            return None
        delivered, attempts, last_error = row
        return WebhookDelivery.of_row(done=int(delivered), attempts=int(attempts), last_error=last_error)

    def record_action(self, action: AdminAction) -> int:
        body = action.to_dict()
        del body["id"]
        with self._storage() as db:
            cursor = db.execute(
                "INSERT INTO admin_actions (at, body) VALUES (?, ?)", (action.at.timestamp(), json.dumps(body))
            )
            return int(cursor.lastrowid or 0)

    def actions(self, limit: int, before: int | None = None) -> list[AdminAction]:
        if limit <= 0:  # LIMIT -1 would be no limit
            return []
        rows = self._all(
            "SELECT id, body FROM admin_actions WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**63 - 1, limit),
        )
        return [AdminAction.from_dict({**json.loads(body), "id": id_}) for id_, body in rows]

    def ping(self) -> None:
        """Raise :class:`RunStoreUnavailable` unless the file reads and takes a write now.

        The probe is one small committed write, so a full disk, a read-only
        file or an I/O error shows in readiness before a launch meets it. Its
        result (taken or refused) answers for ``probe_seconds``: readiness may
        be asked many times a second, and each probe holds the store's lock.
        A damaged file is refused at once, whenever it was seen.
        """
        now = time.monotonic()
        if self._damage is None and self._probed is not None and now - self._probed[0] < self._probe_seconds:
            if self._probed[1] is not None:
                raise RunStoreUnavailable(self._probed[1])
            return
        try:
            with self._storage() as db:
                db.execute("SELECT job_name FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
                db.execute(_PROBE_WRITE, (time.time(),))
        except RunStoreUnavailable as error:
            self._probed = (now, error.message)
            raise
        self._probed = (now, None)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _amends(body: str, final_body: str) -> bool:
    """SQL ``amends(new, old)``: whether a finished row takes ``body`` (:meth:`JobStatus.amends`, the hub's rule)."""
    try:
        return JobStatus.from_json(body).amends(JobStatus.from_json(final_body))
    except (ValueError, KeyError, TypeError):  # a row this code cannot read is not amended by it
        return False
