"""The one error wrapper of the Kubernetes client: client errors become our 503, in public words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import urllib3
from kubernetes.client import configuration as kube_configuration
from kubernetes.client.exceptions import ApiException

from tests.helpers import captured_logs
from webapp.errors import ExecutorUnavailable, InvalidRequest
from webapp.kube.client import api_call, api_message, connect, describe_api_failure
from webapp.settings import Settings

UNREACHABLE = urllib3.exceptions.MaxRetryError(
    None,  # type: ignore[arg-type]
    "/apis/batch/v1/namespaces/ns/jobs",
    reason=urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused"),  # type: ignore[arg-type]
)


def refusal(status: int, message: str = "etcd at 10.0.0.9:2379 is sad") -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps({"message": message})
    return error


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (refusal(500), "could not create the Job: the Kubernetes API server answered 500 Internal Server Error"),
        (refusal(403), "could not create the Job: the Kubernetes API server answered 403 Forbidden"),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "could not create the Job: the Kubernetes API server is unreachable",
        ),
        (UNREACHABLE, "could not create the Job: the Kubernetes API server is unreachable"),
    ],
)
def test_a_failed_call_is_a_503_in_public_words_and_a_log_line(error: Exception, words: str) -> None:
    with (
        captured_logs("webapp.kube") as records,
        pytest.raises(ExecutorUnavailable) as raised,
        api_call("could not create the Job", job_name="task-runner-x-00000000"),
    ):
        raise error
    assert str(raised.value).startswith(words)
    assert "10.0.0.9" not in str(raised.value)
    assert raised.value.__cause__ is error
    (record,) = [r for r in records if r.getMessage() == "k8s.call_failed"]
    assert record.job_name == "task-runner-x-00000000"  # type: ignore[attr-defined]
    assert record.failed == "could not create the Job"  # type: ignore[attr-defined]


def test_the_log_line_keeps_the_servers_own_words() -> None:
    with (
        captured_logs("webapp.kube") as records,
        pytest.raises(ExecutorUnavailable),
        api_call("could not delete the Job", job_name="task-runner-x-00000000"),
    ):
        raise refusal(500)
    assert [r.detail for r in records] == ["etcd at 10.0.0.9:2379 is sad"]  # type: ignore[attr-defined]


def test_tolerated_statuses_end_the_block_quietly() -> None:
    reached = []
    with api_call("could not delete the Job", job_name="j", tolerate={404}):
        raise refusal(404)
    reached.append("after")
    assert reached == ["after"]
    with pytest.raises(ExecutorUnavailable), api_call("could not delete the Job", job_name="j", tolerate={404}):
        raise refusal(409)


@pytest.mark.parametrize(
    ("error", "cleaned"),
    [
        (refusal(500), True),
        (refusal(503), True),
        (OSError("reset"), True),
        (UNREACHABLE, True),
        (refusal(403), False),  # refused: nothing was created
        (refusal(404), False),
    ],
)
def test_an_unknown_outcome_is_cleaned_up_before_the_503(error: Exception, cleaned: bool) -> None:
    calls: list[str] = []
    with (
        pytest.raises(ExecutorUnavailable),
        api_call("could not create the Job", job_name="j", on_unknown_outcome=lambda: calls.append("clean")),
    ):
        raise error
    assert calls == (["clean"] if cleaned else [])


def test_our_own_errors_pass_unchanged() -> None:
    calls: list[str] = []
    with (
        pytest.raises(InvalidRequest),
        api_call("could not create the Job", job_name="j", on_unknown_outcome=lambda: calls.append("clean")),
    ):
        raise InvalidRequest("the API server refused the Job")
    assert calls == []


def test_api_message_and_description() -> None:
    assert api_message(refusal(422, "spec.template: Required value")) == "spec.template: Required value"
    bare = ApiException(status=502, reason="Bad Gateway")
    assert api_message(bare) == "502 Bad Gateway"
    assert describe_api_failure(ApiException(status=599)) == "the Kubernetes API server answered 599"
    assert describe_api_failure(ValueError("x")) == "the call to the Kubernetes API server failed (ValueError)"
    assert "/apis" not in describe_api_failure(UNREACHABLE)


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://api.example.test:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: the-service-account-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: donations}}]
current-context: x
"""


def test_a_kubeconfig_client_keeps_the_environments_proxy_without_reading_it_again_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    api, namespace = connect(Settings.from_env({"KUBECONFIG": str(tmp_path / "kubeconfig")}))
    configuration = api.configuration
    reads: list[int] = []
    monkeypatch.setattr(kube_configuration, "getproxies", lambda: reads.append(1) or {})

    # what every request asks for its Authorization header: the kubeconfig's hook sets the host again
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer the-service-account-token"
    assert reads == []
    assert configuration.host == "https://api.example.test:6443"
    assert configuration.proxy == "http://proxy.example.test:3128"  # the environment's, as the pool uses it
    assert api.rest_client.pool_manager.proxy.host == "proxy.example.test"
    assert namespace == "donations"
    api.close()
