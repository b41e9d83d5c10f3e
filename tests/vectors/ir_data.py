"""The Cranfield and CISI test collections (``../shared/data``) and the two measures we report.

Shared by ``tests/vectors/test_search_quality.py`` and ``bench/search_quality.py`` so the
regression test and the benchmark parse and score in exactly the same way.

Reading the SMART files (``.I`` starts a record; ``.T`` title, ``.A`` authors, ``.B`` source,
``.W`` text, CISI also ``.X`` cross-references, ``.K`` keywords and ``.C`` classes):

- A document is its ``.T`` title and ``.W`` text, joined by a newline; every other field is
  dropped. A query is its ``.W`` text (some CISI queries are abstracts that also carry a
  ``.T`` title and ``.A`` authors; the question is the ``.W``).
- Cranfield: ``cran.qry`` ids skip numbers (001, 002, 004, ...) but ``cranqrel`` numbers the
  queries 1..225 by position, so queries are renumbered by their order in the file.
- Cranfield grades: code 1 (a complete answer) .. 4 (minimum interest) become gains 4 .. 1
  (``gain = 5 - code``). Code -1 appears once per query and is not in Cleverdon's scale; it
  marks the query's source document (query 1, "similarity laws ... aeroelastic models of
  heated high speed aircraft", has -1 on "similarity laws for aerothermoelastic testing";
  BM25 ranks these first for 90 of the 225 queries). It is judged a complete answer, gain 4.
  Dropping it instead lowers every method's scores (BM25 MAP@100 0.298 instead of 0.412)
  and no longer reproduces the reference figures.
- CISI: ``CISI.REL`` lines are ``query doc 0 0.0``, binary; each listed pair has gain 1.
  Only the 76 queries with judgments are evaluated.

Measures: nDCG@10 with exponential gains ``2**gain - 1`` (Burges et al. 2005) and
``log2(rank + 1)`` discounts, normalised by the ideal ordering of all of a query's judged
documents (``linear=True``: trec_eval's ``ndcg_cut.10``, gains as they are; the same on the
binary CISI); AP@100 as trec_eval's ``map_cut.100``: the mean, over a query's relevant
documents, of the precision at the rank each is retrieved within the top 100 (0 for those
not retrieved). With these choices plain tantivy BM25 over title + text reproduces the
reference figures in ``../shared/data/README.md`` on Cranfield to the third decimal
(nDCG@10 0.534, MAP@100 0.412).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COLLECTIONS",
    "DATA_ENV",
    "IRCollection",
    "average_precision",
    "data_dir",
    "evaluate",
    "load",
    "ndcg",
]

DATA_ENV = "ENGRAMDB_IR_DATA"
COLLECTIONS = ("cranfield", "cisi")

Qrels = Mapping[str, Mapping[str, int]]  # query id -> {doc id: gain > 0}


@dataclass(frozen=True)
class IRCollection:
    """Documents, judged queries and graded relevance judgments of one test collection."""

    name: str
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]  # only queries with at least one relevant document
    queries: list[str]
    qrels: dict[str, dict[str, int]]


def data_dir() -> Path | None:
    """``$ENGRAMDB_IR_DATA``, else ``../shared/data`` next to the repository; None if absent."""
    configured = os.environ.get(DATA_ENV)
    root = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
    return root if (root / "cranfield").is_dir() and (root / "cisi").is_dir() else None


def _records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``(id, {field letter: text})`` for each ``.I`` record of a SMART file."""
    ident: str | None = None
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="latin-1").splitlines():
        tag = line.rstrip()
        if tag.startswith(".I "):
            if ident is not None:
                yield ident, {k: " ".join(" ".join(v).split()) for k, v in fields.items()}
            ident, fields, current = tag[3:].strip(), {}, None
        elif len(tag) == 2 and tag[0] == "." and tag[1].isupper():
            current = fields.setdefault(tag[1], [])
        elif current is not None:
            current.append(line)
    if ident is not None:
        yield ident, {k: " ".join(" ".join(v).split()) for k, v in fields.items()}


def _title_and_text(fields: Mapping[str, str]) -> str:
    return "\n".join(part for part in (fields.get("T", ""), fields.get("W", "")) if part)


_CRANFIELD_GAIN = {1: 4, 2: 3, 3: 2, 4: 1, -1: 4}  # code -> gain; -1: the source document


def _cranfield(root: Path) -> IRCollection:
    docs = list(_records(root / "cran.all.1400"))
    # cranqrel numbers queries by position, not by the .I ids in cran.qry.
    queries = {str(n): f.get("W", "") for n, (_, f) in enumerate(_records(root / "cran.qry"), 1)}
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "cranqrel").read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if not parts:
            continue
        query, doc, code = parts[0], parts[1], int(parts[2])
        qrels.setdefault(query, {})[doc] = _CRANFIELD_GAIN[code]
    return _collection("cranfield", docs, queries, qrels)


def _cisi(root: Path) -> IRCollection:
    docs = list(_records(root / "CISI.ALL"))
    queries = {i: f.get("W", "") for i, f in _records(root / "CISI.QRY")}
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "CISI.REL").read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if parts:
            qrels.setdefault(parts[0], {})[parts[1]] = 1
    return _collection("cisi", docs, queries, qrels)


def _collection(
    name: str,
    docs: Sequence[tuple[str, Mapping[str, str]]],
    queries: Mapping[str, str],
    qrels: dict[str, dict[str, int]],
) -> IRCollection:
    judged = [q for q in queries if qrels.get(q)]
    return IRCollection(
        name=name,
        doc_ids=[i for i, _ in docs],
        docs=[_title_and_text(f) for _, f in docs],
        query_ids=judged,
        queries=[queries[q] for q in judged],
        qrels={q: qrels[q] for q in judged},
    )


_LOADERS = {"cranfield": ("cranfield", _cranfield), "cisi": ("cisi", _cisi)}


def load(name: str, root: Path | None = None) -> IRCollection:
    """Parse collection ``name`` (``cranfield`` or ``cisi``) from ``root`` (``data_dir()``)."""
    base = root or data_dir()
    if base is None:
        raise FileNotFoundError(f"IR test collections not found (set ${DATA_ENV})")
    folder, loader = _LOADERS[name]
    return loader(base / folder)


# measures ----------------------------------------------------------------------------------


def ndcg(
    ranked: Sequence[str], gains: Mapping[str, int], k: int = 10, *, linear: bool = False
) -> float:
    def value(gain: int) -> float:
        return float(gain) if linear else 2.0**gain - 1

    dcg = sum(value(gains.get(d, 0)) / math.log2(rank + 1) for rank, d in enumerate(ranked[:k], 1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    best = sum(value(g) / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / best if best > 0 else 0.0


def average_precision(ranked: Sequence[str], gains: Mapping[str, int], k: int = 100) -> float:
    relevant = sum(1 for g in gains.values() if g > 0)
    hits = 0
    total = 0.0
    for rank, doc in enumerate(ranked[:k], 1):
        if gains.get(doc, 0) > 0:
            hits += 1
            total += hits / rank
    return total / relevant if relevant else 0.0


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, MAP@100 and trec_eval's linear-gain nDCG@10 over every judged query."""
    n = len(qrels)
    ranked = {q: runs.get(q, ()) for q in qrels}
    return {
        "ndcg@10": sum(ndcg(ranked[q], g) for q, g in qrels.items()) / n,
        "map@100": sum(average_precision(ranked[q], g) for q, g in qrels.items()) / n,
        "ndcg@10 linear": sum(ndcg(ranked[q], g, linear=True) for q, g in qrels.items()) / n,
    }
