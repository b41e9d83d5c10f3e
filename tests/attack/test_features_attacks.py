"""Attacks on the feature store: forged definitions, hostile names and paths, bad input, and
kill -9 in the middle of ingests and compactions.

A forged registry record is written the way an attacker who had a previous hole (say,
``records.put`` into ``_feature_registry``, now refused) would have left it: straight into the
reserved set, with the registry's version bumped so every process reads it.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engramdb
from engramdb import Conflict, Database, EngramError, InvalidArgument, StorageError
from engramdb.features import Entity, FeatureView, Field
from tests.attack.conftest import Served, serve

__all__ = ["serve"]

UTC = dt.UTC
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)
DRIVER = Entity("driver", ["driver_id"])
STATS = FeatureView("stats", [DRIVER], [Field("value", "int64")])
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed


def at(seconds: float) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


def rows(*pairs: tuple[int, int], when: float = 0.0) -> list[dict[str, Any]]:
    return [
        {"driver_id": d, "event_timestamp": at(when + i), "value": v}
        for i, (d, v) in enumerate(pairs)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = engramdb.open(tmp_path / "db", durability="none", sweep_interval=None)
    database.features.apply([DRIVER, STATS])
    yield database
    database.close()


def forge(db: Database, key: str, definition: Any, version: int = 1) -> None:
    registry = db._internal_records("_feature_registry")
    registry.put(key, {"definition": definition, "version": version})
    registry.put("__version", {"forged": True})  # every process re-reads the registry


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def injection(canary: Path) -> str:
    """A join key that, pasted into SQL between double quotes, closes the statement, copies
    the password file to ``canary`` and opens a statement that parses again."""
    return (
        f"driver_id\") = 1; COPY (SELECT * FROM read_text('/etc/passwd')) TO '{canary}'; "
        'SELECT * FROM batch QUALIFY row_number() OVER (PARTITION BY "driver_id'
    )


# forged definitions ----------------------------------------------------------------------


ATTACKED_CALLS = {
    "ingest": lambda fs, key: fs.ingest(
        "stats", [{"driver_id": 1, key: 1, "event_timestamp": at(0), "value": 1}]
    ),
    "materialize": lambda fs, key: fs.materialize(["stats"]),
    "get_historical_features": lambda fs, key: fs.get_historical_features(
        pd.DataFrame({"driver_id": [1], key: [1], "event_timestamp": [at(9)]}), ["stats:value"]
    ),
    "get_online_features": lambda fs, key: fs.get_online_features(
        ["stats:value"], [{"driver_id": 1, key: 1}]
    ),
    "validate_online": lambda fs, key: fs.validate_online("stats"),
}


@pytest.mark.parametrize("call", list(ATTACKED_CALLS))
def test_a_forged_join_key_never_reaches_sql(db: Database, tmp_path: Path, call: str) -> None:
    fs = db.features
    fs.ingest("stats", rows((1, 10)))
    canary = tmp_path / "canary.csv"
    key = injection(canary)
    forged = {"name": "driver", "join_keys": ["driver_id", key], "dtype": "int64"}
    forge(db, "entity:driver", forged)
    with pytest.raises(StorageError, match="corrupt or forged") as refused:
        ATTACKED_CALLS[call](fs, key)
    assert "root:" not in str(refused.value)
    assert not canary.exists()


def test_a_forged_view_name_cannot_lead_a_write_out_of_the_data_directory(
    db: Database, tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    escape = "../../../x"
    view = {"name": escape, "entities": ["driver"], "schema": [{"name": "value", "dtype": "int64"}]}
    forge(db, f"view:{escape}", view)
    with pytest.raises(InvalidArgument, match="name"):
        db.features.ingest(escape, rows((1, 1)))
    # the same forgery under an innocent key: refused when read back, so never used
    forge(db, "view:innocent", view)
    with pytest.raises(StorageError, match="corrupt or forged"):
        db.features.ingest("innocent", rows((1, 1)))
    assert not (tmp_path / "x").exists()
    outside = {p for p in files_under(tmp_path) - before if tmp_path / "db" not in p.parents}
    assert outside == set()


@pytest.mark.parametrize(
    ("key", "definition"),
    [
        ("view:stats", {"name": "stats", "entities": ["driver"], "schema": [
            {"name": 'value" FROM x; --', "dtype": "int64"}]}),
        ("view:stats", {"name": "stats", "entities": ["driver"], "ttl": "1; DROP",
                        "schema": [{"name": "value", "dtype": "int64"}]}),
        ("view:stats", {"name": "stats", "entities": ["driver"], "ttl": float("inf"),
                        "schema": [{"name": "value", "dtype": "int64"}]}),
        ("view:stats", {"name": "stats", "entities": ["driver"],
                        "schema": [{"name": "value", "dtype": "BIGINT); COPY"}]}),
        ("view:stats", {"name": "stats", "entities": ["../driver"],
                        "schema": [{"name": "value", "dtype": "int64"}]}),
        ("view:stats", {"name": "other", "entities": ["driver"],
                        "schema": [{"name": "value", "dtype": "int64"}]}),
        ("view:stats", "not a definition"),
    ],
    ids=["feature", "ttl-string", "ttl-inf", "dtype", "entity", "renamed", "garbage"],
)  # fmt: skip
def test_a_forged_view_definition_is_refused_when_read_back(
    db: Database, key: str, definition: Any
) -> None:
    db.features.ingest("stats", rows((1, 10)))
    forge(db, key, definition)
    with pytest.raises(StorageError, match="corrupt or forged"):
        db.features.get_online_features(["stats:value"], [{"driver_id": 1}])
    with pytest.raises(StorageError, match="corrupt or forged"):
        db.features.list_feature_views()


def test_a_registry_record_of_no_known_kind_is_reported_not_crashed_on(db: Database) -> None:
    db.features.ingest("stats", rows((1, 10)))
    forge(db, "macro:../../x", {"anything": 1})
    db._internal_records("_feature_registry").put(7, {"definition": {}, "version": 1})
    # the valid definitions still work...
    got = db.features.get_online_features(["stats:value"], [{"driver_id": 1}])
    assert got.to_dict()["value"] == [10]
    # ...and listing reports the forgery instead of hiding it
    with pytest.raises(StorageError, match="corrupt or forged"):
        db.features.list_feature_views()


def test_a_forged_manifest_record_cannot_point_a_read_outside_the_log(db: Database) -> None:
    db.features.ingest("stats", rows((1, 10)))
    manifest = db._internal_records("_feature_files")
    manifest.put("stats:999999999999", {"file": "../../../../../etc/passwd", "rows": 1,
                                        "bytes": 1})  # fmt: skip
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(9)]})
    with pytest.raises(StorageError, match="corrupt or forged"):
        db.features.get_historical_features(entity, ["stats:value"])


# the offline log kept in the engine (a database without a directory) ----------------------


@pytest.fixture
def mem() -> Any:
    database = engramdb.open(sweep_interval=None)
    database.features.apply([DRIVER, STATS])
    yield database
    database.close()


def value_at(db: Database, when: float) -> list[Any]:
    entity = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [at(when)] * 2})
    table = db.features.get_historical_features(entity, ["stats:value"]).to_arrow()
    values: list[Any] = table["value"].to_pylist()
    return values


def blob_keys(db: Database) -> list[Any]:
    return [r.key for r in db._internal_records("_feature_blobs").iterate()]


@pytest.mark.parametrize(
    "bins",
    [
        {"chunks": 10**9, "rows": 1, "bytes": 100, "crc": 0},  # a huge key list to build
        {"chunks": 1, "rows": 1, "bytes": 10**12, "crc": 0},  # a huge read to join
        {"chunks": 1, "rows": 1, "bytes": 100, "crc": -1},
        {"chunks": 1, "rows": 1, "bytes": 100},
        {"chunks": "1", "rows": 1, "bytes": 100, "crc": 0},
        {"file": "000000000999-0123456789abcdef.parquet", "chunks": 1, "rows": 1, "bytes": 1},
    ],
    ids=["chunks", "bytes", "crc", "no-crc", "chunks-type", "file-and-chunks"],
)
def test_a_forged_blob_manifest_record_is_refused_before_any_read(
    mem: Database, bins: dict[str, Any]
) -> None:
    mem.features.ingest("stats", rows((1, 10)))
    mem._internal_records("_feature_files").put("stats:000000000999", bins)
    with pytest.raises(StorageError, match="corrupt or forged"):
        value_at(mem, 9)
    with pytest.raises(StorageError, match="corrupt or forged"):
        mem.features.materialize(["stats"])


def test_a_file_manifest_record_cannot_make_an_engine_log_open_a_file(mem: Database) -> None:
    mem.features.ingest("stats", rows((1, 10)))
    mem._internal_records("_feature_files").put(
        "stats:000000000999", {"file": "000000000999-0123456789abcdef.parquet", "rows": 1,
                               "bytes": 1})  # fmt: skip
    with pytest.raises(StorageError, match="names a file"):
        value_at(mem, 9)


def test_a_damaged_blob_chunk_is_caught_by_its_checksum(mem: Database) -> None:
    mem.features.ingest("stats", rows((1, 10)))
    [key] = blob_keys(mem)
    chunks = mem._internal_records("_feature_blobs")
    data = bytearray(chunks.get(key).bins["b"])  # type: ignore[union-attr]
    data[len(data) // 2] ^= 0xFF
    chunks.put(key, {"b": bytes(data)})
    with pytest.raises(StorageError, match="does not match its manifest record"):
        value_at(mem, 9)


def test_a_missing_blob_chunk_is_reported_as_damage_not_retried_forever(mem: Database) -> None:
    mem.features.ingest("stats", rows((1, 10)))
    [key] = blob_keys(mem)
    mem._internal_records("_feature_blobs").delete(key)
    with pytest.raises(StorageError, match="lacks a chunk"):
        value_at(mem, 9)


def test_a_blob_record_planted_under_the_next_number_fails_that_ingest_whole(
    mem: Database,
) -> None:
    mem.features.ingest("stats", rows((1, 10)))
    counter = mem._internal_records("_feature_ingests").get("n")
    assert counter is not None
    planted = f"stats:{counter.bins['n'] + 1:012d}:000000"
    mem._internal_records("_feature_blobs").put(planted, {"b": b"PAR1 not yours"})
    before = mem.stats()["features"]["views"]["stats"]
    with pytest.raises(Conflict):
        mem.features.ingest("stats", rows((1, 11), (2, 12)))
    assert mem.stats()["features"]["views"]["stats"] == before
    assert value_at(mem, 9) == [10, None]
    assert mem.features.get_online_features(["stats:value"], [{"driver_id": 2}]).to_dict()[
        "value"
    ] == [None]
    mem.features.ingest("stats", rows((1, 11), (2, 12)))  # the next number: whole again
    assert value_at(mem, 9) == [11, 12]
    assert planted in blob_keys(mem)  # listed by no manifest record: never read


# names, paths and SQL ----------------------------------------------------------------------


HOSTILE_NAMES = ["../../x", "..", "a/b", "a\\b", "x" * 64, "drivér", "٣x", "a-b", "a b", "",
                 "__x", "1x", 'x"y', "x;y", "x\x00y", None, 7]  # fmt: skip


def test_hostile_names_are_refused_at_apply(db: Database) -> None:
    for name in HOSTILE_NAMES:
        for attempt in (
            [FeatureView(name, [DRIVER], [Field("v", "int64")])],  # type: ignore[arg-type]
            [Entity(name, ["k"])],  # type: ignore[arg-type]
            [Entity("e2", [name])],  # type: ignore[list-item]
            [FeatureView("v2", [DRIVER], [Field(name, "int64")])],  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidArgument, match="name"):
                db.features.apply(attempt)
    # names that would clash with the columns every row carries
    for attempt in (
        [Entity("e2", ["event_timestamp"])],
        [Entity("e2", ["k", "k"])],
        [Entity("e2", ["driver_id"]), FeatureView("v2", [DRIVER, "e2"], [Field("v", "int64")])],
    ):
        with pytest.raises(InvalidArgument):
            db.features.apply(attempt)
    assert [v.name for v in db.features.list_feature_views()] == ["stats"]


def test_hostile_names_in_requests_are_refused_before_any_lookup(db: Database) -> None:
    for call in (
        lambda: db.features.ingest("../../x", rows((1, 1))),
        lambda: db.features.get_online_features(["../x:value"], [{"driver_id": 1}]),
        lambda: db.features.validate_online("a/b"),
        lambda: db.features.materialize(["x;y"]),
    ):
        with pytest.raises(InvalidArgument, match="name"):
            call()


def test_a_view_directory_swapped_for_a_symlink_out_of_the_data_directory_is_refused(
    db: Database, tmp_path: Path
) -> None:
    db.features.ingest("stats", rows((1, 10)))
    view_dir = tmp_path / "db" / "features" / "offline" / "stats"
    elsewhere = tmp_path / "elsewhere"
    view_dir.rename(elsewhere)
    view_dir.symlink_to(elsewhere)
    before = sorted(elsewhere.iterdir())
    with pytest.raises(InvalidArgument, match="leaves the database directory"):
        db.features.ingest("stats", rows((2, 20)))
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(9)]})
    with pytest.raises(InvalidArgument, match="leaves the database directory"):
        db.features.get_historical_features(entity, ["stats:value"])
    # opening the database again still gives a working feature store
    db.close()
    with (
        engramdb.open(tmp_path / "db", sweep_interval=None) as again,
        pytest.raises(InvalidArgument, match="leaves the database directory"),
    ):
        again.features.validate_online("stats")
    assert sorted(elsewhere.iterdir()) == before


def test_entity_row_columns_with_hostile_names_come_back_intact(
    db: Database, tmp_path: Path
) -> None:
    db.features.ingest("stats", rows((1, 10)))
    canary = tmp_path / "canary.csv"
    hostile = [f"\"; COPY (SELECT 1) TO '{canary}'; --", "nul\x00byte", "__row", "__ingest"]
    entity = pa.table(
        {"driver_id": [1], "event_timestamp": pa.array([at(9)]), **{h: [h] for h in hostile}}
    )
    result = db.features.get_historical_features(entity, ["stats:value"]).to_arrow()
    assert result.column_names == ["driver_id", "event_timestamp", *hostile, "value"]
    assert [result[h][0].as_py() for h in hostile] == hostile
    assert result["value"].to_pylist() == [10]
    assert not canary.exists()


def test_the_duckdb_sandbox_refuses_files_outside_the_views_directories(tmp_path: Path) -> None:
    from engramdb.features.sql import connect

    allowed = tmp_path / "view"
    allowed.mkdir()
    connection = connect([str(allowed)], str(tmp_path / "spill"))
    try:
        for statement in (
            "SELECT * FROM read_text('/etc/passwd')",
            f"COPY (SELECT 1) TO '{tmp_path / 'canary.csv'}'",
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "INSTALL httpfs",
        ):
            with pytest.raises(Exception) as refused:  # noqa: PT011 - any duckdb refusal
                connection.sql(statement)
            assert "root:" not in str(refused.value)
    finally:
        connection.close()
    assert not (tmp_path / "canary.csv").exists()


def test_historical_output_into_the_database_directory_is_refused(
    db: Database, tmp_path: Path
) -> None:
    db.features.ingest("stats", rows((1, 10)))
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(9)]})
    manifest_before = files_under(tmp_path / "db")
    for target in (
        tmp_path / "db" / "data.mdb",
        tmp_path / "db" / "features" / "offline" / "stats" / "x.parquet",
        tmp_path / "missing-dir" / "out.parquet",
    ):
        with pytest.raises(InvalidArgument):
            db.features.get_historical_features(entity, ["stats:value"], output=str(target))
    assert files_under(tmp_path / "db") == manifest_before
    assert not (tmp_path / "missing-dir").exists()
    with pytest.raises(InvalidArgument):
        db.features.get_historical_features(entity, ["stats:value"], output=42)  # type: ignore[arg-type]


def test_historical_output_replaces_a_symlink_instead_of_writing_through_it(
    db: Database, tmp_path: Path
) -> None:
    db.features.ingest("stats", rows((1, 10)))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.parquet"
    link.symlink_to(victim)
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(9)]})
    result = db.features.get_historical_features(entity, ["stats:value"], output=str(link))
    assert victim.read_text() == "precious"
    assert not link.is_symlink()
    assert pq.read_table(link)["value"].to_pylist() == [10]
    assert result.num_rows == 1
    # a failed join leaves no partial file behind
    with pytest.raises(InvalidArgument):
        db.features.get_historical_features(
            pd.DataFrame({"driver_id": [1]}), ["stats:value"], output=str(tmp_path / "f.parquet")
        )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("parquet")) == [
        "out.parquet"
    ]


# bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [[1, 2], [None], [[1, 2]]],
    ids=["ints", "none", "lists"],
)  # fmt: skip
def test_ingest_of_things_that_are_not_rows_is_invalid_argument(db: Database, data: Any) -> None:
    with pytest.raises(InvalidArgument):
        db.features.ingest("stats", data)
    assert db.stats()["features"]["views"]["stats"]["offline_rows"] == 0


def test_ingest_with_two_columns_of_one_name_is_invalid_argument(db: Database) -> None:
    table = pa.Table.from_arrays(
        [pa.array([1]), pa.array([at(0)]), pa.array([1]), pa.array([2])],
        names=["driver_id", "event_timestamp", "value", "value"],
    )
    with pytest.raises(InvalidArgument, match="same name"):
        db.features.ingest("stats", table)


def test_timezone_naive_timestamps_are_refused_not_guessed(db: Database) -> None:
    naive = pd.DataFrame(
        {"driver_id": [1], "event_timestamp": [pd.Timestamp("2024-01-01 12:00")], "value": [1]}
    )
    with pytest.raises(InvalidArgument, match="timezone-naive"):
        db.features.ingest("stats", naive)
    for text in ("2024-01-01T12:00:00", "2024-01-01"):
        with pytest.raises(InvalidArgument, match="timezone-naive"):
            db.features.ingest("stats", [{"driver_id": 1, "event_timestamp": text, "value": 1}])
    with pytest.raises(InvalidArgument, match="timezone-naive"):
        db.features.get_historical_features(
            naive[["driver_id", "event_timestamp"]], ["stats:value"]
        )
    with pytest.raises(InvalidArgument, match="timezone-naive"):
        db.features.materialize(["stats"], start=dt.datetime(2024, 1, 1))
    assert db.stats()["features"]["views"]["stats"]["offline_rows"] == 0
    # what is accepted: aware timestamps in any zone, and strings with an offset
    oslo = dt.timezone(dt.timedelta(hours=1))
    db.features.ingest(
        "stats",
        [{"driver_id": 1, "event_timestamp": dt.datetime(2024, 1, 1, 13, tzinfo=oslo), "value": 1}],
    )
    db.features.ingest(
        "stats", [{"driver_id": 2, "event_timestamp": "2024-01-01T12:00:00Z", "value": 2}]
    )
    entity = pd.DataFrame(
        {"driver_id": [1, 2], "event_timestamp": [pd.Timestamp("2024-01-01 12:00", tz="UTC")] * 2}
    )
    got = db.features.get_historical_features(entity, ["stats:value"]).to_arrow()
    assert got["value"].to_pylist() == [1, 2]  # 13:00+01:00 is 12:00 UTC: included


def test_validate_online_sample_is_bounded(db: Database) -> None:
    for sample in (10**9, 0, -1, 2.5, "10"):
        with pytest.raises(InvalidArgument, match="sample"):
            db.features.validate_online("stats", sample=sample)  # type: ignore[arg-type]


def test_the_plan_cache_keyed_by_requested_features_stays_bounded(db: Database) -> None:
    from engramdb.features.store import PLAN_CACHE_ENTRIES

    fs = db.features
    wide = FeatureView("wide", [DRIVER], [Field(f"f{i}", "int64") for i in range(60)])
    fs.apply([wide])
    rng = random.Random(3)
    for _ in range(3 * PLAN_CACHE_ENTRIES):
        asked = [f"wide:f{i}" for i in rng.sample(range(60), 20)]
        fs.get_online_features(asked, [{"driver_id": 1}])
    assert 0 < db.stats()["features"]["cached_plans"] <= PLAN_CACHE_ENTRIES
    # a very long list (the same feature asked under many names is refused anyway) is not
    # kept: it would evict everything else
    huge = [f"wide:f{i % 60}" for i in range(20_000)]
    with pytest.raises(InvalidArgument, match="asked twice"):
        fs.get_online_features(huge, [{"driver_id": 1}])
    assert db.stats()["features"]["cached_plans"] <= PLAN_CACHE_ENTRIES


# many small ingests ------------------------------------------------------------------------


def historical(db: Database, drivers: int, when: float) -> list[Any]:
    entity = pd.DataFrame(
        {"driver_id": list(range(drivers)), "event_timestamp": [at(when)] * drivers}
    )
    table = db.features.get_historical_features(entity, ["stats:value"]).to_arrow()
    return table.to_pylist()


def test_a_loop_of_tiny_pushes_keeps_few_files_and_the_same_results(
    db: Database, tmp_path: Path
) -> None:
    from engramdb.features.offline import COMPACT_FILES

    fs = db.features
    rng = random.Random(11)
    for i in range(COMPACT_FILES - 1):  # not yet compacted
        fs.push("stats", {"driver_id": rng.randrange(5), "event_timestamp": at(rng.randrange(50)),
                          "value": i})  # fmt: skip
    assert db.stats()["features"]["views"]["stats"]["offline_files"] == COMPACT_FILES - 1
    before = [historical(db, 5, t) for t in (10, 25, 60)]
    assert fs.compact("stats") == COMPACT_FILES - 1
    assert db.stats()["features"]["views"]["stats"]["offline_files"] == 1
    assert [historical(db, 5, t) for t in (10, 25, 60)] == before
    # a view widened after the fact: old files lack the new feature, compaction keeps it null
    fs.apply([FeatureView("stats", [DRIVER], [Field("value", "int64"), Field("extra", "string")])])
    for i in range(10 * COMPACT_FILES):
        fs.push("stats", {"driver_id": rng.randrange(5), "event_timestamp": at(rng.randrange(50)),
                          "value": 1000 + i, "extra": f"e{i}"})  # fmt: skip
    stats = db.stats()["features"]["views"]["stats"]
    assert stats["offline_rows"] == COMPACT_FILES - 1 + 10 * COMPACT_FILES
    assert stats["offline_files"] < COMPACT_FILES
    view_dir = tmp_path / "db" / "features" / "offline" / "stats"
    assert len(list(view_dir.iterdir())) == stats["offline_files"]  # inputs were deleted
    assert fs.validate_online("stats", sample=100).ok
    expected = historical(db, 5, 60)
    fs.compact("stats")
    assert historical(db, 5, 60) == expected


# kill -9 -----------------------------------------------------------------------------------

ROWS = 3  # rows per ingest of the child
CHILD = r"""
import datetime as dt, random, sys
import duckdb, pandas, pyarrow.parquet  # loaded before "ready": kills land among ingests
import engramdb

