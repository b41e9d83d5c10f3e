"""Concurrent ``memory.add`` callers: lanes of threads in this process and in spawned children.

All lanes work on one LMDB database; each child (spawn context, never fork: a ``Database`` is
not fork-safe) opens its own handle on the path. A *plan* is a list of rounds and a round
gives every lane one ``Add``; one barrier across all lanes of all processes releases each
round, so the adds of a round race each other as hard as the machine allows. Children report
on a queue as plain data: results as dicts, failures as strings, never pickled exceptions.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np

import engramdb

SPAWN = multiprocessing.get_context("spawn")
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed
DIM = 256  # the default embedder's dimension

Result = dict[str, str]  # what ``memory.add`` returns: {"id", "event"}


@dataclass(frozen=True)
class Add:
    """One ``memory.add`` call: content, scope (``user_id``/``agent_id``/``run_id``) and,
    optionally, an explicit embedding."""

    content: str
    scope: dict[str, str] = field(hash=False)
    embedding: tuple[float, ...] | None = None

    def run(self, memory: Any) -> Result:
        result: Result = memory.add(self.content, embedding=self.embedding_array(), **self.scope)
        return result

    def embedding_array(self) -> np.ndarray | None:
        return None if self.embedding is None else np.asarray(self.embedding, dtype=np.float32)


Plan = Sequence[Sequence[Add]]  # [round][lane]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def near(base: int, seed: int, noise: float = 0.1) -> tuple[float, ...]:
    """A vector near ``unit(base)``: cosine about ``1 / sqrt(1 + noise**2)``."""
    v = unit(base) + noise * unit(10_000 + seed)
    return tuple(float(x) for x in v / np.linalg.norm(v))


@contextmanager
def fast_switching() -> Iterator[None]:
    """Switch threads every few microseconds, not every 5 ms, so adds really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def run_lanes(
    memories: Sequence[Any], lanes: Sequence[Sequence[Add]], start: Any
) -> list[list[Result]]:
    """Run each lane's adds in a thread of its own on ``memories[lane]`` (a ``db.memory``,
    local or remote), one add per round of ``start``; returns each lane's results. A failing
    lane breaks the barrier so the others fail fast too."""
    results: list[list[Result]] = [[] for _ in lanes]
    errors: list[BaseException] = []

    def lane(i: int) -> None:
        try:
            for add in lanes[i]:
                start.wait(WAIT)
                results[i].append(add.run(memories[i]))
        except BaseException as e:
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(len(lanes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
        if t.is_alive():
            raise AssertionError("an adder thread hung")
    if errors:
        raise errors[0]
    return results


def adder_child(index: int, path: str, lanes: list[list[Add]], start: Barrier, out: Any) -> None:
    """Child of the spawn context: run ``lanes`` on its own handle; report their results."""
    try:
        with fast_switching(), engramdb.open(path, durability="none", sweep_interval=None) as db:
            out.put((index, "ok", run_lanes([db.memory] * len(lanes), lanes, start)))
    except BaseException as e:
        start.abort()
        out.put((index, "error", repr(e)))
        raise


def run_plan(
    db: engramdb.Database,
    path: Path,
    plan: Plan,
    *,
    processes: int,
    threads_per_process: int,
) -> list[list[Result]]:
    """Run ``plan`` on ``db`` (opened on ``path``): lanes beyond ``processes *
    threads_per_process`` are threads here. Returns the results as ``[round][lane]``."""
    width = len(plan[0])
    if any(len(round_) != width for round_ in plan):
        raise ValueError("every round needs one add per lane")
    child_lanes = processes * threads_per_process
    local = width - child_lanes
    if local < 0:
        raise ValueError("more child lanes than the plan is wide")
    by_lane = [[round_[lane] for round_ in plan] for lane in range(width)]
    db.memory.collection  # noqa: B018  (create the collection before anyone races to)
    start = SPAWN.Barrier(width)
    out: Any = SPAWN.Queue()
    children = [
        SPAWN.Process(
            target=adder_child,
            args=(
                p,
                str(path),
                by_lane[local + p * threads_per_process : local + (p + 1) * threads_per_process],
                start,
                out,
            ),
            daemon=True,
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    try:
        try:
            with fast_switching():
                lanes = run_lanes([db.memory] * local, by_lane[:local], start)
        except threading.BrokenBarrierError:
            status, _ = _reports(out, children, timeout=5.0)
            raise AssertionError(
                f"the adders broke off: {status or 'a lane here failed'}"
            ) from None
        status, reports = _reports(out, children, timeout=2 * WAIT)
        if status:
            raise AssertionError(status)
        for index in range(processes):
            lanes.extend(reports[index])
        for child in children:
            child.join(WAIT)
            if child.exitcode != 0:
                raise AssertionError(f"a child exited with {child.exitcode}")
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        out.close()
        out.join_thread()
    return [[lanes[lane][r] for lane in range(width)] for r in range(len(plan))]


def _reports(out: Any, children: Sequence[Any], timeout: float) -> tuple[str, dict[int, Any]]:
    """Every child's report by child index, or a description of what went wrong."""
    reports: dict[int, Any] = {}
    for _ in children:
        try:
            index, status, payload = out.get(timeout=timeout)
        except queue.Empty:
            return "a child neither reported nor failed in time", reports
        if status != "ok":
            return f"child {index} failed: {payload}", reports
        reports[index] = payload
    return "", reports
