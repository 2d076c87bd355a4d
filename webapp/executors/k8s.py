"""The Kubernetes executor: Jobs created, deleted and read through the official client.

With its watch (``k8s_watch``), the only executor that talks to the API
server, and only through ``webapp.kube.client``: every call runs inside
:func:`~webapp.kube.client.api_call`, so an unreachable or failing API server
is :class:`~webapp.errors.ExecutorUnavailable` (503) and nothing half-created
is left behind; a manifest the server refuses is
:class:`~webapp.errors.InvalidRequest`.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import threading
from collections.abc import Generator, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webapp.backoff import Backoff
from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, InvalidRequest, JobpulseError
from webapp.executors.k8s_watch import JobWatcher
from webapp.hub import HubClosed, Subscription
from webapp.kube.client import CLIENT_ERRORS, JOB_NAME_LABEL, api_call, api_message, connect, raw_json
from webapp.status import JobStatus, Phase

__all__ = ["KubernetesExecutor", "connect", "operator_field_manager"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 15.0)
"""(connect, read) seconds for ordinary API calls: a launch never hangs on a dead API server."""
POD_RECHECK_SECONDS = 5.0
"""A log follow between pods (none yet, or the last one's output ended): how often it looks for a newer pod."""
END_GRACE_SECONDS = 2.0
"""How long a pod's log stream may stay open after its Job is final before the follow cuts it."""
STATUS_RETRY_SECONDS = 0.5
"""A log follow that could not read its Job's status: the first wait before it asks again (doubling up to
``POD_RECHECK_SECONDS``)."""


class KubernetesExecutor:
    """An :class:`~webapp.executors.Executor` that runs each task as a Kubernetes Job."""

    mode = "k8s"

    def __init__(self, *, door: StatusDoor, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._door = door
        self._api = api
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self.watcher = JobWatcher(door=door, api=api, namespace=namespace)

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def unready_reason(self) -> str | None:
        return self.watcher.unready_reason()

    def launch(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        name = status.job_name
        # a 5xx or no answer leaves the outcome unknown: delete, so nothing half-created remains
        with api_call("could not create the Job", job_name=name, on_unknown_outcome=lambda: self._delete_quietly(name)):
            try:
                response = self._create_job(manifest)
            except ApiException as error:
                if error.status in (400, 422):
                    raise InvalidRequest(f"the API server refused the Job: {api_message(error)}") from error
                if error.status == 409:
                    raise Conflict(f"a Job named {name} already exists") from error
                raise
            try:
                response.read()
            finally:
                response.release_conn()
        current = self._door.change(name, status=Phase.PENDING, known=status)  # (the launcher saved it: no read)
        if current is not None and (current.terminal or current.cancel_requested):
            # cancelled while the Job was being created: that cancel found no Job to delete, so delete it here
            # (a cancel says so in the store before it deletes, so one of the two deletes sees the Job)
            logger.info("job.cancelled_while_created", extra={"job_name": name, "mode": self.mode})
            self._delete_quietly(name)

    def _create_job(self, manifest: dict[str, Any]) -> Any:
        """``POST`` the manifest as it is; the API server's answer, unread (``ApiException`` unless 2xx).

        What ``BatchV1Api.create_namespaced_job`` sends, without two costs it adds to every launch (about
        15% of the worker's busy time per donation, docs/PERFORMANCE.md "Launches"): pydantic validating
        the call (the manifest parsed into the client's ``V1Job`` model) and dumping that model back to a
        dict. The API server validates the Job either way (400/422), and the created Job it answers with
        is not needed.
        """
        request = self._api.param_serialize(
            method="POST",
            resource_path="/apis/batch/v1/namespaces/{namespace}/jobs",
            path_params={"namespace": self.namespace},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=manifest,
            auth_settings=["BearerToken"],
        )
        response: Any = self._api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def _delete_quietly(self, name: str) -> None:
        try:
            self._batch.delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
            )
        except CLIENT_ERRORS:
            logger.info("job.cleanup_skipped", extra={"job_name": name, "mode": self.mode})

    def cancel(self, job_name: str) -> None:
        self.watcher.expect_cancel(job_name)
        with api_call("could not delete the Job", job_name=job_name, tolerate={404}):
            self._batch.delete_namespaced_job(
                job_name, self.namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
            )
        self.watcher.mark_cancelled(job_name)

    def set_suspended(self, job_name: str, *, suspended: bool, operator: str) -> None:
        """Patch the Job's ``spec.suspend``; the watch then reports what the Job controller makes of it.

        The field manager names the operator, so the ``Suspended`` status says who suspended it
        (:func:`~webapp.k8s_status.suspended_by`). A Job that is not there (never created: the run waits for
        capacity; or deleted) is :class:`~webapp.errors.Conflict`.
        """
        doing = "suspend" if suspended else "resume"
        with api_call(f"could not {doing} the Job", job_name=job_name):
            try:
                response: Any = self._batch.patch_namespaced_job(
                    job_name,
                    self.namespace,
                    {"spec": {"suspend": suspended}},
                    field_manager=operator_field_manager(operator),
                    _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False,
                )
            except ApiException as error:
                if error.status == 404:
                    raise Conflict(f"{job_name} has no Job to {doing}: it has not started, or is gone") from error
                raise
            try:
                response.read()
            finally:
                response.release_conn()
        logger.info("job.suspended" if suspended else "job.resumed", extra={"job_name": job_name, "mode": self.mode})

    def _newest_pod(self, job_name: str) -> str | None:
        with api_call("could not list the Job's pods", job_name=job_name):
            listing = raw_json(
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=f"{JOB_NAME_LABEL}={job_name}",
                _request_timeout=REQUEST_TIMEOUT,
            )
        pods = listing.get("items") or []
        if not pods:
            return None
        newest = max(pods, key=lambda pod: str(pod["metadata"]["creationTimestamp"]))
        name: str = newest["metadata"]["name"]
        return name

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        pod = self._newest_pod(job_name)
        if pod is None or tail_lines == 0:
            return ""
        text = ""
        with api_call("could not read the pod's log", job_name=job_name, tolerate={400, 404}):  # not started, or gone
            text = self._core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail_lines, _request_timeout=REQUEST_TIMEOUT
            )
        return text

    def follow_logs(self, job_name: str, *, tail_lines: int) -> PodLogFollow:
        """The Job's pods' output as written, until the Job finishes (see :class:`PodLogFollow`).

        The pods are listed here, so that an unreachable API server is an error
        (503) before any output; the log itself is opened as it is read.
        """
        return PodLogFollow(self, job_name, tail_lines=tail_lines, first_pod=self._newest_pod(job_name))

    def _open_pod_log(self, job_name: str, pod: str, *, tail_lines: int | None) -> Any:
        """A follow of the pod's log (a streaming response), or ``None`` when it cannot be read yet or any more.

        400: its container has not started ("is waiting to start"), or the pod has no node yet; 404: it is gone.

        No timeout: a quiet task may write nothing for hours (the client takes no
        read timeout without a connect one); :meth:`PodLogFollow.close` cuts it.
        """
        response: Any = None
        with api_call("could not read the pod's log", job_name=job_name, tolerate={400, 404}):
            response = self._core.read_namespaced_pod_log(
                pod,
                self.namespace,
                tail_lines=tail_lines,
                follow=True,
                _preload_content=False,
            )
        return response


class PodLogFollow:
    """One follow of a Job's output: its newest pod's log as written, then the next pod's, until the Job ends.

    Opens ``read_namespaced_pod_log(follow=True)`` on the newest pod. A pod
    counts as followed once its log stream has given output. One whose log
    cannot be read yet is asked for again, with the first viewer's
    ``tail_lines``, at the Job's next status change (from the hub: no API
    call) or after ``POD_RECHECK_SECONDS``, whichever comes first: its
    container has not started (the kubelet answers 400, "waiting to start"),
    it has no node yet (the API server answers an empty log that ends at
    once), or it is gone (404); so is one that ended having written nothing.
    A pod that never starts (an image that cannot be pulled, no node for it)
    thus costs one log request, besides the pod listing each wake already
    makes, per change or recheck until the Job ends. When a stream that gave
    output ends (the container exited) and the Job has not finished, it waits
    the same way, then follows a newer pod if there is one (a retry: its
    whole log). It ends when the Job is final: a pod's stream still open
    ``END_GRACE_SECONDS`` after that is cut. One thread per follow hears the
    Job's changes (:meth:`_watch_job`). :meth:`close`, from any thread, cuts
    the open stream and ends it.
    """

    def __init__(self, executor: KubernetesExecutor, job_name: str, *, tail_lines: int, first_pod: str | None) -> None:
        self._executor = executor
        self._job_name = job_name
        self._tail_lines = tail_lines
        self._first_pod = first_pod
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._job_over = threading.Event()
        self._changed = threading.Event()
        self._response: Any = None
        self._subscription: Subscription | None = None
        self._chunks = self._read()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            subscription = self._subscription
        self._cut()
        if subscription is not None:
            subscription.close()  # the Job's watcher returns at once
        self._changed.set()

    def _cut(self) -> None:
        """Shut the open pod log stream: the read blocked on it wakes, on any thread or greenlet."""
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already shut, or never connected
                response.shutdown()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def _read(self) -> Iterator[str]:
        threading.Thread(target=self._watch_job, name="log-follow-job", daemon=True).start()
        try:
            followed: set[str] = set()  # pods whose log stream gave output
            pod = self._first_pod
            tail: int | None = self._tail_lines
            while not self._closed.is_set():
                if pod is not None and pod not in followed:
                    response = self._executor._open_pod_log(self._job_name, pod, tail_lines=tail)
                    # no log (None), or one that ended empty (no node yet): not followed, asked for again next wake
                    if response is not None and (yield from self._stream(pod, response)):
                        followed.add(pod)
                        tail = None  # a newer pod is a retry: all of its output
                if self._job_over.is_set():
                    return
                self._changed.wait(POD_RECHECK_SECONDS)
                self._changed.clear()
                if self._closed.is_set() or self._job_over.is_set():
                    return
                pod = self._executor._newest_pod(self._job_name)
        finally:
            self.close()

    def _watch_job(self) -> None:
        """Until the follow ends: tell :meth:`_read` of each change of the Job; cut the stream once the Job is final.

        A status it cannot read (the run store is unavailable) is asked for again after a growing
        delay, at most ``POD_RECHECK_SECONDS``: the watcher lives on, so the follow still ends with the Job.
        """
        hub = self._executor._door.hub
        with hub.subscribe(self._job_name) as subscription:
            with self._lock:
                if self._closed.is_set():
                    return
                self._subscription = subscription
            backoff = Backoff(initial=STATUS_RETRY_SECONDS, maximum=POD_RECHECK_SECONDS)
            failing = False
            try:
                while not self._closed.is_set():
                    try:
                        status = self._executor._door.current(self._job_name)
                    except JobpulseError as error:  # the run store is away: ask again, sooner if the hub hears
                        if not failing:
                            failing = True
                            logger.warning(
                                "log_follow.status_unavailable",
                                extra={"job_name": self._job_name, "error": error.message},
                            )
                        subscription.get(timeout=backoff.next_delay())
                        continue
                    failing = False
                    backoff.reset()
                    if status is None or status.terminal:
                        self._job_over.set()
                        self._changed.set()
                        if not self._closed.wait(END_GRACE_SECONDS):
                            self._cut()  # the pod's stream did not end with its Job
                        return
                    subscription.get(timeout=POD_RECHECK_SECONDS)
                    self._changed.set()
            except HubClosed:  # the follow was closed, or the server is stopping
                self._changed.set()

    def _stream(self, pod: str, response: Any) -> Generator[str, None, bool]:
        """The text of the pod's open log ``response`` as it comes, until it ends or is cut; whether there was any."""
        with self._lock:
            self._response = response
            closed = self._closed.is_set()
        if closed:
            response.release_conn()
            return False
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a chunk may end inside a character
        gave_output = False
        try:
            for chunk in response.stream(4096, decode_content=True):
                if text := decoder.decode(chunk):
                    gave_output = True
                    yield text
        except CLIENT_ERRORS as error:
            if not (self._closed.is_set() or self._job_over.is_set()):  # cut on purpose: not a failure
                raise ExecutorUnavailable(f"the log stream of pod {pod} broke: {error}") from error
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return gave_output


def operator_field_manager(operator: str) -> str:
    """The field manager of an operator's change to a Job: what its ``Suspended`` status says suspended it."""
    return f"operator {operator} (jobpulse)"
