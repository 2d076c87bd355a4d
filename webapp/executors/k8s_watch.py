"""The status source from Kubernetes: what our Jobs (and their pods) say, as statuses.

One list+watch of the Jobs carrying our ``managed-by`` label per process:
a :class:`~webapp.kube.reflector.Reflector` lists, watches and relists them;
:class:`JobWatcher` is its handler. Each Job object it reports becomes status
fields (:func:`~webapp.k8s_status.job_fields`, the pure translator), a
change through the status door (:class:`~webapp.door.StatusDoor`); a listing
is also diffed against the run store, so runs whose Jobs vanished unfinished
become ``Cancelled``. An operator's cancel is told apart from an outside
deletion (``expect_cancel`` / ``mark_cancelled``).

While a Job waits with an active pod that is not ready, a :class:`PodProber`
looks at its pods (one list per probe for all such Jobs, never per client) to
say why: ``Unschedulable``, ``ImagePullBackOff``, ... While a Job has no pod
because none can be created, the ``FailedCreate`` Events watch
(:mod:`webapp.executors.k8s_events`, one per process) says why; the watcher
keeps that message until the Job shows an active pod or ends.

``stop()`` ends the three threads at once: each reflector shuts its watch's
socket down, the prober wakes from its wait.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webapp.door import CANCEL_REQUESTED, OPERATOR_CANCEL, StatusDoor
from webapp.executors.k8s_events import CreateFailureWatcher
from webapp.k8s_status import job_fields, new_status_for, pod_waiting
from webapp.kube.client import JOB_NAME_LABEL, MANAGED_SELECTOR, raw_json
from webapp.kube.reflector import Reflector, list_watch
from webapp.runstore import launch_began
from webapp.status import Phase, utcnow

logger = logging.getLogger(__name__)

POD_PROBE_SECONDS = 2.0
LAUNCH_GRACE = timedelta(seconds=60)
"""A run younger than this (or admitted from the line so recently) may be missing from a list: its Job is new."""
STOP_TIMEOUT = 2.0
"""How long ``stop()`` waits for the threads (the pod probe may be inside a short API call)."""


class JobWatcher:
    """The reflector's handler for our Jobs: each Job object reported becomes its run's status."""

    def __init__(self, *, door: StatusDoor, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._door = door
        self._batch = client.BatchV1Api(api)
        self._cancelling: set[str] = set()
        """Jobs the app is deleting: their disappearance is a cancel, not an outside deletion."""
        self._create_failures: dict[str, str] = {}
        """Why an unfinished Job has no pod, by name: its latest ``FailedCreate`` message (until a pod is active)."""
        self._unfinished: dict[str, dict[str, Any]] = {}
        """The last seen object of each unfinished Job: observed again when a ``FailedCreate`` comes."""
        self._lock = threading.Lock()
        core = client.CoreV1Api(api)
        list_jobs, watch_jobs = list_watch(self._batch.list_namespaced_job, namespace, label_selector=MANAGED_SELECTOR)
        self.reflector = Reflector(list_objects=list_jobs, watch_objects=watch_jobs, handler=self)
        self.pods = PodProber(core=core, namespace=namespace, on_change=self.observe)
        self.events = CreateFailureWatcher(core=core, namespace=namespace, on_failed_create=self.create_failed)
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self.reflector.run, name="k8s-job-watch", daemon=True),
            threading.Thread(target=self.pods.run, name="k8s-pod-probe", daemon=True),
            threading.Thread(target=self.events.run, name="k8s-event-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End both watches and the pod probe; return once their threads have ended (or after ``STOP_TIMEOUT``)."""
        self.reflector.stop()
        self.pods.stop()
        self.events.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def watching(self) -> bool:
        """Whether a watch is open now (not while listing, nor between reconnects)."""
        return self.reflector.watching

    def unready_reason(self) -> str | None:
        """Why the Job watch cannot be trusted yet; the Events watch only explains waits, and never says unready."""
        if self.reflector.synced:
            return None
        return f"the Job watch is not synced: {self.reflector.last_error or 'the first list is not in yet'}"

    # -- the reflector's handler ---------------------------------------------------

    def on_list(self, jobs: list[dict[str, Any]], *, requested_at: datetime) -> None:
        """Write what each listed Job says, and cancel the runs whose Jobs vanished unfinished."""
        seen = set()
        for job in jobs:
            seen.add(job["metadata"]["name"])
            self.observe(job)
        settled = requested_at - LAUNCH_GRACE
        for status in self._door.store.unfinished(mode="k8s"):
            if status.job_name not in seen and launch_began(status) < settled and self._is_gone(status.job_name):
                self._door.change(
                    status.job_name,
                    status=Phase.CANCELLED,
                    reason="Deleted",
                    message="the Job was deleted before it finished",
                )
                self._forget(status.job_name)

    def on_event(self, kind: str, job: dict[str, Any]) -> None:
        self.observe(job, deleted=kind == "DELETED")

    def _is_gone(self, job_name: str) -> bool:
        """Whether a run missing from a list is really gone (it may have been created after the list)."""
        try:
            self._batch.read_namespaced_job(job_name, self.namespace, _preload_content=False, _request_timeout=(5, 30))
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    # -- from Job objects to statuses -----------------------------------------------

    def observe(self, job: dict[str, Any], *, deleted: bool = False) -> None:
        """Write what a Job object says about its run (a Job no run record names starts one)."""
        name = job["metadata"]["name"]
        with self._lock:
            cancelling = name in self._cancelling
            create_failure = self._create_failures.get(name)
        fields = job_fields(job, deleted=deleted, pod_waiting=self.pods.reason(name), create_failure=create_failure)
        if fields.get("progress") is not None:
            fields["progress"] = dataclasses.replace(fields["progress"], at=utcnow())
        if fields["status"] == Phase.CANCELLED and (cancelling or self._cancel_requested(name)):
            fields.update(OPERATOR_CANCEL)
        current = self._door.change(
            name,
            only_mode="k8s",
            default=lambda: new_status_for(job),
            observed=job["metadata"].get("resourceVersion"),
            **fields,
        )
        if current is None:
            return
        with self._lock:
            if current.terminal:
                self._cancelling.discard(name)
                self._unfinished.pop(name, None)
            else:
                self._unfinished[name] = job
            if current.terminal or current.active:
                self._create_failures.pop(name, None)
        self.pods.track(name, job, waiting=current.status == Phase.PENDING and bool(current.active))

    def _forget(self, job_name: str) -> None:
        with self._lock:
            self._unfinished.pop(job_name, None)
            self._create_failures.pop(job_name, None)

    def create_failed(self, job_name: str, message: str) -> None:
        """The Job controller cannot create this Job's pods: say ``Pending`` / ``FailedCreate`` with its message.

        Only for an unfinished run of ours; the Job's next object with an active pod clears it.
        """
        current = self._door.current(job_name)
        if current is None or current.mode != "k8s" or current.terminal:
            return
        with self._lock:
            self._create_failures[job_name] = message
            job = self._unfinished.get(job_name)
        if job is not None:  # else the Job's first object, when it comes, says it
            self.observe(job)

    # -- an operator's cancel ---------------------------------------------------------

    def expect_cancel(self, job_name: str) -> None:
        """The app is about to delete this Job (an operator's cancel): say so, on every instance.

        The run's status says ``Cancelling`` in the run store before the Job is deleted (raises
        :class:`RunStoreUnavailable` if the store cannot say it: then nothing is deleted), so the
        instance whose watch sees the Job go first knows an operator cancelled it, not an outside hand.
        """
        with self._lock:
            self._cancelling.add(job_name)
        self._door.change(job_name, durable=True, **CANCEL_REQUESTED)

    def _cancel_requested(self, job_name: str) -> bool:
        """Whether an operator's cancel, through any instance, is what deleted this Job (the store says)."""
        stored = self._door.store.get(job_name)
        return stored is not None and stored.cancel_requested

    def mark_cancelled(self, job_name: str) -> None:
        """The app deleted this Job: say ``Cancelled`` now, before the watch sees it go."""
        self._door.change(job_name, **OPERATOR_CANCEL)


