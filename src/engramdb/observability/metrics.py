"""Golden-signal metrics for every operation: latency, traffic, errors.

The embedded read path costs about a microsecond, so recording must cost far less:
``OpMetrics.observe`` is a handful of integer operations on a log-linear histogram
(16 sub-buckets per power of two, so any percentile is within ~6% of the true value) with
no lock. Each update is a single bytecode-level read-modify-write with no call in between,
which CPython does not interrupt with a thread switch, so counts stay exact in practice.
"""

from __future__ import annotations

import array
import threading
from typing import Any

__all__ = ["Metrics", "OpMetrics", "bucket_index", "bucket_upper_ns"]

_SUB_BITS = 4
_SUB = 1 << _SUB_BITS
_NBUCKETS = 64 * _SUB


def bucket_index(ns: int) -> int:
    """Histogram bucket of a latency in nanoseconds."""
    b = ns.bit_length()
    if b <= _SUB_BITS + 1:
        return ns if ns > 0 else 0
    shift = b - _SUB_BITS - 1
    index = (shift + 1) * _SUB + ((ns >> shift) & (_SUB - 1))
    return index if index < _NBUCKETS else _NBUCKETS - 1


# Bucket of every latency below 64 µs (most requests), looked up instead of computed.
_TABLE = 1 << 16
_INDEX = array.array("H", (bucket_index(ns) for ns in range(_TABLE)))


def bucket_upper_ns(index: int) -> int:
    """Largest latency (ns) that falls in bucket ``index``."""
    if index < 2 * _SUB:
        return index
    shift = index // _SUB - 1
    sub = index % _SUB
    return ((_SUB + sub) << shift) + (1 << shift) - 1


class OpMetrics:
    """Count, errors by type and a latency histogram for one operation."""

    __slots__ = ("buckets", "count", "errors", "max_ns", "name", "total_ns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self.buckets = [0] * _NBUCKETS
        self.errors: dict[str, int] = {}

    def observe(self, ns: int) -> None:
        self.count += 1
        self.total_ns += ns
        # This runs on every operation: a table lookup for the common latencies, else
        # ``bucket_index`` inlined (a server's writes wait for their batch: over 64 µs).
        if ns < _TABLE:
            self.buckets[_INDEX[ns] if ns >= 0 else bucket_index(ns)] += 1
        else:
            shift = ns.bit_length() - _SUB_BITS - 1
            index = (shift + 1) * _SUB + ((ns >> shift) & (_SUB - 1))
            self.buckets[index if index < _NBUCKETS else _NBUCKETS - 1] += 1
        if ns > self.max_ns:
            self.max_ns = ns

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def percentile_ns(self, q: float) -> int:
        """Latency below which a fraction ``q`` of observations fall (bucket upper bound)."""
        total = sum(self.buckets)
        if not total:
            return 0
        rank = max(1, round(q * total))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return min(bucket_upper_ns(index), self.max_ns)
        return self.max_ns

    def snapshot(self) -> dict[str, Any]:
        observed = sum(self.buckets)
        return {
            "count": self.count,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "mean_us": round(self.total_ns / observed / 1000, 2) if observed else 0.0,
            "p50_us": round(self.percentile_ns(0.50) / 1000, 2),
            "p99_us": round(self.percentile_ns(0.99) / 1000, 2),
            "p999_us": round(self.percentile_ns(0.999) / 1000, 2),
            "max_us": round(self.max_ns / 1000, 2),
        }


class Metrics:
    """Per-operation metrics of one database (or one server)."""

    def __init__(self) -> None:
        self._ops: dict[str, OpMetrics] = {}
        self._lock = threading.Lock()
        # Read-only view for hot paths: ``by_name.get(name) or op(name)`` skips a call.
        self.by_name: dict[str, OpMetrics] = self._ops

    def op(self, name: str) -> OpMetrics:
        found = self._ops.get(name)
        if found is None:
            with self._lock:
                found = self._ops.setdefault(name, OpMetrics(name))
        return found

    def ops(self) -> list[OpMetrics]:
        return list(self._ops.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {m.name: m.snapshot() for m in sorted(self._ops.values(), key=lambda m: m.name)}
