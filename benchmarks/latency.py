"""Measure 2: a status change in the API server → the message at the client, with 1,000 open streams.

    python -m benchmarks.latency [--streams 1000] [--changes 12]

One running Job, ``--streams`` streams on it (SSE, then WebSocket, each on a
fresh server), and ``--changes`` changes written to the Job's status in the
API server, about 2.5 s apart. Each latency is from the moment the benchmark
sends the status write to the moment a load generator reads the message, so
it includes the API server's write and watch delivery. Baseline: the same,
served by polling every 2 s per stream.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks.common import Bench, arguments, finish, machine, ms, percentiles, session


def run(
    bench: Bench,
    *,
    streams: int,
    changes: int,
    interval: float = 2.5,
    apps: tuple[str, ...] = ("baseline", "jobpulse"),
    transports: tuple[str, ...] = ("sse", "ws"),
    clients: int = 1,
    profile: Any = None,
) -> dict[str, Any]:
    job = bench.running_job()
    rows = []
    for app in apps:
        for transport in transports:
            with bench.running(bench.serve(app)) as server:
                load = bench.streams(server, transport=transport, jobs=[job], count=streams, processes=clients)
                before = bench.propagation(server)
                with bench.profiling(server, profile, f"latency-{transport}") as where:
                    done = bench.changes(load, job, worker=bench.worker(server), count=changes, interval=interval)
                after = bench.propagation(server)
            inside = (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else float("nan")
            latencies = done.latencies()
            rows.append(
                {
                    "app": app,
                    "transport": transport,
                    "streams": streams,
                    "changes": changes,
                    "delivered": done.delivered,
                    "expected": done.expected,
                    "lost_streams": done.report["closed"],
                    "api_p50": percentiles(done.api_latencies(), 50)["p50"],
                    "inside_mean": inside,
                    "cpu_per_delivery": done.worker_cpu_seconds / max(done.delivered, 1),
                    "mean": statistics.fmean(latencies) if latencies else float("nan"),
                    "max": max(latencies, default=float("nan")),
                    **percentiles(latencies, 50, 95, 99),
                    "profile": where.summary,
                }
            )
    return {"measure": "latency", "rows": rows}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    baseline_mean = {r["transport"]: r["mean"] for r in results["rows"] if r["app"] == "baseline"}
    for row in results["rows"]:
        ratio = ""
        if row["app"] == "jobpulse" and row["transport"] in baseline_mean:
            ratio = f"{baseline_mean[row['transport']] / row['mean']:.0f} times faster (mean)"
        out.append(
            {
                "app": row["app"],
                "transport": row["transport"],
                "streams": row["streams"],
                "delivered": f"{row['delivered']}/{row['expected']}",
                "API server p50 ms": ms(row["api_p50"]),
                "in jobpulse, mean ms": ms(row["inside_mean"]) if row["app"] == "jobpulse" else "",
                "p50 ms": ms(row["p50"]),
                "p95 ms": ms(row["p95"]),
                "p99 ms": ms(row["p99"]),
                "mean ms": ms(row["mean"]),
                "max ms": ms(row["max"]),
                "worker CPU µs per message": round(row["cpu_per_delivery"] * 1e6, 1),
                "vs baseline": ratio,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=12)
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes to spread the streams over")
    args: argparse.Namespace = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    with session(args) as bench:
        results.update(
            run(bench, streams=args.streams, changes=args.changes, clients=args.clients, profile=args.profile)
        )
    finish(args, "Status change in the API server → message at the client", results, table(results))


if __name__ == "__main__":
    main()
