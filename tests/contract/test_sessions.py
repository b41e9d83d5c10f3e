"""Sessions contract: CAS updates, atomic appends, checkpoints, sliding TTL, listing."""

from __future__ import annotations

import threading

import pytest

from engramdb import Conflict, Database, FakeClock, InvalidArgument, NotFound


def test_create_get_delete(db: Database) -> None:
    s = db.sessions
    created = s.create("s1", {"turn": 0}, user_id="u1", metadata={"model": "m"})
    assert created.id == "s1"
    assert created.state == {"turn": 0}
    assert created.user_id == "u1"
    assert created.metadata == {"model": "m"}
    assert created.events == []
    assert created.generation == 1
    with pytest.raises(Conflict):
        s.create("s1")
    got = s.get("s1")
    assert got is not None
    assert got.state == {"turn": 0}
    assert s.delete("s1") is True
    assert s.get("s1") is None
    assert s.delete("s1") is False


def test_update_applies_the_function_and_returns_the_new_state(db: Database) -> None:
    s = db.sessions
    s.create("s1", {"n": 1})
    assert s.update("s1", lambda st: {"n": st["n"] + 1}) == {"n": 2}
    assert s.get("s1").state == {"n": 2}  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        s.update("nobody", lambda st: st)


def test_concurrent_updates_are_each_applied_exactly_once(db: Database) -> None:
    s = db.sessions
    s.create("hot", {"n": 0, "seen": []})
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(10):
                s.update(
                    "hot",
                    lambda st, w=w, i=i: {"n": st["n"] + 1, "seen": [*st["seen"], f"{w}.{i}"]},
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = s.get("hot").state  # type: ignore[union-attr]
    assert state["n"] == 80
    assert sorted(state["seen"]) == sorted(f"{w}.{i}" for w in range(8) for i in range(10))


def test_replace_is_compare_and_set(db: Database) -> None:
    s = db.sessions
    s.create("s1", 1)
    generation = s.replace("s1", 2, expect_generation=1)
    assert generation == 2
    with pytest.raises(Conflict) as caught:
        s.replace("s1", 3, expect_generation=1)
    assert caught.value.generation == 2
    assert s.get("s1").state == 2  # type: ignore[union-attr]


def test_append_trims_the_oldest_events(db: Database) -> None:
    s = db.sessions
    s.create("s1")
    for i in range(5):
        assert s.append("s1", {"i": i}, max_events=3) == min(i + 1, 3)
    assert s.get("s1").events == [{"i": 2}, {"i": 3}, {"i": 4}]  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        s.append("nobody", 1)


def test_checkpoints_newest_first_with_retention(db: Database) -> None:
    s = db.sessions
    s.create("s1")
    for step in range(25):
        cp = s.checkpoint("s1", step, {"step": step}, parent=step - 1 if step else None)
        assert cp.step == step
    found = s.checkpoints("s1")
    assert [c.step for c in found] == list(range(24, 4, -1))  # the last 20 (default)
    assert found[0].parent == 23
    assert s.get_checkpoint("s1", 24).state == {"step": 24}  # type: ignore[union-attr]
    assert s.get_checkpoint("s1", 2) is None  # pruned
    s.checkpoint("s1", 24, {"again": True})  # same step: replaced
    assert s.get_checkpoint("s1", 24).state == {"again": True}  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        s.checkpoint("nobody", 1, {})


def test_sliding_ttl_and_expiry_take_checkpoints_along(db: Database, clock: FakeClock) -> None:
    s = db.sessions
    s.create("s1", {"v": 1}, ttl=100)
    s.checkpoint("s1", 1, {"c": 1})
    clock.advance(60)
    assert s.get("s1") is not None  # an access: the TTL slides
    clock.advance(60)
    assert s.get("s1") is not None  # 120 s after creation, alive thanks to the slide
    s.append("s1", "event")  # writes extend it too
    clock.advance(99)
    assert s.get("s1") is not None
    clock.advance(101)
    assert s.get("s1") is None
    assert s.checkpoints("s1") == []
    assert s.get_checkpoint("s1", 1) is None
    # a new life of the same id does not inherit the old checkpoints
    s.create("s1")
    assert s.checkpoints("s1") == []
    db.sweep()
    assert "_session_checkpoints" not in db.sets()


def test_list_sessions_by_user_with_pages(db: Database, clock: FakeClock) -> None:
    s = db.sessions
    for i in range(5):
        s.create(f"a{i}", user_id="alice")
    s.create("b0", user_id="bob", ttl=10)
    page = s.list("alice", limit=2)
    ids = [x.id for x in page.sessions]
    while page.cursor is not None:
        page = s.list("alice", cursor=page.cursor, limit=2)
        ids += [x.id for x in page.sessions]
    assert ids == [f"a{i}" for i in range(5)]
    assert [x.id for x in s.list("bob").sessions] == ["b0"]
    clock.advance(11)
    assert s.list("bob").sessions == []
    s.delete("a0")
    assert [x.id for x in s.list("alice").sessions] == [f"a{i}" for i in range(1, 5)]
    assert len(s.list().sessions) == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create(""),
        lambda s: s.create("x\x00y"),
        lambda s: s.create("x", user_id=5),
        lambda s: s.create("x", ttl=-1),
        lambda s: s.create("x", {1, 2}),
        lambda s: s.append("x", object()),
        lambda s: s.checkpoint("x", -1, {}),
    ],
)
def test_bad_input_is_rejected(db: Database, call: object) -> None:
    with pytest.raises(InvalidArgument):
        call(db.sessions)  # type: ignore[operator]
    assert db.sessions.get("x") is None
