"""The benchmarks measure what they claim: each one, at a tiny N, against the test control plane.

No figure here is compared with a target (the benchmarks are their own
commands); these tests check that the counts and arrivals the figures are
made from are real: every change reaches every stream, the API-request count
sees the baseline's polls, every launch has its Job, and every console
holds the last status of every run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import api_requests, consoles, fanout, latency, launches, progress, report, scaleout
from benchmarks.common import PROJECT_ROOT, Bench, machine, percentiles, summarize_profile


@pytest.fixture(scope="module")
def bench(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with Bench.open(cluster, tmp_path_factory.mktemp("bench")) as opened:
        yield opened


def test_api_requests_counts_the_baselines_polls_and_none_from_jobpulse(bench: Bench) -> None:
    results = api_requests.run(bench, counts=[6], window=4.0, jobs=2)
    [row] = results["rows"]
    # 6 streams polling every 2 s: about 3 requests a second (the window's edges cut a poll or two)
    assert 1.5 <= row["baseline"] <= 4.5, row
    assert row["jobpulse"] * 4.0 < 1, row  # not one request while its streams were open
    assert row["baseline_lost_streams"] == row["jobpulse_lost_streams"] == 0
    assert results["idle"]["jobpulse"] * 4.0 < 1
    # the seed's 6 WebSockets poll every 2 s too: its requests grow with N as the baseline's do
    assert 1.5 <= row["seed"] <= 4.5, row
    assert row["seed_lost_streams"] == 0, row
    assert results["idle"]["seed"] * 4.0 < 1  # no stream, no poll
    [_idle, printed] = api_requests.table(json.loads(json.dumps(results)))
    assert printed["seed (WS only) req/s"].startswith(f"{row['seed']:.2f}"), printed


def test_latency_sees_every_change_arrive_at_every_stream(bench: Bench) -> None:
    results = latency.run(bench, streams=3, changes=2, interval=2.2)
    assert [(r["app"], r["transport"]) for r in results["rows"]] == [
        ("baseline", "sse"),
        ("baseline", "ws"),
        ("jobpulse", "sse"),
        ("jobpulse", "ws"),
    ]
    for row in results["rows"]:
        assert row["delivered"] == row["expected"] == 6, row
        assert 0 < row["p50"] <= row["p99"] <= row["max"] < 2 * 2.2 * 1.2, row  # after the write, before the next


def test_latency_before_and_after_serve_two_checkouts_in_one_run(bench: Bench) -> None:
    results = latency.run(
        bench, streams=2, changes=2, interval=2.2, apps=("jobpulse",), transports=("ws",), before=PROJECT_ROOT
    )
    assert [(r["app"], r["transport"]) for r in results["rows"]] == [("jobpulse before", "ws"), ("jobpulse", "ws")]
    for row in results["rows"]:
        assert row["delivered"] == row["expected"] == 4 and row["lost_streams"] == 0, row
        assert row["inside_mean"] > 0, row  # every message written was counted with its delay
        assert row["gap_p50"] <= row["gap_p99"] < row["p99"], row  # the API server's part taken out
        assert len(row["per_change"]) == 2, row
        for change in row["per_change"]:
            assert change["api"] > 0 and 0 < change["first"] <= change["p50"] <= change["last"], change
    printed = latency.table(json.loads(json.dumps(results, default=str)))
    assert all(line["in jobpulse, mean ms"] != "" for line in printed), printed


def test_latency_splits_after_the_watch_into_the_workers_fan_out_and_the_readers_spread(bench: Bench) -> None:
    results = latency.run(bench, streams=4, changes=2, interval=2.2, apps=("jobpulse",), transports=("sse",), clients=2)
    [row] = results["rows"]
    assert row["delivered"] == row["expected"] == 8 and row["lost_streams"] == 0, row  # over two load generators
    assert row["clients"] == 2, row
    assert row["fan_outs"] >= 2 and row["fan_out_mean"] > 0, row  # each change fanned out, and timed by the worker
    assert row["client_spread_p50"] >= 0, row
    for change in row["per_change"]:
        assert change["last"] - change["first"] >= 0, change
    [printed] = latency.table(json.loads(json.dumps(results, default=str)))
    assert printed["worker's fan-out, mean ms"] != "" and printed["first → last read, median ms"] != "", printed


def test_the_seed_baseline_serves_websockets_and_sits_in_the_latency_table(bench: Bench) -> None:
    # a cap with batches of 2: the seed's streams are opened as the full-size run opens them, then merged
    results = latency.run(
        bench, streams=3, changes=2, interval=2.2, apps=("seed",), probes=1, accept_cap=120.0, accept_batch=2
    )
    [row] = results["rows"]  # WebSocket only: the seed's example served no SSE
    assert (row["app"], row["transport"], row["streams"], row["accept_capped"]) == ("seed", "ws", 3, False), row
    assert row["delivered"] == row["expected"] == 6 and row["lost_streams"] == 0, row
    assert 0 < row["p50"] <= row["p99"] <= row["max"] < 2 * 2.2 * 1.2, row  # after the write, before the next
    assert row["accept_seconds"] > 0 and row["accept_per_second"] > 0, row
    [wait] = row["new_connection_waits"]  # a new client got a status
    assert wait > 0, row
    assert row["api_requests_per_second"] > 0, row  # every stream reads its Job itself
    saved = json.loads(json.dumps(results, default=str))
    [printed] = latency.table(saved)
    assert printed["app"] == "seed" and printed["accepted"].startswith("3 in "), printed


def test_fanout_reaches_every_stream_of_both_transports_and_reads_the_workers_memory(bench: Bench) -> None:
    results = fanout.run(bench, counts=[8], changes=2, interval=0.5, apps=("jobpulse",))
    [row] = results["rows"]
    assert row["delivered"] == row["expected"] == 16, row
    assert 0 < row["p50"] <= row["last_median"] <= row["last_max"], row
    assert row["rss_before"] > 10 * 2**20 and row["rss_after"] > 0, row


def test_fanout_has_a_seed_row_of_websockets_on_a_seed_server(bench: Bench) -> None:
    # changes 2.2 s apart: the seed polls every 2 s, so each change reaches every stream before the next
    results = fanout.run(bench, counts=[4], changes=2, interval=2.2, apps=("seed",), transports=("mixed", "sse"))
    [row] = results["rows"]  # one row per N whatever --transports: the seed served WebSocket only
    assert (row["app"], row["transport"], row["streams"]) == ("seed", "ws", 4), row
    assert row["delivered"] == row["expected"] == 8 and row["lost_streams"] == 0, row
    assert 0 < row["p50"] <= row["last_median"] <= row["last_max"] < 2 * 2.2 * 1.2, row
    assert row["rss_before"] > 10 * 2**20 and row["rss_after"] > 0, row  # uvicorn's one process
    [printed] = fanout.table(json.loads(json.dumps(results)))
    assert (printed["app"], printed["transport"]) == ("seed", "ws"), printed


def test_fanout_measures_each_transport_on_a_server_of_its_own(bench: Bench) -> None:
    results = fanout.run(bench, counts=[4], changes=1, interval=0.5, apps=("jobpulse",), transports=("sse", "ws"))
    assert [(row["transport"], row["streams"]) for row in results["rows"]] == [("sse", 4), ("ws", 4)]
    for row in results["rows"]:
        assert row["delivered"] == row["expected"] == 4 and row["lost_streams"] == 0, row
        assert row["rss_after"] > 0, row
    assert [line["transport"] for line in fanout.table(results)] == ["sse", "ws"]


def test_progress_delivers_some_reports_and_the_last_to_every_stream_without_api_requests(bench: Bench) -> None:
    results = progress.run(bench, streams=10, duration=3.0, rate=10.0, interval=1.0)
    quiet, reporting = results["rows"]
    assert (quiet["window"], reporting["window"]) == ("quiet", "progress")
    for row in (quiet, reporting):
        assert row["lost_streams"] == 0 and row["errors"] == [], row
        assert row["changes"] >= 2 and row["changes_delivered"] == row["changes_expected"], row
        assert 0 < row["change_p50"] <= row["change_p99"] <= row["change_max"] < 2 * 1.2, row
        assert row["app_requests"] == 0, row  # its watches were open before; nothing else, changes or reports
        assert row["messages"] == row["changes_delivered"] + row.get("progress_messages", 0), row
    assert "reports" not in quiet
    assert reporting["cpu_seconds"] > 0, reporting  # the worker's own clock: 30 requests take more than a tick
    # the task's 30 reports were all taken; at most 4 a second (and the first at once) reached the streams
    assert reporting["reports"] == reporting["reports_taken"] == 30, reporting
    assert 2 <= reporting["reports_delivered"] <= 4 * reporting["seconds"] + 1, reporting
    assert reporting["last_report"] == 30 and reporting["last_report_streams"] == 10, reporting
    assert reporting["progress_messages"] >= 10 * reporting["reports_delivered"] - 10, reporting
    assert 0 < reporting["progress_p50"] <= reporting["progress_p99"] <= reporting["progress_max"] < 1.0, reporting


def test_launches_create_a_job_for_every_accepted_donation(
    bench: Bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = launches.run(bench, count=12, concurrency=3, before=PROJECT_ROOT, gc_pauses=True)
    assert [row["app"] for row in results["rows"]] == ["baseline", "jobpulse before", "jobpulse"]
    for row in results["rows"]:
        assert row["accepted"] == row["jobs_created"] == 12, row
        assert row["refused"] == []
        assert row["per_second"] > 0
        assert row["p50"] <= row["p90"] <= row["p99"] <= row["max"], row
        assert row["gc_pauses"]["count"] >= 0 and row["gc_pauses"]["max"] <= row["gc_pauses"]["total"], row
        assert row["worker_cpu_per_launch"] > 0, row  # the worker's own CPU time per donation while measured
        assert row["plane_cpu_per_launch"] > 0, row  # every create is work for the API server and etcd
        assert row["machine_cpu_per_launch"] >= row["worker_cpu_per_launch"], row  # the worker's is part of it

    saved = tmp_path / "launches.json"
    saved.write_text(json.dumps({**results, "machine": machine(), "command": "python -m benchmarks.launches"}))
    report.main([str(saved)])
    table = capsys.readouterr().out
    assert "| baseline | 12 | 3 | 12 | 12 |" in table and "| jobpulse | 12 | 3 | 12 | 12 |" in table
    assert "| jobpulse before | 12 | 3 | 12 | 12 |" in table
    assert "worker CPU ms/launch" in table and "control plane CPU ms/launch" in table
    assert "machine CPU ms/launch" in table


def test_the_plane_profile_is_the_api_servers_own_cpu_profile(bench: Bench, tmp_path: Path) -> None:
    """``--plane-profile``: a pprof CPU profile read from the API server while the block runs, and its summary."""
    with bench.running(bench.baseline()) as server, bench.plane_profiling(tmp_path, "baseline", 1) as profiled:
        bench.donations(server, count=6, concurrency=2)
    taken = (tmp_path / "baseline-apiserver.pb.gz").read_bytes()
    assert taken[:2] == b"\x1f\x8b", "gzip, as pprof writes it"
    assert shutil.which("go"), "Go builds the control plane; `go tool pprof` reads its profiles"
    assert profiled.summary is not None and "kube-apiserver" in profiled.summary, profiled.summary


def test_launches_gc_pauses_are_noted_by_a_real_python_process_and_counted() -> None:
    """The servers' sitecustomize notes each full collection on stderr; the log's lines are counted."""
    script = "import gc, sys\nfor _ in range(3):\n    gc.collect()\ngc.collect(0)\nprint('measured', file=sys.stderr)\n"
    env = {**os.environ, **launches.gc_pause_env()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    measured = done.stderr.split("measured\n")[0]  # (the interpreter's own collection at exit comes after)
    pauses = launches.gc_pauses_in(measured)
    assert pauses["count"] == 3, done.stderr  # three full collections; the young one is not noted
    assert 0 <= pauses["max"] <= pauses["total"], pauses
    assert launches.gc_pauses_in("")["count"] == 0


def test_a_benchmark_command_runs_on_the_given_control_plane_then_prints_and_saves_its_results(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What every benchmark's command shares (``run_and_report``): one run on ``--cluster-dir``, a table, the JSON."""
    saved = tmp_path / "api-requests.json"
    argv = ["--cluster-dir", cluster.workdir, "--workdir", str(tmp_path / "work"), "--json", str(saved)]
    api_requests.main([*argv, "--counts", "2", "--window", "0.5", "--apps", "jobpulse"])
    results = json.loads(saved.read_text())
    assert [row["streams"] for row in results["rows"]] == [2]
    assert results["machine"]["cores"] >= 1 and results["command"].startswith("python -m ")
    printed = capsys.readouterr().out
    assert "## Kubernetes API requests per second caused by N open streams" in printed
    assert f"command: `{results['command']}`" in printed and "| open streams |" in printed


