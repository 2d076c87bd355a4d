"""Progress reports: a task reporting 10 times a second to 1,000 open streams, and what that costs.

    python -m benchmarks.progress [--streams 1000] [--duration 20] [--rate 10]

One Job launched through jobpulse and marked running, ``--streams`` streams
on it (half SSE, half WebSocket), and two windows of ``--duration`` seconds
on the same server, each on freshly opened streams:

- **quiet**: status changes written into the Job in the API server about
  ``--interval`` s apart, as :mod:`benchmarks.latency` makes them;
- **progress**: the same, while the benchmark plays the Job's task (KWOK
  runs no code): it reads ``JOBPULSE_PROGRESS_URL`` and
  ``JOBPULSE_PROGRESS_TOKEN`` from the Job's pod template and sends a
  report there ``--rate`` times a second, each with a new ``done``.

jobpulse writes at most 4 progress changes a second per run, the latest
report winning (:mod:`webapp.progress_reports`), so only some reports reach
the streams; the last one always must. Figures, per window: the API requests
jobpulse's ServiceAccount made (counted as :mod:`benchmarks.api_requests`
counts them), the change → client latency of :mod:`benchmarks.latency`, the
worker's CPU per message delivered; for the progress window also the latency
from a report's ``POST`` to each stream reading a status with its ``done``
(for the reports that were delivered), how many reports a second reached the
streams, and whether the last one reached every stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import threading
import time
from collections import Counter
from typing import Any

import requests

from benchmarks.common import (
    ApiWatch,
    Bench,
    Streams,
    arguments,
    cpu_seconds,
    ms,
    percentiles,
    run_and_report,
)
from tests.live.server import LiveServer
from webapp.jobspecs import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV, container_env

SETTLE_SECONDS = 1.0
"""After a window, how long the streams get to deliver its last change and its last (held) report."""


class TaskReports:
    """The Job's task, played by the benchmark: ``rate`` progress reports a second for ``duration`` s, from a thread.

    Report ``k`` has ``done = k`` (``total`` unknown), so each is its own
    marker; it is due ``k / rate`` s after the start and sent then (or at once,
    if the one before took longer), on one kept-alive connection.
    """

    def __init__(self, url: str, token: str, *, rate: float, duration: float) -> None:
        self._url = url
        self._rate = rate
        self._count = max(1, round(rate * duration))
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._report, name="task-reports", daemon=True)
        self.sent: dict[int, float] = {}
        """When each report was sent, by its ``done``."""
        self.answers: Counter[int] = Counter()
        """HTTP status codes of the answers (202: taken)."""
        self.round_trips: list[float] = []
        """Seconds from sending each report to its answer: how long the task waits for jobpulse."""

    @property
    def seconds(self) -> float:
        """How long the task reports for, as planned: one interval per report."""
        return self._count / self._rate

    @property
    def pace(self) -> float:
        """Reports a second, as sent (the plan, unless answers came back slower than ``rate``)."""
        times = sorted(self.sent.values())
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=60)
        self._session.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def _report(self) -> None:
        started = time.monotonic()
        for done in range(1, self._count + 1):
            if self._stopping.wait(max(0.0, started + (done - 1) / self._rate - time.monotonic())):
                break
            self.sent[done] = sent = time.monotonic()
            try:
                answer = self._session.post(self._url, json={"done": done, "text": f"step {done}"}, timeout=30)
                self.answers[answer.status_code] += 1
            except requests.RequestException:
                self.answers[0] += 1
            self.round_trips.append(time.monotonic() - sent)


def task_env(bench: Bench, job_name: str) -> tuple[str, str]:
    """The progress URL and token jobpulse rendered into the Job's pod template, as read from the API server."""
    [job] = [j for j in bench.jobs() if j["metadata"]["name"] == job_name]
    env = container_env(job)
    return env[PROGRESS_URL_ENV], env[PROGRESS_TOKEN_ENV]


