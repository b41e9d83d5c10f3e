"""``engramdb serve`` against ``redis-server``, in one run: throughput, latency, durable writes.

    python bench/server.py                 # full run (a few minutes on 2 cores)
    python bench/server.py --quick         # ~30-60 s smoke run with small sizes
    python bench/server.py --profile       # and py-spy the server if a target is missed
    python bench/server.py --help          # every size is configurable

What it measures, against a private Debian ``redis-server`` started on a free port:

1. **Throughput**: ``redis-benchmark -t TEST -c 50 -n N -q --csv`` for get, set, incr, lpush and
   hset, with and without ``-P 16``, against engramdb (``engramdb serve --durability async``)
   and Redis with ``--save "" --appendonly no``. Redis in that configuration never fsyncs on a
   write, and neither does engramdb at durability async, which is why those two are paired.
   Each test is its own redis-benchmark process, so a command engramdb does not have yet shows
   up as that test's ``error`` instead of ending the run. Each test runs ``--repeats`` times
   per server, alternating between the two so drift on a shared machine hits both alike, and
   the median run is reported. Both servers are flushed before each pipeline setting.
2. **Durable writes**: the same redis-benchmark runs against ``engramdb serve --durability
   sync`` (acknowledged after fsync, group commit) and Redis with ``--appendonly yes
   --appendfsync always`` (replies only after an fsync of the AOF, which Redis makes once per
   event-loop iteration for every write of it), each in its own temporary directory on the same
   filesystem; the SET test with 50 connections is the headline.
3. **Client latency**: a single client thread in a closed loop, each call timed on its own with
   ``perf_counter_ns`` (``_common.measure_interleaved``: the loop of ``bench/records.py``,
   with the three clients taking turns in slices so load drift hits all alike): GET and SET
   of a random key out of a preloaded keyspace, through (a) redis-py with hiredis against
   Redis, (b) redis-py against engramdb's RESP side and (c) the engramdb client
   (``engramdb.connect(url).records("bench").get/put``) against engramdb.

Around each redis-benchmark run the script reads the server's CPU time from
``/proc/<pid>/stat`` (CPU µs per request, and how much of a core the server used) and, for
engramdb, its group-commit counters (writes per commit: at ``sync``, writes per fsync). A run
still going after ``--run-timeout`` seconds is stopped and recorded as an error.

With ``--profile`` (only when a target is missed; ``--profile always`` regardless), py-spy samples
the async engramdb server for ``--profile-seconds`` while ``redis-benchmark -t get -c 50 -l``
loads it, writing ``bench/results/server-profile.svg`` (flame graph) and
``bench/results/server-profile.txt`` (collapsed stacks) and printing the top frames. py-spy
is a dev tool (``pip install py-spy``), not a dependency of engramdb.

Writes bench/results/server.json (raw numbers) and the ``server`` section of BENCHMARKS.md.
Every server started is stopped on the way out, errors and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

import engramdb
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    EngramServer,
    EngramUnavailable,
    Meter,
    RedisServer,
    RedisUnavailable,
    Stats,
    exit_on_sigterm,
    find_redis_server,
    fmt_ratio,
    fmt_us,
    machine_info,
    machine_markdown,
    markdown_table,
    measure_interleaved,
    new_progress,
    process_cpu_seconds,
    replace_section,
    temp_dir,
    write_json,
)

SECTION = "server"
SET_NAME = "bench"
# redis-benchmark's own order (``--tests`` picks some)
TESTS: tuple[str, ...] = ("set", "get", "incr", "lpush", "lpop", "sadd", "hset", "zadd")
WRITE_TESTS = frozenset({"set", "incr", "lpush", "lpop", "sadd", "hset", "zadd"})
PIPELINES: tuple[int, ...] = (1, 16)
TESTS_ALL = TESTS
WORKERS_PAIR = ("engramdb_w2", "engramdb_w1")
# Tests that need data in place first (LPOP pops what an untimed LPUSH run pushed).
PREFILL = {"lpop": "lpush"}
TARGET_CPU = 2.5  # engramdb server CPU per request ≤ 2.5x Redis's, unpipelined
TARGET_FLAT = 1.25  # LPUSH cost on a 1M-item list ≤ 1.25x its cost on a short one
PHASES = ("durable", "throughput", "latency", "lpush-flat", "workers")
TARGET_THROUGHPUT = 0.8  # engramdb (async) rps ≥ 0.8x Redis (no fsync) rps, unpipelined
TARGET_P99 = 1.5  # engramdb p99 ≤ 1.5x Redis p99, single client
TARGET_DURABLE = 1.0  # engramdb (sync) write rps ≥ Redis (appendfsync always) rps
REDIS_AOF_ARGS = ("--appendonly", "yes", "--appendfsync", "always")


# configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    requests: int = 100_000  # redis-benchmark -n, unpipelined
    pipelined_requests: int = 500_000  # redis-benchmark -n with -P 16
    durable_requests: int = 20_000  # -n against engramdb sync / Redis appendfsync always
    clients: int = 50  # redis-benchmark -c
    repeats: int = 3  # redis-benchmark runs per test and server; the median is reported
    keyspace: int = 0  # redis-benchmark -r (0: not passed, each test hits one key)
    latency_calls: int = 50_000  # timed calls per operation and client
    keys: int = 10_000  # preloaded keys for the latency runs
    value_size: int = 100  # bytes per value in the latency runs
    warmup: float = 0.1  # warmup calls, as a fraction of timed calls (at least 200)
    rounds: int = 20  # latency: the sides take turns in this many slices
    seed: int = 1
    run_timeout: int = 300  # seconds before a redis-benchmark run is stopped as an error
    profile_seconds: int = 10
    flat_items: int = 1_000_000  # lpush-flat: the list grows to this many items
    flat_requests: int = 20_000  # lpush-flat: timed LPUSHes at each length
    workers_requests: int = 100_000  # workers: redis-benchmark -n per test


FULL = Sizes()
QUICK = Sizes(
    requests=10_000,
    pipelined_requests=20_000,
    durable_requests=5_000,
    latency_calls=10_000,
    keys=2_000,
    run_timeout=60,
    profile_seconds=5,
    flat_items=100_000,
    flat_requests=5_000,
    workers_requests=20_000,
)


def warmup_count(sizes: Sizes) -> int:
    return max(200, int(sizes.latency_calls * sizes.warmup))


# the systems and rows: policy as data ------------------------------------------------------


@dataclass(frozen=True)
class System:
    id: str
    name: str
    config: str


SYSTEMS: dict[str, System] = {
    s.id: s
    for s in (
        System("redis", "Redis", 'redis-server --save "" --appendonly no'),
        System("engramdb", "engramdb", "engramdb serve --durability async"),
        System("redis_always", "Redis", "redis-server --appendonly yes --appendfsync always"),
        System("engramdb_sync", "engramdb", "engramdb serve --durability sync"),
        System("engramdb_w1", "engramdb, 1 worker", "engramdb serve --durability async"),
        System(
            "engramdb_w2", "engramdb, 2 workers", "engramdb serve --durability async --workers 2"
        ),
    )
}

# (engramdb system, Redis system it is held to): one pair per phase.
FAST_PAIR = ("engramdb", "redis")
DURABLE_PAIR = ("engramdb_sync", "redis_always")


@dataclass(frozen=True)
class LatencyRow:
    id: str
    op: str
    path: str  # client → server
    call: str


LATENCY_ROWS: tuple[LatencyRow, ...] = (
    LatencyRow("redis.get", "GET", "redis-py → Redis", "r.get(key)"),
    LatencyRow("resp.get", "GET", "redis-py → engramdb", "r.get(key)"),
    LatencyRow(
        "client.get", "GET", "engramdb client → engramdb", 's.get(key), s = records("bench")'
    ),
    LatencyRow("redis.set", "SET", "redis-py → Redis", "r.set(key, value)"),
    LatencyRow("resp.set", "SET", "redis-py → engramdb", "r.set(key, value)"),
    LatencyRow("client.set", "SET", "engramdb client → engramdb", 's.put(key, {"value": value})'),
)
LATENCY_ROW = {row.id: row for row in LATENCY_ROWS}
# (engramdb row, Redis row) held to TARGET_P99.
LATENCY_PAIRS: tuple[tuple[str, str], ...] = (
    ("client.get", "redis.get"),
    ("client.set", "redis.set"),
    ("resp.get", "redis.get"),
    ("resp.set", "redis.set"),
)


# redis-benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRun:
    """One redis-benchmark process: one test, one server, one pipeline depth."""

    system: str
    test: str
    pipeline: int
    requests: int
    clients: int
    repeat: int
    wall_s: float
    rps: float | None = None
    avg_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_s: float | None = None
    commits: int | None = None  # engramdb group-commit transactions during the run
    committed_writes: int | None = None  # writes those transactions held
    error: str | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or self.error is not None:
            return None
        return self.server_cpu_s / self.requests * 1e6

    @property
    def writes_per_commit(self) -> float | None:
        if not self.commits or self.committed_writes is None or self.error is not None:
            return None
        return self.committed_writes / self.commits

    @property
    def server_core_percent(self) -> float | None:
        """How busy the server kept one core: 100% = a whole core for the whole run."""
        if self.server_cpu_s is None or self.error is not None or self.wall_s <= 0:
            return None
        return 100 * self.server_cpu_s / self.wall_s


def find_redis_benchmark(near: str | None) -> str | None:
    if near:
        sibling = os.path.join(os.path.dirname(near), "redis-benchmark")
        if os.access(sibling, os.X_OK):
            return sibling
    return shutil.which("redis-benchmark")


def tool_version(executable: str) -> str:
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


_CSV_FIELDS = ("rps", "avg_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")


def parse_csv(text: str, test: str) -> dict[str, float] | None:
    """The figures of ``test`` in redis-benchmark ``--csv`` output, or None if it has none."""
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 1 + len(_CSV_FIELDS) and row[0].strip().lower() == test:
            try:
                values = [float(x) for x in row[1 : 1 + len(_CSV_FIELDS)]]
            except ValueError:
                return None
            return dict(zip(_CSV_FIELDS, values))
    return None


def _error_of(proc: subprocess.CompletedProcess[str], test: str) -> str:
    text = "\n".join(x for x in (proc.stderr, proc.stdout) if x)
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip()[:300]
    return f"redis-benchmark printed no result for {test} (exit status {proc.returncode})"


def redis_benchmark(
    executable: str,
    repeat: int,
    system: str,
    port: int,
    pid: int | None,
    test: str,
    *,
    requests: int,
    clients: int,
    pipeline: int,
    keyspace: int,
    timeout: float,
) -> BenchRun:
    """Run one redis-benchmark test; a server error or a hang is recorded, not raised."""
    cmd = [
        executable, "-h", "127.0.0.1", "-p", str(port),
        "-t", test, "-c", str(clients), "-n", str(requests), "-q", "--csv",
    ]  # fmt: skip
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    if keyspace > 0:
        cmd += ["-r", str(keyspace)]
    base = BenchRun(system, test, pipeline, requests, clients, repeat, wall_s=0.0)
    cpu0 = tree_cpu_seconds(pid)
    began = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - began
        return replace(base, wall_s=wall, error=f"timed out after {timeout:.0f} s")
    wall = time.perf_counter() - began
    cpu1 = tree_cpu_seconds(pid)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    got = parse_csv(proc.stdout, test)
    failed = proc.returncode != 0 or "Error from server" in proc.stderr + proc.stdout
    if got is None or failed:
        return replace(base, wall_s=wall, server_cpu_s=cpu, error=_error_of(proc, test))
    return replace(
        base,
        wall_s=wall,
        server_cpu_s=cpu,
        rps=got["rps"],
        avg_ms=got["avg_ms"],
        p50_ms=got["p50_ms"],
        p95_ms=got["p95_ms"],
        p99_ms=got["p99_ms"],
        max_ms=got["max_ms"],
    )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(x) for x in f.read().split()]
    return found


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` and every process under it: ``engramdb serve --workers N``
    serves from N child processes (one process: the same as ``process_cpu_seconds``)."""
    total = process_cpu_seconds(pid)
    if pid is None or total is None:
        return total
    for child in _children(pid):
        total += tree_cpu_seconds(child) or 0.0
    return total


