"""What every benchmark shares: the control plane, the two servers, the load generators, the figures.

A benchmark run is a :class:`Bench`: a namespace on the test control plane
(started for the run, or an existing one from ``make cluster-up``) with the
app's ServiceAccount and Role from ``deploy/``; jobpulse and the baseline
under the real gunicorn gevent worker (one worker each), both as that
ServiceAccount; load generators as separate processes on loopback.

Status changes are made the way Kubernetes makes them: by writing the Job's
``status`` in the API server. The benchmark jobspec sets ``spec.managedBy``
so the Job controller leaves these Jobs to us; each change sets
``status.active`` to a fresh marker value, and the load generators note when
a message carrying that marker reaches them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.controlplane import ControlPlane, die_with_parent
from tests.k8s.identity import APP_SERVICE_ACCOUNT, apply_app_identity
from tests.live.server import PROJECT_ROOT, LiveServer
from tests.redis.conftest import RedisServer

BENCH_JOBSPECS = Path(__file__).resolve().parent / "jobspecs"
BENCH_SPEC = "benchmark"
APP_FLOW_SCHEMA = "service-accounts"
"""The API Priority and Fairness flow schema of ServiceAccounts outside kube-system: the apps' own requests."""
BENCH_ADMIN_TOKEN = "benchmark-admin-token-0123456789"


# -- figures ---------------------------------------------------------------------


def percentiles(values: Sequence[float], *points: int) -> dict[str, float]:
    """``p50``, ``p99``, ... by linear interpolation (the ``inclusive`` method); NaN for no values."""
    if not values:
        return {f"p{p}": float("nan") for p in points}
    if len(values) == 1:
        return {f"p{p}": values[0] for p in points}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": cuts[p - 1] for p in points}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in (
        "gunicorn",
        "gevent",
        "flask",
        "flask-sock",
        "simple-websocket",
        "kubernetes",
        "fastapi",
        "uvicorn",
    ):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_report(title: str, command: str, results: dict[str, Any], table: list[dict[str, Any]]) -> None:
    """The figures as a Markdown table, with the command and the machine."""
    print(f"\n## {title}\n")
    print(f"command: `{command}`")
    info = results["machine"]
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Python {info['python']}")
    if table:
        print()
        print_table(table)
    print(flush=True)


def print_table(table: list[dict[str, Any]]) -> None:
    """Rows as a Markdown table, the first row's keys as its columns."""
    columns = list(table[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in table:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


# -- the servers -----------------------------------------------------------------


class BaselineServer(LiveServer):
    """The naive app of :mod:`benchmarks.baseline` under the same gunicorn settings."""

    name = "baseline"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "benchmarks.baseline:app", "-c", "gunicorn.conf.py"]


class SeedServer(BaselineServer):
    """The seed plan's example of :mod:`benchmarks.seed_baseline`: uvicorn, one process, no gunicorn."""

    name = "seed"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.seed_baseline:app",
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--ws=wsproto",
            "--timeout-graceful-shutdown=2",
            "--no-access-log",
            "--log-level=warning",
        ]


class CheckoutServer(LiveServer):
    """jobpulse from another checkout of the repository (``gunicorn --chdir``), for before/after in one run."""

    name = "jobpulse (checkout)"

    def __init__(self, checkout: Path, *, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env=env, log_path=log_path)
        self.checkout = checkout.resolve()

    def command(self) -> list[str]:
        config = str(self.checkout / "gunicorn.conf.py")
        return [sys.executable, "-m", "gunicorn", "--chdir", str(self.checkout), "wsgi:app", "-c", config]


# -- load generators -------------------------------------------------------------


