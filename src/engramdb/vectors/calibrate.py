"""Calibration: the beam width (``ef``) at which a collection's searches reach its target
recall, measured on the collection's own data.

A fixed default ``ef`` is right for some data and far off for other: 64 gives recall@10 0.99
on clustered 384-d embeddings but 0.64 on uniform random 384-d vectors. So a collection with
a ``target_recall`` measures it:

- **Sampled queries.** A sample of stored items, each moved in a random direction as far as
  its nearest neighbour is from it (an item searched for itself is the easy case: its graph
  links lead straight to its neighbours, and searching for them overstated recall on uniform
  data by 0.1-0.2). Ground truth is exact: a scan over every live item, in blocks.
- **Tie-tolerant recall.** A hit counts when its exact score reaches the k-th best true
  score, so duplicates of equal score are not counted as misses.
- **The ladder.** ``ef`` climbs 16, 24, 32, ... until the measured recall reaches the target
  plus a margin (sampling noise). When the graph walk at that ``ef`` is slower than an exact
  scan, or no ``ef`` up to 4096 gets there, the collection searches exactly instead (recall
  1.0); that is what uniform high-dimensional data needs.
- **Cost.** Ground truth costs ``samples x n x dim`` multiply-adds; the sample shrinks as
  the collection grows so that stays under a budget (down to a floor of 50 queries). It runs
  in a background thread when the collection has grown by ``GROWTH`` since the last
  calibration (so its total cost stays proportional to the items written), holding the
  index's read lock only for one block or one trial at a time, so writes wait at most that
  long. Nothing is calibrated at or below ``exact_threshold`` items: those searches are
  exact anyway.

The result is persisted in the collection's definition (so other processes and restarts
start from it) and reported by ``Collection.stats``. A caller's explicit ``ef`` always wins.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    from engramdb.vectors.state import CollectionState

__all__ = ["GROWTH", "Calibration", "Stopped", "decode_calibration", "measure"]

K = 10
GROWTH = 1.5  # recalibrate when the live items grew by this factor
SAMPLES = 200  # sampled queries per calibration (fewer for very large collections)
MIN_SAMPLES = 50
BUDGET = 1e10  # ground-truth multiply-adds per calibration before the sample shrinks
# Measured recall must clear the target by this much: sampling noise (200 queries), the
# growth since the last calibration (up to 1.5x), and clustered data, where these queries
# ran ~0.01 optimistic (0.970 measured vs 0.961 held out at ef 16, 30k x 384).
MARGIN = 0.03
LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
BLOCK = 4096  # items per ground-truth block (the read lock is held for one block)
_EPS = 1e-5
# How far a query is moved from its anchor, in units of the anchor's nearest-neighbour
# distance. 1.0 tracked held-out recall from just below (uniform 10k x 384: 0.910 measured at
# ef 384 vs 0.957 held out; 0.5 overstated it, 0.928 vs 0.918 at ef 256).
OFFSET = 1.0


class Calibration(msgspec.Struct, frozen=True):
    """What calibration chose: ``ef`` (0: search exactly), the recall@10 it measured there
    on ``samples`` sampled queries, with ``size`` live items, for ``target``."""

    target: float
    ef: int
    recall: float
    size: int
    samples: int
    seconds: float
    at: float


class Stopped(Exception):
    """The calibration was abandoned: the collection was dropped, closed or compacted."""


def decode_calibration(raw: Any) -> Calibration | None:
    """A persisted calibration read back and checked; None when absent or malformed."""
    if raw is None:
        return None
    try:
        found = msgspec.convert(raw, Calibration)
    except msgspec.ValidationError:
        return None
    if not (
        0 <= found.ef <= 65_536
        and 0.0 <= found.recall <= 1.0
        and 0.0 < found.target <= 1.0
        and found.size >= 0
    ):
        return None
    return found


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest scores of each row (unordered), -inf padded."""
    if scores.shape[1] <= k:
        pad = np.full((len(scores), k - scores.shape[1]), -np.inf, dtype=scores.dtype)
        return np.concatenate([scores, pad], axis=1)
    return np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:]


