"""The engine contract: what the record layer needs from a storage engine.

An engine stores opaque record values under record keys (``set NUL encoded-key``), keeps a
per-set count and an expiry index so counts and sweeps never decode values, and appends every
change to an ordered change log in the same atomic, durable transaction as the change itself.
It knows nothing of bins, generations or conditions: the record layer decides those and
hands the engine finished bytes.

Engines: ``memory`` (ephemeral, this process), ``lmdb`` (durable, shared between processes
on one host) and ``postgres`` (``postgres_engine``: PostgreSQL, replicated by Patroni, shared
by any number of hosts), all behind this one contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

__all__ = ["Durability", "Engine", "EngineChange", "WriteFn", "WriteTxn", "overlay_scan"]

T = TypeVar("T")

Durability = Literal["sync", "async", "none"]


class EngineChange(NamedTuple):
    sequence: int
    rk: bytes
    kind: str
    generation: int
    at_ms: int


class WriteTxn(Protocol):
    """A write transaction. Reads see the transaction's own earlier writes."""

    def get(self, rk: bytes) -> bytes | None: ...

    def put(self, rk: bytes, value: bytes, expires_ms: int, prev_expires_ms: int | None) -> None:
        """Store ``value``. ``prev_expires_ms`` is the stored entry's expiry (0 = none), or
        None when nothing is stored under ``rk``; it keeps the count and expiry index right."""

    def delete(self, rk: bytes, prev_expires_ms: int) -> None: ...

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """As ``Engine.scan``, seeing this transaction's own writes (per-element Redis
        structures range over their elements inside a write)."""

    def log(self, kind: str, rk: bytes, generation: int, at_ms: int) -> int:
        """Append to the change log; returns the change's sequence number."""

    def next_sequence(self) -> int:
        """The sequence number the next ``log`` call in this transaction will return.

        A record created by a write starts at this number as its generation, so a key's
        generations are never reused across delete, expiry and re-create."""


WriteFn = Callable[[WriteTxn], Any]


ScanFn = Callable[[bytes, bytes, int, bool], list[tuple[bytes, bytes]]]


def overlay_scan(
    scan: ScanFn,
    held: dict[bytes, bytes | None],
    start: bytes,
    end: bytes,
    limit: int,
    reverse: bool = False,
) -> list[tuple[bytes, bytes]]:
    """A scan of ``scan``'s entries with writes ``held`` over them (None: deleted), for
    transactions that buffer their writes. Each held key in the range can hide at most one
    entry below, so ``limit`` plus that many entries from below are enough."""
    mine = [rk for rk in held if start <= rk < end]
    if not mine:
        return scan(start, end, limit, reverse)
    below = scan(start, end, limit + len(mine), reverse)
    merged = [(rk, value) for rk, value in below if rk not in held]
    merged.extend((rk, value) for rk in mine if (value := held[rk]) is not None)
    merged.sort(reverse=reverse)
    return merged[:limit]


class Engine(Protocol):
    def get(self, rk: bytes) -> bytes | None: ...

    def get_many(self, rks: Sequence[bytes]) -> list[bytes | None]: ...

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one atomic transaction and commit it with the engine's durability.
        If ``fn`` raises, nothing it wrote is kept."""

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` stored ``(rk, value)`` pairs with ``start <= rk < end``, in key
        order (descending with ``reverse``: the highest keys below ``end`` first)."""

    def count(self, set_prefix: bytes, now_ms: int) -> int:
        """Live records in a set: stored entries minus those expired by ``now_ms``."""

    def expired(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` ``(rk, expires_ms)`` of stored entries expired by ``now_ms``."""

    def sets(self) -> list[str]: ...

    def changes(self, since: int, limit: int) -> list[EngineChange]:
        """Changes with ``sequence > since``, oldest first."""

    def first_sequence(self) -> int:
        """Oldest sequence still in the log (``last_sequence() + 1`` when the log is empty)."""

    def last_sequence(self) -> int: ...

    def trim_changes(self, keep: int) -> int:
        """Drop the oldest changes so at most ``keep`` remain; returns how many were dropped."""

    def sync(self) -> None:
        """Make every committed transaction durable now."""

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