path, cycle, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
db = engramdb.open(path, durability="sync", sweep_interval=None)
fs = db.features
base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
sys.stdout.write("ready\n")
sys.stdout.flush()
i = 0
while True:
    i += 1
    token = cycle * 1_000_000 + i
    batch = [
        {"driver_id": rng.randrange(8),
         "event_timestamp": base + dt.timedelta(seconds=rng.randrange(100_000)),
         "value": token}
        for _ in range(ROWS)
    ]
    sys.stdout.write(f"start {token}\n")
    sys.stdout.flush()
    fs.ingest("stats", batch)
    sys.stdout.write(f"ack {token}\n")
    sys.stdout.flush()
"""


def run_child(script: Path, path: Path, cycle: int, rng: random.Random, tmp: Path) -> list[str]:
    """Start an ingesting child, meanwhile open the database again and again (each open
    runs recovery next to the live writer), SIGKILL the child; returns its output lines."""
    lines: list[str] = []
    ready = threading.Event()

    def read(stream: IO[bytes]) -> None:
        for raw in stream:
            if raw == b"ready\n":
                ready.set()
            elif raw.endswith(b"\n"):
                lines.append(raw.decode().strip())

    stderr = tmp / f"child-{cycle}.err"
    with stderr.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(cycle), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert child.stdout is not None
    reader = threading.Thread(target=read, args=(child.stdout,), daemon=True)
    reader.start()
    try:
        if not ready.wait(WAIT):
            pytest.fail(f"child never became ready: {stderr.read_text()}")
        deadline = time.monotonic() + rng.uniform(0.2, 1.5)  # the fault's timing
        while time.monotonic() < deadline:
            with engramdb.open(path, durability="sync", sweep_interval=None) as other:
                _ = other.features  # recovery ran; the live writer's file must survive
    finally:
        child.kill()
        child.wait(WAIT)
        reader.join(WAIT)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, stderr.read_text()
    return lines


def offline_tokens(path: Path) -> Counter[int]:
    view_dir = path / "features" / "offline" / "stats"
    counts: Counter[int] = Counter()
    for file in view_dir.iterdir() if view_dir.exists() else ():
        counts.update(pq.read_table(file)["value"].to_pylist())
    return counts


def test_kill_9_during_ingests_leaves_offline_and_online_in_step(
    tmp_path: Path, soak: bool
) -> None:
    from engramdb.features.offline import COMPACT_FILES

    path = tmp_path / "db"
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("ROWS", str(ROWS)))
    with engramdb.open(path, durability="sync", sweep_interval=None) as db:
        db.features.apply([DRIVER, STATS])
    rng = random.Random(2024)
    acknowledged: set[int] = set()
    committed: set[int] = set()
    cycles = 100 if soak else 6
    for cycle in range(1, cycles + 1):
        lines = run_child(script, path, cycle, rng, tmp_path)
        acked = {int(line.split()[1]) for line in lines if line.startswith("ack ")}
        started = [int(line.split()[1]) for line in lines if line.startswith("start ")]
        in_flight = set(started[-1:]) - acked
        acknowledged |= acked
        with engramdb.open(path, durability="sync", sweep_interval=None) as db:
            fs = db.features  # recovery runs here
            tokens = offline_tokens(path)  # every file left on disk, debris included
            # each ingest is wholly there or wholly absent, never twice (compaction debris)
            assert set(tokens.values()) <= {ROWS}, (cycle, tokens)
            assert acknowledged <= set(tokens), f"cycle {cycle}: acknowledged ingests lost"
            assert set(tokens) <= acknowledged | committed | in_flight
            committed = set(tokens)
            stats = db.stats()["features"]["views"]["stats"]
            assert stats["offline_rows"] == ROWS * len(committed)
            view_dir = path / "features" / "offline" / "stats"
            on_disk = len(list(view_dir.iterdir())) if view_dir.exists() else 0
            assert stats["offline_files"] == on_disk  # no debris left
            report = fs.validate_online("stats", sample=100)
            assert report.ok, (cycle, report.mismatches[:3])
            assert report.checked == stats["online_entities"]
            # Kills right after commits can leave a compaction owed; the next ingest that
            # completes pays it.
            token = -cycle
            fs.ingest("stats", [{"driver_id": d, "event_timestamp": at(d), "value": token}
                                for d in range(ROWS)])  # fmt: skip
            acknowledged.add(token)
            committed.add(token)
            assert db.stats()["features"]["views"]["stats"]["offline_files"] < COMPACT_FILES
    assert len(acknowledged) > cycles  # the children did get work done between kills


def test_a_server_does_not_run_a_forged_registry_record(serve: Any, tmp_path: Path) -> None:
    server: Served = serve()
    client = engramdb.connect(server.url)
    try:
        client.features.apply([DRIVER, STATS])
        client.features.ingest("stats", rows((1, 10)))
        canary = tmp_path / "canary.csv"
        key = injection(canary)
        # another process on the same host opens the data directory, as a previous hole would
        forged = {"name": "driver", "join_keys": ["driver_id", key], "dtype": "int64"}
        with engramdb.open(server.data, sweep_interval=None) as local:
            forge(local, "entity:driver", forged)
        with pytest.raises(EngramError, match="corrupt or forged"):
            client.features.ingest(
                "stats", [{"driver_id": 1, key: 1, "event_timestamp": at(0), "value": 1}]
            )
        with pytest.raises(EngramError, match="corrupt or forged"):
            client.features.get_online_features(["stats:value"], [{"driver_id": 1, key: 1}])
        assert not canary.exists()
    finally:
        client.close()