def test_percentiles_and_profile_summaries(tmp_path: Any) -> None:
    assert percentiles([1.0, 2.0, 3.0, 4.0, 5.0], 50, 99) == {"p50": 3.0, "p99": pytest.approx(4.96)}
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("main (a.py:1);fan_out (b.py:2) 30\nmain (a.py:1);run (gevent/hub.py:647) 10\n")
    summary = summarize_profile(stacks)
    assert summary.startswith("40 samples, 30 not idle")
    assert "75.0%  fan_out (b.py:2)" in summary


def test_consoles_see_every_runs_last_status_and_cost_the_api_server_nothing(bench: Bench) -> None:
    results = consoles.run(bench, consoles=2, rate=5.0, duration=2.0, run_for=0.2)
    assert results["player_errors"] == [], results["player_errors"]
    quiet, watched = results["windows"]
    assert (quiet["consoles"], watched["consoles"]) == (0, 2)
    for window in (quiet, watched):
        assert window["launched"] == window["accepted"] == window["finished"] == 10, window
        assert window["refused"] == [], window
        assert window["worker_cpu_seconds"] > 0 and window["app_requests"] > 0, window
    assert quiet["console_rows"] == []
    assert [r["transport"] for r in watched["console_rows"]] == ["sse", "ws"]
    for row in watched["console_rows"]:
        assert row["closed"] is None and row["lists"] == 1, row
        assert row["runs_current"] == 10 and row["runs_missed"] == 0, row  # every run's last seq, on both
        assert row["messages"] >= 1 + 10 and row["per_second"] > 0, row
        assert 0 <= row["delay_p50"] <= row["delay_p99"] <= row["delay_max"], row
    # the same API requests per launch with consoles as without: they cost the API server nothing
    assert results["app_requests_per_launch"][0] == results["app_requests_per_launch"][1], results
    assert results["extra_app_requests_per_console"] == 0, results


