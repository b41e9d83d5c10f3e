"""The in-memory engine: the full engine contract, no disk, one process.

A first-class engine for ephemeral data and fast tests, not a test double. Keys are kept in a
sorted list (``bisect``) so scans are ordered; writes of a transaction are buffered and applied
under one lock at commit, so a failing transaction leaves nothing behind.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from engramdb.storage.base import EngineChange, overlay_scan

__all__ = ["MemoryEngine"]

T = TypeVar("T")


def _set_of(rk: bytes) -> bytes:
    return rk[: rk.index(b"\x00") + 1]


class _MemoryTxn:
    __slots__ = ("_engine", "_logs", "_ops", "_overlay", "_seq")

    def __init__(self, engine: MemoryEngine) -> None:
        self._engine = engine
        self._overlay: dict[bytes, bytes | None] = {}
        self._ops: list[tuple[bytes, bytes | None, int, int | None]] = []
        self._logs: list[EngineChange] = []
        self._seq = engine._last_seq

    def get(self, rk: bytes) -> bytes | None:
        if rk in self._overlay:
            return self._overlay[rk]
        return self._engine._data.get(rk)

    def put(self, rk: bytes, value: bytes, expires_ms: int, prev_expires_ms: int | None) -> None:
        self._overlay[rk] = value
        self._ops.append((rk, value, expires_ms, prev_expires_ms))

    def delete(self, rk: bytes, prev_expires_ms: int) -> None:
        self._overlay[rk] = None
        self._ops.append((rk, None, 0, prev_expires_ms))

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        return overlay_scan(self._engine.scan, self._overlay, start, end, limit, reverse)

    def next_sequence(self) -> int:
        return self._seq + 1

    def log(self, kind: str, rk: bytes, generation: int, at_ms: int) -> int:
        self._seq += 1
        self._logs.append(EngineChange(self._seq, rk, kind, generation, at_ms))
        return self._seq


class MemoryEngine:
    """Records, counts, expiry index and change log in Python containers."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._counts: dict[bytes, int] = {}
        # per set: sorted (expires_ms, rk)
        self._expiry: dict[bytes, list[tuple[int, bytes]]] = {}
        self._changes: list[EngineChange] = []
        self._last_seq = 0

    def get(self, rk: bytes) -> bytes | None:
        return self._data.get(rk)

    def get_many(self, rks: Sequence[bytes]) -> list[bytes | None]:
        data = self._data
        with self._lock:
            return [data.get(rk) for rk in rks]

    def write(self, fn: Callable[[_MemoryTxn], T]) -> T:
        with self._lock:
            txn = _MemoryTxn(self)
            result = fn(txn)
            for rk, value, expires_ms, prev in txn._ops:
                self._apply(rk, value, expires_ms, prev)
            self._changes.extend(txn._logs)
            self._last_seq = txn._seq
            return result

    def _apply(self, rk: bytes, value: bytes | None, expires_ms: int, prev: int | None) -> None:
        prefix = _set_of(rk)
        expiry = self._expiry.setdefault(prefix, [])
        if prev:
            i = bisect.bisect_left(expiry, (prev, rk))
            if i < len(expiry) and expiry[i] == (prev, rk):
                del expiry[i]
        if value is None:
            if prev is not None and self._data.pop(rk, None) is not None:
                i = bisect.bisect_left(self._keys, rk)
                del self._keys[i]
                self._counts[prefix] -= 1
            return
        if rk not in self._data:
            bisect.insort(self._keys, rk)
            self._counts[prefix] = self._counts.get(prefix, 0) + 1
        self._data[rk] = value
        if expires_ms:
            bisect.insort(expiry, (expires_ms, rk))

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        with self._lock:
            keys = self._keys
            i = bisect.bisect_left(keys, start)
            j = bisect.bisect_left(keys, end, lo=i)
            picked = keys[max(i, j - limit) : j][::-1] if reverse else keys[i : min(j, i + limit)]
            return [(rk, self._data[rk]) for rk in picked]

    def count(self, set_prefix: bytes, now_ms: int) -> int:
        with self._lock:
            expiry = self._expiry.get(set_prefix, [])
            gone = bisect.bisect_right(expiry, now_ms, key=lambda entry: entry[0])
            return self._counts.get(set_prefix, 0) - gone

    def expired(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        out: list[tuple[bytes, int]] = []
        with self._lock:
            for expiry in self._expiry.values():
                for expires_ms, rk in expiry:
                    if expires_ms > now_ms or len(out) >= limit:
                        break
                    out.append((rk, expires_ms))
        return out

    def sets(self) -> list[str]:
        with self._lock:
            return sorted(p[:-1].decode() for p, n in self._counts.items() if n > 0)

    def changes(self, since: int, limit: int) -> list[EngineChange]:
        with self._lock:
            log = self._changes
            if not log:
                return []
            start = max(0, since + 1 - log[0].sequence)
            return log[start : start + limit]

    def first_sequence(self) -> int:
        with self._lock:
            return self._changes[0].sequence if self._changes else self._last_seq + 1

    def last_sequence(self) -> int:
        return self._last_seq

    def trim_changes(self, keep: int) -> int:
        with self._lock:
            drop = max(0, len(self._changes) - keep)
            if drop:
                del self._changes[:drop]
            return drop

    def sync(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "engine": "memory",
                "records_stored": len(self._data),
                "bytes_stored": sum(len(k) + len(v) for k, v in self._data.items()),
                "changelog_length": len(self._changes),
            }

    def close(self) -> None:
        pass
