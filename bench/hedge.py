"""Hedged reads: read p99 with hedging on and off while one of two servers stalls.

    python bench/hedge.py            # full run (about a minute on 2 cores)
    python bench/hedge.py --quick    # smoke run

Two ``engramdb serve`` processes over one LMDB directory (durability none); one client
reads 1,000 records by key (``records.get``), taking turns across the two servers
(``engramdb.connect([a, b], hedge=...)``). While one server is stalled part of the time
(SIGSTOP for ``--stop-ms`` every ``--every-ms``: the process does not run at all, as in a
long GC pause, a page-fault storm or a noisy neighbour), the same reads are timed with
hedging off and on (default ``Hedge()``: a second copy after the method's p95, at most 5%
extra requests), in turns (``measure_interleaved``), and once more with both servers healthy.
The extra load is what hedging added to the reads the two servers ran (INFO commandstats),
over the hedged side's reads.

Writes bench/results/hedge.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import engramdb
from _common import (
    EngramServer,
    Meter,
    Report,
    exit_on_sigterm,
    fmt_us,
    machine_info,
    measure_interleaved,
    new_progress,
    temp_dir,
)

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


def reads_served(servers: list[EngramServer]) -> int:
    total = 0
    for server in servers:
        text = server.command_reply("INFO", "commandstats").decode()
        found = re.search(r"cmdstat_records\.get:calls=(\d+)", text)
        total += int(found.group(1)) if found else 0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reads", type=int, default=None, help="timed reads per side")
    parser.add_argument("--stop-ms", type=float, default=20.0)
    parser.add_argument("--every-ms", type=float, default=200.0)
    options = parser.parse_args()
    reads = options.reads or (2_000 if options.quick else 20_000)
    exit_on_sigterm()
    keys = [f"k{i % RECORDS}" for i in range(reads)]
    warm = keys[:200]
    with temp_dir("engramdb-bench-hedge-") as tmp:
        data = Path(tmp) / "a"
        with EngramServer(str(data), durability="none") as a:
            (Path(tmp) / "b").symlink_to(data)
            with EngramServer(str(Path(tmp) / "b"), durability="none") as b:
                urls = [a.url, b.url]
                with engramdb.connect(a.url) as db:
                    db.records("bench").put_many([(f"k{i}", {"i": i}) for i in range(RECORDS)])
                off = engramdb.connect(urls)
                on = engramdb.connect(urls, hedge=True)
                sides = {"off": off.records("bench").get, "on": on.records("bench").get}
                progress = new_progress()
                meter = Meter(progress)
                with progress:
                    healthy = measure_interleaved(
                        [(sides["off"], keys, warm), (sides["on"], keys, warm)],
                        meter=meter, description="both servers healthy",
                    )  # fmt: skip
                    before = reads_served([a, b])
                    on_before = on.stats()["hedging"]
                    with stalling(b.pid or 0, options.stop_ms / 1000, options.every_ms / 1000):
                        stalled = measure_interleaved(
                            [(sides["off"], keys, []), (sides["on"], keys, [])],
                            meter=meter, description="one server stalling",
                        )  # fmt: skip
                    served = reads_served([a, b]) - before
                hedging = on.stats()["hedging"]
                off.close()
                on.close()
    sent = hedging["hedges_sent"] - on_before["hedges_sent"]
    won = hedging["hedges_won"] - on_before["hedges_won"]
    refused = hedging["budget_refusals"] - on_before["budget_refusals"]
    extra = (served - 2 * reads) / reads  # the off side runs exactly one per read
    stall = f"{options.stop_ms:g} ms of every {options.every_ms:g} ms"
    report = Report(
        area="hedge",
        script="hedge",
        title="Hedged reads: read p99 while one of two servers stalls",
        summary=(
            f"Two servers over one LMDB directory, reads taking turns; one server stopped "
            f"(SIGSTOP) {stall}; {reads:,} reads per side, interleaved; latencies in µs."
        ),
        quick=options.quick,
        machine=machine_info(["hiredis"]),
        about=__doc__ or "",
    )
    ratio = stalled[0].p99_us / stalled[1].p99_us
    report.check(
        "read p99, one of two servers stalling: hedging off / on",
        "hedging off",
        f"{ratio:.1f}x ({fmt_us(stalled[0].p99_us)} vs {fmt_us(stalled[1].p99_us)} µs), "
        f"+{extra:.1%} requests",
    )
    rows = []
    for name, (no, yes) in (("healthy", healthy), ("stalling", stalled)):
        for side, st in (("off", no), ("on", yes)):
            rows.append([name, side, fmt_us(st.p50_us), fmt_us(st.p99_us), fmt_us(st.p999_us)])
    report.table("", ["servers", "hedging", "p50", "p99", "p999"], rows, "llrrr")
    report.note(
        "Extra load while stalling",
        f"{sent:,} hedges sent ({won:,} won, {refused:,} refused by the budget) for {reads:,} "
        f"hedged reads; the servers ran {served:,} reads for {2 * reads:,} client reads "
        f"(both sides): +{extra:.1%} on the hedged side.",
    )
    report.raw = {
        "healthy": [s.to_json() for s in healthy],
        "stalled": [s.to_json() for s in stalled],
        "hedges_sent": sent, "hedges_won": won, "budget_refusals": refused,
        "reads_served": served, "client_reads": 2 * reads,
    }  # fmt: skip
    report.save()


if __name__ == "__main__":
    main()
