"""Embedded record operations against the raw-LMDB floor and Redis, in one run.

    python bench/records.py            # full run (about a minute on 2 cores)
    python bench/records.py --quick    # ~20 s smoke run with small sizes
    python bench/records.py --help     # every size is configurable

Measures engramdb ``get``, ``get_many(100)``, ``put`` (durability sync, async and none) and
``operate`` (incr + list_append with trim) for latency p50/p99/p999 and ops/s, and in the same
run the same operations on:

- the floor: raw ``lmdb`` on its own directory holding the same records as plain msgpack,
  one read transaction + ``txn.get`` + ``msgspec.msgpack`` decode per call (same keys, already
  encoded to bytes; environment flags as engramdb's engine uses). For writes the floor is a
  raw LMDB write transaction with no fsync, and for ``put`` with fsync a bare 4 KiB
  ``pwrite`` + ``fdatasync`` on the same filesystem (what one durable commit cannot beat).
- Redis, the peer users would pick: a private Debian ``redis-server`` on 127.0.0.1 (TCP) with
  ``--save "" --appendonly no``, driven by redis-py with the hiredis parser. Values are the
  same msgpack bytes, decoded (or encoded) client-side, so every side returns (or takes)
  the same Python dict. ``get`` ↔ GET, ``get_many(100)`` ↔ MGET of 100 keys, ``put`` ↔ SET,
  ``operate`` ↔ a MULTI/EXEC pipeline of INCR + RPUSH + LTRIM on two keys (``k:n`` and
  ``k:events``: RPUSH then ``LTRIM -50 -1`` is exactly list_append with ``max_len=50``).
  Redis in that configuration never fsyncs on a write, so SET is compared with ``put`` at
  durability async/none; ``put``/``operate`` at durability sync are compared with SET and
  the MULTI/EXEC after ``CONFIG SET appendonly yes`` + ``appendfsync always`` (an fsync per
  write) instead.

Method (``_common.measure``, the same loop for every side): each call is timed on its own
with ``time.perf_counter_ns`` around the call; warmup calls run first and are discarded; keys
are drawn uniformly at random with a fixed seed and every side gets the same key sequence.
ops/s is calls over the wall time of the measured loop. The progress bar never redraws while
calls are being timed (no refresh thread; redraws happen between batches, outside timings).

A ``timing noise`` row times a pure-Python busy loop as long as engramdb's get p50 through the
same harness: its p99/p999 is what the machine itself (interrupts, hypervisor, neighbours)
adds to any microsecond-scale call, the part of a µs-scale p99 no store can remove.

GC: left on for every side. Before each measured loop ``gc.collect()`` + ``gc.freeze()`` moves
everything alive (the dataset, key lists, open clients) out of the collector's reach, so
collections only walk objects the measured calls create; all sides are treated alike.

The engramdb database is opened with ``sweep_interval=None`` (no expiry sweeper thread; no
record here has a TTL), ``durability="sync"`` for reads and sync writes, then reopened with
``async`` and ``none``. With ``async`` engramdb's own flusher thread runs, as it would in use.

Writes bench/results/records.json (``_common.Report``).
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
from rich.console import Console

import engramdb
from _common import (
    Meter,
    Report,
    Stats,
    add_redis_args,
    add_sizes,
    busy_loop,
    calibrate_busy_loop,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    new_progress,
    redis_peer,
    sizes_from,
    stats_cells,
    temp_dir,
)
from engramdb import ops

SECTION = "records"
SET_NAME = "bench"
EVENT = "view:item-000123"  # the list_append / RPUSH payload
MAX_EVENTS = 50
TARGET_FLOOR = 3.0  # engramdb get p99 ≤ 3x raw LMDB floor get p99
TARGET_REDIS = 10.0  # Redis GET p99 ≥ 10x engramdb get p99

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


# configuration -----------------------------------------------------------------------------


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
QUICK = Sizes(
    records=20_000,
    gets=100_000,
    get_many=2_000,
    puts=10_000,
    sync_puts=500,
    operates=10_000,
)


def warmup_count(sizes: Sizes, n: int) -> int:
    return max(50, int(n * sizes.warmup))


# rows of the report: policy as data --------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    op: str  # the engramdb operation (and durability) the row belongs to
    system: str  # engramdb / LMDB floor / disk floor / Redis
    call: str  # what one call does


ROWS: tuple[Row, ...] = (
    Row("engramdb.get", "get", "engramdb", "s.get(key)"),
    Row("floor.get", "get", "LMDB floor", "begin + txn.get + msgpack decode"),
    Row("redis.get", "get", "Redis", "GET + msgpack decode"),
    Row("noise.get", "get", "timing noise", "busy loop as long as engramdb get p50"),
    Row("engramdb.get_many", "get_many(100)", "engramdb", "s.get_many(100 keys)"),
    Row("floor.get_many", "get_many(100)", "LMDB floor", "begin + 100 x (get + decode)"),
    Row("redis.get_many", "get_many(100)", "Redis", "MGET 100 keys + decode"),
    Row("engramdb.put_sync", "put, sync", "engramdb", "s.put(key, bins), fsync per commit"),
    Row("disk.fdatasync", "put, sync", "disk floor", "4 KiB pwrite + fdatasync"),
    Row("redis.put_sync", "put, sync", "Redis", "SET, appendfsync always"),
    Row("engramdb.operate_sync", "operate, sync", "engramdb", "incr + list_append(max_len=50)"),
    Row("redis.operate_sync", "operate, sync", "Redis", "MULTI … EXEC, appendfsync always"),
    Row("engramdb.put_async", "put, async", "engramdb", "s.put(key, bins)"),
    Row("floor.put", "put, async", "LMDB floor", "write txn + put, no fsync"),
    Row("redis.put", "put, async", "Redis", "encode + SET (no fsync)"),
    Row("engramdb.operate_async", "operate, async", "engramdb", "incr + list_append(max_len=50)"),
    Row("floor.operate", "operate, async", "LMDB floor", "write txn: get, decode, edit, put"),
    Row("redis.operate", "operate, async", "Redis", "MULTI INCR RPUSH LTRIM EXEC"),
    Row("engramdb.put_none", "put, none", "engramdb", "s.put(key, bins)"),
    Row("engramdb.operate_none", "operate, none", "engramdb", "incr + list_append(max_len=50)"),
)
ROW = {row.id: row for row in ROWS}

# (engramdb row, peer row): how engramdb compares with what a user would otherwise run.
VERSUS_REDIS: tuple[tuple[str, str], ...] = (
    ("engramdb.get", "redis.get"),
    ("engramdb.get_many", "redis.get_many"),
    ("engramdb.put_async", "redis.put"),
    ("engramdb.put_none", "redis.put"),
    ("engramdb.operate_async", "redis.operate"),
    ("engramdb.operate_none", "redis.operate"),
    ("engramdb.put_sync", "redis.put_sync"),
    ("engramdb.operate_sync", "redis.operate_sync"),
)
VERSUS_FLOOR: tuple[tuple[str, str], ...] = (
    ("engramdb.get", "floor.get"),
    ("engramdb.get_many", "floor.get_many"),
    ("engramdb.put_async", "floor.put"),
    ("engramdb.operate_async", "floor.operate"),
    ("engramdb.put_sync", "disk.fdatasync"),
)


# the dataset and the workloads -------------------------------------------------------------

_TAGS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")
_BIO = string.ascii_lowercase + " "


def make_bins(rng: random.Random, i: int) -> dict[str, Any]:
    """Five small bins, ~145 bytes as msgpack."""
    return {
        "name": f"user-{i:06d}",
        "score": rng.randrange(1_000_000),
        "ratio": rng.random(),
        "tags": rng.sample(_TAGS, 3),
        "bio": "".join(rng.choice(_BIO) for _ in range(72)),
    }


def key_of(i: int) -> str:
    return f"user:{i:08d}"


@dataclass
class Workload:
    """One operation's argument sequences, shared by every side."""

    warmup: list[int]
    measured: list[int]


