"""``webhook_delivery``: where a run's completion webhook stands, the same in both run stores.

Read from a second store object on the same backend (another process's view of one SQLite file,
another instance's client of one Redis), so the state is the stored one, not an object's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis.conftest import redis_server, redis_url  # noqa: F401 - fixtures for the Redis store
from webapp.runstore import RunStore, WebhookDelivery
from webapp.runstore.redis import RedisRunStore
from webapp.runstore.sqlite import SQLiteRunStore

pytestmark = pytest.mark.redis

JOB = "task-runner-hook-0001"


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunStore, RunStore]]:
    """Two store objects sharing one backend: the writer and the reader."""
    make: Callable[[], RunStore]
    if request.param == "sqlite":
        path = tmp_path / "runs.sqlite3"

        def make() -> RunStore:
            return SQLiteRunStore(path)
    else:
        url: str = request.getfixturevalue("redis_url")

        def make() -> RunStore:
            return RedisRunStore(url)

    writer, reader = make(), make()
    yield writer, reader
    writer.close()
    reader.close()


def test_a_run_without_a_webhook_has_no_delivery(stores: tuple[RunStore, RunStore]) -> None:
    _, reader = stores
    assert reader.webhook_delivery(JOB) is None


def test_an_enqueued_webhook_is_pending(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    assert reader.webhook_delivery(JOB) == WebhookDelivery(state="pending", attempts=0, last_error=None)


def test_a_claimed_webhook_is_still_pending(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    writer.claim_webhooks(owner="sender-a", lease_seconds=30, limit=10)
    assert reader.webhook_delivery(JOB) == WebhookDelivery(state="pending", attempts=0, last_error=None)


def test_a_failed_attempt_is_failing_with_its_error_and_count(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    writer.reschedule_webhook(JOB, delay=60, error="HTTP 502 from the receiver")
    writer.reschedule_webhook(JOB, delay=60, error="timed out after 5 s")
    assert reader.webhook_delivery(JOB) == WebhookDelivery(
        state="failing", attempts=2, last_error="timed out after 5 s"
    )


def test_a_delivered_webhook_is_delivered_and_keeps_its_history(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    writer.reschedule_webhook(JOB, delay=0, error="connection refused")
    writer.complete_webhook(JOB)
    assert reader.webhook_delivery(JOB) == WebhookDelivery(
        state="delivered", attempts=1, last_error="connection refused"
    )


def test_a_delivery_is_told_as_the_api_shows_it(stores: tuple[RunStore, RunStore]) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    writer.complete_webhook(JOB)
    delivery = reader.webhook_delivery(JOB)
    assert delivery is not None
    assert delivery.to_dict() == {"state": "delivered", "attempts": 0, "last_error": None}


def test_a_webhook_given_up_after_its_last_attempt_says_so_and_is_never_claimed_again(
    stores: tuple[RunStore, RunStore],
) -> None:
    writer, reader = stores
    writer.enqueue_webhook(JOB, "{}")
    writer.reschedule_webhook(JOB, delay=0, error="HTTP 502 from the receiver")
    writer.complete_webhook(JOB, gave_up="HTTP 503 from the receiver")
    assert reader.webhook_delivery(JOB) == WebhookDelivery(
        state="given_up", attempts=2, last_error="HTTP 503 from the receiver"
    )
    assert reader.claim_webhooks(owner="another", lease_seconds=30, limit=10) == []
    assert not writer.enqueue_webhook(JOB, "{}"), "kept, so a late finish does not send it again"
