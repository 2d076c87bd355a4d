"""``jobpulse_status_transitions_total`` counts each phase a run went through, once."""

from __future__ import annotations

from prometheus_client import REGISTRY

from webapp.runtime import Runtime
from webapp.status import JobStatus, Phase


def count(status: str) -> float:
    return REGISTRY.get_sample_value("jobpulse_status_transitions_total", {"mode": "legacy", "status": status}) or 0.0


def test_a_run_first_heard_of_at_its_second_phase_counts_both_and_repeats_count_nothing() -> None:
    before = {phase: count(phase) for phase in ("Queued", "Pending", "Running")}
    queued = JobStatus.new(job_name="task-runner-m-0123abcd", mode="legacy", spec="quick", pipeline_run_id="m")
    pending = queued.evolve(status=Phase.PENDING)
    running = pending.evolve(status=Phase.RUNNING)

    Runtime.count_change(pending, None)  # the executor moved it on before the launch published Queued
    Runtime.count_change(pending.evolve(active=1), pending)  # no new phase
    Runtime.count_change(running, pending.evolve(active=1))

    assert {phase: count(phase) - before[phase] for phase in before} == {"Queued": 1, "Pending": 1, "Running": 1}
