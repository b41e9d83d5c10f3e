"""Limits and bad input: the right error, and the stored record unchanged."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest

from engramdb import Database, InvalidArgument, Limits, RecordTooBig, ops
from tests.conftest import OpenDb


@pytest.fixture
def seeded(db: Database) -> Database:
    db.records("s").put("k", {"v": 1})
    return db


def assert_unchanged(db: Database) -> None:
    record = db.records("s").get("k")
    assert record is not None
    assert record.bins == {"v": 1}
    assert record.generation == 1
    assert db.last_sequence() == 1


def test_key_over_1kib_is_too_big(seeded: Database) -> None:
    s = seeded.records("s")
    s.put("x" * 1024, {})
    with pytest.raises(RecordTooBig):
        s.put("x" * 1025, {})
    with pytest.raises(RecordTooBig):
        s.put(b"x" * 1025, {})
    with pytest.raises(RecordTooBig):
        s.get("é" * 513)  # 1026 UTF-8 bytes


def test_record_over_1mib_is_too_big(seeded: Database) -> None:
    s = seeded.records("s")
    with pytest.raises(RecordTooBig):
        s.put("k", {"blob": b"x" * (1 << 20)})
    with pytest.raises(RecordTooBig):
        s.update("k", {"blob": b"x" * (1 << 20)})
    assert seeded.records("s").get("k").bins == {"v": 1}  # type: ignore[union-attr]
    assert seeded.last_sequence() == 1


def test_update_that_grows_past_the_limit_is_rejected(seeded: Database) -> None:
    s = seeded.records("s")
    s.put("big", {"a": b"x" * 600_000})
    with pytest.raises(RecordTooBig):
        s.update("big", {"b": b"y" * 600_000})
    assert set(s.get("big").bins) == {"a"}  # type: ignore[union-attr]


@pytest.mark.parametrize("key", [1.5, None, True, ["k"], 2**63, -(2**63) - 1])
def test_bad_keys(seeded: Database, key: Any) -> None:
    with pytest.raises(InvalidArgument):
        seeded.records("s").put(key, {})
    with pytest.raises(InvalidArgument):
        seeded.records("s").get(key)
    assert_unchanged(seeded)


@pytest.mark.parametrize(
    "bins",
    [
        {"x" * 65: 1},
        {"": 1},
        {1: "a"},
        ["v", 1],
        "v",
        {"v": {1, 2}},
        {"v": object()},
        {"v": datetime.datetime(2024, 1, 1)},
        {"v": 1 + 2j},
        {"v": 2**64},
        {"v": [1, [2, {"deep": set()}]]},
        {"v": {(1, 2): "tuple key"}},
        {"v": np.zeros((2, 2), dtype=np.float32)},
        {"v": np.array(["a"], dtype=object)},
        {"v": np.zeros(4097, dtype=np.float32)},
    ],
    ids=lambda b: repr(b)[:40],
)
def test_unstorable_bins_are_rejected_before_anything_is_written(
    seeded: Database, bins: Any
) -> None:
    s = seeded.records("s")
    with pytest.raises(InvalidArgument):
        s.put("k", bins)
    with pytest.raises(InvalidArgument):
        s.update("k", bins)
    assert_unchanged(seeded)


def test_bad_values_inside_operations_are_rejected(seeded: Database) -> None:
    s = seeded.records("s")
    for op in [
        ops.write("v", {1, 2}),
        ops.list_append("l", object()),
        ops.map_put("m", "a", 2**65),
    ]:
        with pytest.raises(InvalidArgument):
            s.operate("k", [op])
    assert_unchanged(seeded)


@pytest.mark.parametrize("name", ["", "x" * 65, "a\x00b", 5, None])
def test_bad_set_names(db: Database, name: Any) -> None:
    with pytest.raises(InvalidArgument):
        db.records(name)


def test_limits_are_configurable(open_db: OpenDb) -> None:
    db = open_db(limits=Limits(max_key_bytes=8, max_record_bytes=100, max_bin_name=3))
    s = db.records("s")
    s.put("12345678", {"abc": 1})
    with pytest.raises(RecordTooBig):
        s.put("123456789", {})
    with pytest.raises(InvalidArgument):
        s.put("k", {"abcd": 1})
    with pytest.raises(RecordTooBig):
        s.put("k", {"a": "x" * 100})
    assert s.count() == 1


def test_vector_dimension_limit_is_configurable(open_db: OpenDb) -> None:
    db = open_db(limits=Limits(max_vector_dim=8))
    s = db.records("s")
    s.put("k", {"v": np.zeros(8, dtype=np.float32)})
    with pytest.raises(InvalidArgument):
        s.put("k", {"v": np.zeros(9, dtype=np.float32)})


def test_bad_open_options(open_db: OpenDb) -> None:
    import engramdb

    with pytest.raises(InvalidArgument):
        engramdb.open(None, durability="fast")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        open_db(changelog_retention=0)


def test_a_rejected_open_leaves_nothing_open(tmp_path: object) -> None:
    import engramdb

    path = f"{tmp_path}/db"
    with pytest.raises(InvalidArgument):
        engramdb.open(path, changelog_retention=0)
    # Had the first attempt leaked its environment, this would find it open with
    # durability=sync and refuse.
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        db.records("s").put("k", {})
