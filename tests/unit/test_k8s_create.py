"""The Job's create, posted without the client's models: the request the API server gets, and its refusals.

A real HTTP server stands in for the API server and answers each ``POST`` as
told; the executor talks to it through the official client's own connection
pool, as it talks to the real one.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, InvalidRequest
from webapp.executors.k8s import KubernetesExecutor
from webapp.hub import StatusHub
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase

JOB = "donation-create-0123abcd"
MANIFEST: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": JOB, "labels": {"app": "jobpulse"}},
    "spec": {
        "backoffLimit": 0,
        "managedBy": "example.com/benchmark",
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "task", "image": "busybox", "env": [{"name": "TASK_PARAMS", "value": "{}"}]}],
            }
        },
    },
}


class FakeApiServer(http.server.ThreadingHTTPServer):
    """Answers every request with the next of ``answers`` (status, JSON body); keeps what it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeApiServer
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, answer = self.server.answers.pop(0) if self.server.answers else (200, {"kind": "Status"})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def executor(api_server: FakeApiServer, tmp_path: Path) -> KubernetesExecutor:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{api_server.server_port}"
    configuration.api_key = {"authorization": "the-service-account-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    door = StatusDoor(hub=StatusHub(), store=SQLiteRunStore(tmp_path / "runs.sqlite3"))
    return KubernetesExecutor(door=door, api=client.ApiClient(configuration), namespace="donations")


def opened(executor: KubernetesExecutor) -> JobStatus:
    status = JobStatus.new(job_name=JOB, mode="k8s", spec="donation", pipeline_run_id="create")
    executor._door.open(status, manifest=MANIFEST, client="192.0.2.1")
    return status


def test_the_manifest_is_posted_as_it_is_and_the_run_becomes_pending(
    api_server: FakeApiServer, executor: KubernetesExecutor
) -> None:
    api_server.answers = [(201, {**MANIFEST, "metadata": {**MANIFEST["metadata"], "uid": "u-1"}})]
    executor.launch(opened(executor), MANIFEST)

    ((method, path, headers, body),) = api_server.requests
    assert (method, path) == ("POST", "/apis/batch/v1/namespaces/donations/jobs")
    assert body == MANIFEST  # every field, the client's models' unknown ones too (spec.managedBy)
    assert headers["authorization"] == "Bearer the-service-account-token"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    current = executor._door.current(JOB)
    assert current is not None
    assert current.status == Phase.PENDING


def test_the_run_becomes_pending_without_being_read_back_from_the_store(
    api_server: FakeApiServer, executor: KubernetesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = executor._door.store
    first = opened(executor)
    reads: list[str] = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda name: reads.append(name) or real_get(name))
    api_server.answers = [(201, MANIFEST)]
    executor.launch(first, MANIFEST)

    assert reads == []  # the launcher saved the first status: nothing to read back
    saved = real_get(JOB)
    assert saved is not None
    assert (saved.status, saved.seq, [t.status for t in saved.history]) == (
        Phase.PENDING,
        2,
        [Phase.QUEUED, Phase.PENDING],
    )
    published = executor._door.hub.get(JOB)
    assert published is not None
    assert published.stored_json == saved.stored_json  # what clients and the store hold is one status


def test_a_pending_another_instance_saved_first_is_kept_with_its_seq(
    api_server: FakeApiServer, executor: KubernetesExecutor
) -> None:
    # another instance's watch saw the Job before this launch's answer came back, and saved what it says
    first = opened(executor)
    theirs = dataclasses.replace(first.evolve(status=Phase.PENDING), observed="41")
    assert executor._door.store.save(theirs)
    api_server.answers = [(201, MANIFEST)]
    executor.launch(first, MANIFEST)

    saved, published = executor._door.store.get(JOB), executor._door.hub.get(JOB)
    assert saved is not None
    assert published is not None
    assert saved.stored_json == theirs.stored_json  # not saved again under another seq
    assert published.stored_json == theirs.stored_json  # and theirs is the status this process publishes


@pytest.mark.parametrize(
    ("status", "raised", "deletes"),
    [
        (422, InvalidRequest, False),  # the server's own validation of the Job
        (400, InvalidRequest, False),
        (409, Conflict, False),
        (403, ExecutorUnavailable, False),
        (500, ExecutorUnavailable, True),  # the outcome is unknown: nothing half-created may remain
    ],
)
def test_a_refused_create_raises_our_error_and_leaves_nothing_half_created(
    api_server: FakeApiServer, executor: KubernetesExecutor, status: int, raised: type[Exception], deletes: bool
) -> None:
    api_server.answers = [(status, {"kind": "Status", "message": "spec.template: Required value"})]
    first = opened(executor)
    with pytest.raises(raised) as error:
        executor.launch(first, MANIFEST)

    if raised is InvalidRequest:
        assert "spec.template: Required value" in str(error.value)
    methods = [method for method, *_ in api_server.requests]
    assert methods == (["POST", "DELETE"] if deletes else ["POST"])
    current = executor._door.current(JOB)
    assert current is not None
    assert current.status == first.status  # not moved on: the launcher withdraws it
