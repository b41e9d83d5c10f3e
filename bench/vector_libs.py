"""HNSW libraries for engramdb's vector index: hnswlib, faiss and usearch, in one run.

    python bench/vector_libs.py          # 100,000 x 384, about 10-15 min on 2 cores
    python bench/vector_libs.py --quick  # 20,000 x 128, ~1-2 min

Which native HNSW library should the embedding store use? Each gets the same clustered unit
vectors (inner product = cosine), graph (M 16, ef_construction 200) and threads, in one
process: (1) build on ``--threads`` threads (RSS growth, file size); (2) single-query search on
one thread over an ef sweep (recall@10 against exact, QPS), the smallest ef reaching 0.95 and
0.99 again with the libraries taking turns; (3) batch search at the 0.95 ef (best of 3);
(4) filtered search at 0.2 % … 20 % selectivity with each library's native mechanism (faiss
``IDSelectorBitmap`` in the graph walk, ``IDSelectorBatch`` too at 1 % and 10 %; hnswlib
``filter=``, a Python callable; usearch has none: search-then-filter, over-fetching) at the
unfiltered 0.95 ef and at the smallest ef giving filtered recall 0.95 (probed on ``--probe``
queries), beside exact search over the matching set (numpy; faiss ``IndexFlat`` + bitmap) to
find where exact search should take over; (5) save / load; (6) delete 10 %: recall, deleted
ids returned; then ``--updates`` items get a new vector under the same id, one call each.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: exact search on one thread

import argparse
import contextlib
import ctypes
import functools
import gc
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np
from rich.progress import Progress

import _common as c
import vectors as v
from vectors import EF_SWEEP, TARGETS, K, pad, step

# The peers: a library not installed is left out of the run, with the reason printed.
hnswlib = None if c.missing("hnswlib") else importlib.import_module("hnswlib")
usearch = None if c.missing("usearch") else importlib.import_module("usearch.index")

FILTER_EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
SELECTIVITIES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20)
REQUIRED_SELECTIVITIES = (0.01, 0.10)  # every method is measured at these
POST_FILTER_OVERFETCH = 2.0  # usearch search-then-filter fetches this x k / selectivity
WARM = 50

SearchFn = Callable[[np.ndarray], np.ndarray]  # (1, d) query -> (K,) int64 ids, -1 padded


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


# library -> (filtered search, delete, update, persist): the "API notes" table
API = {
    "hnswlib": (
        "`knn_query(q, k, filter=callable)`: a Python callable per candidate, with the GIL",
        "`mark_deleted(label)` (tombstone; skipped in results, still routed through)",
        "`add_items(v, [label])` on an existing label updates in place (also un-deletes a "
        "marked label)",
        "`save_index(path)` / `Index(space, dim).load_index(path, max_elements)`",
    ),
    "faiss": (
        "`search(q, k, params=SearchParametersHNSW(sel=IDSelectorBitmap(nbytes, ptr), "
        "efSearch=ef))`: C++ bitmap test during the graph walk",
        "none for HNSW (`remove_ids` raises, also through `IndexIDMap2`): tombstone = a "
        "bitmap of live ids passed as `IDSelectorBitmap` on every search",
        "append the new vector (new internal id) + tombstone the old + remap ids",
        "`faiss.write_index(index, path)` / `faiss.read_index(path)` (bitmap, id map: yours)",
    ),
    "usearch": (
        "none in the Python API (`search()` takes no predicate); search-then-filter",
        "`remove(keys)` (tombstone; `remove(..., compact=True)` also relinks)",
        "`remove(key)` + `add(key, v)` (`add` of an existing key raises)",
        "`save(path)` / `Index.restore(path)`, or `Index.restore(path, view=True)` (mmap)",
    ),
}


def bitmap_selector(bitmap: np.ndarray) -> Any:
    """faiss.IDSelectorBitmap over ``bitmap``; its first argument is the size in BYTES."""
    return faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))


class Lib:
    """One library behind the operations the benchmark needs; ids are external ids."""

    name = package = ""
    native_filter = False  # filters inside the graph walk, in native code
    filter_label = ""  # names its own filtered search (``filtered``), if it has one

    def __init__(self, s: Sizes) -> None:
        self.s, self.ef, self.index = s, 0, None

    def set_threads(self, threads: int) -> None:
        """Threads for the calls that take no explicit count (faiss OpenMP)."""

    def load(self, path: str) -> Lib:
        """A second instance on the snapshot ``save`` wrote (its own ``open``), at this ef."""
        other = type(self)(self.s)
        other.index = self.open(path)
        other.set_ef(self.ef)
        return other

    def extra_load(self, path: str) -> tuple[str, float] | None:
        """Another way to open a snapshot (e.g. memory-mapped view) and its time."""
        return None


class Hnswlib(Lib):
    name = package = "hnswlib"
    filter_label = "hnswlib filter= (Python callable)"

    def build(self, x: np.ndarray, threads: int) -> None:
        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        s = self.s
        self.index.init_index(max_elements=x.shape[0], M=s.m, ef_construction=s.ef_construction,
                              random_seed=s.seed)  # fmt: skip
        self.index.set_num_threads(threads)
        self.index.add_items(x, np.arange(x.shape[0]), num_threads=threads)

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.set_ef(ef)

    def set_threads(self, threads: int) -> None:
        self.index.set_num_threads(threads)

    def one(self, q: np.ndarray) -> np.ndarray:
        return self.index.knn_query(q, k=K, num_threads=1)[0][0].astype(np.int64)

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        return self.index.knn_query(qs, k=K, num_threads=threads)[0].astype(np.int64)

    def filtered(self, mask: np.ndarray, bitmap: np.ndarray, ef: int) -> SearchFn:
        self.set_ef(ef)
        check = mask.tolist().__getitem__  # a C-level callable: the cheapest Python filter
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

    def open(self, path: str) -> Any:
        index = hnswlib.Index(space="ip", dim=self.index.dim)
        index.load_index(path, max_elements=self.index.get_max_elements())
        return index


class Faiss(Lib):
    name, package, native_filter = "faiss", "faiss-cpu", True
    filter_label = "faiss HNSW + IDSelectorBitmap"

    def __init__(self, s: Sizes) -> None:
        super().__init__(s)
        self.params: Any = None  # SearchParametersHNSW(sel=live bitmap) once anything changed
        self.live: np.ndarray | None = None  # bitmap over internal ids (capacity incl. updates)
        self.external = np.empty(0, dtype=np.int64)  # internal id -> external id
        self.internal = np.empty(0, dtype=np.int64)  # external id -> internal id

    def build(self, x: np.ndarray, threads: int) -> None:
        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(x.shape[1], self.s.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.s.ef_construction
        self.index.add(x)

    def set_ef(self, ef: int) -> None:
        self.ef = self.index.hnsw.efSearch = ef
        if self.params is not None:
            self.params.efSearch = ef

    def set_threads(self, threads: int) -> None:
        faiss.omp_set_num_threads(threads)

    def _map(self, ids: np.ndarray) -> np.ndarray:
        if self.live is None:
            return ids
        return np.where(ids >= 0, self.external[np.maximum(ids, 0)], -1)

    def one(self, q: np.ndarray) -> np.ndarray:
        return self._map(self.index.search(q, K, params=self.params)[1][0])

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        faiss.omp_set_num_threads(threads)  # Bench.batch sets one thread again after
        return self._map(self.index.search(qs, K, params=self.params)[1])

    def filtered(self, mask: np.ndarray, bitmap: np.ndarray, ef: int, sel: Any = None) -> SearchFn:
        """``sel`` (default: a bitmap selector) tests each candidate during the graph walk."""
        sel = sel if sel is not None else bitmap_selector(bitmap)
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
        index = self.index

        def search(q: np.ndarray, _keep: object = (bitmap, sel, params)) -> np.ndarray:
            return index.search(q, K, params=params)[1][0]

        return search

    def _tombstones(self) -> np.ndarray:
        if self.live is None:
            n = self.index.ntotal
            capacity = n + self.s.updates
            self.live = np.packbits(np.arange(capacity) < n, bitorder="little")
            self.live_sel = bitmap_selector(self.live)  # reads `live` in place on every search
            self.params = faiss.SearchParametersHNSW(sel=self.live_sel, efSearch=self.ef)
            self.external = np.arange(capacity, dtype=np.int64)
            self.internal = np.arange(n, dtype=np.int64)
        return self.live

    def delete(self, ids: np.ndarray) -> None:
        live = self._tombstones()
        gone = self.internal[ids]
        np.bitwise_and.at(live, gone >> 3, ~(np.uint8(1) << (gone & 7).astype(np.uint8)))

    def update(self, item: int, vector: np.ndarray) -> None:
        live = self._tombstones()
        old, new = int(self.internal[item]), int(self.index.ntotal)
        self.index.add(vector[None, :])
        self.external[new], self.internal[item] = item, new
        live[new >> 3] |= np.uint8(1 << (new & 7))
        live[old >> 3] &= np.uint8(~(1 << (old & 7)) & 0xFF)

    def vector_of(self, item: int) -> np.ndarray:
        self._tombstones()
        return np.asarray(self.index.reconstruct(int(self.internal[item])))

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    def open(self, path: str) -> Any:
        return faiss.read_index(path)


class Usearch(Lib):
    name = package = "usearch"

    def build(self, x: np.ndarray, threads: int) -> None:
        self.index = usearch.Index(ndim=x.shape[1], metric="ip", dtype="f32",
                                   connectivity=self.s.m,
                                   expansion_add=self.s.ef_construction)  # fmt: skip
        self.index.add(np.arange(x.shape[0], dtype=np.uint64), x, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.ef = self.index.expansion_search = ef

    def one(self, q: np.ndarray) -> np.ndarray:
        return pad(self.index.search(q[0], K, threads=1).keys)

    def batch(self, qs: np.ndarray, threads: int) -> np.ndarray:
        found = self.index.search(qs, K, threads=threads)
        keys = found.keys.astype(np.int64)
        keys[np.arange(K)[None, :] >= np.asarray(found.counts)[:, None]] = -1
        return keys

    def post_filtered(self, mask: np.ndarray, selectivity: float, ef: int) -> tuple[SearchFn, int]:
        """Search-then-filter, over-fetching ``POST_FILTER_OVERFETCH * K / selectivity``."""
        self.set_ef(ef)
        count = min(self.s.n, math.ceil(POST_FILTER_OVERFETCH * K / selectivity))
        index = self.index

        def search(q: np.ndarray) -> np.ndarray:
            keys = index.search(q[0], count, threads=1).keys
            return pad(keys[mask[keys]])

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

    def open(self, path: str) -> Any:
        return usearch.Index.restore(path)

    def extra_load(self, path: str) -> tuple[str, float] | None:
        t0 = time.perf_counter()
        view = usearch.Index.restore(path, view=True)
        elapsed = time.perf_counter() - t0
        del view
        return "`restore(view=True)` (mmap)", elapsed


INSTALLED = {Hnswlib: hnswlib is not None, Faiss: True, Usearch: usearch is not None}


class Bench:
    def __init__(self, s: Sizes, root: str, progress: Progress) -> None:
        self.s, self.root, self.progress = s, root, progress
        x = c.clustered_vectors(s.n + s.queries + s.updates, s.dim, clusters=s.clusters,
                                rank=s.rank, seed=s.seed)  # fmt: skip
        self.base, self.queries, self.new = x[: s.n], x[s.n : s.n + s.queries], x[s.n + s.queries :]
        self.labels = np.random.default_rng(s.seed + 1).integers(0, v.LABELS, s.n)
        masks = [self.labels < round(sel * v.LABELS) for sel in SELECTIVITIES]
        t0 = time.perf_counter()
        self.gt, *truths = c.exact_top_k(self.queries, self.base, K, masks=masks)
        self.filters = dict(zip(SELECTIVITIES, zip(masks, truths)))  # sel -> (mask, gt)
        progress.console.print(f"exact ground truth in {time.perf_counter() - t0:.1f} s")
        self.q2 = [self.queries[i : i + 1] for i in range(s.queries)]
        self.libs: list[Any] = [cls(s) for cls, ok in INSTALLED.items() if ok]
        self.res: dict[str, dict[str, Any]] = {
            lib.name: {"version": c._version(lib.package), "sweep": [], "ef_for": {},
                       "headline": {}, "filtered": {}} for lib in self.libs
        }  # fmt: skip
        self.exact: dict[float, dict[str, Any]] = {}  # selectivity -> method -> point

    def point(self, fn: SearchFn, gt: np.ndarray, description: str, *, ef: int,
              queries: int | None = None, bad: np.ndarray | None = None) -> Any:  # fmt: skip
        """``fn`` over the first ``queries`` queries; recall against ``gt``."""
        side = (fn, self.q2[: queries or self.s.queries], np.asarray)
        [p] = v.points([side], gt, self.progress, description, warm=WARM, bad=bad)
        return replace(p, ef=ef)

    def ef95(self, lib: Any) -> int:
        return self.res[lib.name]["ef_for"].get("0.95") or EF_SWEEP[-1]

    def build(self) -> None:
        for lib in self.libs:
            res = self.res[lib.name]
            gc.collect()
            with contextlib.suppress(OSError, AttributeError):  # freed scratch (ground truth)
                ctypes.CDLL(None).malloc_trim(0)  # back to the OS: the growth is the index's
            before = c.rss_kib()[0]
            with step(self.progress, f"build · {lib.name} ({self.s.threads} threads)"):
                t0 = time.perf_counter()
                lib.build(self.base, self.s.threads)
                res["build_s"] = time.perf_counter() - t0
            res["rss_build_mib"] = (c.rss_kib()[0] - before) / 1024
            lib.set_threads(1)

    def sweep(self) -> None:
        for lib in self.libs:
            res = self.res[lib.name]
            for ef in EF_SWEEP:
                lib.set_ef(ef)
                res["sweep"].append(self.point(lib.one, self.gt, f"search · {lib.name} ef={ef}",
                                               ef=ef))  # fmt: skip
                if v.swept_enough(ef, res["sweep"][-1].recall):
                    break
            for target in TARGETS:
                ok = [p.ef for p in res["sweep"] if p.recall >= target]
                res["ef_for"][f"{target:.2f}"] = min(ok) if ok else None

    def headline(self) -> None:
        """The chosen efs again, the libraries taking turns (load drift falls on all alike)."""
        for target in TARGETS:
            key, sides = f"{target:.2f}", []
            for lib in self.libs:
                lib.set_ef(self.res[lib.name]["ef_for"].get(key) or EF_SWEEP[-1])
                sides.append((lib.one, self.q2, np.asarray))
            found = v.points(sides, self.gt, self.progress, f"head-to-head @{key}", warm=WARM)
            for lib, p in zip(self.libs, found):
                self.res[lib.name]["headline"][key] = replace(p, ef=lib.ef)

    def batch(self) -> None:
        for lib in self.libs:
            lib.set_ef(self.ef95(lib))
            best = math.inf
            with step(self.progress, f"batch · {lib.name} ({self.s.threads} threads)"):
                for _ in range(3):
                    t0 = time.perf_counter()
                    lib.batch(self.queries, self.s.threads)
                    best = min(best, time.perf_counter() - t0)
            lib.set_threads(1)
            self.res[lib.name]["batch_qps"] = self.s.queries / best

    def filtered(self) -> None:
        """Filtered search per selectivity: exact baselines, then each graph method."""
        flat: Any = faiss.downcast_index(self._lib(Faiss).index.storage)  # HNSW's own vectors
        base = self.base
        for sel, (mask, gt) in self.filters.items():
            ids, bitmap = np.flatnonzero(mask), np.packbits(mask, bitorder="little")

            def exact_numpy(q: np.ndarray, ids: np.ndarray = ids) -> np.ndarray:
                sc = base[ids] @ q[0]  # gather + one matmul, as engramdb would for a small set
                if sc.size <= K:
                    return pad(ids[np.argsort(-sc)])
                return ids[np.argpartition(-sc, K - 1)[:K]]

            params = faiss.SearchParameters(sel=bitmap_selector(bitmap))

            def exact_flat(q: np.ndarray, params: Any = params, _keep: Any = bitmap) -> np.ndarray:
                return flat.search(q, K, params=params)[1][0]

            m = f"{sel:.1%} ({ids.size:,})"
            self.exact[sel] = {
                "numpy": self.point(exact_numpy, gt, f"exact numpy · {m}", ef=0),
                "faiss-flat": self.point(exact_flat, gt, f"exact faiss flat · {m}", ef=0),
            }
            for lib in self.libs:
                entry = self.res[lib.name]["filtered"][sel] = {}
                if lib.filter_label:
                    make = functools.partial(lib.filtered, mask, bitmap)
                    entry["native"] = self._tuned(lib.name, make, gt, self.ef95(lib), ~mask, m)
            if sel not in REQUIRED_SELECTIVITIES:
                continue
            faiss_entry = self.res["faiss"]["filtered"][sel]
            tuned = faiss_entry["native"]["tuned"]
            ef = tuned.ef if tuned is not None else FILTER_EFS[-1]
            fn = self._lib(Faiss).filtered(mask, ids, ef, sel=faiss.IDSelectorBatch(ids))
            faiss_entry["IDSelectorBatch"] = self.point(
                fn, gt, f"faiss IDSelectorBatch · {m}", ef=ef, bad=~mask
            )
            if (lib := self._lib(Usearch)) is not None:
                fn, count = lib.post_filtered(mask, sel, self.ef95(lib))
                entry = self.res["usearch"]["filtered"][sel]
                entry["post-filter count"] = count
                entry["post-filter"] = self.point(fn, gt, f"usearch post-filter · {m}",
                                                  ef=self.ef95(lib), bad=~mask)  # fmt: skip
        for lib in self.libs:
            lib.set_ef(self.ef95(lib))

    def _tuned(self, name: str, make: Callable[[int], SearchFn], gt: np.ndarray, base_ef: int,
               bad: np.ndarray, label: str) -> dict[str, Any]:  # fmt: skip
        """At the unfiltered 0.95 ef, then at the smallest ef giving filtered recall 0.95."""
        at_base = self.point(make(base_ef), gt, f"{name} filter · {label} ef={base_ef}",
                             ef=base_ef, bad=bad)  # fmt: skip
        tuned = at_base if at_base.recall >= TARGETS[0] else None
        for ef in (e for e in FILTER_EFS if e > base_ef):
            if tuned is not None:
                break
            fn = make(ef)
            probe = self.point(fn, gt, f"{name} filter probe · {label} ef={ef}", ef=ef,
                               queries=min(self.s.probe, self.s.queries))  # fmt: skip
            if probe.recall >= TARGETS[0]:
                full = self.point(fn, gt, f"{name} filter · {label} ef={ef}", ef=ef, bad=bad)
                tuned = full if full.recall >= TARGETS[0] else None
        return {"at_base_ef": at_base, "tuned": tuned}

    def persist(self) -> None:
        for lib in self.libs:
            res, path = self.res[lib.name], os.path.join(self.root, f"{lib.name}.index")
            with step(self.progress, f"save + load · {lib.name}"):
                t0 = time.perf_counter()
                lib.save(path)
                res["save_s"] = time.perf_counter() - t0
                res["file_mib"] = os.path.getsize(path) / 2**20
                gc.collect()
                t0 = time.perf_counter()
                loaded = lib.load(path)
                res["load_s"] = time.perf_counter() - t0
                loaded.set_threads(1)
                same = [np.array_equal(lib.one(q), loaded.one(q)) for q in self.q2[:100]]
                res["load_identical"] = sum(same) / len(same)
                del loaded
                res["extra_load"] = lib.extra_load(path)
                gc.collect()
            os.remove(path)

    def deletes_and_updates(self) -> None:
        s = self.s
        rng = np.random.default_rng(s.seed + 7)
        deleted = np.sort(rng.choice(s.n, s.n * s.delete_percent // 100, replace=False))
        gone = np.zeros(s.n, dtype=bool)
        gone[deleted] = True
        updated = rng.choice(np.flatnonzero(~gone), min(s.updates, s.n - deleted.size),
                             replace=False)  # fmt: skip
        new = self.new[: updated.size]
        gt_deleted = c.exact_top_k(self.queries, self.base, K, masks=[~gone])[1]
        changed = self.base.copy()
        changed[updated] = new
        gt_updated = c.exact_top_k(self.queries, changed, K, masks=[~gone])[1]
        for lib in self.libs:
            res, ef = self.res[lib.name], self.ef95(lib)
            with step(self.progress, f"delete {s.delete_percent}% · {lib.name}"):
                t0 = time.perf_counter()
                lib.delete(deleted)
                res["delete_s"] = time.perf_counter() - t0
            lib.set_ef(ef)
            res["after_delete"] = self.point(
                lib.one, gt_deleted, f"search after delete · {lib.name}", ef=ef, bad=gone
            )
            res["update_stats"] = c.measure(
                lambda j, lib=lib: lib.update(int(updated[j]), new[j]), list(range(updated.size)),
                meter=c.Meter(self.progress), description=f"update (same id) · {lib.name}",
            )  # fmt: skip
            lib.set_ef(ef)
            top1 = [int(lib.one(new[j : j + 1])[0]) == int(updated[j]) for j in range(updated.size)]
            res["updated_found_top1"] = sum(top1) / len(top1)
            stored = [
                np.allclose(lib.vector_of(int(u)), x, atol=1e-6) for u, x in zip(updated, new)
            ]
            res["updated_stored"] = sum(stored) / len(stored)
            res["after_update"] = self.point(
                lib.one, gt_updated, f"search after update · {lib.name}", ef=ef, bad=gone
            )

    def _lib(self, cls: type[Lib]) -> Any:
        return next((lib for lib in self.libs if isinstance(lib, cls)), None)

    def run(self) -> None:
        with self.progress:
            for phase in (self.build, self.sweep, self.headline, self.batch, self.filtered,
                          self.persist, self.deletes_and_updates):  # fmt: skip
                phase()


def graph_filtered(bench: Bench, lib: str, sel: float) -> Any:
    """The library's native filtered search at recall ≥ 0.95 (tuned ef), if it has one."""
    native = bench.res[lib]["filtered"][sel].get("native")
    return native["tuned"] if native else None


