"""The cache's storage primitives, one transaction each, over a role ``Store``.

An embedded database runs them in-process; the server runs them for clients (they are
declared remote), so single flight and the stale-set guard hold across every process and
client. The algorithm over them is ``engramdb.cache.model.Cache``.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Any

from engramdb.cache.model import ERROR_GRACE
from engramdb.errors import Conflict
from engramdb.records.codec import check_value
from engramdb.records.writes import Current, Outcome, check_ttl
from engramdb.remote import remote

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["LEASES", "VALUES", "CacheCore"]

VALUES = "_cache"
LEASES = "_cache_leases"


class CacheCore:
    """The cache's storage primitives over records; run server-side for clients."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._values = store.records(VALUES)
        self._leases = store.records(LEASES)

    @remote("read")
    def peek(self, key: str) -> dict[str, Any]:
        """The stored entry: ``v`` value, ``exp`` fresh-until (s), ``delta`` compute time,
        ``err`` for a cached failure, ``lease`` (the lease's bins) while a load is in flight,
        and ``now``, the store's clock."""
        # One snapshot for both: a fill (value stored, lease dropped in one write) landing
        # between two separate reads would look like "no value and no lease", and the
        # caller would take the lease and load again.
        ((record,), (lease,)) = self.store.read([(self._values, [key]), (self._leases, [key])])
        out: dict[str, Any] = dict(record.bins) if record is not None else {}
        if lease is not None:
            out["lease"] = lease.bins
        out["now"] = self.store.now()  # judge freshness by the store's clock, not the caller's
        return out

    @remote("slow", writes=True)
    def acquire(self, key: str, lease_ttl: float) -> str | None:
        """Take the key's lease; its token, or None when another caller holds it."""
        token = secrets.token_hex(8)
        hold_ms = max(1, math.ceil(lease_ttl * 1000))

        def take(current: Current, now_ms: int) -> Outcome:
            if current.bins is not None and "error" not in current.bins:
                return Outcome(None)  # held by a load in flight
            # Free, expired, or only the notice of a failed load: a new caller loads again.
            return Outcome(token, {"token": token}, now_ms + hold_ms)

        [[taken]] = self.store.write([self.store.step(self._leases, [(key, take)])])
        return taken  # type: ignore[no-any-return]

    @remote("slow", writes=True)
    def fill(
        self,
        key: str,
        token: str,
        value: Any,
        ttl: float,
        stale_ttl: float,
        delta: float,
        error: str | None = None,
    ) -> bool:
        """Store a loaded value (or a cached failure) if ``token`` still holds the lease,
        releasing it in the same write. False when an invalidation took the lease away."""
        now = self.store.now()
        bins: dict[str, Any] = {"exp": now + ttl, "delta": delta}
        if error is None:
            bins["v"] = value
        else:
            bins["err"] = error
        check_value(bins, self.store.limits, "cache value")
        hard_ttl = ttl + stale_ttl

        def release(current: Current, now_ms: int) -> Outcome:
            if current.bins is None or current.bins.get("token") != token:
                raise Conflict("the lease was taken away (invalidated)", current.generation)
            return Outcome(None, None)

        def store(current: Current, now_ms: int) -> Outcome:
            return Outcome(None, bins, now_ms + max(1, math.ceil(hard_ttl * 1000)))

        try:
            step = self.store.step
            self.store.write(
                [step(self._leases, [(key, release)]), step(self._values, [(key, store)])]
            )
        except Conflict:
            return False
        return True

    @remote("slow", writes=True)
    def release(self, key: str, token: str, error: str | None = None) -> None:
        """Give the lease back after a failed load, leaving ``error`` briefly for waiters."""

        def drop(current: Current, now_ms: int) -> Outcome:
            if current.bins is None or current.bins.get("token") != token:
                return Outcome(None)
            if error is None:
                return Outcome(None, None)
            grace = now_ms + int(ERROR_GRACE * 1000)
            return Outcome(None, {"token": token, "error": error}, grace)

        self.store.write([self.store.step(self._leases, [(key, drop)])])

    @remote("slow", writes=True)
    def delete(self, key: str) -> bool:
        """Remove the value and any lease in flight; returns whether a value existed."""

        def drop(current: Current, now_ms: int) -> Outcome:
            return Outcome(current.bins is not None, None)

        step = self.store.step
        results = self.store.write(
            [step(self._values, [(key, drop)]), step(self._leases, [(key, drop)])]
        )
        return bool(results[0][0])

    @remote("slow", writes=True)
    def set(self, key: str, value: Any, ttl: float, stale_ttl: float = 0.0) -> None:
        """Store a value directly (no lease); an in-flight load's later fill is refused."""
        check_ttl(ttl)
        now = self.store.now()
        bins = {"exp": now + ttl, "delta": 0.0, "v": value}
        check_value(bins, self.store.limits, "cache value")

        def drop(current: Current, now_ms: int) -> Outcome:
            return Outcome(None, None)

        def store(current: Current, now_ms: int) -> Outcome:
            return Outcome(None, bins, now_ms + max(1, math.ceil((ttl + stale_ttl) * 1000)))

        step = self.store.step
        self.store.write([step(self._values, [(key, store)]), step(self._leases, [(key, drop)])])
