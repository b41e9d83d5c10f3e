"""Golden signals of the embedded database: latency, traffic, errors, saturation."""

from __future__ import annotations

import pytest

from engramdb import Conflict, Database, InvalidArgument


def test_stats_count_operations_and_errors_by_type(db: Database) -> None:
    s = db.records("s")
    for i in range(10):
        s.put(i, {"i": i})
    for i in range(15):
        s.get(i)
    with pytest.raises(Conflict):
        s.put(0, {}, create_only=True)
    with pytest.raises(InvalidArgument):
        s.get(1.5)  # type: ignore[arg-type]
    ops = db.stats()["operations"]
    assert ops["put"]["count"] == 11
    assert ops["put"]["errors"] == {"Conflict": 1}
    assert ops["get"]["count"] == 16
    assert ops["get"]["errors"] == {"InvalidArgument": 1}
    assert ops["get"]["error_count"] == 1
    for name in ("put", "get"):
        figures = ops[name]
        assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["p999_us"]
        assert figures["p999_us"] <= figures["max_us"]


def test_stats_report_saturation(db: Database) -> None:
    s = db.records("s")
    for i in range(5):
        s.put(i, {})
    stats = db.stats()
    saturation = stats["saturation"]
    assert saturation["changelog_length"] == 5
    assert saturation["group_commit_queue"] == 0
    assert stats["changelog"] == {"first_sequence": 1, "last_sequence": 5}
    assert stats["group_commit"]["writes"] == 5
    assert stats["engine"]["records_stored"] == 5
    if stats["engine"]["engine"] == "lmdb":
        assert 0 < saturation["map_use_ratio"] < 1
        assert saturation["map_used_bytes"] > 0


def test_metrics_histogram_percentiles_track_observations(db: Database) -> None:
    op = db.metrics.op("synthetic")
    for _ in range(990):
        op.observe(10_000)  # 10 µs
    for _ in range(10):
        op.observe(5_000_000)  # 5 ms
    snap = op.snapshot()
    assert 10 <= snap["p50_us"] <= 10.7
    assert 10 <= snap["p99_us"] <= 10.7
    assert 5000 <= snap["p999_us"] <= 5000 * 1.07
    assert snap["max_us"] == 5000
