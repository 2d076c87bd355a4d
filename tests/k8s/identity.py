"""The app's identity in a namespace, exactly as deploy/ defines it: ServiceAccount, Role, RoleBinding.

Used by the Kubernetes tests and by the benchmarks, so both run the app with
the rights it has in production, and no more.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.live.server import PROJECT_ROOT

_RBAC_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}
APP_SERVICE_ACCOUNT = "jobpulse"


def apply_app_identity(cluster: Any, namespace: str) -> None:
    """Create the app's ServiceAccount, Role and RoleBinding from deploy/ in ``namespace``."""
    for path in ("deploy/serviceaccount.yaml", "deploy/rbac.yaml"):
        for document in yaml.safe_load_all((PROJECT_ROOT / path).read_text()):
            if not document or document.get("kind") not in _RBAC_PATHS:
                continue
            document["metadata"]["namespace"] = namespace
            for subject in document.get("subjects") or ():
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
            cluster.request("POST", _RBAC_PATHS[document["kind"]].format(ns=namespace), document, ok_conflict=True)
