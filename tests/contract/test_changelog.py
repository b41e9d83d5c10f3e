"""The ordered change log: the feed derived indexes consume."""

from __future__ import annotations

import pytest

from engramdb import ChangeLogTruncated, Conflict, Database, FakeClock, InvalidArgument, ops
from tests.conftest import OpenDb


def test_every_committed_change_is_logged_in_order(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    assert db.last_sequence() == 0
    s.put("a", {"v": 1})
    s.update("a", {"w": 2})
    s.operate(7, [ops.incr("n")])
    s.touch("a", 60)
    s.delete("a")
    changes = db.changes(0)
    assert [(c.sequence, c.set_name, c.key, c.kind, c.generation) for c in changes] == [
        (1, "s", "a", "put", 1),
        (2, "s", "a", "put", 2),
        (3, "s", 7, "put", 3),  # a new record starts at its change's sequence
        (4, "s", "a", "put", 3),
        (5, "s", "a", "delete", 3),
    ]
    assert all(c.at == pytest.approx(clock()) for c in changes)
    assert db.last_sequence() == 5


def test_failed_writes_are_not_logged(db: Database) -> None:
    s = db.records("s")
    s.put("a", {}, create_only=True)
    with pytest.raises(Conflict):
        s.put("a", {}, create_only=True)
    with pytest.raises(InvalidArgument):
        s.put("a", {"x": object()})
    assert s.delete("missing") is False
    assert db.last_sequence() == 1


def test_changes_read_from_a_sequence_with_a_limit(db: Database) -> None:
    s = db.records("s")
    for i in range(10):
        s.put(i, {})
    assert [c.sequence for c in db.changes(3, limit=4)] == [4, 5, 6, 7]
    assert db.changes(10) == []
    assert db.changes(50) == []


def test_retention_trims_the_oldest_changes(open_db: OpenDb) -> None:
    db = open_db(changelog_retention=5)
    s = db.records("s")
    for i in range(12):
        s.put(i, {})
    db.sweep()
    assert db.first_sequence() == 8
    assert db.last_sequence() == 12
    assert [c.sequence for c in db.changes(7)] == [8, 9, 10, 11, 12]
    with pytest.raises(ChangeLogTruncated) as caught:
        db.changes(2)
    assert caught.value.first_sequence == 8
    assert db.stats()["saturation"]["changelog_length"] == 5


def test_sequence_survives_trimming_the_whole_log(open_db: OpenDb) -> None:
    db = open_db(changelog_retention=1)
    s = db.records("s")
    s.put("a", {})
    s.put("b", {})
    db.sweep()
    s.put("c", {})
    assert [c.sequence for c in db.changes(2)] == [3]


def test_changes_rejects_bad_arguments(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        db.changes(-1)
    with pytest.raises(InvalidArgument):
        db.changes(0, limit=0)


def test_lmdb_change_log_persists_across_reopen(tmp_path: object, clock: FakeClock) -> None:
    import engramdb

    path = f"{tmp_path}/db"
    with engramdb.open(path, clock=clock, sweep_interval=None) as db:
        db.records("s").put("a", {"v": 1})
        db.records("s").delete("a")
    with engramdb.open(path, clock=clock, sweep_interval=None) as db:
        assert [c.kind for c in db.changes(0)] == ["put", "delete"]
        db.records("s").put("b", {})
        assert db.last_sequence() == 3
