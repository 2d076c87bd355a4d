"""The SQLite run store tells a fault of the file or disk from a mistake in our SQL, with real SQLite errors.

Each error below is made by real SQLite on a real file: a storage fault
becomes ``RunStoreUnavailable`` (503), a mistake stays an error (500, with a
traceback to fix it by). A file once seen damaged is not used again, and
readiness does not write to the file on every call.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from webapp.errors import RunStoreUnavailable
from webapp.runstore.sqlite import SQLiteRunStore, is_storage_fault
from webapp.status import JobStatus, Phase

Make = Callable[[Path], None]


def _connect(path: Path, **options: object) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None, **options)  # type: ignore[call-overload,no-any-return]


def _table(path: Path) -> None:
    _connect(path).execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")


def syntax_error(path: Path) -> None:
    _connect(path).execute("SELEC 1")


def no_such_table(path: Path) -> None:
    _connect(path).execute("SELECT * FROM nowhere")


def constraint(path: Path) -> None:
    _table(path)
    db = _connect(path)
    db.execute("INSERT INTO t VALUES (1, 'a')")
    db.execute("INSERT INTO t VALUES (1, 'b')")


def full(path: Path) -> None:
    _table(path)
    db = _connect(path)
    db.execute("PRAGMA max_page_count = 3")
    db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 100_000,))


def read_only(path: Path) -> None:
    _table(path)
    sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t (body) VALUES ('x')")


def cannot_open(path: Path) -> None:
    sqlite3.connect(str(path.parent / "no-such-folder" / "x.sqlite3")).execute("SELECT 1")


def busy(path: Path) -> None:
    _table(path)
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    _connect(path, timeout=0).execute("INSERT INTO t (body) VALUES ('x')")


def not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database, only text " * 200)
    _connect(path).execute("SELECT * FROM sqlite_master")


@pytest.mark.parametrize(
    ("make", "storage"),
    [
        (syntax_error, False),
        (no_such_table, False),
        (constraint, False),
        (full, True),
        (read_only, True),
        (cannot_open, True),
        (busy, True),
        (not_a_database, True),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_a_storage_fault_is_told_by_sqlites_result_code_not_the_exception_class(
    make: Make, storage: bool, tmp_path: Path
) -> None:
    with pytest.raises(sqlite3.Error) as raised:
        make(tmp_path / "probe.sqlite3")
    assert is_storage_fault(raised.value) is storage, raised.value.sqlite_errorname


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3")
    yield store
    store.close()


def _saved_runs(store: SQLiteRunStore, count: int) -> list[str]:
    names = []
    for index in range(count):
        status = JobStatus.new(
            job_name=f"task-runner-old-{index:08x}", mode="legacy", spec="quick", pipeline_run_id="o"
        )
        store.save(status.evolve(status=Phase.SUCCEEDED))
        names.append(status.job_name)
    return names


def test_a_mistake_in_our_sql_is_an_error_not_an_unavailable_store(store: SQLiteRunStore) -> None:
    (name,) = _saved_runs(store, 1)
    _connect(store.path).execute("DROP TABLE runs")  # the store's SQL now names a table that is not there

    with pytest.raises(sqlite3.OperationalError, match="no such table: runs"):
        store.get(name)


def test_a_mistake_in_our_sql_answers_500_with_a_traceback_not_503(
    make_app: Callable[..., Flask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "state" / "jobpulse.sqlite3"
    app = make_app(DATABASE_PATH=str(database))
    _connect(database).execute("DROP TABLE runs")

    answer = app.test_client().get("/api/jobs/task-runner-nobody-0123abcd")

    assert (answer.status_code, answer.json) == (
        500,
        {"error": "internal_error", "message": "something went wrong on our side"},
    )
    (logged,) = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"request.error"' in line]
    assert logged["level"] == "ERROR" and "no such table: runs" in logged["exc_info"], logged


def test_a_file_seen_damaged_is_not_used_again(store: SQLiteRunStore) -> None:
    names = _saved_runs(store, 40)
    other = _connect(store.path)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file, where the damage goes
    (index_page,) = other.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs_by_created'").fetchone()
    with store.path.open("r+b") as file:  # only the index that recent() reads: get() reads the table itself
        file.seek((index_page - 1) * 4096)
        file.write(bytes((index * 7919) % 251 for index in range(4096)))
    other.execute("PRAGMA user_version = 1")  # another writer: the store's page cache is stale, it must re-read
    other.close()

    with pytest.raises(RunStoreUnavailable, match="damaged"):
        store.recent(10)
    for use in (
        lambda: store.get(names[0]),
        lambda: store.save(
            JobStatus.new(job_name="task-runner-new-0123abcd", mode="legacy", spec="quick", pipeline_run_id="n")
        ),
        store.ping,
    ):
        with pytest.raises(RunStoreUnavailable, match="damaged"):
            use()


def test_readiness_probes_write_at_most_once_per_probe_period(tmp_path: Path) -> None:
    store = SQLiteRunStore(tmp_path / "runs.sqlite3", probe_seconds=3600)
    watcher = _connect(store.path)
    (before,) = watcher.execute("PRAGMA data_version").fetchone()  # changes when another connection commits
    try:
        for _ in range(20):
            store.ping()
        (after,) = watcher.execute("PRAGMA data_version").fetchone()
    finally:
        store.close()
    assert after == before, "the probe write made when the store opened answers for the period"
