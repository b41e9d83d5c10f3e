"""``EngramStore`` against LangGraph's own ``InMemoryStore`` as the reference: the same
operations on both must give the same answers (LangGraph's store test cases ship in its
repository, not in a package, so the reference implementation stands in for them). Plus
what the in-memory store cannot show: TTLs on a fake clock, persistence, every face."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langgraph.store.memory")

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from engramdb import FakeClock
from engramdb.integrations.langgraph import EngramStore
from tests.conftest import CLOCK_START, RemoteClock

DIMS = 32


def embed(texts: list[str]) -> list[list[float]]:
    """Bag of hashed words: texts sharing words are near, deterministic, no model."""
    out = []
    for text in texts:
        v = np.zeros(DIMS)
        for word in text.lower().split():
            v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
        out.append((v + 1e-3).tolist())
    return out


INDEX = {"dims": DIMS, "embed": embed, "fields": ["text"]}

# Namespaces and keys in sorted order, so the reference's insertion order is key order.
ITEMS = [
    (("docs",), "a", {"text": "wing flutter at transonic speed", "year": 2024, "tag": "x"}),
    (("docs",), "b", {"text": "laminar boundary layer", "year": 2021, "tag": "y"}),
    (("docs", "alice"), "c", {"text": "flutter of a wing", "year": 2023, "tag": "x"}),
    (("docs", "alice", "drafts"), "d", {"text": "draft on wing loads", "year": 2022}),
    (("docs", "bob"), "e", {"text": "boundary layer suction", "year": 2020, "nested": {"k": 1}}),
    (("docs-old",), "f", {"text": "old wing", "year": 1999}),
    (("notes", "alice"), "g", {"text": "shopping list", "year": 2024}),
    (("notes", "bob", "v1"), "h", {"text": "v1 notes", "year": 2024, "tags": ["a", "b"]}),
]

SEARCHES = [
    SearchOp(("docs",)),
    SearchOp(()),
    SearchOp(("docs",), limit=2, offset=1),
    SearchOp(("docs",), filter={"tag": "x"}),
    SearchOp(("docs",), filter={"year": {"$gte": 2022}}),
    SearchOp(("docs",), filter={"year": {"$gt": 2020, "$lt": 2024}}),
    SearchOp(("docs",), filter={"year": {"$ne": 2024}}),
    SearchOp((), filter={"nested": {"k": 1}}),
    SearchOp((), filter={"tags": ["a", "b"]}),
    SearchOp((), filter={"tags": ["a"]}),
    SearchOp(("nothing",)),
]

LISTINGS = [
    ListNamespacesOp(),
    ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("docs",)),)),
    ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("alice",)),)),
    ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("*", "alice")),)),
    ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("*", "v1")),)),
    ListNamespacesOp(max_depth=1),
    ListNamespacesOp(max_depth=2, limit=3, offset=1),
    ListNamespacesOp(
        match_conditions=(
            MatchCondition("prefix", ("docs",)),
            MatchCondition("suffix", ("drafts",)),
        )
    ),
]


def _plain(result: Any) -> Any:
    if isinstance(result, list):
        return [_plain(r) for r in result]
    if result is None or isinstance(result, tuple):
        return result
    return (result.namespace, result.key, result.value)


async def _both(
    store: BaseStore, reference: BaseStore, ops: list[Any], emptied: tuple[Any, ...] = ()
) -> None:
    """The same results from both stores, async and sync. ``emptied``: namespaces whose
    last item was deleted, which the reference keeps listing (an empty dict) and we do not."""
    mine = await store.abatch(ops)
    theirs = [
        [ns for ns in r if ns not in emptied] if isinstance(op, ListNamespacesOp) else r
        for op, r in zip(ops, reference.batch(ops))
    ]
    assert [_plain(r) for r in mine] == [_plain(r) for r in theirs]
    assert [_plain(r) for r in store.batch(ops)] == [_plain(r) for r in mine]


async def test_same_answers_as_langgraphs_in_memory_store(open_face: Callable[..., Any]) -> None:
    store = EngramStore(open_face(), index=INDEX)  # type: ignore[arg-type]
    reference = InMemoryStore(index=INDEX)  # type: ignore[arg-type]
    puts = [PutOp(ns, key, value) for ns, key, value in ITEMS]
    await _both(store, reference, puts)
    await _both(store, reference, [GetOp(ns, key) for ns, key, _ in ITEMS])
    await _both(store, reference, [GetOp(("docs",), "missing")])
    for op in SEARCHES:
        await _both(store, reference, [op])
    for listing in LISTINGS:
        await _both(store, reference, [listing])
    # Overwrite, delete, and a put and get in one batch.
    await _both(store, reference, [PutOp(("docs",), "a", {"text": "rewritten", "year": 1})])
    await _both(store, reference, [PutOp(("docs", "bob"), "e", None)])
    await _both(store, reference, [GetOp(("docs",), "a"), GetOp(("docs", "bob"), "e")])
    for listing in LISTINGS:
        if listing.offset == 0:  # (the reference pages before it leaves anything out)
            await _both(store, reference, [listing], emptied=(("docs", "bob"),))
    store.close()


def _by_score(hits: list[Any]) -> list[Any]:
    """Best first; equal scores (to float noise) by key, unscored last in their order."""
    scored = sorted(
        (h for h in hits if h.score is not None), key=lambda h: (-round(h.score, 5), h.key)
    )
    return scored + [h for h in hits if h.score is None]


async def test_semantic_search_ranks_as_the_reference(open_face: Callable[..., Any]) -> None:
    store = EngramStore(open_face(), index=INDEX)  # type: ignore[arg-type]
    reference = InMemoryStore(index=INDEX)  # type: ignore[arg-type]
    for ns, key, value in ITEMS:
        await store.aput(ns, key, value)
        reference.put(ns, key, value)
    store.put(("docs",), "unindexed", {"text": "wing wing wing", "year": 2025}, index=False)
    reference.put(("docs",), "unindexed", {"text": "wing wing wing", "year": 2025}, index=False)
    for prefix, query, filter in [
        (("docs",), "wing flutter", None),
        ((), "boundary layer", None),
        (("docs",), "wing", {"year": {"$gte": 2023}}),
        (("docs", "alice"), "wing loads", None),
    ]:
        mine = _by_score(await store.asearch(prefix, query=query, filter=filter, limit=10))
        theirs = _by_score(reference.search(prefix, query=query, filter=filter, limit=10))
        assert [(h.namespace, h.key) for h in mine] == [(h.namespace, h.key) for h in theirs]
        for a, b in zip(mine, theirs):
            assert (a.score is None) == (b.score is None)
            if a.score is not None:
                assert a.score == pytest.approx(b.score, abs=1e-4)
    # Re-indexing a changed item drops its old vectors.
    store.put(("docs",), "a", {"text": "shopping list"})
    hits = store.search(("docs",), query="wing flutter transonic", limit=10)
    assert "a" not in [h.key for h in hits if h.score is not None and h.score > 0.5]
    store.close()


async def test_ttl_expires_and_refreshes_on_read(
    face: str, open_face: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    if face.startswith("server"):
        server = request.getfixturevalue("engram_server")
        db = open_face()
        clock: Any = RemoteClock(server)
    else:
        clock = FakeClock(CLOCK_START)
        db = open_face(clock=clock)
    store = EngramStore(db, index=INDEX, ttl={"default_ttl": 2.0})  # type: ignore[arg-type]
    await store.aput(("s",), "short", {"text": "wing"})
    await store.aput(("s",), "forever", {"text": "wing"}, ttl=None)
    clock.advance(90)
    assert await store.aget(("s",), "short") is not None  # read: 2 more minutes
    clock.advance(90)
    assert await store.aget(("s",), "short", refresh_ttl=False) is not None
    clock.advance(60)
    assert await store.aget(("s",), "short") is None
    assert [h.key for h in await store.asearch(("s",), query="wing")] == ["forever"]
    assert await store.alist_namespaces() == [("s",)]
    await store.adelete(("s",), "forever")
    assert await store.alist_namespaces() == []
    store.close()


def test_items_persist_across_opens(tmp_path: Any) -> None:
    import engramdb

    with engramdb.open(tmp_path / "db") as db:
        EngramStore(db).put(("users", "u1"), "prefs", {"theme": "dark"})
    with engramdb.open(tmp_path / "db") as db:
        item = EngramStore(db).get(("users", "u1"), "prefs")
        assert item is not None
        assert item.value == {"theme": "dark"}
        assert item.created_at <= item.updated_at


def test_bad_namespaces_are_refused(tmp_path: Any) -> None:
    import engramdb

    with engramdb.open(tmp_path / "db") as db:
        store = EngramStore(db)
        with pytest.raises(InvalidNamespaceError):
            store.put(("a.b",), "k", {"v": 1})
        with pytest.raises(InvalidNamespaceError):
            store.put(("a\x01b",), "k", {"v": 1})
