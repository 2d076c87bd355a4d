"""Measure 4: launch throughput and latency, donations per second through one worker, Jobs really created.

    python -m benchmarks.launches [--count 500] [--concurrency 8] [--before CHECKOUT] [--gc-pauses]
                                  [--profile DIR] [--plane-profile DIR [--plane-profile-seconds 2]]

A load-generator process posts ``--count`` donations to ``POST /api/donations``,
``--concurrency`` at a time, after a warm-up of ``2 * concurrency`` that is not
counted. Every accepted donation must have its Job in the API server; the
benchmark lists them and says how many it found. Baseline: a handler that
renders the same Job and creates it, with no run store, idempotency or limits.
``--before`` adds "jobpulse before": the code of another checkout (e.g. a
``git worktree`` of the commit before a change), under the same settings, in
the same run. ``--gc-pauses`` looks at the tail: every server notes each
full garbage collection (``benchmarks/gc_pauses/sitecustomize.py``), and
each row says how many ran while it was measured and how long the longest
held the worker (a gevent worker runs nothing else meanwhile: every launch
in flight waits). Each row also gives the CPU time the server's worker
used per donation while measured (user and system, from the kernel's
count: what the worker spends, whatever else the machine runs meanwhile),
what the control plane's processes used (the API server, etcd and the
controllers: what each app asks of Kubernetes) and what the whole machine
spent busy (the load generator and anything else running too), per
donation: on a machine whose cores every process shares, the rate follows
the sum. ``--profile`` samples jobpulse's worker with py-spy;
``--plane-profile`` takes a CPU profile of the API server in every row
(Go's pprof, from its ``/debug/pprof``), to show what each app asks of it.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Bench,
    arguments,
    cpu_seconds,
    machine_busy_seconds,
    ms,
    percentiles,
    plane_cpu_seconds,
    run_and_report,
)


def run(
    bench: Bench,
    *,
    count: int,
    concurrency: int,
    apps: tuple[str, ...] = ("baseline", "jobpulse"),
    before: Path | None = None,
    profile: Any = None,
    plane_profile: Path | None = None,
    plane_profile_seconds: int = 2,
    gc_pauses: bool = False,
) -> dict[str, Any]:
    """One row per app; with ``before``, a "jobpulse before" row (that checkout's code) ahead of "jobpulse".

    ``gc_pauses``: also count, in each row, the full garbage collections the server made while measured.
    ``plane_profile``: also profile the API server over the first ``plane_profile_seconds`` of each row.
    """
    if before is not None and "jobpulse" in apps:
        at = apps.index("jobpulse")
        apps = (*apps[:at], "jobpulse before", *apps[at:])
    rows = []
    noted = gc_pause_env() if gc_pauses else {}
    for app in apps:
        if app == "baseline":
            served = bench.baseline(**noted)
        else:
            served = bench.jobpulse(checkout=before if app == "jobpulse before" else None, **noted)
        pauses: dict[str, Any] | None = None
        with bench.running(served) as server:
            bench.donations(server, count=2 * concurrency, concurrency=concurrency)  # warm-up
            logged = server.log_path.stat().st_size if server.log_path.exists() else 0
            worker = bench.worker(server)
            cpu_before = cpu_seconds(worker)
            plane_before, machine_before = plane_cpu_seconds(bench.plane), machine_busy_seconds()
            name = {"baseline": "baseline", "jobpulse before": "launches-before"}.get(app, "launches")
            with (
                bench.profiling(server, profile, name) as where,
                bench.plane_profiling(plane_profile, name, plane_profile_seconds) as plane_where,
            ):
                report = bench.donations(server, count=count, concurrency=concurrency)
            cpu = cpu_seconds(worker) - cpu_before
            plane_cpu = plane_cpu_seconds(bench.plane) - plane_before
            machine = machine_busy_seconds() - machine_before
            if gc_pauses:
                with server.log_path.open(encoding="utf-8", errors="replace") as log:
                    log.seek(logged)
                    pauses = gc_pauses_in(log.read())
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
                **percentiles(latencies, 50, 90, 99),
                "max": max(latencies, default=float("nan")),
                "worker_cpu_per_launch": cpu / max(len(results), 1),
                "plane_cpu_per_launch": plane_cpu / max(len(results), 1),
                "machine_cpu_per_launch": machine / max(len(results), 1),
                "profile": where.summary,
                **({"plane_profile": plane_where.summary} if plane_profile is not None else {}),
                **({"gc_pauses": pauses} if pauses is not None else {}),
            }
        )
    return {"measure": "launches", "rows": rows}


GC_PAUSES_SITE = Path(__file__).resolve().parent / "gc_pauses"
_GC_PAUSE = re.compile(r"^bench-gc-pause pid=\d+ ms=([\d.]+)", re.MULTILINE)


def gc_pause_env() -> dict[str, str]:
    """The environment that makes a server note its full garbage collections (``gc_pauses/sitecustomize.py``)."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(GC_PAUSES_SITE), os.environ.get("PYTHONPATH")) if p)}


def gc_pauses_in(log: str) -> dict[str, Any]:
    """The full collections noted in a server's log: how many, the longest and the total pause (seconds)."""
    pauses = [float(ms) / 1000 for ms in _GC_PAUSE.findall(log)]
    return {"count": len(pauses), "max": max(pauses, default=0.0), "total": sum(pauses)}


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
            "max ms": ms(row["max"]) if "max" in row else "",
            "worker CPU ms/launch": ms(row["worker_cpu_per_launch"]) if "worker_cpu_per_launch" in row else "",
            "control plane CPU ms/launch": ms(row["plane_cpu_per_launch"]) if "plane_cpu_per_launch" in row else "",
            "machine CPU ms/launch": ms(row["machine_cpu_per_launch"]) if "machine_cpu_per_launch" in row else "",
            **(
                {"full GCs": row["gc_pauses"]["count"], "longest GC ms": ms(row["gc_pauses"]["max"])}
                if "gc_pauses" in row
                else {}
            ),
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
    parser.add_argument(
        "--plane-profile",
        type=Path,
        help="profile the API server (Go pprof, CPU) at the start of each row; the profiles go here",
    )
    parser.add_argument(
        "--plane-profile-seconds",
        type=int,
        default=2,
        help="how long each row's API server profile lasts (keep it under the row's own time)",
    )
    parser.add_argument(
        "--gc-pauses", action="store_true", help="count each server's full garbage collections and their pauses"
    )
    args: argparse.Namespace = parser.parse_args(argv)
    run_and_report(
        args,
        "Launches through one worker: donations per second, with the Jobs created",
        lambda bench: run(
            bench,
            count=args.count,
            concurrency=args.concurrency,
            before=args.before,
            profile=args.profile,
            plane_profile=args.plane_profile,
            plane_profile_seconds=args.plane_profile_seconds,
            gc_pauses=args.gc_pauses,
        ),
        table,
    )


if __name__ == "__main__":
    main()
