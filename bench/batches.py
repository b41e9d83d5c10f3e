"""Bulk loading: put_many embedded, through the server, and Redis pipelined MSET, in one run.

    python bench/batches.py [--quick]   # 100k records (about a minute on 2 cores); 10k

``--records`` records (~40 bytes of msgpack) in batches of ``--batch``, as records/s, each side
into a fresh store: ``put_many`` embedded and through ``engramdb serve`` (both ``sync``: an fsync
per batch), redis-py ``MSET`` of the same bytes with ``appendfsync always`` and with no
persistence, and single embedded ``put`` calls over a tenth of the records. The repetitions are
interleaved (A, B, C, A, B, C...), the median reported. Target: the server reaches half the
embedded rate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial

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

Batch = list[tuple[str, dict[str, object]]]
Write = Callable[[Batch], object]


def batches_of(records: int, batch: int) -> list[Batch]:
    rows = [(f"user:{i:08d}", {"name": f"user {i}", "visits": i % 97}) for i in range(records)]
    return [rows[i : i + batch] for i in range(0, records, batch)]


@contextmanager
def embedded(one_at_a_time: bool = False) -> Iterator[Write]:
    with temp_dir("batches-embedded") as directory:
        db = engramdb.open(f"{directory}/db", durability="sync", sweep_interval=None)
        users = db.records("users")

        def each(batch: Batch) -> None:
            for key, bins in batch:
                users.put(key, bins)

        try:
            yield each if one_at_a_time else users.put_many
        finally:
            db.close()


@contextmanager
def server() -> Iterator[Write]:
    with temp_dir("batches-server") as directory, served(f"{directory}/db") as (_, db):
        yield db.records("users").put_many


@contextmanager
def redis_mset(durable: bool) -> Iterator[Write]:
    import redis

    extra = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
    with RedisServer(extra_args=extra) as server, redis.Redis.from_url(server.url) as client:
        encode = msgspec.msgpack.encode
        yield lambda batch: client.mset({key: encode(bins) for key, bins in batch})


def load(side: Callable[[], AbstractContextManager[Write]], batches: list[Batch]) -> float:
    """Seconds to write every batch into a fresh store of ``side``."""
    with side() as write:
        started = time.perf_counter()
        for batch in batches:
            write(batch)
        return time.perf_counter() - started


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
    sides: dict[str, tuple[Callable[[], AbstractContextManager[Write]], list[Batch]]] = {
        "embedded put_many": (embedded, batches),
        "server put_many": (server, batches),
        "Redis MSET (appendfsync always)": (partial(redis_mset, True), batches),
        "Redis MSET (no persistence)": (partial(redis_mset, False), batches),
        "embedded put, one at a time": (
            partial(embedded, True),
            batches_of(args.records // 10, args.batch),
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    missing: dict[str, str] = {}
    with new_progress() as progress:
        task = progress.add_task("loading", total=args.repeats * len(sides))
        for _ in range(args.repeats):
            for name, (side, data) in sides.items():
                if name not in missing:
                    try:
                        rates[name].append(sum(map(len, data)) / load(side, data))
                    except RedisUnavailable as e:
                        missing[name] = str(e)
                progress.advance(task)
                progress.refresh()
    median = {name: statistics.median(r) for name, r in rates.items() if r}
    base, ours = median["embedded put_many"], median["server put_many"]
    report = Report(
        "batches", "batches", "Bulk loading: put_many embedded, through the server, and Redis MSET",
        f"{args.records:,} records of ~40 bytes in batches of {args.batch:,}, median of "
        f"{args.repeats} interleaved runs; embedded and server at `durability=sync` (an fsync "
        "per batch).", args.quick, machine_info(["redis"]),
        raw={"args": vars(args), "rates": rates},
    )  # fmt: skip
    report.check("server put_many / embedded put_many (records/s)", "engramdb embedded",
                 f"{ours / base:.2f}x", "≥ 0.50", ours / base >= 0.5)  # fmt: skip
    if durable := median.get("Redis MSET (appendfsync always)"):
        report.check("server put_many / Redis MSET (appendfsync always)", "Redis",
                     f"{ours / durable:.2f}x")  # fmt: skip
    rows = [[name, f"{value:,.0f}", f"{value / base:.2f}x"] for name, value in median.items()]
    # Titled like the area, so the page shows the table under the section's own heading.
    report.table(report.title, ["side", "records/s (median)", "vs embedded put_many"], rows, "lrr")
    for name, why in missing.items():
        report.note(name, f"not measured: {why}")
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
