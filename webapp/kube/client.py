"""The small Kubernetes client: the connection, the labels we select by, and our errors for the client's.

Every call the app makes to the API server goes through :func:`api_call`,
which turns the client's errors (an :class:`ApiException`, or urllib3's and
the socket's when the server is unreachable) into
:class:`~webapp.errors.ExecutorUnavailable` (503). The 503 says what failed in
public words (:func:`describe_api_failure`), never the API server's address;
the ``k8s.call_failed`` log line keeps the client's full error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webapp.errors import ExecutorUnavailable, describe_connection_error
from webapp.jobspecs import MANAGED_SELECTOR
from webapp.settings import ConfigError, Settings

__all__ = [
    "CLIENT_ERRORS",
    "JOB_NAME_LABEL",
    "MANAGED_SELECTOR",
    "api_call",
    "api_message",
    "connect",
    "describe_api_failure",
    "raw_json",
]

logger = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the Job controller puts on a Job's pods."""
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CLIENT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)
"""What a call to the API server raises when it fails: a refusal, or a server out of reach."""


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
    # The proxy the environment gives for this host, fixed now: a kubeconfig's token hook sets ``host`` again
    # before every request, and while the proxy comes from the environment each of those settings reads every
    # *_proxy variable again (urllib's getproxies(), ~2% of a launch, docs/PERFORMANCE.md "Launches").
    configuration.proxy = configuration.proxy
    namespace = settings.k8s_namespace
    if namespace is None and in_cluster and IN_CLUSTER_NAMESPACE_FILE.exists():
        namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    if namespace is None and not in_cluster:
        _, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig) if settings.kubeconfig else None
        )
        namespace = (active or {}).get("context", {}).get("namespace")
    return client.ApiClient(configuration), namespace or "default"


def raw_json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a read/list API without the client's model classes: the JSON as the server sent it."""
    response: Any = call(*args, _preload_content=False, **kwargs)
    try:
        body: dict[str, Any] = json.loads(response.data)
        return body
    finally:
        response.release_conn()


@contextmanager
def api_call(
    failed: str,
    *,
    job_name: str,
    tolerate: Collection[int] = (),
    on_unknown_outcome: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Run calls to the API server: their failure is ``ExecutorUnavailable`` (503), saying what ``failed``.

    An :class:`ApiException` whose status is in ``tolerate`` is swallowed (the
    block ends there). ``on_unknown_outcome`` runs before the 503 when the call
    may or may not have taken effect (a 5xx answer, or no answer at all), to
    leave nothing half-done. Errors of our own raised inside pass unchanged.
    """
    try:
        yield
    except ApiException as error:
        if error.status in tolerate:
            return
        if on_unknown_outcome is not None and error.status is not None and error.status >= 500:
            on_unknown_outcome()
        raise _unavailable(failed, error, job_name=job_name) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        if on_unknown_outcome is not None:
            on_unknown_outcome()
        raise _unavailable(failed, error, job_name=job_name) from error


def _unavailable(failed: str, error: Exception, *, job_name: str) -> ExecutorUnavailable:
    """The 503 for a failed call: what ``failed``, and why in public words; the client's full error goes to the log."""
    detail = api_message(error) if isinstance(error, ApiException) else str(error) or type(error).__name__
    logger.warning("k8s.call_failed", extra={"job_name": job_name, "mode": "k8s", "failed": failed, "detail": detail})
    return ExecutorUnavailable(f"{failed}: {describe_api_failure(error)}")


def api_message(error: ApiException) -> str:
    """The API server's own words from an error, else the HTTP reason."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("message") or f"{error.status} {error.reason}")


def describe_api_failure(error: BaseException) -> str:
    """What went wrong with a call to the API server, in words anyone may read (``/readyz``, ``503`` answers).

    Never the server's host, port or URLs, which urllib3's messages name, nor
    the server's own message for a refusal, which may name internal parts (an
    etcd address, a ServiceAccount): those are for the logs.
    """
    if isinstance(error, ApiException):
        return f"the Kubernetes API server answered {_status_words(error.status)}"
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return f"the Kubernetes API server is unreachable: {describe_connection_error(error)}"
    return f"the call to the Kubernetes API server failed ({type(error).__name__})"


def _status_words(status: int | None) -> str:
    try:
        return f"{status} {HTTPStatus(status or 0).phrase}"
    except ValueError:
        return str(status) if status else "an error"