class PodProber:
    """Why waiting Jobs wait: one pod list for all of them, every ``POD_PROBE_SECONDS`` while there are any.

    When a Job's pod reason changes, the Job's last seen object is handed to
    ``on_change`` again, to be observed with the new reason.
    """

    def __init__(self, *, core: client.CoreV1Api, namespace: str, on_change: Callable[[dict[str, Any]], None]) -> None:
        self.namespace = namespace
        self._core = core
        self._on_change = on_change
        self._lock = threading.Lock()
        self._waiting_jobs: dict[str, dict[str, Any]] = {}
        """Unfinished Jobs whose pod is not ready yet, by name: their last seen object."""
        self._reasons: dict[str, tuple[str, str | None]] = {}
        self._probe_now = threading.Event()
        self._stopping = threading.Event()

    def reason(self, job_name: str) -> tuple[str, str | None] | None:
        """The waiting reason (and message) of the Job's newest pod, as last probed."""
        with self._lock:
            return self._reasons.get(job_name)

    def track(self, job_name: str, job: dict[str, Any], *, waiting: bool) -> None:
        """Probe this Job's pods while it is ``waiting`` (probe at once the first time); forget it otherwise."""
        with self._lock:
            if waiting:
                first_time = job_name not in self._waiting_jobs
                self._waiting_jobs[job_name] = job
                if first_time:
                    self._probe_now.set()
            else:
                self._waiting_jobs.pop(job_name, None)
                self._reasons.pop(job_name, None)

    def stop(self) -> None:
        self._stopping.set()
        self._probe_now.set()

    def run(self) -> None:
        """Probe until stopped."""
        while not self._stopping.is_set():
            self._probe_now.wait(POD_PROBE_SECONDS)
            self._probe_now.clear()
            with self._lock:
                waiting = dict(self._waiting_jobs)
            if not waiting or self._stopping.is_set():
                continue
            try:
                pods = (
                    raw_json(
                        self._core.list_namespaced_pod,
                        self.namespace,
                        label_selector=MANAGED_SELECTOR,
                        _request_timeout=(5, 30),
                    ).get("items")
                    or ()
                )
            except Exception as error:
                logger.warning("watch.pod_probe_failed", extra={"source": "k8s", "detail": str(error)})
                continue
            newest: dict[str, dict[str, Any]] = {}
            for pod in pods:
                owner = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
                if owner in waiting and (
                    owner not in newest
                    or pod["metadata"]["creationTimestamp"] > newest[owner]["metadata"]["creationTimestamp"]
                ):
                    newest[owner] = pod
            for name, job in waiting.items():
                reason = pod_waiting(newest[name]) if name in newest else None
                with self._lock:
                    changed = self._reasons.get(name) != reason
                    if reason is None:
                        self._reasons.pop(name, None)
                    else:
                        self._reasons[name] = reason
                if changed:
                    self._on_change(job)
