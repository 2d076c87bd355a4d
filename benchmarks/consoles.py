"""The operator console: 20 consoles open while 50 runs a second are launched, and what each console sees.

    python -m benchmarks.consoles [--consoles 20] [--rate 50] [--duration 20]

One jobpulse (Kubernetes mode, one gevent worker) and two windows on it, each
launching ``--rate`` runs a second for ``--duration`` s through
``POST /api/jobs`` (admin) from a load-generator process
(``benchmarks.loadgen launches``, open loop):

- **0 consoles**: nobody watches;
- **N consoles**: ``--consoles`` operator consoles held open by two other
  load-generator processes, half ``/sse/runs`` and half ``/ws/runs``, each
  with the ``Authorization: Bearer`` header (``benchmarks.loadgen consoles``).

The runs use ``benchmarks/jobspecs/console.yaml``, whose ``spec.managedBy``
leaves its Jobs to the benchmark, which plays the Job controller
(:class:`JobPlayer`): it watches the namespace's Jobs and writes each new one
``Running``, then ``--run-for`` s later ``Complete``. (The test control
plane's Job controller talks to the API server at its default 20 requests a
second, too few to run 50 Jobs a second; and KWOK pods would add nothing
jobpulse sees.)

A window lasts from the first launch until every launched run is finished in
jobpulse's run store and the API requests of jobpulse's ServiceAccount have
stopped (its own reads after a Job finishes). Figures, per window: the
worker's CPU seconds per second, the API requests jobpulse made (per launch,
and the consoles' extra: the N-console window's minus the 0-console window's),
the launch rate reached and the launch latency; per console: messages a
second while the runs were launched, the delay from each status's
``updated_at`` to its arrival, and whether it holds the last status (the
``seq`` jobpulse has at the end) of every launched run: a console keeps the
latest status per run, so runs are counted, not messages.
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import sys
import threading
import time
from typing import IO, Any

import requests

from benchmarks.common import (
    BENCH_ADMIN_TOKEN,
    Bench,
    arguments,
    cpu_seconds,
    ms,
    percentiles,
    print_table,
    run_and_report,
)
from tests.cluster.controlplane import die_with_parent
from tests.live.server import PROJECT_ROOT, LiveServer
from webapp.jobspecs import SPEC_LABEL

CONSOLE_SPEC = "console"
SETTLE_TIMEOUT = 120.0
"""Most seconds after the last launch for every run to finish and jobpulse's API requests to stop."""


