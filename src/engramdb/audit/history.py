"""Closed-loop history recorders for the consistency and availability sections.

Consistency: clients run reads, writes (each of a unique value) and compare-and-sets on a
few hot keys, recording when each call was invoked and when it returned, and its outcome:
ok, failed (it did not happen: refused or shed) or unknown (timed out or lost: it may have).
They also increment counters and count the increments acknowledged.

Availability: clients write unique keys as fast as the target answers and record which
writes were acknowledged, and when the target stopped and started answering.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from typing import Any

from engramdb.audit.linearizability import Operation
from engramdb.audit.load import stop_processes
from engramdb.audit.targets import OUTCOME_UNKNOWN, Unsupported, classify, make_target

__all__ = ["record_histories", "record_writes"]


_UNREAD: Any = object()


async def _histories(
    target_spec: str,
    options: dict[str, Any],
    worker: int,
    clients: int,
    keys: int,
    counters: int,
    seconds: float,
    start_at: float,
    seed: int,
    prefix: str,
) -> dict[str, Any]:
    target = make_target(target_spec, **options)
    await target.open()
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    acked: dict[str, int] = {}
    maybe: dict[str, int] = {}
    use_cas = target.supports_cas
    end = start_at + seconds
    now = time.time()
    if start_at > now:
        await asyncio.sleep(start_at - now)

    async def client(c: int) -> None:
        nonlocal use_cas
        client_id = worker * 1000 + c
        sequence = 0
        while time.time() < end:
            sequence += 1
            if rng.random() < 0.15:
                key = f"{prefix}n{rng.randrange(counters)}"
                try:
                    await target.incr(key)
                    acked[key] = acked.get(key, 0) + 1
                except Exception as e:
                    if classify(e)[1] == OUTCOME_UNKNOWN:
                        maybe[key] = maybe.get(key, 0) + 1
                continue
            key = f"{prefix}r{rng.randrange(keys)}"
            draw = rng.random()
            kind = "read" if draw < 0.5 else "write" if draw < 0.8 or not use_cas else "cas"
            value = client_id * 1_000_000 + sequence
            start = time.time()
            expected: Any = _UNREAD  # a cas's expected value, once its read has answered
            try:
                if kind == "read":
                    output: Any = await target.read(key)
                    ops.append((client_id, key, "read", start, time.time(), None, output))
                elif kind == "write":
                    await target.write(key, value)
                    ops.append((client_id, key, "write", start, time.time(), value, None))
                else:
                    expected = await target.read(key)
                    start = time.time()
                    ok = await target.cas(key, expected, value)
                    ops.append((client_id, key, "cas", start, time.time(), (expected, value), ok))
            except Unsupported:
                use_cas = False
            except Exception as e:
                if classify(e)[1] == OUTCOME_UNKNOWN:
                    # It may have happened: kept with no end, so a later read of its value
                    # is explained. (A cas whose read failed never sent the cas.)
                    if kind == "write":
                        ops.append((client_id, key, "write", start, None, value, None))
                    elif kind == "cas" and expected is not _UNREAD:
                        ops.append((client_id, key, "cas", start, None, (expected, value), None))
                # a refused or shed call did not happen; an unanswered read constrains nothing

    await asyncio.gather(*(client(c) for c in range(clients)))
    await target.close()
    return {"ops": ops, "acked": acked, "maybe": maybe, "cas": use_cas}


async def _writes(
    target_spec: str,
    options: dict[str, Any],
    worker: int,
    clients: int,
    seconds: float,
    start_at: float,
    prefix: str,
) -> dict[str, Any]:
    target = make_target(target_spec, **options)
    await target.open()
    acked: list[str] = []
    failures: list[tuple[float, float | None]] = []  # (first failure, next success)
    end = start_at + seconds
    now = time.time()
    if start_at > now:
        await asyncio.sleep(start_at - now)

    async def client(c: int) -> None:
        down_since: float | None = None
        i = 0
        while time.time() < end:
            i += 1
            key = f"{prefix}w{worker}.{c}.{i}"
            try:
                await target.write(key, i)
                acked.append(key)
                if down_since is not None:
                    failures.append((down_since, time.time()))
                    down_since = None
            except Exception:
                if down_since is None:
                    down_since = time.time()
                await asyncio.sleep(0.01)
        if down_since is not None:
            failures.append((down_since, None))

    await asyncio.gather(*(client(c) for c in range(clients)))
    await target.close()
    return {"acked": acked, "failures": failures}


def _spawn(kind: str, jobs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_main, args=(kind, job, queue), daemon=True) for job in jobs
    ]
    results: list[dict[str, Any]] = []
    try:
        for p in processes:
            p.start()
        while len(results) < len(jobs):
            try:
                results.append(queue.get(timeout=1))
            except Exception:
                if all(not p.is_alive() for p in processes) and queue.empty():
                    break
    except BaseException:
        stop_processes(processes, wait=0)  # Ctrl-C: nothing may write during the cleanup
        raise
    stop_processes(processes)
    failed = [r["error"] for r in results if "error" in r]
    if failed or len(results) < len(jobs):
        raise RuntimeError(f"history workers failed: {failed or 'no result'}")
    return results


def _main(kind: str, job: tuple[Any, ...], queue: Any) -> None:
    try:
        function = _histories if kind == "histories" else _writes
        queue.put(asyncio.run(function(*job)))
    except BaseException as e:
        queue.put({"error": f"{type(e).__name__}: {e}"})


def record_histories(
    target: str,
    options: dict[str, Any],
    *,
    workers: int,
    clients: int,
    keys: int,
    counters: int,
    seconds: float,
    prefix: str,
    seed: int = 7,
    start_at: float | None = None,
) -> tuple[list[Operation], dict[str, int], dict[str, int], bool]:
    """Histories of every client, acknowledged and uncertain increments per counter, and
    whether compare-and-set was exercised. ``start_at``: when the clients start (epoch
    seconds; default: once every process has had time to start)."""
    if start_at is None:
        start_at = time.time() + 2.0 + 0.3 * workers
    jobs = [
        (target, options, w, clients, keys, counters, seconds, start_at, seed + w, prefix)
        for w in range(workers)
    ]
    ops: list[Operation] = []
    acked: dict[str, int] = {}
    maybe: dict[str, int] = {}
    cas = True
    for r in _spawn("histories", jobs):
        ops.extend(Operation(*o) for o in r["ops"])
        for k, v in r["acked"].items():
            acked[k] = acked.get(k, 0) + v
        for k, v in r["maybe"].items():
            maybe[k] = maybe.get(k, 0) + v
        cas = cas and r["cas"]
    return ops, acked, maybe, cas


def record_writes(
    target: str,
    options: dict[str, Any],
    *,
    workers: int,
    clients: int,
    seconds: float,
    prefix: str,
    start_at: float,
) -> tuple[list[str], list[tuple[float, float | None]]]:
    """Acknowledged keys and outage intervals seen by the writers."""
    jobs = [(target, options, w, clients, seconds, start_at, prefix) for w in range(workers)]
    acked: list[str] = []
    outages: list[tuple[float, float | None]] = []
    for r in _spawn("writes", jobs):
        acked.extend(r["acked"])
        outages.extend((f[0], f[1]) for f in r["failures"])
    return acked, outages
