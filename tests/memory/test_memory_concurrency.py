"""Long-term memory under concurrency, and its ranking by a fake clock.

Dedupe: the same fact added fifty times at once, from threads and spawned processes on one
LMDB database or from threads through clients of a live server, ends as one memory with one
ADD in its history and every caller holding its id; near-duplicates update one memory in a
single unbroken chain of versions; different scopes never merge.

Ranking: a hit's score is exactly the documented blend of its components (0.6 semantic,
0.2 BM25 with ``hybrid`` else 0, 0.1 recency, 0.1 importance); recency halves every
``half_life`` of the database clock, so the recent of two equally relevant memories wins;
importance breaks the remaining ties; invalidated memories leave search but stay in history
and in searches "as of" before they were invalidated.

Races that real concurrency shows only now and then are pinned down with ``LockstepClock``
(``lockstep.py``): two adds take every look-up together before either writes.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engramdb
from engramdb import Database, FakeClock
from engramdb.memory import MemoryEvent, Weights
from tests.conftest import CLOCK_START, ServerProcess
from tests.memory.adders import (
    DIM,
    Add,
    Result,
    fast_switching,
    near,
    run_lanes,
    run_plan,
    unit,
)
from tests.memory.lockstep import LockstepClock

DAY = 86_400.0
LANES = 50  # adds racing in each round
PROCESSES, THREADS_PER_PROCESS = 4, 6  # 24 lanes in children, 26 threads in the test process
CLIENTS = 10  # server clients, each shared by five threads

ONE_FACT = ("Alice prefers green tea", "alice PREFERS green tea", "  Alice prefers\tgreen tea ")
FIVE_FACTS = (
    "Bob's flight leaves Tuesday at noon",
    "the quarterly report is due in March",
    "Bob is allergic to peanuts",
    "the office wifi password changed",
    "Bob plays the cello on weekends",
)
DISJOINT_SCOPES: tuple[dict[str, str], ...] = (
    {"user_id": "carol"},
    {"user_id": "dave"},
    {"agent_id": "planner"},
    {"run_id": "r1"},
    {"user_id": "gina", "agent_id": "helper"},
)
NEAR_BASE, SAME_NEAR_BASE = 1, 2  # seeds of the directions the near-duplicates cluster around
NEAR_FACT = "works at Acme"
SAME_NEAR_FACT = ("lives in Oslo", "lives in Oslo, Norway")  # an existing fact, its refinement


def normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def scope_of(memory: Any) -> dict[str, str]:
    fields = {"user_id": memory.user_id, "agent_id": memory.agent_id, "run_id": memory.run_id}
    return {k: v for k, v in fields.items() if v is not None}


def assert_exact_duplicates_collapsed(
    memory: Any, adds: Sequence[Add], results: list[Result]
) -> None:
    """Each distinct (fact, scope) of ``adds`` is one memory: one caller was told ADD, the
    others NOOP, all got its id; its history is that one ADD; its scope holds nothing else."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Result]] = {}
    for add, result in zip(adds, results, strict=True):
        key = (normalised(add.content), tuple(sorted(add.scope.items())))
        groups.setdefault(key, []).append(result)
    by_scope: dict[tuple[tuple[str, str], ...], set[str]] = {}
    for (fact, scope), group in groups.items():
        ids = {r["id"] for r in group}
        assert len(ids) == 1, f"{fact!r} in {scope} became {len(ids)} memories"
        (memory_id,) = ids
        assert Counter(r["event"] for r in group) == {"ADD": 1, "NOOP": len(group) - 1}
        stored = memory.get(memory_id)
        assert stored is not None
        assert normalised(stored.content) == fact
        assert scope_of(stored) == dict(scope)
        assert memory.history(memory_id) == [
            MemoryEvent("ADD", stored.content, None, stored.created_at)
        ]
        by_scope.setdefault(scope, set()).add(memory_id)
    for scope, ids in by_scope.items():
        listed, cursor = memory.list(**dict(scope))
        assert cursor is None
        assert {m.id for m in listed} == ids


