"""LlamaIndex's ``VectorStoreIndex`` on ``EngramVectorStore``, end to end, against
LlamaIndex's own ``SimpleVectorStore`` on the same documents and the same deterministic
embedder: the same top-k for dense queries, filtered or not, on an embedded database and
through a live server, sync and asyncio."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.core.vector_stores.simple import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import engramdb
import engramdb.aio
from engramdb.embedders import HashEmbedder
from engramdb.errors import InvalidArgument
from engramdb.integrations.llama_index import (
    EngramEmbedding,
    EngramVectorStore,
    to_engram_filter,
)

DIM = 256

CORPUS = [
    (
        "d01",
        "Transonic wing flutter appears when shock waves oscillate on the wing.",
        "aero",
        2019,
        4.5,
    ),
    (
        "d02",
        "Laminar boundary layers separate early under adverse pressure gradients.",
        "aero",
        2021,
        3.9,
    ),
    (
        "d03",
        "Helicopter rotor blades suffer dynamic stall at high advance ratios.",
        "aero",
        2023,
        4.1,
    ),
    (
        "d04",
        "Sourdough bread rises slowly thanks to wild yeast and lactic bacteria.",
        "food",
        2020,
        4.8,
    ),
    ("d05", "A good ramen broth simmers pork bones for twelve hours.", "food", 2022, 4.2),
    ("d06", "Fresh pasta needs eggs, flour and a long rest before rolling.", "food", 2018, 3.5),
    (
        "d07",
        "Photosynthesis converts light into chemical energy inside chloroplasts.",
        "bio",
        2017,
        4.0,
    ),
    ("d08", "Mitochondria produce ATP through oxidative phosphorylation.", "bio", 2024, 4.7),
    ("d09", "CRISPR lets researchers edit genes with a guide RNA and Cas9.", "bio", 2023, 4.9),
    ("d10", "The Tour de France climbs the Alps and the Pyrenees every July.", "sport", 2021, 3.2),
    ("d11", "Marathon runners hit the wall when glycogen runs out.", "sport", 2019, 3.8),
    ("d12", "A chess opening like the Sicilian Defence fights for the centre.", "games", 2022, 4.4),
    (
        "d13",
        "Go players surround territory with stones on a nineteen by nineteen board.",
        "games",
        2020,
        4.6,
    ),
    (
        "d14",
        "Jet engines compress air, burn fuel and expand hot gas through a turbine.",
        "aero",
        2024,
        4.3,
    ),
    ("d15", "Bees communicate the direction of flowers with a waggle dance.", "bio", 2018, 4.2),
    (
        "d16",
        "Espresso is brewed by forcing hot water through finely ground coffee.",
        "food",
        2024,
        4.0,
    ),
]

QUERIES = [
    "wing flutter and shock waves",
    "how is bread made with yeast",
    "energy production in cells",
    "board games strategy",
    "running out of energy during a marathon",
    "coffee brewing",
]


def embed_model() -> EngramEmbedding:
    """A deterministic local embed model: engramdb's ``HashEmbedder`` (no downloads)."""
    return EngramEmbedding(HashEmbedder(DIM))


def documents() -> list[Document]:
    return [
        Document(
            text=text, doc_id=doc_id, metadata={"topic": topic, "year": year, "rating": rating}
        )
        for doc_id, text, topic, year, rating in CORPUS
    ]


def build(store: Any) -> VectorStoreIndex:
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(
        documents(), storage_context=context, embed_model=embed_model()
    )


def ranked(results: list[NodeWithScore]) -> list[tuple[str, str]]:
    return [(str(r.node.ref_doc_id), r.node.get_content()) for r in results]


def scores(results: list[NodeWithScore]) -> list[float]:
    return [float(r.score or 0.0) for r in results]