def measure(
    state: CollectionState,
    target: float,
    stop: threading.Event,
    seed: int | None = None,
    trace: list[tuple[int, float, float]] | None = None,
) -> Calibration:
    """Measure the smallest ``ef`` reaching ``target`` on ``state``'s index (see the module
    docs). Raises ``Stopped`` when the index was dropped, closed or replaced meanwhile."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    metric = state.params.metric

    def check(index: Any) -> None:
        if stop.is_set() or state.dropped or state.vectors is not index:
            raise Stopped

    with state.lock.read():
        index = state.vectors
        size = index.size
        live = index.live.copy()
        labels = np.flatnonzero(live)
        n = len(labels)
        dim = index.params.dim
        samples = int(min(SAMPLES, max(MIN_SAMPLES, BUDGET // max(1, n * dim)), n - 1))
        if samples < 1 or n <= K:
            raise Stopped
        chosen = np.sort(rng.choice(labels, size=samples, replace=False))
        anchors = np.ascontiguousarray(index.vectors()[chosen], dtype=np.float32)
        # Each anchor's nearest other item (by a wide graph search; a neighbour found a
        # little too far only makes the query harder, never easier).
        _, near = index.graph_search(anchors, 2, 128, None if n == size else live)
        other = np.where(near[:, 0] == chosen, near[:, 1], near[:, 0])
        other = np.where(other >= 0, other, chosen)
        gap = np.linalg.norm(index.vectors()[other] - anchors, axis=1)
    # The query: the anchor moved, in a random direction, as far as its nearest neighbour
    # is from it. An item searched for itself is the easy case (its graph links lead
    # straight to its neighbours, and self-queries overstated recall on uniform data by
    # 0.1-0.2); a point that far from every item is what a new query looks like.
    direction = rng.standard_normal(anchors.shape).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    queries = anchors + direction * (OFFSET * gap)[:, None].astype(np.float32)
    if metric == "cosine":
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries = np.ascontiguousarray(queries, dtype=np.float32)

    # Exact ground truth: each query's K best scores among live items.
    best = np.full((samples, K), -np.inf, dtype=np.float32)
    norms = (queries**2).sum(axis=1, keepdims=True) if metric == "l2" else None
    for lo in range(0, size, BLOCK):
        hi = min(size, lo + BLOCK)
        with state.lock.read():
            check(index)
            block = index.vectors()[lo:hi]
            sims = queries @ block.T
            if metric == "l2":
                sims = 2 * sims - norms - (block**2).sum(axis=1)[None, :]
        sims[:, ~live[lo:hi]] = -np.inf
        best = _top(np.concatenate([best, sims], axis=1), K)
    kth = best.min(axis=1)  # the K-th best true score of each query

    # An exact scan of one query: what the graph walk must beat.
    if trace is not None:
        trace.append((0, 1.0, math.nan))
    exact_s = math.inf
    for i in range(3):
        with state.lock.read():
            check(index)
            t0 = time.perf_counter()
            index.exact(queries[i % samples : i % samples + 1], K, labels)
            exact_s = min(exact_s, time.perf_counter() - t0)

    required = min(1.0, target + MARGIN)
    allowed = None if n == size else live
    chosen_ef, recall = 0, 1.0
    for ef in LADDER:
        with state.lock.read():
            check(index)
            mask = allowed
            if mask is not None and index.size > size:  # items added since: not counted
                mask = np.concatenate([mask, np.zeros(index.size - size, dtype=bool)])
            elif mask is None and index.size > size:
                mask = np.concatenate([live, np.zeros(index.size - size, dtype=bool)])
            t0 = time.perf_counter()
            distances, found = index.graph_search(queries, K, ef, mask)
            per_query = (time.perf_counter() - t0) / samples
        scores = -distances if metric == "l2" else distances
        # Tie-tolerant: a hit counts when its exact score reaches the true K-th best.
        floor = kth - _EPS * np.maximum(1.0, np.abs(kth))
        good = (found >= 0) & (found < size) & (scores >= floor[:, None])
        measured = float(good.sum()) / (samples * K)
        if trace is not None:
            trace.append((ef, measured, per_query))
        if per_query > exact_s:
            break  # the graph is already slower than a scan: search exactly
        if measured >= required:
            chosen_ef, recall = ef, measured
            break
    return Calibration(
        target=target,
        ef=chosen_ef,
        recall=round(recall, 4),
        size=n,
        samples=samples,
        seconds=round(time.perf_counter() - started, 3),
        at=time.time(),
    )