def crossover(bench: Bench, lib: str) -> str:
    """Selectivity where exact search (best of numpy / faiss flat) stops beating ``lib``'s
    graph: interpolated on log(selectivity) between the last measured selectivity where exact
    wins and the first where the filtered graph (at recall ≥ 0.95) wins."""
    prev: tuple[float, float] | None = None
    for sel in SELECTIVITIES:
        exact = max(p.qps for p in bench.exact[sel].values())
        graph = graph_filtered(bench, lib, sel)
        ratio = graph.qps / exact if graph is not None else 0.0
        if ratio > 1.0:
            if prev is None:
                return f"below {sel:.1%}: the graph was faster at every measured selectivity"
            (s0, r0), s1 = prev, sel
            x = s0
            if r0 > 0:
                t = -math.log(r0) / (math.log(ratio) - math.log(r0))
                x = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
            return (f"≈ {x:.1%} (≈ {round(x * bench.s.n):,} matching items; measured between "
                    f"{s0:.1%} and {s1:.1%})")  # fmt: skip
        prev = (sel, ratio)
    return f"above {SELECTIVITIES[-1]:.0%}: exact search was faster at every measured selectivity"


def decide(bench: Bench) -> str:
    """Native in-search filtering and working deletes are requirements; among the eligible
    libraries the best single-query QPS at recall 0.95 wins."""
    res = bench.res
    eligible = [lib.name for lib in bench.libs
                if lib.native_filter and res[lib.name]["after_delete"].bad == 0]  # fmt: skip
    return max(eligible or list(res), key=lambda name: res[name]["headline"]["0.95"].qps)


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}%}"


