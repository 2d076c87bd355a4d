"""Two real instances in Kubernetes mode on one real control plane and one real redis-server.

Each instance watches the Jobs itself; the run store they share numbers the
statuses. So a client of either instance sees the same status under the same
``seq``, and one that switches instances mid-run (a reconnect through a load
balancer) neither misses a change nor sees one twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import parse_sse, statuses, wait_for
from tests.live.clients import ADMIN, launch, start_curl_sse, status
from tests.live.server import LiveServer
from tests.redis.conftest import redis_server, redis_url  # noqa: F401  # fixtures, for this module too

pytestmark = [pytest.mark.redis, pytest.mark.live]


@pytest.fixture
def two_instances(
    make_live_server: Callable[..., LiveServer],
    k8s_env: dict[str, str],
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> tuple[LiveServer, LiveServer]:
    a, b = (
        make_live_server(**k8s_env, REDIS_URL=redis_url, DATABASE_PATH=str(tmp_path / label / "jobpulse.sqlite3"))
        for label in ("a", "b")
    )
    return a, b


def test_an_operators_cancel_through_either_instance_is_an_operators_cancel_on_both(
    two_instances: tuple[LiveServer, LiveServer],
) -> None:
    """Whichever instance's watch sees the Job go first, the run says an operator cancelled it."""
    a, b = two_instances
    for canceller in (a, b, a, b, b, b):
        name = launch(a, "slow")
        wait_for(lambda: status(b, name)["status"] in ("Pending", "Running"), what="B to know the run")  # noqa: B023
        answer = requests.delete(f"{canceller.url}/api/jobs/{name}", headers=ADMIN, timeout=10)
        assert answer.status_code == 200, answer.text
        for instance in (a, b):
            final = wait_for(
                lambda: (s := status(instance, name))["terminal"] and s,  # noqa: B023
                what=f"{name} to end on {instance.url}",
            )
            assert (final["status"], final["reason"]) == ("Cancelled", "Cancelled"), final
        assert status(a, name) == status(b, name)


def test_two_instances_give_each_status_of_a_job_the_same_seq(
    make_live_server: Callable[..., LiveServer],
    k8s_env: dict[str, str],
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = (
        make_live_server(**k8s_env, REDIS_URL=redis_url, DATABASE_PATH=str(tmp_path / label / "jobpulse.sqlite3"))
        for label in ("a", "b")
    )
    name = launch(a, "medium")
    curls = {label: start_curl_sse(instance, name) for label, instance in (("a", a), ("b", b))}
    seen: dict[str, dict[int, tuple[str, int, str | None]]] = {}
    for label, curl in curls.items():
        out, err = curl.communicate(timeout=90)
        assert curl.returncode == 0, err
        frames = parse_sse(out)
        assert statuses(frames)[-1] == "Succeeded", frames
        seen[label] = {
            f["data"]["seq"]: (f["data"]["status"], f["data"]["active"], f["data"]["reason"])
            for f in frames
            if f.get("event") == "status"
        }

    assert status(a, name) == status(b, name), "one final status under one seq on both instances"
    both = seen["a"].keys() & seen["b"].keys()
    assert len(both) >= 2, f"both followed the run live: {seen}"
    for seq in sorted(both):
        assert seen["a"][seq] == seen["b"][seq], f"seq {seq} is one status on both instances: {seen}"
