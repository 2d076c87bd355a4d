"""The feed of every run behind ``/sse/runs`` and ``/ws/runs``: a first list, then each change a filter wants.

Transport-free: it reads an :class:`~webapp.hub.AllRunsSubscription` and a
function that lists runs from the run store, and yields what to send; the SSE
view and the WebSocket route only put it on the wire (:func:`sse_runs_message`,
:func:`ws_runs_message`, …).

What a client is sent, so that it needs nothing else to keep an up-to-date list:

- first the current list (newest first, filtered);
- then each change of a run the filter wants, whole, never older than what the
  client has for that job (a change that raced the first list is skipped);
- a run the client was sent that stops matching (``status=Running`` and it
  finished) gets one last message, its new status, so the client can drop it;
- when the hub's mailbox overflowed (:class:`~webapp.hub.RunChanges`), or the
  runs it remembers pass :data:`MAX_TRACKED_RUNS`, a fresh list instead:
  memory stays bounded however long the stream is open;
- ``None`` at each heartbeat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from webapp.api.run_filters import RunFilter
from webapp.hub import AllRunsSubscription
from webapp.status import JobStatus

MAX_TRACKED_RUNS = 10_000
"""The most runs a feed remembers the ``seq`` of; past that it sends a fresh list and starts over."""


@dataclasses.dataclass(frozen=True)
class RunsList:
    """The whole list a client should show (it replaces what the client had)."""

    runs: list[JobStatus]


def runs_feed(
    subscription: AllRunsSubscription,
    *,
    first: list[JobStatus],
    list_runs: Callable[[], list[JobStatus]],
    wanted: RunFilter,
    tracked_limit: int = MAX_TRACKED_RUNS,
) -> Iterator[RunsList | JobStatus | None]:
    """The messages of one client's feed, ``first`` the list read after ``subscription`` was taken.

    Raises :class:`~webapp.hub.HubClosed` when the process shuts down, and what
    ``list_runs`` raises (the run store is down) when a fresh list is due.
    """
    sent: dict[str, int] = {}
    """Per job the client holds and may still hear of: the ``seq`` it was sent (listed, or unfinished and matching)."""

    def listed(runs: list[JobStatus]) -> RunsList:
        sent.clear()
        sent.update((run.job_name, run.seq) for run in runs)
        return RunsList(runs)

    yield listed(first)
    while True:
        changes = subscription.get()
        if changes is None:
            yield None
            continue
        if changes.overflowed:
            yield listed(list_runs())
            continue
        for status in changes.statuses:
            held = sent.get(status.job_name)
            if held is not None and status.seq <= held:
                continue  # the client has this one, or a newer one, already
            if wanted.matches(status):
                if status.terminal:
                    sent.pop(status.job_name, None)  # nothing follows a final status
                else:
                    sent[status.job_name] = status.seq
                yield status
            elif held is not None:
                del sent[status.job_name]
                yield status  # the last word on a run that no longer matches
        if len(sent) > tracked_limit:
            yield listed(list_runs())


def _json_list(runs: list[JobStatus]) -> str:
    return "[" + ",".join(run.json for run in runs) + "]"


def sse_runs_message(runs: list[JobStatus]) -> bytes:
    """The list as one SSE event, ``event: runs``."""
    return f'event: runs\ndata: {{"runs":{_json_list(runs)}}}\n\n'.encode()


def sse_run_status_message(status: JobStatus) -> bytes:
    """One run's status as an SSE event, ``event: status`` (no ``id``: ``seq`` counts per job, not per stream)."""
    return f"event: status\ndata: {status.json}\n\n".encode()


def ws_runs_message(runs: list[JobStatus]) -> str:
    return f'{{"type":"runs","runs":{_json_list(runs)}}}'


def ws_run_status_message(status: JobStatus) -> str:
    return f'{{"type":"status","status":{status.json}}}'
