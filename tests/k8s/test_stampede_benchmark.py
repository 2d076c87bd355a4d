"""The restart benchmark measures what it claims, at a tiny N: two instances, one Redis, one instance stopped.

No figure is compared with a target here (that is ``python -m
benchmarks.stampede``'s and docs/PERFORMANCE.md's part): the counts the
figures are made from must be real — every stream the stopped instance held
comes back on the other or had its final status, no client misses a final
status, and the reconnects counted per 100 ms are the reconnects made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report, stampede
from benchmarks.common import Bench, machine

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.cluster]


@pytest.fixture(scope="module")
def bench(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with Bench.open(cluster, tmp_path_factory.mktemp("bench")) as opened:
        yield opened


def test_every_stream_of_the_stopped_instance_comes_back_and_no_final_status_is_missed(
    bench: Bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = stampede.run(bench, streams=8, jobs=2, finishing=1, scenarios=["before", "after"], graceful=2, settle=4.0)
    assert [row["scenario"] for row in results["rows"]] == ["before", "after"]
    for row in results["rows"]:
        assert row["moved"] == 4, row  # half the streams were on the stopped instance
        assert row["clients_of_finished_jobs"] == 4, row  # one job of two finished: its four viewers
        assert row["missed_final_status"] == 0, row
        assert row["never_back"] == 0, row
        assert row["reconnected"] == row["closed_by_the_server"] >= 2, row  # the running job's viewers at least
        assert sum(row["landings_per_100ms"]) == row["reconnected"], row
        assert max(row["landings_per_100ms"]) == row["max_per_100ms"], row
        assert 0 < row["back_ms"]["p50"] <= row["back_ms"]["p99"] <= row["back_ms"]["max"], row
        assert math.isfinite(row["back_ms"]["max"]), row
        assert row["api_requests"] < row["moved"], row  # no request per reconnect: the instances read their hub
        assert row["errors"] == [], row
        parts = row["back_parts_ms"]  # close → first word, cut where the client saw each step
        assert set(parts) == {"pause", "connect", "answer", "first_word"}, row
        for part in parts.values():
            assert 0 <= part["p50"] <= part["p99"] <= part["max"], row
        assert sum(part["max"] for part in parts.values()) >= row["back_ms"]["max"] - 1, row  # no time unaccounted
        assert row["survivor_cpu_seconds"] > 0, row
        assert row["gc_threshold2"] == 10, row  # Python's own: the GC experiment is a scenario of its own
        assert len(row["survivor_full_collections_ms"]) == row["survivor_full_collections"], row
    before, after = results["rows"]
    assert before["stream_close_spread"] == 0 and after["stream_close_spread"] == 0.5
    saved = tmp_path / "stampede.json"
    saved.write_text(json.dumps({**results, "machine": machine(), "command": "python -m benchmarks.stampede"}))
    report.main([str(saved)])  # the saved results print again as the table
    printed = capsys.readouterr().out
    assert "| before | 8 (4) |" in printed and "| after | 8 (4) |" in printed, printed


def test_the_survivors_full_collections_are_read_from_its_log_within_the_window(tmp_path: Path) -> None:
    log = tmp_path / "gc-after.1234"
    log.write_text("9.0 0.5\n10.5 0.25\n12.0 0.125\n20.0 1.0\n")
    assert stampede.full_collections(log, since=10.0, until=15.0) == [0.25, 0.125]
    assert stampede.full_collections(tmp_path / "none", since=0.0, until=1.0) == []
