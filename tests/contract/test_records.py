"""The record API contract: every engine must pass all of it."""

from __future__ import annotations

import numpy as np
import pytest

from engramdb import Conflict, Database, InvalidArgument, NotFound, Record, StorageError
from tests.conftest import OpenDb


def test_put_then_get_returns_bins_and_metadata(db: Database) -> None:
    users = db.records("users")
    generation = users.put("u1", {"name": "Ada", "age": 36, "tags": ["a", "b"]})
    record = users.get("u1")
    assert generation == 1
    assert isinstance(record, Record)
    assert record.key == "u1"
    assert record.bins == {"name": "Ada", "age": 36, "tags": ["a", "b"]}
    assert record["name"] == "Ada"
    assert record.get("missing", 7) == 7
    assert record.generation == 1
    assert record.expires_at is None
    assert record.updated_at == pytest.approx(1_700_000_000.0)


def test_get_missing_returns_none(db: Database) -> None:
    assert db.records("users").get("nobody") is None


def test_keys_of_different_types_are_different_records(db: Database) -> None:
    s = db.records("s")
    s.put(1, {"v": "int"})
    s.put("1", {"v": "str"})
    s.put(b"1", {"v": "bytes"})
    assert [r["v"] for r in s.get_many([1, "1", b"1"]) if r] == ["int", "str", "bytes"]
    assert s.count() == 3


def test_sets_are_separate_namespaces(db: Database) -> None:
    db.records("a").put("k", {"v": 1})
    db.records("b").put("k", {"v": 2})
    assert db.records("a").get("k")["v"] == 1  # type: ignore[index]
    assert db.records("b").get("k")["v"] == 2  # type: ignore[index]
    assert db.records("a").count() == 1
    assert db.sets() == ["a", "b"]


def test_put_replaces_all_bins_and_bumps_generation(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"a": 1, "b": 2})
    assert s.put("k", {"c": 3}) == 2
    record = s.get("k")
    assert record is not None
    assert record.bins == {"c": 3}
    assert record.generation == 2


def test_update_merges_bins(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"a": 1, "b": 2})
    assert s.update("k", {"b": 20, "c": 30}) == 2
    assert s.get("k").bins == {"a": 1, "b": 20, "c": 30}  # type: ignore[union-attr]


def test_update_creates_missing_record(db: Database) -> None:
    s = db.records("s")
    assert s.update("new", {"a": 1}) == 1
    assert s.get("new").bins == {"a": 1}  # type: ignore[union-attr]


def test_get_many_keeps_request_order_with_none_for_missing(db: Database) -> None:
    s = db.records("s")
    for i in range(5):
        s.put(i, {"i": i})
    found = s.get_many([4, 99, 0, 2, 4])
    assert [r["i"] if r else None for r in found] == [4, None, 0, 2, 4]
    assert s.get_many([]) == []


def test_get_many_rejects_a_single_key(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        db.records("s").get_many("abc")


def test_exists(db: Database) -> None:
    s = db.records("s")
    s.put("k", {})
    assert s.exists("k")
    assert not s.exists("other")


def test_delete(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"a": 1})
    assert s.delete("k") is True
    assert s.get("k") is None
    assert s.delete("k") is False
    assert s.count() == 0


def test_a_generation_is_never_reused_after_delete_and_re_create(db: Database) -> None:
    s = db.records("s")
    s.put("k", {})
    old = s.put("k", {"owner": "ada"})
    s.delete("k")
    for _ in range(5):
        s.put("other", {})  # the re-created record must not land back on ``old``
    first = s.put("k", {"owner": "bob"})
    assert first > old
    for _ in range(first, old + 3):
        s.put("k", {"owner": "bob"})
    # A compare-and-set holding the deleted record's generation is stale (ABA): Conflict.
    with pytest.raises(Conflict):
        s.put("k", {"owner": "ada"}, expect_generation=old)
    with pytest.raises(Conflict):
        s.delete("k", expect_generation=old)
    assert s.get("k").bins == {"owner": "bob"}  # type: ignore[union-attr]


def test_a_new_record_starts_at_its_change_sequence_and_grows_by_one(db: Database) -> None:
    s = db.records("s")
    s.put("a", {})
    first = s.put("b", {})
    assert first == db.last_sequence()
    assert s.put("b", {}) == first + 1
    assert s.update("b", {"x": 1}) == first + 2


def test_empty_record_is_a_record(db: Database) -> None:
    s = db.records("s")
    s.put("k", {})
    assert s.get("k").bins == {}  # type: ignore[union-attr]
    assert s.count() == 1


def test_values_round_trip(db: Database) -> None:
    s = db.records("s")
    vector = np.arange(8, dtype=np.float32) / 3
    bins = {
        "none": None,
        "bool": True,
        "int": -(2**63),
        "uint": 2**64 - 1,
        "float": 1.5,
        "str": "héllo ✓",
        "bytes": b"\x00\xff",
        "list": [1, "two", [3.0, None]],
        "tuple": (1, 2),
        "map": {"a": {"b": [1]}, 1: "one", b"k": b"v"},
        "vector": vector,
        "np_scalar": np.float64(2.5),
    }
    s.put("k", bins)
    got = s.get("k")
    assert got is not None
    out = dict(got.bins)
    np.testing.assert_array_equal(out.pop("vector"), vector)
    assert got["vector"].dtype == np.float32
    expected = {k: v for k, v in bins.items() if k != "vector"}
    expected["tuple"] = [1, 2]
    assert out == expected


# conditions ---------------------------------------------------------------------------


def test_expect_generation_succeeds_on_match(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"n": 1})
    assert s.put("k", {"n": 2}, expect_generation=1) == 2


