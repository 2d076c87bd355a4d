"""Measure 6 of issue #15: scale out — I instances x W workers on one Redis, and what each watch costs the API server.

    python -m benchmarks.scaleout [--configs 1x1,2x1,1x2,2x2,3x1] [--streams 1200] [--jobs 12]
                                  [--changes 200] [--rate 20] [--watches 1,10,50,100]

Part one, per configuration ``IxW``: I jobpulse instances (gunicorn,
``WEB_CONCURRENCY=W``, Kubernetes mode) share one ``redis-server``; S
streams (half SSE, half WebSocket) are spread evenly over the instances and
follow J running Jobs; then C changes are written to the Jobs in turn at R a
second. Measured over the changes:

- streams per instance and per worker (each worker's open connections);
- messages delivered to the clients (and whether every one arrived), per second;
- Redis: commands processed, ``PUBLISH`` calls on the status channel and
  its subscribers (each publish reaches every process), the bytes it sent,
  and the CPU ``redis-server`` used, per 1,000 changes;
- CPU of every jobpulse process (gunicorn masters and workers), per 1,000 changes;
- the API server: watches on Jobs the instances hold open, requests per
  second from the apps' ServiceAccount (as :mod:`benchmarks.api_requests`
  counts them) and its own CPU per 1,000 changes.

Part two, the API server's cost per watch: N raw watches of the Jobs (as
the app's ServiceAccount, the selector and bookmarks jobpulse's reflector
uses), N = 1, 10, 50, 100; with them open, the API server's memory and idle
CPU, then C changes at R a second and its CPU and the bytes it sent per change.

Rows past what the machine runs are computed from the measured per-unit
costs (:func:`computed`), and marked so.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    Bench,
    Profile,
    arguments,
    cpu_seconds,
    ms,
    percentiles,
    print_report,
    run_and_report,
)
from tests.helpers import wait_for
from tests.live.server import LiveServer
from tests.redis.conftest import RedisServer
from webapp.kube.client import MANAGED_SELECTOR
from webapp.redis_relay import DEFAULT_CHANNEL

STATUS_CHANNEL = DEFAULT_CHANNEL


# -- what the API server and Redis say ---------------------------------------------


def apiserver_process(bench: Bench) -> psutil.Process:
    return psutil.Process(bench.plane.procs["kube-apiserver"]["pid"])


def job_watches(bench: Bench) -> float:
    """Watches of Jobs the API server holds open now (``apiserver_longrunning_requests``), everyone's."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(bench.plane.apiserver_metrics()):
        if family.name != "apiserver_longrunning_requests":
            continue
        for sample in family.samples:
            if sample.labels.get("verb") == "WATCH" and sample.labels.get("resource") == "jobs":
                total += sample.value
    return total


def redis_figures(redis: RedisServer) -> dict[str, float]:
    """The counters of ``INFO`` this benchmark reads, with ``PUBLISH`` calls and the channel's subscribers."""
    client = redis.client()
    try:
        stats = client.info("stats")
        commands = client.info("commandstats")
        cpu = client.info("cpu")
        [(_, subscribers)] = client.pubsub_numsub(STATUS_CHANNEL)
    finally:
        client.close()
    return {
        "commands": float(stats["total_commands_processed"]),
        "net_output_bytes": float(stats["total_net_output_bytes"]),
        "net_input_bytes": float(stats["total_net_input_bytes"]),
        "publish_calls": float(commands.get("cmdstat_publish", {}).get("calls", 0)),
        "cpu_seconds": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "channel_subscribers": float(subscribers),
        **{f"cmd_{name.removeprefix('cmdstat_')}": float(stat["calls"]) for name, stat in commands.items()},
    }


# -- part one: instances x workers -------------------------------------------------


def jobpulse_processes(server: LiveServer) -> list[psutil.Process]:
    """The gunicorn master and its workers."""
    assert server.process is not None
    master = psutil.Process(server.process.pid)
    return [master, *master.children()]


def streams_per_worker(server: LiveServer) -> list[int]:
    """Open connections to ``server``'s port held by each of its workers."""
    counts = []
    for worker in jobpulse_processes(server)[1:]:
        established = [
            c
            for c in worker.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == server.port
        ]
        counts.append(len(established))
    return counts


