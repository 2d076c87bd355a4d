"""Fair shares on the real gunicorn server, with either run store: ``MAX_ACTIVE_JOBS`` and idempotency keys per client.

Clients are told apart by their source address (127.0.0.2, 127.0.0.3, ...:
all loopback), exactly as the server sees different donors.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.live.clients import DONATION, post_json_from
from tests.live.server import LiveServer

pytestmark = [pytest.mark.redis, pytest.mark.live]


@pytest.fixture(params=["sqlite", "redis"])
def start_server(
    request: pytest.FixtureRequest, make_live_server: Callable[..., LiveServer]
) -> Callable[..., LiveServer]:
    """Start the live server on the SQLite run store, or on a real redis-server."""
    store = {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}

    def start(**overrides: str) -> LiveServer:
        return make_live_server(**store, **overrides)

    return start


def donate_from(server: LiveServer, source: str, **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    return post_json_from(server.port, "/api/donations", DONATION, source=source, headers=headers)


def test_two_clients_cannot_take_every_slot(start_server: Callable[..., LiveServer]) -> None:
    # the donation task sleeps 30 s here: every launch stays unfinished for the whole test
    server = start_server(MAX_ACTIVE_JOBS="5", MAX_ACTIVE_JOBS_PER_CLIENT="2", DONATION_JOBSPEC="slow")
    for source in ("127.0.0.2", "127.0.0.3"):
        assert [donate_from(server, source)[0] for _ in range(2)] == [202, 202]
        refused, body = donate_from(server, source)
        assert refused == 429
        assert body["error"] == "too_many_active_jobs"
        assert "this address" in body["message"]
    assert donate_from(server, "127.0.0.4")[0] == 202  # a third client still gets a slot
    refused, body = donate_from(server, "127.0.0.5")
    assert refused == 429  # all five are taken: the global limit holds too
    assert "this address" not in body["message"]


def test_the_default_share_is_a_tenth_of_max_active_jobs(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(MAX_ACTIVE_JOBS="20", DONATION_JOBSPEC="slow")
    assert [donate_from(server, "127.0.0.2")[0] for _ in range(3)] == [202, 202, 429]
    assert donate_from(server, "127.0.0.3")[0] == 202


def test_an_idempotency_key_belongs_to_the_client_that_used_it(start_server: Callable[..., LiveServer]) -> None:
    server = start_server()
    mine, first = post_json_from(
        server.port, "/api/donations", DONATION, source="127.0.0.2", headers={"Idempotency-Key": "order-1"}
    )
    other_body = {**DONATION, "amount": "99.00"}
    theirs, second = post_json_from(
        server.port, "/api/donations", other_body, source="127.0.0.3", headers={"Idempotency-Key": "order-1"}
    )
    assert (mine, theirs) == (202, 202)
    assert first["job_name"] != second["job_name"]
    again, repeat = post_json_from(
        server.port, "/api/donations", other_body, source="127.0.0.3", headers={"Idempotency-Key": "order-1"}
    )
    assert (again, repeat["job_name"]) == (200, second["job_name"])
    conflict, _ = post_json_from(
        server.port, "/api/donations", DONATION, source="127.0.0.3", headers={"Idempotency-Key": "order-1"}
    )
    assert conflict == 409
