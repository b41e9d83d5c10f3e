"""operate(): several operations on one record, atomically, one generation bump."""

from __future__ import annotations

from typing import Any

import pytest

from engramdb import Conflict, Database, InvalidArgument, NotFound, ops


def test_operate_applies_ops_in_order_and_returns_each_result(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"n": 1, "events": ["a"]})
    results = s.operate(
        "k",
        [
            ops.incr("n", 4),
            ops.list_append("events", "b"),
            ops.map_put("prefs", "lang", "en"),
            ops.write("name", "Ada"),
            ops.read("n", "events", "absent"),
        ],
    )
    assert results == [5, 2, 1, None, {"n": 5, "events": ["a", "b"], "absent": None}]
    record = s.get("k")
    assert record is not None
    assert record.generation == 2  # one bump for the whole call
    assert record.bins == {"n": 5, "events": ["a", "b"], "prefs": {"lang": "en"}, "name": "Ada"}


def test_operate_creates_the_record(db: Database) -> None:
    s = db.records("s")
    assert s.operate("k", [ops.incr("n")]) == [1]
    assert s.get("k").generation == 1  # type: ignore[union-attr]


def test_read_only_operate_does_not_write(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"a": 1})
    before = db.last_sequence()
    assert s.operate("k", [ops.read()]) == [{"a": 1}]
    assert s.get("k").generation == 1  # type: ignore[union-attr]
    assert db.last_sequence() == before


def test_read_only_operate_on_missing_record_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.records("s").operate("k", [ops.read("a")])


def test_read_keeps_the_value_it_saw(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"l": [1]})
    results = s.operate("k", [ops.read("l"), ops.list_append("l", 2), ops.read("l")])
    assert results == [{"l": [1]}, 2, {"l": [1, 2]}]


def test_list_append_with_max_len_trims_the_oldest(db: Database) -> None:
    s = db.records("s")
    for i in range(6):
        s.operate("k", [ops.list_append("turns", i, max_len=3)])
    assert s.get("k")["turns"] == [3, 4, 5]  # type: ignore[index]


def test_list_trim_uses_python_slice_rules(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"l": list(range(10))})
    assert s.operate("k", [ops.list_trim("l", -3)]) == [3]
    assert s.get("k")["l"] == [7, 8, 9]  # type: ignore[index]
    assert s.operate("k", [ops.list_trim("l", 0, 1)]) == [1]
    assert s.get("k")["l"] == [7]  # type: ignore[index]


def test_map_remove_returns_the_removed_value(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"m": {"a": 1, "b": 2}})
    assert s.operate("k", [ops.map_remove("m", "a"), ops.map_remove("m", "zz")]) == [1, None]
    assert s.get("k")["m"] == {"b": 2}  # type: ignore[index]


def test_delete_bin(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"a": 1, "b": 2})
    s.operate("k", [ops.delete_bin("a")])
    assert s.get("k").bins == {"b": 2}  # type: ignore[union-attr]


def test_incr_floats(db: Database) -> None:
    s = db.records("s")
    assert s.operate("k", [ops.incr("x", 0.5), ops.incr("x", 0.25)]) == [0.5, 0.75]


WRONG_TYPE_OPS: list[Any] = [
    ops.incr("name"),
    ops.list_append("name", 1),
    ops.list_trim("name", 0),
    ops.map_put("name", "a", 1),
    ops.map_remove("name", "a"),
    ops.incr("flag"),
]


@pytest.mark.parametrize("op", WRONG_TYPE_OPS, ids=lambda op: type(op).__name__)
def test_op_on_wrong_bin_type_leaves_record_unchanged(db: Database, op: Any) -> None:
    s = db.records("s")
    s.put("k", {"name": "Ada", "flag": True, "n": 1})
    before = db.last_sequence()
    with pytest.raises(InvalidArgument):
        s.operate("k", [ops.incr("n"), op])
    record = s.get("k")
    assert record is not None
    assert record.bins == {"name": "Ada", "flag": True, "n": 1}
    assert record.generation == 1
    assert db.last_sequence() == before


@pytest.mark.parametrize(
    "bad",
    [
        [],
        ["not an op"],
        [("incr", "n")],
        [ops.incr("n", "1")],  # type: ignore[arg-type]
        [ops.list_append("l", 1, max_len=0)],
        [ops.write("", 1)],
        [ops.write("x", object())],
        [ops.touch(0)],
        [ops.map_put("m", 1.5, 1)],  # type: ignore[arg-type]
    ],
)
def test_invalid_operations_are_rejected(db: Database, bad: list[Any]) -> None:
    s = db.records("s")
    with pytest.raises(InvalidArgument):
        s.operate("k", bad)
    assert s.get("k") is None


def test_operate_rejects_a_non_list(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        db.records("s").operate("k", ops.incr("n"))  # type: ignore[arg-type]


def test_incr_overflow_is_rejected(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"n": 2**63 - 1})
    with pytest.raises(InvalidArgument):
        s.operate("k", [ops.incr("n")])
    assert s.get("k")["n"] == 2**63 - 1  # type: ignore[index]


def test_operate_honours_conditions(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"n": 0})
    with pytest.raises(Conflict) as caught:
        s.operate("k", [ops.incr("n")], expect_generation=7)
    assert caught.value.generation == 1
    assert s.operate("k", [ops.incr("n")], expect_generation=1) == [1]
    with pytest.raises(Conflict):
        s.operate("other", [ops.incr("n")], update_only=True)
    with pytest.raises(Conflict):
        s.operate("k", [ops.read()], expect_generation=1)


def test_operate_too_big_result_is_rejected(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"blob": b"x" * 600_000})
    with pytest.raises(InvalidArgument):
        s.operate("k", [ops.write("blob2", b"y" * 600_000)])
    assert set(s.get("k").bins) == {"blob"}  # type: ignore[union-attr]
