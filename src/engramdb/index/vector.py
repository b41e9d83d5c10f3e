"""The vector index: faiss HNSW with a live-label bitmap, filters inside the graph walk, and
exact search where the graph would lose.

Why faiss (``bench/vector_libs.py``, 100k x 384 clustered, this machine; BENCHMARKS.md):
it is the only one of hnswlib, faiss and usearch whose *filter runs in native code* during
the graph search (``IDSelectorBitmap``: 3,175 vs 1,473 queries/s for hnswlib's Python
callback at 5% selectivity, 5,441 vs 2,220 at 10%; usearch's Python API has no filter at
all). Unfiltered it is within 9% of hnswlib at recall 0.95 (8,309 vs 9,061 q/s, ef 20) and
equal at 0.99. It has no native delete, which the live bitmap below covers.

How it works:
- Labels are faiss' own ids, appended: an item that changes gets a new label and its old one
  is cleared from ``live`` (a tombstone). Every search passes ``live`` (AND the filter, AND
  "not expired") as a bitmap, so deleted, replaced and expired items can never come back.
  When tombstones pass half of the labels the graph is rebuilt from the live vectors.
- With few candidates the graph is the wrong tool: faiss stops after ``ef`` visited nodes
  whether or not they pass the filter, so a selective filter returns short. At or below
  ``exact_threshold`` matching items, or under 3% of the collection, the search is exact
  (numpy over those vectors; the measured crossover here is ~3.4%); above, ``ef`` grows
  with selectivity, and a graph search that still returns fewer than k hits while k items
  match is redone exactly.
  Never "search, then filter": k matches in, k hits out.
- Vectors live once, in the index's flat storage; exact search reads them in place. A
  search that scans most of a large collection (what calibration picks for data where the
  graph cannot reach the target recall cheaper) first scans a half-precision copy, then
  re-scores its best ``max(RESCORE, 4 k)`` in full precision: half the bytes to stream,
  and faiss' SIMD scan instead of a matrix-vector product (100k x 256, one query: 2.6 ms
  against 6.3 ms here). fp16 rounds a unit vector's score by ~1e-4, so a true top-k item is
  only missed when more than ``RESCORE`` items score within that of the k-th best (ties,
  which tie-tolerant recall counts as found anyway). The copy is made by the first such
  search (n x dim x 2 bytes, in ``memory_bytes``), then kept in step with every add.

Not thread-safe by itself: the collection guards it with a reader/writer lock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from engramdb.errors import InvalidArgument

__all__ = ["VectorIndex", "VectorParams", "as_float32", "prepare", "prepare_one"]

METRICS = ("cosine", "ip", "l2")
# Below this share of admissible items the graph walk loses to exact search (~3.4% measured
# on 100k x 384; the walk needed ef 2048 for recall 0.95 at 1%).
GRAPH_FROM = 0.03


_FAISS: Any = None
_BUFFERS = threading.local()  # search_one's output arrays, per thread and k
_CACHED_K = 64  # largest k whose buffers are kept
# A scan over at least this many vectors goes through the half-precision copy (below it the
# matrix-vector product is already well under a millisecond).
COARSE_FROM = 16_384
RESCORE = 64  # candidates of the half-precision scan re-scored in full precision (at least)
COARSE_QUERIES = 16  # more queries at once: one matrix product (BLAS) is cheaper


def _faiss() -> Any:
    global _FAISS
    if _FAISS is None:
        import faiss

        # One thread per query: the server runs queries side by side, and OpenMP's thread
        # pool on top of that only adds contention (measured in bench/vector_libs.py).
        faiss.omp_set_num_threads(1)
        _FAISS = faiss
    return _FAISS


@dataclass(frozen=True, slots=True)
class VectorParams:
    """Index parameters of a collection.

    Attributes:
        dim: vector length.
        metric: ``cosine`` (vectors are normalised; score = cosine similarity), ``ip``
            (score = inner product) or ``l2`` (score = negative squared distance).
        m: HNSW links per node.
        ef_construction: HNSW build-time beam width.
        ef_search: default search beam width (recall 0.95 at ef 20 and 0.99 at ef ~40 on
            100k x 384; 64 leaves margin for harder data).
        exact_threshold: at or below this many candidate items, search exactly.
    """

    dim: int
    metric: str = "cosine"
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    exact_threshold: int = 4096

    def check(self, max_dim: int) -> None:
        if type(self.dim) is not int or not 1 <= self.dim <= max_dim:
            raise InvalidArgument(f"dim must be an int from 1 to {max_dim}, not {self.dim!r}")
        if self.metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {METRICS}, not {self.metric!r}")
        for name in ("m", "ef_construction", "ef_search", "exact_threshold"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, not {value!r}")


def as_float32(vectors: Any) -> np.ndarray:
    """``vectors`` as a float32 array; ``InvalidArgument`` unless every element is a real
    number (not a str, bool, complex number, date or None).

    Values beyond float32's range become infinities, which ``prepare`` refuses; the cast
    does not warn (a warning is not an answer, and under ``-W error`` it is a raw error).
    """
    if type(vectors) is np.ndarray and vectors.dtype == np.float32:
        return vectors  # the common case: nothing to check or copy
    try:
        array = np.asarray(vectors)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgument(f"vectors must be numbers: {e}") from None
    kind = array.dtype.kind
    if kind == "O":
        # Python ints beyond int64, or a mix of numbers and other objects: look at each.
        for value in array.flat:
            if type(value) not in (int, float) and not isinstance(value, np.integer | np.floating):
                raise InvalidArgument(
                    f"vectors must be numbers, not {type(value).__name__} ({value!r:.40})"
                )
    elif kind not in "iuf":
        raise InvalidArgument(f"vectors must be real numbers, not {array.dtype}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return array.astype(np.float32)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgument(f"vectors must be numbers that fit float32: {e}") from None


def prepare(vectors: Any, params: VectorParams) -> np.ndarray:
    """Vectors as a C-contiguous float32 (n, dim) array, checked (and normalised for cosine).

    Raises ``InvalidArgument`` for anything but real numbers, a wrong shape, NaN/inf (or a
    value beyond float32's range), or a zero vector under cosine.
    """
    array = as_float32(vectors)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != params.dim:
        raise InvalidArgument(
            f"expected vectors of dimension {params.dim}, got shape {tuple(array.shape)}"
        )
    # One pass for both checks (a search calls this every time): a NaN or an infinity
    # makes its row's sum of squares non-finite. So can a huge finite value overflowing
    # float32, which the exact check below tells apart (and float64 norms then handle).
    squares = np.einsum("ij,ij->i", array, array)
    if not np.isfinite(squares).all() or not squares.all():
        if not np.isfinite(array).all():
            raise InvalidArgument(
                "vectors must be finite float32 numbers (no NaN, infinity, or magnitude "
                "beyond 3.4e38)"
            )
        wide = array.astype(np.float64)  # overflowed or underflowed in float32
        squares = np.einsum("ij,ij->i", wide, wide)
    if params.metric == "cosine":
        if not squares.all():
            raise InvalidArgument("a zero vector has no direction (metric 'cosine')")
        norms = np.sqrt(squares)[:, None]
        if norms.max() < _FLOAT32_MAX:
            array = array / norms.astype(np.float32)
        else:  # a norm beyond float32's range: divide in float64
            array = (array.astype(np.float64) / norms).astype(np.float32)
    return np.ascontiguousarray(array)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SMALLEST, _LARGEST = 1e-20, 1e20  # squared norms a query may have on prepare_one's path


def prepare_one(vector: Any, params: VectorParams) -> tuple[np.ndarray, float] | None:
    """The common single query, checked but not copied: a 1-D float32 array of the right
    length, finite and non-zero, as a 1 x dim view and the factor that scales its scores
    (1 / its norm under cosine, whose query ``search_one`` needs no normalised copy of:
    the ranking does not depend on the query's length, only the scores, which it scales).
    None for anything else, which the caller hands to ``prepare`` (that explains)."""
    if (
        type(vector) is not np.ndarray
        or vector.dtype != np.float32
        or vector.shape != (params.dim,)
        or not vector.flags.c_contiguous
    ):
        return None
    faiss = _FAISS if _FAISS is not None else _faiss()
    # faiss' own float32 kernel: no copy, and an overflow is just inf (numpy's float32 dot
    # warns; a float64 copy cost a microsecond and a half of every search).
    squares = float(faiss.fvec_norm_L2sqr(faiss.swig_ptr(vector), params.dim))
    # NaN, infinity and zero are refused by ``prepare``; magnitudes far from 1 go there too,
    # to be normalised first (faiss computes in float32, where they overflow or underflow).
    if not _SMALLEST < squares < _LARGEST:
        return None
    scale = 1.0 / math.sqrt(squares) if params.metric == "cosine" else 1.0
    return vector.reshape(1, -1), scale


def _filtered(kind: Any, allowed: np.ndarray, **options: Any) -> Any:
    """faiss search parameters of ``kind`` admitting only the ``allowed`` labels (a bitmap).
    The selector only points at the bitmap: both ride on the parameters, so they live as
    long as the search that uses them."""
    faiss = _faiss()
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
    params = kind(sel=selector, **options)
    params.referenced_objects = (selector, bitmap)
    return params


def _labels(allowed: np.ndarray | None, size: int) -> np.ndarray:
    """The admissible labels themselves (None: every one of ``size``)."""
    return np.arange(size) if allowed is None else np.flatnonzero(allowed)


class VectorIndex:
    """Labels ``0..size-1`` over one collection's vectors. See the module docs."""

    def __init__(self, params: VectorParams) -> None:
        self.params = params
        faiss = _faiss()
        kind = faiss.METRIC_L2 if params.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self._index = faiss.IndexHNSWFlat(params.dim, params.m, kind)
        self._index.hnsw.efConstruction = params.ef_construction
        # Per-label state in arrays that grow by doubling (items arrive one by one too).
        self._live = np.zeros(1024, dtype=bool)
        self._expires = np.zeros(1024, dtype=np.int64)  # ms; 0 = never
        self.live_count = 0
        self.with_ttl = 0  # live labels that have an expiry
        self._size = 0  # = ntotal, kept here: a search reads it, and a swig call costs more
        self._plain: dict[int, Any] = {}  # efSearch -> SearchParametersHNSW without a filter
        self._view: np.ndarray | None = None  # vectors(), until an add moves the storage
        self._coarse: Any = None  # the half-precision copy (see the module docs), once made
        self._coarse_lock = threading.Lock()  # searches run side by side: one makes it

    @property
    def live(self) -> np.ndarray:
        return self._live[: self.size]

    @property
    def expires(self) -> np.ndarray:
        return self._expires[: self.size]

    @property
    def size(self) -> int:
        return self._size

    @property
    def tombstones(self) -> int:
        return self.size - self.live_count

    def memory_bytes(self) -> int:
        """Vectors plus graph links (approximate: 4 bytes per link)."""
        n, d = self.size, self.params.dim
        coarse = n * d * 2 if self._coarse is not None else 0
        return (
            n * d * 4 + coarse + n * self.params.m * 2 * 4 + self._live.nbytes
            + self._expires.nbytes
        )  # fmt: skip

    def vectors(self) -> np.ndarray:
        """A read-only view of every label's vector (no copy)."""
        view = self._view
        if view is not None:
            return view
        faiss = _faiss()
        flat = faiss.downcast_index(self._index.storage)
        n = self.size
        if n == 0:
            return np.zeros((0, self.params.dim), dtype=np.float32)
        view = np.asarray(faiss.rev_swig_ptr(flat.get_xb(), n * self.params.dim)).reshape(
            n, self.params.dim
        )
        view.flags.writeable = False
        self._view = view
        return view

    def add(self, vectors: np.ndarray, expires_ms: np.ndarray) -> np.ndarray:
        """Append prepared vectors; returns their labels."""
        first = self.size
        end = first + len(vectors)
        if end > len(self._live):
            grown = max(end, 2 * len(self._live))
            self._live = np.concatenate([self._live, np.zeros(grown - len(self._live), bool)])
            self._expires = np.concatenate(
                [self._expires, np.zeros(grown - len(self._expires), np.int64)]
            )
        if len(vectors):
            self._view = None
            self._index.add(vectors)
            if self._coarse is not None:
                self._coarse.add(vectors)
        self._size = end
        self._live[first:end] = True
        self._expires[first:end] = expires_ms
        labels = np.arange(first, end, dtype=np.int64)
        self.live_count += len(vectors)
        self.with_ttl += int(np.count_nonzero(expires_ms))
        return labels

    def remove(self, label: int) -> None:
        if self._live[label]:
            self._live[label] = False
            self.live_count -= 1
            if self._expires[label]:
                self.with_ttl -= 1

    def visible(self, now_ms: int) -> np.ndarray:
        """Live labels that have not expired at ``now_ms``."""
        if not self.with_ttl:
            return self.live
        expires = self.expires
        visible: np.ndarray = self.live & ((expires == 0) | (expires > now_ms))
        return visible

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        ef: int | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` labels (and scores, higher is better) among ``allowed`` for each query.

        ``allowed`` None: every live label (no filter, no expiry to check), which skips
        counting and bitmap work on the common path. ``exact``: no graph walk at all (what
        calibration picks when the graph cannot reach the target recall cheaper than a
        scan). Returns ``(scores, labels)`` of shape (nq, k); a missing hit has label -1
        (and score -inf). Cosine scores are clamped to [-1, 1]: float32 rounding puts an
        item's similarity to itself at 1.0000001.
        """
        scores, labels = self._search(queries, k, allowed, ef, exact)
        if self.params.metric == "cosine":
            np.minimum(scores, 1.0, out=scores)
            np.maximum(scores, -1.0, out=scores, where=labels >= 0)
        return scores, labels

    def search_one(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        ef: int | None = None,
        exact: bool = False,
        scale: float = 1.0,
    ) -> tuple[list[int], list[float]]:
        """``search`` for one query (1 x dim): the labels and scores found, best first, as
        lists (no missing entries). A cosine query may come unnormalised, with ``scale``
        = 1 / its norm (see ``prepare_one``).

        The common case (no filter, no tombstone, a graph search) calls faiss' search
        directly and works on Python lists: on a 10-hit search numpy's per-call costs were
        most of what engramdb added to faiss' own time.
        """
        size = self._size
        if (
            allowed is None
            and not exact
            and self.live_count == size
            and k <= size
            and size > self.params.exact_threshold
        ):
            beam = max(ef or self.params.ef_search, k)
            params = self._plain.get(beam)
            faiss = _FAISS if _FAISS is not None else _faiss()
            if params is None:  # read-only during a search: shared by concurrent ones
                params = self._plain[beam] = faiss.SearchParametersHNSW(efSearch=beam)
            # Output buffers (and their pointers) kept per thread for small k (a bounded
            # cache: k is the caller's); .tolist() copies the results out.
            cache: dict[Any, Any] = _BUFFERS.__dict__
            buffers = cache.get(k)
            if buffers is None:
                distances, found = np.empty(k, dtype=np.float32), np.empty(k, dtype=np.int64)
                buffers = (distances, found, faiss.swig_ptr(distances), faiss.swig_ptr(found))
                if k <= _CACHED_K:
                    cache[k] = buffers
            distances, found, to_distances, to_found = buffers
            self._index.search_c(1, faiss.swig_ptr(query), k, to_distances, to_found, params)
            labels: list[int] = found.tolist()
            if -1 not in labels:  # else the walk came back short: the general path redoes it
                scores: list[float] = distances.tolist()
                metric = self.params.metric
                if metric == "cosine":
                    scores = [
                        1.0 if s > 1.0 else -1.0 if s < -1.0 else s
                        for s in [d * scale for d in scores]
                    ]
                elif metric == "l2":
                    scores = [-s for s in scores]
                return labels, scores
        if scale != 1.0:
            query = query * np.float32(scale)
        many_scores, many_labels = self.search(query, k, allowed, ef, exact)
        labels = many_labels[0].tolist()
        scores = many_scores[0].tolist()
        if -1 in labels:
            keep = [i for i, label in enumerate(labels) if label >= 0]
            labels, scores = [labels[i] for i in keep], [scores[i] for i in keep]
        return labels, scores

    def graph_search(
        self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The graph walk alone at beam ``ef`` (no exact fallback, raw faiss distances):
        what calibration measures."""
        faiss = _faiss()
        if allowed is None:
            params = faiss.SearchParametersHNSW(efSearch=ef)
        else:
            params = _filtered(faiss.SearchParametersHNSW, allowed, efSearch=ef)
        distances, found = self._index.search(queries, k, params=params)
        return distances, found

    def exact(
        self, queries: np.ndarray, k: int, candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among the ``candidates`` labels (scores higher is better)."""
        return self._exact(queries, k, candidates)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        ef: int | None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        size = self.size
        if allowed is None:
            candidates = self.live_count
            if candidates < size:
                allowed = self.live
        else:
            candidates = int(np.count_nonzero(allowed))
        if candidates == 0 or k == 0:
            nq = len(queries)
            return (
                np.full((nq, k), -np.inf, dtype=np.float32),
                np.full((nq, k), -1, dtype=np.int64),
            )
        want = min(k, candidates)
        fraction = candidates / max(1, size)
        if exact or candidates <= self.params.exact_threshold or fraction < GRAPH_FROM:
            return self._exact(queries, k, _labels(allowed, size))
        # A filter thins the graph: widen the beam as the admissible share shrinks, so the
        # walk still meets enough admissible nodes (recall 0.95 needed ef ~96 at 5% and ~48
        # at 10% in bench/vector_libs.py; k / fraction gives about twice that).
        beam = max(ef or self.params.ef_search, want)
        if fraction < 1.0:
            beam = int(min(max(beam, want / fraction), 4096))
        faiss = _faiss()
        if allowed is None or candidates == size:
            params = self._plain.get(beam)
            if params is None:  # read-only during a search: shared by concurrent ones
                params = self._plain[beam] = faiss.SearchParametersHNSW(efSearch=beam)
        else:
            params = _filtered(faiss.SearchParametersHNSW, allowed, efSearch=beam)
        distances, found = self._index.search(queries, k, params=params)
        got = self._scores(distances)
        short = (found[:, :want] < 0).any(axis=1)
        if short.any():
            # The walk ran out of admissible nodes before k: answer those queries exactly.
            exact_scores, exact_labels = self._exact(queries[short], k, _labels(allowed, size))
            got[short], found[short] = exact_scores, exact_labels
        return got, found

    def _scores(self, distances: np.ndarray) -> np.ndarray:
        # faiss returns inner products for IP and squared distances for L2.
        return -distances if self.params.metric == "l2" else distances

    def _coarse_index(self) -> Any:
        """The half-precision copy of every vector, made on first use."""
        with self._coarse_lock:
            if self._coarse is None:
                faiss = _faiss()
                kind = faiss.METRIC_L2 if self.params.metric == "l2" else faiss.METRIC_INNER_PRODUCT
                coarse = faiss.IndexScalarQuantizer(
                    self.params.dim, faiss.ScalarQuantizer.QT_fp16, kind
                )
                coarse.add(self.vectors())
                self._coarse = coarse
            return self._coarse

    def _rescored(
        self, queries: np.ndarray, k: int, candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``_exact`` over most of a large collection: the half-precision scan's best
        ``max(RESCORE, 4 k)``, re-scored in full precision (see the module docs)."""
        faiss = _faiss()
        coarse = self._coarse_index()
        size = self.size
        depth = min(len(candidates), max(RESCORE, 4 * k))
        params = None
        if len(candidates) < size:
            allowed = np.zeros(size, dtype=bool)
            allowed[candidates] = True
            params = _filtered(faiss.SearchParameters, allowed)
        _, found = coarse.search(queries, depth, params=params)
        nq, take = len(queries), min(k, len(candidates))
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        labels = np.full((nq, k), -1, dtype=np.int64)
        everything = self.vectors()
        for i in range(nq):
            picked = found[i][found[i] >= 0]
            near = everything[picked]
            if self.params.metric == "l2":
                diff = near - queries[i]
                sims = -np.einsum("ij,ij->i", diff, diff)
            else:
                sims = near @ queries[i]
            order = np.argsort(-sims, kind="stable")[:take]
            scores[i, : len(order)] = sims[order]
            labels[i, : len(order)] = picked[order]
        return scores, labels

    def _exact(
        self, queries: np.ndarray, k: int, candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        everything = self.vectors()
        # Most labels candidates (exact mode on a large collection): score the storage in
        # place and pick the candidates' scores, rather than gather a copy of the vectors.
        in_place = 2 * len(candidates) >= len(everything)
        if in_place and len(everything) >= COARSE_FROM and len(queries) <= COARSE_QUERIES:
            return self._rescored(queries, k, candidates)
        vectors = everything if in_place else everything[candidates]
        if self.params.metric == "l2":
            sims = -(
                (queries**2).sum(axis=1, keepdims=True)
                - 2 * queries @ vectors.T
                + (vectors**2).sum(axis=1)[None, :]
            )
        else:
            sims = queries @ vectors.T
        if in_place and len(candidates) != len(everything):
            sims = sims[:, candidates]
        take = min(k, len(candidates))
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        labels = np.full((nq, k), -1, dtype=np.int64)
        if take == len(candidates):
            order = np.argsort(-sims, axis=1)
        else:
            top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            order = np.take_along_axis(
                top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1
            )
        scores[:, :take] = np.take_along_axis(sims, order, axis=1)
        labels[:, :take] = candidates[order]
        return scores, labels

    def rebuilt(self) -> tuple[VectorIndex, np.ndarray]:
        """A new index holding only the live vectors; returns it and the label mapping
        (``mapping[old] = new``, -1 for dropped labels)."""
        fresh = VectorIndex(self.params)
        keep = np.flatnonzero(self.live)
        mapping = np.full(self.size, -1, dtype=np.int64)
        mapping[keep] = np.arange(len(keep))
        fresh.add(np.ascontiguousarray(self.vectors()[keep]), self.expires[keep])
        return fresh, mapping

    # persistence ---------------------------------------------------------------------

    def save(self, path: str) -> None:
        faiss = _faiss()
        faiss.write_index(self._index, path)

    @classmethod
    def load(
        cls, path: str, params: VectorParams, live: np.ndarray, expires: np.ndarray
    ) -> VectorIndex:
        faiss = _faiss()
        index = cls(params)
        index._index = faiss.read_index(path)
        index._size = int(index._index.ntotal)
        if index.size != len(live):
            raise ValueError("snapshot does not match its state")
        capacity = max(1024, len(live))
        index._live = np.zeros(capacity, dtype=bool)
        index._live[: len(live)] = live
        index._expires = np.zeros(capacity, dtype=np.int64)
        index._expires[: len(expires)] = expires
        index.live_count = int(np.count_nonzero(live))
        index.with_ttl = int(np.count_nonzero(live & (expires != 0)))
        index._index.hnsw.efConstruction = params.ef_construction
        return index
