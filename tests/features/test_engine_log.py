"""The offline log kept in the engine (a database without a directory).

Nodes are ``Database`` objects over ONE engine (the in-memory engine, as several fronts share
one PostgreSQL cluster): what one ingests, every other — and one opened later — must read,
with point-in-time results identical to the file log of an LMDB database fed the same rows.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engramdb
from engramdb import Database, FakeClock, InvalidArgument, Limits, RecordTooBig
from engramdb.features import Entity, FeatureView, Field
from engramdb.features.blobs import MAX_CHUNKS, TableCache
from engramdb.features.offline import COMPACT_FILES
from engramdb.storage.memory import MemoryEngine

UTC = dt.UTC
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)
DRIVER = Entity("driver", ["driver_id"])
STATS = FeatureView("stats", [DRIVER], [Field("value", "int64"), Field("city", "string")])
WIDER = FeatureView(
    "stats", [DRIVER], [Field("value", "int64"), Field("city", "string"), Field("extra", "float64")]
)
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed


def at(seconds: float) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


class Nodes:
    """Several ``Database`` fronts over one in-memory engine."""

    def __init__(self, clock: FakeClock, limits: Limits | None = None) -> None:
        self.engine = MemoryEngine()
        self.clock = clock
        self.limits = limits
        self.opened: list[Database] = []

    def node(self) -> Database:
        db = Database(self.engine, clock=self.clock, limits=self.limits, sweep_interval=None)
        self.opened.append(db)
        return db

    def close(self) -> None:
        for db in self.opened:
            db.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(BASE.timestamp() + 3600)


@pytest.fixture
def nodes(clock: FakeClock) -> Iterator[Nodes]:
    shared = Nodes(clock)
    yield shared
    shared.close()


def rows(*items: tuple[int, float, int], created: float | None = None) -> list[dict[str, Any]]:
    out = []
    for driver, when, value in items:
        row: dict[str, Any] = {
            "driver_id": driver, "event_timestamp": at(when), "value": value, "city": f"c{value}",
        }  # fmt: skip
        if created is not None:
            row["created_timestamp"] = at(created)
        out.append(row)
    return out


def historical(db: Database, times: list[float], features: list[str] | None = None) -> pa.Table:
    drivers = range(5)
    entity = pd.DataFrame(
        {
            "driver_id": [d for _ in times for d in drivers],
            "event_timestamp": [at(t) for t in times for _ in drivers],
        }
    )
    refs = features or ["stats:value", "stats:city"]
    return db.features.get_historical_features(entity, refs).to_arrow()


def offline(db: Database) -> dict[str, Any]:
    found: dict[str, Any] = db.stats()["features"]["offline"]
    return found


def view_stats(db: Database) -> dict[str, Any]:
    found: dict[str, Any] = db.stats()["features"]["views"]["stats"]
    return found


def same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema), (a.schema, b.schema)
    assert a.to_pylist() == b.to_pylist()


# one log for every node ------------------------------------------------------------------


def test_every_node_sharing_the_engine_reads_one_offline_log(nodes: Nodes) -> None:
    a, b = nodes.node(), nodes.node()
    a.features.apply([DRIVER, STATS])
    a.features.ingest("stats", rows((1, 10, 1), (2, 20, 2)))
    b.features.ingest("stats", rows((1, 30, 3)))
    times = [15, 25, 40]
    expected = historical(a, times)
    assert expected["value"].to_pylist()[1:3] == [1, None]  # driver 1, 2 at 15 s
    assert expected["value"].to_pylist()[5 + 1 : 5 + 3] == [1, 2]  # at 25 s
    assert expected["value"].to_pylist()[10 + 1] == 3  # at 40 s: node b's ingest
    same(historical(b, times), expected)
    # a node that starts later (a restart, a new front) reads the same log from the engine
    c = nodes.node()
    same(historical(c, times), expected)
    assert c.features.validate_online("stats", sample=10).ok
    assert offline(c)["place"] == "engine"
    assert offline(c)["blob_records"] == 2


def test_point_in_time_joins_match_the_file_log_exactly(
    nodes: Nodes, clock: FakeClock, tmp_path: Path
) -> None:
    disk = engramdb.open(tmp_path / "db", durability="none", clock=clock, sweep_interval=None)
    a, b = nodes.node(), nodes.node()
    times = [0, 5, 10, 19.5, 20, 25, 49, 50, 60, 1000]
    try:
        for db in (disk, a):
            fs = db.features
            fs.apply([DRIVER, STATS])
            fs.ingest("stats", rows((1, 10, 1), (1, 20, 2), (2, 20, 3), created=0))
            fs.ingest("stats", rows((1, 20, 4), created=1))  # created later: wins the tie at 20
            fs.ingest("stats", rows((1, 20, 5), created=1))  # same created: the later ingest
            fs.ingest("stats", rows((3, 5, 6), (1, 15, 7)))  # late arrivals
            for i in range(COMPACT_FILES + 3):  # compacted on the way
                fs.push("stats", rows((i % 5, 30 + i % 7, 100 + i))[0])
        same(historical(b, times), historical(disk, times))
        for db in (disk, a):
            db.features.apply([WIDER])  # old objects lack the new feature: null there
            db.features.ingest("stats", [{**rows((4, 50, 9))[0], "extra": 0.5}])
            db.features.compact("stats")
        wide = ["stats:value", "stats:city", "stats:extra"]
        expected = historical(disk, times, wide)
        same(historical(a, times, wide), expected)
        same(historical(b, times, wide), expected)
        same(historical(nodes.node(), times, wide), expected)  # cold: decoded from the engine
        assert view_stats(a)["offline_rows"] == view_stats(disk)["offline_rows"]
    finally:
        disk.close()


# atomicity, chunking, the size bound -----------------------------------------------------


def test_a_failing_ingest_leaves_no_blob_no_manifest_entry_and_no_online_row(
    nodes: Nodes,
) -> None:
    db = nodes.node()
    fs = db.features
    fs.apply([DRIVER, STATS])
    fs.ingest("stats", rows((1, 10, 1)))
    before = (offline(db)["blob_records"], view_stats(db), historical(db, [5, 20]))
    # The Parquet of this ingest fits (chunked); its online record does not: the write
    # fails while preparing the online rows, after the blob and manifest records were
    # prepared in the same transaction.
    huge = secrets.token_hex(600_000)  # 1.2 MB of text in one online record
    bad = rows((1, 15, 2), (2, 15, 3))
    bad[1]["city"] = huge
    with pytest.raises(RecordTooBig):
        fs.ingest("stats", bad)
    assert (offline(db)["blob_records"], view_stats(db)) == before[:2]
    same(historical(db, [5, 20]), before[2])
    online = fs.get_online_features(["stats:value"], [{"driver_id": 1}, {"driver_id": 2}])
    assert online.to_dict()["value"] == [1, None]
    same(historical(nodes.node(), [5, 20]), before[2])  # nothing reached the engine
    fs.ingest("stats", rows((2, 15, 3)))
    assert historical(db, [20])["value"].to_pylist()[1:3] == [1, 3]


def test_an_ingest_bigger_than_one_record_is_stored_in_chunks(clock: FakeClock) -> None:
    shared = Nodes(clock, Limits(max_record_bytes=16 << 10))
    try:
        a = shared.node()
        a.features.apply([DRIVER, STATS])
        # incompressible text: the Parquet is about as big as the rows
        feed = rows(*((d % 5, d, d) for d in range(400)))
        for row in feed:
            row["city"] = secrets.token_hex(300)
        a.features.ingest("stats", feed)
        size = view_stats(a)["offline_bytes"]
        chunk = (16 << 10) - 89  # the record limit, less a record's header and framing
        assert size > 10 * chunk
        assert offline(a)["blob_records"] == -(-size // chunk)
        got = historical(shared.node(), [1000])
        last = {row["driver_id"]: row["city"] for row in feed}
        assert got["city"].to_pylist() == [last[d] for d in range(5)]
    finally:
        shared.close()


def test_an_ingest_over_the_transaction_bound_is_refused_whole_and_parts_succeed(
    clock: FakeClock,
) -> None:
    shared = Nodes(clock, Limits(max_record_bytes=8 << 10))
    try:
        db = shared.node()
        fs = db.features
        fs.apply([DRIVER, STATS])
        bound = offline(db)["max_ingest_bytes"]
        assert bound <= MAX_CHUNKS * (8 << 10)
        feed = rows(*((d % 5, d, d) for d in range(3 * bound // 2000)))
        for row in feed:
            row["city"] = secrets.token_hex(500)  # ~1000 bytes a row, incompressible
        with pytest.raises(InvalidArgument, match="ingest the rows in parts"):
            fs.ingest("stats", feed)
        assert offline(db)["blob_records"] == 0
        assert view_stats(db)["offline_rows"] == view_stats(db)["online_entities"] == 0
        half = len(feed) // 2
        fs.ingest("stats", feed[:half])
        fs.ingest("stats", feed[half:])
        assert view_stats(db)["offline_rows"] == len(feed)
        assert offline(db)["blob_records"] > MAX_CHUNKS
        last = {row["driver_id"]: row["city"] for row in feed}
        assert historical(db, [1e6])["city"].to_pylist() == [last[d] for d in range(5)]
    finally:
        shared.close()


def test_the_record_limit_too_small_for_a_chunk_is_a_clear_error(clock: FakeClock) -> None:
    shared = Nodes(clock, Limits(max_record_bytes=1000))
    try:
        db = shared.node()
        db.features.apply([DRIVER, STATS])
        with pytest.raises(InvalidArgument, match="too small to keep the offline log"):
            db.features.ingest("stats", rows((1, 1, 1)))
        assert view_stats(db)["online_entities"] == 0
    finally:
        shared.close()


# compaction and the cache ------------------------------------------------------------------


def test_compaction_in_the_engine_merges_blobs_in_one_transaction(nodes: Nodes) -> None:
    a, b = nodes.node(), nodes.node()
    a.features.apply([DRIVER, STATS])
    for i in range(COMPACT_FILES - 1):  # not yet compacted
        a.features.push("stats", rows((i % 5, i * 3 % 40, i))[0])
    assert view_stats(a)["offline_files"] == offline(a)["blob_records"] == COMPACT_FILES - 1
    times = [0, 10, 20, 30, 60]
    before = historical(b, times)  # b caches every small blob
    assert b.features.compact("stats") == COMPACT_FILES - 1
    assert view_stats(a)["offline_files"] == offline(a)["blob_records"] == 1
    same(historical(a, times), before)
    same(historical(b, times), before)
    assert offline(b)["cache"]["tables"] == 1  # the merged inputs were dropped
    for i in range(5 * COMPACT_FILES):  # compacted by the ingests themselves
        node = a if i % 2 else b
        node.features.push("stats", rows((i % 5, i % 90, 1000 + i))[0])
    stats = view_stats(a)
    assert stats["offline_rows"] == 6 * COMPACT_FILES - 1
    assert stats["offline_files"] < COMPACT_FILES
    assert offline(a)["blob_records"] == stats["offline_files"]  # every input removed
    assert a.features.validate_online("stats", sample=10).ok
    expected = historical(nodes.node(), times)
    same(historical(a, times), expected)
    assert offline(a)["cache"]["tables"] <= stats["offline_files"]


def test_repeated_joins_read_the_engine_once(nodes: Nodes) -> None:
    db = nodes.node()
    db.features.apply([DRIVER, STATS])
    for i in range(3):
        db.features.ingest("stats", rows((i, i, i)))
    first = historical(db, [10])
    cache = offline(db)["cache"]
    assert cache["misses"] == 3
    assert cache["tables"] == 3
    for _ in range(3):
        same(historical(db, [10]), first)
    again = offline(db)["cache"]
    assert again["misses"] == cache["misses"]
    assert again["hits"] == cache["hits"] + 9
    db.features.ingest("stats", rows((4, 1, 4)))  # only the new blob is read
    historical(db, [10])
    assert offline(db)["cache"]["misses"] == cache["misses"] + 1


def test_the_decoded_table_cache_is_bounded_in_bytes_and_tables() -> None:
    small = pa.table({"x": pa.array(range(1000), pa.int64())})
    by_bytes = TableCache(max_bytes=4 * small.nbytes, max_tables=100)
    for i in range(4):
        by_bytes.put(("v", i), small)
    assert by_bytes.get(("v", 0)) is not None  # recently used: survives the next put
    by_bytes.put(("v", 4), small)
    assert [i for i in range(5) if by_bytes.get(("v", i)) is not None] == [0, 2, 3, 4]
    assert by_bytes.stats()["bytes"] == by_bytes.max_bytes
    big = pa.table({"x": pa.array(range(2000), pa.int64())})  # over a quarter of the bound
    by_bytes.put(("v", 9), big)
    assert by_bytes.get(("v", 9)) is None
    assert by_bytes.stats()["tables"] == 4
    by_count = TableCache(max_bytes=1 << 30, max_tables=3)
    for i in range(10):
        by_count.put(("v", i), small)
    assert by_count.stats()["tables"] == 3
    assert [i for i in range(10) if by_count.get(("v", i)) is not None] == [7, 8, 9]
    by_count.drop(lambda key: key != ("v", 8))
    assert by_count.stats()["tables"] == 2


# nothing on disk -----------------------------------------------------------------------------

QUIET = r"""
import datetime as dt
import pandas as pd
import engramdb
from engramdb.features import Entity, FeatureView, Field

