"""The legacy HTTP runner against the task-runner service's contract, mocked with ``responses``.

We do not own that service, so its answers are played by :class:`FakeLegacyService`
(``responses`` callbacks); everything on our side is real: the hub, the SQLite
run store, the rendered ``donation-receipt`` manifest, the pollers' threads.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import urllib3
from prometheus_client import REGISTRY
from requests.models import PreparedRequest

from tests.helpers import wait_for
from tests.live.server import free_port
from webapp.door import StatusDoor
from webapp.errors import ExecutorUnavailable, InvalidRequest, JobNotFound
from webapp.executors.http_runner import TASK_ID_ANNOTATION, HttpRunner
from webapp.hub import StatusHub
from webapp.jobspecs import load_jobspecs, render_job
from webapp.names import new_job_name, new_pipeline_run_id
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.status import JobStatus, Phase, Progress, utcnow

URL = "http://legacy-runner.test"
JOBSPECS = Path(__file__).resolve().parents[2] / "jobspecs"
DONOR_EMAIL = "ada@example.org"
PARAMS = {"amount": "25.00", "currency": "EUR", "donor_name": "Ada Lovelace", "donor_email": DONOR_EMAIL}
FAST = {"poll_seconds": 0.01, "max_poll_seconds": 0.05, "request_timeout": 2.0}

Answer = Exception | int
"""An injected failure: an exception to raise (no HTTP answer) or an HTTP status to answer."""


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens: a real refusal of a real loopback port, wrapped as requests does.

    urllib3 is called directly, so ``responses`` does not intercept it; the
    message names the URL, the OS's reason lies deeper in the chain.
    """
    try:
        urllib3.PoolManager(retries=urllib3.Retry(0)).request("POST", f"http://127.0.0.1:{free_port()}/tasks")
    except urllib3.exceptions.MaxRetryError as error:
        return requests.ConnectionError(error)
    raise AssertionError("a closed port answered")


def hung_up() -> requests.ConnectionError:
    """The service closed the connection without an answer (no OS reason): the message names its host, port, URL."""
    pool = urllib3.HTTPConnectionPool("legacy-runner.test", 8080)
    dropped = urllib3.exceptions.ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection without response")
    )
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/tasks/1", reason=dropped))


def untrusted_certificate() -> requests.ConnectionError:
    """TLS verification failed: the OS-style reason itself names the host, as Python's ssl module words it."""
    mismatch = ssl.SSLCertVerificationError(
        1,
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
        "certificate is not valid for 'legacy-runner.test'. (_ssl.c:1000)",
    )
    pool = urllib3.HTTPSConnectionPool("legacy-runner.test", 8443)
    reason = urllib3.exceptions.SSLError(mismatch)
    return requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(pool, "/tasks", reason=reason))


class FakeLegacyService:
    """The legacy task runner as ``responses`` callbacks: its tasks, and the failures we inject."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.tasks: dict[str, dict[str, Any]] = {}
        self.launch_answer: Answer | tuple[int, dict[str, Any]] | None = None
        self.poll_troubles: list[Answer] = []
        self.down: Answer | None = None
        self.delete_status = 204
        self.poll_threads: set[int] = set()
        self.poll_times: list[float] = []
        self._lock = threading.Lock()
        self._next_id = 1
        task = re.compile(rf"^{re.escape(URL)}/tasks/[^/]+$")
        mock.add_callback(responses.POST, f"{URL}/tasks", callback=self._create)
        mock.add_callback(responses.GET, task, callback=self._read)
        mock.add_callback(responses.DELETE, task, callback=self._delete)

    def set_state(self, task_id: str, state: str, message: str | None = None, progress: Any = None) -> None:
        """The task's answer from now on; ``progress`` (optional in the contract) is sent when not ``None``."""
        with self._lock:
            self.tasks[task_id] = {"state": state, "message": message}
            if progress is not None:
                self.tasks[task_id]["progress"] = progress

    def requests(self, method: str) -> list[PreparedRequest]:
        return [call.request for call in list(self.mock.calls) if call.request.method == method]

    def _create(self, request: PreparedRequest) -> Any:
        answer = self.launch_answer
        if isinstance(answer, Exception):
            return answer
        if isinstance(answer, int):
            return (answer, {}, "")
        if isinstance(answer, tuple):
            return (answer[0], {}, json.dumps(answer[1]))
        with self._lock:
            task_id = str(self._next_id)
            self._next_id += 1
            self.tasks[task_id] = {"state": "queued", "message": None}
        return (201, {}, json.dumps({"id": task_id}))

    def _read(self, request: PreparedRequest) -> Any:
        with self._lock:
            self.poll_threads.add(threading.get_ident())
            self.poll_times.append(time.monotonic())
            trouble = self.poll_troubles.pop(0) if self.poll_troubles else self.down
            task = self.tasks.get(str(request.url).rsplit("/", 1)[1])
        if isinstance(trouble, Exception):
            return trouble
        if trouble is not None:
            return (trouble, {}, json.dumps({"message": "upstream trouble"}))
        if task is None:
            return (404, {}, json.dumps({"message": "no such task"}))
        return (200, {}, json.dumps(task))

    def _delete(self, request: PreparedRequest) -> Any:
        if isinstance(self.down, Exception):
            return self.down
        with self._lock:
            self.tasks.pop(str(request.url).rsplit("/", 1)[1], None)
        return (self.delete_status, {}, "")


