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
Writes bench/results/batches.json (``_common.Report``).
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

import engramdb
from _common import (
    RedisServer,
    RedisUnavailable,
    Report,
    machine_info,
    new_progress,
    served,
    temp_dir,
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
    with temp_dir("batches-server") as directory, served(f"{directory}/db") as (_, db):
        users = db.records("users")
        started = time.perf_counter()
        for batch in batches:
            users.put_many(batch)
        return time.perf_counter() - started


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
    ratio = median["server put_many"] / base
    report = Report(
        "batches",
        "batches",
        "Bulk loading: put_many embedded, through the server, and Redis MSET",
        f"{args.records:,} records of ~40 bytes in batches of {args.batch:,}, median of "
        f"{args.repeats} interleaved runs; embedded and server at `durability=sync` (an fsync "
        "per batch).",
        args.quick,
        machine_info(["redis"]),
        raw={"args": vars(args), "rates": rates},
    )
    report.check(
        "server put_many / embedded put_many (records/s)",
        "engramdb embedded",
        f"{ratio:.2f}x",
        "≥ 0.50",
        ratio >= 0.5,
    )
    if durable := median.get("Redis MSET (appendfsync always)"):
        report.check(
            "server put_many / Redis MSET (appendfsync always)",
            "Redis",
            f"{median['server put_many'] / durable:.2f}x",
        )
    rows = [[name, f"{value:,.0f}", f"{value / base:.2f}x"] for name, value in median.items()]
    report.table("", ["side", "records/s (median)", "vs embedded put_many"], rows, "lrr")
    for name, why in missing.items():
        report.note(name, f"not measured: {why}")
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