base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
db = engramdb.open(sweep_interval=None)
fs = db.features
fs.apply([Entity("driver", ["driver_id"]), FeatureView("s", ["driver"], [Field("v", "int64")])])
for i in range(20):
    fs.push("s", {"driver_id": i % 3, "event_timestamp": base + dt.timedelta(seconds=i), "v": i})
fs.compact("s")
entity = pd.DataFrame({"driver_id": [0, 1, 2], "event_timestamp": [base] * 3})
fs.get_historical_features(entity, ["s:v"])
fs.materialize(["s"])
assert fs.validate_online("s").ok
db.stats()
db.close()
print("done")
"""
_WRITES = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC")
_PATH = re.compile(r'"([^"]*)"')


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_store_without_a_directory_writes_nothing_to_disk_but_duckdb_spill(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill"  # TMPDIR: where DuckDB may spill a big join
    spill.mkdir()
    script = tmp_path / "quiet.py"
    script.write_text(QUIET)
    trace = tmp_path / "trace"
    calls = "open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,"
    calls += "link,linkat,symlink,symlinkat,truncate"
    env = {**os.environ, "TMPDIR": str(spill), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={calls}",
         sys.executable, str(script)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "done"
    lines = trace.read_text().splitlines()
    assert sum("openat(" in line for line in lines) > 100  # the trace saw the imports
    written = []
    for line in lines:
        call = line.split(None, 1)[-1]
        if call.startswith(("open", "creat")) and not _WRITES.search(call):
            continue  # a read
        paths = _PATH.findall(call)
        outside = [p for p in paths if not p.startswith((str(spill), "/dev/null", "/dev/tty"))]
        if outside:
            written.append(call)
    assert written == []
    assert {p.name for p in tmp_path.iterdir()} == {"spill", "quiet.py", "trace"}


# the same results in both places, whatever the history ----------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("ingest"),
            st.lists(
                st.tuples(st.integers(0, 4), st.integers(0, 40), st.integers(0, 9)),
                min_size=1,
                max_size=6,
            ),
            st.one_of(st.none(), st.integers(0, 3)),
        ),
        st.tuples(st.just("compact"), st.just([]), st.none()),
        st.tuples(st.just("widen"), st.just([]), st.none()),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=ops)
def test_any_history_of_ingests_and_compactions_joins_the_same_in_both_places(
    tmp_path_factory: pytest.TempPathFactory, history: list[tuple[str, Any, Any]]
) -> None:
    clock = FakeClock(BASE.timestamp() + 3600)
    path = tmp_path_factory.mktemp("history") / "db"
    disk = engramdb.open(path, durability="none", clock=clock, sweep_interval=None)
    shared = Nodes(clock)
    a, b = shared.node(), shared.node()
    wide = False
    try:
        for db in (disk, a):
            db.features.apply([DRIVER, STATS])
        for kind, batch, created in history:
            for writer in (disk, b if len(batch) % 2 else a):
                if kind == "ingest":
                    feed = rows(*batch, created=created)
                    if wide:
                        for row in feed:
                            row["extra"] = row["value"] / 2
                    writer.features.ingest("stats", feed)
                elif kind == "compact":
                    writer.features.compact("stats")
                else:
                    writer.features.apply([WIDER])
            wide = wide or kind == "widen"
        features = ["stats:value", "stats:city", *(["stats:extra"] if wide else [])]
        times = [0, 10, 20, 20.5, 40, 100]
        expected = historical(disk, times, features)
        same(historical(b, times, features), expected)
        same(historical(shared.node(), times, features), expected)
        entities = [{"driver_id": d} for d in range(5)]
        assert (
            a.features.get_online_features(features, entities).to_dict()
            == disk.features.get_online_features(features, entities).to_dict()
        )
    finally:
        shared.close()
        disk.close()
