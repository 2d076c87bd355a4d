"""The Kubernetes executor: Jobs created, deleted and read through the official client.

With its watch (``k8s_watch``), the only executor that talks to the API
server, and only through ``webapp.kube.client``: every call runs inside
:func:`~webapp.kube.client.api_call`, so an unreachable or failing API server
is :class:`~webapp.errors.ExecutorUnavailable` (503) and nothing half-created
is left behind; a manifest the server refuses is
:class:`~webapp.errors.InvalidRequest`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webapp.door import StatusDoor
from webapp.errors import Conflict, InvalidRequest
from webapp.executors.k8s_watch import JobWatcher
from webapp.kube.client import CLIENT_ERRORS, JOB_NAME_LABEL, api_call, api_message, connect, raw_json
from webapp.status import JobStatus, Phase

__all__ = ["KubernetesExecutor", "connect", "operator_field_manager"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 15.0)
"""(connect, read) seconds for ordinary API calls: a launch never hangs on a dead API server."""


class KubernetesExecutor:
    """An :class:`~webapp.executors.Executor` that runs each task as a Kubernetes Job."""

    mode = "k8s"

    def __init__(self, *, door: StatusDoor, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._door = door
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
                response: Any = self._batch.create_namespaced_job(
                    self.namespace,
                    manifest,  # type: ignore[arg-type]  # the client takes plain dicts too
                    _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False,  # the created Job is not needed: skip building the client's models of it
                )
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
        self._door.change(name, status=Phase.PENDING)

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

    def follow_logs(self, job_name: str, *, tail_lines: int) -> Iterator[str]:
        pod = self._newest_pod(job_name)
        if pod is None:
            return iter(())
        response: Any = None
        with api_call("could not read the pod's log", job_name=job_name, tolerate={400, 404}):  # not started, or gone
            response = self._core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail_lines, follow=True, _preload_content=False
            )
        if response is None:
            return iter(())

        def chunks() -> Iterator[str]:
            try:
                for chunk in response.stream(4096, decode_content=True):
                    yield chunk.decode("utf-8", "replace")
            finally:
                response.release_conn()

        return chunks()


def operator_field_manager(operator: str) -> str:
    """The field manager of an operator's change to a Job: what its ``Suspended`` status says suspended it."""
    return f"operator {operator} (jobpulse)"