def assert_same_ranking(ours: list[NodeWithScore], theirs: list[NodeWithScore]) -> None:
    """The same hits in the same order, up to the order of equal scores: a document that
    shares no word with the query scores 0 under the hash embedder, and each store breaks
    ties its own way (so the last group of equal scores may be cut differently by k)."""
    assert scores(ours) == pytest.approx(scores(theirs), abs=1e-5)
    got, want = ranked(ours), ranked(theirs)
    values = scores(theirs)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or abs(values[end] - values[start]) > 1e-5:
            if end < len(values):  # the last group may be cut differently by k
                assert set(got[start:end]) == set(want[start:end]), (got, want)
            start = end


@pytest.fixture(params=["lmdb", "server"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "lmdb":
        database = engramdb.open(tmp_path / "db", durability="none")
    else:
        database = engramdb.connect(request.getfixturevalue("engram_server").url)
    yield database
    database.close()


@pytest.fixture
def name() -> str:
    return f"li-{uuid.uuid4().hex[:12]}"  # the server is shared by the session


@pytest.fixture
def reference() -> VectorStoreIndex:
    return build(SimpleVectorStore())


def test_dense_retrieval_matches_simple_vector_store(
    db: Any, name: str, reference: VectorStoreIndex
) -> None:
    index = build(EngramVectorStore(db, collection_name=name))
    for query in QUERIES:
        for k in (1, 3, 5):
            ours = index.as_retriever(similarity_top_k=k).retrieve(query)
            theirs = reference.as_retriever(similarity_top_k=k).retrieve(query)
            assert_same_ranking(ours, theirs)


FILTERS = [
    MetadataFilters(filters=[MetadataFilter(key="topic", value="aero")]),
    MetadataFilters(filters=[MetadataFilter(key="topic", value="aero", operator="!=")]),
    MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=">")]),
    MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=">=")]),
    MetadataFilters(filters=[MetadataFilter(key="rating", value=4.2, operator="<")]),
    MetadataFilters(filters=[MetadataFilter(key="rating", value=4.2, operator="<=")]),
    MetadataFilters(filters=[MetadataFilter(key="topic", value=["bio", "food"], operator="in")]),
    MetadataFilters(filters=[MetadataFilter(key="topic", value=["bio", "food"], operator="nin")]),
    MetadataFilters(filters=[MetadataFilter(key="missing", value="x", operator="!=")]),
    MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="food"),
            MetadataFilter(key="year", value=2020, operator=">="),
        ]
    ),
    MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="sport"),
            MetadataFilter(key="rating", value=4.6, operator=">="),
        ],
        condition=FilterCondition.OR,
    ),
    MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="aero"),
            MetadataFilter(key="year", value=2019, operator="<="),
        ],
        condition=FilterCondition.NOT,
    ),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr(to_engram_filter(f)))
def test_filtered_retrieval_matches_simple_vector_store(
    db: Any, name: str, reference: VectorStoreIndex, filters: MetadataFilters
) -> None:
    index = build(EngramVectorStore(db, collection_name=name))
    for query in QUERIES:
        ours = index.as_retriever(similarity_top_k=4, filters=filters).retrieve(query)
        theirs = reference.as_retriever(similarity_top_k=4, filters=filters).retrieve(query)
        assert_same_ranking(ours, theirs)
        assert ours, "every filter here leaves some documents"


def test_nested_filters_and_list_operators(db: Any, name: str) -> None:
    store = EngramVectorStore(db, collection_name=name)
    store.add(
        [
            TextNode(
                id_="n1", text="a", embedding=[1.0, 0.0], metadata={"tags": ["x", "y"], "n": 1}
            ),
            TextNode(id_="n2", text="b", embedding=[0.0, 1.0], metadata={"tags": ["y"], "n": 2}),
            TextNode(id_="n3", text="c", embedding=[1.0, 1.0], metadata={"tags": ["z"], "n": 3}),
        ]
    )

    def ids(*filters: MetadataFilter | MetadataFilters, condition: str = "and") -> set[str]:
        query = VectorStoreQuery(
            query_embedding=[1.0, 0.5],
            similarity_top_k=10,
            filters=MetadataFilters(filters=list(filters), condition=condition),
        )
        return set(store.query(query).ids or [])

    assert ids(MetadataFilter(key="tags", value="y", operator="contains")) == {"n1", "n2"}
    assert ids(MetadataFilter(key="tags", value=["x", "z"], operator="any")) == {"n1", "n3"}
    assert ids(MetadataFilter(key="tags", value=["x", "y"], operator="all")) == {"n1"}
    nested = MetadataFilters(
        filters=[MetadataFilter(key="n", value=1), MetadataFilter(key="n", value=3)],
        condition=FilterCondition.OR,
    )
    assert ids(nested, MetadataFilter(key="tags", value="z", operator="contains")) == {"n3"}


