"""TTL: an expired record is invisible at once everywhere and swept later. Fake clock only."""

from __future__ import annotations

import pytest

from engramdb import Conflict, Database, FakeClock, InvalidArgument, NotFound, ops


def test_record_expires_exactly_at_its_ttl(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {"v": 1}, ttl=10)
    record = s.get("k")
    assert record is not None
    assert record.expires_at == pytest.approx(clock() + 10)
    clock.advance(9.999)
    assert s.get("k") is not None
    clock.advance(0.001)
    assert s.get("k") is None


def test_expired_record_is_invisible_to_every_read(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("gone", {"v": 1}, ttl=5)
    s.put("stays", {"v": 2})
    clock.advance(6)
    assert s.get("gone") is None
    assert s.get_many(["gone", "stays"])[0] is None
    assert not s.exists("gone")
    assert s.count() == 1
    assert [r.key for r in s.scan().records] == ["stays"]
    assert [r.key for r in s.iterate()] == ["stays"]
    with pytest.raises(NotFound):
        s.operate("gone", [ops.read()])


def test_sweep_removes_expired_records_and_logs_expiry(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    for i in range(5):
        s.put(i, {}, ttl=1 + i)
    clock.advance(3.5)
    before = db.last_sequence()
    assert db.sweep() == 3
    assert db.sweep() == 0
    expired = db.changes(before)
    assert [(c.kind, c.key, c.generation) for c in expired] == [
        ("expire", 0, 1),
        ("expire", 1, 2),
        ("expire", 2, 3),
    ]
    assert s.count() == 2
    assert db.stats()["engine"]["records_stored"] == 2


def test_sweep_leaves_records_rewritten_after_expiry_alone(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {"v": 1}, ttl=1)
    clock.advance(2)
    s.put("k", {"v": 2})
    assert db.sweep() == 0
    assert s.get("k")["v"] == 2  # type: ignore[index]


def test_write_over_an_expired_record_starts_a_new_one(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {"a": 1}, ttl=1)
    old = s.put("k", {"a": 2}, ttl=1)
    clock.advance(2)
    # A new record, and a new generation: the expired one's is never reused.
    assert s.update("k", {"b": 1}) == db.last_sequence() > old
    with pytest.raises(Conflict):
        s.update("k", {"c": 1}, expect_generation=old)
    record = s.get("k")
    assert record is not None
    assert record.bins == {"b": 1}
    assert record.expires_at is None
    assert s.count() == 1


def test_create_only_succeeds_over_an_expired_record(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    old = s.put("k", {}, ttl=1)
    clock.advance(1)
    assert s.put("k", {}, create_only=True) > old


def test_delete_of_an_expired_record_reports_false(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=1)
    clock.advance(1)
    before = db.last_sequence()
    assert s.delete("k") is False
    assert [c.kind for c in db.changes(before)] == ["expire"]
    assert db.sweep() == 0


def test_put_without_ttl_clears_expiry(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=5)
    s.put("k", {})
    clock.advance(100)
    assert s.get("k") is not None


def test_update_without_ttl_keeps_expiry(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=5)
    s.update("k", {"x": 1})
    clock.advance(5)
    assert s.get("k") is None


def test_update_with_ttl_sets_a_new_expiry(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=5)
    s.update("k", {"x": 1}, ttl=50)
    clock.advance(10)
    assert s.get("k") is not None


def test_touch_refreshes_ttl_and_bumps_generation(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {"v": 1}, ttl=5)
    clock.advance(4)
    assert s.touch("k", 5) == 2
    clock.advance(4)
    record = s.get("k")
    assert record is not None
    assert record.bins == {"v": 1}
    assert record.generation == 2
    clock.advance(1)
    assert s.get("k") is None


def test_touch_on_expired_record_is_not_found(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=1)
    clock.advance(1)
    with pytest.raises(NotFound):
        s.touch("k", 10)


def test_touch_op_sets_expiry_within_operate(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.operate("k", [ops.incr("n"), ops.touch(3)])
    clock.advance(2)
    assert s.get("k") is not None
    clock.advance(1)
    assert s.get("k") is None


def test_operate_without_ttl_keeps_expiry(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {"n": 1}, ttl=5)
    s.operate("k", [ops.incr("n")])
    clock.advance(5)
    assert s.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "10", True])
def test_bad_ttl_is_rejected_and_nothing_written(db: Database, ttl: object) -> None:
    s = db.records("s")
    with pytest.raises(InvalidArgument):
        s.put("k", {}, ttl=ttl)  # type: ignore[arg-type]
    assert s.get("k") is None
    assert db.last_sequence() == 0


def test_fractional_ttl(db: Database, clock: FakeClock) -> None:
    s = db.records("s")
    s.put("k", {}, ttl=0.25)
    clock.advance(0.2)
    assert s.exists("k")
    clock.advance(0.05)
    assert not s.exists("k")


def test_background_sweeper_removes_expired_records(open_db: object, clock: FakeClock) -> None:
    """With the sweeper on, expired records leave storage without anyone calling sweep()."""
    import threading

    db = open_db(sweep_interval=0.01)  # type: ignore[operator]
    s = db.records("s")
    s.put("k", {}, ttl=1)
    clock.advance(2)
    swept = threading.Event()
    # Poll the change log (bounded) rather than sleeping a fixed time.
    for _ in range(500):
        if any(c.kind == "expire" for c in db.changes(0)):
            swept.set()
            break
        threading.Event().wait(0.01)
    assert swept.is_set()
    assert db.stats()["engine"]["records_stored"] == 0
