"""Hedged reads: read and agent-step p99 with hedging on and off while one of two servers stalls.

    python bench/hedge.py [--quick]    # about a minute on 2 cores; a smoke run

Two ``engramdb serve`` over one LMDB directory (durability none); one client reads 1,000
records by key across both (``engramdb.connect([a, b], hedge=...)``). While one server is
stopped (SIGSTOP) ``--stop-ms`` of every ``--every-ms`` (a long GC pause, a page-fault storm, a
noisy neighbour), the same reads are timed with hedging off and on (``Hedge()``: a second copy
after the method's p95, at most 5% extra requests), the sides taking turns by slices; and once
with both servers healthy. Then the same for an agent step (a quarter as many, at a fifth of
the rate): one ``db.context`` call reading a session with its last 20 events, a record by key
and a 10-hit vector search (5,000 x 64).
Calls are an open loop at ``--rate``/s, each timed from when it was due: a closed loop would
let a stalled call hold back the ones behind it and hide them from the percentiles
(coordinated omission), the very tail hedging is for. The extra load is what hedging added to
the calls the servers ran (INFO commandstats), over the hedged calls.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import engramdb
from _common import EngramServer, Report, Stats, exit_on_sigterm, fmt_us, machine_info, temp_dir
from engramdb import SearchQuery, SessionRead

RECORDS = 1_000


@contextlib.contextmanager
def stalling(pid: int, stop_s: float, every_s: float) -> Iterator[None]:
    """``pid`` stopped for ``stop_s`` seconds of every ``every_s`` while the block runs."""
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            try:
                done.wait(stop_s)
            finally:
                os.kill(pid, signal.SIGCONT)
            done.wait(every_s - stop_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def open_loop(
    sides: list[Callable[[str], object]], keys: list[str], rate: float, rounds: int = 20
) -> list[Stats]:
    """Each side calls ``fn(key)`` at ``rate`` calls/s, the sides taking turns by slices;
    a call's latency runs from when it was due, not when it started, so a stalled read
    also counts against the reads queued behind it (no coordinated omission)."""
    interval = 1e9 / rate
    samples = [np.empty(len(keys), dtype=np.int64) for _ in sides]
    walls = [0] * len(sides)
    clock = time.perf_counter_ns
    gc.collect()
    gc.freeze()
    try:
        for r in range(rounds):
            lo, hi = len(keys) * r // rounds, len(keys) * (r + 1) // rounds
            for k, fn in enumerate(sides):
                start = clock()
                for i in range(lo, hi):
                    due = start + int((i - lo) * interval)
                    ahead = due - clock()
                    if ahead > 300_000:  # sleep most of the gap, spin the rest (wake-up lag)
                        time.sleep((ahead - 300_000) / 1e9)
                    while clock() < due:
                        pass
                    fn(keys[i])
                    samples[k][i] = clock() - due
                walls[k] += clock() - start
    finally:
        gc.unfreeze()
    return [Stats.from_samples(a, w) for a, w in zip(samples, walls)]


def served(servers: list[EngramServer], method: str) -> int:
    """How many ``method`` calls the servers ran (INFO commandstats)."""
    total = 0
    for server in servers:
        text = server.command_reply("INFO", "commandstats").decode()
        found = re.search(rf"cmdstat_{re.escape(method)}:calls=(\d+)", text)
        total += int(found.group(1)) if found else 0
    return total


def fill(db: engramdb.Client) -> Callable[[engramdb.Client], Callable[[str], object]]:
    """Sessions, records and a collection for the agent step; the step, given a client."""
    rng = np.random.default_rng(1)
    db.records("bench").put_many([(f"k{i}", {"i": i}) for i in range(RECORDS)])
    for i in range(100):
        db.sessions.create(f"s{i}", {"turn": i})
        for j in range(20):
            db.sessions.append(f"s{i}", {"j": j})
    vectors = rng.standard_normal((5_000, 64)).astype(np.float32)
    db.vectors.create_collection("docs", 64).upsert(list(range(5_000)), vectors)
    queries = rng.standard_normal((RECORDS, 64)).astype(np.float32)

    def step_of(client: engramdb.Client) -> Callable[[str], object]:
        def step(key: str) -> object:
            i = int(key[1:])
            return client.context(
                records={"bench": [key]},
                session=SessionRead(f"s{i % 100}", last_events=20),
                search=SearchQuery("docs", vector=queries[i], k=10),
            )

        return step

    return step_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reads", type=int, default=None, help="timed reads per side")
    parser.add_argument("--stop-ms", type=float, default=20.0)
    parser.add_argument("--every-ms", type=float, default=200.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="reads/s, open loop")
    options = parser.parse_args()
    reads = options.reads or (2_000 if options.quick else 20_000)
    exit_on_sigterm()
    keys = [f"k{i % RECORDS}" for i in range(reads)]
    with temp_dir("engramdb-bench-hedge-") as tmp:
        (Path(tmp) / "b").symlink_to(Path(tmp) / "a")  # b serves a's LMDB directory
        with EngramServer(f"{tmp}/a", durability="none") as a, EngramServer(
            f"{tmp}/b", durability="none"
        ) as b, engramdb.connect([a.url, b.url]) as off, engramdb.connect(
            [a.url, b.url], hedge=True
        ) as on:  # fmt: skip
            with engramdb.connect(a.url) as db:
                step_of = fill(db)
            runs = {}
            # A step costs several reads' work: a fifth of the rate keeps the client and both
            # servers (2 cores) from saturating, which would time queueing, not hedging.
            for what, method, sides, calls, rate in (
                ("read", "records.get", [off.records("bench").get, on.records("bench").get],
                 keys, options.rate),
                ("agent step", "db.context", [step_of(off), step_of(on)], keys[: reads // 4],
                 options.rate / 5),
            ):  # fmt: skip
                for key in keys[:200]:  # warmup
                    sides[0](key)
                    sides[1](key)
                healthy = open_loop(sides, calls, rate)
                before, on_before = served([a, b], method), on.stats()["hedging"]
                with stalling(b.pid or 0, options.stop_ms / 1000, options.every_ms / 1000):
                    stalled = open_loop(sides, calls, rate)
                after = on.stats()["hedging"]
                counts = {k: after[k] - on_before[k] for k in ("hedges_sent", "hedges_won",
                                                                "budget_refusals")}  # fmt: skip
                runs[what] = healthy, stalled, served([a, b], method) - before, counts, len(calls)
    report = Report("hedge", "hedge", "Hedged reads", "", options.quick, machine_info(),
                    about=(__doc__ or "").split("\n\n", 2)[2])  # fmt: skip
    rows, report.raw = [], {}
    stall = f"1 of 2 servers stopped {options.stop_ms:g} ms per {options.every_ms:g}"
    for what, (healthy, stalled, ran, counts, n) in runs.items():
        extra = (ran - 2 * n) / n  # the off side runs exactly one per call
        off_p99, on_p99 = stalled[0].p99_us, stalled[1].p99_us
        report.check(
            f"{what} p99, hedging off / on; {stall}", "—",
            f"{off_p99 / on_p99:.1f}x ({off_p99 / 1000:.1f} vs {on_p99 / 1000:.1f} ms), "
            f"+{extra:.1%} requests",
        )  # fmt: skip
        rows += [[what, name, side, fmt_us(st.p50_us), fmt_us(st.p99_us), fmt_us(st.p999_us)]
                 for name, pair in (("healthy", healthy), ("stalling", stalled))
                 for side, st in zip(("off", "on"), pair)]  # fmt: skip
        report.note(
            f"Extra load while stalling: {what}",
            f"{counts['hedges_sent']:,} hedges sent ({counts['hedges_won']:,} won, "
            f"{counts['budget_refusals']:,} refused by the budget) for {n:,} hedged calls; "
            f"the servers ran {ran:,} for {2 * n:,} client calls (both sides): "
            f"+{extra:.1%} on the hedged side.",
        )
        report.raw[what] = {
            "healthy": [s.to_json() for s in healthy], "stalled": [s.to_json() for s in stalled],
            **counts, "served": ran, "client_calls": 2 * n,
        }  # fmt: skip
    report.table("Open loop, latencies in µs", ["call", "servers", "hedging", "p50", "p99",
                 "p999"], rows, "lllrrr", publish=False)  # fmt: skip
    report.save()


if __name__ == "__main__":
    main()
