"""The embedding store's listing calls and metadata, where only the embedded engine can show
it: which records a scan reads, and index snapshots on disk."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

import engramdb
from engramdb import Database


def _open(path: Path | None) -> Database:
    return engramdb.open(path, durability="none", sweep_interval=None)


def _calls(db: Database) -> dict[str, int]:
    return {name: op["count"] for name, op in db.stats()["operations"].items()}


def _vectors(n: int) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, 8)).astype(np.float32) + 0.01


def test_a_selective_filtered_scan_reads_its_matches_not_the_collection() -> None:
    with _open(None) as db:
        c = db.vectors.create_collection("c", 8)
        n = 5000
        c.upsert(
            list(range(n)),
            _vectors(n),
            [{"team": "red" if i % 500 == 0 else "blue"} for i in range(n)],
        )
        before = _calls(db)
        page = c.scan(filter={"team": "red"}, limit=4)
        assert [i.id for i in page.items] == [0, 500, 1000, 1500]
        rest = c.scan(filter={"team": "red"}, cursor=page.cursor, limit=100)
        assert [i.id for i in rest.items] == list(range(2000, n, 500))
        assert rest.cursor is None
        after = _calls(db)
        # No scan of the item set: the index named the ten matches, and only they were read.
        assert after.get("scan", 0) == before.get("scan", 0)
        assert after["get_many"] > before.get("get_many", 0)
        assert c.count({"team": "red"}) == 10


def test_metadata_with_arrays_and_datetimes_survives_the_index_snapshot(tmp_path: Path) -> None:
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    metadata: list[dict[str, Any]] = [
        {"at": at + dt.timedelta(days=i), "embedding": np.arange(3, dtype=np.float32) + i}
        for i in range(50)
    ]
    with _open(tmp_path / "db") as db:
        c = db.vectors.create_collection("c", 8)
        c.upsert(list(range(50)), _vectors(50), metadata)
        assert c.count({"at": {"$gte": at + dt.timedelta(days=40)}}) == 10
    with _open(tmp_path / "db") as db:
        c = db.vectors.get_collection("c")
        assert c.count({"at": {"$gte": at + dt.timedelta(days=40)}}) == 10
        figures = db.stats()["indexes"]["c"]
        assert figures["snapshot_sequence"] > 0  # loaded from the snapshot, not rebuilt
        assert figures["snapshot_failures"] == 0
        hit = c.search(_vectors(50)[7], 1, filter={"at": at + dt.timedelta(days=7)})[0]
        assert hit.id == 7
        np.testing.assert_array_equal(hit.metadata["embedding"], np.arange(3) + 7)


def test_metadata_nested_as_deep_as_values_may_be_is_filterable() -> None:
    deep: dict[str, Any] = {"leaf": "x"}
    for _ in range(30):  # with the metadata map and {"n": ...} below: the 32 levels allowed
        deep = {"n": deep}
    path = ".".join(["n"] * 30 + ["leaf"])
    with _open(None) as db:
        c = db.vectors.create_collection("c", 8)
        c.upsert([1, 2], _vectors(2), [{"n": deep}, {path: "x"}])
        assert c.count({f"n.{path}": "x"}) == 1
        assert c.count({path: "x"}) == 1  # the literal key, since no such nesting exists
        assert c.count({f"n.{path}": {"$exists": False}}) == 1