def version_chain(events: list[MemoryEvent]) -> list[str]:
    """The contents a memory went through, rebuilt from ``previous`` links alone (whatever
    order the history lists them in): every UPDATE must start from the content the one
    before it left, so the links form one unbroken chain from the ADD."""
    (added,) = [e for e in events if e.event == "ADD"]
    updates = [e for e in events if e is not added]
    assert {e.event for e in updates} <= {"UPDATE"}
    by_previous = {e.previous: e for e in updates}
    assert len(by_previous) == len(updates), "two updates started from the same content"
    chain = [added.content]
    while by_previous:
        step = by_previous.pop(chain[-1], None)
        assert step is not None, f"no update starts from {chain[-1]!r}: the chain is broken"
        chain.append(step.content)
    return [c for c in chain if c is not None]


# fifty adds at once: threads and processes on one LMDB database ---------------------------


@dataclass(frozen=True)
class Workload:
    """Rounds of ``LANES`` racing adds, by name: what each lane added and was told."""

    db: Database
    adds: dict[str, list[Add]]
    results: dict[str, list[Result]]
    bases: dict[str, str]  # round -> the memory its near-duplicates were meant to update


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """One set of spawned children runs every round (spawning is the slow part); the tests
    below each check one round. The rounds use disjoint scopes, so none can disturb another."""
    path = tmp_path_factory.mktemp("memory") / "db"
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        bases = {
            "near": db.memory.add(NEAR_FACT, user_id="erin", embedding=unit(NEAR_BASE))["id"],
            "same_near": db.memory.add(
                SAME_NEAR_FACT[0], user_id="frank", embedding=unit(SAME_NEAR_BASE)
            )["id"],
        }
        adds = {
            "one_fact": [Add(ONE_FACT[i % 3], {"user_id": "alice"}) for i in range(LANES)],
            "five_facts": [Add(FIVE_FACTS[i % 5], {"user_id": "bob"}) for i in range(LANES)],
            "scopes": [Add("likes hiking", DISJOINT_SCOPES[i % 5]) for i in range(LANES)],
            "near": [
                Add(f"{NEAR_FACT} (note {i})", {"user_id": "erin"}, near(NEAR_BASE, i))
                for i in range(LANES)
            ],
            "same_near": [
                Add(SAME_NEAR_FACT[1], {"user_id": "frank"}, near(SAME_NEAR_BASE, 0))
                for _ in range(LANES)
            ],
        }
        results = run_plan(
            db,
            path,
            list(adds.values()),
            processes=PROCESSES,
            threads_per_process=THREADS_PER_PROCESS,
        )
        yield Workload(db, adds, dict(zip(adds, results, strict=True)), bases)


def test_one_fact_added_fifty_times_at_once_is_one_memory(workload: Workload) -> None:
    assert_exact_duplicates_collapsed(
        workload.db.memory, workload.adds["one_fact"], workload.results["one_fact"]
    )


def test_five_facts_added_ten_times_each_at_once_are_five_memories(workload: Workload) -> None:
    m = workload.db.memory
    vectors = m.embedder.embed(list(FIVE_FACTS))
    similarity = vectors @ vectors.T - np.eye(len(FIVE_FACTS))
    assert similarity.max() < m.dedupe_threshold, "the facts must not be near-duplicates"
    assert_exact_duplicates_collapsed(
        m, workload.adds["five_facts"], workload.results["five_facts"]
    )
    assert len({r["id"] for r in workload.results["five_facts"]}) == 5


def test_one_fact_added_at_once_in_different_scopes_never_merges(workload: Workload) -> None:
    assert_exact_duplicates_collapsed(
        workload.db.memory, workload.adds["scopes"], workload.results["scopes"]
    )
    assert len({r["id"] for r in workload.results["scopes"]}) == len(DISJOINT_SCOPES)


