"""What ``engramdb audit`` writes on a target, and that it leaves the target as it found it.

The policy under test (``engramdb.audit.scratch``): a target that holds data is refused
unless ``--allow-writes``; with it, the audit writes only under its own namespace and removes
all of it at the end, so the user's records read back exactly as before; a database the audit
created is removed whole; it says what it will write before starting and what it removed at
the end. Targets: a real LMDB directory, a real ``engramdb serve``, a real ``redis-server``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import engramdb
from tests.audit.runs import TINY, audit
from tests.server_faults.conftest import Served, wait_for

Snapshot = dict[str, list[tuple[Any, ...]]]


def user_data(path: Path) -> None:
    with engramdb.open(str(path)) as db:
        people = db.records("people")
        people.put("alice", {"age": 31, "tags": ["a", "b"]})
        people.put("alice", {"age": 32, "tags": ["a", "b"]})  # generation 2
        people.put(7, {"raw": b"\x00\xff"})
        db.records("orders").put("o-1", {"total": 9.5}, ttl=3600)


def snapshot(db: Any) -> Snapshot:
    """Every record of every set, with its metadata."""
    return {
        name: [
            (r.key, r.bins, r.generation, r.expires_at, r.updated_at)
            for r in db.records(name).iterate()
        ]
        for name in sorted(db.sets())
    }


def snapshot_path(path: Path) -> tuple[Snapshot, int]:
    with engramdb.open(str(path)) as db:
        return snapshot(db), db.last_sequence()


# embedded ---------------------------------------------------------------------------------


def test_a_database_holding_data_is_refused_without_allow_writes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    user_data(path)
    before = snapshot_path(path)
    ran = audit(str(path), tmp_path / "report", *TINY, "--sections", "latency")
    assert ran.returncode == 1, ran.output
    assert "already holds data" in ran.output
    assert "--allow-writes" in ran.output
    assert "2 sets" in ran.output
    # Not one write: the records and even the change log are as they were.
    assert snapshot_path(path) == before
    assert not (tmp_path / "report").exists()


def test_with_allow_writes_user_data_is_unchanged_and_no_audit_record_remains(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    user_data(path)
    records_before, sequence_before = snapshot_path(path)
    ran = audit(
        str(path),
        tmp_path / "report",
        *TINY,
        "--sections",
        "latency,consistency",
        "--allow-writes",
    )
    assert ran.returncode in (0, 3), ran.output  # a verdict either way
    records_after, sequence_after = snapshot_path(path)
    assert records_after == records_before
    assert sorted(records_after) == ["orders", "people"]
    report = ran.report
    namespace = report["writes"]["namespace"]
    assert namespace.startswith("engramdb-audit-")
    cleanup = report["cleanup"]
    assert cleanup["complete"] is True
    assert cleanup["removed"] > 0
    assert cleanup["left"] == 0
    # The change log kept the audit's writes and removals, and the report says how many.
    assert cleanup["changelog_entries"] == sequence_after - sequence_before
    assert cleanup["changelog_entries"] >= 2 * cleanup["removed"]
    # Said before starting, and at the end.
    plan = ran.output.index(f"writes test records into set '{namespace}' of {path}")
    removed = ran.output.index(f"Removed {cleanup['removed']:,} records of set '{namespace}'")
    assert plan < removed
    assert "change log" in ran.output[:removed]
    assert f"keeps the audit's {cleanup['changelog_entries']:,} entries" in ran.output


def test_a_path_that_did_not_exist_is_audited_and_removed_whole(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    ran = audit(str(path), tmp_path / "report", *TINY, "--sections", "latency")
    assert ran.returncode in (0, 3), ran.output
    assert ran.report["sections"]["latency"]["overall"]["count"] > 0
    assert ran.report["cleanup"]["removed"] > 0
    assert not path.exists()
    assert f"The audit creates the database {path}" in ran.output
    assert f"The audit created {path}; it is now removed" in ran.output


def test_an_empty_directory_is_audited_and_left_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.mkdir()
    ran = audit(str(path), tmp_path / "report", *TINY, "--sections", "latency")
    assert ran.returncode in (0, 3), ran.output
    assert ran.report["cleanup"]["removed"] > 0
    assert path.is_dir()
    assert list(path.iterdir()) == []


# engramdb server ----------------------------------------------------------------------------


def test_a_server_holding_data_is_refused_without_allow_writes(serve: Any, tmp_path: Path) -> None:
    server: Served = serve()
    with engramdb.connect(server.url) as client:
        client.records("people").put("alice", {"age": 31})
        before = snapshot(client), client.last_sequence()
        ran = audit(server.url, tmp_path / "report", *TINY, "--sections", "latency")
        assert ran.returncode == 1, ran.output
        assert "--allow-writes" in ran.output
        assert (snapshot(client), client.last_sequence()) == before


# redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real ``redis-server`` (no persistence) on a free port; the URL names database 3."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/3"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 30, "redis-server to answer")
        yield url
    finally:
        client.close()
        proc.kill()
        proc.wait()


def redis_contents(url: str) -> dict[bytes, Any]:
    client = redis.Redis.from_url(url)
    try:
        return {key: (client.type(key), client.dump(key)) for key in client.scan_iter()}
    finally:
        client.close()


def test_a_redis_database_holding_keys_is_refused_without_allow_writes(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("mine", "hello")
    client.close()
    before = redis_contents(redis_url)
    ran = audit(redis_url, tmp_path / "report", *TINY, "--sections", "latency")
    assert ran.returncode == 1, ran.output
    assert "database 3" in ran.output
    assert "1 key" in ran.output
    assert "--allow-writes" in ran.output
    assert redis_contents(redis_url) == before


def test_with_allow_writes_redis_keeps_its_keys_and_loses_the_audits(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("mine", "hello")
    client.rpush("queue", "a", "b")
    client.close()
    before = redis_contents(redis_url)
    ran = audit(
        redis_url,
        tmp_path / "report",
        *TINY,
        "--sections",
        "latency,consistency",
        "--allow-writes",
    )
    assert ran.returncode in (0, 3), ran.output
    assert redis_contents(redis_url) == before
    namespace = ran.report["writes"]["namespace"]
    cleanup = ran.report["cleanup"]
    assert cleanup["complete"] is True
    assert cleanup["removed"] > 0
    assert f"writes test keys '{namespace}:*' into database 3" in ran.output
    assert "never flushes" in ran.output
    assert f"Removed {cleanup['removed']:,} keys '{namespace}:*'" in ran.output


def test_a_directory_of_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "documents"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    ran = audit(str(path), tmp_path / "report", *TINY, "--sections", "latency", "--allow-writes")
    assert ran.returncode == 1, ran.output
    assert "holds no engramdb database" in ran.output
    assert [p.name for p in path.iterdir()] == ["notes.txt"]
