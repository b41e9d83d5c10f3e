"""HNSW libraries for engramdb's vector index: hnswlib, faiss and usearch, in one run.

    python bench/vector_libs.py            # full run: 100,000 x 384 (about 10-15 min, 2 cores)
    python bench/vector_libs.py --quick    # ~1-2 min smoke run: 20,000 x 128
    python bench/vector_libs.py --help     # every size is configurable

The question (the vector-index issue): which native HNSW library should engramdb's embedding
store use? Every library gets the same data, the same graph parameters and the same thread
count, in the same process, and is measured on what engramdb needs from it:

1. build: one insert call of all vectors (``--threads`` threads, default 2, for every library);
   the process's RSS growth during the build, and the saved file's size.
2. single-query search (one thread, one query per call, as an application issues them) over a
   sweep of ef (hnswlib ``set_ef``, faiss ``hnsw.efSearch``, usearch ``expansion_search``):
   recall@10 against exact brute force and queries/s. The smallest ef reaching recall 0.95
   and 0.99 is then measured again with the three libraries taking turns
   (``measure_interleaved``), so machine-load drift falls on all of them alike.
3. batch search: all queries in one call at the 0.95 ef (``--threads`` threads; best of 3).
4. filtered search on a random label subset at several selectivities (0.2 % … 20 %):
   faiss ``SearchParametersHNSW(sel=IDSelectorBitmap)`` (native bitmap during the graph
   walk; ``IDSelectorBatch``, a hash set, at 1 % and 10 %), hnswlib ``knn_query(filter=)``
   (a Python callable, called with the GIL for every candidate), usearch: its Python API
   (2.26) has no filter/predicate argument, so only search-then-filter with over-fetching
   can be measured — the pattern the issue forbids. Recall is against exact filtered ground
   truth; "short" counts queries that got fewer than k hits although ≥ k items matched. Each
   graph method is measured at its unfiltered 0.95 ef and at the smallest ef that brings
   filtered recall to 0.95 (found on a prefix of ``--probe`` queries, then measured on all).
   Exact search over the matching set (numpy gather + matmul, and faiss ``IndexFlat`` with
   the same bitmap selector: no gather) is measured at every selectivity; where its queries/s
   cross the graph's is the selectivity below which engramdb should search exactly.
5. save / load of a snapshot (time, size; the loaded index must answer identically).
6. deletes and updates: delete 10 % of the items the way each library can (hnswlib
   ``mark_deleted``; faiss HNSW has no ``remove_ids``, so a bitmap of live ids passed as an
   ``IDSelectorBitmap`` on every search; usearch ``remove``), then recall@10 against exact
   search over the remaining items, queries/s, and a check that no deleted id comes back.
   Then ``--updates`` items get a new vector under the same id, one call each (hnswlib
   ``add_items`` on an existing label: in place; faiss: append + tombstone the old internal
   id + remap; usearch: ``remove`` + ``add``), and each is searched for by its new vector.

Data: ``--clusters`` Gaussian clusters (each a random ``--rank``-dimensional subspace with a
power-law spectrum, plus isotropic noise; overlapping, as real embeddings are), L2-normalised
float32. Queries are held-out draws from the same distribution. Every library uses inner
product on the normalised vectors (= cosine similarity; hnswlib ``space="ip"``, faiss
``METRIC_INNER_PRODUCT``, usearch ``metric="ip"``): engramdb normalises once at insert, so no
library pays for norms at query time. Graph parameters: M = 16 / connectivity = 16 (32 links
on the base layer in all three), ef_construction = expansion_add = 200.

Threads: numpy's OpenBLAS is pinned to one thread (``OPENBLAS_NUM_THREADS=1`` before numpy
loads) so exact search is single-threaded like the graph queries it is compared with; faiss
via ``faiss.omp_set_num_threads``, hnswlib via ``num_threads=``, usearch via ``threads=``.

Timing uses ``_common.measure`` (each call timed on its own with ``perf_counter_ns``, warmup
first, GC frozen). A library not installed is left out, with the reason printed. Writes
bench/results/vector_libs.json (``_common.Report``).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: exact search on one thread

import argparse
import contextlib
import gc
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.progress import Progress

try:  # the peers: a library not installed is left out of the run, with the reason printed
    import hnswlib
except ImportError:
    hnswlib = None
try:
    import usearch
    import usearch.index
except ImportError:
    usearch = None

from _common import (
    Meter,
    Report,
    Stats,
    exit_on_sigterm,
    fmt_us,
    machine_info,
    measure,
    measure_interleaved,
    new_progress,
    temp_dir,
)

SECTION = "vector-libs"
K = 10
RECALL_TARGETS = (0.95, 0.99)
EF_SWEEP = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
FILTER_EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
SELECTIVITIES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20)
REQUIRED_SELECTIVITIES = (0.01, 0.10)  # every method is measured at these
LABELS = 1000  # items get a uniform label in [0, LABELS); a filter is label < s * LABELS
POST_FILTER_OVERFETCH = 2.0  # usearch search-then-filter fetches this x k / selectivity

SearchFn = Callable[[np.ndarray], np.ndarray]  # (1, d) query -> (K,) int64 ids, -1 padded


# configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    n: int = 100_000
    dim: int = 384
    queries: int = 1_000
    clusters: int = 100
    rank: int = 64  # dimensions of each cluster's Gaussian (plus isotropic noise)
    threads: int = 2
    m: int = 16
    ef_construction: int = 200
    delete_percent: int = 10
    updates: int = 1_000
    probe: int = 200  # queries used to find the filtered ef before measuring all of them
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(n=20_000, dim=128, queries=1_000, updates=500)


# data and ground truth ---------------------------------------------------------------------


@dataclass
class Data:
    base: np.ndarray  # (n, dim) float32, unit norm
    queries: np.ndarray  # (q, dim)
    new_vectors: np.ndarray  # (updates, dim): what updated items get
    labels: np.ndarray  # (n,) int in [0, LABELS)
    scores: np.ndarray  # (q, n) exact inner products queries x base
    gt: np.ndarray  # (q, K) exact top-K ids
    gen_s: float
    gt_s: float


def make_data(s: Sizes) -> Data:
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    total = s.n + s.queries + s.updates
    rank = min(s.rank, s.dim)
    centers = rng.standard_normal((s.clusters, s.dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spectrum = (1.0 / np.sqrt(np.arange(1, rank + 1))).astype(np.float32)
    assign = rng.integers(0, s.clusters, total)
    x = np.empty((total, s.dim), dtype=np.float32)
    for c in range(s.clusters):
        rows = np.flatnonzero(assign == c)
        basis = np.linalg.qr(rng.standard_normal((s.dim, rank)))[0].astype(np.float32)
        z = rng.standard_normal((rows.size, rank)).astype(np.float32) * spectrum
        noise = rng.standard_normal((rows.size, s.dim)).astype(np.float32)
        x[rows] = centers[c] + z @ basis.T + noise * np.float32(0.5 / math.sqrt(s.dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base = np.ascontiguousarray(x[: s.n])
    queries = np.ascontiguousarray(x[s.n : s.n + s.queries])
    new_vectors = np.ascontiguousarray(x[s.n + s.queries :])
    labels = rng.integers(0, LABELS, s.n)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = queries @ base.T
    gt = top_k(scores)
    return Data(base, queries, new_vectors, labels, scores, gt, gen_s, time.perf_counter() - t0)


def top_k(scores: np.ndarray, k: int = K) -> np.ndarray:
    """Ids of the k highest scores of each row (unordered within the k)."""
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), (scores.shape[0], scores.shape[1]))
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def recall_at_k(found: np.ndarray, gt: np.ndarray) -> float:
    hits = (found[:, :, None] == gt[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean()) / gt.shape[1]


@dataclass
class Filter:
    """A label subset: the matching ids as a mask, sorted ids and faiss bitmap."""

    selectivity: float
    mask: np.ndarray  # (n,) bool
    ids: np.ndarray  # sorted int64
    bitmap: np.ndarray  # uint8, little-endian bit order (faiss IDSelectorBitmap layout)
    gt: np.ndarray  # (q, K) exact filtered top-K

    @classmethod
    def make(cls, data: Data, selectivity: float) -> Filter:
        mask = data.labels < round(selectivity * LABELS)
        ids = np.flatnonzero(mask).astype(np.int64)
        gt = ids[top_k(data.scores[:, ids])]
        return cls(selectivity, mask, ids, np.packbits(mask, bitorder="little"), gt)


def bitmap_selector(bitmap: np.ndarray) -> Any:
    """faiss.IDSelectorBitmap over ``bitmap``; its first argument is the size in BYTES."""
    return faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))


# the libraries -----------------------------------------------------------------------------


def _pad(ids: np.ndarray) -> np.ndarray:
    if ids.size >= K:
        return ids[:K].astype(np.int64, copy=False)
    out = np.full(K, -1, dtype=np.int64)
    out[: ids.size] = ids
    return out


class Lib(ABC):
    """One library behind the operations the benchmark needs; ids are external ids."""

    name: str
    package: str
    filter_in_native_code: bool
    native_filter: str
    delete_api: str
    update_api: str
    persist_api: str

    def __init__(self, s: Sizes) -> None:
        self.s = s
        self.ef = 0

    @abstractmethod
    def build(self, x: np.ndarray, threads: int) -> None: ...

    @abstractmethod
    def set_ef(self, ef: int) -> None: ...

    @abstractmethod
    def set_threads(self, threads: int) -> None:
        """Threads for the calls that take no explicit count (faiss OpenMP)."""

    @abstractmethod
    def one(self, q: np.ndarray) -> np.ndarray:
        """Top-K of one (1, d) query on one thread: (K,) int64 ids, -1 padded."""

    @abstractmethod
    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray: ...

    @abstractmethod
    def filtered(self, flt: Filter, ef: int) -> SearchFn | None:
        """A one-query filtered search with the library's native mechanism, or None."""

    @abstractmethod
    def delete(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def update(self, item: int, vector: np.ndarray) -> None: ...

    @abstractmethod
    def vector_of(self, item: int) -> np.ndarray:
        """The vector the index holds for ``item`` now (to check an update was stored)."""

    @abstractmethod
    def save(self, path: str) -> None: ...

    @abstractmethod
    def load(self, path: str) -> Lib: ...

    def extra_load(self, path: str) -> tuple[str, float] | None:
        """Another way to open a snapshot (e.g. memory-mapped view) and its time."""
        return None


class Hnswlib(Lib):
    name = "hnswlib"
    package = "hnswlib"
    filter_in_native_code = False
    native_filter = (
        "`knn_query(q, k, filter=callable)`: a Python callable per candidate, with the GIL"
    )
    delete_api = "`mark_deleted(label)` (tombstone; skipped in results, still routed through)"
    update_api = (
        "`add_items(v, [label])` on an existing label updates in place "
        "(also un-deletes a marked label)"
    )
    persist_api = "`save_index(path)` / `Index(space, dim).load_index(path, max_elements)`"

    def __init__(self, s: Sizes) -> None:
        super().__init__(s)
        self.index: Any = None

    def build(self, x: np.ndarray, threads: int) -> None:
        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(
            max_elements=x.shape[0],
            M=self.s.m,
            ef_construction=self.s.ef_construction,
            random_seed=self.s.seed,
        )
        self.index.set_num_threads(threads)
        self.index.add_items(x, np.arange(x.shape[0]), num_threads=threads)

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.set_ef(ef)

    def set_threads(self, threads: int) -> None:
        self.index.set_num_threads(threads)

    def one(self, q: np.ndarray) -> np.ndarray:
        labels, _ = self.index.knn_query(q, k=K, num_threads=1)
        return labels[0].astype(np.int64)

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        labels, _ = self.index.knn_query(qs, k=K, num_threads=threads)
        return labels.astype(np.int64)

    def filtered(self, flt: Filter, ef: int) -> SearchFn:
        self.set_ef(ef)
        allowed = flt.mask.tolist()
        check = allowed.__getitem__  # a C-level callable: the cheapest Python filter there is
        index = self.index

        def search(q: np.ndarray) -> np.ndarray:
            try:
                labels, _ = index.knn_query(q, k=K, num_threads=1, filter=check)
            except RuntimeError:  # fewer than k found: hnswlib raises instead of returning
                return np.full(K, -1, dtype=np.int64)
            return labels[0].astype(np.int64)

        return search

    def delete(self, ids: np.ndarray) -> None:
        mark = self.index.mark_deleted
        for i in ids.tolist():
            mark(i)

    def update(self, item: int, vector: np.ndarray) -> None:
        self.index.add_items(vector[None, :], [item], num_threads=1)

    def vector_of(self, item: int) -> np.ndarray:
        return np.asarray(self.index.get_items([item])[0], dtype=np.float32)

    def save(self, path: str) -> None:
        self.index.save_index(path)

    def load(self, path: str) -> Lib:
        other = Hnswlib(self.s)
        other.index = hnswlib.Index(space="ip", dim=self.index.dim)
        other.index.load_index(path, max_elements=self.index.get_max_elements())
        other.set_ef(self.ef)
        return other


class Faiss(Lib):
    name = "faiss"
    package = "faiss-cpu"
    filter_in_native_code = True
    native_filter = (
        "`search(q, k, params=SearchParametersHNSW(sel=IDSelectorBitmap(nbytes, ptr), "
        "efSearch=ef))`: C++ bitmap test during the graph walk"
    )
    delete_api = (
        "none for HNSW (`remove_ids` raises, also through `IndexIDMap2`): tombstone = a "
        "bitmap of live ids passed as `IDSelectorBitmap` on every search"
    )
    update_api = "append the new vector (new internal id) + tombstone the old + remap ids"
    persist_api = (
        "`faiss.write_index(index, path)` / `faiss.read_index(path)` (bitmap, id map: yours)"
    )

    def __init__(self, s: Sizes) -> None:
        super().__init__(s)
        self.index: Any = None
        self.params: Any = None  # SearchParametersHNSW(sel=live bitmap) once anything is deleted
        self.live: np.ndarray | None = None  # bitmap over internal ids (capacity incl. updates)
        self.live_sel: Any = None
        self.external: np.ndarray | None = None  # internal id -> external id
        self.internal: np.ndarray | None = None  # external id -> internal id

    def build(self, x: np.ndarray, threads: int) -> None:
        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(x.shape[1], self.s.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.s.ef_construction
        self.index.add(x)

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.hnsw.efSearch = ef
        if self.params is not None:
            self.params.efSearch = ef

    def set_threads(self, threads: int) -> None:
        faiss.omp_set_num_threads(threads)

    def _map(self, ids: np.ndarray) -> np.ndarray:
        if self.external is None:
            return ids
        return np.where(ids >= 0, self.external[np.maximum(ids, 0)], -1)

    def one(self, q: np.ndarray) -> np.ndarray:
        _, ids = self.index.search(q, K, params=self.params)
        return self._map(ids[0])

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        faiss.omp_set_num_threads(threads)
        try:
            _, ids = self.index.search(qs, K, params=self.params)
        finally:
            faiss.omp_set_num_threads(1)
        return self._map(ids)

    def filtered(self, flt: Filter, ef: int) -> SearchFn:
        return self._filtered(bitmap_selector(flt.bitmap), flt.bitmap, ef)

    def filtered_batch_selector(self, flt: Filter, ef: int) -> SearchFn:
        """The same with ``IDSelectorBatch`` (a hash set of ids) instead of a bitmap."""
        return self._filtered(faiss.IDSelectorBatch(flt.ids), flt.ids, ef)

    def _filtered(self, sel: Any, keep: object, ef: int) -> SearchFn:
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
        index = self.index

        def search(q: np.ndarray, _keep: object = (keep, sel, params)) -> np.ndarray:
            _, ids = index.search(q, K, params=params)
            return ids[0]

        return search

    def _tombstones(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.live is None or self.external is None or self.internal is None:
            n = self.index.ntotal
            capacity = n + self.s.updates
            live = np.packbits(np.arange(capacity) < n, bitorder="little")
            self.live = live
            self.live_sel = bitmap_selector(live)  # reads `live` in place on every search
            self.params = faiss.SearchParametersHNSW(sel=self.live_sel, efSearch=self.ef)
            self.external = np.arange(capacity, dtype=np.int64)
            self.internal = np.arange(n, dtype=np.int64)
        return self.live, self.external, self.internal

    def delete(self, ids: np.ndarray) -> None:
        live, _, internal = self._tombstones()
        internal_ids = internal[ids]
        np.bitwise_and.at(
            live, internal_ids >> 3, ~(np.uint8(1) << (internal_ids & 7).astype(np.uint8))
        )

    def update(self, item: int, vector: np.ndarray) -> None:
        live, external, internal = self._tombstones()
        old = int(internal[item])
        new = int(self.index.ntotal)
        self.index.add(vector[None, :])
        external[new] = item
        internal[item] = new
        live[new >> 3] |= np.uint8(1 << (new & 7))
        live[old >> 3] &= np.uint8(~(1 << (old & 7)) & 0xFF)

    def vector_of(self, item: int) -> np.ndarray:
        _, _, internal = self._tombstones()
        return np.asarray(self.index.reconstruct(int(internal[item])))

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    def load(self, path: str) -> Lib:
        other = Faiss(self.s)
        other.index = faiss.read_index(path)
        other.set_ef(self.ef)
        return other


class Usearch(Lib):
    name = "usearch"
    package = "usearch"
    filter_in_native_code = False
    native_filter = "none in the Python API (`search()` takes no predicate); search-then-filter"
    delete_api = "`remove(keys)` (tombstone; `remove(..., compact=True)` also relinks)"
    update_api = "`remove(key)` + `add(key, v)` (`add` of an existing key raises)"
    persist_api = "`save(path)` / `Index.restore(path)`, or `Index.restore(path, view=True)` (mmap)"

    def __init__(self, s: Sizes) -> None:
        super().__init__(s)
        self.index: Any = None

    def build(self, x: np.ndarray, threads: int) -> None:
        self.index = usearch.index.Index(
            ndim=x.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=self.s.m,
            expansion_add=self.s.ef_construction,
        )
        self.index.add(np.arange(x.shape[0], dtype=np.uint64), x, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.expansion_search = ef

    def set_threads(self, threads: int) -> None:
        pass  # every call passes threads=

    def one(self, q: np.ndarray) -> np.ndarray:
        return _pad(self.index.search(q[0], K, threads=1).keys)

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        found = self.index.search(qs, K, threads=threads)
        keys = found.keys.astype(np.int64)
        counts = np.asarray(found.counts)
        keys[np.arange(K)[None, :] >= counts[:, None]] = -1
        return keys

    def filtered(self, flt: Filter, ef: int) -> SearchFn | None:
        return None

    def post_filtered(self, flt: Filter, ef: int) -> tuple[SearchFn, int]:
        """Search-then-filter, over-fetching ``POST_FILTER_OVERFETCH * K / selectivity``."""
        self.set_ef(ef)
        count = min(self.s.n, math.ceil(POST_FILTER_OVERFETCH * K / flt.selectivity))
        mask = flt.mask
        index = self.index

        def search(q: np.ndarray) -> np.ndarray:
            keys = index.search(q[0], count, threads=1).keys
            return _pad(keys[mask[keys]])

        return search, count

    def delete(self, ids: np.ndarray) -> None:
        self.index.remove(ids.astype(np.uint64), threads=self.s.threads)

    def update(self, item: int, vector: np.ndarray) -> None:
        self.index.remove(item)
        self.index.add(item, vector, threads=1)

    def vector_of(self, item: int) -> np.ndarray:
        return np.asarray(self.index.get(item), dtype=np.float32)

    def save(self, path: str) -> None:
        self.index.save(path)

    def load(self, path: str) -> Lib:
        other = Usearch(self.s)
        other.index = usearch.index.Index.restore(path)
        other.set_ef(self.ef)
        return other

    def extra_load(self, path: str) -> tuple[str, float] | None:
        t0 = time.perf_counter()
        view = usearch.index.Index.restore(path, view=True)
        elapsed = time.perf_counter() - t0
        del view
        return "`restore(view=True)` (mmap)", elapsed


LIBS: tuple[type[Lib], ...] = (Hnswlib, Faiss, Usearch)
INSTALLED = {"hnswlib": hnswlib is not None, "faiss": True, "usearch": usearch is not None}


# measuring ---------------------------------------------------------------------------------


def rss_bytes() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


@dataclass
class Point:
    """One measured configuration: recall, short results, bad ids, single-query speed."""

    ef: int
    recall: float
    short: float  # fraction of queries with fewer than K hits
    bad: int  # hits that should never appear (filtered-out or deleted ids)
    qps: float
    p50_us: float
    p99_us: float
    queries: int

    @property
    def qps_str(self) -> str:
        return f"{self.qps:,.0f}"


@dataclass
class LibResult:
    name: str
    version: str
    build_s: float = 0.0
    rss_build_mib: float | None = None
    reported_memory_mib: float | None = None
    sweep: list[Point] = field(default_factory=list)
    ef_for: dict[str, int | None] = field(default_factory=dict)  # "0.95"/"0.99" -> ef
    headline: dict[str, Point] = field(default_factory=dict)  # interleaved, same keys
    batch_qps: float | None = None
    batch_recall: float | None = None
    filtered: dict[str, dict[str, Any]] = field(default_factory=dict)
    save_s: float | None = None
    load_s: float | None = None
    extra_load: tuple[str, float] | None = None
    file_mib: float | None = None
    load_identical: float | None = None
    delete_s: float | None = None
    after_delete: Point | None = None
    update_stats: Stats | None = None
    updated_found_top1: float | None = None
    updated_stored: float | None = None  # fraction whose stored vector is the new one
    after_update: Point | None = None


class Bench:
    def __init__(self, s: Sizes, data: Data, root: str, progress: Progress) -> None:
        self.s = s
        self.data = data
        self.root = root
        self.progress = progress
        self.libs: list[Lib] = [cls(s) for cls in LIBS if INSTALLED[cls.name]]
        self.results: dict[str, LibResult] = {
            lib.name: LibResult(lib.name, _version(lib.package)) for lib in self.libs
        }
        self.q2 = [data.queries[i : i + 1] for i in range(s.queries)]
        self.filters: dict[float, Filter] = {}
        self.exact: dict[str, dict[str, Point]] = {}  # selectivity -> method -> point
        self.deleted: np.ndarray | None = None

    # helpers

    def step(self, description: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def run() -> Iterator[None]:
            task = self.progress.add_task(description, total=1)
            self.progress.refresh()
            yield
            self.progress.update(task, advance=1)
            self.progress.refresh()

        return run()

    def point(
        self,
        fn: SearchFn,
        gt: np.ndarray,
        description: str,
        *,
        ef: int,
        queries: int | None = None,
        bad: np.ndarray | None = None,
    ) -> Point:
        """Measure ``fn`` over the first ``queries`` queries; recall against ``gt``."""
        nq = queries or self.s.queries
        out = np.full((nq, K), -1, dtype=np.int64)
        q2 = self.q2

        def call(i: int) -> None:
            out[i] = fn(q2[i])

        warm = list(range(min(50, nq)))
        st = measure(
            call, list(range(nq)), warmup=warm, meter=Meter(self.progress), description=description
        )
        return self._point(out, gt[:nq], st, ef, bad)

    def _point(
        self, out: np.ndarray, gt: np.ndarray, st: Stats, ef: int, bad: np.ndarray | None
    ) -> Point:
        hits = out[out >= 0]
        return Point(
            ef=ef,
            recall=recall_at_k(out, gt),
            short=float((out < 0).any(axis=1).mean()),
            bad=int(bad[hits].sum()) if bad is not None else 0,
            qps=st.ops_s,
            p50_us=st.p50_us,
            p99_us=st.p99_us,
            queries=out.shape[0],
        )

    # phases

    def build(self) -> None:
        for lib in self.libs:
            res = self.results[lib.name]
            gc.collect()
            before = rss_bytes()
            with self.step(f"build · {lib.name} ({self.s.threads} threads)"):
                t0 = time.perf_counter()
                lib.build(self.data.base, self.s.threads)
                res.build_s = time.perf_counter() - t0
            after = rss_bytes()
            if before is not None and after is not None:
                res.rss_build_mib = (after - before) / 2**20
            if isinstance(lib, Usearch):
                res.reported_memory_mib = lib.index.memory_usage / 2**20
            lib.set_threads(1)

    def sweep(self) -> None:
        for lib in self.libs:
            res = self.results[lib.name]
            for ef in EF_SWEEP:
                lib.set_ef(ef)
                p = self.point(lib.one, self.data.gt, f"search · {lib.name} ef={ef}", ef=ef)
                res.sweep.append(p)
                if p.recall >= 0.995 or (ef >= 128 and p.recall >= RECALL_TARGETS[-1]):
                    break
            for target in RECALL_TARGETS:
                ok = [p.ef for p in res.sweep if p.recall >= target]
                res.ef_for[f"{target:.2f}"] = min(ok) if ok else None

    def headline(self) -> None:
        """The chosen efs again, the libraries taking turns (load drift falls on all alike)."""
        for target in RECALL_TARGETS:
            key = f"{target:.2f}"
            sides: list[tuple[Callable[[Any], object], Sequence[Any], Sequence[Any]]] = []
            outs: dict[str, np.ndarray] = {}
            chosen: list[Lib] = []
            for lib in self.libs:
                ef = self.results[lib.name].ef_for.get(key) or EF_SWEEP[-1]
                lib.set_ef(ef)
                out = np.full((self.s.queries, K), -1, dtype=np.int64)
                outs[lib.name] = out

                def call(i: int, fn: SearchFn = lib.one, out: np.ndarray = out) -> None:
                    out[i] = fn(self.q2[i])

                sides.append((call, list(range(self.s.queries)), list(range(50))))
                chosen.append(lib)
            stats = measure_interleaved(
                sides, rounds=10, meter=Meter(self.progress), description=f"head-to-head @{key}"
            )
            for lib, st in zip(chosen, stats):
                self.results[lib.name].headline[key] = self._point(
                    outs[lib.name], self.data.gt, st, lib.ef, None
                )

    def batch(self) -> None:
        for lib in self.libs:
            res = self.results[lib.name]
            lib.set_ef(res.ef_for.get("0.95") or EF_SWEEP[-1])
            best = math.inf
            out = None
            with self.step(f"batch · {lib.name} ({self.s.threads} threads)"):
                for _ in range(3):
                    t0 = time.perf_counter()
                    out = lib.batch(self.data.queries, self.s.threads)
                    best = min(best, time.perf_counter() - t0)
            lib.set_threads(1)
            assert out is not None
            res.batch_qps = self.s.queries / best
            res.batch_recall = recall_at_k(out, self.data.gt)

    def filtered(self) -> None:
        """Filtered search per selectivity: exact baselines, then each graph method."""
        faiss_lib = self._lib(Faiss)
        usearch_lib = self._lib(Usearch)
        flat: Any = faiss.downcast_index(faiss_lib.index.storage)  # HNSW's own vectors
        base = self.data.base
        for sel in SELECTIVITIES:
            flt = Filter.make(self.data, sel)
            self.filters[sel] = flt
            key = f"{sel:.3f}"
            not_allowed = ~flt.mask
            ids = flt.ids

            def exact_numpy(
                q: np.ndarray, ids: np.ndarray = ids, base: np.ndarray = base
            ) -> np.ndarray:
                sc = base[ids] @ q[0]  # gather + one matmul, as engramdb would for a small set
                if sc.size <= K:
                    return _pad(ids[np.argsort(-sc)])
                return ids[np.argpartition(-sc, K - 1)[:K]]

            flat_params = faiss.SearchParameters(sel=bitmap_selector(flt.bitmap))

            def exact_flat(
                q: np.ndarray, params: Any = flat_params, keep: np.ndarray = flt.bitmap
            ) -> np.ndarray:
                return flat.search(q, K, params=params)[1][0]

            m = f"{sel:.1%} ({ids.size:,})"
            self.exact[key] = {
                "numpy": self.point(exact_numpy, flt.gt, f"exact numpy · {m}", ef=0),
                "faiss-flat": self.point(exact_flat, flt.gt, f"exact faiss flat · {m}", ef=0),
            }
            for lib in self.libs:
                res = self.results[lib.name]
                base_ef = res.ef_for.get("0.95") or EF_SWEEP[-1]
                entry: dict[str, Any] = {"matches": int(ids.size)}
                make = lib.filtered
                if make(flt, base_ef) is not None:
                    entry["native"] = self._tuned(lib.name, make, flt, base_ef, not_allowed, m)
                res.filtered[key] = entry
            if sel in REQUIRED_SELECTIVITIES:
                res = self.results["faiss"]
                tuned = res.filtered[key]["native"]["tuned"]
                ef = tuned.ef if tuned is not None else FILTER_EFS[-1]
                fn = faiss_lib.filtered_batch_selector(flt, ef)
                res.filtered[key]["IDSelectorBatch"] = self.point(
                    fn, flt.gt, f"faiss IDSelectorBatch · {m}", ef=ef, bad=not_allowed
                )
                if (ures := self.results.get("usearch")) is None:
                    continue
                ef = ures.ef_for.get("0.95") or EF_SWEEP[-1]
                fn, count = usearch_lib.post_filtered(flt, ef)
                p = self.point(fn, flt.gt, f"usearch post-filter · {m}", ef=ef, bad=not_allowed)
                ures.filtered[key]["post-filter"] = p
                ures.filtered[key]["post-filter count"] = count
        for lib in self.libs:
            lib.set_ef(self.results[lib.name].ef_for.get("0.95") or EF_SWEEP[-1])

    def _tuned(
        self,
        name: str,
        make: Callable[[Filter, int], SearchFn | None],
        flt: Filter,
        base_ef: int,
        not_allowed: np.ndarray,
        label: str,
    ) -> dict[str, Any]:
        """At the unfiltered 0.95 ef, then at the smallest ef giving filtered recall 0.95."""
        fn = make(flt, base_ef)
        assert fn is not None
        at_base = self.point(
            fn, flt.gt, f"{name} filter · {label} ef={base_ef}", ef=base_ef, bad=not_allowed
        )
        out: dict[str, Any] = {"at_base_ef": at_base, "tuned": None, "probe": []}
        if at_base.recall >= RECALL_TARGETS[0]:
            out["tuned"] = at_base
            return out
        probe = min(self.s.probe, self.s.queries)
        for ef in (e for e in FILTER_EFS if e > base_ef):
            fn = make(flt, ef)
            assert fn is not None
            p = self.point(
                fn, flt.gt, f"{name} filter probe · {label} ef={ef}", ef=ef, queries=probe
            )
            out["probe"].append(p)
            if p.recall < RECALL_TARGETS[0]:
                continue
            full = self.point(
                fn, flt.gt, f"{name} filter · {label} ef={ef}", ef=ef, bad=not_allowed
            )
            if full.recall >= RECALL_TARGETS[0]:
                out["tuned"] = full
                break
        return out

    def persist(self) -> None:
        for lib in self.libs:
            res = self.results[lib.name]
            path = os.path.join(self.root, f"{lib.name}.index")
            with self.step(f"save + load · {lib.name}"):
                t0 = time.perf_counter()
                lib.save(path)
                res.save_s = time.perf_counter() - t0
                res.file_mib = os.path.getsize(path) / 2**20
                gc.collect()
                t0 = time.perf_counter()
                loaded = lib.load(path)
                res.load_s = time.perf_counter() - t0
                loaded.set_threads(1)
                n = min(100, self.s.queries)
                same = [np.array_equal(lib.one(q), loaded.one(q)) for q in self.q2[:n]]
                res.load_identical = sum(same) / n
                del loaded
                res.extra_load = lib.extra_load(path)
                gc.collect()
            os.remove(path)

    def deletes_and_updates(self) -> None:
        s, data = self.s, self.data
        rng = np.random.default_rng(s.seed + 7)
        deleted = np.sort(rng.choice(s.n, s.n * s.delete_percent // 100, replace=False))
        self.deleted = deleted
        gone = np.zeros(s.n, dtype=bool)
        gone[deleted] = True
        scores = data.scores  # not needed unmodified any more: work in place
        scores[:, deleted] = -np.inf
        gt_deleted = top_k(scores)
        live_ids = np.flatnonzero(~gone)
        updated = rng.choice(live_ids, min(s.updates, live_ids.size), replace=False)
        new = data.new_vectors[: updated.size]
        scores[:, updated] = data.queries @ new.T
        gt_updated = top_k(scores)
        for lib in self.libs:
            res = self.results[lib.name]
            ef = res.ef_for.get("0.95") or EF_SWEEP[-1]
            with self.step(f"delete {s.delete_percent}% · {lib.name}"):
                t0 = time.perf_counter()
                lib.delete(deleted)
                res.delete_s = time.perf_counter() - t0
            lib.set_ef(ef)
            res.after_delete = self.point(
                lib.one, gt_deleted, f"search after delete · {lib.name}", ef=ef, bad=gone
            )
            res.update_stats = measure(
                lambda j, lib=lib: lib.update(int(updated[j]), new[j]),
                list(range(updated.size)),
                meter=Meter(self.progress),
                description=f"update (same id) · {lib.name}",
            )
            lib.set_ef(ef)
            top1 = [int(lib.one(new[j : j + 1])[0]) == int(updated[j]) for j in range(updated.size)]
            res.updated_found_top1 = sum(top1) / len(top1)
            stored = [
                np.allclose(lib.vector_of(int(updated[j])), new[j], atol=1e-6)
                for j in range(updated.size)
            ]
            res.updated_stored = sum(stored) / len(stored)
            res.after_update = self.point(
                lib.one, gt_updated, f"search after update · {lib.name}", ef=ef, bad=gone
            )

    def _lib(self, cls: type[Any]) -> Any:
        return next((lib for lib in self.libs if isinstance(lib, cls)), None)

    def run(self) -> None:
        with self.progress:
            self.build()
            self.sweep()
            self.headline()
            self.batch()
            self.filtered()
            self.persist()
            self.deletes_and_updates()


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# analysis ----------------------------------------------------------------------------------


def graph_filtered(bench: Bench, lib: str, key: str) -> Point | None:
    """The library's native filtered search at recall ≥ 0.95 (tuned ef), if it has one."""
    native = bench.results[lib].filtered.get(key, {}).get("native")
    return native["tuned"] if native else None


def crossover(bench: Bench, lib: str) -> dict[str, Any]:
    """Selectivity where exact search (best of numpy / faiss flat) stops beating ``lib``'s graph.

    Interpolated on log(selectivity) between the last measured selectivity where exact wins
    and the first where the filtered graph (at recall ≥ 0.95) wins.
    """
    rows = []
    for sel in SELECTIVITIES:
        key = f"{sel:.3f}"
        exact = max(bench.exact[key].values(), key=lambda p: p.qps)
        graph = graph_filtered(bench, lib, key)
        ratio = (graph.qps / exact.qps) if graph is not None else 0.0
        rows.append((sel, ratio))
    prev: tuple[float, float] | None = None
    for sel, ratio in rows:
        if ratio > 1.0:
            if prev is None:
                text = f"below {sel:.1%}: the graph was faster at every measured selectivity"
                return {"selectivity": None, "items": None, "text": text}
            (s0, r0), (s1, r1) = prev, (sel, ratio)
            if r0 <= 0:
                x = s0
            else:
                t = (0 - math.log(r0)) / (math.log(r1) - math.log(r0))
                x = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
            items = round(x * bench.s.n)
            return {
                "selectivity": x,
                "items": items,
                "text": f"≈ {x:.1%} (≈ {items:,} matching items; measured between "
                f"{s0:.1%} and {s1:.1%})",
            }
        prev = (sel, ratio)
    last = SELECTIVITIES[-1]
    text = f"above {last:.0%}: exact search was faster at every measured selectivity"
    return {"selectivity": None, "items": None, "text": text}


def decide(bench: Bench) -> dict[str, Any]:
    """Pick per the issue: native in-search filtering and working deletes are requirements;
    among eligible libraries the best single-query QPS at recall 0.95 wins."""
    eligible = []
    for lib in bench.libs:
        res = bench.results[lib.name]
        native = lib.filter_in_native_code
        deletes_ok = res.after_delete is not None and res.after_delete.bad == 0
        if native and deletes_ok:
            eligible.append(lib.name)
    ranked = sorted(
        (lib.name for lib in bench.libs),
        key=lambda name: -(bench.results[name].headline.get("0.95") or _zero()).qps,
    )
    pick = eligible[0] if eligible else ranked[0]
    return {"pick": pick, "eligible": eligible, "qps_rank": ranked}


def _zero() -> Point:
    return Point(0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0)


# reporting ---------------------------------------------------------------------------------


def _ef(ef: int | None) -> str:
    return str(ef) if ef is not None else "not reached"


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}%}"


def _rec(p: Point | None) -> str:
    return "—" if p is None else f"{p.recall:.3f}"


def tables(bench: Bench) -> dict[str, tuple[list[str], list[list[str]], str]]:
    s = bench.s
    out: dict[str, tuple[list[str], list[list[str]], str]] = {}
    res = bench.results

    rows = []
    for lib in bench.libs:
        r = res[lib.name]
        h95, h99 = r.headline.get("0.95"), r.headline.get("0.99")
        rows.append(
            [
                f"{lib.name} {r.version}",
                f"{r.build_s:.1f} s",
                f"{s.n / r.build_s:,.0f}",
                _ef(r.ef_for.get("0.95")),
                _rec(h95),
                h95.qps_str if h95 else "—",
                fmt_us(h95.p99_us) if h95 else "—",
                _ef(r.ef_for.get("0.99")),
                _rec(h99),
                h99.qps_str if h99 else "—",
                f"{r.batch_qps:,.0f}" if r.batch_qps else "—",
            ]
        )
    out["headline"] = (
        [
            "library",
            f"build ({s.threads} thr)",
            "vectors/s",
            "ef @0.95",
            "recall",
            "QPS 1 thr",
            "p99 µs",
            "ef @0.99",
            "recall",
            "QPS 1 thr",
            f"batch QPS ({s.threads} thr) @0.95",
        ],
        rows,
        "lrrrrrrrrrr",
    )

    efs = sorted({p.ef for r in res.values() for p in r.sweep})
    rows = []
    for ef in efs:
        row = [str(ef)]
        for lib in bench.libs:
            p = next((p for p in res[lib.name].sweep if p.ef == ef), None)
            row += [_rec(p), p.qps_str if p else "—"]
        rows.append(row)
    headers = ["ef"]
    for lib in bench.libs:
        headers += [f"{lib.name} recall", f"{lib.name} QPS"]
    out["sweep"] = (headers, rows, "r" * len(headers))

    def row(m: str, method: str, p: Point) -> list[str]:
        return [m, method, str(p.ef), _rec(p), _pct(p.short), str(p.bad), p.qps_str]

    labels = {
        "faiss": "faiss HNSW + IDSelectorBitmap",
        "hnswlib": "hnswlib filter= (Python callable)",
    }
    exact_names = {
        "numpy": "exact, numpy gather + matmul",
        "faiss-flat": "exact, faiss IndexFlat + IDSelectorBitmap",
    }
    rows = []
    for sel in SELECTIVITIES:
        key = f"{sel:.3f}"
        m = f"{sel:.1%} ({bench.filters[sel].ids.size:,})"
        rows += [
            [*row(m, exact_names[k], p)[:2], "—", *row(m, "", p)[3:]]
            for k, p in bench.exact[key].items()
        ]
        for lib in bench.libs:
            entry = res[lib.name].filtered.get(key, {})
            label = labels.get(lib.name, lib.name)
            if native := entry.get("native"):
                base, tuned = native["at_base_ef"], native["tuned"]
                rows.append(row(m, f"{label}, unfiltered ef", base))
                if tuned is None:
                    rows.append(
                        [m, f"{label}, tuned ef", f"> {FILTER_EFS[-1]}", "< 0.95", "—", "—", "—"]
                    )
                elif tuned is not base:
                    rows.append(row(m, f"{label}, tuned ef", tuned))
            if "IDSelectorBatch" in entry:
                rows.append(row(m, "faiss HNSW + IDSelectorBatch", entry["IDSelectorBatch"]))
            if "post-filter" in entry:
                count = entry["post-filter count"]
                rows.append(
                    row(
                        m,
                        f"usearch search {count:,} then filter (not native)",
                        entry["post-filter"],
                    )
                )
    out["filtered"] = (
        ["selectivity (matches)", "method", "ef", "recall@10", "short", "bad ids", "QPS 1 thr"],
        rows,
        "llrrrrr",
    )

    rows = []
    for sel in SELECTIVITIES:
        key = f"{sel:.3f}"
        e = bench.exact[key]
        row = [
            f"{sel:.1%} ({bench.filters[sel].ids.size:,})",
            e["numpy"].qps_str,
            e["faiss-flat"].qps_str,
        ]
        for name in ("faiss", "hnswlib"):
            if name not in res:
                row.append("not installed")
                continue
            g = graph_filtered(bench, name, key)
            row.append(f"{g.qps:,.0f} (ef {g.ef})" if g else "recall < 0.95")
        rows.append(row)
    out["crossover"] = (
        [
            "selectivity (matches)",
            "exact numpy",
            "exact faiss flat+bitmap",
            "faiss HNSW+bitmap @≥0.95",
            "hnswlib filter= @≥0.95",
        ],
        rows,
        "lrrrr",
    )

    rows = []
    for lib in bench.libs:
        r = res[lib.name]
        d, u, st = r.after_delete, r.after_update, r.update_stats
        rows.append(
            [
                lib.name,
                f"{r.delete_s * 1000:,.1f} ms" if r.delete_s is not None else "—",
                _rec(d),
                d.qps_str if d else "—",
                str(d.bad) if d else "—",
                _pct(d.short if d else None),
                fmt_us(st.p50_us) if st else "—",
                fmt_us(st.p99_us) if st else "—",
                _pct(r.updated_stored),
                _pct(r.updated_found_top1),
                _rec(u),
                str(u.bad) if u else "—",
            ]
        )
    out["deletes"] = (
        [
            "library",
            f"delete {s.delete_percent}%",
            "recall after",
            "QPS after",
            "deleted ids returned",
            "short",
            "update p50 µs",
            "update p99 µs",
            "new vector stored",
            "updated found @1",
            "recall after updates",
            "deleted returned",
        ],
        rows,
        "lrrrrrrrrrrr",
    )

    rows = []
    for lib in bench.libs:
        r = res[lib.name]
        extra = f"; {r.extra_load[0]} {r.extra_load[1] * 1000:,.0f} ms" if r.extra_load else ""
        rows.append(
            [
                lib.name,
                f"{r.rss_build_mib:,.0f} MiB" if r.rss_build_mib is not None else "—",
                f"{r.file_mib:,.0f} MiB" if r.file_mib is not None else "—",
                f"{r.save_s:.2f} s" if r.save_s is not None else "—",
                (f"{r.load_s:.2f} s" if r.load_s is not None else "—") + extra,
                _pct(r.load_identical, 0),
            ]
        )
    out["persist"] = (
        ["library", "RSS growth during build", "snapshot file", "save", "load", "same results"],
        rows,
        "lrrrll",
    )

    rows = [
        [lib.name, lib.native_filter, lib.delete_api, lib.update_api, lib.persist_api]
        for lib in bench.libs
    ]
    out["api"] = (["library", "filtered search", "delete", "update", "persist"], rows, "lllll")
    return out


TITLES = {
    "headline": ("Build and search (recall targets)", True),
    "sweep": ("Recall / QPS sweep (single query, one thread)", False),
    "filtered": ("Filtered search", False),
    "crossover": ("Exact search vs filtered graph (crossover), single-query QPS", False),
    "deletes": ("Deletes and updates", False),
    "persist": ("Persistence and memory", False),
    "api": ("API notes", False),
}


def report(
    bench: Bench,
    quick: bool,
    machine: dict[str, str],
    decision: dict[str, Any],
    cross: dict[str, Any],
    raw: dict[str, Any],
) -> Report:
    s = bench.s
    r = Report(
        SECTION,
        "vector_libs",
        "Vector index: hnswlib vs faiss vs usearch (HNSW)",
        f"{s.n:,} x {s.dim} float32 clustered vectors, {s.queries:,} held-out queries, M = 16, "
        f"ef_construction = 200; builds and batch search on {s.threads} threads, single-query "
        "search on one.",
        quick,
        machine,
        raw=raw,
    )
    r.check(
        "index library chosen: native filtered search, working deletes, then QPS",
        ", ".join(x.name for x in bench.libs if x.name != decision["pick"]) or "—",
        decision["pick"],
    )
    qps = [bench.results[x.name].headline.get("0.95") for x in bench.libs]
    r.check(
        "QPS at recall 0.95, one thread: " + " vs ".join(x.name for x in bench.libs),
        "—",
        " vs ".join(p.qps_str if p else "—" for p in qps),
    )
    r.check("exact-search crossover of the filtered graph (faiss)", "—", cross["text"])
    for key, (headers, rows, align) in tables(bench).items():
        title, publish = TITLES[key]
        r.table(title, headers, rows, align, publish=publish)
    for cls in LIBS:
        if not INSTALLED[cls.name]:
            print(f"{cls.name}: skipped, not installed (pip install {cls.package})")
            r.note(cls.name, f"not measured: {cls.package} is not installed")
    return r


# main --------------------------------------------------------------------------------------


def to_json(p: Any) -> Any:
    if isinstance(p, Point):
        return asdict(p)
    if isinstance(p, Stats):
        return p.to_json()
    if isinstance(p, dict):
        return {k: to_json(v) for k, v in p.items()}
    if isinstance(p, list | tuple):
        return [to_json(v) for v in p]
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb vector-index benchmark: hnswlib vs faiss HNSW vs usearch.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~1-2 min smoke run)")
    for f in fields(Sizes):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=int,
            default=None,
            help=f"default {getattr(FULL, f.name):,}, --quick {getattr(QUICK, f.name):,}",
        )
    parser.add_argument("--data-dir", help="parent of the temporary snapshot directory")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    chosen = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    sizes = Sizes(**{k: (v if v is not None else getattr(base, k)) for k, v in chosen.items()})
    if min(sizes.n, sizes.dim, sizes.queries, sizes.clusters, sizes.threads) < 1:
        parser.error("sizes must be positive")
    if sizes.n * min(SELECTIVITIES) < K:
        parser.error(f"--n too small: the {min(SELECTIVITIES):.1%} filter needs ≥ {K} matches")
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    faiss.omp_set_num_threads(sizes.threads)
    console.print(
        f"[bold]dataset: {sizes.n:,} x {sizes.dim}, {sizes.queries:,} queries; exact ground "
        "truth…[/bold]"
    )
    data = make_data(sizes)
    console.print(f"generated in {data.gen_s:.1f} s, ground truth in {data.gt_s:.1f} s")
    started = time.perf_counter()
    with temp_dir("engramdb-bench-vectors-", args.data_dir) as root:
        machine = machine_info(
            ("engramdb", "numpy", "hnswlib", "faiss-cpu", "usearch"),
            data_dir=root,
            extra={"threads": f"{sizes.threads} for builds and batch search, 1 for single queries"},
        )
        if usearch is not None:
            machine["usearch SIMD"] = str(usearch.index.Index(ndim=8).hardware_acceleration)
        bench = Bench(sizes, data, root, new_progress())
        bench.run()
    elapsed = time.perf_counter() - started
    machine["run time"] = f"{elapsed / 60:.1f} min"
    cross = crossover(bench, "faiss")
    decision = decide(bench)
    raw = {
        "sizes": asdict(sizes),
        "decision": decision,
        "crossover_faiss": cross,
        "crossover_hnswlib": crossover(bench, "hnswlib") if "hnswlib" in bench.results else None,
        "exact": to_json(bench.exact),
        "deleted_count": int(bench.deleted.size) if bench.deleted is not None else 0,
        "libraries": {
            lib.name: {
                **{k: to_json(v) for k, v in asdict(res).items() if k != "update_stats"},
                "update_stats": res.update_stats.to_json() if res.update_stats else None,
                "api": {
                    "filtered search": lib.native_filter,
                    "delete": lib.delete_api,
                    "update": lib.update_api,
                    "persist": lib.persist_api,
                },
            }
            for lib in bench.libs
            for res in [bench.results[lib.name]]
        },
    }
    report(bench, args.quick, machine, decision, cross, raw).save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
