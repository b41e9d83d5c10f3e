"""Open-loop load: Poisson arrivals at a target rate, latency from the *intended* send time.

A closed-loop generator (send, wait, send) slows down when the server does and so never
records the wait of the requests it failed to send — coordinated omission. Here each worker
process draws arrival times from a Poisson process, starts every request at its arrival time
whether or not earlier ones have finished, and measures latency from that intended time. A
server that stalls for a second therefore shows a second of latency on every request that
arrived during the stall.

Workers are separate processes (so the generator is not the bottleneck on its own GIL); each
reports HDR histograms per operation and phase, per-second timelines, error counts by kind,
and its own lateness (how far behind schedule it started requests): the generator's
headroom. Requests that would exceed a worker's in-flight cap are counted as ``dropped``
(never silently delayed, never sent).

Every request a worker puts on the wire — the warm-up's included — is also tallied by
command and outcome (``requests``), so that a server's own counters can be compared with
exactly what the audit sent (the observability section).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from engramdb.audit.targets import classify, make_target

__all__ = [
    "WORKLOADS",
    "LoadResult",
    "Phase",
    "Workload",
    "new_histogram",
    "run_load",
    "stop_processes",
]

MAX_US = 60_000_000  # an hour would be silly; a minute is the slowest latency we keep


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


@dataclass(frozen=True)
class Workload:
    """YCSB-style mix: fractions of read / update / read-modify-write; zipfian keys."""

    name: str
    read: float
    update: float
    rmw: float = 0.0
    keys: int = 10_000
    value_bytes: int = 1000
    zipf: float = 0.99


WORKLOADS = {
    "A": Workload("A (50/50 read/update)", 0.5, 0.5),
    "B": Workload("B (95/5 read/update)", 0.95, 0.05),
    "C": Workload("C (read only)", 1.0, 0.0),
    "F": Workload("F (read-modify-write)", 0.5, 0.0, 0.5),
}


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rate: float  # requests per second, all workers together


@dataclass
class LoadResult:
    """Merged results of every worker."""

    histograms: dict[tuple[str, str], HdrHistogram] = field(default_factory=dict)  # (phase, op)
    timeline: dict[int, HdrHistogram] = field(default_factory=dict)  # second -> all ops
    timeline_errors: dict[int, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # op -> operations scheduled
    # target call ("read", "write") -> outcome -> requests sent, warm-up included. Outcomes:
    # ``ok``, ``error`` (refused), ``shed`` (BUSY), ``unknown`` (timed out, connection lost,
    # or still unanswered when the worker stopped), as ``targets.classify`` names them.
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    warmup: dict[str, int] = field(default_factory=dict)  # target call -> warm-up requests
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    completed: dict[str, int] = field(default_factory=dict)  # phase -> completed ok
    dropped: int = 0
    lateness: HdrHistogram = field(default_factory=new_histogram)
    elapsed: float = 0.0
    phases: list[Phase] = field(default_factory=list)
    # With ``run_load(trace=True)``: every measured request as (intended send time, finish
    # time, op, ok), epoch seconds: what the availability section cuts into windows.
    trace: list[tuple[float, float, str, bool]] = field(default_factory=list)

    def phase_histogram(self, phase: str) -> HdrHistogram:
        merged = new_histogram()
        for (p, _), h in self.histograms.items():
            if p == phase:
                merged.add(h)
        return merged


class _ZipfKeys:
    """Zipfian key ranks (YCSB's generator, Gray et al.), hot keys scattered by hashing."""

    def __init__(self, n: int, theta: float, rng: random.Random) -> None:
        self.n, self.theta, self.rng = n, theta, rng
        zetan = sum(1.0 / (i**theta) for i in range(1, n + 1))
        self.alpha = 1.0 / (1.0 - theta)
        self.zetan = zetan
        self.eta = (1 - (2.0 / n) ** (1 - theta)) / (1 - (1 + 0.5**theta) / zetan)

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            rank = 0
        elif uz < 1.0 + 0.5**self.theta:
            rank = 1
        else:
            rank = int(self.n * (self.eta * u - self.eta + 1) ** self.alpha)
        return (rank * 2654435761) % self.n


WARM_CONNECTIONS = 16  # concurrent warm-up reads per worker before the clock starts
_COARSE = 0.0012  # seconds before a send time that the loop's timer is asked to wake us


async def _worker(
    target_spec: str,
    options: dict[str, Any],
    workload: Workload,
    phases: Sequence[Phase],
    share: float,
    start_at: float,
    seed: int,
    max_inflight: int,
    trace: bool = False,
) -> dict[str, Any]:
    target = make_target(target_spec, **options)
    await target.open()
    rng = random.Random(seed)
    keys = _ZipfKeys(workload.keys, workload.zipf, rng)
    value = os.urandom(max(1, workload.value_bytes // 2)).hex()[: workload.value_bytes]
    histograms: dict[tuple[str, str], HdrHistogram] = {}
    timeline: dict[int, HdrHistogram] = {}
    timeline_errors: dict[int, int] = {}
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    completed: dict[str, int] = {}
    lateness = new_histogram()
    dropped = 0
    inflight = 0
    tasks: set[asyncio.Task[None]] = set()
    requests: dict[str, dict[str, int]] = {}
    warmup: dict[str, int] = {}
    traced: list[tuple[float, float, str, bool]] = []

    async def send(call: str, request: Awaitable[Any]) -> None:
        # Tallied as unknown until answered: a request still in flight when the worker
        # stops may yet reach the server's counters.
        outcomes = requests.setdefault(call, {})
        outcomes["unknown"] = outcomes.get("unknown", 0) + 1
        outcome = "unknown"
        try:
            await request
            outcome = "ok"
        except Exception as e:
            outcome = classify(e)[0]
            raise
        finally:
            if outcome != "unknown":
                outcomes["unknown"] -= 1
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def read(key: str) -> Awaitable[None]:
        return send("read", target.read(key))

    def write(key: str) -> Awaitable[None]:
        return send("write", target.write(key, value))

    async def one(op: str, key: str, intended: float, phase: str) -> None:
        nonlocal inflight
        try:
            if op == "read":
                await read(key)
            elif op == "update":
                await write(key)
            else:
                await read(key)
                await write(key)
            micros = int((time.time() - intended) * 1_000_000)
            histograms.setdefault((phase, op), new_histogram()).record_value(
                max(1, min(micros, MAX_US))
            )
            second = int(intended - start_at)
            timeline.setdefault(second, new_histogram()).record_value(max(1, min(micros, MAX_US)))
            completed[phase] = completed.get(phase, 0) + 1
            if trace:
                traced.append((intended, time.time(), op, True))
        except Exception as e:
            kind, _ = classify(e)
            errors[kind] = errors.get(kind, 0) + 1
            second = int(intended - start_at)
            timeline_errors[second] = timeline_errors.get(second, 0) + 1
            if trace:
                traced.append((intended, time.time(), op, False))
        finally:
            inflight -= 1

    # Warm up before the clock starts: connections opened, code paths run, so the first
    # measured requests do not pay for a connect (at a low rate that alone is the p99).
    # These reads reach the server's counters like any other: they are tallied too.
    for _ in range(2):
        warm = min(WARM_CONNECTIONS, max_inflight)
        await asyncio.gather(*(read(f"y{i}") for i in range(warm)), return_exceptions=True)
        warmup["read"] = warmup.get("read", 0) + warm

    now = time.time()
    if start_at > now:
        await asyncio.sleep(start_at - now)
    intended = start_at
    phase_end = start_at
    for phase in phases:
        phase_end += phase.seconds
        rate = max(phase.rate * share, 1e-9)
        while True:
            intended += rng.expovariate(rate)
            if intended >= phase_end:
                intended = phase_end
                break
            delay = intended - time.time()
            if delay > _COARSE:
                await asyncio.sleep(delay - _COARSE)
            # The event loop's timers wake up to a millisecond late (epoll timeouts are
            # whole milliseconds), which at a 1 ms SLO would be most of the measured
            # latency. The last stretch: with nothing in flight, a precise blocking sleep
            # (it delays no reply); otherwise keep serving replies until it is time.
            while (left := intended - time.time()) > 0:
                if inflight:
                    await asyncio.sleep(0)
                else:
                    time.sleep(left)
            late = time.time() - intended
            lateness.record_value(max(1, min(int(late * 1_000_000), MAX_US)))
            draw = rng.random()
            op = (
                "read"
                if draw < workload.read
                else "update"
                if draw < workload.read + workload.update
                else "rmw"
            )
            counts[op] = counts.get(op, 0) + 1
            if inflight >= max_inflight:
                dropped += 1
                continue
            inflight += 1
            task = asyncio.create_task(one(op, f"y{keys.next()}", intended, phase.name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    await target.close()
    return {
        "histograms": {f"{p}\x00{o}": h.encode() for (p, o), h in histograms.items()},
        "timeline": {s: h.encode() for s, h in timeline.items()},
        "timeline_errors": timeline_errors,
        "counts": counts,
        "errors": errors,
        "completed": completed,
        "dropped": dropped,
        "lateness": lateness.encode(),
        "requests": requests,
        "warmup": warmup,
        "trace": traced,
    }


def _process_main(args: tuple[Any, ...], results: Any) -> None:
    try:
        results.put(asyncio.run(_worker(*args)))
    except BaseException as e:  # reported to the parent, which fails the run
        results.put({"error": f"{type(e).__name__}: {e}"})


def stop_processes(
    processes: Sequence[multiprocessing.process.BaseProcess], wait: float = 5.0
) -> None:
    """Give each started process ``wait`` seconds to end, then kill it; reaped either way."""
    for p in processes:
        if p.pid is None:
            continue  # never started
        p.join(wait)
        if p.is_alive():
            p.kill()
            p.join()


def run_load(
    target: str,
    workload: Workload,
    phases: Sequence[Phase],
    *,
    workers: int = 2,
    options: dict[str, Any] | None = None,
    max_inflight: int = 512,
    seed: int = 1,
    trace: bool = False,
    start_at: float | None = None,
) -> LoadResult:
    """Run ``phases`` of open-loop load with ``workers`` processes; merged results
    (``trace``: every request's times and outcome too, in ``LoadResult.trace``).
    ``start_at``: when the first phase starts (epoch seconds; default: once every process
    has had time to start)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    if start_at is None:
        start_at = time.time() + 2.0 + 0.3 * workers  # time for every process to start
    processes = [
        context.Process(
            target=_process_main,
            args=(
                (
                    target,
                    options or {},
                    workload,
                    list(phases),
                    1.0 / workers,
                    start_at,
                    seed + i,
                    max_inflight,
                    trace,
                ),
                queue,
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    total = sum(p.seconds for p in phases)
    raw: list[dict[str, Any]] = []
    try:
        for p in processes:
            p.start()
        deadline = time.time() + total + 90
        while len(raw) < workers and time.time() < deadline:
            try:
                raw.append(queue.get(timeout=1))
            except Exception:
                if all(not p.is_alive() for p in processes) and queue.empty():
                    break
    except BaseException:
        # Ctrl-C or a failure: no worker may still be writing when the audit cleans up.
        stop_processes(processes, wait=0)
        raise
    stop_processes(processes)
    failures = [r["error"] for r in raw if "error" in r]
    if failures or len(raw) < workers:
        raise RuntimeError(f"load workers failed: {failures or 'no result'}")
    result = LoadResult(phases=list(phases), elapsed=total)
    for r in raw:
        for name, encoded in r["histograms"].items():
            phase, op = name.split("\x00")
            result.histograms.setdefault((phase, op), new_histogram()).add(
                HdrHistogram.decode(encoded)
            )
        for second, encoded in r["timeline"].items():
            result.timeline.setdefault(int(second), new_histogram()).add(
                HdrHistogram.decode(encoded)
            )
        for second, n in r["timeline_errors"].items():
            result.timeline_errors[int(second)] = result.timeline_errors.get(int(second), 0) + n
        for mapping, target_map in (
            (r["counts"], result.counts),
            (r["errors"], result.errors),
            (r["completed"], result.completed),
        ):
            for k, v in mapping.items():
                target_map[k] = target_map.get(k, 0) + v
        for call, outcomes in r["requests"].items():
            merged = result.requests.setdefault(call, {})
            for outcome, n in outcomes.items():
                merged[outcome] = merged.get(outcome, 0) + n
        for call, n in r["warmup"].items():
            result.warmup[call] = result.warmup.get(call, 0) + n
        result.trace.extend((a, b, op, ok) for a, b, op, ok in r["trace"])
        result.dropped += r["dropped"]
        result.lateness.add(HdrHistogram.decode(r["lateness"]))
    return result


def percentiles(histogram: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p999/max in milliseconds (0 when empty)."""
    if histogram.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "count": 0}
    out: dict[str, float] = {
        name: histogram.get_value_at_percentile(q) / 1000
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))
    }
    out["max"] = histogram.get_max_value() / 1000
    out["count"] = histogram.get_total_count()
    return out
