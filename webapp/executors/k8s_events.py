"""Why a Job has no pod: the Job controller's ``FailedCreate`` events, one list+watch per process.

A Job whose pods cannot be created (a ``ResourceQuota``, PodSecurity, an
admission webhook) changes nothing in its own status: only an Event says so.
One :class:`~webapp.kube.reflector.Reflector` per process lists and watches
the namespace's Events with ``involvedObject.kind=Job,reason=FailedCreate``
(the API server filters; no other Event reaches us), whatever the number of
Jobs or of open streams. :class:`CreateFailureWatcher`, its handler, hands
each such Event's Job name and message to ``on_failed_create`` (the Job
watcher, which keeps only the Jobs of runs it knows and writes the change
through the status door).

The watch only explains waits: while it fails, a Job without pods says
``Pending`` without a reason, as before. So it never makes the process
unready; it logs ``watch.restarted`` with ``source`` ``k8s-events`` and
retries, like the Job watch (a Role without ``events`` list/watch is such a
failure).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes import client

from webapp.k8s_status import FAILED_CREATE, failed_create
from webapp.kube.reflector import Reflector, list_watch

SOURCE = "k8s-events"
"""The ``source`` of this watch's ``watch.*`` log lines and ``WATCH_RESTARTS`` metric."""
FIELD_SELECTOR = f"involvedObject.kind=Job,reason={FAILED_CREATE}"
"""What the API server sends us: only the Job controller's "cannot create a pod" Events."""


def _event_time(event: dict[str, Any]) -> str:
    """When an Event (or its latest repeat) happened, as an RFC 3339 string that sorts in time order."""
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or ""
    )


class CreateFailureWatcher:
    """The reflector's handler for ``FailedCreate`` Events of Jobs: each becomes ``on_failed_create(job, message)``."""

    def __init__(self, *, core: client.CoreV1Api, namespace: str, on_failed_create: Callable[[str, str], None]) -> None:
        self.namespace = namespace
        self._core = core
        self._on_failed_create = on_failed_create
        list_events, watch_events = list_watch(core.list_namespaced_event, namespace, field_selector=FIELD_SELECTOR)
        self.reflector = Reflector(list_objects=list_events, watch_objects=watch_events, handler=self, source=SOURCE)

    def run(self) -> None:
        self.reflector.run()

    def stop(self) -> None:
        self.reflector.stop()

    # -- the reflector's handler ---------------------------------------------------

    def on_list(self, events: list[dict[str, Any]], *, requested_at: datetime) -> None:
        """Report each listed failure, oldest first, so each Job ends with its latest message."""
        for event in sorted(events, key=_event_time):
            self._report(event)

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind != "DELETED":  # an Event expiring (its TTL) says nothing about the Job now
            self._report(event)

    def _report(self, event: dict[str, Any]) -> None:
        if (failure := failed_create(event)) is not None:
            self._on_failed_create(*failure)
