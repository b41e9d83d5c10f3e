"""Long-term memory contract: dedupe, scopes, ranking, bi-temporal validity, history."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from engramdb import Database, FakeClock, InvalidArgument, NotFound

DIM = 256  # the default embedder's dimension


def direction(seed: int, near: int | None = None, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed if near is None else near)
    v = rng.normal(size=DIM)
    if near is not None:
        v = v + noise * np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_add_get_and_exact_duplicates(db: Database) -> None:
    m = db.memory
    first = m.add(
        "Alice prefers green tea", user_id="alice", metadata={"topic": "drinks"}, importance=0.9
    )
    assert first["event"] == "ADD"
    again = m.add("  alice PREFERS green tea ", user_id="alice")
    assert again == {"id": first["id"], "event": "NOOP"}
    got = m.get(first["id"])
    assert got is not None
    assert got.content == "Alice prefers green tea"
    assert got.user_id == "alice"
    assert got.metadata == {"topic": "drinks"}
    assert got.importance == 0.9
    assert m.get("nope") is None


def test_scopes_never_merge_or_leak(db: Database) -> None:
    m = db.memory
    a = m.add("likes hiking", user_id="alice")
    b = m.add("likes hiking", user_id="bob")
    c = m.add("likes hiking", user_id="alice", agent_id="planner")
    assert len({a["id"], b["id"], c["id"]}) == 3
    assert [h.memory.id for h in m.search("hiking", user_id="bob")] == [b["id"]]
    assert {h.memory.id for h in m.search("hiking", user_id="alice")} == {a["id"], c["id"]}
    assert {h.memory.id for h in m.search("hiking", agent_id="planner")} == {c["id"]}
    assert len(m.search("hiking", all_scopes=True)) == 3


def test_near_duplicates_update_and_keep_history(db: Database) -> None:
    m = db.memory
    base = m.add("works at Acme", user_id="u", embedding=direction(1))
    near = m.add("works at ACME Corp", user_id="u", embedding=direction(2, near=1, noise=0.1))
    assert near == {"id": base["id"], "event": "UPDATE"}
    far = m.add("owns a cat", user_id="u", embedding=direction(3))
    assert far["event"] == "ADD"
    assert m.get(base["id"]).content == "works at ACME Corp"  # type: ignore[union-attr]
    events = m.history(base["id"])
    assert [e.event for e in events] == ["ADD", "UPDATE"]
    assert events[1].previous == "works at Acme"
    assert events[1].content == "works at ACME Corp"


def test_concurrent_adds_of_one_fact_end_as_one_memory(db: Database) -> None:
    m = db.memory
    results: list[dict[str, str]] = []

    def add() -> None:
        results.append(m.add("the launch is on Friday", run_id="r1"))

    threads = [threading.Thread(target=add) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["id"] for r in results}) == 1
    assert sorted(r["event"] for r in results) == ["ADD"] + ["NOOP"] * 15
    assert [e.event for e in m.history(results[0]["id"])] == ["ADD"]
    assert len(m.list(run_id="r1")[0]) == 1


def test_importance_breaks_ties(db: Database) -> None:
    m = db.memory
    low = m.add("note one", user_id="u", embedding=direction(30), importance=0.1)
    high = m.add("note two", user_id="u2", embedding=direction(30), importance=0.9)
    del low
    both = m.search("note", all_scopes=True, embedding=direction(30), hybrid=False)
    assert both[0].memory.id == high["id"]
    assert both[0].scores["semantic"] == pytest.approx(both[1].scores["semantic"], abs=1e-5)
    assert both[0].scores["recency"] == pytest.approx(both[1].scores["recency"])
    assert set(both[0].scores) == {"semantic", "bm25", "recency", "importance"}


def test_recent_memory_outranks_an_old_equally_relevant_one(db: Database, clock: FakeClock) -> None:
    m = db.memory
    old = m.add("commutes by bike", user_id="a", embedding=direction(40))
    clock.advance(60 * 86_400)
    new = m.add("commutes by train", user_id="b", embedding=direction(40))
    hits = m.search("commute", all_scopes=True, embedding=direction(40), hybrid=False)
    assert [h.memory.id for h in hits] == [new["id"], old["id"]]
    assert hits[0].scores["recency"] > hits[1].scores["recency"]


def test_invalidated_memories_leave_search_but_stay_in_history(
    db: Database, clock: FakeClock
) -> None:
    m = db.memory
    moved = m.add("lives in Oslo", user_id="u")
    clock.advance(100)
    m.invalidate(moved["id"])
    assert m.search("Oslo", user_id="u") == []
    assert [h.memory.id for h in m.search("Oslo", user_id="u", as_of=clock() - 50)] == [moved["id"]]
    assert [e.event for e in m.history(moved["id"])] == ["ADD", "INVALIDATE"]
    assert m.get(moved["id"]).invalid_at == pytest.approx(clock())  # type: ignore[union-attr]


def test_update_re_embeds_and_delete_forgets(db: Database) -> None:
    m = db.memory
    added = m.add("drives a red car", user_id="u")
    updated = m.update(added["id"], content="drives a blue bike", metadata={"verified": True})
    assert updated.content == "drives a blue bike"
    assert updated.metadata == {"verified": True}
    assert [h.memory.id for h in m.search("blue bike", user_id="u")][:1] == [added["id"]]
    assert m.delete(added["id"]) is True
    assert m.get(added["id"]) is None
    assert m.search("bike", user_id="u") == []
    assert [e.event for e in m.history(added["id"])] == ["ADD", "UPDATE", "DELETE"]
    assert m.add("drives a blue bike", user_id="u")["event"] == "ADD"  # forgotten, so new again
    with pytest.raises(NotFound):
        m.update("nope", content="x")


def test_list_pages_and_delete_all(db: Database) -> None:
    m = db.memory
    for i in range(7):
        m.add(f"fact number {i}", agent_id="bot", embedding=direction(100 + i))
    m.add("other", agent_id="other")
    page, cursor = m.list(agent_id="bot", limit=3)
    seen = [x.id for x in page]
    while cursor is not None:
        page, cursor = m.list(agent_id="bot", cursor=cursor, limit=3)
        seen += [x.id for x in page]
    assert len(set(seen)) == 7
    assert m.delete_all(agent_id="bot") == 7
    assert m.list(agent_id="bot")[0] == []
    assert len(m.list(agent_id="other")[0]) == 1


def test_metadata_filters_apply_to_the_callers_metadata(db: Database) -> None:
    m = db.memory
    m.add("plans a trip to Rome", user_id="u", metadata={"topic": "travel", "year": 2025})
    m.add("plans a dinner", user_id="u", metadata={"topic": "food", "year": 2024})
    hits = m.search("plans", user_id="u", filter={"topic": "travel"})
    assert [h.memory.metadata["topic"] for h in hits] == ["travel"]
    assert len(m.search("plans", user_id="u", filter={"year": {"$gte": 2024}})) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.add("", user_id="u"),
        lambda m: m.add("x"),  # no scope
        lambda m: m.add("x", user_id="u", embedding=np.ones(DIM + 1)),
        lambda m: m.add("x", user_id="u", importance=2),
        lambda m: m.add("x", user_id="u", metadata={"bad": {1, 2}}),
        lambda m: m.search("", user_id="u"),
        lambda m: m.search("x"),
    ],
)
def test_bad_input_is_rejected_and_nothing_written(db: Database, call: Any) -> None:
    with pytest.raises(InvalidArgument):
        call(db.memory)
    assert db.memory.search("x", all_scopes=True) == []