def test_concurrent_near_duplicates_update_one_memory_in_one_chain(workload: Workload) -> None:
    m = workload.db.memory
    base = workload.bases["near"]
    texts = [add.content for add in workload.adds["near"]]
    assert workload.results["near"] == [{"id": base, "event": "UPDATE"}] * LANES
    assert [x.id for x in m.list(user_id="erin")[0]] == [base]
    events = m.history(base)
    assert len(events) == 1 + LANES
    chain = version_chain(events)
    assert chain[0] == NEAR_FACT
    assert sorted(chain[1:]) == sorted(texts), "every near-duplicate is one version"
    current = m.get(base)
    assert current is not None
    assert current.content == chain[-1]


def test_one_near_duplicate_added_fifty_times_at_once_updates_one_memory(
    workload: Workload,
) -> None:
    """What holds however the adds interleave: one memory, now saying the refinement, and
    one history entry per caller told UPDATE (exactly one such caller is the lockstep test
    ``test_a_near_duplicate_added_twice_at_once_updates_once``)."""
    m = workload.db.memory
    base = workload.bases["same_near"]
    results = workload.results["same_near"]
    assert {r["id"] for r in results} == {base}
    told = Counter(r["event"] for r in results)
    assert set(told) <= {"UPDATE", "NOOP"}
    assert told["UPDATE"] >= 1
    assert [x.id for x in m.list(user_id="frank")[0]] == [base]
    current = m.get(base)
    assert current is not None
    assert current.content == SAME_NEAR_FACT[1]
    events = m.history(base)
    assert [e.event for e in events] == ["ADD"] + ["UPDATE"] * told["UPDATE"]
    assert [e.previous for e in events[1:]].count(SAME_NEAR_FACT[0]) == 1
    assert all(e.content == SAME_NEAR_FACT[1] for e in events[1:])


def test_the_rounds_left_nothing_else_behind(workload: Workload) -> None:
    # one_fact 1, five_facts 5, scopes 5, near 1, same_near 1
    assert workload.db.stats()["memory"] == {"memories": 13}


# fifty adds at once through clients of a live server -------------------------------------


def test_fifty_client_threads_add_one_fact_through_a_server(engram_server: ServerProcess) -> None:
    engram_server.reset(clock_start=CLOCK_START)
    rounds = [
        [Add(ONE_FACT[i % 3], {"user_id": "alice"}) for i in range(LANES)],
        [Add("likes hiking", DISJOINT_SCOPES[i % 5]) for i in range(LANES)],
    ]
    clients = [engramdb.connect(engram_server.url) for _ in range(CLIENTS)]
    try:
        memories = [clients[lane % CLIENTS].memory for lane in range(LANES)]
        by_lane = [[round_[lane] for round_ in rounds] for lane in range(LANES)]
        with fast_switching():
            lanes = run_lanes(memories, by_lane, threading.Barrier(LANES))
        observer = clients[0].memory
        for r, adds in enumerate(rounds):
            assert_exact_duplicates_collapsed(observer, adds, [lane[r] for lane in lanes])
        assert len({lane[1]["id"] for lane in lanes}) == len(DISJOINT_SCOPES)
    finally:
        for client in clients:
            client.close()


# two adds in lockstep: the worst interleaving, every time --------------------------------


@pytest.fixture
def lockstep() -> Iterator[tuple[Database, LockstepClock]]:
    clock = LockstepClock(CLOCK_START, patience=1.0)
    with engramdb.open(None, clock=clock, sweep_interval=None) as db:
        # A first search builds the vector index under a lock, which would end lockstep at
        # once (one thread waiting for the lock, the other for it at the clock): warm it.
        db.memory.add("an unrelated memory", user_id="nobody")
        yield db, clock


def race(db: Database, clock: LockstepClock, first: Add, second: Add) -> list[Result]:
    results: list[Result | None] = [None, None]

    def run(i: int, add: Add) -> None:
        with clock.in_lockstep():
            results[i] = add.run(db.memory)

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "an add hung"
    assert None not in results, "an add failed"
    return [r for r in results if r is not None]