def test_scaleout_delivers_every_change_through_every_process_and_counts_one_watch_each(bench: Bench) -> None:
    results = scaleout.run(
        bench,
        configs=[(1, 2), (2, 1)],
        streams=8,
        jobs=2,
        changes=4,
        rate=10.0,
        watches=[1, 3],
        watch_changes=3,
        idle=0.5,
        project=[(4, 2)],
    )
    for row in results["rows"]:
        processes = row["instances"] * row["workers"]
        assert row["processes"] == processes, row
        assert row["delivered"] == row["expected"] == 4 * 8 // 2 and row["lost_streams"] == 0, row
        assert [sum(per_worker) for per_worker in row["streams_per_worker"]] == row["streams_per_instance"], row
        assert row["redis"]["channel_subscribers"] == processes, row  # one subscription per process
        assert row["redis"]["publishes"] >= row["changes"], row  # each change relayed at least once
        assert row["api"]["job_watches_open"] == processes, row  # one watch per process
        assert len(row["jobpulse_cpu_seconds_per_1000_changes"]["workers"]) == processes, row
    for row in results["watch_rows"]:
        assert row["watches_open"] == row["watches"], row
        assert row["events_seen"] >= row["watches"] * 3 and row["bytes_per_change_per_watch"] > 0, row
    [projected] = results["computed"]["rows"]
    assert (projected["processes"], projected["computed"]) == (8, True), projected
    assert scaleout.table(results) and scaleout.watch_table(results)
