"""Batches, bounded and reverse scans, bulk removal and transactions: every face.

These are the calls integrations need (a checkpoint and its blobs written atomically, a
thread listed newest first, a namespace deleted by prefix), run on the in-memory engine,
LMDB and a live server through the client.
"""

from __future__ import annotations

from typing import Any

import pytest

from engramdb import Conflict, Database, FakeClock, InvalidArgument, NotFound, ops


def keys_of(page: Any) -> list[Any]:
    return [r.key for r in page.records]


# put_many / delete_many -------------------------------------------------------------------


def test_put_many_writes_every_record_atomically_in_order(db: Database) -> None:
    s = db.records("s")
    generations = s.put_many({"a": {"v": 1}, "b": {"v": 2}, 3: {"v": 3}})
    assert len(generations) == 3
    assert generations == sorted(generations)  # one write, logged in the order given
    assert [r.bins["v"] for r in s.get_many(["a", "b", 3])] == [1, 2, 3]  # type: ignore[union-attr]
    changes = db.changes(db.last_sequence() - 3)
    assert [c.key for c in changes] == ["a", "b", 3]
    # pairs work too, and a key given twice is written twice: the last bins win
    again = s.put_many([("a", {"v": 10}), ("a", {"v": 11})])
    assert again[1] == again[0] + 1
    assert s.get("a").bins == {"v": 11}  # type: ignore[union-attr]


def test_put_many_with_one_bad_record_writes_nothing(db: Database) -> None:
    s = db.records("s")
    before = db.last_sequence()
    with pytest.raises(InvalidArgument):
        s.put_many({"a": {"v": 1}, "b": {"v": object()}})
    with pytest.raises(InvalidArgument):
        s.put_many("ab")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        s.put_many([("a",)])  # type: ignore[list-item]
    assert s.get("a") is None
    assert db.last_sequence() == before