@pytest.mark.parametrize(
    "operator", [FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE]
)
def test_unmappable_operators_raise_a_clear_error(
    db: Any, name: str, operator: FilterOperator
) -> None:
    store = EngramVectorStore(db, collection_name=name)
    store.add([TextNode(id_="n1", text="a", embedding=[1.0, 0.0], metadata={"title": "abc"})])
    filters = MetadataFilters(filters=[MetadataFilter(key="title", value="b", operator=operator)])
    with pytest.raises(InvalidArgument, match=operator.name):
        store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], filters=filters))


def test_is_empty_and_unsupported_modes_raise_clear_errors(db: Any, name: str) -> None:
    store = EngramVectorStore(db, collection_name=name)
    store.add([TextNode(id_="n1", text="a", embedding=[1.0, 0.0])])
    empty = MetadataFilters(filters=[MetadataFilter(key="k", value=None, operator="is_empty")])
    with pytest.raises(InvalidArgument, match="IS_EMPTY"):
        store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], filters=empty))
    with pytest.raises(InvalidArgument, match="'mmr'"):
        store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], mode=VectorStoreQueryMode.MMR))
    with pytest.raises(InvalidArgument, match="query_str"):
        store.query(VectorStoreQuery(mode=VectorStoreQueryMode.TEXT_SEARCH))


def test_text_and_hybrid_modes(db: Any, name: str) -> None:
    index = build(EngramVectorStore(db, collection_name=name))
    bm25 = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=3)
    top = bm25.retrieve("glycogen")
    assert [r.node.ref_doc_id for r in top] == ["d11"]  # the only document with the word
    # alpha is LlamaIndex's weight of the vector side: 1.0 ranks as the dense query does,
    # 0.0 as BM25 does (min-max normalised, so the weakest BM25 hit ties with the documents
    # BM25 did not find: it is left out of the comparison).
    query = "wing shock waves turbine engines"
    dense = [r.node.ref_doc_id for r in index.as_retriever(similarity_top_k=4).retrieve(query)]
    text = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=4)
    only_text = [r.node.ref_doc_id for r in text.retrieve(query)]
    assert len(only_text) >= 2

    def hybrid(alpha: float | None) -> list[str | None]:
        retriever = index.as_retriever(
            vector_store_query_mode="hybrid", similarity_top_k=4, alpha=alpha
        )
        return [r.node.ref_doc_id for r in retriever.retrieve(query)]

    assert hybrid(1.0) == dense
    assert hybrid(0.0)[: len(only_text) - 1] == only_text[:-1]
    assert set(hybrid(None)) <= set(dense) | set(only_text)  # reciprocal-rank fusion


def test_delete_ref_doc_matches_simple_vector_store(
    db: Any, name: str, reference: VectorStoreIndex
) -> None:
    index = build(EngramVectorStore(db, collection_name=name))
    for doc_id in ("d01", "d14"):
        index.delete_ref_doc(doc_id)
        reference.delete_ref_doc(doc_id)
    for query in QUERIES:
        ours = index.as_retriever(similarity_top_k=5).retrieve(query)
        theirs = reference.as_retriever(similarity_top_k=5).retrieve(query)
        assert_same_ranking(ours, theirs)
        assert not {"d01", "d14"} & {r.node.ref_doc_id for r in ours}


