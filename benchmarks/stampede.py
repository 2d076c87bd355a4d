"""Measure 5 of issue #15: no stampede on restart — two instances on one Redis, one of them stopped.

    python -m benchmarks.stampede [--streams 10000] [--jobs 20] [--finishing 10] [--scenarios before,after]

N streams (half SSE, half WebSocket) follow J running Jobs through two
jobpulse instances sharing one ``redis-server``: half the streams on A,
half on B. Once every stream has its first status, A is sent ``SIGTERM``
(its gunicorn master, as Kubernetes does) while F of the Jobs finish, one
after the other, over the restart. The streams on A come back on B as the
page does (:mod:`benchmarks.loadgen` ``followers``). Measured, over the
streams A held (the moved streams):

- the most of them that reached B in any 100 ms (the target: at most 10 %);
- clients that never saw their Job's final status (the target: none);
- the time from A's close to the first word on the new connection: a
  status, or for an SSE stream whose ``Last-Event-ID`` is current the
  stream's opening (the target: p99 at most 3 s);
- requests the instances made to the API server from the ``SIGTERM`` until
  every stream was back (counted as in :mod:`benchmarks.api_requests`).

Two scenarios, same code, settings apart: ``before``, the first release's
behaviour (``STREAM_CLOSE_SPREAD=0``: every stream closed in one instant;
clients back after a fixed 0.5 s on WebSocket, 2 s on SSE, its old
``retry: 2000``), and ``after``, this release (closes spread over half of a
10 s ``GRACEFUL_TIMEOUT``, clients back after a random pause, SSE after its
own ``retry:``).

Two more scenarios measure what might bring the slowest reconnects down,
on the same code: ``after-graceful-20`` (a 20 s ``GRACEFUL_TIMEOUT``, so
the closes are spread over 10 s) and ``after-gc-rare`` (an experiment: the
survivor's full garbage collections, which stop every greenlet, made rare
by ``gc.set_threshold(700, 10, 1000)``). Every scenario notes the
survivor's CPU, its full collections during the wave (a ``sitecustomize``
loaded into both instances, :data:`GC_SITE`) and, with ``--profile``, a
py-spy profile of it; each moved stream's time from close to first word is
cut into the client's pause, the TCP connect, the server's answer (the
``101`` or the SSE head) and the first status after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, arguments, ms, percentiles, run_and_report
from tests.cluster.controlplane import die_with_parent
from tests.live.server import PROJECT_ROOT, LiveServer
from tests.redis.conftest import RedisServer

SCENARIOS: dict[str, dict[str, str]] = {
    "before": {"spread": "0", "policy": "fixed"},
    "after": {"spread": "0.5", "policy": "jittered"},
    # the same release with a longer drain window: GRACEFUL_TIMEOUT=20 (deploy/ leaves 25 s of the pod's 30 after
    # its preStop), so the closes are spread over 10 s and the survivor takes half as many a second
    "after-graceful-20": {"spread": "0.5", "policy": "jittered", "graceful": "20"},
    # an experiment, not a setting of jobpulse's: Python's full collections made rare (gc threshold2 10 -> 1000)
    "after-gc-rare": {"spread": "0.5", "policy": "jittered", "gc_threshold2": "1000"},
}
BIN_SECONDS = 0.1

GC_SITE = """\
# Written by benchmarks.stampede: notes every full (generation 2) collection of this process, and sets
# the full-collection threshold when told. Inherited by gunicorn's workers at fork.
import gc, os, time

if os.environ.get("BENCH_GC_THRESHOLD2"):
    gc.set_threshold(*gc.get_threshold()[:2], int(os.environ["BENCH_GC_THRESHOLD2"]))
_started = [0.0]


