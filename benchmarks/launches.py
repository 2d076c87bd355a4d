"""Measure 4: launch throughput and latency, donations per second through one worker, Jobs really created.

    python -m benchmarks.launches [--count 500] [--concurrency 8] [--before CHECKOUT] [--blocked-ms 10]

A load-generator process posts ``--count`` donations to ``POST /api/donations``,
``--concurrency`` at a time, after a warm-up of ``2 * concurrency`` that is not
counted. Every accepted donation must have its Job in the API server; the
benchmark lists them and says how many it found. Baseline: a handler that
renders the same Job and creates it, with no run store, idempotency or limits.
``--before`` adds "jobpulse before": the code of another checkout (e.g. a
``git worktree`` of the commit before a change), under the same settings, in
the same run. ``--blocked-ms`` looks at the tail: gevent's monitor thread
watches jobpulse's event loop, and each time one greenlet held it for a whole
period of that many milliseconds (every launch in flight waited) the stack it
was blocked in is noted; the rows count those periods and name the innermost
frames (the monitor costs some throughput: a diagnostic run, not a
before/after one).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
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
    blocked_ms: float | None = None,
) -> dict[str, Any]:
    """One row per app; with ``before``, a "jobpulse before" row (that checkout's code) ahead of "jobpulse".

    ``blocked_ms``: also count, in jobpulse's rows, the times its event loop was held that long by one greenlet.
    """
    if before is not None and "jobpulse" in apps:
        at = apps.index("jobpulse")
        apps = (*apps[:at], "jobpulse before", *apps[at:])
    rows = []
    monitor = {} if blocked_ms is None else blocking_monitor(blocked_ms)
    for app in apps:
        if app == "baseline":
            served = bench.serve(app)
        else:
            served = bench.jobpulse(checkout=before if app == "jobpulse before" else None, **monitor)
        blocked: dict[str, Any] | None = None
        with bench.running(served) as server:
            bench.donations(server, count=2 * concurrency, concurrency=concurrency)  # warm-up
            logged = server.log_path.stat().st_size if server.log_path.exists() else 0
            with bench.profiling(
                server, profile, "launches-before" if app == "jobpulse before" else "launches"
            ) as where:
                report = bench.donations(server, count=count, concurrency=concurrency)
            if monitor:
                with server.log_path.open(encoding="utf-8", errors="replace") as log:
                    log.seek(logged)
                    blocked = blocked_periods(log.read())
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
                "profile": where.summary,
                **({"blocked": blocked} if blocked is not None else {}),
            }
        )
    return {"measure": "launches", "rows": rows, **({"blocked_ms": blocked_ms} if blocked_ms is not None else {})}


def blocking_monitor(blocked_ms: float) -> dict[str, str]:
    """The environment that starts gevent's monitor thread, reporting a loop held for ``blocked_ms``."""
    return {"GEVENT_MONITOR_THREAD_ENABLE": "true", "GEVENT_MAX_BLOCKING_TIME": str(blocked_ms / 1000)}


_BLOCKED_STACK = re.compile(r"Blocked Stack \(for thread id [^)]*\):\n(.*?)\nInfo:", re.DOTALL)
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def blocked_periods(log: str, *, top: int = 8) -> dict[str, Any]:
    """gevent's blocking reports in a server log: how many, and the innermost frames they were blocked in.

    Each report names the stack the loop was in when the monitor looked; a frame of ours (``webapp/``) is
    named with the innermost frame, so "where in jobpulse" and "in what" read together.
    """
    places: Counter[str] = Counter()
    for stack in _BLOCKED_STACK.findall(log):
        frames = [(path, line, name) for path, line, name in _FRAME.findall(stack) if "gevent/_monitor" not in path]
        if not frames:
            continue
        ours = [f for f in frames if "/webapp/" in f[0]]
        innermost = _frame_name(frames[-1])
        places[innermost if not ours or ours[-1] == frames[-1] else f"{_frame_name(ours[-1])} > {innermost}"] += 1
    return {"reports": sum(places.values()), "where": places.most_common(top)}


def _frame_name(frame: tuple[str, str, str]) -> str:
    path, line, name = frame
    parts = Path(path).parts
    short = "/".join(parts[parts.index("webapp") :]) if "webapp" in parts else "/".join(parts[-2:])
    return f"{name} ({short}:{line})"


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
            **({"loop blocked": row["blocked"]["reports"]} if "blocked" in row else {}),
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
        "--blocked-ms",
        type=float,
        help="note each time jobpulse's event loop is held this long by one greenlet (gevent's monitor thread)",
    )
    args: argparse.Namespace = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    with session(args) as bench:
        results.update(
            run(
                bench,
                count=args.count,
                concurrency=args.concurrency,
                before=args.before,
                profile=args.profile,
                blocked_ms=args.blocked_ms,
            )
        )
    finish(args, "Launches through one worker: donations per second, with the Jobs created", results, table(results))


if __name__ == "__main__":
    main()
