"""A real Kubernetes control plane for the session, a fresh namespace per module, the app as its ServiceAccount.

The namespace gets the ServiceAccount, Role and RoleBinding from ``deploy/``,
and the app authenticates with that ServiceAccount's token: every test here
also proves the Role grants enough. A missing control plane fails the run;
it is never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from tests.cluster.controlplane import ControlPlane, find_bin_dir
from tests.helpers import wait_for
from tests.k8s.identity import APP_SERVICE_ACCOUNT, apply_app_identity
from tests.live.server import LiveServer


class ExistingCluster:
    """Any cluster named by ``TEST_KUBECONFIG`` (kind, k3d, a real one), with the admin rights it grants.

    It offers what most tests use; tests that must stop or restart the API
    server, compact etcd, or set KWOK's pod logs, skip on it (they need the built control plane).
    """

    def __init__(self, kubeconfig: str, workdir: Path) -> None:
        from kubernetes import client, config

        self.kubeconfig_path = kubeconfig
        self.workdir = workdir
        self._api = config.new_client_from_config(config_file=kubeconfig)
        self._client = client
        self.server_url = self._api.configuration.host

    def request(
        self, method: str, path: str, body: Any = None, *, missing_ok: bool = False, ok_conflict: bool = False
    ) -> Any:
        import json

        from kubernetes.client.exceptions import ApiException

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._api.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        try:
            response = self._api.call_api(method, self.server_url + path, header_params=headers, body=body)
            response.read()
        except ApiException as error:
            if (error.status == 404 and missing_ok) or (error.status == 409 and ok_conflict):
                return None
            raise
        return json.loads(response.data) if response.data else None

    def create_namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}, ok_conflict=True)
        wait_for(
            lambda: self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", missing_ok=True),
            timeout=60,
            what="the default ServiceAccount",
        )

    def delete_namespace(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{name}", missing_ok=True)

    def service_account_kubeconfig(self, namespace: str, name: str, *, create: bool = False) -> str:
        token = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
        )["status"]["token"]
        source = yaml.safe_load(Path(self.kubeconfig_path).read_text())
        current = next(c for c in source["contexts"] if c["name"] == source["current-context"])["context"]
        cluster = next(c for c in source["clusters"] if c["name"] == current["cluster"])
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name, "namespace": namespace}}],
            "current-context": name,
        }
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig_path)

    def apiserver_metrics(self) -> str:
        response = self._api.call_api("GET", self.server_url + "/metrics", header_params=self._auth_headers())
        response.read()
        return response.data.decode()

    def _auth_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        self._api.update_params_for_auth(headers, None, ["BearerToken"], "/metrics", "GET", None)
        return headers

    def restart_apiserver(self) -> None:
        pytest.skip("TEST_KUBECONFIG: cannot restart the API server of an existing cluster")

    def apiserver_stopped(self) -> Any:
        pytest.skip("TEST_KUBECONFIG: cannot stop the API server of an existing cluster")

    def compact_etcd(self) -> None:
        pytest.skip("TEST_KUBECONFIG: cannot compact the etcd of an existing cluster")

    def set_pod_log(self, lines: list[str]) -> None:
        pytest.skip("TEST_KUBECONFIG: pod logs come from real containers on an existing cluster")

    def stop(self) -> None:
        self._api.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    existing = os.environ.get("TEST_KUBECONFIG")
    if existing:
        other = ExistingCluster(existing, tmp_path_factory.mktemp("cluster"))
        yield other
        other.stop()
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("no Kubernetes control plane binaries: run `make cluster` (or set KUBEBUILDER_ASSETS)")
    plane = ControlPlane(bin_dir=bin_dir, workdir=str(tmp_path_factory.mktemp("cluster")))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def k8s_namespace(cluster: ControlPlane) -> Iterator[str]:
    namespace = f"jp-{secrets.token_hex(4)}"
    cluster.create_namespace(namespace)
    apply_app_identity(cluster, namespace)
    yield namespace
    cluster.delete_namespace(namespace)


@pytest.fixture(scope="module")
def app_kubeconfig(cluster: ControlPlane, k8s_namespace: str) -> str:
    """A kubeconfig that authenticates as the app's ServiceAccount (not as an admin)."""
    return cluster.service_account_kubeconfig(k8s_namespace, APP_SERVICE_ACCOUNT, create=False)


@pytest.fixture
def k8s_env(app_kubeconfig: str, k8s_namespace: str) -> dict[str, str]:
    return {"EXECUTION_MODE": "k8s", "KUBECONFIG": app_kubeconfig, "K8S_NAMESPACE": k8s_namespace}


@pytest.fixture
def k8s_app(make_app: Callable[..., Flask], k8s_env: dict[str, str]) -> Flask:
    return make_app(**k8s_env)


@pytest.fixture
def k8s_live_server(make_live_server: Callable[..., LiveServer], k8s_env: dict[str, str]) -> LiveServer:
    return make_live_server(**k8s_env)


@pytest.fixture(scope="module")
def kube(cluster: ControlPlane) -> Any:
    """The admin's view of the API server (for checks and for changes made outside the app)."""
    from kubernetes import client

    api = cluster.api_client()
    yield client.BatchV1Api(api)
    api.close()


def jobs_in(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    return items


def write_kubeconfig_to_nowhere(source: str, target: Path) -> str:
    """A copy of ``source`` whose server is a closed loopback port: an unreachable API server."""
    from tests.live.server import free_port

    config = yaml.safe_load(Path(source).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    target.write_text(yaml.safe_dump(config))
    return str(target)