@dataclass
class Data:
    keys: list[str]
    bkeys: list[bytes]
    bins: list[dict[str, Any]]
    new_bins: list[dict[str, Any]]  # what puts write (cycled)
    gets: Workload
    batches: Workload  # start index of each batch in `batch_keys`
    batch_keys: list[int]
    puts: Workload
    sync_puts: Workload
    operates: Workload
    mean_value_bytes: float


def make_data(sizes: Sizes) -> Data:
    rng = random.Random(sizes.seed)
    n = sizes.records
    keys = [key_of(i) for i in range(n)]
    bins = [make_bins(rng, i) for i in range(n)]

    def workload(calls: int) -> Workload:
        return Workload(
            [rng.randrange(n) for _ in range(warmup_count(sizes, calls))],
            [rng.randrange(n) for _ in range(calls)],
        )

    many_calls = sizes.get_many + warmup_count(sizes, sizes.get_many)
    batch_keys = [rng.randrange(n) for _ in range(many_calls * sizes.batch)]
    starts = [i * sizes.batch for i in range(many_calls)]
    return Data(
        keys=keys,
        bkeys=[k.encode() for k in keys],
        bins=bins,
        new_bins=[make_bins(rng, i) for i in range(1024)],
        gets=workload(sizes.gets),
        batches=Workload(
            starts[: warmup_count(sizes, sizes.get_many)],
            starts[warmup_count(sizes, sizes.get_many) :],
        ),
        batch_keys=batch_keys,
        puts=workload(sizes.puts),
        sync_puts=workload(sizes.sync_puts),
        operates=workload(sizes.operates),
        mean_value_bytes=sum(len(encode(b)) for b in bins[:1000]) / min(n, 1000),
    )