class Streams:
    """Open status streams held by load-generator processes (``benchmarks.loadgen streams``)."""

    def __init__(self, processes: list[subprocess.Popen[str]], count: int, log: IO[str]) -> None:
        self._processes = processes
        self._log = log
        self.count = count
        self.opened_seconds = 0.0

    def report(self) -> dict[str, Any]:
        """Stop holding the streams; every arrival, by ``active`` marker and by progress ``done``, from each process."""
        reports = []
        for process in self._processes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("report\n")
            process.stdin.flush()
        for process in self._processes:
            assert process.stdout is not None
            reports.append(json.loads(process.stdout.readline()))
            process.wait(timeout=60)
        self._close()
        arrivals: dict[int, list[float]] = {}
        progress: dict[int, list[float]] = {}
        for one in reports:
            for marker, times in one["arrivals"].items():
                arrivals.setdefault(int(marker), []).extend(times)
            for done, times in one["progress"].items():
                progress.setdefault(int(done), []).extend(times)
        return {
            "closed": sum(r["closed"] for r in reports),
            "errors": [e for r in reports for e in r["errors"]],
            "arrivals": arrivals,
            "progress": progress,
        }

    def kill(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._close()

    def _close(self) -> None:
        for process in self._processes:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        self._log.close()


@dataclasses.dataclass
class Changes:
    """When each change was written (by marker), and when it reached each stream."""

    sent: dict[int, float]
    streams: int
    report: dict[str, Any]
    worker_cpu_seconds: float = 0.0
    """CPU the server's worker used while the changes were made and delivered (idle heartbeats included)."""
    api_seen: dict[int, float] = dataclasses.field(default_factory=dict)
    """When the benchmark's own watch of the Job saw each change: the API server's share of the latency."""

    def api_latencies(self) -> list[float]:
        return [self.api_seen[m] - sent for m, sent in self.sent.items() if m in self.api_seen]

    def latencies(self, marker: int | None = None) -> list[float]:
        """Seconds from each write to each arrival (of one change, or of all)."""
        arrivals = self.report["arrivals"]
        markers = [marker] if marker is not None else list(self.sent)
        return [at - self.sent[m] for m in markers for at in arrivals.get(m, ())]

    @property
    def expected(self) -> int:
        return self.streams * len(self.sent)

    @property
    def delivered(self) -> int:
        return sum(len(self.report["arrivals"].get(m, ())) for m in self.sent)


class ApiWatch:
    """The benchmark's own watch of one Job (as admin): when each marker became visible to watchers.

    That is the floor no server can beat: the status write, etcd, and the API
    server's watch fan-out, before jobpulse (or anyone) hears of the change.
    The watch reads with a 1 s timeout and reopens from the last version seen,
    so it can stop within a second without closing a socket another thread reads.
    """

    def __init__(self, plane: Any, namespace: str, job_name: str) -> None:
        from kubernetes import client

        self._api = plane.api_client()
        self._batch = client.BatchV1Api(self._api)
        self._namespace = namespace
        self._job_name = job_name
        self._stopping = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="api-watch", daemon=True)
        self.seen: dict[int, float] = {}

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        if not self._open.wait(30):
            raise RuntimeError("could not open a watch on the benchmark Job")
        return self

    def _follow(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        version = None
        while not self._stopping.is_set():
            try:
                response = self._batch.list_namespaced_job(
                    self._namespace,
                    field_selector=f"metadata.name={self._job_name}",
                    watch=True,
                    resource_version=version,
                    _preload_content=False,
                    _request_timeout=(5, 1.0),
                )
            except Exception:
                self._stopping.wait(0.2)
                continue
            self._open.set()
            try:
                for line in iter_resp_lines(response):
                    at = time.monotonic()
                    job = json.loads(line).get("object") or {}
                    version = (job.get("metadata") or {}).get("resourceVersion", version)
                    marker = (job.get("status") or {}).get("active")
                    if marker:
                        self.seen.setdefault(int(marker), at)
            except Exception:  # a second without events: reopen from where it got to
                pass
            finally:
                response.close()
                response.release_conn()

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._api.close()


def cpu_seconds(process: psutil.Process | None) -> float:
    """The CPU time ``process`` has used so far, user and system."""
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def machine_busy_seconds() -> float:
    """The CPU time every core of the machine has spent busy so far (all processes, the kernel's own work too)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "steal", 0.0))


def plane_cpu_seconds(plane: ControlPlane) -> float:
    """The CPU time the control plane's processes (API server, etcd, controllers, ...) have used so far."""
    total = 0.0
    for proc in plane.procs.values():
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(psutil.Process(proc["pid"]))
    return total


# -- a run -----------------------------------------------------------------------


def histogram_totals(server: LiveServer, name: str) -> tuple[float, float]:
    """A histogram of the server's ``/metrics``, all labels together: (sum, count); (0, 0) if it has none."""
    total = count = 0.0
    response = requests.get(f"{server.url}/metrics", timeout=30)
    if response.status_code != 200:
        return total, count
    for family in text_string_to_metric_families(response.text):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return total, count


@dataclasses.dataclass
class Bench:
    """One benchmark run: a namespace on a control plane, and what runs against it."""

    plane: Any
    namespace: str
    workdir: Path
    app_kubeconfig: str
    servers: list[LiveServer] = dataclasses.field(default_factory=list)
    loads: list[Streams] = dataclasses.field(default_factory=list)
    _admin: Any = None
    _marker: int = 1000

    @classmethod
    @contextlib.contextmanager
    def open(cls, plane: Any, workdir: Path) -> Iterator[Bench]:
        namespace = f"bench-{secrets.token_hex(3)}"
        plane.create_namespace(namespace)
        apply_app_identity(plane, namespace)
        kubeconfig = plane.service_account_kubeconfig(namespace, APP_SERVICE_ACCOUNT)
        specs = workdir / "jobspecs"
        specs.mkdir(parents=True, exist_ok=True)
        for source in [*(PROJECT_ROOT / "jobspecs").glob("*.yaml"), *BENCH_JOBSPECS.glob("*.yaml")]:
            shutil.copy(source, specs / source.name)
        bench = cls(plane=plane, namespace=namespace, workdir=workdir, app_kubeconfig=kubeconfig)
        try:
            yield bench
        finally:
            for load in bench.loads:
                load.kill()
            for server in bench.servers:
                server.stop()
            plane.delete_namespace(namespace)

    # -- servers ---------------------------------------------------------------

    def _env(self, **overrides: str) -> dict[str, str]:
        return {
            "KUBECONFIG": self.app_kubeconfig,
            "K8S_NAMESPACE": self.namespace,
            "JOBSPECS_DIR": str(self.workdir / "jobspecs"),
            "DONATION_JOBSPEC": BENCH_SPEC,
            "WEB_CONCURRENCY": "1",
            "WORKER_CONNECTIONS": "20000",
            "GRACEFUL_TIMEOUT": "2",
            **overrides,
        }

    def jobpulse(self, *, checkout: Path | None = None, **overrides: str) -> LiveServer:
        """jobpulse as shipped (k8s mode, SQLite run store), limits opened up for load.

        ``checkout``: serve the code of another checkout (e.g. before a change), with the same settings.
        """
        env = self._env(
            EXECUTION_MODE="k8s",
            DATABASE_PATH=str(self.workdir / f"jobpulse-{len(self.servers)}.sqlite3"),
            ADMIN_TOKEN=BENCH_ADMIN_TOKEN,
            RATE_LIMIT="1000000/minute",
            MAX_ACTIVE_JOBS="0",
            MAX_STREAMS_PER_CLIENT="0",  # every benchmark stream comes from one address
            **overrides,
        )
        log_path = self.workdir / f"jobpulse-{len(self.servers)}.log"
        if checkout is not None:
            return self._start(CheckoutServer(checkout, env=env, log_path=log_path))
        return self._start(LiveServer(env=env, log_path=log_path))

    def baseline(self, **overrides: str) -> LiveServer:
        env = self._env(**overrides)
        return self._start(BaselineServer(env=env, log_path=self.workdir / f"baseline-{len(self.servers)}.log"))

    def seed(self, **overrides: str) -> LiveServer:
        env = self._env(**overrides)
        return self._start(SeedServer(env=env, log_path=self.workdir / f"seed-{len(self.servers)}.log"))

    def serve(self, app: str) -> LiveServer:
        """A fresh server of ``app``: "jobpulse", "baseline" (polling) or "seed" (the seed plan's example)."""
        if app == "seed":
            return self.seed()
        return self.jobpulse() if app == "jobpulse" else self.baseline()

    def running_job(self) -> str:
        """One benchmark Job, launched through jobpulse and marked running; its name."""
        with self.running(self.jobpulse()) as server:
            [job] = self.donate(server, 1)
        self.set_marker(job, 1)
        return job

    def _start(self, server: LiveServer) -> LiveServer:
        self.servers.append(server)
        server.start()
        return server

    @staticmethod
    def worker(server: LiveServer) -> psutil.Process:
        """The gunicorn worker serving ``server`` (one worker per server here); uvicorn's one process for the seed."""
        assert server.process is not None
        if isinstance(server, SeedServer):
            return psutil.Process(server.process.pid)
        children = psutil.Process(server.process.pid).children()
        if len(children) != 1:
            raise RuntimeError(f"{server.name}: expected one worker, found {len(children)}")
        return children[0]

    def stop(self, server: LiveServer) -> None:
        server.stop()
        self.servers.remove(server)

    @contextlib.contextmanager
    def running(self, server: LiveServer, *, keep: bool = False) -> Iterator[LiveServer]:
        """Use ``server`` for the block; stop it afterwards unless ``keep``."""
        try:
            yield server
        finally:
            if not keep:
                self.stop(server)

    @contextlib.contextmanager
    def redis(self) -> Iterator[RedisServer]:
        """A real ``redis-server`` of the bench's own for the block (the instances' run store and status channel)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server; see tests/system-deps.sh)")
        workdir = self.workdir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        redis = RedisServer(binary=binary, workdir=workdir)
        redis.start()
        try:
            yield redis
        finally:
            redis.stop()

    @contextlib.contextmanager
    def profiling(self, server: LiveServer, folder: Path | None, name: str) -> Iterator[ProfileResult]:
        """Sample jobpulse's worker with py-spy for the block when ``folder`` is given (never the baseline's)."""
        result = ProfileResult()
        if folder is None or isinstance(server, BaselineServer):
            yield result
            return
        folder.mkdir(parents=True, exist_ok=True)
        sampler = Profile(self.worker(server).pid, folder / f"{name}.txt")
        try:
            yield result
        finally:
            result.summary = sampler.stop()

    @contextlib.contextmanager
    def plane_profiling(self, folder: Path | None, name: str, seconds: int) -> Iterator[ProfileResult]:
        """When ``folder`` is given, a CPU profile of the API server over the first ``seconds`` of the block.

        Saved as ``{name}-apiserver.pb.gz`` (``go tool pprof`` reads it); the summary is its top functions
        by cumulative time when ``go`` is installed. The block should last at least ``seconds``: a profile
        that outlasts it counts the quiet after it too.
        """
        result = ProfileResult()
        if folder is None:
            yield result
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-apiserver.pb.gz"
        taken: list[bytes] = []
        sampler = threading.Thread(target=lambda: taken.append(self.plane.profile_apiserver(seconds)), daemon=True)
        sampler.start()
        try:
            yield result
        finally:
            sampler.join(timeout=seconds + 60)
            if taken:
                path.write_bytes(taken[0])
                result.summary = summarize_pprof(path)

    # -- Jobs and their changes --------------------------------------------------

    def donate(self, server: LiveServer, count: int = 1) -> list[str]:
        """Launch ``count`` benchmark Jobs through jobpulse's own donation endpoint."""
        names = []
        for _ in range(count):
            response = requests.post(
                f"{server.url}/api/donations",
                json={"amount": "5.00", "currency": "USD", "donor_name": "Bench", "donor_email": "b@example.org"},
                timeout=30,
            )
            response.raise_for_status()
            names.append(response.json()["job_name"])
        return names

    def next_marker(self) -> int:
        """A marker no change of this run has carried yet."""
        self._marker += 1
        return self._marker

    def set_marker(self, job_name: str, marker: int) -> float:
        """Write ``status.active = marker`` (and one ready pod) into the Job; return when the write was sent."""
        body = {"status": {"startTime": "2026-01-01T00:00:00Z", "active": marker, "ready": 1}}
        if self._admin is None:
            from kubernetes import client

            self._admin = client.BatchV1Api(self.plane.api_client())  # one kept-alive connection for every change
        sent = time.monotonic()
        self._admin.patch_namespaced_job_status(job_name, self.namespace, body, _preload_content=False)
        return sent

    def jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.plane.request("GET", f"/apis/batch/v1/namespaces/{self.namespace}/jobs")[
            "items"
        ]
        return items

    # -- what the API server saw -------------------------------------------------

    def app_requests(self) -> float:
        """Requests the API server has dispatched for ServiceAccounts outside kube-system: the apps' own."""
        total = 0.0
        for family in text_string_to_metric_families(self.plane.apiserver_metrics()):
            if family.name != "apiserver_flowcontrol_dispatched_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("flow_schema") == APP_FLOW_SCHEMA:
                    total += sample.value
        return total

    @staticmethod
    def propagation(server: LiveServer) -> tuple[float, float]:
        """jobpulse's own ``jobpulse_status_propagation_seconds``: (sum, count), status seen → written."""
        return histogram_totals(server, "jobpulse_status_propagation_seconds")

    # -- load --------------------------------------------------------------------

    def streams(
        self,
        server: LiveServer,
        *,
        transport: str,
        jobs: Sequence[str],
        count: int,
        processes: int = 1,
        timeout: float = 300.0,
    ) -> Streams:
        """Open ``count`` streams of ``transport`` ("sse", "ws" or "mixed": half each) and wait until all are in."""
        plan: list[tuple[str, int]] = []
        transports = ("sse", "ws") if transport == "mixed" else (transport,)
        share = [count // len(transports) + (i < count % len(transports)) for i in range(len(transports))]
        for kind, kind_count in zip(transports, share, strict=True):
            per = [kind_count // processes + (i < kind_count % processes) for i in range(processes)]
            plan.extend((kind, n) for n in per if n)
        started = time.monotonic()
        spawned = []
        log = (self.workdir / "loadgen.log").open("a")
        for kind, n in plan:
            command = [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "streams",
                f"--base={server.url}",
                f"--transport={kind}",
                f"--jobs={','.join(jobs)}",
                f"--count={n}",
                f"--open-timeout={timeout}",
            ]
            spawned.append(
                subprocess.Popen(
                    command,
                    cwd=PROJECT_ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509  (only a prctl call, no locks)
                )
            )
        load = Streams(spawned, count, log)
        self.loads.append(load)
        for process in spawned:
            assert process.stdout is not None
            line = process.stdout.readline()
            status = json.loads(line) if line else {"error": f"load generator exited with {process.wait()}"}
            if "opened" not in status:
                load.kill()
                raise RuntimeError(f"{server.name}: could not open {count} {transport} streams: {status}")
        load.opened_seconds = time.monotonic() - started
        return load

    def release(self, load: Streams) -> dict[str, Any]:
        report = load.report()
        self.loads.remove(load)
        return report

    def changes(
        self, load: Streams, job_name: str, *, count: int, interval: float, worker: psutil.Process | None = None
    ) -> Changes:
        """Make ``count`` status changes to ``job_name``, ``interval`` to 1.2 ``interval`` s apart; collect arrivals.

        The jitter keeps the changes out of step with the baseline's 2 s polls.
        After the last change the streams get one more ``interval`` to deliver.
        """
        sent = {}
        cpu_before = cpu_seconds(worker)
        with ApiWatch(self.plane, self.namespace, job_name) as api_watch:
            for _ in range(count):
                self._marker += 1
                sent[self._marker] = self.set_marker(job_name, self._marker)
                time.sleep(interval * random.uniform(1.0, 1.2))  # paced on purpose: one change at a time
        cpu = cpu_seconds(worker) - cpu_before
        return Changes(
            sent=sent,
            streams=load.count,
            report=self.release(load),
            worker_cpu_seconds=cpu,
            api_seen=api_watch.seen,
        )

    def donations(self, server: LiveServer, *, count: int, concurrency: int) -> dict[str, Any]:
        """Post ``count`` donations from a separate process, ``concurrency`` at a time."""
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "donations",
            f"--base={server.url}",
            f"--count={count}",
            f"--concurrency={concurrency}",
        ]
        done = subprocess.run(
            command,
            check=False,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=die_with_parent,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the donation load generator failed:\n{done.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return report


# -- profiling -------------------------------------------------------------------


@dataclasses.dataclass
class ProfileResult:
    summary: str | None = None


class Profile:
    """py-spy sampling a server's worker while a benchmark measures, written as collapsed stacks."""

    def __init__(self, pid: int, path: Path) -> None:
        self.path = path
        self._process = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509  (only a prctl call, no locks)
        )

    def stop(self) -> str:
        """Stop sampling; where the time went, as text."""
        self._process.send_signal(2)  # SIGINT: py-spy writes its file and exits
        self._process.wait(timeout=60)
        return summarize_profile(self.path)


def summarize_pprof(path: Path, top: int = 25) -> str | None:
    """A Go CPU profile's functions with the most time on the stack (cumulative), as ``go tool pprof`` lists them."""
    if shutil.which("go") is None:
        return None
    listed = subprocess.run(
        ["go", "tool", "pprof", "-top", "-cum", f"-nodecount={top}", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return listed.stdout if listed.returncode == 0 else None


def summarize_profile(path: Path, top: int = 12) -> str:
    """The functions with the most samples: on the stack (inclusive) and on top of it (self)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    idle = ("wait (gevent", "switch (gevent", "_wait (gevent", "run (gevent/hub.py", "poll (selectors")
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return "(no samples)"
    busy = total - sum(c for f, c in own.items() if f.startswith(idle))
    lines = [f"{total} samples, {busy} not idle in the gevent hub", "self:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines.append("inclusive:")
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[: top * 2]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# -- the command line ------------------------------------------------------------


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--cluster-dir",
        help="use the control plane of `make cluster-up` (e.g. .cluster) instead of starting one for this run",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--profile", type=Path, help="profile the jobpulse worker with py-spy; stacks go here")
    parser.add_argument("--workdir", type=Path, help="keep logs and state here (default: a temporary folder)")
    return parser


@contextlib.contextmanager
def session(args: argparse.Namespace) -> Iterator[Bench]:
    """The control plane (started for the run unless ``--cluster-dir``), a workdir, and a :class:`Bench`."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="jobpulse-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.cluster_dir:
        plane = ControlPlane.attach(str(args.cluster_dir))
        with Bench.open(plane, workdir) as bench:
            yield bench
        return
    plane = ControlPlane(workdir=str(workdir / "cluster"))
    plane.start()
    try:
        with Bench.open(plane, workdir) as bench:
            yield bench
    finally:
        plane.stop()


def run_and_report(
    args: argparse.Namespace,
    title: str,
    run: Callable[[Bench], dict[str, Any]],
    table: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> dict[str, Any]:
    """A benchmark's command: ``run`` in a :func:`session`, its results beside the machine's, printed and saved."""
    results: dict[str, Any] = {"machine": machine()}
    with session(args) as bench:
        results.update(run(bench))
    finish(args, title, results, table(results))
    return results


def finish(args: argparse.Namespace, title: str, results: dict[str, Any], table: list[dict[str, Any]]) -> None:
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # None when not run with -m (e.g. a test calls main)
    command = "python -m " + " ".join([spec.name if spec is not None else sys.argv[0], *sys.argv[1:]])
    results["command"] = command
    print_report(title, command, results, table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
