"""Transform steps: read-modify-write of several records, prepared first, staged last.

A step reads each record in the transaction, checks its conditions, runs its transform and
encodes the result; only when every item of every step has been prepared is anything staged.
So any error (a failed condition, a bad value, a transform that raises) leaves the
transaction untouched, including when several steps over different sets make up one atomic
write (a session and its checkpoints, a cache value and its lease). Within a step, later
items see earlier items' effects on the same key; different steps must touch different keys.

Generations are never reused for a key: a record that is created (absent, deleted or expired
before) starts at the change-log sequence of its creating write, and grows by one per write
after that. Every write logs one change and sequences only grow, so each generation a key
ever had is at most the sequence of the write that made it, and below any later creation's.
Staging logs exactly one change per staged entry, in order, so ``prepare`` knows each
entry's sequence in advance (``first_sequence`` + its position) and encodes final headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from engramdb.errors import RecordTooBig
from engramdb.records.codec import HEADER_SIZE, check_bins, encode_body, with_header
from engramdb.records.limits import Limits
from engramdb.records.writes import Conditions, Current, Stored, TransformFn, _Keep
from engramdb.storage.base import WriteTxn

__all__ = ["Prepared", "TransformStep", "run_steps"]

# (record key, what was stored, new value or None to delete, expiry, new generation)
Prepared = tuple[list[tuple[bytes, Stored, bytes | None, int, int]], list[Any]]


class TransformStep:
    def __init__(
        self,
        keyed: Sequence[tuple[bytes, TransformFn]],
        limits: Limits,
        conditions: Conditions | None = None,
        result: str = "outcome",
        validate: bool = False,
        raw: bool = False,
    ) -> None:
        self.keyed = keyed
        self.limits = limits
        self.conditions = conditions
        self.result = result
        self.validate = validate
        self.raw = raw

    def prepare(self, txn: WriteTxn, now: int, first_sequence: int) -> Prepared:
        """Compute every new value; may raise. Stages nothing.

        ``first_sequence`` is the change-log sequence the first entry this step stages will
        get (``txn.next_sequence()`` plus what earlier steps of the same write stage)."""
        limits, conditions, raw = self.limits, self.conditions, self.raw
        overlay: dict[bytes, bytes | None] = {}
        staged: list[tuple[bytes, Stored, bytes | None, int, int]] = []
        results: list[Any] = []
        for rk, fn in self.keyed:
            current = Stored(overlay[rk] if rk in overlay else txn.get(rk), now)
            if conditions is not None:
                conditions.check(current.generation)
            if raw:
                undecoded = None if current.raw is None else memoryview(current.raw)[HEADER_SIZE:]
                seen = Current(None, current.generation, current.expires_ms, undecoded)
            else:
                seen = Current(current.bins(), current.generation, current.expires_ms)
            outcome = fn(seen, now)
            bins, expires = outcome.bins, outcome.expires_ms
            if bins is None:
                if current.prev_expires_ms is not None:
                    staged.append((rk, current, None, 0, 0))
                    overlay[rk] = None
                results.append(outcome.result)
                continue
            if isinstance(bins, _Keep):
                if isinstance(expires, _Keep) or current.raw is None:
                    results.append(outcome.result)  # nothing to write
                    continue
                body = current.raw[HEADER_SIZE:]
            elif type(bins) is bytes and not self.validate:
                body = bins
                if HEADER_SIZE + len(body) > limits.max_record_bytes:
                    raise RecordTooBig(
                        f"record encodes to {HEADER_SIZE + len(body)} bytes; the limit is "
                        f"{limits.max_record_bytes}"
                    )
            else:
                if self.validate:
                    check_bins(bins, limits)
                body = encode_body(cast(Mapping[str, Any], bins), limits)
            expires_at = current.expires_ms if isinstance(expires, _Keep) else expires
            generation = (
                current.generation + 1 if current.generation else first_sequence + len(staged)
            )
            encoded = with_header(body, generation, expires_at, now)
            staged.append((rk, current, encoded, expires_at, generation))
            overlay[rk] = encoded
            results.append(generation if self.result == "generation" else outcome.result)
        return staged, results

    @staticmethod
    def stage(txn: WriteTxn, prepared: Prepared, now: int) -> list[Any]:
        """Write what ``prepare`` computed (cannot fail on request grounds)."""
        staged, results = prepared
        for rk, current, value, expires_at, generation in staged:
            if value is None:
                assert current.prev_expires_ms is not None
                txn.delete(rk, current.prev_expires_ms)
                if current.exists:
                    txn.log("delete", rk, current.generation, now)
                else:  # expired, awaiting the sweeper: its removal is its expiry
                    txn.log("expire", rk, current.stored_generation, now)
            else:
                txn.put(rk, value, expires_at, current.prev_expires_ms)
                sequence = txn.log("put", rk, generation, now)
                # prepare() relied on one change per staged entry, in order.
                assert current.generation or sequence == generation, (sequence, generation)
        return results


def run_steps(txn: WriteTxn, steps: Sequence[TransformStep], now: int) -> list[list[Any]]:
    """Prepare every step, then stage them all: one atomic write across sets."""
    sequence = txn.next_sequence()
    prepared: list[Prepared] = []
    for step in steps:
        prepared.append(step.prepare(txn, now, sequence))
        sequence += len(prepared[-1][0])
    return [step.stage(txn, p, now) for step, p in zip(steps, prepared)]