def settle(pid: int | None, timeout: float = 30.0) -> None:
    """Wait until the server is idle (under 5% of a core over half a second): what it does
    in the background after a fill (following the change log, flushing) is that fill's cost,
    not the next run's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(0.5)
        after = tree_cpu_seconds(pid)
        if before is None or after is None or after - before < 0.025:
            return


def fill_list(executable: str, port: int, items: int, timeout: float) -> None:
    """LPUSH ``items`` items onto redis-benchmark's list (untimed, pipelined)."""
    if items <= 0:
        return
    cmd = [
        executable, "-h", "127.0.0.1", "-p", str(port), "-t", "lpush", "-c", "8",
        "-n", str(items), "-P", "64", "-q",
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


# servers -----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """A running server the benchmark talks to."""

    system: str
    port: int
    pid: int | None
    flush: Callable[[], bytes]
    # (transactions, writes) the server's group commit has made so far; engramdb only.
    group_commit: Callable[[], tuple[int, int]] | None = None


def redis_endpoint(system: str, server: RedisServer) -> Endpoint:
    return Endpoint(system, server.port, server.pid, lambda: server.command("FLUSHALL"))


def engram_endpoint(system: str, server: EngramServer, client: engramdb.Client) -> Endpoint:
    def group_commit() -> tuple[int, int]:
        figures = client.stats()["group_commit"]
        return int(figures["batches"]), int(figures["writes"])

    return Endpoint(
        system,
        server.port,
        server.pid,
        lambda: server.command_reply("FLUSHALL"),
        group_commit,
    )


# the run -----------------------------------------------------------------------------------


@dataclass
class Profile:
    ran: bool = False
    native: bool = False
    note: str = ""
    samples: int = 0
    server_cpu_percent: float | None = None
    self_top: list[tuple[str, int]] = field(default_factory=list)
    inclusive_top: list[tuple[str, int]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class Run:
    def __init__(self, sizes: Sizes, args: argparse.Namespace, root: str) -> None:
        self.sizes = sizes
        self.args = args
        self.root = root
        self.redis_server_exe: str = args.redis_server or find_redis_server() or ""
        self.redis_benchmark_exe: str = (
            args.redis_benchmark or find_redis_benchmark(self.redis_server_exe) or ""
        )
        self.progress = new_progress()
        self.runs: list[BenchRun] = []
        self.latency: dict[str, Stats] = {}
        self.profile = Profile()
        self.phase_seconds: dict[str, float] = {}
        self.rng = random.Random(sizes.seed)

    # redis-benchmark phases

    def throughput(
        self, phase: str, endpoints: Sequence[Endpoint], requests: dict[int, int]
    ) -> None:
        """Every test at every pipeline depth on every endpoint, alternating endpoints."""
        total = len(PIPELINES) * len(TESTS) * self.sizes.repeats * len(endpoints)
        task = self.progress.add_task(f"redis-benchmark · {phase}", total=total)
        self.progress.refresh()
        for pipeline in PIPELINES:
            for test, repeat, e in itertools.product(TESTS, range(self.sizes.repeats), endpoints):
                # Flushed before every run: LPUSH grows one list, and repeats must not pile
                # onto the same list.
                e.flush()
                if test in PREFILL:
                    fill_list(
                        self.redis_benchmark_exe, e.port, requests[pipeline], self.sizes.run_timeout
                    )
                    settle(e.pid)  # the fill's background work is not the test's
                self.progress.update(
                    task,
                    description=f"redis-benchmark · {e.system} {test} -P {pipeline}",
                )
                self.progress.refresh()
                before = e.group_commit() if e.group_commit else None
                result = redis_benchmark(
                    self.redis_benchmark_exe,
                    repeat,
                    e.system,
                    e.port,
                    e.pid,
                    test,
                    requests=requests[pipeline],
                    clients=self.sizes.clients,
                    pipeline=pipeline,
                    keyspace=self.sizes.keyspace,
                    timeout=self.sizes.run_timeout,
                )
                if e.group_commit and before is not None:
                    after = e.group_commit()
                    result = replace(
                        result,
                        commits=after[0] - before[0],
                        committed_writes=after[1] - before[1],
                    )
                self.runs.append(result)
                self.progress.update(task, advance=1)
                self.progress.refresh()
        self.progress.update(task, description=f"redis-benchmark · {phase}")
        self.progress.refresh()

    def lpush_flat(self, endpoints: Sequence[Endpoint]) -> None:
        """LPUSH cost as one list grows to ``flat_items``: at each length, ``flat_requests``
        timed LPUSHes from ``clients`` connections (test ``lpush@LENGTH``), then untimed
        pipelined pushes up to the next length."""
        s = self.sizes
        lengths = sorted({0, *(n for n in (10_000, 100_000) if n < s.flat_items), s.flat_items})
        task = self.progress.add_task("lpush-flat", total=len(lengths) * len(endpoints))
        for e in endpoints:
            e.flush()
            have = 0
            for length in lengths:
                fill_list(self.redis_benchmark_exe, e.port, length - have, s.run_timeout)
                settle(e.pid)
                have = length
                self.progress.update(task, description=f"lpush-flat · {e.system} at {length:,}")
                self.progress.refresh()
                result = redis_benchmark(
                    self.redis_benchmark_exe,
                    0,
                    e.system,
                    e.port,
                    e.pid,
                    "lpush",
                    requests=s.flat_requests,
                    clients=s.clients,
                    pipeline=1,
                    keyspace=0,
                    timeout=s.run_timeout,
                )
                have += s.flat_requests
                self.runs.append(replace(result, test=f"lpush@{length}"))
                self.progress.update(task, advance=1)
            e.flush()

    def workers_runs(self, endpoints: Sequence[Endpoint]) -> None:
        """SET and GET from ``clients`` connections against 1 and 2 worker processes."""
        s = self.sizes
        tests = ("set", "get")
        task = self.progress.add_task("workers", total=len(tests) * s.repeats * len(endpoints))
        for test, repeat, e in itertools.product(tests, range(s.repeats), endpoints):
            self.progress.update(task, description=f"workers · {e.system} {test}")
            self.progress.refresh()
            result = redis_benchmark(
                self.redis_benchmark_exe,
                repeat,
                e.system,
                e.port,
                e.pid,
                test,
                requests=s.workers_requests,
                clients=s.clients,
                pipeline=1,
                keyspace=s.keyspace,
                timeout=s.run_timeout,
            )
            self.runs.append(result)
            self.progress.update(task, advance=1)

    # client latency

    def latency_runs(self, redis_port: int, engram: EngramServer) -> None:
        s = self.sizes
        keys = [f"bench:{i:08d}" for i in range(s.keys)]
        values = [self.rng.randbytes(s.value_size) for _ in range(64)]
        bins = [{"value": v} for v in values]
        warm = warmup_count(s)
        rng = self.rng
        get_warm = [rng.randrange(s.keys) for _ in range(warm)]
        get_timed = [rng.randrange(s.keys) for _ in range(s.latency_calls)]
        set_warm = [rng.randrange(s.keys) for _ in range(warm)]
        set_timed = [rng.randrange(s.keys) for _ in range(s.latency_calls)]

        with contextlib.ExitStack() as stack:
            r_redis = stack.enter_context(redis.Redis(port=redis_port, protocol=2))
            r_engram = stack.enter_context(redis.Redis(port=engram.port, protocol=2))
            client = stack.enter_context(engramdb.connect(engram.url))
            bench = client.records(SET_NAME)

            meter = Meter(self.progress)
            meter.start("latency · preload keys", 3 * s.keys)
            for r in (r_redis, r_engram):
                pipe = r.pipeline(transaction=False)
                for i, key in enumerate(keys):
                    pipe.set(key, values[i % len(values)])
                    if i % 1000 == 999:
                        pipe.execute()
                pipe.execute()
                meter.advance(s.keys, force=True)
            for i, key in enumerate(keys):
                bench.put(key, bins[i % len(bins)])
                if i % 1000 == 999:
                    meter.advance(1000)
            meter.advance(s.keys % 1000, force=True)
            # The same data on every side, or the comparison means nothing.
            for i in (0, s.keys - 1):
                want = values[i % len(values)]
                assert r_redis.get(keys[i]) == want, "Redis lost a key"
                assert r_engram.get(keys[i]) == want, "engramdb (RESP) lost a key"
                record = bench.get(keys[i])
                assert record is not None, "engramdb lost a record"
                assert record.bins == {"value": want}, "engramdb changed a record"

            def as_key(i: int) -> str:
                return keys[i]

            def as_item(i: int) -> tuple[str, bytes]:
                return keys[i], values[i % len(values)]

            def as_bins(i: int) -> tuple[str, dict[str, bytes]]:
                return keys[i], bins[i % len(bins)]

            def redis_set(r: redis.Redis) -> Callable[[tuple[str, bytes]], object]:
                def call(item: tuple[str, bytes]) -> object:
                    return r.set(item[0], item[1])

                return call

            def put(item: tuple[str, dict[str, bytes]]) -> object:
                return bench.put(item[0], item[1])

            gets: list[tuple[str, Callable[[Any], object], Callable[[int], Any]]] = [
                ("redis.get", r_redis.get, as_key),
                ("resp.get", r_engram.get, as_key),
                ("client.get", bench.get, as_key),
            ]
            sets: list[tuple[str, Callable[[Any], object], Callable[[int], Any]]] = [
                ("redis.set", redis_set(r_redis), as_item),
                ("resp.set", redis_set(r_engram), as_item),
                ("client.set", put, as_bins),
            ]
            for op, rows, warm_i, timed_i in (
                ("GET", gets, get_warm, get_timed),
                ("SET", sets, set_warm, set_timed),
            ):
                stats = measure_interleaved(
                    [
                        (fn, [conv(i) for i in timed_i], [conv(i) for i in warm_i])
                        for _, fn, conv in rows
                    ],
                    rounds=s.rounds,
                    meter=Meter(self.progress),
                    description=f"latency · {op}, 3 clients taking turns",
                )
                for (row_id, _, _), st in zip(rows, stats):
                    self.latency[row_id] = st

    # profile

    def run_profile(self, engram: EngramServer, out_dir: Path) -> None:
        prof = self.profile
        pyspy = shutil.which("py-spy")
        if pyspy is None:
            prof.note = "py-spy is not installed (`pip install py-spy`), so no profile was taken"
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        svg, raw = out_dir / "server-profile.svg", out_dir / "server-profile.txt"
        load = [
            self.redis_benchmark_exe, "-h", "127.0.0.1", "-p", str(engram.port),
            "-t", "get", "-c", str(self.sizes.clients), "-l", "-q",
        ]  # fmt: skip
        seconds = self.sizes.profile_seconds
        meter = Meter(self.progress)
        meter.start(f"py-spy · {seconds} s x 2 under GET load", 2)
        with _background(load) as loader:
            time.sleep(1.0)  # let the 50 connections open and the loop settle
            if loader.poll() is not None:
                prof.note = "redis-benchmark GET loop did not keep running; no profile taken"
                return
            cpu0, t0 = process_cpu_seconds(engram.pid), time.perf_counter()
            failures = []
            for fmt, path in (("raw", raw), ("flamegraph", svg)):
                cmd = [
                    pyspy, "record", "--pid", str(engram.pid), "-d", str(seconds),
                    "--format", fmt, "-o", str(path),
                    # Non-blocking sampling reads the stacks without stopping the server. A
                    # ptrace stop per sample (py-spy's default, and needed for --native)
                    # interrupts the server's write(2) calls and so skews the profile towards
                    # them: Connection._flush went from ~30% to ~70% of samples here.
                    *(["--native"] if self.args.profile_native else ["--nonblocking"]),
                ]  # fmt: skip
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
                except subprocess.TimeoutExpired:
                    failures.append(f"py-spy record ({fmt}) timed out")
                    continue
                finally:
                    meter.advance(1, force=True)
                if proc.returncode != 0 or not path.exists():
                    failures.append(_pyspy_failure(proc))
                else:
                    prof.files.append(_rel(path))
            cpu1, t1 = process_cpu_seconds(engram.pid), time.perf_counter()
        if cpu0 is not None and cpu1 is not None:
            prof.server_cpu_percent = 100 * (cpu1 - cpu0) / (t1 - t0)
        if not raw.exists():
            prof.note = "; ".join(failures) or "py-spy wrote no profile"
            return
        prof.ran = True
        prof.native = bool(self.args.profile_native)
        prof.samples, prof.self_top, prof.inclusive_top = top_frames(raw.read_text())
        if failures:
            prof.note = "; ".join(failures)


@contextlib.contextmanager
def _background(cmd: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _pyspy_failure(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr + proc.stdout).strip()
    if re.search(r"permission|ptrace|not permitted|EPERM", text, re.IGNORECASE):
        return (
            "py-spy cannot attach to the server (ptrace is restricted here: run as root, or "
            f"with CAP_SYS_PTRACE / kernel.yama.ptrace_scope=0): {text.splitlines()[-1]}"
        )
    return f"py-spy failed (exit {proc.returncode}): " + (text.splitlines() or ["no output"])[-1]


_LINE = re.compile(r":\d+\)$")


# Frames of engramdb's own code that are on every stack (the CLI and the server's entry):
# left out of the inclusive list, which is meant to show where requests spend their time.
PROFILE_ENTRY = ("engramdb/cli.py", "run_server (engramdb/server/app.py)")


def _frame_name(frame: str) -> str:
    """``func (pkg/file.py:123)`` → ``func (pkg/file.py)``, so lines of a function add up."""
    frame = _LINE.sub(")", frame.strip())
    match = re.match(r"^(.*) \((.*)\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    if path.startswith("/"):  # py-spy gives module paths; shorten any absolute one
        for marker in ("site-packages/", "/src/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        else:
            path = os.path.basename(path)
    return f"{func} ({path})"


def _request_frame(name: str) -> bool:
    return "(engramdb/" in name and not any(entry in name for entry in PROFILE_ENTRY)


def top_frames(
    collapsed: str, n: int = 15
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top functions by self samples, top engramdb functions by inclusive samples).

    ``collapsed`` is py-spy's raw format: one ``frame;frame;...;leaf COUNT`` line per stack.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += k
        own[frames[-1]] += k
        for name in set(frames):
            inclusive[name] += k
    ours = [(name, k) for name, k in inclusive.most_common() if _request_frame(name)]
    return total, own.most_common(n), ours[:n]


# verdicts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    name: str
    want: str
    measured: float | None  # the worst ratio, None when nothing was measured
    result: str  # PASS / FAIL / INCOMPLETE (measured tests pass, others errored) / n/a
    detail: str


def find_run(runs: Sequence[BenchRun], system: str, test: str, pipeline: int) -> BenchRun | None:
    """The run reported for a test: the median by rps of its repeats (an error if any had)."""
    found = [r for r in runs if r.system == system and r.test == test and r.pipeline == pipeline]
    if not found:
        return None
    failed = [r for r in found if r.error is not None]
    if failed:
        return failed[0]
    found.sort(key=lambda r: r.rps or 0.0)
    return found[len(found) // 2]


def rps_ratio(
    runs: Sequence[BenchRun], pair: tuple[str, str], test: str, pipeline: int
) -> float | None:
    ours, theirs = find_run(runs, pair[0], test, pipeline), find_run(runs, pair[1], test, pipeline)
    if ours is None or theirs is None or ours.rps is None or not theirs.rps:
        return None
    return ours.rps / theirs.rps


def cpu_ratio(
    runs: Sequence[BenchRun], pair: tuple[str, str], test: str, pipeline: int
) -> float | None:
    """Server CPU per request, engramdb / Redis (below 1 favours engramdb)."""
    ours, theirs = find_run(runs, pair[0], test, pipeline), find_run(runs, pair[1], test, pipeline)
    if ours is None or theirs is None:
        return None
    a, b = ours.cpu_us_per_request, theirs.cpu_us_per_request
    return None if a is None or not b else a / b


def cpu_verdict(runs: Sequence[BenchRun]) -> Verdict:
    ratios = {t: r for t in TESTS if (r := cpu_ratio(runs, FAST_PAIR, t, 1)) is not None}
    name = "server CPU per request, 50 conns, unpipelined: engramdb (async) / Redis, every test"
    if not ratios:
        return Verdict(name, f"≤ {TARGET_CPU:g}x", None, "n/a", "not measured")
    worst = max(ratios, key=ratios.__getitem__)
    result = "PASS" if ratios[worst] <= TARGET_CPU else "FAIL"
    detail = ", ".join(f"{t.upper()} {fmt_ratio(r)}" for t, r in ratios.items())
    return Verdict(name, f"≤ {TARGET_CPU:g}x", ratios[worst], result, detail)


def flat_verdict(runs: Sequence[BenchRun]) -> Verdict:
    name = "LPUSH server CPU per request on a long list / on an empty one (engramdb)"
    flat = sorted(
        (int(r.test.split("@")[1]), r.cpu_us_per_request)
        for r in runs
        if r.system == FAST_PAIR[0] and r.test.startswith("lpush@") and r.cpu_us_per_request
    )
    if len(flat) < 2:
        return Verdict(name, f"≤ {TARGET_FLAT:g}x", None, "n/a", "not measured")
    c0, c1 = flat[0][1], flat[-1][1]
    ratio = c1 / c0
    detail = ", ".join(f"{n:,} items: {c:.1f} µs" for n, c in flat)
    return Verdict(name, f"≤ {TARGET_FLAT:g}x", ratio, "PASS" if ratio <= TARGET_FLAT else "FAIL",
                   detail)  # fmt: skip


def workers_verdict(runs: Sequence[BenchRun]) -> Verdict:
    name = "throughput, 50 conns: engramdb --workers 2 / one worker, SET and GET"
    ratios = {
        t: r for t in ("set", "get") if (r := rps_ratio(runs, WORKERS_PAIR, t, 1)) is not None
    }
    if not ratios:
        return Verdict(name, "> 1x", None, "n/a", "not measured")
    worst = min(ratios, key=ratios.__getitem__)
    detail = ", ".join(f"{t.upper()} {fmt_ratio(r)}" for t, r in ratios.items())
    return Verdict(name, "> 1x", ratios[worst], "PASS" if ratios[worst] > 1 else "FAIL", detail)


def throughput_verdict(
    runs: Sequence[BenchRun], pair: tuple[str, str], tests: Sequence[str], target: float, name: str
) -> Verdict:
    ratios: dict[str, float] = {}
    errors: list[str] = []
    for test in tests:
        ours = find_run(runs, pair[0], test, 1)
        ratio = rps_ratio(runs, pair, test, 1)
        if ratio is not None:
            ratios[test] = ratio
        elif ours is not None and ours.error is not None:
            errors.append(test)
    worst = min(ratios, key=ratios.__getitem__) if ratios else None
    failed = [t for t, r in ratios.items() if r < target]
    parts = [f"{t.upper()} {fmt_ratio(r)}" for t, r in ratios.items()]
    parts += [f"{t.upper()} error" for t in errors]
    if failed:
        result = "FAIL"
    elif errors:
        result = "INCOMPLETE" if ratios else "FAIL"
    else:
        result = "PASS" if ratios else "n/a"
    detail = ", ".join(parts) or "not measured"
    return Verdict(name, f"≥ {target:g}x", ratios[worst] if worst else None, result, detail)


def verdicts(runs: Sequence[BenchRun], latency: dict[str, Stats]) -> list[Verdict]:
    out = [
        throughput_verdict(
            runs,
            FAST_PAIR,
            TESTS,
            TARGET_THROUGHPUT,
            "throughput, 50 conns, unpipelined: engramdb (async) / Redis (no fsync), every test",
        ),
        cpu_verdict(runs),
    ]
    for ours, theirs in LATENCY_PAIRS:
        row = LATENCY_ROW[ours]
        name = f"{row.op} p99, single client: {row.path} / redis-py → Redis"
        if ours not in latency or theirs not in latency:
            out.append(Verdict(name, f"≤ {TARGET_P99:g}x", None, "n/a", "not measured"))
            continue
        a, b = latency[ours], latency[theirs]
        ratio = a.p99_us / b.p99_us
        out.append(
            Verdict(
                name,
                f"≤ {TARGET_P99:g}x",
                ratio,
                "PASS" if ratio <= TARGET_P99 else "FAIL",
                f"{fmt_us(a.p99_us)} µs vs {fmt_us(b.p99_us)} µs",
            )
        )
    out.append(
        throughput_verdict(
            runs,
            DURABLE_PAIR,
            ("set",),
            TARGET_DURABLE,
            "durable SET, 50 conns: engramdb (sync) / Redis (appendfsync always)",
        )
    )
    out.append(
        throughput_verdict(
            runs,
            DURABLE_PAIR,
            [t for t in TESTS if t in WRITE_TESTS],
            TARGET_DURABLE,
            "durable writes, 50 conns, unpipelined: engramdb (sync) / Redis (always), every "
            "write test",
        )
    )
    out += [flat_verdict(runs), workers_verdict(runs)]
    return [v for v in out if v.result != "n/a" or v.detail != "not measured"] or out


def missed(vs: Sequence[Verdict]) -> bool:
    return any(v.result in ("FAIL", "INCOMPLETE") for v in vs)


# report ------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}" if x < 10 else f"{x:,.1f}"


def _rps(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu(run: BenchRun | None) -> str:
    x = None if run is None else run.cpu_us_per_request
    if run is None or x is None or run.server_cpu_s is None:
        return "—"
    ticks = round(run.server_cpu_s / _TICK_S)
    if ticks == 0:  # under the kernel's accounting resolution
        return f"< {_TICK_S / run.requests * 1e6:.1f}"
    return f"~{x:.1f}" if ticks < 10 else f"{x:.1f}"


def _core(run: BenchRun | None) -> str:
    x = None if run is None else run.server_core_percent
    return "—" if x is None else f"{x:.0f}%"


def _per_commit(run: BenchRun | None) -> str:
    x = None if run is None else run.writes_per_commit
    return "—" if x is None else f"{x:.1f}"


def _cell(run: BenchRun | None) -> str:
    if run is None:
        return "—"
    if run.error is not None:
        return "error"
    return _rps(run.rps)


def _lat(run: BenchRun | None) -> str:
    if run is None or run.error is not None:
        return "—"
    return f"{_ms(run.p50_ms)} / {_ms(run.p99_ms)}"


def _mark(ratio: float | None, ours: BenchRun | None, target: float | None) -> str:
    if target is None:
        return ""
    if ours is not None and ours.error is not None:
        return "error"
    if ratio is None:
        return "n/a"
    return "PASS" if ratio >= target else "FAIL"


def throughput_table(
    runs: Sequence[BenchRun], pair: tuple[str, str], target: float | None, tests: Sequence[str]
) -> str:
    ours_name, theirs_name = SYSTEMS[pair[0]].name, SYSTEMS[pair[1]].name
    rows = []
    for pipeline in PIPELINES:
        for test in TESTS:
            ours, theirs = (
                find_run(runs, pair[0], test, pipeline),
                find_run(runs, pair[1], test, pipeline),
            )
            if ours is None and theirs is None:
                continue
            ratio = rps_ratio(runs, pair, test, pipeline)
            judged = target if pipeline == 1 and test in tests else None
            rows.append(
                [
                    test.upper(),
                    str(pipeline),
                    _cell(theirs),
                    _cell(ours),
                    f"**{fmt_ratio(ratio)}**" if ratio is not None else "—",
                    _lat(theirs),
                    _lat(ours),
                    _cpu(theirs),
                    _cpu(ours),
                    fmt_ratio(cpu_ratio(runs, pair, test, pipeline)),
                    _core(ours),
                    _per_commit(ours),
                    _mark(ratio, ours, judged),
                ]
            )
    headers = [
        "test",
        "-P",
        f"{theirs_name} rps",
        f"{ours_name} rps",
        f"{ours_name} / {theirs_name}",
        f"{theirs_name} p50 / p99 ms",
        f"{ours_name} p50 / p99 ms",
        f"{theirs_name} CPU µs/req",
        f"{ours_name} CPU µs/req",
        "CPU ratio",
        f"{ours_name} core use",
        f"{ours_name} writes / commit",
        "target",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrrrl")


def errors_list(runs: Sequence[BenchRun]) -> list[str]:
    seen: dict[tuple[str, str], str] = {}
    for run in runs:
        if run.error is not None:
            seen.setdefault((run.system, run.test), run.error)
    return [
        f"- `{SYSTEMS[system].config}`, {test.upper()}: {error.replace('`', '')}"
        for (system, test), error in seen.items()
    ]


def render_markdown(run: Run, vs: Sequence[Verdict], machine: dict[str, str], quick: bool) -> str:
    s, runs = run.sizes, run.runs
    rb = "redis-benchmark -t TEST -c {c} -n {n} -q --csv".format(c=s.clients, n="N")
    if s.keyspace:
        rb = rb.replace(" -q", f" -r {s.keyspace} -q")
    lines = ["## Server: `engramdb serve` against `redis-server`", ""]
    lines.append(
        "`python bench/server.py`"
        + (" — **quick run (`--quick`, smoke sizes): indicative only**" if quick else "")
    )
    lines += [
        "",
        f"Throughput: `{rb}` (and with `-P 16`), one redis-benchmark process per test, "
        f"N = {s.requests:,} unpipelined and {s.pipelined_requests:,} with `-P 16` "
        f"({s.durable_requests:,} in both against the durable configurations). "
        "**engramdb runs with durability `async` when compared with Redis in its default "
        'non-persistent configuration (`--save "" --appendonly no`)**, because that Redis never '
        "fsyncs on a write either; durable writes are compared separately: engramdb `sync` "
        "(acknowledged after fsync, group commit) against Redis `--appendonly yes "
        "--appendfsync always`. Ratios are engramdb / Redis requests per second (above 1 "
        "favours engramdb); latencies in those tables are redis-benchmark's, per request "
        f"under {s.clients} connections.",
        "",
        "### Targets",
        "",
        markdown_table(
            ["target", "want", "measured (worst)", "detail", "result"],
            [[v.name, v.want, fmt_ratio(v.measured), v.detail, f"**{v.result}**"] for v in vs],
            "lcrll",
        ),
        "",
        '### Throughput: engramdb (`async`) vs Redis (`--save "" --appendonly no`)',
        "",
        throughput_table(runs, FAST_PAIR, TARGET_THROUGHPUT, TESTS),
        "",
        "### Durable writes: engramdb (`sync`) vs Redis (`--appendonly yes --appendfsync always`)",
        "",
    ]
    ours, theirs = (find_run(runs, sys_id, "set", 1) for sys_id in DURABLE_PAIR)
    headline = []
    for sys_id, r in zip(DURABLE_PAIR, (ours, theirs)):
        if r is None:
            continue
        headline.append(
            [
                f"`{SYSTEMS[sys_id].config}`",
                _cell(r),
                _ms(r.avg_ms) if r.error is None else "—",
                _ms(r.p50_ms) if r.error is None else "—",
                _ms(r.p99_ms) if r.error is None else "—",
                _ms(r.max_ms) if r.error is None else "—",
            ]
        )
    lines += [
        f"SET from {s.clients} concurrent connections (`redis-benchmark -t set -c {s.clients} "
        f"-n {s.durable_requests:,}`), each acknowledged only once durable:",
        "",
        markdown_table(
            ["server", "SET rps", "avg ms", "p50 ms", "p99 ms", "max ms"], headline, "lrrrrr"
        ),
        "",
        "Every test against the durable configurations (reads included, for reference; the "
        "target applies to the unpipelined write tests):",
        "",
        throughput_table(runs, DURABLE_PAIR, TARGET_DURABLE, sorted(WRITE_TESTS)),
        "",
        "### Client latency: one client thread, closed loop",
        "",
        f"{s.latency_calls:,} timed calls per row after {warmup_count(s):,} warmup calls, "
        "each timed on its own (`perf_counter_ns`, the harness of `bench/records.py`); "
        f"uniform random keys out of {s.keys:,} preloaded ones (same sequence on every side, "
        f"seed {s.seed}), {s.value_size}-byte values. Against engramdb at durability `async` "
        f"and Redis without persistence. The three clients take turns in {s.rounds} slices "
        "(`_common.measure_interleaved`), so the load other processes put on this machine "
        "falls on all of them alike. Latencies in µs; the last column is p99 / Redis's p99 "
        "(below 1 favours engramdb).",
        "",
    ]
    rows = []
    for row in LATENCY_ROWS:
        st = run.latency.get(row.id)
        if st is None:
            continue
        redis_id = f"redis.{row.id.split('.')[1]}"
        ratio = st.p99_us / run.latency[redis_id].p99_us if redis_id in run.latency else None
        rows.append(
            [
                row.op,
                row.path,
                f"`{row.call}`",
                fmt_us(st.p50_us),
                fmt_us(st.p99_us),
                fmt_us(st.p999_us),
                f"{st.ops_s:,.0f}",
                fmt_ratio(ratio),
            ]
        )
    lines += [
        markdown_table(
            ["op", "client → server", "one call", "p50", "p99", "p999", "ops/s", "p99 / Redis"],
            rows,
            "lllrrrrr",
        ),
        "",
    ]
    lines += extra_markdown(run)
    lines += profile_markdown(run.profile, run.args.profile)
    lines += ["### Notes", ""]
    errors = errors_list(runs)
    if errors:
        lines += [
            "- **Errors**: a test marked `error` failed in redis-benchmark (typically a "
            "command the server does not implement yet); its first message per server:",
            *(f"  {e}" for e in errors),
        ]
    lines += [
        "- **Server CPU µs/req**: user + system CPU of the server process (all threads, from "
        f"`/proc/PID/stat`, {_TICK_S * 1000:g} ms ticks: `~` marks fewer than 10 ticks, `<` "
        "none) during the run, over the requests made: the cost of a request independent of "
        "how busy the machine was. **Core use** is that CPU time over "
        "the run's wall time: near 100% means the server process was the bottleneck, well "
        "below it means something else (redis-benchmark, other processes, fsync) was. "
        "**Writes / commit**: writes per group-commit transaction (one fsync each at "
        "durability `sync`), from the server's stats around the run.",
        "- **Single-client p99** rests on 1% of the calls, and on a small shared machine those "
        "are the calls that waited for a core: it can move several-fold between runs (the "
        "load averages below say how busy the machine was). p50 is the steadier figure.",
        "- Everything shares this machine's cores: the server, redis-benchmark (one thread, "
        "itself often the bottleneck against Redis with `-P 16`) and, in the latency runs, the "
        "client. Both servers listen on 127.0.0.1 (TCP).",
        "- Without `-r` (as here unless `--keyspace` is given) each redis-benchmark test hits "
        "one key; LPUSH always pushes onto one list (`mylist`), which so grows by N items per "
        "run: a server whose push cost grows with the list's length shows it in that row.",
        f"- A redis-benchmark run still going after {s.run_timeout} s (`--run-timeout`) is "
        "stopped and recorded as an error (timed out).",
        f"- Each test runs {s.repeats} time(s) per server, alternating between the two "
        "servers of a comparison; the tables show the median run by rps (an error in any "
        "repeat shows as the test's error). Each server is flushed (FLUSHALL) before every "
        "run. An engramdb list is one record, capped at 1 MiB (~260k three-byte items).",
        "",
        "### Machine",
        "",
        machine_markdown(machine),
    ]
    return "\n".join(lines)


def extra_markdown(run: Run) -> list[str]:
    """The lpush-flat and workers tables."""
    s, lines = run.sizes, []
    flat = [r for r in run.runs if r.test.startswith("lpush@")]
    if flat:
        rows = [
            [SYSTEMS[r.system].name, f"{int(r.test.split('@')[1]):,}", _cell(r), _ms(r.avg_ms),
             _cpu(r), _core(r)]
            for r in flat
        ]  # fmt: skip
        lines += [
            "### LPUSH as one list grows",
            "",
            f"At each length, `redis-benchmark -t lpush -c {s.clients} -n "
            f"{s.flat_requests:,}` onto one list (`mylist`), after untimed pipelined LPUSHes "
            f"grew it to that length (up to {s.flat_items:,} items).",
            "",
            markdown_table(
                ["server", "list length", "rps", "avg ms", "CPU µs/req", "core use"], rows, "lrrrrr"
            ),
            "",
        ]
    workers = [r for r in run.runs if r.system in WORKERS_PAIR]
    if workers:
        rows = []
        for test in ("set", "get"):
            for sys_id in WORKERS_PAIR[::-1]:
                r = find_run(run.runs, sys_id, test, 1)
                if r is not None:
                    rows.append([SYSTEMS[sys_id].config, test.upper(), _cell(r), _lat(r),
                                 _cpu(r), _core(r)])  # fmt: skip
        lines += [
            "### Worker processes",
            "",
            f"`redis-benchmark -t TEST -c {s.clients} -n {s.workers_requests:,}` against one "
            "worker process and against `--workers 2` (CPU: every process of the server; "
            "core use 200% is both cores of a 2-core machine).",
            "",
            markdown_table(
                ["server", "test", "rps", "p50 / p99 ms", "CPU µs/req", "core use"], rows, "llrrrr"
            ),
            "",
        ]
    return lines


def profile_markdown(prof: Profile, requested: str | None) -> list[str]:
    if requested is None:
        return []
    lines = ["### Where engramdb's time goes (py-spy)", ""]
    if not prof.ran:
        reason = prof.note or (
            "every target was met, so no profile was taken (`--profile always` takes one anyway)"
        )
        return [*lines, reason + ".", ""]
    cpu = (
        f"; the server used {prof.server_cpu_percent:.0f}% of one core meanwhile"
        if prof.server_cpu_percent is not None
        else ""
    )
    lines += [
        f"py-spy sampled `engramdb serve --durability async` while `redis-benchmark -t get "
        f"-c 50 -l` loaded it: {prof.samples:,} samples of active threads{cpu}. Files: "
        + ", ".join(f"`{f}`" for f in prof.files)
        + ". "
        + (
            "C frames included (`--native`): libc entries such as `write` are system calls. "
            "py-spy has to stop the server for each such sample, which interrupts system "
            "calls and so overstates them."
            if prof.native
            else "Python frames only: a function's self time includes the C code it calls "
            "(uvloop's `transport.write` and its `write(2)` count as `Connection._flush`; the "
            "event loop's own polling and reading count as `Runner.run`). "
            "`--profile-native` shows the C frames."
        )
        + " py-spy counts a thread as busy while it is runnable, so on a crowded machine "
        "time spent preempted counts too.",
        "",
    ]
    if prof.note:
        lines += [f"Note: {prof.note}.", ""]

    def table(title: str, top: list[tuple[str, int]]) -> list[str]:
        rows = [
            [f"`{name}`", f"{k:,}", f"{100 * k / max(prof.samples, 1):.1f}%"] for name, k in top
        ]
        return [title, "", markdown_table(["function", "samples", "share"], rows, "lrr"), ""]

    lines += table("Self time (the function itself was running):", prof.self_top[:12])
    lines += table(
        "Inclusive time of engramdb's own functions (on the stack; the CLI and server entry, "
        "on every stack, left out):",
        prof.inclusive_top[:12],
    )
    return lines


def render_terminal(console: Console, run: Run, vs: Sequence[Verdict]) -> None:
    for title, pair in (
        ("throughput: engramdb async vs Redis (no fsync)", FAST_PAIR),
        ("durable: engramdb sync vs Redis appendfsync always", DURABLE_PAIR),
    ):
        if not any(r.system in pair and "@" not in r.test for r in run.runs):
            continue
        table = Table(title=title, title_justify="left")
        columns = ("test", "-P", "Redis rps", "engramdb rps", "ratio", "Redis CPU µs/req",
                   "CPU µs/req", "CPU ratio", "core")  # fmt: skip
        for name in columns:
            table.add_column(name, justify="left" if name == "test" else "right")
        for pipeline in PIPELINES:
            for test in TESTS:
                ours, theirs = (find_run(run.runs, x, test, pipeline) for x in pair)
                if ours is None and theirs is None:
                    continue
                ratio = rps_ratio(run.runs, pair, test, pipeline)
                table.add_row(
                    test.upper(),
                    str(pipeline),
                    _cell(theirs),
                    _cell(ours),
                    fmt_ratio(ratio),
                    _cpu(theirs),
                    _cpu(ours),
                    fmt_ratio(cpu_ratio(run.runs, pair, test, pipeline)),
                    _core(ours),
                )
            table.add_section()
        console.print(table)
    extra = [r for r in run.runs if r.test.startswith("lpush@") or r.system in WORKERS_PAIR]
    if extra:
        table = Table(title="lpush-flat and workers runs", title_justify="left")
        for name in ("server", "test", "rps", "avg ms", "CPU µs/req", "core"):
            table.add_column(name, justify="left" if name in ("server", "test") else "right")
        for r in extra:
            table.add_row(
                SYSTEMS[r.system].name if r.system in WORKERS_PAIR else r.system,
                r.test,
                _cell(r),
                _ms(r.avg_ms),
                _cpu(r),
                _core(r),
            )
        console.print(table)
    if run.latency:
        table = Table(title="client latency, single thread (µs)", title_justify="left")
        for name in ("op", "client → server", "p50", "p99", "p999", "ops/s"):
            table.add_column(name, justify="left" if name in ("op", "client → server") else "right")
        for row in LATENCY_ROWS:
            if (st := run.latency.get(row.id)) is not None:
                table.add_row(
                    row.op,
                    row.path,
                    fmt_us(st.p50_us),
                    fmt_us(st.p99_us),
                    fmt_us(st.p999_us),
                    f"{st.ops_s:,.0f}",
                )
        console.print(table)
    prof = run.profile
    if prof.ran:
        console.print(
            f"[bold]py-spy[/bold]: {prof.samples:,} samples"
            + (
                f", server at {prof.server_cpu_percent:.0f}% of a core"
                if prof.server_cpu_percent
                else ""
            )
        )
        for title, top in (("self", prof.self_top), ("inclusive", prof.inclusive_top)):
            console.print(f"  top by {title} time:")
            for name, k in top[:10]:
                console.print(f"    {100 * k / max(prof.samples, 1):5.1f}%  {name}", markup=False)
    if prof.note:
        console.print(f"[yellow]profile: {prof.note}[/yellow]")
    for v in vs:
        color = {"PASS": "green", "FAIL": "red"}.get(v.result, "yellow")
        console.print(
            f"[{color}]{v.result}[/{color}]  {v.name} = {fmt_ratio(v.measured)} "
            f"(target {v.want}; {v.detail})"
        )


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    global TESTS, PIPELINES
    parser = argparse.ArgumentParser(
        description="engramdb serve vs redis-server: redis-benchmark throughput, client "
        "latency and durable writes, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~30-60 s smoke run)")
    for f in fields(Sizes):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(getattr(FULL, f.name)),
            default=None,
            help=f"default {getattr(FULL, f.name):,}, --quick {getattr(QUICK, f.name):,}",
        )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="missed",
        choices=("missed", "always"),
        help="sample the engramdb server with py-spy under GET load when a target is missed "
        "(or 'always')",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: include C frames (uvloop, libc syscalls) via py-spy --native",
    )
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument("--redis-server", help="redis-server executable (default: on PATH)")
    parser.add_argument("--redis-benchmark", help="redis-benchmark executable (default: on PATH)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "BENCHMARKS.md",
        help="markdown file whose 'server' section is rewritten",
    )
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "server.json")
    parser.add_argument(
        "--only",
        help=f"comma-separated phases to run ({', '.join(PHASES)}); a partial run prints its "
        "figures and writes neither BENCHMARKS.md nor the JSON",
    )
    parser.add_argument(
        "--tests", help=f"comma-separated redis-benchmark tests ({','.join(TESTS_ALL)})"
    )
    parser.add_argument("--pipelines", help="comma-separated -P depths (default 1,16)")
    args = parser.parse_args(argv)
    args.phases = tuple(PHASES)
    if args.only:
        args.phases = tuple(x.strip() for x in args.only.split(","))
        if not set(args.phases) <= set(PHASES):
            parser.error(f"--only takes some of {', '.join(PHASES)}")
    if args.tests:
        TESTS = tuple(x.strip().lower() for x in args.tests.split(","))
        if not set(TESTS) <= {*TESTS_ALL}:
            parser.error(f"--tests takes some of {','.join(TESTS_ALL)}")
    if args.pipelines:
        PIPELINES = tuple(int(x) for x in args.pipelines.split(","))
    args.partial = bool(args.only or args.tests or args.pipelines)
    base = QUICK if args.quick else FULL
    chosen = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    sizes = Sizes(**{k: (v if v is not None else getattr(base, k)) for k, v in chosen.items()})
    positive = (
        "requests",
        "pipelined_requests",
        "durable_requests",
        "clients",
        "repeats",
        "latency_calls",
        "rounds",
        "run_timeout",
        "profile_seconds",
    )
    if any(getattr(sizes, name) < 1 for name in (*positive, "keys", "value_size")):
        parser.error("sizes must be positive")
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)

    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-server-", args.data_dir))
        run = Run(sizes, args, root)
        if not run.redis_server_exe:
            console.print("[red]redis-server is not installed (Debian: apt install redis-server)")
            return 2
        if not run.redis_benchmark_exe:
            console.print("[red]redis-benchmark is not installed (Debian: apt install redis-tools)")
            return 2
        machine = machine_info(
            ("engramdb", "redis", "hiredis", "lmdb", "uvloop"),
            data_dir=root,
            extra={
                "redis-server": f"{tool_version(run.redis_server_exe)} ({run.redis_server_exe})",
                "redis-benchmark": tool_version(run.redis_benchmark_exe),
                "redis-py parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure Python",
            },
        )
        try:
            stack.enter_context(run.progress)
            vs = execute(run, root)
        except (RedisUnavailable, EngramUnavailable) as e:
            console.print(f"[red]{e}[/red]")
            return 2
        if hasattr(os, "getloadavg"):
            machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    if args.partial:
        render_terminal(console, run, vs)
        console.print("partial run (--only/--tests/--pipelines): BENCHMARKS.md and JSON untouched")
        return 0
    markdown = render_markdown(run, vs, machine, args.quick)
    replace_section(args.output, SECTION, markdown)
    write_json(
        args.json,
        {
            "benchmark": SECTION,
            "quick": args.quick,
            "sizes": asdict(sizes),
            "machine": machine,
            "systems": {k: asdict(v) for k, v in SYSTEMS.items()},
            "redis_benchmark": [
                {
                    **asdict(r),
                    "cpu_us_per_request": r.cpu_us_per_request,
                    "server_core_percent": r.server_core_percent,
                    "writes_per_commit": r.writes_per_commit,
                    "reported": find_run(run.runs, r.system, r.test, r.pipeline) is r,
                }
                for r in run.runs
            ],
            "ratios": {
                f"{pair[0]}/{pair[1]}": {
                    f"{test}-P{pipeline}": rps_ratio(run.runs, pair, test, pipeline)
                    for pipeline in PIPELINES
                    for test in TESTS
                }
                for pair in (FAST_PAIR, DURABLE_PAIR)
            },
            "latency": {
                rid: {**asdict(LATENCY_ROW[rid]), **st.to_json()} for rid, st in run.latency.items()
            },
            "targets": [asdict(v) for v in vs],
            "profile": asdict(run.profile) if args.profile else None,
            "phase_seconds": run.phase_seconds,
        },
    )
    render_terminal(console, run, vs)
    console.print(f"wrote {_rel(args.output)} (section '{SECTION}') and {_rel(args.json)}")
    return 0


def execute(run: Run, root: str) -> list[Verdict]:
    """Every phase asked for, each with its own servers, stopped before the next starts."""
    s = run.sizes
    phases = run.args.phases
    # Durable first: its servers write to disk, and their directories go before the rest.
    if "durable" in phases:
        began = time.perf_counter()
        with contextlib.ExitStack() as stack:
            aof = stack.enter_context(
                RedisServer(run.redis_server_exe, extra_args=REDIS_AOF_ARGS, parent=root)
            )
            sync = stack.enter_context(
                EngramServer(os.path.join(root, "engramdb-sync"), durability="sync")
            )
            client = stack.enter_context(engramdb.connect(sync.url))
            endpoints = [
                redis_endpoint("redis_always", aof),
                engram_endpoint("engramdb_sync", sync, client),
            ]
            run.throughput("durable", endpoints, {1: s.durable_requests, 16: s.durable_requests})
        run.phase_seconds["durable"] = time.perf_counter() - began

    fast_phases = {"throughput", "latency", "lpush-flat"} & set(phases)
    if fast_phases or run.args.profile == "always":
        with contextlib.ExitStack() as stack:
            plain = stack.enter_context(RedisServer(run.redis_server_exe, parent=root))
            fast = stack.enter_context(
                EngramServer(os.path.join(root, "engramdb-async"), durability="async")
            )
            endpoints = [
                redis_endpoint("redis", plain),
                engram_endpoint("engramdb", fast, stack.enter_context(engramdb.connect(fast.url))),
            ]
            if "throughput" in phases:
                began = time.perf_counter()
                run.throughput("no fsync", endpoints, {1: s.requests, 16: s.pipelined_requests})
                run.phase_seconds["throughput"] = time.perf_counter() - began
            if "latency" in phases:
                began = time.perf_counter()
                run.latency_runs(plain.port, fast)
                run.phase_seconds["latency"] = time.perf_counter() - began
            if "lpush-flat" in phases:
                began = time.perf_counter()
                run.lpush_flat(endpoints)
                run.phase_seconds["lpush-flat"] = time.perf_counter() - began
            vs = verdicts(run.runs, run.latency)
            if run.args.profile == "always" or (run.args.profile == "missed" and missed(vs)):
                began = time.perf_counter()
                run.run_profile(fast, run.args.json.parent)
                run.phase_seconds["profile"] = time.perf_counter() - began

    if "workers" in phases:
        began = time.perf_counter()
        with contextlib.ExitStack() as stack:
            endpoints = []
            for sys_id, n in (("engramdb_w1", 1), ("engramdb_w2", 2)):
                server = stack.enter_context(
                    EngramServer(
                        os.path.join(root, f"engramdb-{sys_id}"),
                        durability="async",
                        extra_args=("--workers", str(n)),
                    )
                )
                endpoints.append(
                    Endpoint(sys_id, server.port, server.pid, lambda: b"", None)  # no flush
                )
            run.workers_runs(endpoints)
        run.phase_seconds["workers"] = time.perf_counter() - began
    return verdicts(run.runs, run.latency)


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
