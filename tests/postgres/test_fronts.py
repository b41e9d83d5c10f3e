"""Many ``engramdb serve`` fronts over one PostgreSQL database: stateless fronts.

A write acknowledged by one front is seen right after by a read, a scan, a count, a vector
search, a text search and a session read on another (each search first catches up to the
cluster's last sequence, read from the leader).
"""

from __future__ import annotations

import numpy as np

import engramdb
from tests.postgres.conftest import ServeFactory

DIM = 32


def _vector(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.5
    return v


def test_write_through_one_front_is_read_and_searched_through_another(
    serve: ServeFactory, postgres_url: str
) -> None:
    a = serve("--data", postgres_url, "--durability", "sync", name="front-a")
    b = serve("--data", postgres_url, "--durability", "sync", name="front-b")
    with engramdb.connect(a.url) as via_a, engramdb.connect(b.url) as via_b:
        docs_a = via_a.vectors.create_collection("docs", DIM)
        docs_b = via_b.vectors.get_collection("docs")
        assert docs_b.search(_vector(0), k=1) == []  # b has built its (empty) index
        for i in range(20):
            generation = via_a.records("s").put(f"k{i}", {"i": i})
            seen = via_b.records("s").get(f"k{i}")
            assert seen is not None
            assert seen.generation == generation
            assert via_b.records("s").count() == i + 1
            docs_a.upsert([i], _vector(i)[None, :], texts=[f"note number{i}"])
            hits = docs_b.search(_vector(i), k=1)
            assert [h.id for h in hits] == [i]
            assert [h.id for h in docs_b.text_search(f"number{i}", k=1)] == [i]
        via_b.records("s").delete("k3")
        assert via_a.records("s").get("k3") is None
        assert [r.key for r in via_a.records("s").scan("k1").records][:2] == ["k1", "k10"]
        via_a.sessions.create("chat-1", {"turns": []})
        assert via_b.sessions.get("chat-1") is not None


def test_concurrent_increments_through_two_fronts_lose_no_update(
    serve: ServeFactory, postgres_url: str
) -> None:
    # Each increment is a read-modify-write; the fronts share nothing but PostgreSQL.
    from concurrent.futures import ThreadPoolExecutor

    a = serve("--data", postgres_url, name="front-a")
    b = serve("--data", postgres_url, name="front-b")
    urls = [a.url, b.url] * 4

    def bump(url: str) -> None:
        with engramdb.connect(url) as client:
            counter = client.records("c")
            for _ in range(25):
                counter.operate("n", [engramdb.ops.incr("v", 1)])

    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(bump, urls))
    with engramdb.connect(b.url) as client:
        record = client.records("c").get("n")
        assert record is not None
        assert record.bins["v"] == 25 * len(urls)