class JobPlayer:
    """The Job controller, played for the benchmark's Jobs: each new Job Running, then Complete ``run_for`` s later.

    One thread watches the namespace's Jobs of the ``console`` spec (reopening from the last version
    every second of quiet, so it can stop); ``writers`` threads, each with its
    own API connection, write the statuses when they are due.
    """

    def __init__(self, bench: Bench, *, run_for: float, writers: int = 4) -> None:
        from kubernetes import client

        self._bench = bench
        self._run_for = run_for
        self._clients = [bench.plane.api_client() for _ in range(writers + 1)]
        self._batch = [client.BatchV1Api(c) for c in self._clients]
        self._stopping = threading.Event()
        self._due: list[tuple[float, str, str]] = []
        self._wake = threading.Condition()
        self._seen: set[str] = set()
        self.completed: dict[str, float] = {}
        """When each Job's ``Complete`` was written (monotonic)."""
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._watch, name="player-watch", daemon=True)] + [
            threading.Thread(target=self._write, args=(i + 1,), name=f"player-{i}", daemon=True) for i in range(writers)
        ]

    def __enter__(self) -> JobPlayer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        for api in self._clients:
            api.close()

    def _schedule(self, at: float, name: str, step: str) -> None:
        with self._wake:
            heapq.heappush(self._due, (at, name, step))
            self._wake.notify()

    def _watch(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        version = None
        while not self._stopping.is_set():
            try:
                response = self._batch[0].list_namespaced_job(
                    self._bench.namespace,
                    label_selector=f"{SPEC_LABEL}={CONSOLE_SPEC}",  # only this benchmark's Jobs
                    watch=True,
                    resource_version=version,
                    _preload_content=False,
                    _request_timeout=(5, 1.0),
                )
            except Exception as error:
                self.errors.append(f"watch: {error}"[:300])
                self._stopping.wait(0.2)
                continue
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    job = event.get("object") or {}
                    version = (job.get("metadata") or {}).get("resourceVersion", version)
                    name = (job.get("metadata") or {}).get("name")
                    if event.get("type") == "ADDED" and name and name not in self._seen:
                        self._seen.add(name)
                        self._schedule(time.monotonic(), name, "run")
            except Exception:  # a second without events: reopen from where it got to
                pass
            finally:
                response.close()
                response.release_conn()

    def _write(self, index: int) -> None:
        batch = self._batch[index]
        while True:
            with self._wake:
                while not self._stopping.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self._stopping.is_set():
                    return
                _, name, step = heapq.heappop(self._due)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if step == "run":
                body: dict[str, Any] = {"status": {"startTime": now, "active": 1, "ready": 1}}
            else:
                body = {
                    "status": {
                        "active": 0,
                        "ready": 0,
                        "terminating": 0,
                        "succeeded": 1,
                        "completionTime": now,
                        "conditions": [
                            {"type": t, "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}
                            for t in ("SuccessCriteriaMet", "Complete")
                        ],
                    }
                }
            try:
                batch.patch_namespaced_job_status(name, self._bench.namespace, body, _preload_content=False)
            except Exception as error:
                if len(self.errors) < 20:
                    self.errors.append(f"{step} {name}: {error}"[:300])
                continue
            if step == "run":
                self._schedule(time.monotonic() + self._run_for, name, "complete")
            else:
                self.completed[name] = time.monotonic()


class Consoles:
    """Console load generators (``benchmarks.loadgen consoles``): one process per transport."""

    def __init__(self, server: LiveServer, count: int, log: IO[str]) -> None:
        self._log = log
        self._processes: list[subprocess.Popen[str]] = []
        plan = [("sse", count - count // 2), ("ws", count // 2)]
        for transport, n in plan:
            if not n:
                continue
            command = [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "consoles",
                f"--base={server.url}",
                f"--transport={transport}",
                f"--count={n}",
                f"--token={BENCH_ADMIN_TOKEN}",
            ]
            self._processes.append(
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
        for process in self._processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            answer = json.loads(line) if line else {"error": f"load generator exited with {process.wait()}"}
            if "opened" not in answer:
                self.kill()
                raise RuntimeError(f"could not open {count} consoles: {answer}")

    def report(self, names: list[str], timeout: float) -> list[dict[str, Any]]:
        """Once every console holds a finished status of each of ``names`` (or ``timeout``): what each saw."""
        order = json.dumps({"wait_for": names, "timeout": timeout}) + "\n"
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.write(order)
            process.stdin.flush()
        consoles = []
        for process in self._processes:
            assert process.stdout is not None
            consoles.extend(json.loads(process.stdout.readline())["consoles"])
            process.wait(timeout=60)
        self.kill()
        return consoles

    def kill(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def launch(server: LiveServer, *, rate: float, duration: float, concurrency: int) -> dict[str, Any]:
    """``rate`` launches a second for ``duration`` s from a load-generator process."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "launches",
        f"--base={server.url}",
        f"--token={BENCH_ADMIN_TOKEN}",
        f"--spec={CONSOLE_SPEC}",
        f"--rate={rate}",
        f"--duration={duration}",
        f"--concurrency={concurrency}",
    ]
    done = subprocess.run(
        command,
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=duration + 120,
        preexec_fn=die_with_parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the launch load generator failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def unfinished(server: LiveServer) -> int:
    """How many console runs jobpulse's run store holds unfinished (at most 500 counted)."""
    response = requests.get(
        f"{server.url}/api/runs",
        params={"status": "Queued,Pending,Running", "spec": CONSOLE_SPEC, "limit": "500"},
        headers={"Authorization": f"Bearer {BENCH_ADMIN_TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    return len(response.json()["runs"])


def settle(bench: Bench, server: LiveServer, player: JobPlayer, names: list[str], deadline: float) -> None:
    """Until the player has completed every run, jobpulse holds none unfinished, and its API requests stopped."""
    while time.monotonic() < deadline and not all(n in player.completed for n in names):
        time.sleep(0.1)  # the benchmark's own pace of looking, not a measurement
    while time.monotonic() < deadline and unfinished(server):
        time.sleep(0.2)
    before = bench.app_requests()
    while time.monotonic() < deadline:
        time.sleep(1.0)  # a second with no request from jobpulse: it has done what the runs asked of it
        now = bench.app_requests()
        if now == before:
            return
        before = now


def final_statuses(server: LiveServer, names: list[str]) -> dict[str, tuple[int, str]]:
    """The last ``seq`` and status of each run, as jobpulse has it at the end."""
    out = {}
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {BENCH_ADMIN_TOKEN}"
        for name in names:
            status = http.get(f"{server.url}/api/jobs/{name}", timeout=30).json()
            out[name] = (status["seq"], status["status"])
    return out


def window(
    bench: Bench,
    server: LiveServer,
    player: JobPlayer,
    *,
    consoles: int,
    rate: float,
    duration: float,
    concurrency: int,
    profile: Any,
) -> dict[str, Any]:
    log = (bench.workdir / "loadgen.log").open("a")
    try:
        held = Consoles(server, consoles, log) if consoles else None
        worker = bench.worker(server)
        requests_before, cpu_before, started = bench.app_requests(), cpu_seconds(worker), time.monotonic()
        with bench.profiling(server, profile, f"consoles-{consoles}") as where:
            launched = launch(server, rate=rate, duration=duration, concurrency=concurrency)
            results = launched["results"]
            names = [r["job_name"] for r in results if r["code"] == 202]
            settle(bench, server, player, names, time.monotonic() + SETTLE_TIMEOUT)
        seconds = time.monotonic() - started
        cpu, app_requests = cpu_seconds(worker) - cpu_before, bench.app_requests() - requests_before
        seen = held.report(names, timeout=30) if held is not None else []
    finally:
        log.close()
    truth = final_statuses(server, names)
    first = min(r["at"] for r in results)
    last = max(r["at"] for r in results)
    launch_seconds = max(last - first, 1e-9)
    rows = []
    for console in seen:
        arrived = [a for a in console["arrivals"] if first <= a <= last]
        current = sum(1 for n in names if n in console["runs"] and console["runs"][n][0] == truth[n][0])
        rows.append(
            {
                "transport": console["transport"],
                "closed": console["closed"],
                "lists": console["lists"],
                "messages": console["lists"] + console["status_messages"],
                "per_second": len(arrived) / launch_seconds,
                "runs_current": current,
                "runs_missed": len(names) - current,
                **{f"delay_{k}": v for k, v in percentiles(console["delays"], 50, 99).items()},
                "delay_max": max(console["delays"], default=float("nan")),
            }
        )
    messages = sum(r["messages"] for r in rows)
    latencies = [r["seconds"] for r in results if r["code"] == 202]
    return {
        "consoles": consoles,
        "launched": len(results),
        "accepted": len(names),
        "refused": sorted({r["code"] for r in results} - {202}),
        "finished": sum(1 for n in names if truth[n][1] == "Succeeded"),
        "launches_per_second": (len(results) - 1) / launch_seconds if len(results) > 1 else float("nan"),
        "launch_late_max": max(r["late"] for r in results),
        **{f"launch_{k}": v for k, v in percentiles(latencies, 50, 99).items()},
        "seconds": seconds,
        "worker_cpu_seconds": cpu,
        "app_requests": app_requests,
        "messages": messages,
        "console_rows": rows,
        "profile": where.summary,
    }


def run(
    bench: Bench,
    *,
    consoles: int,
    rate: float,
    duration: float,
    run_for: float = 0.5,
    concurrency: int = 16,
    profile: Any = None,
) -> dict[str, Any]:
    with bench.running(bench.jobpulse()) as server, JobPlayer(bench, run_for=run_for) as player:
        warm = launch(server, rate=rate, duration=1.0, concurrency=concurrency)  # warm-up, not counted
        warm_names = [r["job_name"] for r in warm["results"] if r["code"] == 202]
        settle(bench, server, player, warm_names, time.monotonic() + SETTLE_TIMEOUT)
        windows = [
            window(
                bench,
                server,
                player,
                consoles=n,
                rate=rate,
                duration=duration,
                concurrency=concurrency,
                profile=profile,
            )
            for n in (0, consoles)
        ]
    quiet, watched = windows
    per_launch = [w["app_requests"] / max(w["accepted"], 1) for w in windows]
    extra = (per_launch[1] - per_launch[0]) * watched["accepted"]
    return {
        "measure": "consoles",
        "rate": rate,
        "duration": duration,
        "run_for": run_for,
        "player_errors": player.errors,
        "windows": windows,
        "app_requests_per_launch": per_launch,
        "extra_app_requests_per_console": extra / consoles if consoles else 0.0,
        "extra_cpu_seconds_per_message": (
            (watched["worker_cpu_seconds"] - quiet["worker_cpu_seconds"]) / watched["messages"]
            if watched["messages"]
            else float("nan")
        ),
    }


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for w in results["windows"]:
        rows = w["console_rows"]
        per_launch = w["app_requests"] / max(w["accepted"], 1)
        out.append(
            {
                "consoles": w["consoles"],
                "launched (accepted)": f"{w['launched']} ({w['accepted']})",
                "launches/s": round(w["launches_per_second"], 1),
                "launch p50 / p99 ms": f"{ms(w['launch_p50'])} / {ms(w['launch_p99'])}",
                "worker CPU s/s": round(w["worker_cpu_seconds"] / w["seconds"], 2),
                "API requests (per launch)": f"{w['app_requests']:g} ({per_launch:.2f})",
                "messages/s per console (min to max)": (
                    f"{min(r['per_second'] for r in rows):.0f} to {max(r['per_second'] for r in rows):.0f}"
                    if rows
                    else ""
                ),
                "runs missed (all consoles)": sum(r["runs_missed"] for r in rows) if rows else "",
                "delay p50 / p99 ms (worst console)": (
                    f"{ms(max(r['delay_p50'] for r in rows))} / {ms(max(r['delay_p99'] for r in rows))}" if rows else ""
                ),
            }
        )
    return out


def console_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "console": i + 1,
            "transport": r["transport"],
            "messages": r["messages"],
            "messages/s": round(r["per_second"], 1),
            "runs current / missed": f"{r['runs_current']} / {r['runs_missed']}",
            "delay p50 / p99 / max ms": f"{ms(r['delay_p50'])} / {ms(r['delay_p99'])} / {ms(r['delay_max'])}",
        }
        for i, r in enumerate(results["windows"][-1]["console_rows"])
    ]


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--consoles", type=int, default=20, help="consoles held open (half SSE, half WebSocket)")
    parser.add_argument("--rate", type=float, default=50.0, help="runs launched a second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of launching, per window")
    parser.add_argument("--run-for", type=float, default=0.5, help="seconds each Job stays Running")
    parser.add_argument("--concurrency", type=int, default=16, help="launches in flight at most")
    args: argparse.Namespace = parser.parse_args(argv)
    results = run_and_report(
        args,
        f"The operator console: {args.consoles} consoles at {args.rate:g} runs/s",
        lambda bench: run(
            bench,
            consoles=args.consoles,
            rate=args.rate,
            duration=args.duration,
            run_for=args.run_for,
            concurrency=args.concurrency,
            profile=args.profile,
        ),
        table,
    )
    print("Per console, in the window with consoles:\n")
    rows = console_table(results)
    if rows:
        print_table(rows)
    print(
        f"\nAPI requests per launch: {results['app_requests_per_launch']}; "
        f"extra per console: {results['extra_app_requests_per_console']:.3f}; "
        f"extra worker CPU per console message: {1e6 * results['extra_cpu_seconds_per_message']:.0f} µs"
    )


if __name__ == "__main__":
    main()
