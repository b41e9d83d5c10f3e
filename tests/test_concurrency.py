"""No lost updates: concurrent compare-and-set and atomic increments on one record.

Threads share one ``Database``; processes (spawn context, never fork) each open their own on
the same LMDB path. Every writer counts the writes it got acknowledged, and the record must
end up holding exactly that many increments, with the change log agreeing write for write.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any, Literal

import pytest

import engramdb
from engramdb import Conflict, Database, ops

SPAWN = multiprocessing.get_context("spawn")
THREADS = 8
KEY = "counter"
SET = "counters"
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed

Durability = Literal["sync", "async", "none"]


@pytest.fixture(autouse=True)
def interleave_threads() -> Iterator[None]:
    """Switch threads every few microseconds, not every 5 ms, so that threads' reads and
    writes interleave even where a whole loop would otherwise fit in one time slice."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


def cas_increments(db: Database, n: int) -> tuple[int, int]:
    """Increment ``KEY`` by compare-and-set ``n`` times; returns (successes, conflicts)."""
    counters = db.records(SET)
    successes = conflicts = 0
    while successes < n:
        record = counters.get(KEY)
        assert record is not None
        try:
            counters.put(KEY, {"n": record["n"] + 1}, expect_generation=record.generation)
        except Conflict as e:
            # A conflict reports the generation that beat us; generations only grow.
            current = e.generation
        else:
            successes += 1
            continue
        assert current > record.generation
        conflicts += 1
    return successes, conflicts


def run_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``count`` threads released together; returns results in order."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait(WAIT)
            results[i] = target()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a writer thread hung"
    if errors:
        raise errors[0]
    return results


def assert_log_is_one_put_per_generation(db: Database, writes: int) -> None:
    """The change log holds every write of ``KEY``, in generation order, and nothing else."""
    changes = []
    since = 0
    while batch := db.changes(since, limit=1000):
        changes.extend(batch)
        since = batch[-1].sequence
    assert [c.sequence for c in changes] == list(range(1, writes + 1))
    assert [(c.key, c.kind, c.generation) for c in changes] == [
        (KEY, "put", g) for g in range(1, writes + 1)
    ]
    assert db.last_sequence() == writes


@pytest.mark.parametrize(
    ("engine", "durability", "n"),
    [
        ("lmdb", "none", 300),
        ("lmdb", "async", 300),
        ("lmdb", "sync", 30),
        ("memory", "none", 300),
    ],
)
def test_threads_cas_loses_no_update(
    tmp_path: Path, engine: str, durability: Durability, n: int
) -> None:
    path = tmp_path / "db" if engine == "lmdb" else None
    with engramdb.open(path, durability=durability, sweep_interval=None) as db:
        counters = db.records(SET)
        assert counters.put(KEY, {"n": 0}) == 1

        results = run_threads(THREADS, lambda: cas_increments(db, n))

        successes = sum(s for s, _ in results)
        assert successes == THREADS * n
        record = counters.get(KEY)
        assert record is not None
        assert record["n"] == successes
        assert record.generation == successes + 1
        assert_log_is_one_put_per_generation(db, successes + 1)


# processes -------------------------------------------------------------------------------


def _process_cas_worker(path: str, n: int, start: ProcessBarrier, out: Any) -> None:
    """Child of the spawn context: CAS-increment ``n`` times on its own ``Database``."""
    try:
        with engramdb.open(path, durability="none", sweep_interval=None) as db:
            start.wait(WAIT)
            out.put(("ok", cas_increments(db, n)))
    except BaseException as e:
        out.put(("error", repr(e)))
        raise


def _process_incr_worker(path: str, n: int, start: ProcessBarrier, out: Any) -> None:
    """Child of the spawn context: ``operate(incr)`` ``n`` times; reports every result."""
    try:
        with engramdb.open(path, durability="none", sweep_interval=None) as db:
            counters = db.records(SET)
            start.wait(WAIT)
            values = [counters.operate(KEY, [ops.incr("n")])[0] for _ in range(n)]
            out.put(("ok", values))
    except BaseException as e:
        out.put(("error", repr(e)))
        raise


def run_processes(
    worker: Callable[..., None],
    path: Path,
    processes: int,
    n: int,
    parent_work: Callable[[], Any] | None = None,
    parent_threads: int = 0,
) -> tuple[list[Any], list[Any]]:
    """Start ``processes`` spawn children plus ``parent_threads`` threads, all released by
    one barrier; returns (child reports, parent thread results)."""
    start = SPAWN.Barrier(processes + parent_threads)
    out: Any = SPAWN.Queue()
    children = [
        SPAWN.Process(target=worker, args=(str(path), n, start, out), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        local: list[Any] = []
        if parent_work is not None and parent_threads:

            def released() -> Any:
                start.wait(WAIT)
                return parent_work()

            local = run_threads(parent_threads, released)
        reports = []
        for _ in children:
            try:
                status, payload = out.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail("a child process neither reported nor failed in time")
            assert status == "ok", f"child failed: {payload}"
            reports.append(payload)
        for child in children:
            child.join(WAIT)
            assert child.exitcode == 0
        return reports, local
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        out.close()
        out.join_thread()


def test_processes_and_threads_cas_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "db"
    n = 1000
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        counters = db.records(SET)
        counters.put(KEY, {"n": 0})

        reports, local = run_processes(
            _process_cas_worker,
            path,
            processes=4,
            n=n,
            parent_work=lambda: cas_increments(db, n),
            parent_threads=2,
        )

        successes = sum(s for s, _ in reports) + sum(s for s, _ in local)
        assert successes == 6 * n
        record = counters.get(KEY)
        assert record is not None
        assert record["n"] == successes
        assert record.generation == successes + 1
        assert_log_is_one_put_per_generation(db, successes + 1)


def test_processes_atomic_incr_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "db"
    n = 1000
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        counters = db.records(SET)

        reports, _ = run_processes(_process_incr_worker, path, processes=4, n=n)

        total = 4 * n
        record = counters.get(KEY)
        assert record is not None
        assert record["n"] == total
        assert record.generation == total
        # Each increment returned the value it produced: together exactly 1..total.
        returned = sorted(v for values in reports for v in values)
        assert returned == list(range(1, total + 1))
        for values in reports:
            assert values == sorted(values), "one writer saw the counter go backwards"
        assert_log_is_one_put_per_generation(db, total)


# group commit ----------------------------------------------------------------------------


def test_group_commit_acknowledges_every_sync_write_once(tmp_path: Path) -> None:
    writers, each = 16, 20
    with engramdb.open(tmp_path / "db", durability="sync", sweep_interval=None) as db:
        counters = db.records(SET)

        def write_many() -> list[int]:
            return [counters.put(KEY, {"n": i}) for i in range(each)]

        results = run_threads(writers, write_many)

        total = writers * each
        generations = [g for gens in results for g in gens]
        assert len(set(generations)) == total, "two writes were given the same generation"
        assert sorted(generations) == list(range(1, total + 1))
        for gens in results:
            assert gens == sorted(gens), "a writer's own writes were reordered"
        record = counters.get(KEY)
        assert record is not None
        assert record.generation == total
        stats = db.stats()["group_commit"]
        assert stats["writes"] == total
        assert 1 <= stats["batches"] <= total
        assert_log_is_one_put_per_generation(db, total)
