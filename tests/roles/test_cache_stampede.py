"""The cache under a stampede: threads and real processes on one LMDB database.

- 200 threads of this process and 4 spawned processes miss a cold key together: the loader
  runs once (it counts its runs in the database itself) and everyone gets its value.
- The loader raises: every waiter gets the error (here the original exception, elsewhere a
  ``LoaderError`` with its message), and the failure is not cached.
- A lease holder that is abandoned or SIGKILLed keeps the key only until its lease expires
  (moved by a fake clock; once with a real clock and a short lease).
- An invalidation during another process's load wins over that load's late write.
- XFetch: with a seeded rng and a fake clock, early recomputation grows likelier as expiry
  nears, with the rate the paper gives.

- Regressions of two bugs these tests found: a waiter's two-snapshot peek, and a lease
  kept by a caller whose fill failed or whose load was cancelled.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import engramdb
from engramdb import Database, FakeClock, Limits
from engramdb.cache import Cache, LoaderError
from engramdb.cache.core import LEASES, VALUES
from engramdb.records.keys import split_rk
from engramdb.storage.memory import MemoryEngine
from tests.conftest import CLOCK_START
from tests.roles.children import (
    SPAWN,
    WAIT,
    Children,
    Outcome,
    describe,
    hold_lease,
    in_threads,
    loader_calls,
    slow_load,
    stampede,
    stampede_call,
    stampede_loader,
)

KEY = "cold"
PARENT_THREADS = 200
PROCESSES = 4
CHILD_THREADS = 4
CALLERS = PARENT_THREADS + PROCESSES * CHILD_THREADS


def open_lmdb(path: Path, clock: FakeClock | None = None) -> Database:
    return engramdb.open(path, durability="none", sweep_interval=None, clock=clock)


Report = tuple[list[Outcome], list[bool], bool, dict[str, int]]


def run_stampede(db: Database, path: Path, fail: bool) -> tuple[list[Any], list[Report]]:
    """Everyone misses ``KEY`` together. Returns this process's raw results (values or
    exceptions) and each child's report: outcomes, which of them were ``LoaderError``s,
    whether all its threads got the very same object, and its cache stats."""
    start = SPAWN.Barrier(CALLERS)
    args = [(str(path), KEY, CHILD_THREADS, CALLERS, fail, start) for _ in range(PROCESSES)]
    with Children(stampede, args) as children:
        loader = stampede_loader(db, CALLERS, fail)
        local = in_threads(PARENT_THREADS, lambda _: stampede_call(db, KEY, loader, start))
        reports = children.reports()
    return local, reports


def assert_everyone_overlapped(db: Database, reports: list[Report]) -> None:
    """In each process every caller either ran the loader or waited for a load in flight
    (its process's first caller's, or another process's): none came late and found the
    value stored, so all of them really missed together."""
    stats = [db.cache.stats()] + [report[3] for report in reports]
    assert sum(s["loader_calls"] for s in stats) == 1
    took_part = [s["loader_calls"] + s["lease_waits"] for s in stats]
    assert took_part == [PARENT_THREADS] + [CHILD_THREADS] * PROCESSES, stats


def test_200_threads_and_4_processes_miss_a_cold_key_and_the_loader_runs_once(
    tmp_path: Path,
) -> None:
    with open_lmdb(tmp_path / "db") as db:
        local, reports = run_stampede(db, tmp_path / "db", fail=False)

        assert loader_calls(db) == 1
        outcomes = [describe(r) for r in local] + [o for report in reports for o in report[0]]
        assert len(outcomes) == CALLERS
        assert {o[0] for o in outcomes} == {"value"}, outcomes
        values = [o[1] for o in outcomes]
        assert values == [values[0]] * CALLERS, "callers got different values"
        assert_everyone_overlapped(db, reports)
        assert db.cache.get(KEY) == values[0]


def test_a_failing_loader_fails_every_waiter_and_is_not_cached(tmp_path: Path) -> None:
    with open_lmdb(tmp_path / "db") as db:
        local, reports = run_stampede(db, tmp_path / "db", fail=True)

        assert loader_calls(db) == 1
        assert_everyone_overlapped(db, reports)
        assert all(isinstance(r, BaseException) for r in local), local
        # Per process: (type, message, is a LoaderError) of what each thread got, and
        # whether all its threads got one and the same exception object.
        per_process = [
            (
                [(type(r).__name__, str(r), isinstance(r, LoaderError)) for r in local],
                all(r is local[0] for r in local),
            )
        ]
        for outcomes, loader_errors, one_object, _stats in reports:
            assert [o[0] for o in outcomes] == ["raised"] * CHILD_THREADS, outcomes
            got = [(o[1], o[2], e) for o, e in zip(outcomes, loader_errors)]
            per_process.append((got, one_object))
        original = ("ValueError", "backend down", False)
        relayed = ("LoaderError", "ValueError: backend down", True)
        loading = [p for p in per_process if set(p[0]) == {original}]
        assert len(loading) == 1, f"not exactly one process ran the loader: {per_process}"
        # There, every waiter got the very exception the loader raised ...
        assert loading[0][1], "the loading process's waiters got different exception objects"
        # ... and in every other process a LoaderError with its type and message.
        relaying = [p for p in per_process if set(p[0]) == {relayed}]
        assert len(relaying) == PROCESSES, per_process

        # The failure was not cached: the next call loads again.
        again: list[str] = []

        def recover() -> str:
            again.append("recovered")
            return "recovered"

        assert db.cache.get_or_set(KEY, recover, ttl=60) == "recovered"
        assert again == ["recovered"]


# lease holders that vanish ---------------------------------------------------------------


class Waiter:
    """``get_or_set`` on a thread of its own; ``done`` is set with its outcome."""

    def __init__(self, db: Database, loader: Callable[[], Any], lease_ttl: float) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None

        def run() -> None:
            try:
                value = db.cache.get_or_set(KEY, loader, ttl=600, lease_ttl=lease_ttl)
                self.outcome = describe(value)
            except BaseException as e:
                self.outcome = describe(e)
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> Outcome | None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the waiter hung"
        return self.outcome


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (bounded) until it holds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def take_over_after_expiry(db: Database, clock: FakeClock, lease_ttl: float) -> None:
    """Someone else holds ``KEY``'s lease for ``lease_ttl`` fake seconds and never fills:
    a waiter here waits until the lease expires, then loads it itself, once."""
    calls: list[float] = []

    def loader() -> str:
        calls.append(clock())
        return "loaded by the next caller"

    waiter = Waiter(db, loader, lease_ttl=lease_ttl)
    try:
        wait_for(lambda: db.cache.stats()["lease_waits"] >= 1, "the caller waits on the lease")
        clock.advance(lease_ttl - 1)
        assert not waiter.done.wait(0.2), "the caller did not wait for the lease to expire"
        assert calls == []
        clock.advance(2)
        assert waiter.done.wait(WAIT)
    finally:
        clock.advance(10 * lease_ttl)  # lets a waiter that is still waiting finish
        outcome = waiter.join()
    assert outcome == ("value", "loaded by the next caller", "")
    assert calls == [CLOCK_START + lease_ttl + 1]
    assert db.cache.stats()["loader_calls"] == 1
    assert db.cache.get(KEY) == "loaded by the next caller"


def test_an_abandoned_lease_is_taken_over_once_it_expires(tmp_path: Path) -> None:
    clock = FakeClock(CLOCK_START)
    with open_lmdb(tmp_path / "db", clock) as db:
        holder = db.cache.core  # another cache on the same database, which then goes away
        token = holder.acquire(KEY, 30)
        assert token is not None

        take_over_after_expiry(db, clock, lease_ttl=30)

        # Should the holder come back after all, its late write is refused.
        assert holder.fill(KEY, token, "late", 600, 0.0, 0.0) is False
        assert db.cache.get(KEY) == "loaded by the next caller"


def test_a_killed_lease_holder_is_taken_over_once_its_lease_expires(tmp_path: Path) -> None:
    path = tmp_path / "db"
    clock = FakeClock(CLOCK_START)
    with open_lmdb(path, clock) as db:
        holding = SPAWN.Event()
        # The child's own fake clock starts where ours does, so its lease's expiry is
        # CLOCK_START + 30 on our clock too.
        with Children(hold_lease, [(str(path), KEY, CLOCK_START, 30.0, holding)]) as child:
            assert holding.wait(WAIT), "the child never started loading"
            assert "lease" in db.cache.core.peek(KEY)
            (process,) = child.processes
            process.kill()
            process.join(WAIT)
            assert process.exitcode == -signal.SIGKILL

        assert "lease" in db.cache.core.peek(KEY), "the lease went with its holder"
        take_over_after_expiry(db, clock, lease_ttl=30)


def test_a_killed_lease_holder_real_clock(tmp_path: Path) -> None:
    path = tmp_path / "db"
    lease_ttl = 1.0
    with open_lmdb(path) as db:
        holding = SPAWN.Event()
        with Children(hold_lease, [(str(path), KEY, None, lease_ttl, holding)]) as child:
            assert holding.wait(WAIT), "the child never started loading"
            lease = db._internal_records(LEASES).get(KEY)
            assert lease is not None
            assert lease.expires_at is not None
            (process,) = child.processes
            process.kill()
            process.join(WAIT)
            assert process.exitcode == -signal.SIGKILL

        loaded_at: list[float] = []

        def loader() -> str:
            loaded_at.append(time.time())
            return "loaded by the next caller"

        outcome = Waiter(db, loader, lease_ttl=10).join()
        assert outcome == ("value", "loaded by the next caller", "")
        assert len(loaded_at) == 1
        assert loaded_at[0] >= lease.expires_at - 0.001  # not before the dead lease expired
        assert db.cache.stats()["lease_waits"] == 1


# invalidation ----------------------------------------------------------------------------


@pytest.mark.parametrize("reload_first", [False, True], ids=["then-nothing", "then-reloaded"])
def test_a_delete_wins_over_another_processs_late_loader_write(
    tmp_path: Path, reload_first: bool
) -> None:
    path = tmp_path / "db"
    with open_lmdb(path) as db:
        loading, finish = SPAWN.Event(), SPAWN.Event()
        with Children(slow_load, [(str(path), KEY, loading, finish)]) as child:
            assert loading.wait(WAIT), "the child never started loading"
            assert "lease" in db.cache.core.peek(KEY)
            assert db.cache.delete(KEY) is False  # nothing stored yet; the lease is revoked
            if reload_first:
                # A caller after the delete loads fresh data at once (the lease is free) ...
                assert db.cache.get_or_set(KEY, lambda: "fresh", ttl=600) == "fresh"
            finish.set()
            ((value, stats),) = child.reports()

        assert value == "loaded before the delete"  # the child's caller gets its value ...
        assert stats["invalidated_fills"] == 1  # ... but its write-back was refused
        entry = db.cache.core.peek(KEY)
        assert "lease" not in entry
        if reload_first:
            assert db.cache.get(KEY) == "fresh"
            return
        assert "v" not in entry
        assert db.cache.get(KEY) is None
        calls: list[int] = []
        assert db.cache.get_or_set(KEY, lambda: calls.append(1) or "reloaded", ttl=600) == (
            "reloaded"
        )
        assert calls == [1]


# XFetch ----------------------------------------------------------------------------------

TTL = 100.0
DELTA = 1.0  # seconds the (recorded) last computation took
SAMPLES = 1000
FRACTIONS = (0.5, 0.9, 0.99, 0.999)  # of the TTL elapsed when the keys are read


def early_recomputes(db: Database, clock: FakeClock, seed: int, beta: float) -> list[int]:
    """For each fraction of the TTL: how many of ``SAMPLES`` keys, each filled at
    ``CLOCK_START`` with a computation time of ``DELTA``, recompute early when read then."""
    core = db.cache.core
    cache = Cache(core, rng=random.Random(seed))
    keys = [f"x{i}" for i in range(SAMPLES)]
    counts = []
    for fraction in FRACTIONS:
        clock.set(CLOCK_START)
        for key in keys:
            token = core.acquire(key, 10)
            assert token is not None
            assert core.fill(key, token, "old", TTL, 0.0, DELTA)
        clock.set(CLOCK_START + fraction * TTL)
        before = cache.stats()["early_recomputes"], cache.stats()["loader_calls"]
        for key in keys:
            value = cache.get_or_set(key, lambda: "new", ttl=TTL, early_recompute=beta)
            assert value in ("old", "new")
        after = cache.stats()["early_recomputes"], cache.stats()["loader_calls"]
        counts.append(after[0] - before[0])
        assert after[1] - before[1] == counts[-1]  # each early recomputation reloaded
    return counts


def test_xfetch_recomputes_early_more_often_as_expiry_nears() -> None:
    clock = FakeClock(CLOCK_START)
    with engramdb.open(None, clock=clock, sweep_interval=None) as db:
        counts = early_recomputes(db, clock, seed=7, beta=1.0)

        # XFetch recomputes when delta * beta * -ln(U) reaches the time left, so with
        # t = (1 - fraction) * TTL left the chance is exp(-t / (delta * beta)).
        for fraction, count in zip(FRACTIONS, counts):
            p = math.exp(-(1 - fraction) * TTL / DELTA)
            spread = 5 * math.sqrt(SAMPLES * p * (1 - p)) + 2
            assert abs(count - SAMPLES * p) <= spread, (fraction, count, SAMPLES * p)
        assert counts[0] == 0  # halfway: exp(-50)
        assert counts[1] <= 2  # 10 s left: exp(-10), about 0.05 of 1000
        assert counts[1] < counts[2] < counts[3]
        # Deterministic: the same seed gives the same decisions.
        assert early_recomputes(db, clock, seed=7, beta=1.0) == counts
        # beta = 0 turns early recomputation off, however close the expiry.
        assert early_recomputes(db, clock, seed=7, beta=0.0) == [0, 0, 0, 0]


# regressions ------------------------------------------------------------------------------------


class GatedEngine(MemoryEngine):
    """The memory engine with a hook run once, right after the next read that includes a
    cache value: between the two reads a peek makes (the value, then the lease), or after
    one snapshot of both."""

    def __init__(self) -> None:
        super().__init__()
        self.after_value_read: Callable[[], None] | None = None

    def _reached(self, rks: Sequence[bytes]) -> None:
        hook = self.after_value_read
        if hook is not None and any(split_rk(rk)[0] == VALUES for rk in rks):
            self.after_value_read = None
            hook()

    def get(self, rk: bytes) -> bytes | None:
        raw = super().get(rk)
        self._reached([rk])
        return raw

    def get_many(self, rks: Sequence[bytes]) -> list[bytes | None]:
        raws = super().get_many(rks)
        self._reached(rks)
        return raws


def test_a_waiter_does_not_load_again_when_the_value_lands_between_its_reads() -> None:
    engine = GatedEngine()
    with Database(engine, clock=FakeClock(CLOCK_START), sweep_interval=None) as db:
        # Two caches on one database stand for two processes: no in-process flight shared.
        first, second = Cache(db.cache.core), Cache(db.cache.core)
        calls: list[str] = []
        loading, finish = threading.Event(), threading.Event()

        def slow() -> str:
            calls.append("first")
            loading.set()
            finish.wait(WAIT)
            return "value"

        loader_thread = threading.Thread(
            target=lambda: first.get_or_set(KEY, slow, ttl=600, early_recompute=0)
        )
        loader_thread.start()
        try:
            assert loading.wait(WAIT)
            outcome: list[Outcome] = []

            def load_again() -> str:
                calls.append("second")
                return "loaded again"

            def wait_on_it() -> None:
                try:
                    outcome.append(describe(second.get_or_set(KEY, load_again, ttl=600)))
                except BaseException as e:
                    outcome.append(describe(e))

            waiter = threading.Thread(target=wait_on_it)
            waiter.start()
            wait_for(lambda: second.stats()["lease_waits"] >= 1, "the second caller waits")

            def finish_the_load() -> None:
                finish.set()
                loader_thread.join(WAIT)

            # The waiter's next look: it reads "no value", then the first load completes
            # (value stored and lease released in one write), then it reads "no lease".
            engine.after_value_read = finish_the_load
            waiter.join(WAIT)
        finally:
            finish.set()
            loader_thread.join(WAIT)
        assert outcome == [("value", "value", "")]
        assert calls == ["first"]


def too_big_for_the_store(db: Database) -> None:
    with pytest.raises(engramdb.RecordTooBig):
        db.cache.get_or_set(KEY, lambda: "x" * 10_000, ttl=600)


def cancelled_while_loading(db: Database) -> None:
    async def never() -> str:
        await asyncio.Event().wait()
        return "never"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(db.cache.get_or_set(KEY, never, ttl=600), 0.05)

    asyncio.run(main())


@pytest.mark.parametrize(
    "fail", [too_big_for_the_store, cancelled_while_loading], ids=["fill-refused", "cancelled"]
)
def test_a_caller_that_fails_after_taking_the_lease_gives_it_back(
    fail: Callable[[Database], None],
) -> None:
    limits = Limits(max_record_bytes=4096)
    with engramdb.open(
        None, clock=FakeClock(CLOCK_START), sweep_interval=None, limits=limits
    ) as db:
        fail(db)

        lease = db.cache.core.peek(KEY).get("lease")
        assert lease is None or "error" in lease, "the lease is still held"
        # Another process's caller loads at once instead of waiting out the lease.
        other = Cache(db.cache.core)
        assert other.get_or_set(KEY, lambda: "small", ttl=600, wait_timeout=1.0) == "small"
