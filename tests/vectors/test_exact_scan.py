"""Exact search over most of a large collection scans a half-precision copy, then re-scores
its best candidates in full precision (``engramdb.index.vector``): the answers must be the
full-precision scan's, through tombstones, filters, later writes and every metric."""

from __future__ import annotations

import numpy as np
import pytest

import engramdb
from engramdb.index.vector import COARSE_FROM

N, DIM, K = COARSE_FROM + 3_000, 32, 10


def vectors(n: int, seed: int, metric: str) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x


def truth(stored: np.ndarray, keep: np.ndarray, query: np.ndarray, metric: str) -> list[str]:
    """Ids of the exact top K among the ``keep`` rows, by full-precision numpy."""
    if metric == "l2":
        scores = -((stored - query) ** 2).sum(axis=1)
    else:
        q = query / np.linalg.norm(query) if metric == "cosine" else query
        scores = stored @ q
    scores = np.where(keep, scores, -np.inf)
    return [f"v{i}" for i in np.argsort(-scores, kind="stable")[:K]]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_a_full_scan_answers_like_full_precision(metric: str) -> None:
    stored = vectors(N, 1, metric)
    queries = vectors(12, 2, metric)
    with engramdb.open(None) as db:
        # Every search is exact below exact_threshold: the whole collection is scanned.
        c = db.vectors.create_collection("c", DIM, metric=metric, text=False, exact_threshold=10**6)
        for lo in range(0, N, 5_000):
            ids = [f"v{i}" for i in range(lo, min(N, lo + 5_000))]
            c.upsert(ids, stored[lo : lo + 5_000], metadata=[{"odd": i % 2} for i in
                                                             range(lo, lo + len(ids))])  # fmt: skip
        keep = np.ones(N, dtype=bool)
        for q in queries:
            assert [h.id for h in c.search(q, K, include=[])] == truth(stored, keep, q, metric)
        # Tombstones (a third deleted) and a filter keeping most of the rest: still exact.
        gone = list(range(0, N, 3))
        c.delete([f"v{i}" for i in gone])
        keep[gone] = False
        for q in queries:
            assert [h.id for h in c.search(q, K, include=[])] == truth(stored, keep, q, metric)
        even = keep & (np.arange(N) % 2 == 0)
        for q in queries[:4]:
            hits = c.search(q, K, filter={"odd": {"$ne": 1}}, include=[])
            assert [h.id for h in hits] == truth(stored, even, q, metric)
        # Writes after the first scan made the copy: the copy follows them.
        nearest = queries[0] * 10 if metric == "ip" else queries[0]  # the best match
        c.upsert(["new"], [nearest])
        assert c.search(queries[0], K, include=[])[0].id == "new"


def test_the_scan_keeps_k_larger_than_its_rescoring_depth() -> None:
    stored = vectors(N, 3, "cosine")
    with engramdb.open(None) as db:
        c = db.vectors.create_collection("c", DIM, text=False, exact_threshold=10**6)
        c.upsert([f"v{i}" for i in range(N)], stored)
        q = vectors(1, 4, "cosine")[0]
        got = [h.id for h in c.search(q, 300, include=[])]
        want = [f"v{i}" for i in np.argsort(-(stored @ q), kind="stable")[:300]]
        assert got == want
