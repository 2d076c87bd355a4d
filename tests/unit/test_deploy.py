"""The deploy/ manifests stay true to the app: same jobspecs, the Role the design asks for."""

from __future__ import annotations

import yaml

from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"


def test_deploy_jobspecs_are_the_projects_jobspecs() -> None:
    ours = {p.name: p.read_bytes() for p in (PROJECT_ROOT / "jobspecs").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (DEPLOY / "jobspecs").glob("*.yaml")}
    assert shipped == ours, "run `make deploy-jobspecs`"
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["configMapGenerator"][0]["files"]
    assert sorted(listed) == sorted(f"jobspecs/{name}" for name in ours)


def test_the_role_grants_only_what_the_app_uses() -> None:
    role = next(d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d and d["kind"] == "Role")
    rules = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("batch", "jobs"): sorted(["create", "get", "list", "watch", "delete", "patch"]),
        ("", "pods"): ["get", "list"],
        ("", "pods/log"): ["get"],
        ("", "events"): ["list", "watch"],
    }


def test_every_manifest_parses() -> None:
    for path in DEPLOY.rglob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path


def test_a_stopping_pod_fits_its_grace_period() -> None:
    # The kubelet kills the pod terminationGracePeriodSeconds after deletion: the
    # preStop pause and gunicorn's whole graceful stop (over half of which the
    # open streams' ends are spread) must end before that, with room to exit.
    deployment = next(
        d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d and d["kind"] == "Deployment"
    )
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "jobpulse")
    env = {e["name"]: e.get("value") for e in container["env"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(env.get("GRACEFUL_TIMEOUT") or 10)
    assert pre_stop + graceful + 5 <= pod["terminationGracePeriodSeconds"]