def expected_per_job(plan: list[int], jobs: list[str]) -> Counter[str]:
    """Streams following each Job: each load generator gives its stream ``i`` the Job ``i mod J``."""
    per: Counter[str] = Counter()
    for count in plan:
        for index in range(count):
            per[jobs[index % len(jobs)]] += 1
    return per


def configuration(
    bench: Bench,
    redis: RedisServer,
    *,
    instances: int,
    workers: int,
    streams: int,
    jobs: int,
    changes: int,
    rate: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    redis.flush()
    watches_before = job_watches(bench)
    env = {"REDIS_URL": redis.url, "WEB_CONCURRENCY": str(workers)}
    servers = [bench.jobpulse(**env) for _ in range(instances)]
    for server in servers:
        wait_for(lambda s=server: len(jobpulse_processes(s)) == workers + 1, timeout=60, what="every worker")
    names = bench.donate(servers[0], jobs)
    for name in names:
        bench.set_marker(name, bench.next_marker())
    per_instance = [streams // instances + (i < streams % instances) for i in range(instances)]
    loads = []
    plan: list[int] = []
    for server, count in zip(servers, per_instance, strict=True):
        loads.append(bench.streams(server, transport="mixed", jobs=names, count=count))
        plan.extend((count // 2 + count % 2, count // 2))  # the SSE generator, then the WebSocket one
    following = expected_per_job([n for n in plan if n], names)
    wait_for(
        lambda: job_watches(bench) - watches_before >= instances * workers, timeout=30, what="every process's watch"
    )
    per_worker = [streams_per_worker(server) for server in servers]
    processes = [p for server in servers for p in jobpulse_processes(server)]
    apiserver = apiserver_process(bench)

    cpu_before = {p.pid: cpu_seconds(p) for p in processes}
    redis_before = redis_figures(redis)
    requests_before = bench.app_requests()
    apiserver_cpu_before = cpu_seconds(apiserver)
    watches_open = job_watches(bench) - watches_before
    sent: dict[int, tuple[str, float]] = {}
    sampler = None
    if profile is not None:  # one worker of the last instance: every worker does the same per change
        profile.mkdir(parents=True, exist_ok=True)
        sampled = jobpulse_processes(servers[-1])[1]
        sampler = Profile(sampled.pid, profile / f"scaleout-{instances}x{workers}.txt")
    started = time.monotonic()
    for index in range(changes):
        time.sleep(max(0.0, started + index / rate - time.monotonic()))  # the steady schedule
        marker = bench.next_marker()
        job = names[index % len(names)]
        sent[marker] = (job, bench.set_marker(job, marker))
    writing = time.monotonic() - started
    time.sleep(1.0)  # the last change's delivery: the arrivals say when each came
    window = time.monotonic() - started
    apiserver_cpu = cpu_seconds(apiserver) - apiserver_cpu_before
    requests = bench.app_requests() - requests_before
    redis_after = redis_figures(redis)
    cpu = {p.pid: cpu_seconds(p) - cpu_before[p.pid] for p in processes}
    summary = sampler.stop() if sampler is not None else None

    reports = [bench.release(load) for load in loads]
    delivered = 0
    latencies: list[float] = []
    for report in reports:
        for marker, (_, at) in sent.items():
            arrivals = report["arrivals"].get(marker, ())
            delivered += len(arrivals)
            latencies.extend(t - at for t in arrivals)
    expected = sum(following[job] for job, _ in sent.values())
    for server in servers:
        bench.stop(server)

    per_thousand = 1000 / changes
    redis_delta = {key: redis_after[key] - redis_before.get(key, 0.0) for key in redis_after}
    commands = {
        key.removeprefix("cmd_"): int(value) for key, value in redis_delta.items() if key.startswith("cmd_") and value
    }
    masters = {server.process.pid for server in servers if server.process is not None}
    worker_cpu = [round(cpu[p.pid] * per_thousand, 2) for p in processes if p.pid not in masters]
    return {
        "instances": instances,
        "workers": workers,
        "processes": instances * workers,
        "streams": streams,
        "streams_per_instance": per_instance,
        "streams_per_worker": per_worker,
        "jobs": jobs,
        "changes": changes,
        "rate": rate,
        "writing_seconds": round(writing, 2),
        "expected": expected,
        "delivered": delivered,
        "lost_streams": sum(r["closed"] for r in reports),
        "deliveries_per_second": round(delivered / writing, 1),
        "latency_ms": {k: ms(v) for k, v in percentiles(latencies, 50, 99).items()},
        "redis": {
            "commands": int(redis_delta["commands"]),
            "commands_per_change": round(redis_delta["commands"] / changes, 2),
            "commands_per_second": round(redis_delta["commands"] / window, 1),
            "publishes": int(redis_delta["publish_calls"]),
            "publishes_per_second": round(redis_delta["publish_calls"] / window, 1),
            "publishes_per_change": round(redis_delta["publish_calls"] / changes, 2),
            "channel_subscribers": int(redis_after["channel_subscribers"]),
            "relay_deliveries_per_second": round(
                redis_delta["publish_calls"] * redis_after["channel_subscribers"] / window, 1
            ),
            "net_output_bytes_per_change": round(redis_delta["net_output_bytes"] / changes),
            "cpu_seconds_per_1000_changes": round(redis_delta["cpu_seconds"] * per_thousand, 2),
            "by_command": commands,
        },
        "jobpulse_cpu_seconds_per_1000_changes": {
            "total": round(sum(cpu.values()) * per_thousand, 2),
            "masters": round(sum(cpu[pid] for pid in masters) * per_thousand, 2),
            "workers": worker_cpu,
        },
        "profile": summary,
        "api": {
            "job_watches_open": round(watches_open),
            "requests_per_second": round(requests / window, 2),
            "apiserver_cpu_seconds_per_1000_changes": round(apiserver_cpu * per_thousand, 2),
        },
    }


# -- part two: the API server's cost per watch ---------------------------------------


class RawWatches:
    """N watches of the benchmark namespace's Jobs, as jobpulse's reflector opens them; bytes and events counted."""

    def __init__(self, bench: Bench, count: int) -> None:
        from kubernetes import client

        self._api = bench.plane.api_client(bench.app_kubeconfig)
        self._batch = client.BatchV1Api(self._api)
        self._namespace = bench.namespace
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.bytes = 0
        self.events = 0
        self._open = 0
        self._responses: list[Any] = []
        self._threads = [threading.Thread(target=self._follow, daemon=True) for _ in range(count)]

    def __enter__(self) -> RawWatches:
        version = self._batch.list_namespaced_job(self._namespace, label_selector=MANAGED_SELECTOR).metadata
        self._version = version.resource_version
        self._api.rest_client.pool_manager.connection_pool_kw["maxsize"] = len(self._threads) + 2
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self._open == len(self._threads), timeout=60, what="every watch to open")
        return self

    def _follow(self) -> None:
        response = self._batch.list_namespaced_job(
            self._namespace,
            label_selector=MANAGED_SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self._version,
            timeout_seconds=600,
            _preload_content=False,
        )
        with self._lock:
            self._open += 1
            self._responses.append(response)
        try:
            for chunk in response.stream(65536, decode_content=True):
                with self._lock:
                    self.bytes += len(chunk)
                    self.events += chunk.count(b"\n")
                if self._stopping.is_set():
                    return
        except Exception:  # closed by __exit__
            return

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.bytes, self.events

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            response.shutdown()  # wakes the thread blocked reading it
            response.release_conn()
        for thread in self._threads:
            thread.join(timeout=5)
        self._api.close()


def watch_cost(bench: Bench, *, counts: list[int], changes: int, rate: float, idle: float) -> list[dict[str, Any]]:
    """The API server's memory, idle CPU, and CPU and bytes per change, with N watches open."""
    with bench.running(bench.jobpulse()) as server:  # only the Job stays: the watches below are the app's only ones
        [job] = bench.donate(server, 1)
    apiserver = apiserver_process(bench)
    watches_before = job_watches(bench)
    rows = []
    for count in counts:
        rss_before = apiserver.memory_info().rss
        with RawWatches(bench, count) as watches:
            open_watches = job_watches(bench) - watches_before
            rss_open = apiserver.memory_info().rss
            cpu_before = cpu_seconds(apiserver)
            time.sleep(idle)  # the watches sit idle: bookmarks only
            idle_cpu = cpu_seconds(apiserver) - cpu_before
            bytes_before, events_before = watches.counts()
            cpu_before = cpu_seconds(apiserver)
            started = time.monotonic()
            for index in range(changes):
                time.sleep(max(0.0, started + index / rate - time.monotonic()))  # the steady schedule
                bench.set_marker(job, bench.next_marker())
            wanted = events_before + count * changes
            wait_for(
                lambda: watches.counts()[1] >= wanted,  # noqa: B023  (waited on here, in this iteration)
                timeout=30,
                what="every watch to see every change",
            )
            change_cpu = cpu_seconds(apiserver) - cpu_before
            change_seconds = time.monotonic() - started
            bytes_after, events_after = watches.counts()
        rows.append(
            {
                "watches": count,
                "watches_open": round(open_watches),
                "apiserver_rss_mib": round(rss_open / 2**20, 1),
                "rss_added_mib": round((rss_open - rss_before) / 2**20, 2),
                "idle_cpu_ms_per_second": round(1000 * idle_cpu / idle, 2),
                "cpu_ms_per_change": round(1000 * change_cpu / changes, 3),
                "cpu_ms_per_change_above_idle": round(
                    1000 * (change_cpu - idle_cpu / idle * change_seconds) / changes, 3
                ),
                "events_seen": events_after - events_before,
                "bytes_per_change": round((bytes_after - bytes_before) / changes),
                "bytes_per_change_per_watch": round((bytes_after - bytes_before) / changes / count),
            }
        )
    return rows


# -- the whole run -------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``: (a, b)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return (ys[0] if ys else 0.0), 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def computed(rows: list[dict[str, Any]], watch_rows: list[dict[str, Any]], targets: list[tuple[int, int]]) -> Any:
    """Rows for configurations too big for this machine: per-process costs fitted on the measured rows.

    Redis commands, Redis CPU and jobpulse CPU per 1,000 changes are fitted as
    ``a + b x processes`` (each process watches every Job and hears every
    publish); the API server's CPU per change above its idle as ``a + b x
    watches`` from part two; bytes per change as measured per watch (at the
    most watches) times the processes. A fit below zero counts as zero.
    """
    processes = [float(r["processes"]) for r in rows]
    models = {
        "redis_commands_per_change": fit(processes, [r["redis"]["commands_per_change"] for r in rows]),
        "redis_cpu_s_per_1000": fit(processes, [r["redis"]["cpu_seconds_per_1000_changes"] for r in rows]),
        "jobpulse_cpu_s_per_1000": fit(processes, [r["jobpulse_cpu_seconds_per_1000_changes"]["total"] for r in rows]),
    }
    if watch_rows:
        models["apiserver_cpu_ms_per_change"] = fit(
            [float(w["watches"]) for w in watch_rows], [w["cpu_ms_per_change_above_idle"] for w in watch_rows]
        )
        per_watch_bytes = watch_rows[-1]["bytes_per_change_per_watch"]
    else:
        per_watch_bytes = 0
    out = []
    for instances, workers in targets:
        p = instances * workers
        row: dict[str, Any] = {"instances": instances, "workers": workers, "processes": p, "computed": True}
        for name, (a, b) in models.items():
            row[name] = round(max(0.0, a + b * p), 3)  # a noisy fit may slope down: no cost is below nothing
        row["redis_relay_deliveries_per_change"] = p
        row["apiserver_bytes_per_change"] = per_watch_bytes * p
        out.append(row)
    return {"models": {k: {"a": round(a, 4), "b": round(b, 4)} for k, (a, b) in models.items()}, "rows": out}


def run(
    bench: Bench,
    *,
    configs: list[tuple[int, int]],
    streams: int,
    jobs: int,
    changes: int,
    rate: float,
    watches: list[int],
    watch_changes: int = 50,
    idle: float = 5.0,
    project: list[tuple[int, int]] | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    with bench.redis() as redis:
        rows = [
            configuration(
                bench,
                redis,
                instances=instances,
                workers=workers,
                streams=streams,
                jobs=jobs,
                changes=changes,
                rate=rate,
                profile=profile,
            )
            for instances, workers in configs
        ]
    watch_rows = watch_cost(bench, counts=watches, changes=watch_changes, rate=rate, idle=idle) if watches else []
    return {
        "measure": "scaleout",
        "rows": rows,
        "watch_rows": watch_rows,
        "computed": computed(rows, watch_rows, project or []),
    }


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in results["rows"]:
        redis = row["redis"]
        out.append(
            {
                "I x W (measured)": f"{row['instances']} x {row['workers']}",
                "streams per instance (per worker)": ", ".join(
                    f"{n} ({'+'.join(str(w) for w in ws)})"
                    for n, ws in zip(row["streams_per_instance"], row["streams_per_worker"], strict=True)
                ),
                "delivered / expected": f"{row['delivered']} / {row['expected']}",
                "deliveries/s": row["deliveries_per_second"],
                "p50 / p99 ms": f"{row['latency_ms']['p50']} / {row['latency_ms']['p99']}",
                "Redis cmds per change": redis["commands_per_change"],
                "publishes per change x subscribers": (
                    f"{redis['publishes_per_change']} x {redis['channel_subscribers']}"
                ),
                "Redis out bytes per change": redis["net_output_bytes_per_change"],
                "CPU s per 1,000 changes: jobpulse / redis / apiserver": (
                    f"{row['jobpulse_cpu_seconds_per_1000_changes']['total']} / "
                    f"{redis['cpu_seconds_per_1000_changes']} / {row['api']['apiserver_cpu_seconds_per_1000_changes']}"
                ),
                "watches / API req/s": f"{row['api']['job_watches_open']} / {row['api']['requests_per_second']}",
            }
        )
    return out


def watch_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "watches open": w["watches"],
            "apiserver RSS MiB (added)": f"{w['apiserver_rss_mib']} (+{w['rss_added_mib']})",
            "idle CPU ms/s": w["idle_cpu_ms_per_second"],
            "CPU ms per change (above idle)": f"{w['cpu_ms_per_change']} ({w['cpu_ms_per_change_above_idle']})",
            "bytes sent per change (per watch)": f"{w['bytes_per_change']} ({w['bytes_per_change_per_watch']})",
        }
        for w in results["watch_rows"]
    ]


def parse_configs(text: str) -> list[tuple[int, int]]:
    return [(int(i), int(w)) for i, w in (part.split("x") for part in text.split(",") if part)]


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="1x1,2x1,1x2,2x2,3x1", help="instances x workers, comma-separated")
    parser.add_argument("--streams", type=int, default=1200, help="open streams, spread over the instances")
    parser.add_argument("--jobs", type=int, default=12, help="running Jobs the streams follow")
    parser.add_argument("--changes", type=int, default=200, help="status changes per configuration")
    parser.add_argument("--rate", type=float, default=20.0, help="changes a second")
    parser.add_argument("--watches", default="1,10,50,100", help="raw watches for part two (empty: skip it)")
    parser.add_argument("--watch-changes", type=int, default=100, help="changes per watch count in part two")
    parser.add_argument("--project", default="4x2,10x4,50x4", help="configurations computed from the measured costs")
    args: argparse.Namespace = parser.parse_args(argv)
    results = run_and_report(
        args,
        "Scale out: instances x workers on one Redis",
        lambda bench: run(
            bench,
            configs=parse_configs(args.configs),
            streams=args.streams,
            jobs=args.jobs,
            changes=args.changes,
            rate=args.rate,
            watches=[int(n) for n in args.watches.split(",") if n],
            watch_changes=args.watch_changes,
            project=parse_configs(args.project),
            profile=args.profile,
        ),
        table,
    )
    print_report("The API server's cost per watch", results["command"], results, watch_table(results))
    computed_rows = results["computed"]["rows"]
    print_report("Computed, not measured: the fitted per-process costs", results["command"], results, computed_rows)


if __name__ == "__main__":
    main()
