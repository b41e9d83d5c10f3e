"""Hedged reads ("The Tail at Scale", Dean and Barroso): ask a second server when the first
is slow, take whichever answers first.

``engramdb.connect([url_a, url_b], hedge=True)`` (or ``hedge=Hedge(budget=0.02)``) gives a
client of several servers that can all answer a read: ``engramdb serve`` fronts over one
data directory (LMDB shares it across processes) or over one PostgreSQL cluster. Reads take
turns across the servers; when a read has had no reply after the p95 latency this client has
observed for that method, the same request goes to the next server too and the first reply
wins (the slower connection is closed, so no stale reply is ever read from it).

The rules:

- Only reads are hedged: methods whose declaration says they change nothing (``remote.py``:
  ``writes=False``). Writes, transactions and raw ``execute`` commands go to the first
  server, once, by the ordinary client's rules.
- A budget bounds the extra load: each read earns ``budget`` of a hedge (capped at
  ``burst``) and each hedge spends one, so hedges never exceed ``budget`` x reads.
  A read that would have been hedged but found the budget spent counts as a refusal.
- No hedging until a method has ``warmup`` observations: its p95 is not known before.
- Read-your-writes holds because every server answers from the same store: a write this
  client saw acknowledged is committed, and a committed write is visible to every front.
  Hedging to asynchronous replicas (which may lag) is therefore not offered: list only
  fronts of one store.

``stats()["hedging"]`` reports reads, hedges sent, hedges won and budget refusals.

This module is the policy alone (no sockets): ``client/hedged.py`` drives it for the
blocking client.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engramdb.errors import InvalidArgument

__all__ = ["Hedge", "Hedger"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Hedge:
    """How a client hedges its reads.

    Args:
        budget: most extra requests, as a fraction of reads (0.05: at most 5% more).
        quantile: send the second copy after this quantile of the method's latency.
        burst: most unspent hedges a quiet period can save up.
        warmup: observations of a method before it is hedged.
        window: how many recent latencies of a method the quantile is taken over.
        min_delay: never hedge sooner than this (seconds).
    """

    budget: float = 0.05
    quantile: float = 0.95
    burst: float = 10.0
    warmup: int = 32
    window: int = 512
    min_delay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget <= 1.0:
            raise InvalidArgument(f"hedge budget must be within [0, 1], not {self.budget}")
        if not 0.0 < self.quantile < 1.0:
            raise InvalidArgument(f"hedge quantile must be within (0, 1), not {self.quantile}")
        if self.burst < 1 or self.warmup < 1 or self.window < self.warmup:
            raise InvalidArgument("hedge needs burst >= 1 and 1 <= warmup <= window")
        if self.min_delay < 0:
            raise InvalidArgument("hedge min_delay must not be negative")


class _Latencies:
    """The recent latencies of one method and their quantile, recomputed every few calls
    (sorting the window on every call would cost more than the read)."""

    __slots__ = ("count", "delay", "ring")

    def __init__(self) -> None:
        self.ring: list[float] = []
        self.count = 0
        self.delay: float | None = None


class Hedger:
    """The policy, apart from any transport: when to hedge a read, whether the budget
    allows it, and the counts ``stats()`` reports. Thread-safe."""

    def __init__(self, hedge: Hedge, *, fronts: int) -> None:
        if fronts < 2:
            raise InvalidArgument("hedged reads need at least two servers")
        self.hedge = hedge
        self._turns = itertools.count()
        self._methods: dict[str, _Latencies] = {}
        self._tokens = 0.0
        self._lock = threading.Lock()
        self.reads = self.sent = self.won = self.refused = 0

    def pair(self, servers: Sequence[T]) -> tuple[T, T]:
        """The server a read goes to (reads take turns) and the one its hedge would go to."""
        turn = next(self._turns)
        return servers[turn % len(servers)], servers[(turn + 1) % len(servers)]

    def delay(self, method: str) -> float | None:
        """Seconds to wait for a reply before hedging this read (None: do not hedge yet);
        counts the read and earns its share of the budget."""
        hedge = self.hedge
        with self._lock:
            self.reads += 1
            self._tokens = min(hedge.burst, self._tokens + hedge.budget)
            found = self._methods.get(method)
        if found is None or hedge.budget == 0.0:
            return None  # not warmed up, or hedging off (the reads only take turns)
        return found.delay

    def spend(self) -> bool:
        """Whether a hedge may be sent now (and, if so, pays for it)."""
        with self._lock:
            if self._tokens < 1.0:
                self.refused += 1
                return False
            self._tokens -= 1.0
            self.sent += 1
            return True

    def observe(self, method: str, seconds: float, hedge_won: bool) -> None:
        hedge = self.hedge
        with self._lock:
            self.won += hedge_won
            found = self._methods.get(method)
            if found is None:
                found = self._methods[method] = _Latencies()
            ring = found.ring
            if len(ring) < hedge.window:
                ring.append(seconds)
            else:
                ring[found.count % hedge.window] = seconds
            found.count += 1
            if found.count >= hedge.warmup and found.count % 16 in (0, hedge.warmup % 16):
                ordered = sorted(ring)
                at = ordered[min(len(ordered) - 1, int(hedge.quantile * len(ordered)))]
                found.delay = max(hedge.min_delay, at)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "budget": self.hedge.budget,
                "reads": self.reads,
                "hedges_sent": self.sent,
                "hedges_won": self.won,
                "budget_refusals": self.refused,
                "delay_ms": {
                    name: round(found.delay * 1000, 3)
                    for name, found in sorted(self._methods.items())
                    if found.delay is not None
                },
            }