class Node:
    """One process's worth of jobpulse: a hub, the HTTP runner, and every status the hub accepted."""

    def __init__(self, store: SQLiteRunStore, **options: Any) -> None:
        self.store = store
        self.hub = StatusHub()
        self.seen: list[JobStatus] = []
        self.hub.add_listener(self._record)
        self.door = StatusDoor(hub=self.hub, store=store)
        self.runner = HttpRunner(door=self.door, base_url=URL + "/", **{**FAST, **options})

    def _record(self, status: JobStatus, previous: JobStatus | None) -> None:
        self.seen.append(status)

    def launch(self, params: dict[str, str] | None = None) -> JobStatus:
        """What the launcher does: record the Queued run and its manifest, hand it over, undo on failure."""
        spec = load_jobspecs(JOBSPECS)["donation-receipt"]
        run_id = new_pipeline_run_id()
        job_name = new_job_name(run_id)
        manifest = render_job(spec, job_name=job_name, pipeline_run_id=run_id, params=params or PARAMS)
        status = JobStatus.new(job_name=job_name, mode="legacy", spec=spec.name, pipeline_run_id=run_id)
        self.door.open(status, manifest=manifest, client=None)
        try:
            self.runner.launch(status, manifest)
        except Exception:
            self.door.withdraw(job_name)
            raise
        return self.door.announce(status)

    def wait_status(self, job_name: str, phase: Phase, *, reason: str | None = None) -> JobStatus:
        def reached() -> JobStatus | None:
            status = self.hub.get(job_name)
            if status is not None and status.status == phase and (reason is None or status.reason == reason):
                return status
            return None

        status = wait_for(reached, what=f"{job_name} {phase} {reason or ''}")
        assert status is not None
        return status