def _rec(p: Any) -> str:
    return "—" if p is None else f"{p.recall:.3f}"


def _qps(p: Any) -> str:
    return "—" if p is None else f"{p.qps:,.0f}"


def tables(bench: Bench) -> list[tuple[str, bool, list[str], list[list[str]], str]]:
    """(title, publish, headers, rows, align) of every table."""
    s, res, names = bench.s, bench.res, [lib.name for lib in bench.libs]

    def ef(r: dict[str, Any], key: str) -> str:
        return str(r["ef_for"][key]) if r["ef_for"][key] is not None else "not reached"

    build = []
    for name, r in res.items():
        h95, h99 = r["headline"]["0.95"], r["headline"]["0.99"]
        build.append([
            f"{name} {r['version']}", f"{r['build_s']:.1f} s", f"{s.n / r['build_s']:,.0f}",
            ef(r, "0.95"), _rec(h95), _qps(h95), c.fmt_us(h95.p99_us), ef(r, "0.99"), _rec(h99),
            _qps(h99), f"{r['batch_qps']:,.0f}",
        ])  # fmt: skip
    by_ef = [{p.ef: p for p in r["sweep"]} for r in res.values()]
    efs = sorted({ef for points in by_ef for ef in points})
    sweep = [[str(e), *(x for d in by_ef for x in (_rec(d.get(e)), _qps(d.get(e))))] for e in efs]

    def row(m: str, method: str, p: Any, ef: str | None = None) -> list[str]:
        return [m, method, ef or str(p.ef), _rec(p), _pct(p.short), str(p.bad), _qps(p)]

    filtered, crossing = [], []
    for sel, exact in bench.exact.items():
        m = f"{sel:.1%} ({int(bench.filters[sel][0].sum()):,})"
        filtered += [
            row(m, "exact, numpy gather + matmul", exact["numpy"], "—"),
            row(m, "exact, faiss IndexFlat + IDSelectorBitmap", exact["faiss-flat"], "—"),
        ]
        for lib in bench.libs:
            entry = res[lib.name]["filtered"][sel]
            if native := entry.get("native"):
                at_base, tuned = native["at_base_ef"], native["tuned"]
                filtered.append(row(m, f"{lib.filter_label}, unfiltered ef", at_base))
                if tuned is None:
                    filtered.append([m, f"{lib.filter_label}, tuned ef", f"> {FILTER_EFS[-1]}",
                                     "< 0.95", "—", "—", "—"])  # fmt: skip
                elif tuned is not at_base:
                    filtered.append(row(m, f"{lib.filter_label}, tuned ef", tuned))
            if "IDSelectorBatch" in entry:
                filtered.append(row(m, "faiss HNSW + IDSelectorBatch", entry["IDSelectorBatch"]))
            if "post-filter" in entry:
                filtered.append(row(m, f"usearch search {entry['post-filter count']:,} then filter "
                                    "(not native)", entry["post-filter"]))  # fmt: skip
        graphs = [
            "not installed" if name not in res
            else f"{g.qps:,.0f} (ef {g.ef})" if (g := graph_filtered(bench, name, sel))
            else "recall < 0.95"
            for name in ("faiss", "hnswlib")
        ]  # fmt: skip
        crossing.append([m, _qps(exact["numpy"]), _qps(exact["faiss-flat"]), *graphs])
    deletes, persist = [], []
    for name, r in res.items():
        d, u, st = r["after_delete"], r["after_update"], r["update_stats"]
        deletes.append([
            name, f"{r['delete_s'] * 1000:,.1f} ms", _rec(d), _qps(d), str(d.bad), _pct(d.short),
            c.fmt_us(st.p50_us), c.fmt_us(st.p99_us), _pct(r["updated_stored"]),
            _pct(r["updated_found_top1"]), _rec(u), str(u.bad),
        ])  # fmt: skip
        how, secs = r["extra_load"] or ("", 0.0)
        extra = f"; {how} {secs * 1000:,.0f} ms" if how else ""
        persist.append([name, f"{r['rss_build_mib']:,.0f} MiB", f"{r['file_mib']:,.0f} MiB",
                        f"{r['save_s']:.2f} s", f"{r['load_s']:.2f} s{extra}",
                        _pct(r["load_identical"], 0)])  # fmt: skip
    return [
        ("Build and search (recall targets)", True,
         ["library", f"build ({s.threads} thr)", "vectors/s", "ef @0.95", "recall", "QPS 1 thr",
          "p99 µs", "ef @0.99", "recall", "QPS 1 thr", f"batch QPS ({s.threads} thr) @0.95"],
         build, "lrrrrrrrrrr"),
        ("Recall / QPS sweep (single query, one thread)", False,
         ["ef", *(f"{n} {x}" for n in names for x in ("recall", "QPS"))], sweep,
         "r" * (1 + 2 * len(names))),
        ("Filtered search", False, ["selectivity (matches)", "method", "ef", "recall@10", "short",
                                    "bad ids", "QPS 1 thr"], filtered, "llrrrrr"),
        ("Exact search vs filtered graph (crossover), single-query QPS", False,
         ["selectivity (matches)", "exact numpy", "exact faiss flat+bitmap",
          "faiss HNSW+bitmap @≥0.95", "hnswlib filter= @≥0.95"], crossing, "lrrrr"),
        ("Deletes and updates", False,
         ["library", f"delete {s.delete_percent}%", "recall after", "QPS after",
          "deleted ids returned", "short", "update p50 µs", "update p99 µs", "new vector stored",
          "updated found @1", "recall after updates", "deleted returned"], deletes,
         "lrrrrrrrrrrr"),
        ("Persistence and memory", False, ["library", "RSS growth during build", "snapshot file",
                                           "save", "load", "same results"], persist, "lrrrll"),
        ("API notes", False, ["library", "filtered search", "delete", "update", "persist"],
         [[name, *API[name]] for name in names], "lllll"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, s = v.parse(parser, argv, FULL, QUICK, min(SELECTIVITIES))
    faiss.omp_set_num_threads(s.threads)
    with c.temp_dir("engramdb-bench-vectors-", args.data_dir) as root:
        machine = c.machine_info(
            ("engramdb", "numpy", "hnswlib", "faiss-cpu", "usearch"), data_dir=root,
            extra={"threads": f"{s.threads} for builds and batch search, 1 for single queries"},
        )  # fmt: skip
        if usearch is not None:
            machine["usearch SIMD"] = str(usearch.Index(ndim=8).hardware_acceleration)
        progress = c.new_progress()
        progress.console.print(f"[bold]dataset: {s.n:,} x {s.dim}, {s.queries:,} queries[/bold]")
        bench = Bench(s, root, progress)
        started = time.perf_counter()
        bench.run()
    machine["run time"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    pick = decide(bench)
    r = c.Report(
        "vector-libs", "vector_libs", "Vector index: hnswlib vs faiss vs usearch (HNSW)",
        f"{s.n:,} x {s.dim} float32 clustered vectors, {s.queries:,} held-out queries, M = 16, "
        f"ef_construction = 200; builds and batch search on {s.threads} threads, single-query "
        "search on one.", args.quick, machine,
    )  # fmt: skip
    others = ", ".join(n for n in bench.res if n != pick) or "—"
    r.check("index library chosen: native filtered search, working deletes, then QPS", others,
            pick)  # fmt: skip
    r.check("QPS at recall 0.95, one thread: " + " vs ".join(bench.res), "—",
            " vs ".join(_qps(x["headline"]["0.95"]) for x in bench.res.values()))  # fmt: skip
    r.check("exact-search crossover of the filtered graph (faiss)", "—", crossover(bench, "faiss"))
    for title, publish, headers, rows, align in tables(bench):
        r.table(title, headers, rows, align, publish=publish)
    for cls, ok in INSTALLED.items():
        if not ok:
            print(f"{cls.name}: skipped, not installed (pip install {cls.package})")
            r.note(cls.name, f"not measured: {cls.package} is not installed")
    r.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
