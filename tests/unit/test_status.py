from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from webapp.status import JobStatus, Phase, Progress, finished_by, utcnow
from webapp.wire import SSE_END, sse_status_frame, ws_error_message, ws_status_message

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def queued() -> JobStatus:
    return JobStatus.new(job_name="task-runner-x-0badcafe", mode="legacy", spec="quick", pipeline_run_id="x", at=T0)


def test_a_new_status_is_queued_with_one_history_entry() -> None:
    status = queued()
    assert status.status == Phase.QUEUED
    assert status.seq == 1
    assert not status.terminal
    body = status.to_dict()
    assert body["history"] == [{"status": "Queued", "at": "2026-11-28T12:00:00.000Z"}]
    assert body["created_at"] == "2026-11-28T12:00:00.000Z"
    assert "shadow_job_name" not in body


def test_evolve_grows_seq_and_history_and_sets_times() -> None:
    running = queued().evolve(status="Running", active=1, at=T0 + timedelta(seconds=1))
    done = running.evolve(status=Phase.SUCCEEDED, succeeded=1, at=T0 + timedelta(seconds=3))
    assert [running.seq, done.seq] == [2, 3]
    assert [t.status for t in done.history] == [Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED]
    assert done.started_at == T0 + timedelta(seconds=1)
    assert done.finished_at == T0 + timedelta(seconds=3)
    assert done.active == 0
    assert done.terminal


def test_evolve_without_change_returns_the_same_status() -> None:
    status = queued()
    assert status.evolve(status="Queued", reason=None) is status


def test_a_counter_change_is_a_change_without_a_history_entry() -> None:
    pending = queued().evolve(status="Pending")
    again = pending.evolve(failed=1, reason="RetryBackoff")
    assert again.seq == pending.seq + 1
    assert len(again.history) == len(pending.history)


@pytest.mark.parametrize("final", [Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED])
def test_terminal_statuses_are_final(final: Phase) -> None:
    done = queued().evolve(status=final)
    assert done.terminal
    assert done.evolve(status="Running") is done


@pytest.mark.parametrize("phase", list(Phase))
def test_terminal_is_exactly_succeeded_failed_cancelled(phase: Phase) -> None:
    assert phase.terminal == (phase.value in ("Succeeded", "Failed", "Cancelled"))


def test_round_trip_through_json() -> None:
    status = queued().evolve(status="Running", active=1, reason="r", message="m")
    status = JobStatus.from_json(status.json)
    assert JobStatus.from_json(status.json) == status
    assert json.loads(status.json) == status.to_dict()


def test_wire_formats_carry_the_same_object() -> None:
    status = queued().evolve(status="Running")
    frame = sse_status_frame(status).decode()
    assert frame.startswith(f"id: {status.seq}\nevent: status\ndata: ")
    assert frame.endswith("\n\n")
    assert "\n" not in frame.split("data: ", 1)[1].rstrip("\n")
    assert json.loads(frame.split("data: ", 1)[1]) == status.to_dict()
    assert json.loads(ws_status_message(status)) == {"type": "status", **status.to_dict()}
    assert json.loads(ws_error_message("not_found", "no")) == {"type": "error", "error": "not_found", "message": "no"}
    assert SSE_END == b"event: end\ndata: {}\n\n"


def test_progress_is_a_change_without_a_history_entry_and_a_final_status_keeps_it() -> None:
    running = JobStatus.new(job_name="task-runner-p-0123abcd", mode="legacy", spec="quick", pipeline_run_id="p").evolve(
        status=Phase.RUNNING
    )
    step = running.evolve(progress=Progress(done=1, total=4, text="Validating", at=utcnow()))
    assert step.seq == running.seq + 1 and step.history == running.history
    assert step.evolve(progress=Progress(done=1, total=4, text="Validating", at=utcnow())) is step, "same report"
    done = step.evolve(status=Phase.SUCCEEDED)
    assert done.progress == Progress(done=1, total=4, text="Validating")
    assert JobStatus.from_json(done.json) == JobStatus.from_json(JobStatus.from_json(done.json).json)
    assert JobStatus.from_json(done.json).progress == done.progress
    assert done.to_dict()["progress"] == {
        "done": 1,
        "total": 4,
        "text": "Validating",
        "at": done.to_dict()["progress"]["at"],
    }


def test_queue_position_while_queued_only() -> None:
    queued = JobStatus.new(job_name="task-runner-q-0123abcd", mode="legacy", spec="quick", pipeline_run_id="q")
    assert queued.to_dict()["queue_position"] is None and queued.to_dict()["progress"] is None
    second = queued.evolve(queue_position=2)
    assert (second.seq, second.queue_position) == (2, 2)
    assert second.evolve(status=Phase.PENDING).queue_position is None