def _note_full_collection(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        _started[0] = time.monotonic()
    else:
        with open(f"{os.environ['BENCH_GC_LOG']}.{os.getpid()}", "a") as log:
            log.write(f"{_started[0]} {time.monotonic() - _started[0]}\\n")


if os.environ.get("BENCH_GC_LOG"):
    gc.callbacks.append(_note_full_collection)
"""
"""A ``sitecustomize`` for both instances: what the survivor's full collections cost during the wave."""


class Followers:
    """The ``followers`` load generators: one process per server and transport."""

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self._log = (bench.workdir / "followers.log").open("a")
        self._processes: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, server: LiveServer, *, transport: str, jobs: list[str], count: int, **options: str) -> None:
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "followers",
            f"--base={server.url}",
            f"--transport={transport}",
            f"--jobs={','.join(jobs)}",
            f"--count={count}",
            *(f"--{name.replace('_', '-')}={value}" for name, value in options.items()),
        ]
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509  (only a prctl call, no locks)
        )
        self._processes.append((server.url, process))

    def wait_open(self) -> None:
        for _, process in self._processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if '"opened"' not in line:
                self.kill()
                raise RuntimeError(f"followers could not open: {line or process.wait()}")

    def report(self) -> dict[str, list[dict[str, Any]]]:
        """Per server the streams first opened on it, with what each saw."""
        for _, process in self._processes:
            assert process.stdin is not None
            process.stdin.write("report\n")
            process.stdin.flush()
        by_server: dict[str, list[dict[str, Any]]] = {}
        for url, process in self._processes:
            assert process.stdout is not None
            by_server.setdefault(url, []).extend(json.loads(process.stdout.readline())["followers"])
            process.wait(timeout=60)
        self.kill()
        return by_server

    def kill(self) -> None:
        for _, process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        self._log.close()


def finish_jobs(bench: Bench, names: list[str], *, over: float, done: dict[str, float]) -> None:
    """Make each Job ``Complete`` in the API server, one after the other over ``over`` seconds."""
    from kubernetes import client

    api = bench.plane.api_client()
    try:
        complete(client.BatchV1Api(api), bench.namespace, names, over=over, done=done)
    finally:
        api.close()


def complete(batch: Any, namespace: str, names: list[str], *, over: float, done: dict[str, float]) -> None:
    started = time.monotonic()
    for index, name in enumerate(names):
        time.sleep(max(0.0, started + over * index / max(1, len(names)) - time.monotonic()))  # the schedule
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
        batch.patch_namespaced_job_status(name, namespace, body, _preload_content=False)
        done[name] = time.monotonic()