@dataclasses.dataclass
class Window:
    """What one window measured: status changes and progress reports sent, what arrived, what it cost."""

    label: str
    streams: int
    seconds: float
    app_requests: float
    worker_cpu_seconds: float
    changes_sent: dict[int, float]
    api_seen: dict[int, float]
    report: dict[str, Any]
    reports: TaskReports | None = None


def measure(
    bench: Bench,
    server: LiveServer,
    load: Streams,
    job_name: str,
    *,
    label: str,
    duration: float,
    interval: float,
    first_marker: int,
    reports: TaskReports | None,
) -> Window:
    """Make status changes for ``duration`` s (with ``reports`` running, if any); then release ``load``."""
    worker = bench.worker(server)
    sent: dict[int, float] = {}
    marker = first_marker
    requests_before, cpu_before = bench.app_requests(), cpu_seconds(worker)
    started = time.monotonic()
    try:
        with ApiWatch(bench.plane, bench.namespace, job_name) as api_watch:
            if reports is not None:
                reports.start()
            while time.monotonic() < started + duration:
                sent[marker] = bench.set_marker(job_name, marker)
                marker += 1
                time.sleep(interval * random.uniform(1.0, 1.2))  # paced on purpose, out of step with the reports
            if reports is not None:
                reports.join()
            time.sleep(SETTLE_SECONDS)  # the last change and the last held report reach the streams
    except BaseException:
        if reports is not None:
            reports.stop()
        raise
    seconds = time.monotonic() - started
    cpu = cpu_seconds(worker) - cpu_before
    app_requests = bench.app_requests() - requests_before
    return Window(
        label=label,
        streams=load.count,
        seconds=seconds,
        app_requests=app_requests,
        worker_cpu_seconds=cpu,
        changes_sent=sent,
        api_seen=api_watch.seen,
        report=bench.release(load),
        reports=reports,
    )


def figures(window: Window) -> dict[str, Any]:
    """One row of results from a window."""
    arrivals, progress = window.report["arrivals"], window.report["progress"]
    change_latencies = [at - sent for m, sent in window.changes_sent.items() for at in arrivals.get(m, ())]
    api_latencies = [window.api_seen[m] - sent for m, sent in window.changes_sent.items() if m in window.api_seen]
    changes_delivered = len(change_latencies)
    row: dict[str, Any] = {
        "window": window.label,
        "streams": window.streams,
        "seconds": window.seconds,
        "lost_streams": window.report["closed"],
        "errors": window.report["errors"],
        "app_requests": window.app_requests,
        "app_requests_per_second": window.app_requests / window.seconds,
        "changes": len(window.changes_sent),
        "changes_delivered": changes_delivered,
        "changes_expected": window.streams * len(window.changes_sent),
        "api_p50": percentiles(api_latencies, 50)["p50"],
        "change_mean": statistics.fmean(change_latencies) if change_latencies else float("nan"),
        "change_max": max(change_latencies, default=float("nan")),
        **{f"change_{k}": v for k, v in percentiles(change_latencies, 50, 95, 99).items()},
        "cpu_seconds": window.worker_cpu_seconds,
        "cpu_share": window.worker_cpu_seconds / window.seconds,
    }
    messages = changes_delivered
    reports = window.reports
    if reports is not None:
        sent = reports.sent
        delivered = sorted(done for done in sent if progress.get(done))
        latencies = [at - sent[done] for done in delivered for at in progress[done]]
        last = max(sent, default=0)
        last_latencies = [at - sent[last] for at in progress.get(last, ())]
        messages += len(latencies)
        row.update(
            {
                "reports": len(sent),
                "reports_per_second": reports.pace,
                "reports_taken": reports.answers.get(202, 0),
                "answers": {str(code): count for code, count in sorted(reports.answers.items())},
                **{f"post_{k}": v for k, v in percentiles(reports.round_trips, 50, 99).items()},
                "reports_delivered": len(delivered),
                "reports_delivered_per_second": len(delivered) / reports.seconds,
                "reports_to_every_stream": sum(1 for done in delivered if len(progress[done]) >= window.streams),
                "progress_messages": len(latencies),
                "last_report": last,
                "last_report_streams": len(last_latencies),
                "last_report_max": max(last_latencies, default=float("nan")),
                "progress_mean": statistics.fmean(latencies) if latencies else float("nan"),
                "progress_max": max(latencies, default=float("nan")),
                **{f"progress_{k}": v for k, v in percentiles(latencies, 50, 95, 99).items()},
            }
        )
    row["messages"] = messages
    row["cpu_per_message"] = window.worker_cpu_seconds / max(messages, 1)
    return row


