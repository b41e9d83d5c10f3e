"""Clients of a replicated cluster under faults, through engramdb's postgres engine.

- Writers put unique keys as fast as the cluster answers and record every write that was
  acknowledged (it must survive any failover), every one whose outcome is unknown (the
  engine says so when a connection died after COMMIT was sent) and when each ack came.
- Compare-and-set clients read, write and compare-and-set a few hot keys and record each
  call's invocation and return times and outcome, as the audit does, for the
  linearizability checker. A call that failed with an unknown outcome is kept without a
  return time: it may have taken effect at any point after it started, or never.

Each client thread opens its own engramdb handle, as independent processes would.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import engramdb
from engramdb.audit.linearizability import Operation

WRITES = "acked"  # set of the writers' records
REGISTERS = "registers"  # set of the compare-and-set clients' keys


@dataclass
class Results:
    acked: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    leaked: list[str] = field(default_factory=list)  # errors outside engramdb's error tree

    def longest_gap(self, since: float) -> float:
        """The longest time no write was acknowledged, from ``since`` on: the outage
        clients saw (writers run back to back, so in normal running it is milliseconds)."""
        times = sorted(t for t in self.ack_times if t >= since)
        if not times:
            return float("inf")
        return max(b - a for a, b in itertools.pairwise([since, *times]))


class Workload:
    """Writers and compare-and-set clients on ``url`` until ``stop``; ``results`` after."""

    def __init__(
        self, url: str, *, writers: int = 3, cas_clients: int = 2, keys: int = 3, seed: int = 7
    ) -> None:
        self.url = url
        self.results = Results()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Keys unique to this workload: the checker assumes every register starts absent.
        self.run = uuid.uuid4().hex[:8]
        self._keys = [f"{self.run}-k{i}" for i in range(keys)]
        self._threads = [
            threading.Thread(target=self._writer, args=(w,), daemon=True) for w in range(writers)
        ] + [
            threading.Thread(target=self._cas_client, args=(c, seed + c), daemon=True)
            for c in range(cas_clients)
        ]
        self._values = itertools.count(1)

    def __enter__(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Results:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        return self.results

    def acked(self) -> int:
        with self._lock:
            return len(self.results.acked)

    def wait_acked(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` more writes are acknowledged (progress is being made)."""
        target = self.acked() + count
        deadline = time.monotonic() + timeout
        while self.acked() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"no write progress: {self.acked()} of {target} acked")
            time.sleep(0.05)

    def _open(self) -> Any:
        return engramdb.open(self.url)

    def _writer(self, writer: int) -> None:
        db = self._open()
        try:
            records = db.records(WRITES)
            for sequence in itertools.count():
                if self._stop.is_set():
                    return
                key = f"{self.run}-w{writer}-{sequence}"
                try:
                    records.put(key, {"writer": writer, "sequence": sequence})
                except Exception as e:
                    # The engine retries a write whose connection died before COMMIT; what
                    # reaches us may or may not have been applied.
                    with self._lock:
                        self.results.unknown.append(key)
                        self.results.errors[type(e).__name__] += 1
                        if not isinstance(e, engramdb.EngramError):
                            self.results.leaked.append(repr(e))
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                with self._lock:
                    self.results.acked.append(key)
                    self.results.ack_times.append(now)
        finally:
            db.close()

    def _cas_client(self, client: int, seed: int) -> None:
        rng = random.Random(seed)
        db = self._open()
        try:
            registers = db.records(REGISTERS)
            while not self._stop.is_set():
                key = rng.choice(self._keys)
                draw = rng.random()
                kind = "read" if draw < 0.4 else "write" if draw < 0.7 else "cas"
                with self._lock:
                    value = next(self._values)
                argument: Any = value
                start = time.monotonic()
                try:
                    if kind == "read":
                        argument = None
                        output = _value(registers.get(key))
                    elif kind == "write":
                        output = None
                        registers.put(key, {"v": value})
                    else:
                        record = registers.get(key)
                        argument = (_value(record), value)
                        start = time.monotonic()  # the cas proper starts after its read
                        generation = 0 if record is None else record.generation
                        try:
                            registers.put(key, {"v": value}, expect_generation=generation)
                            output = True
                        except engramdb.Conflict:
                            output = False
                except Exception as e:
                    with self._lock:
                        self.results.errors[type(e).__name__] += 1
                        if not isinstance(e, engramdb.EngramError):
                            self.results.leaked.append(repr(e))
                    # A write or cas that failed may have happened: kept with no end. A read
                    # constrains nothing, nor does a cas whose read failed (never sent).
                    if kind == "write" or (kind == "cas" and isinstance(argument, tuple)):
                        self._record(client, key, kind, start, argument, None, known=False)
                    time.sleep(0.05)
                    continue
                self._record(client, key, kind, start, argument, output)
        finally:
            db.close()

    def _record(
        self,
        client: int,
        key: str,
        kind: Any,
        start: float,
        argument: Any,
        output: Any,
        *,
        known: bool = True,
    ) -> None:
        end = time.monotonic() if known else None
        with self._lock:
            self.results.operations.append(
                Operation(client, key, kind, start, end, argument, output)
            )


def _value(record: Any) -> Any:
    return None if record is None else record.bins["v"]