def scenario(
    bench: Bench,
    redis: RedisServer,
    *,
    label: str,
    streams: int,
    jobs: int,
    finishing: int,
    graceful: int,
    settle: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    settings = SCENARIOS[label]
    graceful = int(settings.get("graceful", graceful))
    redis.flush()
    env = {"REDIS_URL": redis.url, "GRACEFUL_TIMEOUT": str(graceful), "STREAM_CLOSE_SPREAD": settings["spread"]}
    env |= gc_probe(bench, label, threshold2=settings.get("gc_threshold2"))
    a, b = bench.jobpulse(**env), bench.jobpulse(**env)
    names = bench.donate(a, jobs)
    for name in names:
        bench.set_marker(name, 1)
    followers = Followers(bench)
    per = {(server, kind): count for server in (a, b) for kind, count in (("sse", streams // 4), ("ws", streams // 4))}
    for (server, kind), count in per.items():
        options = {"policy": settings["policy"]}
        if server is a:
            options["reconnect_to"] = b.url
        followers.start(server, transport=kind, jobs=names, count=count, **options)
    followers.wait_open()

    requests_before = bench.app_requests()
    finished: dict[str, float] = {}
    spread_seconds = graceful * float(settings["spread"])
    finisher = threading.Thread(
        target=finish_jobs, args=(bench, names[:finishing]), kwargs={"over": spread_seconds + 3.0, "done": finished}
    )
    survivor = bench.worker(b)
    with bench.profiling(b, profile, f"stampede-{label}-survivor") as profiled:
        cpu_before = sum(survivor.cpu_times()[:2])
        stopped_at = time.monotonic()
        a.begin_stop()
        finisher.start()
        assert a.process is not None
        a.process.wait(timeout=graceful + 30)
        stop_seconds = time.monotonic() - stopped_at
        finisher.join(timeout=60)
        time.sleep(settle)  # the clients' own pauses and the last Job's final status: nothing to poll for here
        survivor_cpu = sum(survivor.cpu_times()[:2]) - cpu_before
    requests = bench.app_requests() - requests_before
    window = time.monotonic() - stopped_at
    gc_log = Path(f"{env['BENCH_GC_LOG']}.{survivor.pid}")
    pauses = full_collections(gc_log, since=stopped_at, until=stopped_at + window)
    by_server = followers.report()
    bench.stop(a)
    bench.stop(b)
    return summarize(
        label,
        moved=by_server[a.url],
        stayed=by_server[b.url],
        finished=set(finished),
        stopped_at=stopped_at,
        extra={
            "streams": streams,
            "jobs": jobs,
            "finishing": finishing,
            "graceful_timeout": graceful,
            "stream_close_spread": float(settings["spread"]),
            "policy": settings["policy"],
            "stop_seconds": round(stop_seconds, 2),
            "api_requests": requests,
            "api_requests_window_seconds": round(window, 1),
            "survivor_cpu_seconds": round(survivor_cpu, 2),
            "survivor_full_collections": len(pauses),
            "survivor_full_collections_ms": [ms(pause) for pause in pauses],
            "gc_threshold2": int(settings.get("gc_threshold2", 10)),
            "profile": profiled.summary,
        },
    )


def gc_probe(bench: Bench, label: str, *, threshold2: str | None) -> dict[str, str]:
    """The environment that loads :data:`GC_SITE` into both instances (and sets ``threshold2`` when given)."""
    site = bench.workdir / "gc-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(GC_SITE)
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(paths), "BENCH_GC_LOG": str(bench.workdir / f"gc-{label}")}
    return env | ({"BENCH_GC_THRESHOLD2": threshold2} if threshold2 else {})


def full_collections(log: Path, *, since: float, until: float) -> list[float]:
    """The durations of the full collections a worker noted (:data:`GC_SITE`) that began in the window."""
    if not log.exists():
        return []
    pauses = []
    for line in log.read_text().splitlines():
        began, seconds = (float(field) for field in line.split())
        if since <= began <= until:
            pauses.append(seconds)
    return pauses


def summarize(
    label: str,
    *,
    moved: list[dict[str, Any]],
    stayed: list[dict[str, Any]],
    finished: set[str],
    stopped_at: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    closed = [f for f in moved if f["closed_at"] is not None]
    landings = [f["connected"][0] for f in closed if f["connected"]]
    bins = Counter(int((at - stopped_at) / BIN_SECONDS) for at in landings)
    busiest_bin, busiest = bins.most_common(1)[0] if bins else (0, 0)
    back = [f["back_at"] - f["closed_at"] for f in closed if f["back_at"] is not None]
    timed = [f for f in closed if f["back_at"] is not None and f["head_at"] is not None and f["dialed"]]
    parts = {
        "pause": [f["dialed"][0] - f["closed_at"] for f in timed],
        "connect": [f["connected"][0] - f["dialed"][0] for f in timed],
        "answer": [f["head_at"] - f["connected"][0] for f in timed],
        "first_word": [f["back_at"] - f["head_at"] for f in timed],
    }
    closes = sorted(f["closed_at"] - stopped_at for f in closed)
    everyone = moved + stayed
    missed = [f for f in everyone if f["job"] in finished and not f["terminal"]]
    return {
        "scenario": label,
        **extra,
        "moved": len(moved),
        "closed_by_the_server": len(closed),
        "reconnected": len(landings),
        "never_back": sum(1 for f in closed if f["back_at"] is None and not f["terminal"]),
        "reconnect_attempts": sum(len(f["connected"]) for f in closed),
        "max_per_100ms": busiest,
        "max_share_per_100ms": round(busiest / len(closed), 4) if closed else 0.0,
        "busiest_100ms_starts_s": round(busiest_bin * BIN_SECONDS, 1),
        "landings_per_100ms": [bins.get(i, 0) for i in range(max(bins) + 1)] if bins else [],
        "closes_first_s": round(closes[0], 3) if closes else None,
        "closes_last_s": round(closes[-1], 3) if closes else None,
        "back_ms": {key: ms(value) for key, value in percentiles(back, 50, 90, 99).items()}
        | {"max": ms(max(back)) if back else None},
        "back_parts_ms": {
            part: {key: ms(value) for key, value in percentiles(values, 50, 90, 99).items()}
            | {"max": ms(max(values)) if values else None}
            for part, values in parts.items()
        },
        "slowest_percent_parts_ms": slowest_percent(timed),
        "clients_of_finished_jobs": sum(1 for f in everyone if f["job"] in finished),
        "missed_final_status": len(missed),
        "errors": sorted({e for f in everyone for e in f["errors"]})[:10],
    }


def slowest_percent(timed: list[dict[str, Any]]) -> dict[str, float | None]:
    """Where the slowest 1 % of the reconnects (close → first word) spent their time, on average."""
    slowest = sorted(timed, key=lambda f: f["back_at"] - f["closed_at"])[-max(1, len(timed) // 100) :] if timed else []

    def mean(values: list[float]) -> float | None:
        return ms(sum(values) / len(values)) if values else None

    return {
        "pause": mean([f["dialed"][0] - f["closed_at"] for f in slowest]),
        "connect": mean([f["connected"][0] - f["dialed"][0] for f in slowest]),
        "answer": mean([f["head_at"] - f["connected"][0] for f in slowest]),
        "first_word": mean([f["back_at"] - f["head_at"] for f in slowest]),
    }


def run(
    bench: Bench,
    *,
    streams: int,
    jobs: int,
    finishing: int,
    scenarios: list[str],
    graceful: int = 10,
    settle: float = 6.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    with bench.redis() as redis:
        rows = [
            scenario(
                bench,
                redis,
                label=label,
                streams=streams,
                jobs=jobs,
                finishing=finishing,
                graceful=graceful,
                settle=settle,
                profile=profile,
            )
            for label in scenarios
        ]
    return {"measure": "stampede", "rows": rows}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "scenario": row["scenario"],
            "streams (moved)": f"{row['streams']} ({row['moved']})",
            "closes spread over, s": f"{row['closes_first_s']} to {row['closes_last_s']}",
            "max reconnects in 100 ms": f"{row['max_per_100ms']} ({100 * row['max_share_per_100ms']:.1f} %)",
            "close → first word p50 / p99 / max ms": (
                f"{row['back_ms']['p50']} / {row['back_ms']['p99']} / {row['back_ms']['max']}"
            ),
            "never back": row["never_back"],
            "final statuses missed": f"{row['missed_final_status']} of {row['clients_of_finished_jobs']}",
            "API requests": f"{row['api_requests']:g} in {row['api_requests_window_seconds']} s",
            "A stopped in, s": row["stop_seconds"],
            "B's CPU, s": row.get("survivor_cpu_seconds", "—"),  # (not in results saved before it was measured)
            "B's full GCs (longest ms)": (
                f"{row['survivor_full_collections']} ({max(row['survivor_full_collections_ms'], default=0)})"
                if "survivor_full_collections" in row
                else "—"
            ),
        }
        for row in results["rows"]
    ]


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10000, help="open streams over both instances")
    parser.add_argument("--jobs", type=int, default=20, help="running Jobs the streams follow")
    parser.add_argument("--finishing", type=int, default=10, help="Jobs that finish during the restart")
    parser.add_argument("--scenarios", default="before,after", help="comma-separated: before, after, after-graceful-20")
    args: argparse.Namespace = parser.parse_args(argv)
    run_and_report(
        args,
        "No stampede on restart: two instances, one stopped",
        lambda bench: run(
            bench,
            streams=args.streams,
            jobs=args.jobs,
            finishing=args.finishing,
            scenarios=args.scenarios.split(","),
            profile=args.profile,
        ),
        table,
    )


if __name__ == "__main__":
    main()