def test_expect_generation_conflict_carries_current_generation(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"n": 1})
    s.put("k", {"n": 2})
    with pytest.raises(Conflict) as caught:
        s.put("k", {"n": 3}, expect_generation=1)
    assert caught.value.generation == 2
    assert s.get("k")["n"] == 2  # type: ignore[index]


def test_expect_generation_zero_means_absent(db: Database) -> None:
    s = db.records("s")
    assert s.put("k", {"n": 1}, expect_generation=0) == 1
    with pytest.raises(Conflict) as caught:
        s.put("k", {"n": 2}, expect_generation=0)
    assert caught.value.generation == 1


def test_create_only(db: Database) -> None:
    s = db.records("s")
    assert s.put("k", {"n": 1}, create_only=True) == 1
    with pytest.raises(Conflict) as caught:
        s.put("k", {"n": 2}, create_only=True)
    assert caught.value.generation == 1
    assert s.get("k")["n"] == 1  # type: ignore[index]


def test_update_only(db: Database) -> None:
    s = db.records("s")
    with pytest.raises(Conflict) as caught:
        s.update("k", {"n": 1}, update_only=True)
    assert caught.value.generation == 0
    assert s.get("k") is None
    s.put("k", {"n": 1})
    assert s.update("k", {"m": 2}, update_only=True) == 2


def test_conditions_on_delete(db: Database) -> None:
    s = db.records("s")
    s.put("k", {})
    with pytest.raises(Conflict):
        s.delete("k", expect_generation=5)
    assert s.exists("k")
    assert s.delete("k", expect_generation=1)


def test_conflicting_condition_flags_are_invalid(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        db.records("s").put("k", {}, create_only=True, update_only=True)
    with pytest.raises(InvalidArgument):
        db.records("s").put("k", {}, expect_generation=-1)
    with pytest.raises(InvalidArgument):
        db.records("s").put("k", {}, expect_generation="1")  # type: ignore[arg-type]


# scan ---------------------------------------------------------------------------------


def test_scan_is_ordered_by_key_type_then_bytes(db: Database) -> None:
    s = db.records("s")
    for key in ["b", "a", b"z", 10, -5, "aa", b"\x00", 3]:
        s.put(key, {})
    keys = [r.key for r in s.scan(limit=100).records]
    assert keys == [-5, 3, 10, b"\x00", b"z", "a", "aa", "b"]


def test_scan_by_prefix(db: Database) -> None:
    s = db.records("s")
    for key in ["user:1", "user:2", "usr", "admin:1", b"user:3"]:
        s.put(key, {})
    assert [r.key for r in s.scan("user:").records] == ["user:1", "user:2"]
    assert [r.key for r in s.scan(b"user:").records] == [b"user:3"]
    assert s.scan("nothing").records == []


def test_scan_pages_with_a_cursor(db: Database) -> None:
    s = db.records("s")
    for i in range(25):
        s.put(f"k{i:02d}", {"i": i})
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = s.scan(cursor=cursor, limit=10)
        pages += 1
        seen.extend(r["i"] for r in page.records)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == list(range(25))
    assert pages == 3


def test_scan_exact_multiple_of_limit_ends_without_an_empty_page(db: Database) -> None:
    s = db.records("s")
    for i in range(10):
        s.put(i, {})
    first = s.scan(limit=5)
    second = s.scan(cursor=first.cursor, limit=5)
    assert len(first.records) == 5
    assert first.cursor is not None
    assert len(second.records) == 5
    assert second.cursor is None


def test_scan_only_sees_its_set(db: Database) -> None:
    db.records("a").put("k", {})
    db.records("ab").put("k", {})
    assert [r.key for r in db.records("a").scan().records] == ["k"]


def test_iterate_walks_every_record(db: Database) -> None:
    s = db.records("s")
    for i in range(30):
        s.put(i, {})
    assert [r.key for r in s.iterate(batch=7)] == list(range(30))


def test_scan_rejects_bad_arguments(db: Database) -> None:
    s = db.records("s")
    with pytest.raises(InvalidArgument):
        s.scan(limit=0)
    with pytest.raises(InvalidArgument):
        s.scan(cursor="not-hex")
    with pytest.raises(InvalidArgument):
        s.scan(5)  # type: ignore[arg-type]


def test_count(db: Database) -> None:
    s = db.records("s")
    assert s.count() == 0
    for i in range(7):
        s.put(i, {})
    s.put(3, {"again": True})
    s.delete(0)
    assert s.count() == 6


def test_long_keys_work_like_short_ones(db: Database) -> None:
    s = db.records("s")
    long_a = "a" * 1000 + "1"
    long_b = "a" * 1000 + "2"
    s.put(long_a, {"v": 1})
    s.put(long_b, {"v": 2})
    s.put("a", {"v": 0})
    assert s.get(long_a)["v"] == 1  # type: ignore[index]
    assert s.get(long_b)["v"] == 2  # type: ignore[index]
    assert {r.key for r in s.scan("a" * 600).records} == {long_a, long_b}
    assert s.count() == 3
    assert s.delete(long_a)
    assert s.get(long_a) is None
    assert s.get(long_b) is not None


# lifecycle ----------------------------------------------------------------------------


def test_closed_database_refuses_use(open_db: OpenDb) -> None:
    db = open_db()
    s = db.records("s")
    db.close()
    db.close()
    with pytest.raises(StorageError, match="closed"):
        s.get("k")
    with pytest.raises(StorageError, match="closed"):
        s.put("k", {})
    with pytest.raises(StorageError, match="closed"):
        db.records("s")


def test_context_manager_closes(open_db: OpenDb) -> None:
    with open_db() as db:
        db.records("s").put("k", {})
    with pytest.raises(StorageError):
        db.records("s")


def test_touch_missing_raises_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.records("s").touch("nope", 10)
