"""Values larger than one record, kept as a head record plus overflow chunks.

A record is limited (1 MiB by default, ``Limits(max_record_bytes=)``); a LangGraph channel
value or a cached byte string may be bigger. A value of ``n`` chunks keeps its first chunk
in its own (head) record, in bin ``v``, with ``n`` in bin ``n``; chunks 1..n-1 live in a
separate set under ``<kind>\\0<head key>\\0<i>``, so scans of the head set never meet them
and every chunk of a head key starting with ``p`` starts with ``<kind>\\0p``. Heads and
chunks are written in one transaction, so a reader sees the whole value or none of it.

Over the network one transaction must fit one request (the server's ``--max-frame``):
``Writer`` then writes the chunks first, in requests of at most ``max_request_bytes``, and
the heads (which alone make them reachable) last, in one commit when they fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engramdb.integrations._flow import Flow, Write, commit, on

__all__ = ["Chunks", "Put", "chunk_limit"]

_MARGIN = 16 << 10  # room in a record for the other bins of a head, and the header
Put = tuple[str, str, dict[str, Any]]  # set, key, bins


def chunk_limit(db: Any) -> int:
    """The largest chunk a record of ``db`` holds with room to spare."""
    try:
        limit = int(db.limits.max_record_bytes)
    except Exception:  # an asyncio client made without connect(): the default limit
        limit = 1 << 20
    return max(1024, limit - _MARGIN) if limit > 2 * _MARGIN else max(256, limit // 2)


class Chunks:
    """Splitting, finding and joining the chunks of values kept in ``chunk_set``."""

    def __init__(self, chunk_set: str, chunk_bytes: int, max_request_bytes: int | None) -> None:
        self.set = chunk_set
        self.size = chunk_bytes
        self.max_request = max_request_bytes

    @staticmethod
    def key(kind: str, head: str, i: int) -> str:
        return f"{kind}\0{head}\0{i:06d}"

    def split(self, kind: str, head: str, data: bytes) -> tuple[dict[str, Any], list[Put]]:
        """The head's value bins (``v`` and, past one chunk, ``n``) and its chunk records."""
        size = self.size
        if len(data) <= size:
            return {"v": data}, []
        n = -(-len(data) // size)
        chunks = [
            (self.set, self.key(kind, head, i), {"v": data[i * size : (i + 1) * size]})
            for i in range(1, n)
        ]
        return {"v": data[:size], "n": n}, chunks

    def keys_of(self, kind: str, head: str, bins: dict[str, Any]) -> list[str]:
        """The chunk keys of a head record's value (none for a one-chunk value)."""
        return [self.key(kind, head, i) for i in range(1, int(bins.get("n") or 1))]

    def load(self, wanted: Iterable[tuple[str, str, dict[str, Any]]]) -> Flow[list[bytes | None]]:
        """The whole value of each ``(kind, head key, head bins)``, reading the chunks of
        all of them in one call; None for a value whose chunks are gone (being deleted)."""
        wanted = list(wanted)
        keys = [key for kind, head, bins in wanted for key in self.keys_of(kind, head, bins)]
        found: dict[str, bytes] = {}
        if keys:
            records = yield on(self.set, "get_many", keys)
            found = {r.key: r.bins["v"] for r in records if r is not None}
        values: list[bytes | None] = []
        for kind, head, bins in wanted:
            parts = [bins["v"]]
            for key in self.keys_of(kind, head, bins):
                part = found.get(key)
                if part is None:
                    break
                parts.append(part)
            values.append(b"".join(parts) if len(parts) == int(bins.get("n") or 1) else None)
        return values

    def write(
        self,
        early: Sequence[Put],
        last: Sequence[Put],
        extra: Sequence[Write] = (),
        *,
        ttl: float | None = None,
    ) -> Flow[None]:
        """Write ``early`` then ``last`` (and the staged ``extra`` writes), every record
        with ``ttl``, atomically when they fit one request; otherwise ``early`` first in
        requests that fit, then ``last`` + ``extra`` (in one commit when they fit)."""
        everything = [*early, *last]
        if self.max_request is None or _size(everything) <= self.max_request:
            yield commit([*_staged(everything, ttl), *extra])
            return
        for batch in _batches(early, self.max_request):
            yield commit(_staged(batch, ttl))
        batches = _batches(last, self.max_request)
        for batch in batches[:-1]:
            yield commit(_staged(batch, ttl))
        yield commit([*_staged(batches[-1] if batches else [], ttl), *extra])


def _size(puts: Sequence[Put]) -> int:
    total = 0
    for _, key, bins in puts:
        total += len(key) + 64
        for value in bins.values():
            total += len(value) if isinstance(value, bytes | str) else 16
    return total


def _batches(puts: Sequence[Put], budget: int) -> list[list[Put]]:
    out: list[list[Put]] = []
    size = 0
    for put in puts:
        cost = _size([put])
        if not out or size + cost > budget:
            out.append([])
            size = 0
        out[-1].append(put)
        size += cost
    return out


def _staged(puts: Sequence[Put], ttl: float | None) -> list[Write]:
    by_set: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for set_name, key, bins in puts:
        by_set.setdefault(set_name, []).append((key, bins))
    options = {} if ttl is None else {"ttl": ttl}
    return [(name, "put_many", (items,), options) for name, items in by_set.items()]
