"""Measure 2: a status change in the API server → the message at the client, with 1,000 open streams.

    python -m benchmarks.latency [--streams 1000] [--changes 12] [--apps baseline,seed,jobpulse] [--accept-cap 120]
                                 [--before CHECKOUT]

One running Job, ``--streams`` streams on it (SSE, then WebSocket, each on a
fresh server), and ``--changes`` changes written to the Job's status in the
API server, about 2.5 s apart. Each latency is from the moment the benchmark
sends the status write to the moment a load generator reads the message, so
it includes the API server's write and watch delivery. Baselines: the same,
served by polling every 2 s per stream (``baseline``), and by the seed plan's
own example (``seed``: FastAPI/uvicorn, a blocking read of the Job every 2 s
inside each WebSocket's async handler; WebSocket only).

Each row also says how long the server took to accept the streams (all of
them, from the load generator's start to every stream's first status), how
long a new connection then waits for its first status (``--probes`` single
connections, one after the other, while the streams are held), and the API
requests a second the server made while the changes were measured. The seed
accepts connections so slowly that ``--accept-cap`` (seconds) bounds its
accept phase: it opens ``--accept-batch`` streams at a time until the cap,
and the row reports how many it accepted, at what rate, and measures the
changes on those.

Issue #15's target 1 is read per row as "after the watch" (each delivery
less the moment the benchmark's own watch saw its change) and cut in two:
the worker's own fan-out (``jobpulse_fan_out_seconds``: from its first
stream's write to its last, mean per change; empty for a checkout without
that metric) and the spread the load generators saw (per change, from the
first stream reading it to the last, median over the changes). With
``--clients`` the streams are spread over that many load-generator
processes, so the reading is shared out too.

``--before`` adds "jobpulse before": the code of another checkout (e.g. a
``git worktree`` of the commit before a change), under the same settings, in
the same run, just ahead of "jobpulse": before and after on the same machine
state.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import requests
import websocket

from benchmarks.common import (
    Bench,
    Changes,
    Streams,
    arguments,
    histogram_totals,
    ms,
    percentiles,
    run_and_report,
)
from tests.live.server import LiveServer


def first_status_wait(server: LiveServer, *, transport: str, job: str, timeout: float = 120.0) -> float:
    """Seconds from opening one new stream to reading its first status (a message with ``active``)."""
    started = time.monotonic()
    if transport == "ws":
        connection = websocket.create_connection(f"{server.ws_url}/ws/task-status/{job}", timeout=timeout)
        try:
            while '"active"' not in (message := connection.recv()):
                if not message:
                    raise RuntimeError(f"{server.name}: the new WebSocket closed before a status")
            return time.monotonic() - started
        finally:
            connection.close()
    with requests.get(f"{server.url}/sse/task-status/{job}", stream=True, timeout=timeout) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(b"data:") and b'"active"' in line:
                return time.monotonic() - started
    raise RuntimeError(f"{server.name}: the new SSE stream ended before a status")


@dataclasses.dataclass
class Accepted:
    """The streams a server accepted: held by one or more load generators, and how long that took."""

    loads: list[Streams]
    count: int
    seconds: float
    capped: bool


def accept(
    bench: Bench,
    server: LiveServer,
    *,
    transport: str,
    job: str,
    count: int,
    clients: int,
    cap: float | None,
    batch: int,
) -> Accepted:
    """Open ``count`` streams; with a ``cap``, ``batch`` at a time until the cap (no batch that would overrun it)."""
    if cap is None:
        load = bench.streams(server, transport=transport, jobs=[job], count=count, processes=clients)
        return Accepted(loads=[load], count=count, seconds=load.opened_seconds, capped=False)
    loads: list[Streams] = []
    opened, started, last_batch = 0, time.monotonic(), 0.0
    while opened < count:
        left = cap - (time.monotonic() - started)
        if left <= last_batch:  # the next batch would not fit: stop before, leaving no half-open batch behind
            break
        size = min(batch, count - opened)
        try:
            load = bench.streams(server, transport=transport, jobs=[job], count=size, timeout=left)
        except RuntimeError:  # the cap passed mid-batch: that batch's streams are closed, not counted
            break
        loads.append(load)
        opened += size
        last_batch = load.opened_seconds
    if not loads:
        raise RuntimeError(f"{server.name}: not one batch of {batch} streams accepted within {cap} s")
    return Accepted(loads=loads, count=opened, seconds=time.monotonic() - started, capped=opened < count)


def merged(bench: Bench, done: Changes, others: list[Streams]) -> Changes:
    """``done`` (measured on the first load) with the arrivals of the other loads, held over the same changes."""
    report = {**done.report, "arrivals": {m: list(t) for m, t in done.report["arrivals"].items()}}
    for load in others:
        more = bench.release(load)
        report["closed"] += more["closed"]
        report["errors"] = [*report["errors"], *more["errors"]]
        for marker, times in more["arrivals"].items():
            report["arrivals"].setdefault(marker, []).extend(times)
    return dataclasses.replace(done, streams=done.streams + sum(load.count for load in others), report=report)


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
    probes: int = 0,
    accept_cap: float | None = None,
    accept_batch: int = 100,
    before: Path | None = None,
) -> dict[str, Any]:
    """One row per app and transport; with ``before``, "jobpulse before" rows (that checkout) ahead of "jobpulse"."""
    if before is not None and "jobpulse" in apps:
        at = apps.index("jobpulse")
        apps = (*apps[:at], "jobpulse before", *apps[at:])
    job = bench.running_job()
    rows = []
    for app in apps:
        for transport in transports:
            if app == "seed" and transport != "ws":
                continue  # the seed's example served WebSocket only
            served = bench.jobpulse(checkout=before) if app == "jobpulse before" else bench.serve(app)
            with bench.running(served) as server:
                held = accept(
                    bench,
                    server,
                    transport=transport,
                    job=job,
                    count=streams,
                    clients=clients,
                    cap=accept_cap if app == "seed" else None,
                    batch=accept_batch,
                )
                waits = [first_status_wait(server, transport=transport, job=job) for _ in range(probes)]
                seen_before = bench.propagation(server)
                fanned_before = histogram_totals(server, "jobpulse_fan_out_seconds")
                requests_before, window_start = bench.app_requests(), time.monotonic()
                name = f"latency-{transport}-before" if app == "jobpulse before" else f"latency-{transport}"
                with bench.profiling(server, profile, name) as where:
                    done = bench.changes(
                        held.loads[0], job, worker=bench.worker(server), count=changes, interval=interval
                    )
                requests_made, window = bench.app_requests() - requests_before, time.monotonic() - window_start
                done = merged(bench, done, held.loads[1:])
                after = bench.propagation(server)
                fanned_after = histogram_totals(server, "jobpulse_fan_out_seconds")
            fan_outs = fanned_after[1] - fanned_before[1]
            inside = (
                (after[0] - seen_before[0]) / (after[1] - seen_before[1]) if after[1] > seen_before[1] else float("nan")
            )
            latencies = done.latencies()
            gaps = after_the_watch(done)
            changed = per_change(done)
            spreads = [c["last"] - c["first"] for c in changed if c["last"] == c["last"]]
            rows.append(
                {
                    "app": app,
                    "transport": transport,
                    "streams": done.streams,
                    "asked_streams": streams,
                    "accept_seconds": held.seconds,
                    "accept_per_second": held.count / held.seconds if held.seconds > 0 else float("nan"),
                    "accept_capped": held.capped,
                    "new_connection_waits": waits,
                    "api_requests_per_second": requests_made / window,
                    "changes": changes,
                    "delivered": done.delivered,
                    "expected": done.expected,
                    "lost_streams": done.report["closed"],
                    "api_p50": percentiles(done.api_latencies(), 50)["p50"],
                    "inside_mean": inside,
                    "fan_out_mean": (fanned_after[0] - fanned_before[0]) / fan_outs if fan_outs > 0 else float("nan"),
                    "fan_outs": fan_outs,
                    "clients": clients,
                    "client_spread_p50": statistics.median(spreads) if spreads else float("nan"),
                    "cpu_per_delivery": done.worker_cpu_seconds / max(done.delivered, 1),
                    "mean": statistics.fmean(latencies) if latencies else float("nan"),
                    "max": max(latencies, default=float("nan")),
                    **percentiles(latencies, 50, 95, 99),
                    **{f"gap_{name}": value for name, value in percentiles(gaps, 50, 99).items()},
                    "per_change": changed,
                    "profile": where.summary,
                }
            )
    return {"measure": "latency", "rows": rows}


def after_the_watch(done: Changes) -> list[float]:
    """Seconds from each change becoming visible to the benchmark's own watch to each stream reading it.

    Issue #15's "near the floor": the API server's part taken out, change by change.
    """
    arrivals = done.report["arrivals"]
    return [
        at - seen for marker, seen in done.api_seen.items() if marker in done.sent for at in arrivals.get(marker, ())
    ]


def per_change(done: Changes) -> list[dict[str, float]]:
    """For each change, seconds from its write: the watch saw it, the first, median and last stream read it."""
    rows = []
    for marker, sent in done.sent.items():
        times = sorted(at - sent for at in done.report["arrivals"].get(marker, ()))
        seen = done.api_seen.get(marker)
        rows.append(
            {
                "api": seen - sent if seen is not None else float("nan"),
                "first": times[0] if times else float("nan"),
                "p50": statistics.median(times) if times else float("nan"),
                "last": times[-1] if times else float("nan"),
            }
        )
    return rows


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    baseline_mean = {r["transport"]: r["mean"] for r in results["rows"] if r["app"] == "baseline"}
    seed_mean = {r["transport"]: r["mean"] for r in results["rows"] if r["app"] == "seed"}
    for row in results["rows"]:
        ratios = []
        if row["app"] == "jobpulse" and row["transport"] in baseline_mean:
            ratios.append(f"{baseline_mean[row['transport']] / row['mean']:.0f} times faster than polling")
        if row["app"] == "jobpulse" and row["transport"] in seed_mean:
            ratios.append(f"{seed_mean[row['transport']] / row['mean']:.0f} times faster than the seed")
        waits = row.get("new_connection_waits") or []
        accepted = ""
        if "accept_seconds" in row:
            accepted = f"{row['streams']} in {row['accept_seconds']:.1f} s ({row['accept_per_second']:.0f}/s)"
            accepted += f", capped (asked {row['asked_streams']})" if row["accept_capped"] else ""
        out.append(
            {
                "app": row["app"],
                "transport": row["transport"],
                "streams": row["streams"],
                "accepted": accepted,
                "new connection's wait, ms (median / max)": (
                    f"{ms(statistics.median(waits))} / {ms(max(waits))}" if waits else ""
                ),
                "API req/s": round(row["api_requests_per_second"], 1) if "api_requests_per_second" in row else "",
                "delivered": f"{row['delivered']}/{row['expected']}",
                "API server p50 ms": ms(row["api_p50"]),
                "in jobpulse, mean ms": ms(row["inside_mean"]) if row["app"].startswith("jobpulse") else "",
                "p50 ms": ms(row["p50"]),
                "after the watch, p50 / p99 ms": (
                    f"{ms(row['gap_p50'])} / {ms(row['gap_p99'])}" if "gap_p50" in row else ""
                ),
                "worker's fan-out, mean ms": (
                    ms(row["fan_out_mean"]) if row["app"].startswith("jobpulse") and "fan_out_mean" in row else ""
                ),
                "first → last read, median ms": ms(row["client_spread_p50"]) if "client_spread_p50" in row else "",
                "p95 ms": ms(row["p95"]),
                "p99 ms": ms(row["p99"]),
                "mean ms": ms(row["mean"]),
                "max ms": ms(row["max"]),
                "worker CPU µs per message": round(row["cpu_per_delivery"] * 1e6, 1),
                "vs baselines (mean)": ", ".join(ratios),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=12)
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes to spread the streams over")
    parser.add_argument("--apps", default="baseline,seed,jobpulse", help="servers to measure, in order")
    parser.add_argument("--transports", default="sse,ws", help="sse, ws or both (the seed serves ws only)")
    parser.add_argument("--probes", type=int, default=3, help="new connections timed while the streams are held")
    parser.add_argument(
        "--accept-cap", type=float, default=120.0, help="seconds the seed may take to accept its streams (0: no cap)"
    )
    parser.add_argument("--accept-batch", type=int, default=100, help="streams opened at a time under --accept-cap")
    parser.add_argument(
        "--before", type=Path, help='also serve this checkout\'s jobpulse ("jobpulse before"), same settings, same run'
    )
    args: argparse.Namespace = parser.parse_args(argv)
    run_and_report(
        args,
        "Status change in the API server → message at the client",
        lambda bench: run(
            bench,
            streams=args.streams,
            changes=args.changes,
            apps=tuple(args.apps.split(",")),
            transports=tuple(args.transports.split(",")),
            clients=args.clients,
            profile=args.profile,
            probes=args.probes,
            accept_cap=args.accept_cap or None,
            accept_batch=args.accept_batch,
            before=args.before,
        ),
        table,
    )


if __name__ == "__main__":
    main()
