"""A donation that waits for a slot says its place on the real gunicorn worker's SSE stream, then runs."""

from __future__ import annotations

from collections.abc import Callable

from tests.live.clients import curl_sse, donate, wait_for_status
from tests.live.server import LiveServer


def test_a_second_donation_streams_its_place_in_line_then_runs(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(LEGACY_MAX_CONCURRENCY="1")
    first = donate(server)["job_name"]
    wait_for_status(server, first, "Running")  # it holds the only slot for its four steps

    second = donate(server)["job_name"]
    code, frames, raw = curl_sse(server, second)

    assert code == 0, raw
    seen = [f["data"] for f in frames if f.get("event") == "status"]
    waiting = [s for s in seen if s["queue_position"] is not None]
    assert waiting, f"a frame with its place in line: {seen}"
    assert (waiting[0]["status"], waiting[0]["reason"], waiting[0]["queue_position"]) == ("Queued", "WaitingForSlot", 1)
    assert waiting[0]["message"] == "1 tasks running; 0 ahead in line"
    after = seen[seen.index(waiting[-1]) + 1 :]
    assert [s["status"] for s in after][-2:] == ["Running", "Succeeded"], seen
    assert all(s["queue_position"] is None for s in after), "out of line, no place"
    assert frames[-1] == {"event": "end", "data": {}}


def test_a_donation_over_max_active_jobs_streams_its_place_then_runs(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(
        MAX_ACTIVE_JOBS="1", MAX_QUEUED_JOBS="5", MAX_ACTIVE_JOBS_PER_CLIENT="2", LEGACY_MAX_CONCURRENCY="10"
    )
    first = donate(server)["job_name"]
    wait_for_status(server, first, "Running")

    accepted = donate(server)
    assert (accepted["status"], accepted["reason"], accepted["queue_position"]) == ("Queued", "WaitingForCapacity", 1)
    code, frames, raw = curl_sse(server, accepted["job_name"])

    assert code == 0, raw
    seen = [f["data"] for f in frames if f.get("event") == "status"]
    waiting = [s for s in seen if s["reason"] == "WaitingForCapacity"]
    assert waiting, f"a frame with its place in line: {seen}"
    assert (waiting[0]["status"], waiting[0]["queue_position"]) == ("Queued", 1)
    assert waiting[0]["message"] == "1 tasks are running; waiting for one to finish (next in line)"
    after = seen[seen.index(waiting[-1]) + 1 :]
    assert [s["status"] for s in after][-2:] == ["Running", "Succeeded"], seen
    assert all(s["queue_position"] is None for s in after), "out of line, no place"
    assert frames[-1] == {"event": "end", "data": {}}