def test_a_finished_status_takes_only_new_rerun_links_with_a_new_seq_and_no_history_entry() -> None:
    done = queued().evolve(status=Phase.FAILED, reason="BackoffLimitExceeded", at=T0 + timedelta(seconds=2))
    linked = done.evolve(reruns=["task-runner-x-11111111"], status="Running", reason="nope", at=T0 + timedelta(1))
    assert linked.reruns == ("task-runner-x-11111111",)
    assert (linked.status, linked.reason, linked.history) == (Phase.FAILED, "BackoffLimitExceeded", done.history)
    assert linked.seq == done.seq + 1
    assert linked.finished_at == done.finished_at
    assert linked.amends(done)
    assert not done.amends(linked)  # an older seq
    assert linked.evolve(reruns=("task-runner-x-11111111",)) is linked  # the same links: no change
    other_outcome = JobStatus.from_dict({**linked.to_dict(), "status": "Succeeded"})
    assert not other_outcome.amends(done)
    assert not queued().evolve(reruns=("a",)).amends(queued())  # only a finished status is amended


def test_a_finished_status_made_here_takes_rerun_links_from_its_copy_that_came_through_a_store() -> None:
    """Another instance's copy has the wire's milliseconds; this one's own status its clock's microseconds."""
    done = queued().evolve(status=Phase.SUCCEEDED, at=T0 + timedelta(seconds=2, microseconds=123_456))
    relayed = JobStatus.from_json(done.json)  # through the run store or the Redis relay
    assert relayed.finished_at != done.finished_at  # 123 ms, not 123.456 ms
    linked_elsewhere = relayed.evolve(reruns=["task-runner-x-11111111"])
    assert linked_elsewhere.amends(done)  # this instance's hub takes the other's rerun link
    assert done.evolve(reruns=["task-runner-x-22222222"]).amends(relayed)  # and the other takes this one's
    assert not JobStatus.from_dict({**linked_elsewhere.to_dict(), "status": "Failed"}).amends(done)


def test_rerun_links_are_in_every_transports_json_and_round_trip() -> None:
    status = dataclasses.replace(queued(), rerun_of="task-runner-x-00000001", reruns=("task-runner-x-00000003",))
    body = json.loads(status.json)
    assert (body["rerun_of"], body["reruns"]) == ("task-runner-x-00000001", ["task-runner-x-00000003"])
    assert JobStatus.from_json(status.stored_json) == status
    assert json.loads(sse_status_frame(status).decode().split("data: ", 1)[1])["reruns"] == ["task-runner-x-00000003"]
    assert json.loads(ws_status_message(status))["rerun_of"] == "task-runner-x-00000001"
    plain = json.loads(queued().json)
    assert (plain["rerun_of"], plain["reruns"]) == (None, [])


def test_a_status_stored_before_rerun_links_existed_still_loads() -> None:
    body = queued().to_dict()
    del body["rerun_of"], body["reruns"]
    old = JobStatus.from_dict(body)
    assert (old.rerun_of, old.reruns) == (None, ())


def test_finished_by_is_true_for_a_new_final_status_and_false_for_an_amendment_even_without_its_previous() -> None:
    started = JobStatus.new(job_name="jp-abc-1", mode="k8s", spec="quick", pipeline_run_id="abc").evolve(
        status=Phase.RUNNING
    )
    completed_earlier = utcnow() - timedelta(seconds=30)  # a Job's completionTime comes before the status saying so
    final = started.evolve(status=Phase.SUCCEEDED, finished_at=completed_earlier)
    amended = final.evolve(reruns=("jp-abc-2",), at=final.updated_at + timedelta(milliseconds=5))
    assert finished_by(final, started) and finished_by(final, None)  # None: first heard from another instance
    assert not final.amended and amended.amended
    assert not finished_by(amended, final) and not finished_by(amended, None)
    over_the_wire = JobStatus.from_json(amended.stored_json)
    assert not finished_by(over_the_wire, None) and finished_by(JobStatus.from_json(final.json), None)
    assert not finished_by(started, None) and not finished_by(started.evolve(progress=Progress(done=1)), started)


def test_an_amendment_in_the_same_millisecond_as_the_finish_is_still_an_amendment_on_the_wire() -> None:
    final = queued().evolve(status=Phase.FAILED)
    amended = final.evolve(reruns=("jp-abc-2",), at=final.updated_at)
    assert amended.updated_at > final.updated_at and amended.history == final.history
    assert JobStatus.from_json(amended.json).amended and not JobStatus.from_json(final.json).amended
