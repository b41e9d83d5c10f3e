"""Embedded record operations against the raw-LMDB floor and Redis, in one run.

    python bench/records.py [--quick] [--help for every size]

engramdb ``get``, ``get_many(100)``, ``put`` (durability sync, async, none) and ``operate``
(incr + list_append with trim), each against the floor — raw ``lmdb`` with engramdb's
environment flags and the same records as plain msgpack (read txn + get + decode; a write txn
without fsync; for durable puts a 4 KiB ``pwrite`` + ``fdatasync``) — and Redis via redis-py:
GET, MGET of 100, SET, MULTI/EXEC of INCR + RPUSH + ``LTRIM -50 -1`` (list_append with
``max_len=50``), durable writes against ``appendfsync always``. ``_common.measure`` on every
side, the same seeded uniform random keys on every side. ``timing noise`` times a busy loop
as long as engramdb's get p50: the p99 the machine itself adds to any µs-scale call.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lmdb
import msgspec

import _common
import engramdb
from _common import Meter, Report, Stats, fmt_ratio, fmt_us, measure
from engramdb import ops

EVENT = "view:item-000123"  # the list_append / RPUSH payload
MAX_EVENTS = 50
TARGET_FLOOR = 3.0  # engramdb get p99 ≤ 3x raw LMDB floor get p99
TARGET_REDIS = 10.0  # Redis GET p99 ≥ 10x engramdb get p99

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


@dataclass(frozen=True)
class Sizes:
    records: int = 100_000
    gets: int = 200_000
    get_many: int = 5_000
    batch: int = 100
    puts: int = 50_000
    sync_puts: int = 2_000
    operates: int = 50_000
    warmup: float = 0.1  # warmup calls, as a fraction of measured calls (at least 50)
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(records=20_000, gets=100_000, get_many=2_000, puts=10_000, sync_puts=500,
              operates=10_000)  # fmt: skip

# row id: (operation, system, what one call does); the table lists them in this order.
ROWS: dict[str, tuple[str, str, str]] = {
    "engramdb.get": ("get", "engramdb", "s.get(key)"),
    "floor.get": ("get", "LMDB floor", "begin + txn.get + msgpack decode"),
    "redis.get": ("get", "Redis", "GET + msgpack decode"),
    "noise.get": ("get", "timing noise", "busy loop as long as engramdb get p50"),
    "engramdb.get_many": ("get_many(100)", "engramdb", "s.get_many(100 keys)"),
    "floor.get_many": ("get_many(100)", "LMDB floor", "begin + 100 x (get + decode)"),
    "redis.get_many": ("get_many(100)", "Redis", "MGET 100 keys + decode"),
    "engramdb.put_sync": ("put, sync", "engramdb", "s.put(key, bins), fsync per commit"),
    "disk.fdatasync": ("put, sync", "disk floor", "4 KiB pwrite + fdatasync"),
    "redis.put_sync": ("put, sync", "Redis", "SET, appendfsync always"),
    "engramdb.operate_sync": ("operate, sync", "engramdb", "incr + list_append(max_len=50)"),
    "redis.operate_sync": ("operate, sync", "Redis", "MULTI … EXEC, appendfsync always"),
    "engramdb.put_async": ("put, async", "engramdb", "s.put(key, bins)"),
    "floor.put": ("put, async", "LMDB floor", "write txn + put, no fsync"),
    "redis.put": ("put, async", "Redis", "encode + SET (no fsync)"),
    "engramdb.operate_async": ("operate, async", "engramdb", "incr + list_append(max_len=50)"),
    "floor.operate": ("operate, async", "LMDB floor", "write txn: get, decode, edit, put"),
    "redis.operate": ("operate, async", "Redis", "MULTI INCR RPUSH LTRIM EXEC"),
    "engramdb.put_none": ("put, none", "engramdb", "s.put(key, bins)"),
    "engramdb.operate_none": ("operate, none", "engramdb", "incr + list_append(max_len=50)"),
}
# (engramdb row, peer row) pairs compared in the ratio tables.
VERSUS_REDIS = [("engramdb.get", "redis.get"), ("engramdb.get_many", "redis.get_many"),
                ("engramdb.put_async", "redis.put"), ("engramdb.put_none", "redis.put"),
                ("engramdb.operate_async", "redis.operate"),
                ("engramdb.operate_none", "redis.operate"),
                ("engramdb.put_sync", "redis.put_sync"),
                ("engramdb.operate_sync", "redis.operate_sync")]  # fmt: skip
VERSUS_FLOOR = [("engramdb.get", "floor.get"), ("engramdb.get_many", "floor.get_many"),
                ("engramdb.put_async", "floor.put"), ("engramdb.operate_async", "floor.operate"),
                ("engramdb.put_sync", "disk.fdatasync")]  # fmt: skip

_TAGS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")
_BIO = string.ascii_lowercase + " "


def make_bins(rng: random.Random, i: int) -> dict[str, Any]:
    """Five small bins, ~145 bytes as msgpack."""
    return {"name": f"user-{i:06d}", "score": rng.randrange(1_000_000), "ratio": rng.random(),
            "tags": rng.sample(_TAGS, 3),
            "bio": "".join(rng.choice(_BIO) for _ in range(72))}  # fmt: skip


# a workload: (warmup indices, measured indices), the same on every side
Workload = tuple[list[int], list[int]]


@dataclass
class Data:
    keys: list[str]
    bins: list[dict[str, Any]]
    batch_keys: list[int]
    new_bins: list[dict[str, Any]]  # what puts write (cycled)
    gets: Workload
    batches: Workload  # start index of each batch in `batch_keys`
    puts: Workload
    sync_puts: Workload
    operates: Workload


def make_data(sizes: Sizes) -> Data:
    rng = random.Random(sizes.seed)
    n = sizes.records

    def warm(calls: int) -> int:
        return max(50, int(calls * sizes.warmup))

    def workload(calls: int) -> Workload:
        warmup = [rng.randrange(n) for _ in range(warm(calls))]
        return warmup, [rng.randrange(n) for _ in range(calls)]

    bins = [make_bins(rng, i) for i in range(n)]  # the draws' order keeps every seed's data
    many = sizes.get_many + warm(sizes.get_many)
    batch_keys = [rng.randrange(n) for _ in range(many * sizes.batch)]
    starts = [i * sizes.batch for i in range(many)]
    new_bins = [make_bins(rng, i) for i in range(1024)]
    cut = warm(sizes.get_many)
    return Data([f"user:{i:08d}" for i in range(n)], bins, batch_keys, new_bins,
                workload(sizes.gets), (starts[:cut], starts[cut:]), workload(sizes.puts),
                workload(sizes.sync_puts), workload(sizes.operates))  # fmt: skip


def run(sizes: Sizes, d: Data, root: str, r: Any) -> dict[str, Stats]:
    """Load engramdb, the floor and Redis (``r``, or None), then measure every row."""
    results: dict[str, Stats] = {}
    progress = _common.new_progress()
    keys, bkeys = d.keys, [k.encode() for k in d.keys]

    def bench(row: str, fn: Callable[[Any], object], wl: Workload, conv: Any) -> None:
        op, system, _ = ROWS[row]
        results[row] = measure(fn, [conv(i) for i in wl[1]], warmup=[conv(i) for i in wl[0]],
                               meter=Meter(progress), description=f"{op} · {system}")  # fmt: skip

    def open_db(durability: Any) -> engramdb.Database:
        return engramdb.open(f"{root}/engramdb", durability=durability, sweep_interval=None)

    def put_args(i: int) -> tuple[Any, dict[str, Any]]:
        return keys[i], d.new_bins[i % len(d.new_bins)]

    def key_batch(start: int, names: Sequence[Any] = keys) -> list[Any]:
        return [names[i] for i in d.batch_keys[start : start + sizes.batch]]

    def redis_operate(pair: tuple[str, str]) -> Any:
        pipe = r.pipeline(transaction=True)
        pipe.incr(pair[0])
        pipe.rpush(pair[1], EVENT)
        pipe.ltrim(pair[1], -MAX_EVENTS, -1)
        return pipe.execute()

    def redis_pair(i: int) -> tuple[str, str]:
        return f"{keys[i]}:n", f"{keys[i]}:events"

    def redis_set(item: tuple[str, dict[str, Any]]) -> Any:
        return r.set(item[0], encode(item[1]))

    # Same environment flags as engramdb's LMDB engine, minus sync (a floor).
    env = lmdb.open(f"{root}/floor", map_size=8 << 30, max_dbs=0, max_spare_txns=64,
                    readahead=False, sync=False, metasync=False)  # fmt: skip

    def floor_get(key: bytes) -> Any:
        txn = env.begin()
        try:
            return decode(txn.get(key))
        finally:
            txn.abort()

    def floor_get_many(batch: list[bytes]) -> Any:
        txn = env.begin()
        try:
            return [decode(txn.get(k)) for k in batch]
        finally:
            txn.abort()

    def floor_put(item: tuple[bytes, dict[str, Any]]) -> None:
        with env.begin(write=True) as txn:
            txn.put(item[0], encode(item[1]))

    def floor_operate(key: bytes) -> list[Any]:
        # What operate does minus all engramdb adds (header, generation, change log,
        # validation): read-modify-write of one msgpack map.
        with env.begin(write=True) as txn:
            bins = decode(txn.get(key))
            n = bins["n"] = bins.get("n", 0) + 1
            events = bins.setdefault("events", [])
            events.append(EVENT)
            del events[:-MAX_EVENTS]
            txn.put(key, encode(bins))
            return [n, len(events)]

    with progress, contextlib.closing(env):
        with open_db("none") as db:
            s = db.records("bench")
            for key, bins in zip(keys, d.bins):
                s.put(key, bins)
        with env.begin(write=True) as txn:
            for bkey, bins in zip(bkeys, d.bins):
                txn.put(bkey, encode(bins))
        for lo in range(0, len(keys) if r is not None else 0, 1000):
            r.mset({k: encode(b) for k, b in zip(keys[lo : lo + 1000], d.bins[lo : lo + 1000])})

        with open_db("sync") as db:
            s = db.records("bench")
            for i in (0, len(keys) // 2, len(keys) - 1):  # every side holds the same records
                record = s.get(keys[i])
                assert record is not None, "engramdb lost a record"
                assert record.bins == d.bins[i], "engramdb changed a record"
                with env.begin() as txn:
                    assert decode(txn.get(bkeys[i])) == d.bins[i], "floor lost a record"
                assert r is None or decode(r.get(keys[i])) == d.bins[i], "Redis lost a record"

            bench("engramdb.get", s.get, d.gets, keys.__getitem__)
            bench("floor.get", floor_get, d.gets, bkeys.__getitem__)
            if r is not None:
                bench("redis.get", lambda key: decode(r.get(key)), d.gets, keys.__getitem__)
            n = _common.calibrate_busy_loop(results["engramdb.get"].p50_us)
            bench("noise.get", _common.busy_loop, d.gets, lambda _: n)
            bench("engramdb.get_many", s.get_many, d.batches, key_batch)
            bench("floor.get_many", floor_get_many, d.batches, lambda b: key_batch(b, bkeys))
            if r is not None:
                bench(
                    "redis.get_many", lambda b: [decode(v) for v in r.mget(b)], d.batches, key_batch
                )

            bench("engramdb.put_sync", lambda item: s.put(*item), d.sync_puts, put_args)
            bench("engramdb.operate_sync", operate(s), d.sync_puts, keys.__getitem__)
            page = b"\x5a" * 4096
            fd = os.open(f"{root}/fdatasync.bin", os.O_RDWR | os.O_CREAT, 0o600)
            try:

                def fdatasync(i: int) -> None:
                    os.pwrite(fd, page, (i % 256) * 4096)
                    os.fdatasync(fd)

                bench("disk.fdatasync", fdatasync, d.sync_puts, int)
            finally:
                os.close(fd)

        for durability in ("async", "none"):
            with open_db(durability) as db:
                s = db.records("bench")
                bench(f"engramdb.put_{durability}", lambda x, s=s: s.put(*x), d.puts, put_args)
                if durability == "async":
                    bench("floor.put", floor_put, d.puts, lambda i: (bkeys[i], put_args(i)[1]))
                    if r is not None:
                        bench("redis.put", redis_set, d.puts, put_args)
                bench(f"engramdb.operate_{durability}", operate(s), d.operates, keys.__getitem__)
                if durability == "async":
                    bench("floor.operate", floor_operate, d.operates, bkeys.__getitem__)
                    if r is not None:
                        bench("redis.operate", redis_operate, d.operates, redis_pair)

        if r is not None:  # Redis's durable writes: an fsync per write
            r.config_set("appendonly", "yes")  # starts an AOF rewrite in the background
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                info = r.info("persistence")
                if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
                    break
                time.sleep(0.05)
            r.config_set("appendfsync", "always")
            bench("redis.put_sync", redis_set, d.sync_puts, put_args)
            bench("redis.operate_sync", redis_operate, d.sync_puts, redis_pair)
    return results


def operate(s: engramdb.RecordSet) -> Callable[[str], list[Any]]:
    incr, list_append = ops.incr, ops.list_append

    def call(key: str) -> list[Any]:
        return s.operate(key, [incr("n"), list_append("events", EVENT, max_len=MAX_EVENTS)])

    return call


def report(sizes: Sizes, quick: bool, data: Data, results: dict[str, Stats],
           machine: dict[str, str], redis_note: str) -> Report:  # fmt: skip
    value_bytes = sum(len(encode(b)) for b in data.bins[:1000]) / min(sizes.records, 1000)
    rep = Report(
        "records",
        "records",
        "Records: embedded get / get_many / put / operate",
        f"{sizes.records:,} records of 5 bins (~{value_bytes:.0f} B as msgpack), uniform "
        "random access, against raw LMDB and Redis; every call timed on its own after warmup; "
        f"latencies in µs; ops/s = calls / wall time (a get_many call is {sizes.batch} keys).",
        quick,
        machine,
        about=redis_note,
        raw={"sizes": asdict(sizes), "results": {k: s.to_json() for k, s in results.items()}},
    )  # fmt: skip
    for name, peer, num, den, target, ok in (
        ("get p99: engramdb / raw LMDB floor", "LMDB floor", "engramdb.get", "floor.get",
         f"≤ {TARGET_FLOOR:g}x", lambda x: x <= TARGET_FLOOR),
        ("get p99: Redis / engramdb", "Redis", "redis.get", "engramdb.get",
         f"≥ {TARGET_REDIS:g}x", lambda x: x >= TARGET_REDIS),
    ):  # fmt: skip
        if num in results and den in results:
            a, b = results[num].p99_us, results[den].p99_us
            rep.check(name, peer, f"{fmt_ratio(a / b)} ({fmt_us(a)} µs vs {fmt_us(b)} µs)",
                      target, ok(a / b))  # fmt: skip
    rep.table(
        "Latency and throughput",
        ["operation", "system", "one call", "calls", "p50", "p99", "p999", "ops/s"],
        [[op, system, f"`{call}`", f"{results[k].n:,}", *_common.stats_cells(results[k])]
         for k, (op, system, call) in ROWS.items() if k in results],
        "lllrrrrr",
    )  # fmt: skip
    for title, headers, pairs, cells in (
        ("engramdb against Redis (above 1 favours engramdb)",
         ["engramdb", "against", "p50 ratio", "p99 ratio", "ops/s ratio"], VERSUS_REDIS,
         lambda a, b: [b.p50_us / a.p50_us, b.p99_us / a.p99_us, a.ops_s / b.ops_s]),
        ("engramdb against the floor (times the floor's latency)",
         ["engramdb", "floor", "p50 x floor", "p99 x floor"], VERSUS_FLOOR,
         lambda a, b: [a.p50_us / b.p50_us, a.p99_us / b.p99_us]),
    ):  # fmt: skip
        rows = [[ROWS[a][0], ROWS[b][1], *map(fmt_ratio, cells(results[a], results[b]))]
                for a, b in pairs if a in results and b in results]  # fmt: skip
        rep.table(title, headers, rows, "ll" + "r" * (len(headers) - 2), publish=False)
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~20 s smoke run)")
    _common.add_sizes(parser, FULL, QUICK)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    _common.add_redis_args(parser)
    args = parser.parse_args(argv)
    sizes = _common.sizes_from(args, FULL, QUICK)
    _common.exit_on_sigterm()
    print("building dataset…")
    data = make_data(sizes)
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_dir("engramdb-bench-records-", args.data_dir))
        peer = _common.redis_peer(stack, args=args)
        extra = {"LMDB (C library)": ".".join(map(str, lmdb.version())), **peer.machine}
        packages = ("engramdb", "lmdb", "msgspec", "redis", "hiredis", "numpy")
        machine = _common.machine_info(packages, data_dir=root, extra=extra)
        results = run(sizes, data, root, peer.clients[0] if peer.clients else None)
    report(sizes, args.quick, data, results, machine, peer.note).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
