"""The SQLite run store: the embedded default, one file, no server."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from webapp.comparison import Comparison
from webapp.runstore import IdempotencyClaim, PendingWebhook
from webapp.status import JobStatus

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
    lease_until     REAL NOT NULL DEFAULT 0
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
"""


class SQLiteRunStore:
    """A :class:`~webapp.runstore.RunStore` in one SQLite file (WAL, one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _run(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, parameters)

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None) -> None:
        self._run(
            """
            INSERT INTO runs (job_name, mode, spec, pipeline_run_id, status, terminal, seq,
                              created_at, updated_at, body, manifest)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (job_name) DO UPDATE SET
                status = excluded.status, terminal = excluded.terminal, seq = excluded.seq,
                updated_at = excluded.updated_at, body = excluded.body,
                manifest = COALESCE(excluded.manifest, runs.manifest)
            WHERE excluded.seq > runs.seq AND runs.terminal = 0
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
                status.json,
                json.dumps(manifest) if manifest is not None else None,
            ),
        )

    def get(self, job_name: str) -> JobStatus | None:
        row = self._run("SELECT body FROM runs WHERE job_name = ?", (job_name,)).fetchone()
        return JobStatus.from_json(row[0]) if row else None

    def recent(self, limit: int) -> list[JobStatus]:
        rows = self._run("SELECT body FROM runs ORDER BY created_at DESC, job_name LIMIT ?", (limit,)).fetchall()
        return [JobStatus.from_json(body) for (body,) in rows]

    def unfinished(self, *, mode: str | None = None) -> list[JobStatus]:
        sql = "SELECT body FROM runs WHERE terminal = 0"
        rows = (
            self._run(sql + " AND mode = ? ORDER BY created_at", (mode,))
            if mode
            else self._run(sql + " ORDER BY created_at")
        ).fetchall()
        return [JobStatus.from_json(body) for (body,) in rows]

    def count_unfinished(self) -> int:
        (count,) = self._run("SELECT COUNT(*) FROM runs WHERE terminal = 0").fetchone()
        return int(count)

    def manifest(self, job_name: str) -> dict[str, Any] | None:
        row = self._run("SELECT manifest FROM runs WHERE job_name = ?", (job_name,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def claim_idempotency_key(self, key: str, *, fingerprint: str, job_name: str) -> IdempotencyClaim:
        with self._lock:
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO idempotency_keys VALUES (?, ?, ?, ?)",
                (key, fingerprint, job_name, time.time()),
            ).rowcount
            if inserted:
                return IdempotencyClaim(won=True, job_name=job_name, fingerprint=fingerprint)
            held_job, held_print = self._db.execute(
                "SELECT job_name, fingerprint FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
        return IdempotencyClaim(won=False, job_name=held_job, fingerprint=held_print)

    def release_idempotency_key(self, key: str, *, job_name: str) -> None:
        self._run("DELETE FROM idempotency_keys WHERE key = ? AND job_name = ?", (key, job_name))

    def delete(self, job_name: str) -> None:
        self._run("DELETE FROM runs WHERE job_name = ?", (job_name,))

    def claim_run(self, job_name: str, *, owner: str, lease_seconds: float, replacing: str | None = None) -> bool:
        now = time.time()
        claimed = self._run(
            """
            UPDATE runs SET owner = ?, lease_until = ?
            WHERE job_name = ? AND terminal = 0 AND (owner IS NULL OR owner IN (?, ?) OR lease_until < ?)
            """,
            (owner, now + lease_seconds, job_name, owner, replacing or owner, now),
        ).rowcount
        return bool(claimed)

    def release_runs(self, *, owner: str) -> None:
        self._run("UPDATE runs SET owner = NULL, lease_until = 0 WHERE owner = ?", (owner,))

    def purge(self, *, before: datetime) -> int:
        cutoff = before.timestamp()
        with self._lock:
            self._db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,))
            self._db.execute("DELETE FROM comparisons WHERE compared_at < ?", (cutoff,))
            self._db.execute("DELETE FROM webhook_outbox WHERE delivered = 1 AND next_attempt_at < ?", (cutoff,))
            return self._db.execute("DELETE FROM runs WHERE terminal = 1 AND updated_at < ?", (cutoff,)).rowcount

    def record_comparison(self, comparison: Comparison) -> bool:
        return bool(
            self._run(
                "INSERT OR IGNORE INTO comparisons VALUES (?, ?, ?)",
                (
                    comparison.pipeline_run_id,
                    comparison.compared_at.timestamp(),
                    json.dumps(comparison.to_dict()),
                ),
            ).rowcount
        )

    def comparisons(self) -> list[Comparison]:
        rows = self._run("SELECT body FROM comparisons ORDER BY compared_at DESC").fetchall()
        return [Comparison.from_dict(json.loads(body)) for (body,) in rows]

    def enqueue_webhook(self, job_name: str, body: str) -> bool:
        return bool(
            self._run(
                "INSERT OR IGNORE INTO webhook_outbox (job_name, body, next_attempt_at) VALUES (?, ?, ?)",
                (job_name, body, time.time()),
            ).rowcount
        )

    def claim_webhooks(self, *, owner: str, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    """
                    SELECT job_name, body, attempts FROM webhook_outbox
                    WHERE delivered = 0 AND next_attempt_at <= ?
                      AND (owner IS NULL OR owner = ? OR lease_until < ?)
                    ORDER BY next_attempt_at LIMIT ?
                    """,
                    (now, owner, now, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE webhook_outbox SET owner = ?, lease_until = ? WHERE job_name = ?",
                    [(owner, now + lease_seconds, name) for name, _, _ in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [PendingWebhook(job_name=name, body=body, attempts=attempts) for name, body, attempts in rows]

    def complete_webhook(self, job_name: str) -> None:
        # kept as delivered (until purged) so an instance that sees the finish later does not send it again
        self._run("UPDATE webhook_outbox SET delivered = 1, owner = NULL WHERE job_name = ?", (job_name,))

    def reschedule_webhook(self, job_name: str, *, delay: float, error: str) -> None:
        self._run(
            """
            UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, owner = NULL,
                lease_until = 0, last_error = ?
            WHERE job_name = ?
            """,
            (time.time() + delay, error[:500], job_name),
        )

    def ping(self) -> None:
        self._run("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()