def test_put_many_takes_a_ttl(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put_many({"a": {}, "b": {}}, ttl=10)
    clock.advance(11)
    assert s.get_many(["a", "b"]) == [None, None]


def test_delete_many_removes_atomically_and_counts_live_records(
    db: Database, clock: FakeClock
) -> None:
    s = db.records("s")
    s.put_many({"a": {}, "b": {}, "c": {}})
    s.put("gone", {}, ttl=1)
    clock.advance(2)
    assert s.delete_many(["a", "c", "missing", "gone"]) == 2
    assert keys_of(s.scan()) == ["b"]
    with pytest.raises(InvalidArgument):
        s.delete_many("bc")  # type: ignore[arg-type]
    assert s.get("b") is not None


# scans ------------------------------------------------------------------------------------


def test_bounded_and_reverse_scans_page_with_the_cursor(db: Database) -> None:
    s = db.records("s")
    s.put_many({f"k{i:02}": {"i": i} for i in range(20)})
    s.put_many({"other": {}, 5: {}})
    page = s.scan("k", start="k05", end="k15", limit=4)
    assert keys_of(page) == ["k05", "k06", "k07", "k08"]
    seen = keys_of(page)
    while page.cursor is not None:
        page = s.scan("k", start="k05", end="k15", limit=4, cursor=page.cursor)
        seen += keys_of(page)
    assert seen == [f"k{i:02}" for i in range(5, 15)]

    page = s.scan("k", reverse=True, limit=3)
    assert keys_of(page) == ["k19", "k18", "k17"]
    backwards = keys_of(page)
    while page.cursor is not None:
        page = s.scan("k", reverse=True, limit=3, cursor=page.cursor)
        backwards += keys_of(page)
    assert backwards == [f"k{i:02}" for i in reversed(range(20))]
    assert keys_of(s.scan(start="k18", reverse=True, limit=10)) == ["other", "k19", "k18"]
    assert keys_of(s.scan(end="k01", limit=10)) == [5, "k00"]  # ints sort before str


def test_reverse_scan_skips_expired_records(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put_many({"a": {}, "b": {}})
    s.put("c", {}, ttl=1)
    clock.advance(2)
    assert keys_of(s.scan(reverse=True)) == ["b", "a"]


# bulk removal -----------------------------------------------------------------------------


def test_delete_prefix_truncate_and_drop_set(db: Database) -> None:
    s = db.records("threads")
    s.put_many({f"t1:{i:04}": {} for i in range(2500)})
    s.put_many({f"t2:{i}": {} for i in range(3)})
    assert s.delete_prefix("t1:") == 2500
    assert keys_of(s.scan()) == ["t2:0", "t2:1", "t2:2"]
    with pytest.raises(InvalidArgument):
        s.delete_prefix(7)  # type: ignore[arg-type]
    assert s.truncate() == 3
    assert s.count() == 0
    other = db.records("other")
    other.put_many({"a": {}, "b": {}})
    assert db.drop_set("other") == 2
    assert "other" not in db.sets()


# transactions -----------------------------------------------------------------------------


def test_a_transaction_commits_writes_across_sets_all_or_nothing(db: Database) -> None:
    with db.transaction() as tx:
        tx.records("checkpoints").put("t1:5", {"step": 5})
        tx.records("blobs").put_many({"t1:5:a": {"v": b"x"}, "t1:5:b": {"v": b"y"}})
        tx.records("counters").operate("n", [ops.incr("n")])
    assert db.records("checkpoints").get("t1:5") is not None
    assert db.records("blobs").count() == 2
    assert db.records("counters").get("n").bins == {"n": 1}  # type: ignore[union-attr]

    before = db.last_sequence()
    tx = db.transaction()
    tx.records("checkpoints").put("t1:6", {"step": 6})
    tx.records("checkpoints").put("t1:5", {}, create_only=True)  # fails at commit
    with pytest.raises(Conflict):
        tx.commit()
    assert db.records("checkpoints").get("t1:6") is None
    assert db.last_sequence() == before


def test_a_record_changed_after_it_was_read_aborts_the_commit(db: Database) -> None:
    s = db.records("accounts")
    s.put("alice", {"balance": 10})
    tx = db.transaction()
    seen = tx.records("accounts").get("alice")
    missing = tx.records("accounts").get("bob")
    assert seen is not None
    assert missing is None
    tx.records("accounts").put("alice", {"balance": seen["balance"] - 5})
    tx.records("accounts").put("bob", {"balance": 5})
    s.put("alice", {"balance": 100})  # someone else, meanwhile
    with pytest.raises(Conflict, match="alice"):
        tx.commit()
    assert s.get("alice").bins == {"balance": 100}  # type: ignore[union-attr]
    assert s.get("bob") is None


def test_a_deleted_and_recreated_record_counts_as_changed(db: Database) -> None:
    s = db.records("s")
    s.put("k", {"owner": "ada"})
    tx = db.transaction()
    tx.records("s").get("k")
    tx.records("s").put("k", {"owner": "ada", "seen": True})
    s.delete("k")
    s.put("k", {"owner": "bob"})
    with pytest.raises(Conflict):
        tx.commit()
    assert s.get("k").bins == {"owner": "bob"}  # type: ignore[union-attr]


def test_a_transaction_discards_on_exception_and_refuses_reuse(db: Database) -> None:
    def step() -> Any:
        with db.transaction() as tx:
            tx.records("s").put("k", {})
            raise RuntimeError("the agent step failed")
        return tx

    with pytest.raises(RuntimeError):
        step()
    tx = db.transaction()
    tx.discard()
    assert db.records("s").get("k") is None
    with pytest.raises(InvalidArgument):
        tx.records("s").put("k", {})
    done = db.transaction()
    assert done.commit() == []
    with pytest.raises(InvalidArgument):
        done.commit()


def test_a_transaction_cannot_reach_reserved_sets(db: Database) -> None:
    tx = db.transaction()
    tx.records("_collections").put("c", {"dim": 3})
    with pytest.raises(InvalidArgument, match="reserved"):
        tx.commit()


def test_transaction_results_come_back_in_order(db: Database) -> None:
    s = db.records("s")
    s.put("a", {})
    tx = db.transaction()
    tx.records("s").delete("a")
    tx.records("s").operate("n", [ops.incr("n", 2)])
    tx.records("s").delete_many(["x", "y"])
    assert tx.commit() == [True, [2], 0]


def test_a_transaction_reads_many_and_checks_each_at_commit(db: Database) -> None:
    s = db.records("writes")
    s.put("t1:0", {"v": 1})
    tx = db.transaction()
    seen = tx.records("writes").get_many(["t1:0", "t1:1"])
    assert seen[0] is not None
    assert seen[1] is None
    tx.records("writes").put("t1:1", {"v": 2})
    s.put("t1:1", {"v": "first"})  # another writer takes the slot that was read empty
    with pytest.raises(Conflict, match="t1:1"):
        tx.commit()
    assert s.get("t1:1").bins == {"v": "first"}  # type: ignore[union-attr]


def test_collection_items_commit_with_records_in_one_transaction(db: Database) -> None:
    docs = db.vectors.create_collection("store_items", 2)
    tx = db.transaction()
    tx.records("lg.store").put("ns:item-1", {"value": {"text": "hello"}})
    tx.collection("store_items").upsert(["ns:item-1"], [[1.0, 0.0]], [{"ns": "ns"}], ["hello"])
    tx.records("lg.store").put("ns:item-2", {"value": {}}, create_only=True)
    db.records("lg.store").put("ns:item-2", {"taken": True})  # the create_only will fail
    with pytest.raises(Conflict):
        tx.commit()
    assert docs.count() == 0  # the vector did not land without its record
    assert db.records("lg.store").get("ns:item-1") is None

    with db.transaction() as tx:
        tx.records("lg.store").put("ns:item-1", {"value": {"text": "hello"}})
        tx.collection("store_items").upsert(["ns:item-1"], [[1.0, 0.0]], [{"ns": "ns"}], ["hi"])
    (hit,) = docs.search([1.0, 0.0], 1)
    assert hit.id == "ns:item-1"
    assert db.records("lg.store").get("ns:item-1") is not None
    with db.transaction() as tx:
        tx.records("lg.store").delete("ns:item-1")
        tx.collection("store_items").delete(["ns:item-1"])
    assert docs.count() == 0


def test_a_bad_staged_collection_write_fails_the_whole_commit(db: Database) -> None:
    db.vectors.create_collection("c3", 3)
    tx = db.transaction()
    tx.records("s").put("k", {})
    tx.collection("c3").upsert(["a"], [[1.0, 0.0]])  # wrong dimension
    with pytest.raises(InvalidArgument):
        tx.commit()
    assert db.records("s").get("k") is None
    tx = db.transaction()
    tx.collection("missing").upsert(["a"], [[1.0, 0.0, 0.0]])
    with pytest.raises(NotFound):
        tx.commit()