def test_an_exact_duplicate_added_twice_in_lockstep_is_one_memory(
    lockstep: tuple[Database, LockstepClock],
) -> None:
    """Both adds find no memory and no near-duplicate before either writes; the content
    key's compare-and-set still lets only one of them add."""
    db, clock = lockstep
    fact = Add("the launch is on Friday", {"run_id": "r1"})
    results = race(db, clock, fact, fact)
    assert clock.rendezvous >= 2, "the adds did not look up together: no race was run"
    assert_exact_duplicates_collapsed(db.memory, [fact, fact], results)


def test_two_near_duplicates_added_in_lockstep_are_one_memory(
    lockstep: tuple[Database, LockstepClock],
) -> None:
    db, clock = lockstep
    scope = {"user_id": "u"}
    results = race(
        db,
        clock,
        Add("works at Acme", scope, near(NEAR_BASE, 1)),
        Add("works at ACME Corp", scope, near(NEAR_BASE, 2)),
    )
    assert sorted(r["event"] for r in results) == ["ADD", "UPDATE"]
    assert len(db.memory.list(user_id="u")[0]) == 1


def test_a_near_duplicate_added_twice_at_once_updates_once(
    lockstep: tuple[Database, LockstepClock],
) -> None:
    db, clock = lockstep
    m = db.memory
    base = m.add(SAME_NEAR_FACT[0], user_id="u", embedding=unit(SAME_NEAR_BASE))["id"]
    refinement = Add(SAME_NEAR_FACT[1], {"user_id": "u"}, near(SAME_NEAR_BASE, 0))
    results = race(db, clock, refinement, refinement)
    assert sorted(r["event"] for r in results) == ["NOOP", "UPDATE"]
    assert [(e.event, e.previous, e.content) for e in m.history(base)] == [
        ("ADD", None, SAME_NEAR_FACT[0]),
        ("UPDATE", *SAME_NEAR_FACT),
    ]


# dedupe, one call at a time ----------------------------------------------------------------


@pytest.fixture
def mem_db(clock: FakeClock) -> Iterator[Database]:
    """An in-memory database on the fake ``clock``."""
    with engramdb.open(None, clock=clock, sweep_interval=None) as db:
        yield db


def test_history_lists_versions_in_the_order_they_were_written(
    mem_db: Database, clock: FakeClock
) -> None:
    m = mem_db.memory
    base = m.add("works at Acme", user_id="u", embedding=unit(NEAR_BASE))["id"]
    clock.advance(1000)
    m.add("works at Acme Corp", user_id="u", embedding=near(NEAR_BASE, 1))
    clock.advance(-500)  # e.g. NTP stepping the system clock back
    m.add("works at ACME Corporation", user_id="u", embedding=near(NEAR_BASE, 2))
    events = m.history(base)
    assert [e.content for e in events] == version_chain(events)


def test_re_adding_a_fact_after_a_near_duplicate_changed_it_updates_it_back(
    mem_db: Database,
) -> None:
    m = mem_db.memory
    oslo = m.add("lives in Oslo", user_id="u", embedding=near(3, 1))
    assert m.add("lives in Bergen", user_id="u", embedding=near(3, 2))["event"] == "UPDATE"
    again = m.add("lives in Oslo", user_id="u", embedding=near(3, 1))
    assert again == {"id": oslo["id"], "event": "UPDATE"}
    assert m.get(oslo["id"]).content == "lives in Oslo"  # type: ignore[union-attr]


def test_a_fact_in_a_narrower_scope_does_not_absorb_it_in_a_broader_one(mem_db: Database) -> None:
    m = mem_db.memory
    planner = m.add("likes hiking", user_id="carol", agent_id="planner")
    mine = m.add("likes hiking", user_id="carol")
    assert mine["event"] == "ADD"
    assert mine["id"] != planner["id"]
    assert [x.id for x in m.list(user_id="carol")[0]] == [mine["id"]]


# ranking by a fake clock --------------------------------------------------------------------

