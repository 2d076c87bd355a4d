"""Smoke check of the test control plane (not collected by pytest).

    python tests/cluster/smoke.py [--bin-dir DIR]

Starts a ControlPlane, runs Jobs through kwok's stages (succeed, fail with
exit code 3, run for 10 s), checks a ServiceAccount token with a Role,
restart_apiserver(), compact_etcd() (old resourceVersion -> 410 Gone) and
apiserver_metrics(), then stops it. Ends with 'N passed, N failed'.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from controlplane import ControlPlane, build_bin_dir, find_bin_dir
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

NS = "smoke"


def job_manifest(name, *, pod_labels=None, pod_annotations=None):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": dict(pod_labels or {}), "annotations": dict(pod_annotations or {})},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                },
            },
        },
    }


def run_job(batch, core, name, timeout=90, **kw):
    """Create a Job, poll until Complete/Failed; return (condition, timeline)."""
    batch.create_namespaced_job(NS, job_manifest(name, **kw))
    t0 = time.monotonic()
    seen = []

    def note(what):
        if not seen or seen[-1][1] != what:
            seen.append((round(time.monotonic() - t0, 1), what))

    while time.monotonic() - t0 < timeout:
        pods = core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
        for p in pods:
            note(f"pod {p.status.phase}")
        job = batch.read_namespaced_job_status(name, NS)
        for c in job.status.conditions or []:
            if c.status == "True":
                note(f"job {c.type}/{c.reason}")
                if c.type in ("Complete", "Failed"):
                    return c, seen
        time.sleep(0.2)
    raise AssertionError(f"job {name} did not finish in {timeout}s: {seen}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir")
    a = ap.parse_args()
    bin_dir = a.bin_dir or find_bin_dir() or build_bin_dir()
    results = []

    def check(name, fn):
        t = time.monotonic()
        try:
            fn()
            results.append((name, True))
            print(f"PASS {name} ({time.monotonic() - t:.1f}s)", flush=True)
        except Exception:
            results.append((name, False))
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)

    t = time.monotonic()
    with ControlPlane(bin_dir=bin_dir) as cp:
        print(f"control plane up in {time.monotonic() - t:.1f}s at {cp.server_url} (workdir {cp.workdir})", flush=True)
        api = cp.api_client()
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        try:

            def version():
                v = cp.request("GET", "/version")
                assert v["gitVersion"] == "v1.37.2", v
                print("  /version:", v["gitVersion"], v["goVersion"])

            check("version", version)
            check("namespace", lambda: cp.create_namespace(NS))

            def job_ok():
                c, seen = run_job(batch, core, "ok")
                print("  ok:", seen)
                assert c.type == "Complete", seen

            check("job completes", job_ok)

            def job_fail():
                c, seen = run_job(batch, core, "fail", pod_labels={"jobpulse-test/outcome": "fail"})
                print("  fail:", seen)
                assert c.type == "Failed" and c.reason == "BackoffLimitExceeded", (c, seen)
                pod = core.list_namespaced_pod(NS, label_selector="job-name=fail").items
                if pod:  # may already be gone
                    st = pod[0].status.container_statuses[0].state.terminated
                    assert st.exit_code == 3, st

            check("job fails (exit 3, BackoffLimitExceeded)", job_fail)

            def job_slow():
                c, seen = run_job(batch, core, "slow", pod_annotations={"jobpulse-test/run-for": "10s"})
                print("  slow:", seen)
                running = next(t for t, w in seen if w == "pod Running")
                done = next(t for t, w in seen if w.startswith("job Complete"))
                assert c.type == "Complete" and 9.0 <= done - running <= 16, seen

            check("job runs 10s then completes", job_slow)

            def sa_token():
                cp.request(
                    "POST",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles",
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "Role",
                        "metadata": {"name": "jobpulse"},
                        "rules": [
                            {
                                "apiGroups": ["batch"],
                                "resources": ["jobs"],
                                "verbs": ["create", "get", "list", "watch", "delete"],
                            },
                            {
                                "apiGroups": [""],
                                "resources": ["pods", "pods/log", "events"],
                                "verbs": ["get", "list", "watch"],
                            },
                        ],
                    },
                    ok_conflict=True,
                )
                cp.request(
                    "POST",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings",
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": "jobpulse"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "jobpulse"},
                        "subjects": [{"kind": "ServiceAccount", "name": "jobpulse", "namespace": NS}],
                    },
                    ok_conflict=True,
                )
                kc = cp.service_account_kubeconfig(NS, "jobpulse")
                sa_api = cp.api_client(kc)
                sa_batch = client.BatchV1Api(sa_api)
                names = {j.metadata.name for j in sa_batch.list_namespaced_job(NS).items}
                assert {"ok", "fail", "slow"} <= names, names
                sa_batch.create_namespaced_job(NS, job_manifest("by-sa"))
                try:
                    client.CoreV1Api(sa_api).list_namespaced_pod("kube-system")
                    raise AssertionError("SA could list kube-system pods")
                except ApiException as e:
                    assert e.status == 403, e
                who = cp.request(
                    "POST",
                    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                )
                print("  admin is:", who["status"]["userInfo"]["username"], "; SA kubeconfig:", kc)

            check("service account token + Role", sa_token)

            def restart():
                rv = batch.list_namespaced_job(NS).metadata.resource_version
                t = time.monotonic()
                cp.restart_apiserver()
                print(f"  apiserver restarted in {time.monotonic() - t:.1f}s")
                assert batch.list_namespaced_job(NS).metadata.resource_version >= rv
                c, _ = run_job(batch, core, "after-restart")
                assert c.type == "Complete"

            check("restart_apiserver", restart)

            def compaction():
                old_rv = batch.list_namespaced_job(NS).metadata.resource_version
                for i in range(3):
                    core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm{i}"}})
                rev = cp.compact_etcd()
                print(f"  compacted etcd at revision {rev} (old list RV {old_rv})")

                def watch_from_old():
                    w = watch.Watch()
                    try:
                        for ev in w.stream(
                            batch.list_namespaced_job,
                            NS,
                            resource_version=old_rv,
                            timeout_seconds=3,
                            allow_watch_bookmarks=False,
                        ):
                            if ev["type"] == "ERROR":
                                return ev["raw_object"].get("code")
                    except ApiException as e:
                        return e.status
                    return None

                code = watch_from_old()
                print(f"  watch from old RV after compact_etcd() -> {code}")
                assert code == 410, code
                c, _ = run_job(batch, core, "after-compaction")
                assert c.type == "Complete"

            check("compact_etcd -> 410 Gone", compaction)

            def pod_logs():
                pod = core.list_namespaced_pod(NS, label_selector="job-name=ok").items[0]
                text = core.read_namespaced_pod_log(pod.metadata.name, NS)
                assert text == "jobpulse-test: fake container output\n", repr(text)
                cp.set_pod_log(["line 1", "line 2"])
                text = core.read_namespaced_pod_log(pod.metadata.name, NS, tail_lines=1)
                assert text == "line 2\n", repr(text)

            check("pod logs (kwok fake kubelet)", pod_logs)

            def metrics():
                m = cp.apiserver_metrics()
                assert "apiserver_request_total" in m, m[:200]

            check("apiserver_metrics", metrics)
        finally:
            api.close()
            if not all(ok for _, ok in results):
                print(cp.tail_logs(20))
            pids = [p["pid"] for p in cp.procs.values()]
            t_stop = time.monotonic()
    print(f"stopped in {time.monotonic() - t_stop:.1f}s")

    def all_gone():
        assert not os.path.exists(cp.workdir), cp.workdir
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        assert not alive, alive

    check("stop() leaves no process and no workdir", all_gone)
    passed = sum(ok for _, ok in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
