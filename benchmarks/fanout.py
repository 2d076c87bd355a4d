"""Measure 3: one change fanned out to 1,000 / 5,000 / 10,000 open streams in one worker, and memory per stream.

    python -m benchmarks.fanout [--counts 1000,5000,10000] [--changes 5] [--transports mixed,sse,ws]

For each N and each of ``--transports`` (``mixed``: half SSE and half
WebSocket, the default; ``sse`` or ``ws``: all of one kind, to tell their
memory apart), a fresh server (one gevent worker) gets N streams on one
running Job from load-generator processes; then
``--changes`` changes are written to the Job, 2 s or more apart. For each
change: the time from sending the write until the *last* stream has it. The
worker's resident memory before the streams open and once all are open gives
memory per open stream. The baseline runs only up to ``--baseline-max``
streams: at 5,000 it would ask the API server for 2,500 Job reads a second.
The seed plan's example (``seed``, :mod:`benchmarks.seed_baseline`) runs
on the same terms (up to ``--baseline-max``), with WebSocket streams only,
the one transport it served: for a poller "one change to
N streams" is bounded below by its poll period, whatever N.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.common import Bench, arguments, ms, percentiles, run_and_report


def run(
    bench: Bench,
    *,
    counts: list[int],
    changes: int,
    interval: float = 2.0,
    baseline_max: int = 1000,
    apps: tuple[str, ...] = ("baseline", "seed", "jobpulse"),
    transports: tuple[str, ...] = ("mixed",),
    profile: Any = None,
) -> dict[str, Any]:
    job = bench.running_job()
    rows = []
    for app, transport, count in ((a, t, c) for a in apps for t in _transports(a, transports) for c in counts):
        if app in ("baseline", "seed") and count > baseline_max:
            continue
        with bench.running(bench.serve(app)) as server:
            worker = bench.worker(server)
            before = worker.memory_info().rss
            load = bench.streams(server, transport=transport, jobs=[job], count=count, processes=2)
            time.sleep(1.0)  # let the last accepted streams settle before reading memory
            after = worker.memory_info().rss
            name = f"fanout-{count}" if transport == "mixed" else f"fanout-{transport}-{count}"
            with bench.profiling(server, profile, name) as where:
                done = bench.changes(
                    load, job, worker=bench.worker(server), count=changes, interval=max(interval, count / 2500)
                )
        lasts = [max(done.latencies(marker), default=float("nan")) for marker in done.sent]
        rows.append(
            {
                "app": app,
                "transport": transport,
                "streams": count,
                "changes": changes,
                "delivered": done.delivered,
                "expected": done.expected,
                "lost_streams": done.report["closed"],
                "open_seconds": load.opened_seconds,
                "last_median": statistics.median(lasts),
                "last_max": max(lasts),
                **percentiles(done.latencies(), 50),
                "api_p50": percentiles(done.api_latencies(), 50)["p50"],
                "rss_before": before,
                "rss_after": after,
                "rss_per_stream": (after - before) / count,
                "cpu_per_delivery": done.worker_cpu_seconds / max(done.delivered, 1),
                "profile": where.summary,
            }
        )
    return {"measure": "fanout", "rows": rows}


def _transports(app: str, asked: tuple[str, ...]) -> tuple[str, ...]:
    """The seed served WebSocket only: its rows are WebSocket streams whatever was asked."""
    return ("ws",) if app == "seed" else asked


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "app": row["app"],
            "transport": row.get("transport", "mixed"),
            "open streams": row["streams"],
            "delivered": f"{row['delivered']}/{row['expected']}",
            "last client, median ms": ms(row["last_median"]),
            "last client, worst ms": ms(row["last_max"]),
            "API server p50 ms": ms(row["api_p50"]),
            "p50 ms": ms(row["p50"]),
            "worker RSS MiB": round(row["rss_after"] / 2**20, 1),
            "KiB per stream": round(row["rss_per_stream"] / 1024, 1),
            "worker CPU µs per message": round(row["cpu_per_delivery"] * 1e6, 1),
        }
        for row in results["rows"]
    ]


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,5000,10000", help="open streams, comma-separated")
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--baseline-max", type=int, default=1000, help="largest N to run the baseline at")
    parser.add_argument(
        "--transports",
        default="mixed",
        help="comma-separated: mixed (half SSE, half WebSocket), sse, ws; each N runs once per transport",
    )
    args: argparse.Namespace = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    transports = tuple(args.transports.split(","))
    if not set(transports) <= {"mixed", "sse", "ws"}:
        parser.error(f"--transports: mixed, sse or ws, not {args.transports}")
    run_and_report(
        args,
        "One change fanned out to N open streams (mixed: half SSE, half WebSocket) in one worker",
        lambda bench: run(
            bench,
            counts=counts,
            changes=args.changes,
            baseline_max=args.baseline_max,
            transports=transports,
            profile=args.profile,
        ),
        table,
    )


if __name__ == "__main__":
    main()
