"""The operator console in Chromium against the real control plane: a pod's output outlives the pod, suspend and resume.

The browser fixtures are the e2e ones (:mod:`tests.browser`): every page is
watched for script errors and CSP violations. The app runs as its ServiceAccount.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.cluster.controlplane import ControlPlane
from tests.e2e.test_console import ALICE, Console
from tests.helpers import wait_for
from tests.k8s.conftest import jobs_in
from tests.k8s.test_k8s_log_tails import pods_of
from tests.live.server import LiveServer

AS_ALICE = {"Authorization": f"Bearer {ALICE}"}

# gone.yaml (garbage-collected at once) that runs for a few seconds first, so it can be watched running
GONE_SLOWLY = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: gone-slowly
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 0
  template:
    metadata:
      annotations:
        jobpulse-test/run-for: 4s
    spec:
      restartPolicy: Never
      containers:
        - name: task
          image: jobpulse:latest
          command: ["python", "-c", "print('gone task', flush=True)"]
"""


@pytest.fixture
def server(make_live_server: Callable[..., LiveServer], k8s_env: dict[str, str], jobspecs_dir: Path) -> LiveServer:
    (jobspecs_dir / "gone-slowly.yaml").write_text(textwrap.dedent(GONE_SLOWLY))
    return make_live_server(**k8s_env, ADMIN_TOKENS=f"alice:{ALICE}")


def launch(server: LiveServer, spec: str) -> str:
    response = requests.post(f"{server.url}/api/jobs", json={"spec": spec}, headers=AS_ALICE, timeout=10)
    assert response.status_code == 202, response.text
    name: str = response.json()["job_name"]
    return name


def test_the_console_shows_a_pods_output_while_it_runs_and_after_the_job_and_pod_are_gone(
    server: LiveServer, cluster: ControlPlane, k8s_namespace: str, page: Page
) -> None:
    cluster.set_pod_log(["pod says hello", "pod is working"])
    console = Console(page, server.url).open().sign_in(ALICE)
    expect(page.locator("#transport")).to_have_attribute("data-state", "live")
    name = launch(server, "gone-slowly")
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=30_000)
    row.get_by_role("button", name=name).click()
    logs = page.locator("#detail-logs")
    expect(logs).to_contain_text("pod is working", timeout=15_000)
    expect(page.locator("#logs-state")).to_have_text("following as it is written")
    expect(page.locator("#detail-facts")).to_contain_text("Running")  # seen while it ran, from the pod

    expect(row).to_have_attribute("data-status", "Succeeded", timeout=30_000)
    # The follow has ended (its pod stream cut 2 s after the Job finished): what it read is final. The simulated
    # kubelet streams one log file for every pod, so a follow still open would read the rewrite below.
    expect(page.locator("#logs-state")).to_have_text("the task ended", timeout=15_000)
    wait_for(
        lambda: (
            not any(job["metadata"]["name"] == name for job in jobs_in(cluster, k8s_namespace))
            and not pods_of(cluster, k8s_namespace, name)
        ),
        timeout=60,
        what="the Job and its pod to be garbage-collected",
    )
    cluster.set_pod_log(["another pod's output"])  # were a pod still read, it would say this
    # Kept by the keeper, or handed to it by the follow the console held if the pod went first; saved off the
    # request path, so a reload in the very instant the run ends may come before it.
    wait_for(
        lambda: (
            requests.get(f"{server.url}/api/jobs/{name}/logs", headers=AS_ALICE, timeout=10).text
            == "pod says hello\npod is working\n"
        ),
        timeout=30,
        what="the output to be kept",
    )
    page.reload()  # a fresh look: the tab keeps its session
    row.get_by_role("button", name=name).click()
    expect(logs).to_have_text("pod says hello\npod is working\n")
    expect(page.locator("#logs-state")).to_have_text("")


def test_an_operator_suspends_and_resumes_a_kubernetes_run_from_the_console(server: LiveServer, page: Page) -> None:
    console = Console(page, server.url).open().sign_in(ALICE)
    name = launch(server, "medium")  # Running for 15 s
    row = console.row(name)
    expect(row).to_have_attribute("data-status", "Running", timeout=30_000)
    expect(row.locator("td").nth(2)).to_have_text("k8s")
    row.get_by_role("button", name=name).click()
    suspend = page.get_by_role("button", name="Suspend")
    resume = page.get_by_role("button", name="Resume")
    expect(suspend).to_be_visible()
    expect(resume).to_be_hidden()

    suspend.click()
    expect(page.locator("#confirm-text")).to_have_text(f"Suspend run {name}?")
    page.click("#confirm-yes")
    expect(page.locator("#detail-message")).to_have_text("Suspended.")
    expect(row).to_have_attribute("data-status", "Suspended", timeout=30_000)
    expect(resume).to_be_visible()
    expect(suspend).to_be_hidden()

    resume.click()
    expect(page.locator("#confirm-text")).to_have_text(f"Resume run {name}?")
    page.click("#confirm-yes")
    expect(page.locator("#detail-message")).to_have_text("Resumed.")
    expect(row).not_to_have_attribute("data-status", "Suspended", timeout=30_000)
    expect(row).to_have_attribute("data-status", "Running", timeout=30_000)
    expect(suspend).to_be_visible()
    page.click("#tab-audit")
    expect(page.locator("#audit-body")).to_contain_text("suspend")
    expect(page.locator("#audit-body")).to_contain_text("resume")
