"""Recall, filtered recall, persistence and multi-process coherence of the vector index."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engramdb
from engramdb.vectors.collection import Collection

N, DIM, QUERIES = 12_000, 48, 150


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(60, dim))
    points = centers[rng.integers(0, 60, n)] + 0.35 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    both = clustered(N + QUERIES, DIM, seed=7)
    return both[:N], both[N:]


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[set[int]]:
    sims = queries @ vectors.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :k]
    return [{int(i) for i in row if mask is None or mask[i]} for row in top]


def recall(found: list[list[Any]], truth: list[set[int]]) -> float:
    hit = sum(len({h.id for h in f} & t) for f, t in zip(found, truth))
    return hit / sum(len(t) for t in truth)


def filled(db: engramdb.Database, vectors: np.ndarray, **options: Any) -> Collection:
    collection = db.vectors.create_collection("c", DIM, **options)
    collection.upsert(
        list(range(len(vectors))),
        vectors,
        metadata=[{"bucket": i % 100, "tenth": i % 10} for i in range(len(vectors))],
    )
    return collection


def test_recall_at_10_against_exact_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    with engramdb.open(None, sweep_interval=None) as db:
        collection = filled(db, vectors)
        found = collection.search_many(queries, 10, include=[])
        assert recall(found, exact_top(vectors, queries, 10)) >= 0.95
        singles = [collection.search(q, 10, include=[]) for q in queries[:30]]
        assert recall(singles, exact_top(vectors, queries[:30], 10)) >= 0.95


@pytest.mark.parametrize("exact_threshold", [100, 4096], ids=["graph", "default"])
@pytest.mark.parametrize(("field", "selectivity"), [("bucket", 0.01), ("tenth", 0.10)])
def test_filtered_search_returns_k_true_matches(
    data: tuple[np.ndarray, np.ndarray], exact_threshold: int, field: str, selectivity: float
) -> None:
    vectors, queries = data
    with engramdb.open(None, sweep_interval=None) as db:
        collection = filled(db, vectors, exact_threshold=exact_threshold)
        mask = (np.arange(N) % (100 if field == "bucket" else 10)) == 3
        assert abs(mask.mean() - selectivity) < 1e-9
        found = collection.search_many(queries, 10, filter={field: 3})
        assert all(len(row) == 10 for row in found)
        assert all(h.metadata[field] == 3 for row in found for h in row)
        assert recall(found, exact_top(vectors, queries, 10, mask)) >= 0.95


def test_deleted_and_replaced_items_never_come_back_across_compaction(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = data
    with engramdb.open(None, sweep_interval=None) as db:
        collection = filled(db, vectors[:4000])
        gone = list(range(0, 4000, 3)) + list(range(1, 4000, 3))  # two thirds
        collection.delete(gone)
        collection.search(queries[0], 1)
        stats = db.stats()["indexes"]["c"]
        assert stats["rebuilds"] >= 1  # tombstones passed half: the graph was rebuilt
        assert stats["tombstones"] == 0
        keep = np.zeros(4000, dtype=bool)
        keep[2::3] = True
        found = collection.search_many(queries, 10, include=[])
        assert all(h.id % 3 == 2 for row in found for h in row)
        assert recall(found, exact_top(vectors[:4000], queries, 10, keep)) >= 0.95


def test_restart_keeps_results_identical(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    path = tmp_path / "db"
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        collection = filled(db, vectors[:6000])
        collection.delete(list(range(100)))
        # Settle the calibrated ef first (it is persisted, so the reopened collection
        # searches with the same one).
        ef = collection.calibrate()["ef"]
        before = [[(h.id, h.score) for h in row] for row in collection.search_many(queries, 10)]
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        collection = db.vectors.get_collection("c")
        after = [[(h.id, h.score) for h in row] for row in collection.search_many(queries, 10)]
        assert db.stats()["indexes"]["c"]["snapshot_sequence"] > 0  # loaded, not rebuilt
        assert collection.stats()["ef"] == ef
    assert after == before


def test_a_lost_snapshot_is_rebuilt_from_the_items(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    path = tmp_path / "db"
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        filled(db, vectors[:3000])
    for root, _, files in os.walk(path / "indexes"):
        for name in files:
            Path(root, name).write_bytes(b"garbage")
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        collection = db.vectors.get_collection("c")
        found = collection.search_many(queries[:20], 10, include=[])
        assert recall(found, exact_top(vectors[:3000], queries[:20], 10)) >= 0.95


def _upsert_in_child(path: str, ids: list[int], vectors: np.ndarray) -> None:
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        db.vectors.get_collection("c").upsert(ids, vectors, texts=["from the child"] * len(ids))


def test_two_processes_see_each_others_upserts(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, _ = data
    path = str(tmp_path / "db")
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM)
        collection.upsert([0], vectors[:1])
        assert [h.id for h in collection.search(vectors[5], 1)] == [0]
        child = multiprocessing.get_context("spawn").Process(
            target=_upsert_in_child, args=(path, [5, 6], vectors[5:7])
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        # The other process's upsert returned before this search started: it must be seen.
        assert [h.id for h in collection.search(vectors[5], 1)] == [5]
        assert [h.id for h in collection.text_search("child", 5)] == [5, 6] or {
            h.id for h in collection.text_search("child", 5)
        } == {5, 6}
        collection.upsert([7], vectors[7:8])
    # and the child side: a fresh process sees the parent's last write
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_nearest_in_child, (path, vectors[7])) == 7


def _nearest_in_child(path: str, vector: np.ndarray) -> Any:
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        return db.vectors.get_collection("c").search(vector, 1)[0].id


def test_change_log_truncation_forces_a_rebuild(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    with engramdb.open(None, sweep_interval=None, changelog_retention=10) as db:
        collection = db.vectors.create_collection("c", DIM)
        collection.upsert(list(range(50)), vectors[:50])
        collection.search(queries[0], 1)
        # Behind this state's back: writes the retention window cannot hold.
        items = db._internal_records(collection.set_name)
        for i in range(50, 80):
            items.put(i, {"vector": vectors[i], "metadata": {}})
        db.sweep()
        assert db.first_sequence() > 52
        found = collection.search(vectors[70], 1, include=[])
        assert [h.id for h in found] == [70]
        assert collection.count() == 80


@pytest.mark.parametrize("admitted", [40, 600])
def test_a_text_search_within_few_documents_ranks_them_as_the_whole_index_does(
    tmp_path: Path, admitted: int
) -> None:
    # A filter admitting few documents (a user's memories among everyone's) searches only
    # those: 40 as an OR of label terms, 600 as a term set. Either must rank exactly as a
    # search of the whole index, filtered afterwards.
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)]
    n = 3000
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 15)))) for _ in range(n)]
    chosen = set(rng.choice(n, size=admitted, replace=False).tolist())
    with engramdb.open(tmp_path / "db", sweep_interval=None) as db:
        c = db.vectors.create_collection("t", 4, text=True)
        c.upsert(
            list(range(n)),
            rng.normal(size=(n, 4)).astype(np.float32),
            texts=texts,
            metadata=[{"in": i in chosen} for i in range(n)],
        )
        for query in ("w1 w2 w3", "w7", "w10 w10 w250"):
            found = c.text_search(query, 10, filter={"in": True})
            whole = [h for h in c.text_search(query, n) if h.id in chosen][:10]
            assert [round(h.score, 4) for h in found] == [round(h.score, 4) for h in whole]
            cut = whole[-1].score if len(whole) == 10 else -1.0
            assert {h.id for h in found if h.score > cut} == {h.id for h in whole if h.score > cut}
            assert found
