"""Measure 4: launch throughput and latency, donations per second through one worker, Jobs really created.

    python -m benchmarks.launches [--count 500] [--concurrency 8] [--before CHECKOUT]

A load-generator process posts ``--count`` donations to ``POST /api/donations``,
``--concurrency`` at a time, after a warm-up of ``2 * concurrency`` that is not
counted. Every accepted donation must have its Job in the API server; the
benchmark lists them and says how many it found. Baseline: a handler that
renders the same Job and creates it, with no run store, idempotency or limits.
``--before`` adds "jobpulse before": the code of another checkout (e.g. a
``git worktree`` of the commit before a change), under the same settings, in
the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, arguments, finish, machine, ms, percentiles, session


def run(
    bench: Bench,
    *,
    count: int,
    concurrency: int,
    apps: tuple[str, ...] = ("baseline", "jobpulse"),
    before: Path | None = None,
    profile: Any = None,
) -> dict[str, Any]:
    """One row per app; with ``before``, a "jobpulse before" row (that checkout's code) ahead of "jobpulse"."""
    if before is not None and "jobpulse" in apps:
        at = apps.index("jobpulse")
        apps = (*apps[:at], "jobpulse before", *apps[at:])
    rows = []
    for app in apps:
        served = bench.jobpulse(checkout=before) if app == "jobpulse before" else bench.serve(app)
        with bench.running(served) as server:
            bench.donations(server, count=2 * concurrency, concurrency=concurrency)  # warm-up
            with bench.profiling(
                server, profile, "launches-before" if app == "jobpulse before" else "launches"
            ) as where:
                report = bench.donations(server, count=count, concurrency=concurrency)
        results = report["results"]
        accepted = [r for r in results if r["code"] in (200, 202)]
        names = {r["job_name"] for r in accepted}
        created = names & {job["metadata"]["name"] for job in bench.jobs()}
        latencies = [r["seconds"] for r in accepted]
        rows.append(
            {
                "app": app,
                "donations": count,
                "concurrency": concurrency,
                "accepted": len(accepted),
                "refused": sorted({r["code"] for r in results} - {200, 202}),
                "jobs_created": len(created),
                "per_second": len(accepted) / report["wall_seconds"],
                **percentiles(latencies, 50, 99),
                "profile": where.summary,
            }
        )
    return {"measure": "launches", "rows": rows}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "app": row["app"],
            "donations": row["donations"],
            "concurrency": row["concurrency"],
            "accepted": row["accepted"],
            "Jobs in the API server": row["jobs_created"],
            "donations/s": round(row["per_second"], 1),
            "p50 ms": ms(row["p50"]),
            "p99 ms": ms(row["p99"]),
        }
        for row in results["rows"]
    ]


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--before", type=Path, help='also serve this checkout\'s jobpulse ("jobpulse before"), same settings, same run'
    )
    args: argparse.Namespace = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    with session(args) as bench:
        results.update(
            run(bench, count=args.count, concurrency=args.concurrency, before=args.before, profile=args.profile)
        )
    finish(args, "Launches through one worker: donations per second, with the Jobs created", results, table(results))


if __name__ == "__main__":
    main()
