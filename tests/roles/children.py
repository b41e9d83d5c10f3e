"""Spawned child processes of the role tests, and the thread plumbing both sides share.

Children come from the spawn context (never fork: a ``Database`` is not fork-safe) and open
their own handle on the same LMDB path or server. Each body below runs in a child, takes its
arguments by value plus ``multiprocessing`` events/barriers, and reports on a queue as plain
tuples: outcomes are described (type name, message), never pickled exceptions.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from types import TracebackType
from typing import Any, TypeVar

import engramdb
from engramdb import Client, Database, FakeClock, ops
from engramdb.cache import LoaderError

SPAWN = multiprocessing.get_context("spawn")
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed
CALLS = "calls"  # the set where loaders count their runs, durably and atomically
ARRIVALS = "arrivals"  # the set where stampede callers count themselves in
OVERLAP = 0.2  # seconds a stampede loader keeps loading once every caller has arrived

T = TypeVar("T")
Outcome = tuple[str, Any, str]  # ("value", value, "") or ("raised", type name, message)


def open_target(target: str, clock_start: float | None = None) -> Database | Client:
    """A handle on an LMDB path or, for an ``engramdb://`` URL, a client of that server."""
    if target.startswith("engramdb://"):
        return engramdb.connect(target)
    clock = FakeClock(clock_start) if clock_start is not None else None
    return engramdb.open(target, durability="none", sweep_interval=None, clock=clock)


def in_threads(count: int, body: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``body(i)`` in ``count`` threads; slot ``i`` holds what it returned or raised."""
    results: list[T | BaseException] = [RuntimeError("never ran")] * count

    def run(i: int) -> None:
        try:
            results[i] = body(i)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2 * WAIT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise AssertionError("a thread hung")
    return results


def describe(result: Any) -> Outcome:
    if isinstance(result, BaseException):
        return ("raised", type(result).__name__, str(result))
    return ("value", result, "")


def loader_calls(db: Database) -> int:
    record = db.records(CALLS).get("n")
    return 0 if record is None else int(record["n"])


# sessions --------------------------------------------------------------------------------


def tokens_of(worker: str, thread: int, n: int) -> list[str]:
    return [f"{worker}.{thread}.{i}" for i in range(n)]


def update_loop(sessions: Any, session_id: str, tokens: list[str], max_retries: int) -> int:
    """Append each token to the session's state by ``update``; returns how many times the
    update functions ran (more than ``len(tokens)`` when updates had to retry)."""
    attempts = 0
    for token in tokens:

        def add(state: Any, token: str = token) -> Any:
            nonlocal attempts
            attempts += 1
            return {"tokens": [*state["tokens"], token]}

        new_state = sessions.update(session_id, add, max_retries=max_retries)
        if new_state["tokens"][-1] != token:
            raise AssertionError(f"update returned a state without its own token {token}")
    return attempts


def session_updaters(
    target: str,
    session_id: str,
    worker: str,
    threads: int,
    n: int,
    max_retries: int,
    start: Barrier,
    out: Queue[Any],
) -> None:
    """Child: ``threads`` threads, each appending ``n`` tokens of its own by ``update``."""
    with open_target(target) as db:

        def body(t: int) -> int:
            start.wait(WAIT)
            return update_loop(db.sessions, session_id, tokens_of(worker, t, n), max_retries)

        out.put([describe(r) for r in in_threads(threads, body)])


# the cache -------------------------------------------------------------------------------


def stampede_loader(db: Database, callers: int, fail: bool) -> Callable[[], Any]:
    """A loader that counts its runs in the database, then keeps loading until every one
    of ``callers`` has counted itself in (and ``OVERLAP`` longer), so all of them miss
    together; it returns a value naming its process, or raises."""

    def load() -> Any:
        db.records(CALLS).operate("n", [ops.incr("n")])
        arrivals = db.records(ARRIVALS)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            record = arrivals.get("n")
            if record is not None and record["n"] >= callers:
                break
            time.sleep(0.005)  # bounded polling for the last arrivals
        time.sleep(OVERLAP)  # the load's own duration: arrivals reach their first look
        if fail:
            raise ValueError("backend down")
        return {"loaded_by": os.getpid()}

    return load


def stampede_call(db: Database, key: str, loader: Callable[[], Any], start: Any) -> Any:
    start.wait(WAIT)
    db.records(ARRIVALS).operate("n", [ops.incr("n")])
    return db.cache.get_or_set(key, loader, ttl=600)


def stampede(
    path: str,
    key: str,
    threads: int,
    callers: int,
    fail: bool,
    start: Barrier,
    out: Queue[Any],
) -> None:
    """Child: ``threads`` threads miss ``key`` together with everyone else."""
    with open_target(path) as db:
        assert isinstance(db, Database)
        loader = stampede_loader(db, callers, fail)
        results = in_threads(threads, lambda _: stampede_call(db, key, loader, start))
        loader_errors = [isinstance(r, LoaderError) for r in results]
        one_object = all(r is results[0] for r in results)
        out.put(([describe(r) for r in results], loader_errors, one_object, db.cache.stats()))


def hold_lease(
    path: str,
    key: str,
    clock_start: float | None,
    lease_ttl: float,
    holding: Event,
    out: Queue[Any],
) -> None:
    """Child: take ``key``'s lease with a load that never ends (the parent kills us)."""
    with open_target(path, clock_start) as db:

        def forever() -> str:
            holding.set()
            threading.Event().wait(2 * WAIT)
            return "never"

        db.cache.get_or_set(key, forever, ttl=600, lease_ttl=lease_ttl)


def slow_load(path: str, key: str, loading: Event, finish: Event, out: Queue[Any]) -> None:
    """Child: a load that starts, tells the parent, and finishes when the parent says."""
    with open_target(path) as db:

        def load() -> str:
            loading.set()
            if not finish.wait(WAIT):
                raise TimeoutError("the parent never let the load finish")
            return "loaded before the delete"

        value = db.cache.get_or_set(key, load, ttl=600)
        out.put((value, db.cache.stats()))


# the parent's side -----------------------------------------------------------------------


class Children:
    """Spawned children running ``body(*args, out)``, one per argument tuple; every one
    is killed on exit if still alive, and the report queue is closed."""

    def __init__(self, body: Callable[..., None], arg_tuples: list[tuple[Any, ...]]) -> None:
        self.out: Queue[Any] = SPAWN.Queue()
        self.processes: list[BaseProcess] = [
            SPAWN.Process(target=body, args=(*args, self.out), daemon=True) for args in arg_tuples
        ]

    def __enter__(self) -> Children:
        for p in self.processes:
            p.start()
        return self

    def reports(self) -> list[Any]:
        """One report per child (in arrival order), then every child must exit cleanly."""
        found = []
        for _ in self.processes:
            try:
                found.append(self.out.get(timeout=WAIT))
            except queue.Empty:
                codes = [p.exitcode for p in self.processes]
                raise AssertionError(
                    f"a child neither reported nor failed; exit codes {codes}"
                ) from None
        for p in self.processes:
            p.join(WAIT)
            assert p.exitcode == 0, f"a child exited with {p.exitcode}"
        return found

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for p in self.processes:
            if p.is_alive():
                p.kill()
            p.join(WAIT)
        self.out.close()
        self.out.join_thread()
