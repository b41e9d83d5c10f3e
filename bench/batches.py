"""Bulk loading: put_many embedded, through the server, and Redis pipelined MSET, in one run.

    python bench/batches.py            # 100k records (about a minute on 2 cores)
    python bench/batches.py --quick    # 10k records, a smoke run

What is measured: loading ``--records`` small records (a name and a counter, ~40 bytes of
msgpack) in batches of ``--batch`` (1,000), as records per second:

- ``put_many`` on an embedded database (LMDB, ``durability="sync"``: one fsync per batch);
- ``put_many`` through ``engramdb serve --durability sync`` with the sync client (one request
  and one group-commit fsync per batch);
- Redis with redis-py: one ``MSET`` of the batch per round trip, the same msgpack bytes as
  values, with ``appendfsync always`` (an fsync per write: the durable peer) and with no
  persistence at all (the fast, not durable peer);
- for scale, single ``put`` calls (embedded, sync) over a tenth of the records.

Each side loads into a fresh store; the three repetitions of every side are interleaved
(side A, B, C, A, B, C...) so a noisy moment hurts all alike, and the median is reported.
Target (the "one API" issue): the server path reaches at least half the embedded rate.
Writes bench/results/batches.json and the ``batches`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import msgspec
from rich.console import Console
from rich.table import Table

import engramdb
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    EngramServer,
    RedisServer,
    RedisUnavailable,
    machine_info,
    machine_markdown,
    markdown_table,
    new_progress,
    replace_section,
    temp_dir,
    write_json,
)

Load = Callable[[list[list[tuple[str, dict[str, object]]]]], None]


def batches_of(records: int, batch: int) -> list[list[tuple[str, dict[str, object]]]]:
    rows = [(f"user:{i:08d}", {"name": f"user {i}", "visits": i % 97}) for i in range(records)]
    return [rows[i : i + batch] for i in range(0, records, batch)]


@contextmanager
def embedded(durability: str = "sync") -> Iterator[engramdb.Database]:
    with temp_dir("batches-embedded") as directory:
        db = engramdb.open(
            os.path.join(directory, "db"), durability=durability, sweep_interval=None
        )
        try:
            yield db
        finally:
            db.close()


def load_embedded(batches: list[list[tuple[str, dict[str, object]]]]) -> float:
    with embedded() as db:
        users = db.records("users")
        started = time.perf_counter()
        for batch in batches:
            users.put_many(batch)
        return time.perf_counter() - started


def load_embedded_single(batches: list[list[tuple[str, dict[str, object]]]]) -> float:
    with embedded() as db:
        users = db.records("users")
        started = time.perf_counter()
        for batch in batches:
            for key, bins in batch:
                users.put(key, bins)
        return time.perf_counter() - started


def load_server(batches: list[list[tuple[str, dict[str, object]]]]) -> float:
    with (
        temp_dir("batches-server") as directory,
        EngramServer(os.path.join(directory, "db"), durability="sync") as server,
    ):
        db = engramdb.connect(server.url)
        try:
            users = db.records("users")
            started = time.perf_counter()
            for batch in batches:
                users.put_many(batch)
            return time.perf_counter() - started
        finally:
            db.close()


def load_redis(durable: bool) -> Callable[[list[list[tuple[str, dict[str, object]]]]], float]:
    def load(batches: list[list[tuple[str, dict[str, object]]]]) -> float:
        import redis

        extra = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
        with RedisServer(extra_args=extra) as server:
            client = redis.Redis.from_url(server.url)
            try:
                encode = msgspec.msgpack.encode
                started = time.perf_counter()
                for batch in batches:
                    client.mset({key: encode(bins) for key, bins in batch})
                return time.perf_counter() - started
            finally:
                client.close()

    return load


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k records, one repetition")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.repeats = 10_000, 1
    batches = batches_of(args.records, args.batch)
    singles = batches_of(args.records // 10, args.batch)
    sides: dict[str, tuple[Load, list[list[tuple[str, dict[str, object]]]]]] = {
        "embedded put_many": (load_embedded, batches),
        "server put_many": (load_server, batches),
        "Redis MSET (appendfsync always)": (load_redis(True), batches),
        "Redis MSET (no persistence)": (load_redis(False), batches),
        "embedded put, one at a time": (load_embedded_single, singles),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    missing: dict[str, str] = {}
    with new_progress() as progress:
        task = progress.add_task("loading", total=args.repeats * len(sides))
        for _ in range(args.repeats):
            for name, (load, data) in sides.items():
                if name in missing:
                    progress.advance(task)
                    progress.refresh()
                    continue
                try:
                    seconds = load(data)
                except RedisUnavailable as e:
                    missing[name] = str(e)
                else:
                    rates[name].append(sum(len(b) for b in data) / seconds)
                progress.advance(task)
                progress.refresh()
    median = {name: statistics.median(r) for name, r in rates.items() if r}
    base = median["embedded put_many"]
    server = median["server put_many"]
    ratio = server / base
    console = Console()
    table = Table(title=f"bulk load of {args.records:,} records, batches of {args.batch:,}")
    for column in ("side", "records/s (median)", "vs embedded put_many"):
        table.add_column(column)
    for name, value in median.items():
        table.add_row(name, f"{value:,.0f}", f"{value / base:.2f}x")
    console.print(table)
    verdict = "PASS" if ratio >= 0.5 else "FAIL"
    console.print(f"server put_many / embedded put_many = {ratio:.2f} (target >= 0.50): {verdict}")
    for name, why in missing.items():
        console.print(f"[yellow]{name}: not measured ({why})")
    info = machine_info(["redis"])
    write_json(
        RESULTS_DIR / "batches.json",
        {"args": vars(args), "rates": rates, "median": median, "machine": info},
    )
    if args.no_write or args.quick:
        return 0
    rows = [[name, f"{value:,.0f}", f"{value / base:.2f}x"] for name, value in median.items()]
    redis_ratio = median.get("Redis MSET (appendfsync always)")
    body = "\n\n".join(
        [
            "## Bulk loading: put_many embedded, through the server, and Redis MSET",
            f"`python bench/batches.py` ({args.records:,} records of ~40 bytes, batches of "
            f"{args.batch:,}, median of {args.repeats} interleaved runs; written by "
            "`bench/batches.py`).",
            f"**Server put_many reaches {ratio:.2f}x the embedded rate** (target >= 0.50: "
            f"{verdict})"
            + (
                f"; against Redis' durable MSET (`appendfsync always`) the server path is "
                f"{server / redis_ratio:.2f}x."
                if redis_ratio
                else "."
            ),
            markdown_table(["side", "records/s (median)", "vs embedded put_many"], rows, "lrr"),
            "Embedded and server run `durability=sync` (an fsync per batch). Single puts are "
            "shown for scale: batching is the way to load in bulk.",
            "### Machine\n\n" + machine_markdown(info),
        ]
    )
    replace_section(REPO_ROOT / "BENCHMARKS.md", "batches", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
