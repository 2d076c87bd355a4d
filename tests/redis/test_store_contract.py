"""One contract, two run stores: SQLite (the embedded default) and Redis (several instances).

Each test gets two store objects on the same backend — two processes' views
of one SQLite file, or two instances' clients of one Redis — so "once" means
once across instances, not once per object.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from webapp.comparison import Comparison
from webapp.runstore import AdminAction, RunStore, WebhookDelivery
from webapp.runstore.redis import RedisRunStore
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, utcnow

pytestmark = pytest.mark.redis

MANIFEST = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunStore, RunStore]]:
    """Two store objects sharing one backend."""
    make: Callable[[], RunStore]
    if request.param == "sqlite":
        path = tmp_path / "runs.sqlite3"

        def make() -> RunStore:
            return SQLiteRunStore(path)
    else:
        url: str = request.getfixturevalue("redis_url")

        def make() -> RunStore:
            return RedisRunStore(url)

    first, second = make(), make()
    yield first, second
    first.close()
    second.close()


@pytest.fixture
def store(stores: tuple[RunStore, RunStore]) -> RunStore:
    return stores[0]


def run(name: str, *, mode: str = "legacy", minutes_ago: float = 0, **changes: Any) -> JobStatus:
    status = JobStatus.new(
        job_name=f"task-runner-{name}",
        mode=mode,
        spec="quick",
        pipeline_run_id=f"run-{name}",
        at=utcnow() - timedelta(minutes=minutes_ago),
    )
    if changes:
        status = status.evolve(at=status.created_at + timedelta(seconds=1), **changes)
    return as_stored(status)


def as_stored(status: JobStatus) -> JobStatus:
    """The status as it reads back: times to the millisecond, as the JSON carries them."""
    return JobStatus.from_dict(status.to_dict())


def comparison(pipeline_run_id: str, *, minutes_ago: float = 0, legacy_status: str = "Succeeded") -> Comparison:
    return Comparison(
        pipeline_run_id=pipeline_run_id,
        legacy_job=f"task-runner-{pipeline_run_id}-legacy",
        k8s_job=f"task-runner-{pipeline_run_id}-k8s",
        legacy_status=legacy_status,
        k8s_status="Succeeded",
        legacy_reason=None,
        k8s_reason=None,
        legacy_seconds=1.5,
        k8s_seconds=2.0,
        compared_at=utcnow() - timedelta(minutes=minutes_ago),
    )


def admin_action(target: str, *, actor: str = "alice", minutes_ago: float = 0, **outcome: Any) -> AdminAction:
    """An action as it reads back: its time to the millisecond, as the JSON carries it."""
    action = AdminAction(
        actor=actor,
        action=outcome.pop("action", "launch"),
        target=target,
        status=outcome.pop("status", 202),
        error=outcome.pop("error", None),
        at=utcnow() - timedelta(minutes=minutes_ago),
    )
    return AdminAction.from_dict(action.to_dict())


# -- runs ------------------------------------------------------------------------


def test_a_saved_run_reads_back_whole_from_another_store_object(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    status = run("a1", status=Phase.RUNNING, reason="Started", active=1)
    first.save(status, manifest=MANIFEST)
    assert second.get(status.job_name) == status
    assert second.manifest(status.job_name) == MANIFEST
    assert second.get("task-runner-unknown") is None
    assert second.manifest("task-runner-unknown") is None


def test_an_older_seq_never_overwrites_a_newer_one(store: RunStore) -> None:
    queued = run("b1")
    running = as_stored(queued.evolve(status=Phase.RUNNING))
    store.save(running)
    store.save(queued)
    assert store.get(queued.job_name) == running
    store.save(queued.evolve(status=Phase.PENDING))  # same seq as running: not newer
    assert store.get(queued.job_name) == running
    explained = as_stored(running.evolve(reason="same phase, one more change"))
    store.save(explained)
    assert store.get(queued.job_name) == explained


def test_a_terminal_run_is_final(store: RunStore) -> None:
    queued = run("c1")
    failed = as_stored(queued.evolve(status=Phase.FAILED, reason="BackoffLimitExceeded"))
    store.save(failed)
    later = JobStatus.from_dict({**queued.to_dict(), "seq": failed.seq + 5, "status": "Running"})
    store.save(later)
    assert store.get(queued.job_name) == failed
    assert store.unfinished() == []


def test_a_finished_run_takes_only_new_links_to_its_reruns_never_another_outcome(
    stores: tuple[RunStore, RunStore],
) -> None:
    first, second = stores
    failed = as_stored(run("c2").evolve(status=Phase.FAILED, reason="BackoffLimitExceeded"))
    first.save(failed)
    linked = as_stored(failed.evolve(reruns=("task-runner-c2-again",)))
    assert linked.seq == failed.seq + 1
    assert second.save(linked)
    assert first.get(failed.job_name) == linked
    assert not first.save(linked)  # the same seq again: refused
    succeeded = JobStatus.from_dict({**linked.to_dict(), "seq": linked.seq + 1, "status": "Succeeded"})
    assert not second.save(succeeded)
    assert first.get(failed.job_name) == linked
    assert first.unfinished() == []


def test_a_later_save_without_a_manifest_keeps_it(store: RunStore) -> None:
    queued = run("d1")
    store.save(queued, manifest=MANIFEST)
    store.save(queued.evolve(status=Phase.RUNNING))
    assert store.manifest(queued.job_name) == MANIFEST


def test_recent_is_newest_first_and_limited(store: RunStore) -> None:
    for index, minutes in enumerate((30, 10, 20, 5)):
        store.save(run(f"e{index}", minutes_ago=minutes))
    assert [s.job_name for s in store.recent(3)] == ["task-runner-e3", "task-runner-e1", "task-runner-e2"]
    assert len(store.recent(50)) == 4


def test_recent_filters_by_status_and_spec_newest_first(store: RunStore) -> None:
    store.save(run("r0", minutes_ago=40, status=Phase.FAILED))
    store.save(run("r1", minutes_ago=30))
    store.save(dataclasses.replace(run("r2", minutes_ago=20, status=Phase.FAILED), spec="slow"))
    store.save(run("r3", minutes_ago=10, status=Phase.FAILED))
    names = lambda runs: [s.job_name.removeprefix("task-runner-") for s in runs]  # noqa: E731
    assert names(store.recent(10, statuses=[Phase.FAILED])) == ["r3", "r2", "r0"]
    assert names(store.recent(2, statuses=[Phase.FAILED])) == ["r3", "r2"]
    assert names(store.recent(10, specs=["slow"])) == ["r2"]
    assert names(store.recent(10, statuses=[Phase.FAILED, Phase.QUEUED], specs=["quick"])) == ["r3", "r1", "r0"]
    assert store.recent(10, statuses=[Phase.SUCCEEDED]) == []
    assert names(store.recent(10, statuses=(), specs=())) == ["r3", "r2", "r1", "r0"]


def test_unfinished_by_mode_oldest_first_and_counted(store: RunStore) -> None:
    store.save(run("f1", minutes_ago=3))
    store.save(run("f2", minutes_ago=5, mode="k8s"))
    store.save(run("f3", minutes_ago=1))
    store.save(run("f4", minutes_ago=4, status=Phase.SUCCEEDED))
    assert [s.job_name for s in store.unfinished()] == ["task-runner-f2", "task-runner-f1", "task-runner-f3"]
    assert [s.job_name for s in store.unfinished(mode="legacy")] == ["task-runner-f1", "task-runner-f3"]
    assert store.count_unfinished() == 3
    store.save(run("f1", minutes_ago=3, status=Phase.CANCELLED))
    assert store.count_unfinished() == 2


def test_delete_forgets_the_run_everywhere(store: RunStore) -> None:
    status = run("g1")
    store.save(status, manifest=MANIFEST)
    store.delete(status.job_name)
    assert store.get(status.job_name) is None
    assert store.manifest(status.job_name) is None
    assert store.recent(10) == []
    assert store.count_unfinished() == 0


# -- idempotency keys ------------------------------------------------------------


def test_an_idempotency_key_binds_once_across_store_objects(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    won = first.claim_idempotency_key("key-1", fingerprint="print-a", job_name="task-runner-a")
    lost = second.claim_idempotency_key("key-1", fingerprint="print-b", job_name="task-runner-b")
    assert (won.won, won.job_name, won.fingerprint) == (True, "task-runner-a", "print-a")
    assert (lost.won, lost.job_name, lost.fingerprint) == (False, "task-runner-a", "print-a")


def test_only_the_job_a_key_is_bound_to_can_release_it(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    first.claim_idempotency_key("key-2", fingerprint="p", job_name="task-runner-a")
    second.release_idempotency_key("key-2", job_name="task-runner-other")
    assert not second.claim_idempotency_key("key-2", fingerprint="p", job_name="task-runner-b").won
    second.release_idempotency_key("key-2", job_name="task-runner-a")
    assert second.claim_idempotency_key("key-2", fingerprint="p", job_name="task-runner-b").won


def test_a_key_is_taken_from_a_job_only_while_it_is_still_bound_to_that_job(
    stores: tuple[RunStore, RunStore],
) -> None:
    first, second = stores
    held = first.claim_idempotency_key("key-4", fingerprint="p", job_name="task-runner-orphan")
    assert held.won and held.claimed_at <= time.time()
    stale = second.claim_idempotency_key("key-4", fingerprint="p", job_name="task-runner-b", replacing="task-runner-x")
    assert (stale.won, stale.job_name, stale.claimed_at) == (
        False,
        "task-runner-orphan",
        pytest.approx(held.claimed_at),
    )
    taken = second.claim_idempotency_key(
        "key-4", fingerprint="p", job_name="task-runner-b", replacing="task-runner-orphan"
    )
    assert (taken.won, taken.job_name) == (True, "task-runner-b")
    late = first.claim_idempotency_key(
        "key-4", fingerprint="p", job_name="task-runner-c", replacing="task-runner-orphan"
    )
    assert (late.won, late.job_name) == (False, "task-runner-b"), "only one request takes an orphaned key over"


def test_concurrent_claims_of_one_key_have_one_winner(stores: tuple[RunStore, RunStore]) -> None:
    results: list[bool] = []
    start = threading.Barrier(8)

    def claim(store: RunStore, index: int) -> None:
        start.wait()
        results.append(store.claim_idempotency_key("key-3", fingerprint="p", job_name=f"task-runner-{index}").won)

    threads = [threading.Thread(target=claim, args=(stores[i % 2], i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [False] * 7 + [True]


# -- leases ----------------------------------------------------------------------


def test_a_run_is_leased_to_one_owner_at_a_time(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    status = run("h1")
    first.save(status)
    assert first.claim_run(status.job_name, owner="instance-a", lease_seconds=30)
    assert not second.claim_run(status.job_name, owner="instance-b", lease_seconds=30)
    assert first.claim_run(status.job_name, owner="instance-a", lease_seconds=30), "the holder renews"
    first.release_runs(owner="instance-a")
    assert second.claim_run(status.job_name, owner="instance-b", lease_seconds=30)
    assert not first.claim_run(status.job_name, owner="instance-a", lease_seconds=30)


def test_an_expired_lease_can_be_taken_over(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    status = run("h2")
    first.save(status)
    assert first.claim_run(status.job_name, owner="instance-a", lease_seconds=0.3)
    assert not second.claim_run(status.job_name, owner="instance-b", lease_seconds=30)
    wait_for(
        lambda: second.claim_run(status.job_name, owner="instance-b", lease_seconds=30),
        timeout=5,
        what="the lease to expire",
    )
    assert not first.claim_run(status.job_name, owner="instance-a", lease_seconds=30)


def test_a_live_lease_of_an_owner_known_dead_is_taken_at_once(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    status = run("h4")
    first.save(status)
    assert first.claim_run(status.job_name, owner="instance-a", lease_seconds=30)
    assert not second.claim_run(status.job_name, owner="instance-b", lease_seconds=30, replacing="instance-c")
    assert second.claim_run(status.job_name, owner="instance-b", lease_seconds=30, replacing="instance-a")
    assert not first.claim_run(status.job_name, owner="instance-a", lease_seconds=30)
    assert not first.claim_run(status.job_name, owner="instance-c", lease_seconds=30, replacing="instance-a")


def test_finished_or_unknown_runs_cannot_be_leased(store: RunStore) -> None:
    finished = run("h3", status=Phase.SUCCEEDED)
    store.save(finished)
    assert not store.claim_run(finished.job_name, owner="instance-a", lease_seconds=30)
    assert not store.claim_run("task-runner-unknown", owner="instance-a", lease_seconds=30)


# -- the webhook outbox ----------------------------------------------------------


def test_a_webhook_is_enqueued_once_across_store_objects(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    assert first.enqueue_webhook("task-runner-w1", '{"n": 1}')
    assert not second.enqueue_webhook("task-runner-w1", '{"n": 2}')
    (pending,) = second.claim_webhooks(owner="instance-b", lease_seconds=30, limit=10)
    assert (pending.job_name, pending.body, pending.attempts) == ("task-runner-w1", '{"n": 1}', 0)


def test_a_due_webhook_is_claimed_by_only_one_of_two_owners(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    for index in range(5):
        first.enqueue_webhook(f"task-runner-w{index}", "{}")
    claimed: dict[str, list[str]] = {}
    start = threading.Barrier(2)

    def claim(store: RunStore, owner: str) -> None:
        start.wait()
        claimed[owner] = [w.job_name for w in store.claim_webhooks(owner=owner, lease_seconds=30, limit=10)]

    threads = [threading.Thread(target=claim, args=(s, o)) for s, o in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(claimed["a"] + claimed["b"]) == [f"task-runner-w{i}" for i in range(5)]
    assert not set(claimed["a"]) & set(claimed["b"])
    assert second.claim_webhooks(owner="c", lease_seconds=30, limit=10) == []


def test_claims_respect_the_limit_and_the_holder_keeps_its_lease(store: RunStore) -> None:
    for index in range(3):
        store.enqueue_webhook(f"task-runner-l{index}", "{}")
    assert len(store.claim_webhooks(owner="a", lease_seconds=30, limit=2)) == 2
    assert [w.job_name for w in store.claim_webhooks(owner="b", lease_seconds=30, limit=2)] == ["task-runner-l2"]
    assert len(store.claim_webhooks(owner="a", lease_seconds=30, limit=5)) == 2, "its own lease is renewed"


def test_a_claim_finds_free_deliveries_past_many_another_sender_holds(store: RunStore) -> None:
    """What is due is read a page at a time (a sender claims one delivery at a time); none is skipped."""
    names = [f"task-runner-p{index:03}" for index in range(250)]
    for name in names:
        store.enqueue_webhook(name, "{}")
    held = [w.job_name for w in store.claim_webhooks(owner="a", lease_seconds=30, limit=220)]
    assert len(held) == 220
    for name in held[:40]:
        store.complete_webhook(name)  # delivered meanwhile: no longer due
    free = [w.job_name for w in store.claim_webhooks(owner="b", lease_seconds=30, limit=100)]
    assert sorted(free) == sorted(set(names) - set(held))
    assert store.claim_webhooks(owner="c", lease_seconds=30, limit=1) == []


def test_an_expired_webhook_lease_lets_another_sender_claim_it(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    first.enqueue_webhook("task-runner-x1", "{}")
    assert len(first.claim_webhooks(owner="a", lease_seconds=0.3, limit=1)) == 1
    assert second.claim_webhooks(owner="b", lease_seconds=30, limit=1) == []
    wait_for(lambda: second.claim_webhooks(owner="b", lease_seconds=30, limit=1), timeout=5, what="lease expiry")


def test_a_failed_delivery_is_retried_after_its_delay_then_kept_as_delivered(
    stores: tuple[RunStore, RunStore],
) -> None:
    first, second = stores
    first.enqueue_webhook("task-runner-r1", '{"job": "r1"}')
    first.claim_webhooks(owner="a", lease_seconds=30, limit=1)
    first.reschedule_webhook("task-runner-r1", delay=0.5, error="HTTP 502")
    assert second.claim_webhooks(owner="b", lease_seconds=30, limit=1) == [], "not due yet"
    (retry,) = wait_for(
        lambda: second.claim_webhooks(owner="b", lease_seconds=30, limit=1), timeout=5, what="the retry to be due"
    )
    assert (retry.job_name, retry.attempts) == ("task-runner-r1", 1)
    second.complete_webhook("task-runner-r1")
    assert first.claim_webhooks(owner="a", lease_seconds=30, limit=5) == []
    first.reschedule_webhook("task-runner-r1", delay=0, error="late failure report")
    assert first.claim_webhooks(owner="a", lease_seconds=30, limit=5) == [], "delivered stays delivered"
    assert not first.enqueue_webhook("task-runner-r1", "{}"), "an instance seeing the finish later sends nothing"


def test_purge_forgets_delivered_webhooks_but_not_pending_ones(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    first.enqueue_webhook("task-runner-d1", "{}")
    first.enqueue_webhook("task-runner-d2", "{}")
    first.complete_webhook("task-runner-d1")
    second.purge(before=utcnow() + timedelta(seconds=5))
    assert first.enqueue_webhook("task-runner-d1", "{}"), "purged: a new enqueue is accepted"
    assert not first.enqueue_webhook("task-runner-d2", "{}"), "still pending: kept"


# -- comparisons -----------------------------------------------------------------


def test_a_comparison_is_recorded_once_per_pipeline_run(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    assert first.record_comparison(comparison("p1", minutes_ago=2))
    assert not second.record_comparison(comparison("p1", legacy_status="Failed"))
    assert second.record_comparison(comparison("p2", minutes_ago=1))
    found = first.comparisons()
    assert [c.pipeline_run_id for c in found] == ["p2", "p1"]
    assert (found[1].legacy_status, found[1].matched) == ("Succeeded", True), "the first record stands"


# -- retention -------------------------------------------------------------------


def test_purge_forgets_old_finished_runs_keys_and_comparisons(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    old_done = run("o1", minutes_ago=120, status=Phase.SUCCEEDED)
    old_running = run("o2", minutes_ago=120, status=Phase.RUNNING)
    new_done = run("o3", minutes_ago=1, status=Phase.FAILED)
    for status in (old_done, old_running, new_done):
        first.save(status, manifest=MANIFEST)
    first.record_comparison(comparison("old", minutes_ago=120))
    first.record_comparison(comparison("new", minutes_ago=1))
    first.claim_idempotency_key("key-p", fingerprint="p", job_name="task-runner-p")

    assert second.purge(before=utcnow() - timedelta(minutes=60)) == 1
    assert second.get(old_done.job_name) is None
    assert second.get(old_running.job_name) == old_running, "unfinished runs are never purged"
    assert second.get(new_done.job_name) == new_done
    assert {s.job_name for s in second.recent(10)} == {old_running.job_name, new_done.job_name}
    assert [c.pipeline_run_id for c in second.comparisons()] == ["new"]
    assert not second.claim_idempotency_key("key-p", fingerprint="p", job_name="task-runner-q").won

    assert second.purge(before=utcnow() + timedelta(seconds=5)) == 1
    assert second.claim_idempotency_key("key-p", fingerprint="p", job_name="task-runner-q").won
    assert second.comparisons() == []
    assert second.count_unfinished() == 1


def test_ping_answers_while_the_store_is_reachable(store: RunStore) -> None:
    store.ping()


def test_unfinished_runs_are_counted_per_client(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    first.save(run("h1"), manifest=MANIFEST, client="192.0.2.1")
    first.save(run("h2"), manifest=MANIFEST, client="192.0.2.1")
    first.save(run("h3"), manifest=MANIFEST, client="2001:db8::7")
    first.save(run("h4"))  # launched before runs recorded a client
    assert [second.count_unfinished(client=c) for c in ("192.0.2.1", "2001:db8::7", "198.51.100.1")] == [2, 1, 0]
    assert second.count_unfinished() == 4
    second.save(run("h1", status=Phase.SUCCEEDED))  # later saves do not name the client
    second.save(run("h2", status=Phase.RUNNING), client="2001:db8::7")  # nor change it
    second.delete("task-runner-h3")
    assert [first.count_unfinished(client=c) for c in ("192.0.2.1", "2001:db8::7")] == [1, 0]


def test_a_sqlite_file_from_before_clients_were_recorded_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SQLiteRunStore(path).close()
    with sqlite3.connect(path) as old:
        old.execute("DROP INDEX runs_by_client")
        old.execute("ALTER TABLE runs DROP COLUMN client")
    store = SQLiteRunStore(path)
    store.save(run("i1"), client="192.0.2.1")
    assert store.count_unfinished(client="192.0.2.1") == 1
    store.close()


def test_a_run_first_saved_waiting_for_capacity_waits_for_admission_once_across_instances(
    stores: tuple[RunStore, RunStore],
) -> None:
    first, second = stores
    waiting = run("w1", reason="WaitingForCapacity", queue_position=1)
    first.save(run("w0"), manifest=MANIFEST)
    first.save(waiting, manifest=MANIFEST, client="192.0.2.1")
    last = run("w2", reason="WaitingForCapacity", queue_position=2)
    first.save(last, manifest=MANIFEST)
    assert [s.job_name for s in second.waiting()] == ["task-runner-w1", "task-runner-w2"]
    assert [s.job_name for s in second.unfinished()] == ["task-runner-w0"], "no executor sees a waiting run"
    assert (second.count_waiting(), second.count_unfinished(), second.count_unfinished(client="192.0.2.1")) == (2, 3, 1)

    assert first.claim_admission(waiting.job_name, owner="instance-a", lease_seconds=30)
    assert not second.claim_admission(waiting.job_name, owner="instance-b", lease_seconds=30)
    assert first.claim_admission(waiting.job_name, owner="instance-a", lease_seconds=30), "the holder renews"
    second.save(waiting.evolve(reason=None, queue_position=None))  # later saves do not change whether it waits
    assert second.count_waiting() == 2
    assert first.admit_run(waiting.job_name)
    assert not second.admit_run(waiting.job_name), "admitted once"
    assert not second.claim_admission(waiting.job_name, owner="instance-b", lease_seconds=30)
    assert sorted(s.job_name for s in second.unfinished()) == ["task-runner-w0", "task-runner-w1"]

    second.save(last.evolve(status=Phase.CANCELLED))  # a cancel takes it out of the line
    assert (first.waiting(), first.count_waiting()) == ([], 0)
    assert not first.claim_admission("task-runner-w2", owner="instance-a", lease_seconds=30)
    assert not first.admit_run("task-runner-w2")


def test_an_admitted_run_returns_to_its_place_in_line_unclaimed(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    ahead = run("r1", reason="WaitingForCapacity", queue_position=1)
    behind = run("r2", reason="WaitingForCapacity", queue_position=2)
    first.save(ahead, manifest=MANIFEST)
    first.save(behind, manifest=MANIFEST)
    assert first.claim_admission(ahead.job_name, owner="instance-a", lease_seconds=30)
    assert first.admit_run(ahead.job_name)
    assert [s.job_name for s in second.waiting()] == [behind.job_name]

    assert second.return_to_line(ahead.job_name)  # its executor could not take it now
    assert [s.job_name for s in first.waiting()] == [ahead.job_name, behind.job_name], "at its place again"
    assert (first.count_waiting(), first.unfinished()) == (2, [])
    assert second.claim_admission(ahead.job_name, owner="instance-b", lease_seconds=30), "claimed by nobody"

    first.save(behind.evolve(status=Phase.CANCELLED))
    assert not first.return_to_line(behind.job_name), "a finished run stays out"
    assert [s.job_name for s in second.waiting()] == [ahead.job_name]


def test_an_expired_admission_lets_another_instance_admit_the_run(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    waiting = run("x1", reason="WaitingForCapacity", queue_position=1)
    first.save(waiting, manifest=MANIFEST)
    assert first.claim_admission(waiting.job_name, owner="instance-a", lease_seconds=0.3)
    wait_for(
        lambda: second.claim_admission(waiting.job_name, owner="instance-b", lease_seconds=30),
        timeout=5,
        what="the admission lease to run out",
    )


# -- the audit trail -----------------------------------------------------------------


def test_admin_actions_read_back_whole_newest_first_from_another_store_object(
    stores: tuple[RunStore, RunStore],
) -> None:
    first, second = stores
    launched = admin_action("task-runner-a-1")
    refused = admin_action("task-runner-a-1", actor="bob", action="cancel", status=409, error="conflict")
    ids = [first.record_action(launched), second.record_action(refused)]
    assert ids[0] < ids[1]
    assert second.actions(10) == [
        dataclasses.replace(refused, id=ids[1]),
        dataclasses.replace(launched, id=ids[0]),
    ]
    assert first.actions(10) == second.actions(10)


def test_admin_actions_page_by_limit_and_before(store: RunStore) -> None:
    ids = [store.record_action(admin_action(f"task-runner-p-{index}")) for index in range(5)]
    assert [a.id for a in store.actions(2)] == [ids[4], ids[3]]
    assert [a.id for a in store.actions(2, before=ids[3])] == [ids[2], ids[1]]
    assert [a.id for a in store.actions(10, before=ids[1])] == [ids[0]]
    assert store.actions(10, before=ids[0]) == []
    assert store.actions(0) == []


def test_concurrent_admin_actions_get_distinct_ids(stores: tuple[RunStore, RunStore]) -> None:
    recorded: list[int] = []
    lock = threading.Lock()

    def record(store: RunStore, index: int) -> None:
        action_id = store.record_action(admin_action(f"task-runner-c-{index}"))
        with lock:
            recorded.append(action_id)

    threads = [threading.Thread(target=record, args=(stores[i % 2], i)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(recorded)) == 20
    assert sorted(a.id for a in stores[0].actions(50) if a.id is not None) == sorted(recorded)


def test_purge_forgets_admin_actions_older_than_retention(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    first.record_action(admin_action("task-runner-old", minutes_ago=120))
    kept = first.record_action(admin_action("task-runner-new"))
    second.purge(before=utcnow() - timedelta(minutes=60))
    assert [a.id for a in first.actions(10)] == [kept]
    second.purge(before=utcnow() + timedelta(seconds=5))
    assert first.actions(10) == []


def test_a_log_tail_is_claimed_and_saved_once_across_instances(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    done = run("l1", mode="k8s", status=Phase.SUCCEEDED)
    first.save(done)
    assert second.log_tail(done.job_name) is None, "nothing kept yet"
    assert first.claim_log_tail(done.job_name, lease_seconds=30)
    assert not second.claim_log_tail(done.job_name, lease_seconds=30), "one instance fetches the pod's log"
    assert first.save_log_tail(done.job_name, "line 1\nline ✓ 2\n")
    assert not second.save_log_tail(done.job_name, "another\n"), "the first writer wins"
    assert second.log_tail(done.job_name) == "line 1\nline ✓ 2\n"
    assert not second.claim_log_tail(done.job_name, lease_seconds=0.1), "a kept tail is never claimed again"
    second.save(run("l1", mode="k8s", status=Phase.SUCCEEDED, reason="again"))  # a refused later save
    assert first.log_tail(done.job_name) == "line 1\nline ✓ 2\n"


def test_an_expired_log_tail_claim_lets_another_instance_save_it(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    done = run("l2", mode="k8s", status=Phase.FAILED)
    first.save(done)
    assert first.claim_log_tail(done.job_name, lease_seconds=0.3)
    wait_for(
        lambda: second.claim_log_tail(done.job_name, lease_seconds=30),
        timeout=5,
        what="the claim to run out",
    )
    assert second.save_log_tail(done.job_name, "kept\n")


def test_unknown_runs_keep_no_log_tail(store: RunStore) -> None:
    assert not store.claim_log_tail("task-runner-nobody", lease_seconds=30)
    assert not store.save_log_tail("task-runner-nobody", "text\n")
    assert store.log_tail("task-runner-nobody") is None


def test_a_log_tail_is_purged_and_deleted_with_its_run(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    old = run("l3", minutes_ago=120, status=Phase.SUCCEEDED)
    doomed = run("l4", status=Phase.SUCCEEDED)
    for status in (old, doomed):
        first.save(status)
        assert first.save_log_tail(status.job_name, "out\n")
    assert second.purge(before=utcnow() - timedelta(minutes=60)) == 1
    second.delete(doomed.job_name)
    assert (first.log_tail(old.job_name), first.log_tail(doomed.job_name)) == (None, None)
    first.save(doomed)  # the same name again starts with no tail
    assert first.log_tail(doomed.job_name) is None


def test_a_sqlite_file_from_before_log_tails_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SQLiteRunStore(path).close()
    with sqlite3.connect(path) as old:
        old.execute("ALTER TABLE runs DROP COLUMN log_tail")
        old.execute("ALTER TABLE runs DROP COLUMN log_claim_until")
    store = SQLiteRunStore(path)
    store.save(run("l5", status=Phase.SUCCEEDED))
    assert store.save_log_tail("task-runner-l5", "kept\n")
    assert store.log_tail("task-runner-l5") == "kept\n"
    store.close()


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "DeadlineExceeded", "message": "another instance's view"},
        {"finished_at": "2026-01-01T00:00:00.000Z"},
        {"history": []},
        {"rerun_of": "task-runner-c3-first"},
        {"cancel_requested": True},
        {"observed": "99"},
    ],
)
def test_a_finished_run_takes_no_other_change_of_the_same_outcome_as_the_hub_takes_none(
    stores: tuple[RunStore, RunStore], change: dict[str, Any]
) -> None:
    first, second = stores
    failed = as_stored(run("c3").evolve(status=Phase.FAILED, reason="BackoffLimitExceeded"))
    first.save(failed)
    other = JobStatus.from_dict({**failed.to_dict(), "seq": failed.seq + 1, "reruns": ["task-runner-c3-b"], **change})
    assert not other.amends(failed)
    assert not second.save(other)
    assert first.get(failed.job_name) == failed
    linked = as_stored(failed.evolve(reruns=("task-runner-c3-b",)))
    assert linked.amends(failed) and second.save(linked)  # what the hub takes, the store takes


def test_a_run_stored_before_rerun_links_existed_still_takes_one(stores: tuple[RunStore, RunStore]) -> None:
    first, second = stores
    failed = as_stored(run("c4").evolve(status=Phase.FAILED))
    old_body = {k: v for k, v in failed.to_dict().items() if k not in ("rerun_of", "reruns")}
    first.save(JobStatus.from_dict(old_body))
    if isinstance(first, SQLiteRunStore):  # written as an older version wrote it: without the two fields
        with sqlite3.connect(first.path) as db:
            db.execute("UPDATE runs SET body = ? WHERE job_name = ?", (json.dumps(old_body), failed.job_name))
    else:
        assert isinstance(first, RedisRunStore)
        first._redis.hset(first._run_key(failed.job_name), "body", json.dumps(old_body))
    assert second.save(as_stored(failed.evolve(reruns=("task-runner-c4-b",))))
    assert first.get(failed.job_name).reruns == ("task-runner-c4-b",)  # type: ignore[union-attr]


# -- webhook_delivery: where a run's completion webhook stands, read through the second store object --

HOOK_JOB = "task-runner-hook-0001"


def test_a_run_without_a_webhook_has_no_delivery(stores: tuple[RunStore, RunStore]) -> None:
    _, reader = stores
    assert reader.webhook_delivery(HOOK_JOB) is None


def test_an_enqueued_webhook_is_pending(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    assert reader.webhook_delivery(HOOK_JOB) == WebhookDelivery(state="pending", attempts=0, last_error=None)


def test_a_claimed_webhook_is_still_pending(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    writer.claim_webhooks(owner="sender-a", lease_seconds=30, limit=10)
    assert reader.webhook_delivery(HOOK_JOB) == WebhookDelivery(state="pending", attempts=0, last_error=None)


def test_a_failed_attempt_is_failing_with_its_error_and_count(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    writer.reschedule_webhook(HOOK_JOB, delay=60, error="HTTP 502 from the receiver")
    writer.reschedule_webhook(HOOK_JOB, delay=60, error="timed out after 5 s")
    assert reader.webhook_delivery(HOOK_JOB) == WebhookDelivery(
        state="failing", attempts=2, last_error="timed out after 5 s"
    )


def test_a_delivered_webhook_is_delivered_and_keeps_its_history(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    writer.reschedule_webhook(HOOK_JOB, delay=0, error="connection refused")
    writer.complete_webhook(HOOK_JOB)
    assert reader.webhook_delivery(HOOK_JOB) == WebhookDelivery(
        state="delivered", attempts=1, last_error="connection refused"
    )


def test_a_delivery_is_told_as_the_api_shows_it(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    writer.complete_webhook(HOOK_JOB)
    delivery = reader.webhook_delivery(HOOK_JOB)
    assert delivery is not None
    assert delivery.to_dict() == {"state": "delivered", "attempts": 0, "last_error": None}


def test_a_webhook_given_up_after_its_last_attempt_says_so_and_is_never_claimed_again(
    stores: tuple[RunStore, RunStore],
) -> None:
    writer, reader = stores
    writer.enqueue_webhook(HOOK_JOB, "{}")
    writer.reschedule_webhook(HOOK_JOB, delay=0, error="HTTP 502 from the receiver")
    writer.complete_webhook(HOOK_JOB, gave_up="HTTP 503 from the receiver")
    assert reader.webhook_delivery(HOOK_JOB) == WebhookDelivery(
        state="given_up", attempts=2, last_error="HTTP 503 from the receiver"
    )
    assert reader.claim_webhooks(owner="another", lease_seconds=30, limit=10) == []
    assert not writer.enqueue_webhook(HOOK_JOB, "{}"), "kept, so a late finish does not send it again"