def test_get_delete_nodes_and_clear(db: Any, name: str) -> None:
    store = EngramVectorStore(db, collection_name=name)
    nodes = [
        TextNode(id_=f"n{i}", text=f"text {i}", embedding=[1.0, float(i)], metadata={"i": i})
        for i in range(6)
    ]
    assert store.add(nodes) == [f"n{i}" for i in range(6)]
    got = store.get_nodes(["n1", "n4", "nope"])
    assert [(n.node_id, n.get_content(), n.metadata) for n in got] == [
        ("n1", "text 1", {"i": 1}),
        ("n4", "text 4", {"i": 4}),
    ]
    big = MetadataFilters(filters=[MetadataFilter(key="i", value=3, operator=">=")])
    assert sorted(n.node_id for n in store.get_nodes(filters=big)) == ["n3", "n4", "n5"]
    assert [n.node_id for n in store.get_nodes(["n1", "n4"], filters=big)] == ["n4"]
    store.delete_nodes(["n0", "n5"], filters=big)  # only n5 passes the filter
    assert sorted(n.node_id for n in store.get_nodes(filters=None, node_ids=None)) == [
        "n0", "n1", "n2", "n3", "n4",
    ]  # fmt: skip
    store.delete_nodes(["n0"])
    assert store.get_nodes(["n0"]) == []
    store.clear()
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=5)).ids == []


def test_a_query_before_any_add_finds_nothing(db: Any, name: str) -> None:
    store = EngramVectorStore(db, collection_name=name)
    result = store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=3))
    assert result.ids == []
    assert result.nodes == []
    store.delete("nothing")  # no collection yet: nothing to do, no error


def test_a_node_without_embedding_is_refused(db: Any, name: str) -> None:
    store = EngramVectorStore(db, collection_name=name)
    with pytest.raises(InvalidArgument, match="no embedding"):
        store.add([TextNode(id_="n1", text="a")])


@pytest.mark.parametrize("face", ["aio", "server-aio"])
def test_async_methods_match_simple_vector_store(
    face: str, tmp_path: Path, request: pytest.FixtureRequest, reference: VectorStoreIndex
) -> None:
    url = request.getfixturevalue("engram_server").url if face == "server-aio" else None
    name = f"li-{uuid.uuid4().hex[:12]}"

    async def scenario() -> None:
        if url is None:
            db: Any = await engramdb.aio.open(str(tmp_path / "db"), durability="none")
        else:
            db = await engramdb.aio.connect(url)
        store = EngramVectorStore(db, collection_name=name)
        try:
            context = StorageContext.from_defaults(vector_store=store)
            index = VectorStoreIndex(nodes=[], storage_context=context, embed_model=embed_model())
            splitter = Settings.node_parser
            await index.ainsert_nodes(splitter.get_nodes_from_documents(documents()))
            for query in QUERIES:
                ours = await index.as_retriever(similarity_top_k=3).aretrieve(query)
                theirs = reference.as_retriever(similarity_top_k=3).retrieve(query)
                assert_same_ranking(ours, theirs)
            await index.adelete_ref_doc("d04")
            left = await store.aget_nodes(filters=MetadataFilters(filters=[
                MetadataFilter(key="topic", value="food")
            ]))  # fmt: skip
            assert sorted(str(n.ref_doc_id) for n in left) == ["d05", "d06", "d16"]
            hits = await store.aquery(
                VectorStoreQuery(query_str="espresso coffee", mode="text_search")
            )
            assert [n.ref_doc_id for n in hits.nodes or []] == ["d16"]
            await store.adelete_nodes(filters=MetadataFilters(filters=[
                MetadataFilter(key="topic", value="food")
            ]))  # fmt: skip
            assert await store.aget_nodes(filters=MetadataFilters(filters=[
                MetadataFilter(key="topic", value="food")
            ])) == []  # fmt: skip
            await store.aclear()
            empty = await store.aquery(VectorStoreQuery(query_embedding=[1.0] * DIM))
            assert empty.ids == []
        finally:
            store.close()
            await db.close()

    asyncio.run(scenario())
