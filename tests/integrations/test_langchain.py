"""What the standard suites do not cover: filters, MMR, hybrid search and its retriever,
TTLs on fake clocks, byte values past the record limit, the semantic cache's matching."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation

import engramdb
from engramdb import FakeClock
from engramdb.integrations.langchain import (
    EngramByteStore,
    EngramCache,
    EngramRetriever,
    EngramSemanticCache,
    EngramVectorStore,
)
from tests.conftest import CLOCK_START, RemoteClock
from tests.integrations.test_langgraph_store import DIMS, embed


class Words(DeterministicFakeEmbedding):
    """Texts sharing words embed near each other (bag of hashed words)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return embed([text])[0]


DOCS = [
    Document(id="1", page_content="wing flutter at transonic speed", metadata={"year": 2024}),
    Document(id="2", page_content="wing flutter in wind tunnels", metadata={"year": 2021}),
    Document(id="3", page_content="laminar boundary layer", metadata={"year": 2023}),
    Document(id="4", page_content="boundary layer suction", metadata={"year": 2019}),
]


def _clocked(face: str, open_face: Callable[..., Any], request: Any) -> tuple[Any, Any]:
    if face.startswith("server"):
        db = open_face()
        return db, RemoteClock(request.getfixturevalue("engram_server"))
    clock = FakeClock(CLOCK_START)
    return open_face(clock=clock), clock


async def test_filters_mmr_and_hybrid(open_face: Callable[..., Any]) -> None:
    store = EngramVectorStore(open_face(), Words(size=DIMS), collection="papers")
    assert await store.aadd_documents(DOCS) == ["1", "2", "3", "4"]
    recent = store.similarity_search("wing flutter", k=4, filter={"year": {"$gte": 2023}})
    assert [d.id for d in recent] == ["1", "3"]
    within = await store.asimilarity_search("boundary", k=4, filter={"year": {"$in": [2019]}})
    assert [d.id for d in within] == ["4"]
    scored = store.similarity_search_with_relevance_scores("wing flutter", k=2)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    # MMR: the second pick is the other topic, not the near-duplicate flutter paper.
    picked = store.max_marginal_relevance_search("wing flutter", k=2, fetch_k=4, lambda_mult=0.1)
    assert picked[0].id in ("1", "2")
    assert picked[1].id in ("3", "4")
    (first,) = await store.amax_marginal_relevance_search("wing flutter", k=1, fetch_k=4)
    assert first.id in ("1", "2")
    hybrid = store.hybrid_search("laminar", k=2)
    assert hybrid[0].id == "3"
    retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 1})
    assert isinstance(retriever, EngramRetriever)
    assert [d.id for d in retriever.invoke("suction")] == ["4"]
    assert [d.id for d in await retriever.ainvoke("suction")] == ["4"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert len(mmr.invoke("wing")) == 2
    assert store.delete(None) is True
    assert store.similarity_search("wing", k=4) == []
    store.close()


def test_from_texts_needs_a_database() -> None:
    with pytest.raises(engramdb.InvalidArgument, match="db="):
        EngramVectorStore.from_texts(["a"], Words(size=DIMS))
    with engramdb.open() as db:
        store = EngramVectorStore.from_texts(
            ["a b", "c d"], Words(size=DIMS), db=db, ids=["x", "y"]
        )
        assert [d.id for d in store.similarity_search("c d", k=1)] == ["y"]


async def test_byte_store_ttl_prefix_and_large_values(
    face: str, open_face: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    db, clock = _clocked(face, open_face, request)
    store = EngramByteStore(db, namespace="blobs", ttl=60)
    big = bytes(range(256)) * (12 << 10)  # 3 MiB: four records
    await store.amset([("doc:1", big), ("doc:2", b"small"), ("other", b"x")])
    assert await store.amget(["doc:1", "doc:2", "nope"]) == [big, b"small", None]
    assert sorted(store.yield_keys(prefix="doc:")) == ["doc:1", "doc:2"]
    store.mset([("doc:1", b"shrunk")])  # its old chunks go with the overwrite
    assert store.mget(["doc:1"]) == [b"shrunk"]
    clock.advance(61)
    assert await store.amget(["doc:1", "doc:2", "other"]) == [None, None, None]
    assert [k async for k in store.ayield_keys()] == []
    with pytest.raises(engramdb.InvalidArgument, match="bytes"):
        store.mset([("k", "not bytes")])  # type: ignore[list-item]
    store.close()


async def test_large_values_without_ttl_are_reclaimed(open_face: Callable[..., Any]) -> None:
    store = EngramByteStore(open_face(), namespace="blobs")
    big = b"z" * (3 << 20)
    store.mset([("a", big)])
    assert store.mget(["a"]) == [big]
    await store.amdelete(["a"])
    assert await store.amget(["a"]) == [None]
    chunks = EngramByteStore(store.db, namespace="blobs.chunks")
    assert [k async for k in chunks.ayield_keys()] == []
    store.close()


GENERATIONS = [
    Generation(text="plain", generation_info={"finish": "stop"}),
    ChatGeneration(message=AIMessage(content="hello", id="m1"), generation_info=None),
]


async def test_caches_keep_chat_generations_and_expire(
    face: str, open_face: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    db, clock = _clocked(face, open_face, request)
    exact = EngramCache(db, ttl=30)
    semantic = EngramSemanticCache(db, Words(size=DIMS), score_threshold=0.9, ttl=30)
    for cache in (exact, semantic):
        await cache.aupdate("what is wing flutter", "model-a", GENERATIONS)
        assert await cache.alookup("what is wing flutter", "model-a") == GENERATIONS
        assert cache.lookup("what is wing flutter", "model-b") is None  # another model
    # Semantic: the same words in another order is a hit; another question is not.
    assert semantic.lookup("wing flutter is what", "model-a") == GENERATIONS
    assert semantic.lookup("boundary layer suction", "model-a") is None
    assert exact.lookup("wing flutter is what", "model-a") is None
    clock.advance(31)
    assert exact.lookup("what is wing flutter", "model-a") is None
    assert await semantic.alookup("what is wing flutter", "model-a") is None
    exact.close()
    semantic.close()