BASIS: np.ndarray = np.linalg.qr(np.random.default_rng(7).normal(size=(DIM, 12)))[0].T
QUERY: np.ndarray = BASIS[0].astype(np.float32)  # the rows of BASIS are orthonormal


def toward_query(other: int, cosine: float) -> np.ndarray:
    """A unit vector with ``cosine`` similarity to ``QUERY``, leaning off along basis vector
    ``other``: two of them with different ``other`` are only ``cosine**2`` alike, so equally
    relevant memories are no near-duplicates of each other."""
    v: np.ndarray = cosine * BASIS[0] + np.sqrt(1 - cosine**2) * BASIS[other]
    return v.astype(np.float32)


def test_recent_memory_outranks_an_old_equally_relevant_one(
    mem_db: Database, clock: FakeClock
) -> None:
    m = mem_db.memory
    old = m.add("commutes by bike", user_id="u", embedding=toward_query(1, 0.8))["id"]
    clock.advance(45 * DAY)
    new = m.add("commutes by train", user_id="u", embedding=toward_query(2, 0.8))["id"]
    hits = m.search("how does u get to work", user_id="u", embedding=QUERY, hybrid=False)
    assert [h.memory.id for h in hits] == [new, old]
    recent, aged = hits
    assert recent.scores["semantic"] == pytest.approx(0.8, abs=1e-6)
    assert aged.scores["semantic"] == pytest.approx(0.8, abs=1e-6)
    assert recent.scores["recency"] == 1.0
    assert aged.scores["recency"] == 0.5 ** (45 * DAY / m.half_life)
    assert m.half_life == 30 * DAY
    assert recent.score - aged.score == pytest.approx(0.1 * (1 - 0.5**1.5), abs=1e-6)


def test_importance_breaks_ties_between_equally_relevant_recent_memories(
    mem_db: Database, clock: FakeClock
) -> None:
    m = mem_db.memory
    importance_of: dict[str, float] = {}
    for n, importance in enumerate((0.2, None, 0.9, 0.7), start=1):  # None: the default, 0.5
        embedding = toward_query(n, 0.6)
        added = m.add(f"note {n}", user_id="u", embedding=embedding, importance=importance)
        importance_of[added["id"]] = 0.5 if importance is None else importance
    clock.advance(DAY)  # all equally recent, and not brand new
    hits = m.search("note", user_id="u", embedding=QUERY, hybrid=False)
    assert [importance_of[h.memory.id] for h in hits] == [0.9, 0.7, 0.5, 0.2]
    assert len({h.scores["recency"] for h in hits}) == 1
    for better, worse in itertools.pairwise(hits):
        gap = better.scores["importance"] - worse.scores["importance"]
        assert better.score - worse.score == pytest.approx(0.1 * gap, abs=1e-6)


def test_invalidated_memories_leave_search_but_stay_in_history(
    mem_db: Database, clock: FakeClock
) -> None:
    m = mem_db.memory
    start = clock()
    moved = m.add("lives in Oslo", user_id="u", embedding=toward_query(1, 0.9))["id"]
    stays = m.add("works in Oslo", user_id="u", embedding=toward_query(2, 0.7))["id"]
    clock.advance(100)
    m.invalidate(moved)
    clock.advance(100)

    def found(**options: Any) -> list[str]:
        hits = m.search("Oslo", user_id="u", embedding=QUERY, **options)
        return [h.memory.id for h in hits]

    assert found() == found(hybrid=False) == [stays]
    assert found(as_of=start + 50) == [moved, stays]
    assert found(as_of=start + 99.5) == [moved, stays]
    assert found(as_of=start + 150) == [stays]
    assert found(as_of=start - 1) == []  # before either was added
    invalidated = m.get(moved)
    assert invalidated is not None
    assert invalidated.invalid_at == start + 100
    assert {x.id for x in m.list(user_id="u")[0]} == {moved, stays}
    assert m.history(moved) == [
        MemoryEvent("ADD", "lives in Oslo", None, start),
        MemoryEvent("INVALIDATE", None, None, start + 100, {"invalid_at": start + 100}),
    ]
    # No longer true, so no longer a near-duplicate either: a refinement is a new memory.
    again = m.add("lives in Oslo, Norway", user_id="u", embedding=toward_query(1, 0.9))
    assert again["event"] == "ADD"

    # Invalidated from a future time: still found until then, and "as of" before it after.
    m.invalidate(stays, at=clock() + 50)
    assert stays in found()
    clock.advance(60)
    assert stays not in found()
    assert stays in found(as_of=clock() - 30)


