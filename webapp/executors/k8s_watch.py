"""The status feed from Kubernetes: one list+watch of our Jobs per process.

The client-go reflector pattern: list the Jobs carrying our ``managed-by``
label, then watch from the list's ``resourceVersion`` with bookmarks, a
server timeout of 5-10 minutes (random, so instances do not reconnect in
step) and a client read timeout; reconnect from the last resourceVersion when
a watch ends; on ``410 Gone`` relist and diff (Jobs that vanished unfinished
become ``Cancelled``); on errors back off 0.8 s → 30 s with jitter. The outer
loop never dies. Not ready until the first list is in. ``stop()`` shuts the
watch's socket down, so the watch thread ends at once even while it waits in a
read for the next event, and returns when both threads have ended.

While a Job waits with an active pod that is not ready, its pods are looked
at (one list per probe for all such Jobs, never per client) to say why:
``Unschedulable``, ``ImagePullBackOff``, ...

``/readyz`` says why the watch fails in public words
(:func:`describe_api_failure`); the ``watch.restarted`` log line keeps the
client's full error, with the API server's address, for operators.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from datetime import timedelta
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from webapp import metrics
from webapp.backoff import Backoff
from webapp.hub import StatusHub
from webapp.k8s_status import job_fields, new_status_for, pod_waiting
from webapp.kube.client import JOB_NAME_LABEL, MANAGED_SELECTOR, describe_api_failure, raw_json
from webapp.runstore import RunStore
from webapp.status import Phase, utcnow

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_RANGE = (300, 600)
"""Server-side watch timeout, seconds, picked at random per watch."""
READ_TIMEOUT = 120.0
"""Client read timeout: a watch silent this long (not even a bookmark) is reopened."""
POD_PROBE_SECONDS = 2.0
LAUNCH_GRACE = timedelta(seconds=60)
"""A run younger than this may be missing from a list because its Job is still being created."""
STOP_TIMEOUT = 2.0
"""How long ``stop()`` waits for the threads (the pod probe may be inside a short API call)."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class JobWatcher:
    def __init__(self, *, hub: StatusHub, store: RunStore, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._hub = hub
        self._store = store
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._waiting_jobs: dict[str, dict[str, Any]] = {}
        """Unfinished Jobs whose pod is not ready yet, by name: their last seen object."""
        self._pod_reasons: dict[str, tuple[str, str | None]] = {}
        self._probe_now = threading.Event()
        self._cancelling: set[str] = set()
        """Jobs the app is deleting: their disappearance is a cancel, not an outside deletion."""
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self.resource_version: str | None = None
        """Where the watch has got to: the last event or list seen."""
        self._response: Any = None
        """The open watch's streaming response, guarded by ``_response_lock``: what ``stop()`` shuts down."""
        self._response_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.lists = 0
        """How many times the Jobs were listed (first sync and every relist)."""

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self.run, name="k8s-job-watch", daemon=True),
            threading.Thread(target=self._probe_pods, name="k8s-pod-probe", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End the watch and the pod probe; return once both threads have ended (or after ``STOP_TIMEOUT``).

        The open watch's socket is shut down, not closed: closing the response
        from this thread would wait for the watch thread's read to end (it holds
        the read buffer's lock; an idle watch reads until the next bookmark, a
        minute), while a shutdown wakes that read at once, under threads and
        gevent alike. The watch thread then closes the response as it unwinds.
        """
        self._stopping.set()
        self._probe_now.set()
        with self._response_lock:
            if self._response is not None:
                # ValueError/RuntimeError: the watch already ended and released its connection
                with contextlib.suppress(ValueError, RuntimeError, OSError):
                    self._response.shutdown()
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def watching(self) -> bool:
        """Whether a watch is open now (not while listing, nor between reconnects)."""
        return self._response is not None

    def unready_reason(self) -> str | None:
        if self._synced.is_set():
            return None
        return f"the Job watch is not synced: {self._last_error or 'the first list is not in yet'}"

    # -- the reflector loop ----------------------------------------------------

    def run(self, *, max_iterations: int | None = None) -> None:
        """List, then watch until stopped; ``max_iterations`` only for tests."""
        backoff = Backoff()
        iterations = 0
        self.resource_version = None
        while not self._stopping.is_set():
            if max_iterations is not None and iterations >= max_iterations:
                return
            iterations += 1
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                    self._synced.set()
                    self._last_error = None
                self._watch()
                backoff.reset()
            except _Gone:
                self._restarted("gone", "resourceVersion too old; relisting")
                self.resource_version = None
            except urllib3.exceptions.ReadTimeoutError:
                self._restarted("silence", f"no event for {READ_TIMEOUT:g}s; reopening the watch")
            except Exception as error:  # the loop never dies
                if self._stopping.is_set():  # the watch's socket was shut down by stop()
                    return
                self._synced.clear()
                self._last_error = describe_api_failure(error)
                delay = backoff.next_delay()
                self._restarted("error", f"{str(error) or type(error).__name__}; retrying in {delay:.1f}s")
                self._stopping.wait(delay)

    def _restarted(self, reason: str, detail: str) -> None:
        metrics.WATCH_RESTARTS.labels(source="k8s", reason=reason).inc()
        logger.warning("watch.restarted", extra={"source": "k8s", "reason": reason, "detail": detail})

    def _list(self) -> str:
        """List our Jobs, publish each, and cancel what vanished unfinished; return the resourceVersion."""
        listed_at = utcnow()
        listing = raw_json(
            self._batch.list_namespaced_job, self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=(5, 60)
        )
        self.lists += 1
        seen = set()
        for job in listing.get("items") or ():
            seen.add(job["metadata"]["name"])
            self.observe(job)
        settled = listed_at - LAUNCH_GRACE
        for status in self._store.unfinished(mode="k8s"):
            if status.job_name not in seen and status.created_at < settled and self._is_gone(status.job_name):
                current = self._hub.get(status.job_name) or status
                if not current.terminal:
                    self._hub.publish(
                        current.evolve(
                            status=Phase.CANCELLED, reason="Deleted", message="the Job was deleted before it finished"
                        )
                    )
        version: str = listing["metadata"]["resourceVersion"]
        logger.info("watch.listed", extra={"source": "k8s", "jobs": len(seen), "resource_version": version})
        return version

    def _is_gone(self, job_name: str) -> bool:
        """Whether a run missing from a list is really gone (it may have been created after the list)."""
        try:
            self._batch.read_namespaced_job(job_name, self.namespace, _preload_content=False, _request_timeout=(5, 30))
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    def _watch(self) -> None:
        """Follow changes from ``self.resource_version`` until the watch ends, keeping it up to date.

        After an error the next watch starts from the last event seen, not from where this one started.
        """
        timeout = random.randint(*WATCH_TIMEOUT_RANGE)
        response: Any = self._batch.list_namespaced_job(
            self.namespace,
            label_selector=MANAGED_SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(5, READ_TIMEOUT),
        )
        with self._response_lock:
            self._response = response
        self._synced.set()  # the watch is open again: what we know is current
        self._last_error = None
        try:
            if self._stopping.is_set():  # stop() came before the response was there to shut down
                return
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stopping.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, job = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if job.get("code") == 410:
                        raise _Gone(job.get("message"))
                    raise ApiException(status=job.get("code"), reason=job.get("message"))
                self.resource_version = (job.get("metadata") or {}).get("resourceVersion") or self.resource_version
                if kind in ("ADDED", "MODIFIED"):
                    self.observe(job)
                elif kind == "DELETED":
                    self.observe(job, deleted=True)
        except ApiException as error:
            if error.status == 410:
                raise _Gone(str(error)) from error
            raise
        finally:
            with self._response_lock:
                self._response = None
            response.close()
            response.release_conn()

    # -- from Job objects to statuses -----------------------------------------------

    def observe(self, job: dict[str, Any], *, deleted: bool = False) -> None:
        """Publish what a Job object says about its run."""
        name = job["metadata"]["name"]
        previous = self._hub.get(name) or self._store.get(name) or new_status_for(job)
        if previous.mode != "k8s" or previous.terminal:
            return
        with self._lock:
            waiting = self._pod_reasons.get(name)
        fields = job_fields(job, deleted=deleted, pod_waiting=waiting)
        if fields["status"] == Phase.CANCELLED and name in self._cancelling:
            fields.update(reason="Cancelled", message="cancelled by an operator")
        current = previous.evolve(**fields)
        if current is not previous:
            self._hub.publish(current)
        with self._lock:
            if current.terminal:
                self._cancelling.discard(name)
            if current.status == Phase.PENDING and current.active and not current.terminal:
                first_time = name not in self._waiting_jobs
                self._waiting_jobs[name] = job
                if first_time:
                    self._probe_now.set()
            else:
                self._waiting_jobs.pop(name, None)
                self._pod_reasons.pop(name, None)

    def expect_cancel(self, job_name: str) -> None:
        """The app is about to delete this Job (an operator's cancel)."""
        with self._lock:
            self._cancelling.add(job_name)

    def mark_cancelled(self, job_name: str) -> None:
        """The app deleted this Job: say ``Cancelled`` now, before the watch sees it go."""
        current = self._hub.get(job_name) or self._store.get(job_name)
        if current is not None and not current.terminal:
            self._hub.publish(
                current.evolve(status=Phase.CANCELLED, reason="Cancelled", message="cancelled by an operator")
            )

    def _probe_pods(self) -> None:
        """Say why waiting Jobs wait: one pod list for all of them, while there are any."""
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
                    changed = self._pod_reasons.get(name) != reason
                    if reason is None:
                        self._pod_reasons.pop(name, None)
                    else:
                        self._pod_reasons[name] = reason
                if changed:
                    self.observe(job)
