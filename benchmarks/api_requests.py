"""Measure 1: Kubernetes API requests caused by N open status streams, jobpulse against the baseline.

    python -m benchmarks.api_requests [--counts 10,100,1000] [--window 20]

For each N, N streams (half SSE, half WebSocket, spread over 10 running
Jobs) are held open on one server at a time while the API server counts the
requests it dispatches for the apps' ServiceAccount (API Priority and
Fairness, flow schema ``service-accounts``: neither the control plane's own
components nor the benchmark's admin calls are in it). The figure is
requests per second over the window.

Three servers: jobpulse, the polling baseline and the seed plan's example
(``seed``, :mod:`benchmarks.seed_baseline`: one blocking read of the Job
every 2 s per WebSocket inside uvicorn's event loop). The seed served
WebSocket only, so its N streams are all WebSockets; the others' are half
of each. Each seed row gets a fresh seed server, as the baseline's do.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import Bench, arguments, run_and_report


def request_rate(bench: Bench, window: float) -> float:
    before, started = bench.app_requests(), time.monotonic()
    time.sleep(window)  # the measurement window itself
    return (bench.app_requests() - before) / (time.monotonic() - started)


def run(
    bench: Bench,
    *,
    counts: list[int],
    window: float,
    jobs: int = 10,
    apps: tuple[str, ...] = ("baseline", "seed", "jobpulse"),
    profile: Any = None,
) -> dict[str, Any]:
    jobpulse = bench.jobpulse()
    names = bench.donate(jobpulse, jobs)
    for name in names:
        bench.set_marker(name, 1)
    idle = {"jobpulse": request_rate(bench, window)}
    for label in (app for app in apps if app != "jobpulse"):
        with bench.running(bench.serve(label)):
            idle[label] = request_rate(bench, window)
    rows = []
    for count in counts:
        row: dict[str, Any] = {"streams": count}
        for label in apps:
            # a fresh polling server each time: its streams only notice a client has gone when they next write
            with bench.running(
                jobpulse if label == "jobpulse" else bench.serve(label), keep=label == "jobpulse"
            ) as server:
                transport = "ws" if label == "seed" else "mixed"  # the seed's example served WebSocket only
                load = bench.streams(server, transport=transport, jobs=names, count=count, processes=1 + count // 2500)
                with bench.profiling(server, profile, f"api-requests-{count}") as where:
                    row[label] = request_rate(bench, window)
                row[f"{label}_lost_streams"] = bench.release(load)["closed"]
            if where.summary:
                row["profile"] = where.summary
        rows.append(row)
    return {
        "measure": "api_requests",
        "window_seconds": window,
        "jobs": jobs,
        "apps": list(apps),
        "idle": idle,
        "rows": rows,
    }


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    pollers = [app for app in results.get("apps", ["baseline", "jobpulse"]) if app != "jobpulse"]
    names = {"baseline": "baseline", "seed": "seed (WS only)"}
    out = [
        {
            "open streams": 0,
            **{f"{names[app]} req/s": f"{results['idle'][app]:.2f}" for app in pollers},
            "jobpulse req/s": f"{results['idle']['jobpulse']:.2f}",
            **{f"{app} ÷ jobpulse": "" for app in pollers},
        }
    ]
    for row in results["rows"]:
        line: dict[str, Any] = {"open streams": row["streams"]}
        for app in pollers:
            line[f"{names[app]} req/s"] = f"{row[app]:.2f} (N/2 = {row['streams'] / 2:g})"
        line["jobpulse req/s"] = f"{row['jobpulse']:.2f}"
        for app in pollers:
            ratio = row[app] / row["jobpulse"] if row["jobpulse"] > 0 else float("inf")
            line[f"{app} ÷ jobpulse"] = "∞ (jobpulse made none)" if ratio == float("inf") else f"{ratio:.0f} times"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,100,1000", help="open streams, comma-separated")
    parser.add_argument("--window", type=float, default=20.0, help="seconds to count requests for, per N and app")
    parser.add_argument("--apps", default="baseline,seed,jobpulse", help="servers to measure, comma-separated")
    args: argparse.Namespace = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    apps = tuple(args.apps.split(","))
    if "jobpulse" not in apps or not set(apps) <= {"baseline", "seed", "jobpulse"}:
        parser.error(f"--apps: jobpulse and any of baseline, seed, not {args.apps}")
    run_and_report(
        args,
        "Kubernetes API requests per second caused by N open streams",
        lambda bench: run(bench, counts=counts, window=args.window, apps=apps, profile=args.profile),
        table,
    )


if __name__ == "__main__":
    main()