# the run -----------------------------------------------------------------------------------


class Run:
    """Loads every store, then measures each operation on engramdb, the floor and Redis."""

    def __init__(self, sizes: Sizes, data: Data, root: str) -> None:
        self.sizes = sizes
        self.data = data
        self.root = root
        self.results: dict[str, Stats] = {}
        self.progress = new_progress()
        self.redis: Any = None  # redis.Redis when the peer is available
        self.floor_env: Any = None

    # plumbing

    def bench(self, row_id: str, fn: Callable[[Any], object], wl: Workload, conv: Any) -> None:
        """Measure ``fn`` over workload ``wl`` (indices mapped to arguments by ``conv``)."""
        warm = [conv(i) for i in wl.warmup]
        args = [conv(i) for i in wl.measured]
        row = ROW[row_id]
        self.results[row_id] = measure(
            fn,
            args,
            warmup=warm,
            meter=Meter(self.progress),
            description=f"{row.op} · {row.system}",
        )

    def batch(self, start: int) -> list[int]:
        return self.data.batch_keys[start : start + self.sizes.batch]

    def open_db(self, durability: Any) -> engramdb.Database:
        return engramdb.open(
            os.path.join(self.root, "engramdb"), durability=durability, sweep_interval=None
        )

    # loading

    def load(self) -> None:
        d = self.data
        meter = Meter(self.progress)
        meter.start("load · engramdb", len(d.keys))
        with self.open_db("none") as db:
            s = db.records(SET_NAME)
            for i, (key, bins) in enumerate(zip(d.keys, d.bins)):
                s.put(key, bins)
                if i % 1000 == 999:
                    meter.advance(1000)
            meter.advance(len(d.keys) % 1000, force=True)

        meter = Meter(self.progress)
        meter.start("load · LMDB floor", len(d.keys))
        # Same environment flags as engramdb's LMDB engine, minus sync (a floor).
        self.floor_env = lmdb.open(
            os.path.join(self.root, "floor"),
            map_size=8 << 30,
            max_dbs=0,
            max_spare_txns=64,
            readahead=False,
            sync=False,
            metasync=False,
        )
        with self.floor_env.begin(write=True) as txn:
            for bkey, bins in zip(d.bkeys, d.bins):
                txn.put(bkey, encode(bins))
        meter.advance(len(d.keys), force=True)

        if self.redis is not None:
            meter = Meter(self.progress)
            meter.start("load · Redis", len(d.keys))
            pipe = self.redis.pipeline(transaction=False)
            for i, (key, bins) in enumerate(zip(d.keys, d.bins)):
                pipe.set(key, encode(bins))
                if i % 1000 == 999:
                    pipe.execute()
                    meter.advance(1000)
            pipe.execute()
            meter.advance(len(d.keys) % 1000, force=True)

    def check(self, db: engramdb.Database) -> None:
        """Every side must hold the same records, or the comparison means nothing."""
        s = db.records(SET_NAME)
        for i in (0, len(self.data.keys) // 2, len(self.data.keys) - 1):
            want = self.data.bins[i]
            record = s.get(self.data.keys[i])
            assert record is not None, "engramdb lost a record"
            assert record.bins == want, "engramdb changed a record"
            with self.floor_env.begin() as txn:
                assert decode(txn.get(self.data.bkeys[i])) == want, "floor lost a record"
            if self.redis is not None:
                assert decode(self.redis.get(self.data.keys[i])) == want, "Redis lost a record"

    # phases

    def run(self) -> None:
        with self.progress:
            self.load()
            with self.open_db("sync") as db:
                self.check(db)
                self.reads(db)
                self.sync_writes(db)
            with self.open_db("async") as db:
                self.writes(db, "async", peers=True)
            with self.open_db("none") as db:
                self.writes(db, "none", peers=False)
            self.redis_fsync_always()

    def reads(self, db: engramdb.Database) -> None:
        d, env, r = self.data, self.floor_env, self.redis
        s = db.records(SET_NAME)
        keys, bkeys = d.keys, d.bkeys

        def floor_get(key: bytes) -> Any:
            txn = env.begin()
            try:
                return decode(txn.get(key))
            finally:
                txn.abort()

        self.bench("engramdb.get", s.get, d.gets, keys.__getitem__)
        self.bench("floor.get", floor_get, d.gets, bkeys.__getitem__)
        if r is not None:

            def redis_get(key: str) -> Any:
                return decode(r.get(key))

            self.bench("redis.get", redis_get, d.gets, keys.__getitem__)

        # No store can beat the machine: the same harness timing pure-Python work as long as
        # an engramdb get shows how much of a microsecond-scale p99 is the machine's own.
        n = calibrate_busy_loop(self.results["engramdb.get"].p50_us)
        self.bench("noise.get", busy_loop, d.gets, lambda _: n)

        def as_keys(start: int) -> list[str]:
            return [keys[i] for i in self.batch(start)]

        def as_bkeys(start: int) -> list[bytes]:
            return [bkeys[i] for i in self.batch(start)]

        def floor_get_many(batch: list[bytes]) -> Any:
            txn = env.begin()
            try:
                return [decode(txn.get(k)) for k in batch]
            finally:
                txn.abort()

        self.bench("engramdb.get_many", s.get_many, d.batches, as_keys)
        self.bench("floor.get_many", floor_get_many, d.batches, as_bkeys)
        if r is not None:

            def redis_get_many(batch: list[str]) -> Any:
                return [decode(v) for v in r.mget(batch)]

            self.bench("redis.get_many", redis_get_many, d.batches, as_keys)

    def put_args(self, i: int) -> tuple[str, dict[str, Any]]:
        return self.data.keys[i], self.data.new_bins[i % len(self.data.new_bins)]

    def sync_writes(self, db: engramdb.Database) -> None:
        d = self.data
        s = db.records(SET_NAME)

        def put(item: tuple[str, dict[str, Any]]) -> Any:
            return s.put(item[0], item[1])

        self.bench("engramdb.put_sync", put, d.sync_puts, self.put_args)
        self.bench("engramdb.operate_sync", _operate(s), d.sync_puts, d.keys.__getitem__)

        page = b"\x5a" * 4096
        fd = os.open(os.path.join(self.root, "fdatasync.bin"), os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def fdatasync(i: int) -> None:
                os.pwrite(fd, page, (i % 256) * 4096)
                os.fdatasync(fd)

            self.bench("disk.fdatasync", fdatasync, d.sync_puts, int)
        finally:
            os.close(fd)

    def writes(self, db: engramdb.Database, durability: str, *, peers: bool) -> None:
        d, env, r = self.data, self.floor_env, self.redis
        s = db.records(SET_NAME)

        def put(item: tuple[str, dict[str, Any]]) -> Any:
            return s.put(item[0], item[1])

        self.bench(f"engramdb.put_{durability}", put, d.puts, self.put_args)
        if peers:

            def floor_put(item: tuple[bytes, dict[str, Any]]) -> None:
                with env.begin(write=True) as txn:
                    txn.put(item[0], encode(item[1]))

            def floor_put_args(i: int) -> tuple[bytes, dict[str, Any]]:
                return d.bkeys[i], d.new_bins[i % len(d.new_bins)]

            self.bench("floor.put", floor_put, d.puts, floor_put_args)
            if r is not None:

                def redis_set(item: tuple[str, dict[str, Any]]) -> Any:
                    return r.set(item[0], encode(item[1]))

                self.bench("redis.put", redis_set, d.puts, self.put_args)

        self.bench(f"engramdb.operate_{durability}", _operate(s), d.operates, d.keys.__getitem__)
        if peers:

            def floor_operate(key: bytes) -> list[Any]:
                # What operate does, minus everything engramdb adds (header, generation,
                # change log, validation): read-modify-write of one msgpack map.
                with env.begin(write=True) as txn:
                    bins = decode(txn.get(key))
                    n = bins["n"] = bins.get("n", 0) + 1
                    events = bins.setdefault("events", [])
                    events.append(EVENT)
                    del events[:-MAX_EVENTS]
                    txn.put(key, encode(bins))
                    return [n, len(events)]

            self.bench("floor.operate", floor_operate, d.operates, d.bkeys.__getitem__)
            if r is not None:
                self.bench("redis.operate", self.redis_operate, d.operates, self.redis_pair)

    def redis_operate(self, pair: tuple[str, str]) -> Any:
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(pair[0])
        pipe.rpush(pair[1], EVENT)
        pipe.ltrim(pair[1], -MAX_EVENTS, -1)
        return pipe.execute()

    def redis_pair(self, i: int) -> tuple[str, str]:
        key = self.data.keys[i]
        return f"{key}:n", f"{key}:events"

    def redis_fsync_always(self) -> None:
        """SET with an fsync per write: Redis's counterpart of put at durability sync."""
        r = self.redis
        if r is None:
            return
        r.config_set("appendonly", "yes")  # starts an AOF rewrite in the background
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = r.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                break
            time.sleep(0.05)
        r.config_set("appendfsync", "always")

        def redis_set(item: tuple[str, dict[str, Any]]) -> Any:
            return r.set(item[0], encode(item[1]))

        self.bench("redis.put_sync", redis_set, self.data.sync_puts, self.put_args)
        self.bench("redis.operate_sync", self.redis_operate, self.data.sync_puts, self.redis_pair)


def _operate(s: engramdb.RecordSet) -> Callable[[str], list[Any]]:
    incr, list_append = ops.incr, ops.list_append

    def operate(key: str) -> list[Any]:
        return s.operate(key, [incr("n"), list_append("events", EVENT, max_len=MAX_EVENTS)])

    return operate


# report ------------------------------------------------------------------------------------


def p99_ratio(results: dict[str, Stats], num: str, den: str) -> float | None:
    if num not in results or den not in results:
        return None
    return results[num].p99_us / results[den].p99_us


def comparisons(
    results: dict[str, Stats], pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    return [
        {
            "engramdb": ours,
            "peer": theirs,
            "p50_ratio": results[theirs].p50_us / results[ours].p50_us,
            "p99_ratio": results[theirs].p99_us / results[ours].p99_us,
            "ops_ratio": results[ours].ops_s / results[theirs].ops_s,
        }
        for ours, theirs in pairs
        if ours in results and theirs in results
    ]


def report(
    sizes: Sizes,
    quick: bool,
    data: Data,
    results: dict[str, Stats],
    machine: dict[str, str],
    redis_note: str,
) -> Report:
    r = Report(
        SECTION,
        "records",
        "Records: embedded get / get_many / put / operate",
        f"{sizes.records:,} records of 5 bins (~{data.mean_value_bytes:.0f} B as msgpack), uniform "
        "random access, against raw LMDB and Redis; every call timed on its own after warmup; "
        f"latencies in µs; ops/s = calls / wall time (a get_many call is {sizes.batch} keys).",
        quick,
        machine,
        about=redis_note,
        raw={
            "sizes": asdict(sizes),
            "results": {k: s.to_json() for k, s in results.items()},
            "versus_redis": comparisons(results, VERSUS_REDIS),
            "versus_floor": comparisons(results, VERSUS_FLOOR),
        },
    )

    def us(a: float, b: float) -> str:
        return f"{fmt_us(a)} µs vs {fmt_us(b)} µs"

    if (floor := p99_ratio(results, "engramdb.get", "floor.get")) is not None:
        vs = us(results["engramdb.get"].p99_us, results["floor.get"].p99_us)
        r.check(
            "get p99: engramdb / raw LMDB floor",
            "LMDB floor",
            f"{fmt_ratio(floor)} ({vs})",
            f"≤ {TARGET_FLOOR:g}x",
            floor <= TARGET_FLOOR,
        )
    if (redis := p99_ratio(results, "redis.get", "engramdb.get")) is not None:
        vs = us(results["redis.get"].p99_us, results["engramdb.get"].p99_us)
        r.check(
            "get p99: Redis / engramdb",
            "Redis",
            f"{fmt_ratio(redis)} ({vs})",
            f"≥ {TARGET_REDIS:g}x",
            redis >= TARGET_REDIS,
        )
    rows = [
        [
            row.op,
            row.system,
            f"`{row.call}`",
            f"{results[row.id].n:,}",
            *stats_cells(results[row.id]),
        ]
        for row in ROWS
        if row.id in results
    ]
    r.table(
        "Latency and throughput",
        ["operation", "system", "one call", "calls", "p50", "p99", "p999", "ops/s"],
        rows,
        "lllrrrrr",
    )
    vs_redis = [
        [
            ROW[c["engramdb"]].op,
            ROW[c["peer"]].system,
            fmt_ratio(c["p50_ratio"]),
            fmt_ratio(c["p99_ratio"]),
            fmt_ratio(c["ops_ratio"]),
        ]
        for c in comparisons(results, VERSUS_REDIS)
    ]
    r.table(
        "engramdb against Redis (above 1 favours engramdb)",
        ["engramdb", "against", "p50 ratio", "p99 ratio", "ops/s ratio"],
        vs_redis,
        "llrrr",
        publish=False,
    )
    vs_floor = [
        [
            ROW[c["engramdb"]].op,
            ROW[c["peer"]].system,
            fmt_ratio(1 / c["p50_ratio"]),
            fmt_ratio(1 / c["p99_ratio"]),
        ]
        for c in comparisons(results, VERSUS_FLOOR)
    ]
    r.table(
        "engramdb against the floor (times the floor's latency)",
        ["engramdb", "floor", "p50 x floor", "p99 x floor"],
        vs_floor,
        "llrr",
        publish=False,
    )
    return r


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb records benchmark: engramdb vs raw LMDB floor vs Redis.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~20 s smoke run)")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    add_redis_args(parser)
    args = parser.parse_args(argv)
    sizes = sizes_from(args, FULL, QUICK)
    if sizes.records < 1 or sizes.batch < 1:
        parser.error("--records and --batch must be positive")
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print("[bold]building dataset…[/bold]")
    data = make_data(sizes)

    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-records-", args.data_dir))
        run = Run(sizes, data, root)
        peer = redis_peer(stack, args=args)
        run.redis = peer.clients[0] if peer.clients else None
        redis_note = peer.note
        extra = {"LMDB (C library)": ".".join(map(str, lmdb.version())), **peer.machine}
        machine = machine_info(
            ("engramdb", "lmdb", "msgspec", "redis", "hiredis", "numpy"),
            data_dir=root,
            extra=extra,
        )
        stack.callback(_close_env, run)
        run.run()
        results = run.results

    report(sizes, args.quick, data, results, machine, redis_note).save()
    return 0


def _close_env(run: Run) -> None:
    if run.floor_env is not None:
        run.floor_env.close()
        run.floor_env = None


if __name__ == "__main__":
    sys.exit(main())
