"""Measure 1: Kubernetes API requests caused by N open status streams, jobpulse against the baseline.

    python -m benchmarks.api_requests [--counts 10,100,1000] [--window 20]

For each N, N streams (half SSE, half WebSocket, spread over 10 running
Jobs) are held open on one server at a time while the API server counts the
requests it dispatches for the apps' ServiceAccount (API Priority and
Fairness, flow schema ``service-accounts``: neither the control plane's own
components nor the benchmark's admin calls are in it). The figure is
requests per second over the window.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import Bench, arguments, finish, machine, session


def request_rate(bench: Bench, window: float) -> float:
    before, started = bench.app_requests(), time.monotonic()
    time.sleep(window)  # the measurement window itself
    return (bench.app_requests() - before) / (time.monotonic() - started)


def run(bench: Bench, *, counts: list[int], window: float, jobs: int = 10, profile: Any = None) -> dict[str, Any]:
    jobpulse = bench.jobpulse()
    names = bench.donate(jobpulse, jobs)
    for name in names:
        bench.set_marker(name, 1)
    idle = {"jobpulse": request_rate(bench, window)}
    with bench.running(bench.baseline()):
        idle["baseline"] = request_rate(bench, window)
    rows = []
    for count in counts:
        row: dict[str, Any] = {"streams": count}
        for label in ("baseline", "jobpulse"):
            # a fresh baseline each time: its streams only notice a client has gone when they next write
            with bench.running(
                bench.baseline() if label == "baseline" else jobpulse, keep=label == "jobpulse"
            ) as server:
                load = bench.streams(server, transport="mixed", jobs=names, count=count, processes=1 + count // 2500)
                with bench.profiling(server, profile, f"api-requests-{count}") as where:
                    row[label] = request_rate(bench, window)
                row[f"{label}_lost_streams"] = bench.release(load)["closed"]
            if where.summary:
                row["profile"] = where.summary
        rows.append(row)
    return {"measure": "api_requests", "window_seconds": window, "jobs": jobs, "idle": idle, "rows": rows}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        {
            "open streams": 0,
            "baseline req/s": f"{results['idle']['baseline']:.2f}",
            "jobpulse req/s": f"{results['idle']['jobpulse']:.2f}",
            "baseline ÷ jobpulse": "",
        }
    ]
    for row in results["rows"]:
        ratio = row["baseline"] / row["jobpulse"] if row["jobpulse"] > 0 else float("inf")
        out.append(
            {
                "open streams": row["streams"],
                "baseline req/s": f"{row['baseline']:.2f} (N/2 = {row['streams'] / 2:g})",
                "jobpulse req/s": f"{row['jobpulse']:.2f}",
                "baseline ÷ jobpulse": "∞ (jobpulse made none)" if ratio == float("inf") else f"{ratio:.0f} times",
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,100,1000", help="open streams, comma-separated")
    parser.add_argument("--window", type=float, default=20.0, help="seconds to count requests for, per N and app")
    args: argparse.Namespace = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    with session(args) as bench:
        counts = [int(c) for c in args.counts.split(",")]
        results.update(run(bench, counts=counts, window=args.window, profile=args.profile))
    finish(args, "Kubernetes API requests per second caused by N open streams", results, table(results))


if __name__ == "__main__":
    main()