class Recorder(logging.Handler):
    """Keeps every record (the ``webapp`` logger may not propagate to pytest's capture)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def poller_threads(job_name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"legacy-poll-{job_name}"]


def restarts(reason: str) -> float:
    value = REGISTRY.get_sample_value("jobpulse_legacy_poll_failures_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def service(mock: responses.RequestsMock) -> FakeLegacyService:
    return FakeLegacyService(mock)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    store = SQLiteRunStore(tmp_path / "db.sqlite3")
    yield store
    store.close()


@pytest.fixture
def make_node(store: SQLiteRunStore, service: FakeLegacyService) -> Iterator[Callable[..., Node]]:
    """Started nodes on the shared store; all stopped before the mock and the store go away."""
    nodes: list[Node] = []

    def make(**options: Any) -> Node:
        node = Node(store, **options)
        node.runner.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.runner.stop()


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    return make_node()


# -- launching -----------------------------------------------------------------


def test_launch_posts_the_task_and_follows_it_to_succeeded(
    node: Node, service: FakeLegacyService, store: SQLiteRunStore
) -> None:
    launched = node.launch()
    assert launched.status == Phase.PENDING
    assert launched.mode == "legacy"
    (posted,) = service.requests("POST")
    assert json.loads(posted.body or b"") == {
        "spec": "donation-receipt",
        "params": PARAMS,
        "job_name": launched.job_name,
    }
    manifest = store.manifest(launched.job_name)
    assert manifest is not None
    assert manifest["metadata"]["annotations"][TASK_ID_ANNOTATION] == "1"

    queued = node.wait_status(launched.job_name, Phase.PENDING, reason="QueuedByLegacyRunner")
    assert queued.message == "waiting in the legacy task runner's queue"
    service.set_state("1", "running", "step 2 of 4: record")
    running = node.wait_status(launched.job_name, Phase.RUNNING)
    assert running.active == 1
    service.set_state("1", "succeeded", "receipt sent")
    done = node.wait_status(launched.job_name, Phase.SUCCEEDED)

    assert (done.reason, done.message, done.succeeded, done.active) == (None, "receipt sent", 1, 0)
    assert [t.status for t in done.history] == [Phase.QUEUED, Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED]
    assert [s.seq for s in node.seen] == sorted({s.seq for s in node.seen})
    wait_for(lambda: not poller_threads(launched.job_name), what="the poller to stop at a terminal status")
    stored = store.get(launched.job_name)
    assert stored is not None and stored.status == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("message", "expected"),
    [("card declined by the bank", "card declined by the bank"), (None, "the legacy runner reported failure")],
)
def test_a_failed_task_is_failed_with_the_services_message(
    node: Node, service: FakeLegacyService, message: str | None, expected: str
) -> None:
    launched = node.launch()
    service.set_state("1", "failed", message)
    failed = node.wait_status(launched.job_name, Phase.FAILED)
    assert (failed.reason, failed.message, failed.failed) == ("TaskFailed", expected, 1)


def test_progress_the_service_reports_is_passed_through_and_the_final_status_keeps_it(
    node: Node, service: FakeLegacyService
) -> None:
    launched = node.launch()
    service.set_state("1", "running", "working", progress={"done": 1, "total": 4, "text": "Donation checked"})
    first = wait_for(lambda: (s := node.hub.get(launched.job_name)) and s.progress is not None and s)
    assert first.progress == Progress(done=1, total=4, text="Donation checked")
    assert first.progress.at is not None
    service.set_state("1", "running", "working", progress={"done": 2, "total": 4})
    wait_for(lambda: (s := node.hub.get(launched.job_name)) and s.progress == Progress(done=2, total=4))
    service.set_state("1", "succeeded", "receipt sent")  # no progress in the last answer: the last one stays
    done = node.wait_status(launched.job_name, Phase.SUCCEEDED)
    assert done.progress == Progress(done=2, total=4)
    assert [t.status for t in done.history] == [Phase.QUEUED, Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED]


@pytest.mark.parametrize(
    "garbage",
    [
        "50%",
        [1, 4],
        {"total": 4},
        {"done": -1},
        {"done": True},
        {"done": 1.5},
        {"done": "1"},
        {"done": 2**60},
        {"done": 5, "total": 4},
        {"done": 1, "total": "4"},
        {"done": 1, "text": 7},
    ],
)
def test_progress_that_makes_no_sense_is_ignored(node: Node, service: FakeLegacyService, garbage: Any) -> None:
    launched = node.launch()
    service.set_state("1", "running", "garbage sent", progress=garbage)
    running = node.wait_status(launched.job_name, Phase.RUNNING)
    assert running.message == "garbage sent"
    assert running.progress is None
    service.set_state("1", "running", "sense again", progress={"done": 3, "total": 4, "text": None})
    wait_for(lambda: (s := node.hub.get(launched.job_name)) and s.progress == Progress(done=3, total=4))


def test_progress_text_is_one_plain_line_of_at_most_200_characters(node: Node, service: FakeLegacyService) -> None:
    launched = node.launch()
    text = "step\none\x1b[31m red \u202eevil " + "x" * 300
    service.set_state("1", "running", None, progress={"done": 1, "total": None, "text": text})
    status = wait_for(lambda: (s := node.hub.get(launched.job_name)) and s.progress is not None and s)
    assert status.progress is not None and status.progress.text is not None
    assert status.progress.text.startswith("step one[31m red evil x")
    assert len(status.progress.text) == 200
    assert status.progress.total is None


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (refused, ExecutorUnavailable, "the legacy task runner is unreachable: Connection refused"),
        (
            requests.ReadTimeout("read timed out"),
            ExecutorUnavailable,
            "the legacy task runner is unreachable: timed out",
        ),
        (502, ExecutorUnavailable, "the legacy task runner answered 502"),
        (503, ExecutorUnavailable, "the legacy task runner answered 503"),
        ((422, {"message": "unknown spec"}), InvalidRequest, "the legacy task runner refused the task: unknown spec"),
        ((403, {"message": "not allowed"}), ExecutorUnavailable, "refused the task (403): not allowed"),
        ((201, {"status": "ok"}), ExecutorUnavailable, "answered no task id"),
    ],
)
def test_a_launch_the_service_does_not_take_leaves_nothing_behind(
    node: Node,
    service: FakeLegacyService,
    store: SQLiteRunStore,
    answer: Answer | tuple[int, dict[str, Any]] | Callable[[], Exception],
    error: type[Exception],
    message: str,
) -> None:
    service.launch_answer = answer() if callable(answer) else answer
    with pytest.raises(error, match=re.escape(message)):
        node.launch()
    assert len(service.requests("POST")) == 1
    assert store.unfinished() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("legacy-poll-")]
    assert service.requests("GET") == []


def test_readiness_follows_the_last_requests(node: Node, service: FakeLegacyService) -> None:
    service.launch_answer = refused()
    for _ in range(3):
        assert node.runner.unready_reason() is None
        with pytest.raises(ExecutorUnavailable):
            node.launch()
    assert node.runner.unready_reason() == "the legacy task runner is unreachable: Connection refused"
    service.launch_answer = None
    node.launch()
    assert node.runner.unready_reason() is None


@pytest.mark.parametrize(
    ("trouble", "words"),
    [(hung_up, "connection closed"), (untrusted_certificate, "TLS certificate verification failed")],
)
def test_public_answers_name_no_address_of_the_service_and_the_logs_keep_it(
    make_node: Callable[..., Node], service: FakeLegacyService, trouble: Callable[[], Exception], words: str
) -> None:
    handler = Recorder()
    logger = logging.getLogger("webapp.executors.http_runner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        node = make_node()
        service.launch_answer = trouble()
        for _ in range(3):
            with pytest.raises(ExecutorUnavailable) as refusal:
                node.launch()
        public = [refusal.value.message, node.runner.unready_reason()]  # a 503 body's message, /readyz's reason
        service.launch_answer = None
        service.poll_troubles = [trouble()]
        launched = node.launch()
        troubled = wait_for(
            lambda: [s for s in node.seen if s.job_name == launched.job_name and s.reason == "RunnerUnreachable"],
            what="a failed poll",
        )
        public.append(troubled[0].message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert public == [
        f"the legacy task runner is unreachable: {words}",
        f"the legacy task runner is unreachable: {words}",
        f"the legacy task runner did not answer: {words}",
    ]
    for text in public:
        for address in ("legacy-runner.test", "8080", "8443", "http", "/tasks"):
            assert address not in str(text)
    logged = {r.getMessage(): str(r.error) for r in handler.records if hasattr(r, "error")}
    assert "legacy-runner.test" in logged["legacy.launch_failed"], logged
    assert "legacy-runner.test" in logged["legacy.poll_failed"], logged


def test_params_are_never_logged(make_node: Callable[..., Node], service: FakeLegacyService) -> None:
    handler = Recorder()
    records = handler.records
    logger = logging.getLogger("webapp.executors.http_runner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        node = make_node()
        service.poll_troubles = [500]
        launched = node.launch()
        wait_for(lambda: any(s.reason == "RunnerUnreachable" for s in node.seen), what="a failed poll")
        service.set_state("1", "failed", "boom")
        node.wait_status(launched.job_name, Phase.FAILED)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (failed_poll,) = [r for r in records if r.getMessage() == "legacy.poll_failed"]
    assert (failed_poll.job_name, failed_poll.mode) == (launched.job_name, "legacy")  # type: ignore[attr-defined]
    assert failed_poll.error == "the legacy task runner answered 500"  # type: ignore[attr-defined]
    for record in records:
        assert DONOR_EMAIL not in repr(vars(record))


# -- polling -------------------------------------------------------------------


def test_timeouts_and_errors_while_polling_become_plain_reasons_and_polling_goes_on(
    node: Node, service: FakeLegacyService
) -> None:
    timeouts_before = restarts("timeout")
    service.poll_troubles = [
        requests.ReadTimeout("read timed out"),
        500,
        refused(),
        503,
    ]
    launched = node.launch()
    service.set_state("1", "running")
    recovered = node.wait_status(launched.job_name, Phase.RUNNING)
    assert (recovered.reason, recovered.message) == (None, None)

    troubles = [(s.status, s.reason, s.message) for s in node.seen if s.reason == "RunnerUnreachable"]
    assert troubles == [
        (Phase.PENDING, "RunnerUnreachable", "the legacy task runner did not answer: timed out"),
        (Phase.PENDING, "RunnerUnreachable", "the legacy task runner answered 500"),
        (Phase.PENDING, "RunnerUnreachable", "the legacy task runner did not answer: Connection refused"),
        (Phase.PENDING, "RunnerUnreachable", "the legacy task runner answered 503"),
    ]
    assert restarts("timeout") == timeouts_before + 1
    service.set_state("1", "succeeded")
    node.wait_status(launched.job_name, Phase.SUCCEEDED)


def test_a_long_outage_fails_the_run(make_node: Callable[..., Node], service: FakeLegacyService) -> None:
    node = make_node(give_up_after=0.2)
    launched = node.launch()
    service.set_state("1", "running")
    node.wait_status(launched.job_name, Phase.RUNNING)
    service.down = 503
    failed = node.wait_status(launched.job_name, Phase.FAILED)
    assert failed.reason == "RunnerUnreachable"
    assert failed.message == "gave up after 0.2s without an answer (the legacy task runner answered 503)"


def test_a_task_the_service_forgot_is_lost(node: Node, service: FakeLegacyService) -> None:
    launched = node.launch()
    service.set_state("1", "running")
    node.wait_status(launched.job_name, Phase.RUNNING)
    del service.tasks["1"]
    lost = node.wait_status(launched.job_name, Phase.FAILED)
    assert (lost.reason, lost.message) == ("TaskLost", "the legacy task runner no longer knows task 1")


def test_an_unknown_state_is_a_plain_reason_not_a_crash(node: Node, service: FakeLegacyService) -> None:
    launched = node.launch()
    service.set_state("1", "paused")
    odd = node.wait_status(launched.job_name, Phase.PENDING, reason="RunnerError")
    assert odd.message == "the legacy task runner answered an unknown state: paused"
    service.set_state("1", "succeeded")
    node.wait_status(launched.job_name, Phase.SUCCEEDED)


def test_one_poller_per_task_however_many_read_the_hub(
    make_node: Callable[..., Node], service: FakeLegacyService
) -> None:
    node = make_node(poll_seconds=0.02, max_poll_seconds=0.02)
    launched = node.launch()
    name = launched.job_name
    service.set_state("1", "running")
    node.wait_status(name, Phase.RUNNING)

    stop_reading = threading.Event()

    def read_the_hub() -> None:
        while not stop_reading.is_set():
            node.hub.get(name)

    readers = [threading.Thread(target=read_the_hub) for _ in range(8)]
    with ExitStack() as subscriptions:
        for _ in range(200):
            subscriptions.enter_context(node.hub.subscribe(name))
        started, polled_before = time.monotonic(), len(service.requests("GET"))
        for reader in readers:
            reader.start()
        wait_for(lambda: len(service.requests("GET")) - polled_before >= 10, what="ten more polls")
        polls, elapsed = len(service.requests("GET")) - polled_before, time.monotonic() - started
        stop_reading.set()
        for reader in readers:
            reader.join()

    assert polls <= elapsed / 0.02 + 1  # one poller waits 0.02s between polls: two would poll twice as often
    assert len(service.poll_threads) == 1
    assert len(poller_threads(name)) == 1
    assert all(str(r.url) == f"{URL}/tasks/1" for r in service.requests("GET"))


def test_polls_back_off_while_nothing_changes(make_node: Callable[..., Node], service: FakeLegacyService) -> None:
    node = make_node(poll_seconds=0.01, max_poll_seconds=0.16)
    node.launch()  # the first poll changes the status (queued); every later one sees the same answer
    wait_for(lambda: len(service.poll_times) >= 8, what="eight polls")
    times = service.poll_times[:8]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    expected = [0.01, 0.02, 0.04, 0.08, 0.16, 0.16, 0.16]
    assert all(gap >= 0.9 * least for gap, least in zip(gaps, expected, strict=True)), gaps


# -- cancelling, logs ----------------------------------------------------------


@pytest.mark.parametrize("delete_status", [204, 404, 405])
def test_cancel_stops_polling_and_tells_the_service(node: Node, service: FakeLegacyService, delete_status: int) -> None:
    service.delete_status = delete_status
    launched = node.launch()
    service.set_state("1", "running")
    node.wait_status(launched.job_name, Phase.RUNNING)

    node.runner.cancel(launched.job_name)

    cancelled = node.hub.get(launched.job_name)
    assert cancelled is not None
    assert (cancelled.status, cancelled.reason, cancelled.message) == (
        Phase.CANCELLED,
        "Cancelled",
        "cancelled by an operator",
    )
    (deleted,) = service.requests("DELETE")
    assert deleted.url == f"{URL}/tasks/1"
    wait_for(lambda: not poller_threads(launched.job_name), what="the poller to stop")
    service.set_state("1", "succeeded")
    assert node.hub.get(launched.job_name) == cancelled


def test_cancel_when_the_service_is_down_still_cancels(node: Node, service: FakeLegacyService) -> None:
    launched = node.launch()
    service.down = refused()
    node.runner.cancel(launched.job_name)
    cancelled = node.hub.get(launched.job_name)
    assert cancelled is not None and cancelled.status == Phase.CANCELLED


def test_cancel_of_an_unknown_job_is_not_found(node: Node) -> None:
    with pytest.raises(JobNotFound):
        node.runner.cancel("task-runner-nope-00000000")


def test_logs_say_the_service_has_none(node: Node, service: FakeLegacyService) -> None:
    launched = node.launch()
    service.set_state("1", "running", "step 1 of 4: validate")
    node.wait_status(launched.job_name, Phase.RUNNING)
    expected = (
        "[jobpulse] the legacy task runner does not provide task output; last status: Running (step 1 of 4: validate)\n"
    )
    assert node.runner.logs(launched.job_name, tail_lines=100) == expected
    assert list(node.runner.follow_logs(launched.job_name, tail_lines=100)) == [expected]


# -- restarts ------------------------------------------------------------------


def test_a_restarted_process_resumes_polling_and_reaches_succeeded(
    make_node: Callable[..., Node], service: FakeLegacyService, store: SQLiteRunStore
) -> None:
    first = make_node()
    launched = first.launch()
    service.set_state("1", "running")
    before_stop = first.wait_status(launched.job_name, Phase.RUNNING)
    first.runner.stop()
    assert not poller_threads(launched.job_name)
    stored = store.get(launched.job_name)
    assert stored is not None and stored.status == Phase.RUNNING

    second = make_node()
    resumed = second.wait_status(launched.job_name, Phase.RUNNING)
    assert resumed.seq > before_stop.seq
    service.set_state("1", "succeeded", "receipt sent")
    done = second.wait_status(launched.job_name, Phase.SUCCEEDED)
    assert [t.status for t in done.history] == [Phase.QUEUED, Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED]
    assert any(s.reason == "Resumed" for s in second.seen)
    assert len(service.requests("POST")) == 1  # resumed, never submitted again


def test_a_run_another_live_process_follows_is_left_to_it(
    make_node: Callable[..., Node], service: FakeLegacyService
) -> None:
    first = make_node()
    launched = first.launch()
    service.set_state("1", "running")
    first.wait_status(launched.job_name, Phase.RUNNING)
    second = make_node()
    assert second.hub.get(launched.job_name) is None
    assert len(poller_threads(launched.job_name)) == 1


def test_a_run_whose_launch_never_finished_is_failed_as_lost(
    make_node: Callable[..., Node], store: SQLiteRunStore
) -> None:
    spec = load_jobspecs(JOBSPECS)["donation-receipt"]
    old = JobStatus.new(
        job_name=new_job_name("old"),
        mode="legacy",
        spec=spec.name,
        pipeline_run_id="old",
        at=utcnow() - timedelta(hours=1),
    )
    fresh = JobStatus.new(job_name=new_job_name("fresh"), mode="legacy", spec=spec.name, pipeline_run_id="fresh")
    for status in (old, fresh):
        manifest = render_job(spec, job_name=status.job_name, pipeline_run_id=status.pipeline_run_id, params=PARAMS)
        store.save(status, manifest=manifest)

    node = make_node()

    lost = node.wait_status(old.job_name, Phase.FAILED)
    assert lost.reason == "TaskLost"
    assert node.hub.get(fresh.job_name) is None  # maybe a launch still in progress elsewhere: left alone
