"""The Kubernetes executor: Jobs created, deleted and read through the official client.

The only module (with its watch, ``k8s_watch``) that talks to the API server.
Client errors become our own: an unreachable or failing API server is
:class:`~webapp.errors.ExecutorUnavailable` (503) and nothing half-created is
left behind; a manifest the server refuses is :class:`~webapp.errors.InvalidRequest`.
A 503 says what failed in public words, never the API server's address; the
``k8s.call_failed`` log line keeps the client's full error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, InvalidRequest
from webapp.executors.k8s_watch import JOB_NAME_LABEL, JobWatcher, describe_api_failure, raw_json
from webapp.settings import ConfigError, Settings
from webapp.status import JobStatus, Phase

logger = logging.getLogger(__name__)

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = (5.0, 15.0)
"""(connect, read) seconds for ordinary API calls: a launch never hangs on a dead API server."""


def connect(settings: Settings) -> tuple[client.ApiClient, str]:
    """An API client and namespace: in-cluster config, else ``KUBECONFIG``; see DESIGN.md for the namespace."""
    configuration = client.Configuration()
    in_cluster = True
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        in_cluster = False
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                client_configuration=configuration,
            )
        except (ConfigException, OSError) as error:
            raise ConfigError(f"KUBECONFIG: no usable Kubernetes configuration ({error})") from error
    configuration.connection_pool_maxsize = 32
    namespace = settings.k8s_namespace
    if namespace is None and in_cluster and IN_CLUSTER_NAMESPACE_FILE.exists():
        namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    if namespace is None and not in_cluster:
        _, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig) if settings.kubeconfig else None
        )
        namespace = (active or {}).get("context", {}).get("namespace")
    return client.ApiClient(configuration), namespace or "default"


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
        try:
            response: Any = self._batch.create_namespaced_job(
                self.namespace,
                manifest,  # type: ignore[arg-type]  # the client takes plain dicts too
                _request_timeout=REQUEST_TIMEOUT,
                _preload_content=False,  # the created Job is not needed: skip building the client's models of it
            )
            try:
                response.read()
            finally:
                response.release_conn()
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidRequest(f"the API server refused the Job: {_api_message(error)}") from error
            if error.status == 409:
                raise Conflict(f"a Job named {name} already exists") from error
            if error.status is not None and error.status >= 500:
                self._delete_quietly(name)  # the outcome is unknown: leave nothing half-created
            raise _unavailable("could not create the Job", error, job_name=name) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self._delete_quietly(name)
            raise _unavailable("could not create the Job", error, job_name=name) from error
        self._door.change(name, status=Phase.PENDING)

    def _delete_quietly(self, name: str) -> None:
        try:
            self._batch.delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            logger.info("job.cleanup_skipped", extra={"job_name": name, "mode": self.mode})

    def cancel(self, job_name: str) -> None:
        self.watcher.expect_cancel(job_name)
        try:
            self._batch.delete_namespaced_job(
                job_name, self.namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status != 404:
                raise _unavailable("could not delete the Job", error, job_name=job_name) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _unavailable("could not delete the Job", error, job_name=job_name) from error
        self.watcher.mark_cancelled(job_name)

    def _newest_pod(self, job_name: str) -> str | None:
        try:
            pods = (
                raw_json(
                    self._core.list_namespaced_pod,
                    self.namespace,
                    label_selector=f"{JOB_NAME_LABEL}={job_name}",
                    _request_timeout=REQUEST_TIMEOUT,
                ).get("items")
                or []
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _unavailable("could not list the Job's pods", error, job_name=job_name) from error
        if not pods:
            return None
        newest = max(pods, key=lambda pod: str(pod["metadata"]["creationTimestamp"]))
        name: str = newest["metadata"]["name"]
        return name

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        pod = self._newest_pod(job_name)
        if pod is None or tail_lines == 0:
            return ""
        try:
            text: str = self._core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail_lines, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status in (400, 404):  # not started yet, or gone
                return ""
            raise _unavailable("could not read the pod's log", error, job_name=job_name) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _unavailable("could not read the pod's log", error, job_name=job_name) from error
        return text

    def follow_logs(self, job_name: str, *, tail_lines: int) -> Iterator[str]:
        pod = self._newest_pod(job_name)
        if pod is None:
            return iter(())
        try:
            response: Any = self._core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail_lines, follow=True, _preload_content=False
            )
        except ApiException as error:
            if error.status in (400, 404):
                return iter(())
            raise _unavailable("could not read the pod's log", error, job_name=job_name) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _unavailable("could not read the pod's log", error, job_name=job_name) from error

        def chunks() -> Iterator[str]:
            try:
                for chunk in response.stream(4096, decode_content=True):
                    yield chunk.decode("utf-8", "replace")
            finally:
                response.release_conn()

        return chunks()


def _unavailable(failed: str, error: Exception, *, job_name: str) -> ExecutorUnavailable:
    """The 503 for a failed call: what ``failed``, and why in public words; the client's full error goes to the log."""
    detail = _api_message(error) if isinstance(error, ApiException) else str(error) or type(error).__name__
    logger.warning("k8s.call_failed", extra={"job_name": job_name, "mode": "k8s", "failed": failed, "detail": detail})
    return ExecutorUnavailable(f"{failed}: {describe_api_failure(error)}")


def _api_message(error: ApiException) -> str:
    """The API server's own words from an error, else the HTTP reason."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("message") or f"{error.status} {error.reason}")