def test_re_adding_an_invalidated_fact_makes_it_current_again(
    mem_db: Database, clock: FakeClock
) -> None:
    m = mem_db.memory
    first = m.add("lives in Oslo", user_id="u")["id"]
    clock.advance(100)
    m.invalidate(first)
    clock.advance(100)
    assert m.add("lives in Oslo", user_id="u")["event"] != "NOOP"
    assert [h.memory.content for h in m.search("Oslo", user_id="u")] == ["lives in Oslo"]


WORDS = ("tea", "coffee", "Oslo", "bike", "train", "cello", "peanuts", "report")

memories_st = st.lists(
    st.tuples(
        st.floats(-2.0, 2.0),  # weight of the query direction: relevance, negative included
        st.one_of(st.none(), st.floats(0.0, 1.0)),  # importance (None: the default)
        st.floats(0.0, 90.0),  # days the clock moves before the add
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),  # the text
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(
    memories=memories_st,
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    hybrid=st.booleans(),
    later=st.floats(0.0, 90.0),
)
def test_scores_are_the_documented_blend_of_their_components(
    memories: list[tuple[float, float | None, float, list[str]]],
    query: list[str],
    hybrid: bool,
    later: float,
) -> None:
    clock = FakeClock(CLOCK_START)
    with engramdb.open(None, clock=clock, sweep_interval=None) as db:
        m = db.memory
        assert m.weights == Weights(semantic=0.6, bm25=0.2, recency=0.1, importance=0.1)
        expected: dict[str, tuple[float, float, float]] = {}  # id -> relevance, importance, at
        for n, (weight, importance, days, words) in enumerate(memories, start=1):
            clock.advance(days * DAY)
            # Off-query parts are orthogonal, so two memories are at most 0.8 alike: no dedupe.
            vector = weight * BASIS[0] + BASIS[n]
            added = m.add(
                f"{' '.join(words)} item{n}", user_id="u", embedding=vector, importance=importance
            )
            assert added["event"] == "ADD"
            relevance = max(0.0, weight / float(np.sqrt(1 + weight**2)))
            expected[added["id"]] = (relevance, 0.5 if importance is None else importance, clock())
        clock.advance(later * DAY)
        now = clock()
        hits = m.search(" ".join(query), user_id="u", embedding=QUERY, hybrid=hybrid, k=10)

    # Fewer memories than ``candidates``: every one of them is ranked.
    assert {h.memory.id for h in hits} == set(expected)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        relevance, importance, at = expected[hit.memory.id]
        parts = hit.scores
        assert set(parts) == {"semantic", "bm25", "recency", "importance"}
        assert parts["semantic"] == pytest.approx(relevance, abs=1e-5)
        assert parts["recency"] == 0.5 ** ((now - at) / (30 * DAY))
        assert parts["importance"] == importance
        assert 0.0 <= parts["bm25"] <= 1.0
        if not hybrid:
            assert parts["bm25"] == 0.0
        blend = (
            0.6 * parts["semantic"]
            + (0.2 * parts["bm25"] if hybrid else 0.0)
            + 0.1 * parts["recency"]
            + 0.1 * parts["importance"]
        )
        assert hit.score == pytest.approx(blend, rel=1e-12, abs=1e-15)
    lexical = [h.scores["bm25"] for h in hits]
    if hybrid and any(lexical):
        assert max(lexical) == pytest.approx(1.0)  # normalised by the best BM25 score
