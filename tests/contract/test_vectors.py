"""The embedding store contract: collections, items, vector / BM25 / hybrid search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engramdb import Conflict, Database, FakeClock, InvalidArgument, NotFound

DIM = 8


def unit(i: int, dim: int = DIM) -> np.ndarray:
    """A distinct direction per i (nearby i are nearby vectors)."""
    angle = i / 50.0
    v = np.zeros(dim, dtype=np.float32)
    v[0], v[1] = np.cos(angle), np.sin(angle)
    v[2 + i % (dim - 2)] = 0.05
    return v


@pytest.fixture
def docs(db: Database) -> Any:
    collection = db.vectors.create_collection("docs", DIM)
    ids = list(range(100))
    collection.upsert(
        ids,
        np.stack([unit(i) for i in ids]),
        metadata=[{"lang": "en" if i % 2 else "fr", "year": 2000 + i % 10, "i": i} for i in ids],
        texts=[f"note {i} on {'turbulent wings' if i % 5 == 0 else 'laminar flow'}" for i in ids],
    )
    return collection


def test_collections_are_created_listed_and_dropped(db: Database) -> None:
    store = db.vectors
    created = store.create_collection("a", 4, "l2", text=False)
    assert created.info.dim == 4
    assert created.info.metric == "l2"
    assert store.get_collection("a").info == created.info
    with pytest.raises(Conflict):
        store.create_collection("a", 4, "l2", text=False)
    assert store.create_collection("a", 4, "l2", text=False, exist_ok=True).info == created.info
    with pytest.raises(Conflict):
        store.create_collection("a", 5, exist_ok=True)  # a different definition
    store.create_collection("b", 4)
    assert sorted(i.name for i in store.list_collections()) == ["a", "b"]
    assert store.drop_collection("a") is True
    assert store.drop_collection("a") is False
    with pytest.raises(NotFound):
        store.get_collection("a")
    with pytest.raises(NotFound):
        created.search(np.ones(4), 1)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("bad name!", 4), {}),
        (("x", 0), {}),
        (("x", 5000), {}),
        (("x", 4, "hamming"), {}),
        (("x", 4), {"m": 0}),
    ],
)
def test_bad_collection_definitions(db: Database, args: tuple[Any, ...], kwargs: Any) -> None:
    with pytest.raises(InvalidArgument):
        db.vectors.create_collection(*args, **kwargs)
    assert db.vectors.list_collections() == []


def test_upsert_get_count_delete(docs: Any) -> None:
    assert docs.count() == 100
    got = docs.get([3, 999, 4])
    assert got[1] is None
    assert got[0].id == 3
    assert got[0].metadata == {"lang": "en", "year": 2003, "i": 3}
    assert got[0].text == "note 3 on laminar flow"
    created = got[0].generation
    np.testing.assert_allclose(got[0].vector, unit(3) / np.linalg.norm(unit(3)), rtol=1e-6)
    assert docs.upsert([3], [unit(3)], [{"lang": "de"}]) == [created + 1]
    assert docs.get([3])[0].metadata == {"lang": "de"}
    assert docs.delete([3, 4, 999]) == 2
    assert docs.count() == 98
    assert docs.get([3, 4]) == [None, None]


def test_upsert_with_expected_generations_is_compare_and_set(docs: Any) -> None:
    (one,) = docs.get([1])
    first = one.generation
    updated, created = docs.upsert([1, 500], [unit(1), unit(2)], expect_generation=[first, 0])
    assert updated == first + 1
    assert created > updated  # a new item starts above every generation seen before
    with pytest.raises(Conflict) as caught:
        docs.upsert([1, 501], [unit(1), unit(3)], expect_generation=[first, None])
    assert caught.value.generation == first + 1
    assert docs.get([501]) == [None]  # the chunk was not written


def test_search_finds_the_nearest_items(docs: Any) -> None:
    hits = docs.search(unit(40), 3)
    assert hits[0].id == 40
    assert {h.id for h in hits} <= {38, 39, 40, 41, 42}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"lang": "fr", "year": 2000, "i": 40}
    assert hits[0].text == "note 40 on turbulent wings"
    assert hits[0].vector is None
    bare = docs.search(unit(40), 3, include=[])
    assert [h.id for h in bare] == [h.id for h in hits]
    assert bare[0].metadata is None
    with_vector = docs.search(unit(40), 1, include=["vector"])
    assert len(with_vector[0].vector) == DIM


def test_search_many_answers_each_query(docs: Any) -> None:
    results = docs.search_many(np.stack([unit(10), unit(90)]), 2)
    assert [r[0].id for r in results] == [10, 90]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"lang": "en"}, lambda m: m["lang"] == "en"),
        ({"lang": {"$ne": "en"}}, lambda m: m["lang"] != "en"),
        ({"year": {"$in": [2001, 2003]}}, lambda m: m["year"] in (2001, 2003)),
        ({"year": {"$nin": [2001, 2003]}}, lambda m: m["year"] not in (2001, 2003)),
        ({"year": {"$gte": 2008}}, lambda m: m["year"] >= 2008),
        ({"i": {"$gt": 10, "$lte": 20}}, lambda m: 10 < m["i"] <= 20),
        ({"$or": [{"i": 3}, {"i": 77}]}, lambda m: m["i"] in (3, 77)),
        (
            {"$and": [{"lang": "en"}, {"year": {"$lt": 2002}}]},
            lambda m: m["lang"] == "en" and m["year"] < 2002,
        ),
        ({"$not": {"lang": "en"}}, lambda m: m["lang"] != "en"),
        ({"missing": "x"}, lambda m: False),
    ],
)
def test_filters_return_k_true_matches(docs: Any, flt: Any, expected: Any) -> None:
    matching = [
        i
        for i in range(100)
        if expected({"lang": "en" if i % 2 else "fr", "year": 2000 + i % 10, "i": i})
    ]
    hits = docs.search(unit(50), 10, filter=flt)
    assert all(expected(h.metadata) for h in hits)
    assert len(hits) == min(10, len(matching))
    # and they are the nearest matches: the same scores as an exact search
    query = unit(50) / np.linalg.norm(unit(50))
    exact = sorted(
        (float(query @ (unit(i) / np.linalg.norm(unit(i)))) for i in matching), reverse=True
    )[: len(hits)]
    np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-5)


@pytest.mark.parametrize(
    "flt",
    [
        {"lang": {"$regex": "e"}},
        {"$and": {}},
        {"$or": []},
        {"year": {"$gt": True}},
        {"year": {"$in": "2001"}},
        {"": 1},
        "lang = en",
        {"lang": {"a": 1}},
    ],
)
def test_invalid_filters_are_rejected(docs: Any, flt: Any) -> None:
    with pytest.raises(InvalidArgument):
        docs.search(unit(1), 3, filter=flt)


def test_deleted_items_never_appear(docs: Any) -> None:
    docs.delete(list(range(30, 70)))
    hits = docs.search(unit(50), 20)
    assert all(not 30 <= h.id < 70 for h in hits)
    assert len(hits) == 20
    assert all(not 30 <= h.id < 70 for h in docs.text_search("wings", 20))


def test_updated_vectors_move(docs: Any) -> None:
    docs.upsert([0], [unit(60)])
    assert 0 in [h.id for h in docs.search(unit(60), 2)]
    assert 0 not in [h.id for h in docs.search(unit(0), 3)]


def test_expired_items_are_invisible_at_once(db: Database, clock: FakeClock) -> None:
    c = db.vectors.create_collection("ttl", DIM)
    c.upsert([1, 2], [unit(1), unit(2)], texts=["wing one", "wing two"], ttl=10)
    c.upsert([3], [unit(3)], texts=["wing three"])
    assert {h.id for h in c.search(unit(1), 3)} == {1, 2, 3}
    clock.advance(10)
    assert [h.id for h in c.search(unit(1), 3)] == [3]
    assert [h.id for h in c.text_search("wing", 3)] == [3]
    assert c.count() == 1
    assert c.get([1, 3])[0] is None
    c.touch([3], 5)
    clock.advance(5)
    assert c.search(unit(1), 3) == []


def test_text_search_ranks_by_bm25(docs: Any) -> None:
    hits = docs.text_search("turbulent wing", 5)
    assert len(hits) == 5
    assert all(h.id % 5 == 0 for h in hits)  # only notes about turbulent wings match
    assert hits[0].score >= hits[-1].score > 0
    filtered = docs.text_search("turbulent", 5, filter={"lang": "en"})
    assert [h.id % 10 for h in filtered] == [5] * len(filtered)
    assert len(filtered) == 5
    assert docs.text_search("???", 5) == []


def test_hybrid_search_fuses_both_rankings(docs: Any) -> None:
    hits = docs.hybrid_search("turbulent wings", unit(42), 5)
    ids = [h.id for h in hits]
    assert len(ids) == 5
    assert 40 in ids[:2]  # near the vector and about turbulent wings
    assert hits[0].scores is not None
    assert {"vector", "text"} <= set(hits[0].scores) or ids[0] != 40
    weighted = docs.hybrid_search("turbulent wings", unit(42), 5, fusion="weighted", alpha=1.0)
    assert [h.id for h in weighted][:1] == [42]  # alpha=1: the vector ranking alone


def test_bad_items_are_rejected_and_nothing_is_written(docs: Any) -> None:
    for call in [
        lambda: docs.upsert([1000], [np.ones(DIM + 1)]),
        lambda: docs.upsert([1000], [np.full(DIM, np.nan)]),
        lambda: docs.upsert([1000], [np.full(DIM, np.inf)]),
        lambda: docs.upsert([1000], [np.zeros(DIM)]),  # no direction under cosine
        lambda: docs.upsert([1000, 1001], [unit(1)]),
        lambda: docs.upsert([1000, 1000], [unit(1), unit(2)]),
        lambda: docs.upsert([1000], [unit(1)], metadata=[{"x": {1, 2}}]),
        lambda: docs.upsert([1000], [unit(1)], texts=[5]),
        lambda: docs.upsert([1.5], [unit(1)]),
        lambda: docs.search(np.ones(DIM + 1), 3),
        lambda: docs.search(np.stack([unit(1), unit(2)]), 3),  # one vector, not a batch
        lambda: docs.search([[1.0] * DIM], 3),
        lambda: docs.search(np.full(DIM, np.nan), 3),
        lambda: docs.search(np.zeros(DIM), 3),
        lambda: docs.search(unit(1), 0),
        lambda: docs.hybrid_search("x", unit(1), 3, fusion="max"),
    ]:
        with pytest.raises(InvalidArgument):
            call()
    assert docs.count() == 100
    assert docs.get([1000]) == [None]
    assert len(docs.search(np.full(DIM, 1e30), 1)) == 1  # huge but finite: it normalises


def test_unknown_collection_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        db.vectors.get_collection("nope")


def test_index_stats_are_reported(docs: Any, db: Database) -> None:
    docs.search(unit(1), 1)
    figures = db.stats()["indexes"]["docs"]
    assert figures["items_indexed"] == 100
    assert figures["lag"] == 0
    assert figures["memory_bytes"] > 0


def test_a_changed_or_deleted_string_value_leaves_its_equality_filter(docs: Any) -> None:
    assert 3 in {h.id for h in docs.search(unit(3), 100, filter={"lang": "en"})}
    docs.upsert([3], [unit(3)], metadata=[{"lang": "de"}], texts=["note 3 in german"])
    assert 3 not in {h.id for h in docs.search(unit(3), 100, filter={"lang": "en"})}
    assert [h.id for h in docs.search(unit(3), 5, filter={"lang": "de"})] == [3]
    assert [h.id for h in docs.text_search("german", 5, filter={"lang": "de"})] == [3]
    docs.delete([3])
    assert docs.search(unit(3), 5, filter={"lang": "de"}) == []
    assert docs.text_search("german", 5, filter={"lang": {"$in": ["de", "en"]}}) == []


@pytest.mark.parametrize("selective", [True, False], ids=["few-admissible", "many-admissible"])
def test_filtered_text_search_finds_k_matches_among_many(db: Database, selective: bool) -> None:
    # Few admissible documents are named to the text index; many (over 4096, and over 5%
    # of the collection) are found by searching deeper until k pass: both give k matches.
    n = 6000
    collection = db.vectors.create_collection("many", DIM)
    for start in range(0, n, 2000):
        ids = list(range(start, start + 2000))
        collection.upsert(
            ids,
            np.stack([unit(i) for i in ids]),
            metadata=[{"group": "rare" if i % 1000 == 7 else "common"} for i in ids],
            texts=["wing flutter" if i % 2 else "wing flutter flutter" for i in ids],
        )
    group = "rare" if selective else "common"
    hits = collection.text_search("flutter", 10, filter={"group": group}, include=["metadata"])
    assert len(hits) == (6 if selective else 10)
    assert all(h.metadata is not None and h.metadata["group"] == group for h in hits)
    if not selective:  # the documents saying "flutter" twice rank first
        assert all(int(h.id) % 2 == 0 for h in hits)
