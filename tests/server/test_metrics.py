"""Golden signals of the server: /metrics and INFO agree with what clients saw."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import engramdb
from tests.conftest import ServerProcess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    server = ServerProcess(tmp_path / "db", "--metrics-port", str(port))
    yield server, port
    server.stop()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_what_clients_did(metered: tuple[ServerProcess, int]) -> None:
    server, port = metered
    r = redis.Redis(host=server.host, port=server.port)
    try:
        for i in range(25):
            r.set(f"k{i}", "v")
        for i in range(40):
            r.get(f"k{i}")
        for _ in range(3):
            with pytest.raises(redis.ResponseError):
                r.incr("k0")  # INCRBY; "v" is not an integer
    finally:
        r.close()
    with engramdb.connect(server.url) as db:
        users = db.records("users")
        for i in range(7):
            users.put(i, {"n": i})
        with pytest.raises(engramdb.Conflict):
            users.put(0, {}, create_only=True)

    samples = scrape(port)
    commands = samples["engramdb_commands_total"]
    assert commands[(("command", "set"),)] == 25
    assert commands[(("command", "get"),)] == 40
    assert commands[(("command", "incrby"),)] == 3
    assert commands[(("command", "records.put"),)] == 8
    errors = samples["engramdb_command_errors_total"]
    assert errors[(("command", "incrby"), ("type", "ERR"))] == 3
    assert errors[(("command", "records.put"), ("type", "CONFLICT"))] == 1
    buckets = samples["engramdb_command_duration_seconds_bucket"]
    assert buckets[(("command", "get"), ("le", "1e-05"))] <= 40  # buckets start at 10 µs
    assert buckets[(("command", "get"), ("le", "+Inf"))] == 40
    assert samples["engramdb_command_duration_seconds_count"][(("command", "get"),)] == 40
    for gauge in (
        "engramdb_inflight",
        "engramdb_connections",
        "engramdb_group_commit_queue",
        "engramdb_event_loop_lag_seconds",
        "engramdb_map_use_ratio",
        "engramdb_changelog_length",
    ):
        assert gauge in samples, gauge
    assert samples["engramdb_changelog_length"][()] == 32  # 25 SETs + 7 puts


def test_info_reports_the_same_signals(metered: tuple[ServerProcess, int]) -> None:
    server, _ = metered
    r = redis.Redis(host=server.host, port=server.port)
    try:
        for _ in range(5):
            r.set("a", "1")
        info = r.info("all")
    finally:
        r.close()
    assert info["cmdstat_set"]["calls"] == 5
    for field in ("inflight", "group_commit_queue", "event_loop_lag_ms", "map_use_ratio"):
        assert field in info, field
    assert info["connected_clients"] >= 1


def test_metrics_report_vector_indexes(metered: tuple[ServerProcess, int]) -> None:
    import numpy as np

    server, port = metered
    with engramdb.connect(server.url) as db:
        docs = db.vectors.create_collection("docs", 4)
        docs.upsert([1, 2, 3], np.eye(4, dtype=np.float32)[:3], texts=["a", "b", "c"])
        docs.delete([2])
        docs.search(np.ones(4), 1)
    samples = scrape(port)
    assert samples["engramdb_index_items_indexed"][(("collection", "docs"),)] == 2
    assert samples["engramdb_index_tombstones"][(("collection", "docs"),)] == 1
    assert samples["engramdb_index_lag"][(("collection", "docs"),)] == 0
    assert samples["engramdb_index_memory_bytes"][(("collection", "docs"),)] > 0
    r = redis.Redis(host=server.host, port=server.port)
    try:
        assert r.info("indexes")["index_docs"]["items_indexed"] == 2
    finally:
        r.close()