def run(
    bench: Bench,
    *,
    streams: int,
    duration: float,
    rate: float = 10.0,
    interval: float = 2.5,
    clients: int = 1,
    profile: Any = None,
) -> dict[str, Any]:
    rows = []
    with bench.running(bench.jobpulse()) as server:  # the launch's address is the progress URL's: this server
        [job] = bench.donate(server, 1)
        bench.set_marker(job, 1)
        url, token = task_env(bench, job)
        for number, label in enumerate(("quiet", "progress")):
            reports = TaskReports(url, token, rate=rate, duration=duration) if label == "progress" else None
            load = bench.streams(server, transport="mixed", jobs=[job], count=streams, processes=clients)
            with bench.profiling(server, profile, f"progress-{label}") as where:
                window = measure(
                    bench,
                    server,
                    load,
                    job,
                    label=label,
                    duration=duration,
                    interval=interval,
                    first_marker=10_000 * (number + 1),
                    reports=reports,
                )
            rows.append({**figures(window), "profile": where.summary})
    return {"measure": "progress", "rate": rate, "duration_seconds": duration, "interval": interval, "rows": rows}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in results["rows"]:
        progress = "reports" in row
        out.append(
            {
                "window": row["window"],
                "streams": row["streams"],
                "jobpulse API req/s": f"{row['app_requests_per_second']:.2f}",
                "changes delivered": f"{row['changes_delivered']}/{row['changes_expected']}",
                "change p50 ms": ms(row["change_p50"]),
                "change p95 ms": ms(row["change_p95"]),
                "change p99 ms": ms(row["change_p99"]),
                "reports sent /s": f"{row['reports_per_second']:.1f}" if progress else "",
                "reports reaching streams /s": f"{row['reports_delivered_per_second']:.1f}" if progress else "",
                "last report reached": f"{row['last_report_streams']}/{row['streams']}" if progress else "",
                "report p50 ms": ms(row["progress_p50"]) if progress else "",
                "report p95 ms": ms(row["progress_p95"]) if progress else "",
                "report p99 ms": ms(row["progress_p99"]) if progress else "",
                "worker CPU": f"{100 * row['cpu_share']:.0f}%",
                "worker CPU µs per message": round(row["cpu_per_message"] * 1e6, 1),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each window (quiet, progress)")
    parser.add_argument("--rate", type=float, default=10.0, help="progress reports a second, from the task")
    parser.add_argument("--interval", type=float, default=2.5, help="seconds between status changes (x 1 to 1.2)")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes per transport")
    args: argparse.Namespace = parser.parse_args(argv)
    if not (0 < args.duration <= 600 and 0 < args.rate <= 100 and 0 < args.streams <= 20_000):
        parser.error("bounded on purpose: 0 < --duration <= 600, 0 < --rate <= 100, 0 < --streams <= 20000")
    run_and_report(
        args,
        "A task reporting progress to N open streams",
        lambda bench: run(
            bench,
            streams=args.streams,
            duration=args.duration,
            rate=args.rate,
            interval=args.interval,
            clients=args.clients,
            profile=args.profile,
        ),
        table,
    )


if __name__ == "__main__":
    main()
