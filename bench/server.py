"""``engramdb serve`` against ``redis-server``: throughput, server CPU, durable writes, latency.

    python bench/server.py [--quick]   # --help: every size

Fresh servers per phase. throughput: ``redis-benchmark -t TEST -c 50 -n N -q --csv``, plain and
``-P 16``, engramdb ``async`` against Redis ``--save "" --appendonly no`` (neither fsyncs),
``--repeats`` runs per test taking turns (each flushed first), the median by rps reported with
the server's CPU time and group commits. durable: engramdb ``sync`` against Redis
``--appendfsync always``. latency: redis-py → Redis, redis-py → engramdb and the engramdb
client taking turns on one thread. lpush-flat: LPUSH as one list grows. tracking: SET while a
client tracks (CLIENT TRACKING). workers: ``--workers 2`` against one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

import engramdb
from _common import (
    EngramServer,
    Meter,
    RedisServer,
    Report,
    add_sizes,
    exit_on_sigterm,
    find_redis_server,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure_interleaved,
    new_progress,
    process_cpu_seconds,
    sizes_from,
    skip,
    temp_dir,
)

TESTS = ("set", "get", "incr", "lpush", "lpop", "sadd", "hset", "zadd")  # redis-benchmark order
WRITE_TESTS = tuple(t for t in TESTS if t != "get")
SYSTEMS = {  # id: (name in tables, configuration)
    "redis": ("Redis", 'redis-server --save "" --appendonly no'),
    "engramdb": ("engramdb", "engramdb serve --durability async"),
    "redis_always": ("Redis", "redis-server --appendonly yes --appendfsync always"),
    "engramdb_sync": ("engramdb", "engramdb serve --durability sync"),
    "engramdb_w1": ("engramdb, 1 worker", "engramdb serve --durability async"),
    "engramdb_tracked": ("engramdb, a client tracking", "CLIENT TRACKING ON, RESP3"),
    "engramdb_bcast": ("engramdb, a BCAST client", "CLIENT TRACKING ON BCAST, RESP3"),
    "engramdb_w2": ("engramdb, 2 workers", "engramdb serve --durability async --workers 2"),
}
FAST, DURABLE = ("engramdb", "redis"), ("engramdb_sync", "redis_always")  # (ours, peer)
WORKERS = ("engramdb_w2", "engramdb_w1")
LATENCY_ROWS = (  # (op, client → server, the call timed); each op's Redis row first
    ("GET", "redis-py → Redis", "r.get(key)"),
    ("GET", "redis-py → engramdb", "r.get(key)"),
    ("GET", "engramdb client → engramdb", 's.get(key), s = records("bench")'),
    ("SET", "redis-py → Redis", "r.set(key, value)"),
    ("SET", "redis-py → engramdb", "r.set(key, value)"),
    ("SET", "engramdb client → engramdb", 's.put(key, {"value": value})'),
)
THROUGHPUT = ["test", "-P", "Redis rps", "engramdb rps", "engramdb / Redis",
              "Redis p50 / p99 ms", "engramdb p50 / p99 ms", "Redis CPU µs/req",
              "engramdb CPU µs/req", "CPU ratio", "engramdb core use",
              "engramdb writes / commit", "target"]  # fmt: skip
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
Run = dict[str, Any]  # one redis-benchmark process: one test, one server, one pipeline depth


@dataclass(frozen=True)
class Sizes:
    requests: int = 100_000  # redis-benchmark -n, unpipelined
    pipelined_requests: int = 500_000  # -n with -P 16
    durable_requests: int = 20_000  # -n against engramdb sync / Redis appendfsync always
    clients: int = 50  # redis-benchmark -c
    repeats: int = 3  # runs per test and server; the median is reported
    latency_calls: int = 50_000  # timed calls per operation and client
    keys: int = 10_000  # preloaded keys for the latency runs
    value_size: int = 100
    warmup: float = 0.1  # latency warmup calls, a fraction of the timed ones (at least 200)
    rounds: int = 20  # latency: the clients take turns in this many slices
    seed: int = 1
    run_timeout: int = 300  # seconds before a redis-benchmark run is stopped as an error
    flat_items: int = 1_000_000  # lpush-flat: the list grows to this many items
    flat_requests: int = 20_000  # lpush-flat: timed LPUSHes at each length
    workers_requests: int = 100_000
    workers_pipelined_requests: int = 400_000  # -n with -P 16


FULL = Sizes()
QUICK = Sizes(requests=10_000, pipelined_requests=20_000, durable_requests=5_000,
              latency_calls=10_000, keys=2_000, run_timeout=60,
              flat_items=100_000, flat_requests=5_000, workers_requests=20_000,
              workers_pipelined_requests=40_000)  # fmt: skip


@dataclass
class Endpoint:
    system: str
    server: RedisServer | EngramServer
    client: Any = None  # an engramdb client, for the group-commit counters

    def flush(self) -> None:
        s = self.server
        if isinstance(s, RedisServer):
            s.command("FLUSHALL")
        else:  # it answers once the flushed structures' elements are gone: 1.3 s for 1M
            s.command_reply("FLUSHALL", timeout=120)

    def group_commit(self) -> tuple[int, int] | None:
        figures = self.client.stats()["group_commit"] if self.client else None
        return (int(figures["batches"]), int(figures["writes"])) if figures else None


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` and every process under it (``--workers N`` serves from N)."""
    total = process_cpu_seconds(pid)
    if pid is None or total is None:
        return total
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                total += sum(tree_cpu_seconds(int(c)) or 0.0 for c in f.read().split())
    return total


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children: the redis-benchmark runs (the servers
    are children too, but still running, so not counted)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def settle(pid: int | None, timeout: float = 30.0) -> None:
    """Wait until the server is idle (under 5% of a core for half a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(0.5)
        after = tree_cpu_seconds(pid)
        if before is None or after is None or after - before < 0.025:
            return


def parse_csv(proc: subprocess.CompletedProcess[str], test: str) -> Run:
    """redis-benchmark's ``--csv`` figures of ``test``, or the error it printed instead."""
    names = ("rps", "avg_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    failed = proc.returncode != 0 or "Error from server" in proc.stderr + proc.stdout
    for row in ([x.strip('"') for x in line.split(",")] for line in proc.stdout.splitlines()):
        if not failed and len(row) > len(names) and row[0].lower() == test:
            with contextlib.suppress(ValueError):
                got = dict(zip(names, map(float, row[1 : 1 + len(names)])))
                return {k: v for k, v in got.items() if k != "min_ms"}
    lines = f"{proc.stderr}\n{proc.stdout}".splitlines()
    error = next((x.strip()[:300] for x in lines if "error" in x.lower()), None)
    return {"error": error or f"redis-benchmark printed no result for {test} (exit status "
                              f"{proc.returncode})"}  # fmt: skip


class Bench:
    """The phases; every redis-benchmark run lands in ``runs``, in the order it ran."""

    def __init__(self, sizes: Sizes, rb: str) -> None:
        self.s, self.rb = sizes, rb
        self.progress = new_progress()
        self.runs: list[Run] = []
        self.latency: list[Any] = []  # a Stats per LATENCY_ROWS

    def redis_benchmark(self, port: int, args: str, **how: Any) -> Any:
        argv = [self.rb, "-h", "127.0.0.1", "-p", str(port), *args.split()]
        return subprocess.run(argv, capture_output=True, text=True, timeout=self.s.run_timeout,
                              **how)  # fmt: skip

    def fill(self, e: Endpoint, items: int) -> None:
        """Untimed LPUSHes onto redis-benchmark's list, then wait for the server to settle."""
        if items > 0:
            self.redis_benchmark(e.server.port, f"-t lpush -c 8 -n {items} -P 64 -q", check=True)
        settle(e.server.pid)

    def bench(self, task: Any, e: Endpoint, test: str, n: int, p: int = 1, repeat: int = 0) -> Run:
        """One redis-benchmark run; a server error or a hang is recorded, not raised."""
        self.progress.update(task, description=f"{e.system} {test} -P {p}")
        self.progress.refresh()
        args = f"-t {test} -c {self.s.clients} -n {n} -q --csv" + f" -P {p}" * (p > 1)
        run: Run = {"system": e.system, "test": test, "pipeline": p, "requests": n,
                    "clients": self.s.clients, "repeat": repeat}  # fmt: skip
        gc0, cpu0, began = e.group_commit(), tree_cpu_seconds(e.server.pid), time.perf_counter()
        client0 = children_cpu_seconds()
        try:
            proc = self.redis_benchmark(e.server.port, args)
        except subprocess.TimeoutExpired:
            proc = None
        run["wall_s"], cpu1 = time.perf_counter() - began, tree_cpu_seconds(e.server.pid)
        if proc is None:
            run["error"] = f"timed out after {self.s.run_timeout:.0f} s"
        else:
            run["server_cpu_s"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
            run["client_cpu_s"] = children_cpu_seconds() - client0
            run.update(parse_csv(proc, test))
        if gc0 is not None and (gc1 := e.group_commit()) is not None:
            run.update(commits=gc1[0] - gc0[0], committed_writes=gc1[1] - gc0[1])
        self.runs.append(run)
        self.progress.update(task, advance=1)
        return run

    def throughput(self, phase: str, endpoints: list[Endpoint], n: dict[int, int],
                   tests: Sequence[str] = TESTS, flush: bool = True) -> None:  # fmt: skip
        """Every test at every depth (``n``: its requests) on every endpoint, taking turns;
        each flushed before each run (LPUSH grows one list: repeats must not pile onto it)."""
        s = self.s
        task = self.progress.add_task(phase, total=len(n) * len(tests) * s.repeats * len(endpoints))
        for p, requests in n.items():
            for test, repeat, e in itertools.product(tests, range(s.repeats), endpoints):
                if flush:
                    e.flush()
                if test == "lpop":  # it pops what an untimed LPUSH run pushed
                    self.fill(e, requests)
                self.bench(task, e, test, requests, p, repeat)

    def lpush_flat(self, endpoints: list[Endpoint]) -> None:
        """At each length of one list, ``repeats`` runs of ``flat_requests`` timed LPUSHes
        (test ``lpush@LENGTH``; each run grows the list by that much)."""
        s = self.s
        lengths = sorted({0, *(n for n in (10_000, 100_000) if n < s.flat_items), s.flat_items})
        task = self.progress.add_task("lpush-flat", total=len(lengths) * len(endpoints) * s.repeats)
        for e in endpoints:
            e.flush()
            have = 0
            for length in lengths:
                self.fill(e, length - have)
                for repeat in range(s.repeats):
                    run = self.bench(task, e, "lpush", s.flat_requests, repeat=repeat)
                    run["test"] = f"lpush@{length}"
                have = length + s.repeats * s.flat_requests
            e.flush()

    def tracking(self, e: Endpoint) -> None:
        """SET with nobody tracking, with a client tracking (the log is read back after each
        commit) and with a BCAST client sent every write, taking turns."""
        s = self.s
        modes = {"engramdb": None, "engramdb_tracked": "", "engramdb_bcast": " BCAST"}
        task = self.progress.add_task("tracking", total=len(modes) * s.repeats)
        for repeat, (system, option) in itertools.product(range(s.repeats), modes.items()):
            with _tracker(e.server.port, option):
                e.flush()
                run = self.bench(task, Endpoint(system, e.server, e.client), "set", s.requests,
                                 repeat=repeat)  # fmt: skip
                run["test"] = "set@tracking"

    def latency_runs(self, redis_port: int, engram: EngramServer) -> None:
        """GET and SET of seeded random preloaded keys, the same sequence through each client."""
        s, rng = self.s, random.Random(self.s.seed)
        keys = [f"bench:{i:08d}" for i in range(s.keys)]
        values = [rng.randbytes(s.value_size) for _ in range(64)]
        bins = [{"value": v} for v in values]
        warm = max(200, int(s.latency_calls * s.warmup))
        draws = [[[rng.randrange(s.keys) for _ in range(n)] for n in (warm, s.latency_calls)]
                 for _ in "GS"]  # fmt: skip
        with contextlib.ExitStack() as stack:
            rr, re_ = (stack.enter_context(redis.Redis(port=port, protocol=2))
                       for port in (redis_port, engram.port))  # fmt: skip
            records = stack.enter_context(engramdb.connect(engram.url)).records("bench")
            for r, lo in itertools.product((rr, re_), range(0, s.keys, 1000)):
                r.mset({key: values[i % 64] for i, key in enumerate(keys[lo : lo + 1000], lo)})
            for i, key in enumerate(keys):
                records.put(key, bins[i % 64])
            for i in (0, s.keys - 1):  # the same data on every side, or it means nothing
                assert rr.get(keys[i]) == re_.get(keys[i]) == values[i % 64], "a key was lost"
                assert getattr(records.get(keys[i]), "bins", None) == bins[i % 64], "record lost"
            sides: list[tuple[Callable[[Any], object], Callable[[int], Any]]] = [
                (rr.get, keys.__getitem__), (re_.get, keys.__getitem__),
                (records.get, keys.__getitem__),
                (lambda a: rr.set(a[0], a[1]), lambda i: (keys[i], values[i % 64])),
                (lambda a: re_.set(a[0], a[1]), lambda i: (keys[i], values[i % 64])),
                (lambda a: records.put(a[0], a[1]), lambda i: (keys[i], bins[i % 64])),
            ]  # fmt: skip
            for k, (warm_i, timed_i) in enumerate(draws):
                self.latency += measure_interleaved(
                    [(fn, [arg(i) for i in timed_i], [arg(i) for i in warm_i])
                     for fn, arg in sides[3 * k : 3 * k + 3]],
                    rounds=s.rounds, meter=Meter(self.progress),
                    description=f"latency · {'GS'[k]}ET, 3 clients taking turns",
                )  # fmt: skip


# the report --------------------------------------------------------------------------------


@contextlib.contextmanager
def _tracker(port: int, option: str | None) -> Any:
    """A RESP3 connection with ``CLIENT TRACKING ON<option>`` (None: none) reading whatever
    it is sent, for as long as the block runs."""
    if option is None:
        yield
        return
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"HELLO 3\r\nCLIENT TRACKING ON" + option.encode() + b"\r\nPING\r\n")
    seen = b""
    while b"+PONG" not in seen:
        seen += conn.recv(65536)

    def drain() -> None:
        with contextlib.suppress(OSError):
            while conn.recv(1 << 20):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield
    finally:
        conn.close()
        reader.join(timeout=5)


def find_run(runs: Sequence[Run], system: str, test: str, p: int = 1) -> Run | None:
    """The run reported for a test: the median by rps of its repeats (an error if any had)."""
    found = [r for r in runs if (r["system"], r["test"], r["pipeline"]) == (system, test, p)]
    failed = [r for r in found if r.get("error")]
    if failed or not found:
        return failed[0] if failed else None
    return sorted(found, key=lambda r: r.get("rps") or 0.0)[len(found) // 2]


def fmt_cpu(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def flat_lengths(runs: Sequence[Run]) -> list[int]:
    return sorted({int(r["test"][6:]) for r in runs if r["test"][:6] == "lpush@"})


def median_cpu_us(runs: Sequence[Run], system: str, test: str) -> float | None:
    """The median over a test's repeats of the server's CPU per request (None: any failed)."""
    found = [cpu_us(r) for r in runs if (r["system"], r["test"]) == (system, test)]
    if not found or None in found:
        return None
    return statistics.median(x for x in found if x is not None)


def cpu_us(r: Run | None) -> float | None:
    if r is None or r.get("server_cpu_s") is None or r.get("error"):
        return None
    return float(r["server_cpu_s"] / r["requests"] * 1e6)


def ratio(runs: Sequence[Run], pair: Sequence[str], test: str, p: int = 1, cpu: bool = False,
          ) -> float | None:  # fmt: skip
    """engramdb / peer, of requests per second or (``cpu``) server CPU per request."""
    a, b = ((cpu_us(r) if cpu else r and r.get("rps")) for r in (find_run(runs, x, test, p)
                                                                  for x in pair))  # fmt: skip
    return a / b if a is not None and b else None


def ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}" if x < 10 else f"{x:,.1f}"


def cells(r: Run | None) -> tuple[str, str, str, str]:
    """A run's rps, p50 / p99 ms, CPU µs per request (``~``: under 10 kernel ticks of CPU
    time, ``<``: none) and core use (its CPU time over its wall time)."""
    if r is None or r.get("error"):
        return ("—" if r is None else "error"), "—", "—", "—"
    rps, lat = f"{r['rps']:,.0f}", f"{ms(r['p50_ms'])} / {ms(r['p99_ms'])}"
    if (x := cpu_us(r)) is None:
        return rps, lat, "—", "—"
    ticks, core = round(r["server_cpu_s"] / TICK_S), f"{100 * r['server_cpu_s'] / r['wall_s']:.0f}%"
    if ticks == 0:
        return rps, lat, f"< {TICK_S / r['requests'] * 1e6:.1f}", core
    return rps, lat, f"~{x:.1f}" if ticks < 10 else f"{x:.1f}", core


def client_core(r: Run) -> str:
    """redis-benchmark's CPU time over the run's wall time (100%: one whole core)."""
    client = r.get("client_cpu_s")
    return "—" if client is None or r.get("error") else f"{100 * client / r['wall_s']:.0f}%"


def throughput_rows(
    b: Bench, pair: Sequence[str], pipelines: Sequence[int], judged: Sequence[str], at_least: float
) -> list[Any]:
    rows, runs = [], b.runs
    for p, test in itertools.product(pipelines, TESTS):
        ours, peer = (find_run(runs, x, test, p) for x in pair)
        if ours is None and peer is None:
            continue
        r, error = ratio(runs, pair, test, p), ours and ours.get("error")
        mark = "error" if error else "n/a" if r is None else "PASS" if r >= at_least else "FAIL"
        commits = None if error or ours is None else ours.get("commits")
        (o_rps, o_lat, o_cpu, o_core), (p_rps, p_lat, p_cpu, _) = cells(ours), cells(peer)
        rows.append([test.upper(), str(p), p_rps, o_rps,
                     "—" if r is None else f"**{fmt_ratio(r)}**", p_lat, o_lat, p_cpu, o_cpu,
                     fmt_ratio(ratio(runs, pair, test, p, cpu=True)), o_core,
                     f"{ours['committed_writes'] / commits:.1f}" if commits else "—",
                     mark if p == 1 and test in judged else ""])  # fmt: skip
    return rows


def targets(b: Bench, report: Report) -> None:
    runs = b.runs

    def judge(name: str, peer: str, want: str, ok: Callable[[float], bool],
              ratios: dict[str, float], detail: str = "", errors: Sequence[str] = (),
              worst: Callable[..., float] = min, short: bool = False) -> None:  # fmt: skip
        """Every ratio must be ``ok``; a test that errored instead makes it INCOMPLETE."""
        if not ratios and not errors:
            return  # not measured (a partial run)
        detail = detail or ", ".join([*(f"{t.upper()} {fmt_ratio(r)}" for t, r in ratios.items()),
                                      *(f"{t.upper()} error" for t in errors)])  # fmt: skip
        measured = fmt_ratio(worst(ratios.values()) if ratios else None)
        failed = not ratios or not all(map(ok, ratios.values()))
        result = "FAIL" if failed else "INCOMPLETE" if errors else "PASS"
        report.check(name, peer, f"{measured} ({'worst test' if short else detail})", want)
        report.headline[-1]["result"] = result

    def rps_judge(pair: Sequence[str], judged: Sequence[str], at_least: float, name: str) -> None:
        ratios = {t: r for t in judged if (r := ratio(runs, pair, t)) is not None}
        ours = {t: find_run(runs, pair[0], t) for t in judged if t not in ratios}
        errors = [t for t, o in ours.items() if o and o.get("error")]
        judge(name, "Redis", f"≥ {at_least:g}x", lambda r: r >= at_least, ratios, errors=errors,
              short=len(judged) > 1)  # fmt: skip

    rps_judge(FAST, TESTS, 0.8, "throughput, 50 conns, unpipelined: engramdb (async) / Redis (no "
              "fsync), every test")  # fmt: skip
    cpu_ratios = {t: r for t in TESTS if (r := ratio(runs, FAST, t, cpu=True)) is not None}
    worst = sorted(cpu_ratios.items(), key=lambda x: -x[1])[:3]  # every test: the table below
    judge("server CPU per request, 50 conns, unpipelined: engramdb (async) / Redis, every test",
          "Redis", "≤ 2.5x", lambda r: r <= 2.5, cpu_ratios, worst=max,
          detail="worst " + ", ".join(f"{t.upper()} {fmt_ratio(r)}" for t, r in worst))  # fmt: skip
    for ours, peer in ((2, 0), (5, 3), (1, 0), (4, 3)) if len(b.latency) == 6 else ():
        a, z = b.latency[ours].p99_us, b.latency[peer].p99_us
        judge(f"{LATENCY_ROWS[ours][0]} p99, single client: {LATENCY_ROWS[ours][1]} / redis-py → "
              "Redis", "Redis", "≤ 1.5x", lambda r: r <= 1.5, {"": a / z},
              f"{fmt_us(a)} µs vs {fmt_us(z)} µs")  # fmt: skip
    rps_judge(DURABLE, ["set"], 1.0,
              "durable SET, 50 conns: engramdb (sync) / Redis (appendfsync always)")  # fmt: skip
    rps_judge(DURABLE, WRITE_TESTS, 1.0, "durable writes, 50 conns, "
              "unpipelined: engramdb (sync) / Redis (always), every write test")  # fmt: skip
    flat = sorted((length, c) for length in flat_lengths(runs)
                  if (c := median_cpu_us(runs, "engramdb", f"lpush@{length}")))  # fmt: skip
    if len(flat) >= 2:
        judge("LPUSH server CPU per request on a long list / on an empty one (engramdb)", "—",
              "≤ 1.25x", lambda r: r <= 1.25, {"": flat[-1][1] / flat[0][1]},
              ", ".join(f"{n:,} items: {c:.1f} µs" for n, c in flat))  # fmt: skip
    # Unpipelined, the workers and redis-benchmark take turns on this 2-core machine (see the
    # workers table's note); with -P 16 the server's processes get the cores.
    for p, depth in ((1, "unpipelined"), (16, "-P 16")):
        judge(
            f"throughput, 50 conns, {depth}: engramdb --workers 2 / one worker",
            "—",
            "> 1x",
            lambda r: r > 1,
            {t: r for t in ("set", "get") if (r := ratio(runs, WORKERS, t, p)) is not None},
        )


def build_report(b: Bench, machine: dict[str, str], quick: bool) -> Report:
    s, runs, warm = b.s, b.runs, max(200, int(b.s.latency_calls * b.s.warmup))
    rb = f"redis-benchmark -t TEST -c {s.clients} -n N"
    report = Report(
        "server", "server", "Server: `engramdb serve` against `redis-server`",
        f"`redis-benchmark -t TEST -c {s.clients}` against `engramdb serve --durability async` "
        'and `redis-server --save "" --appendonly no`; ratios are engramdb / Redis requests per '
        "second.", quick, machine,
        about=f"Throughput: `{rb} -q --csv` (and with `-P 16`), one redis-benchmark process per "
        f"test, N = {s.requests:,} unpipelined and {s.pipelined_requests:,} with `-P 16` "
        f"({s.durable_requests:,} in both against the durable configurations). **engramdb runs "
        "with durability `async` when compared with Redis in its default non-persistent "
        'configuration (`--save "" --appendonly no`)**, because that Redis never fsyncs on a '
        "write either; durable writes are compared separately: engramdb `sync` (acknowledged "
        "after fsync, group commit) against Redis `--appendonly yes --appendfsync always`. "
        "Ratios are engramdb / Redis requests per second (above 1 favours engramdb); latencies "
        f"in those tables are redis-benchmark's, per request under {s.clients} connections.",
    )  # fmt: skip

    table = functools.partial(report.table, publish=False)
    targets(b, report)
    for p in (1, 16):
        rows = throughput_rows(b, FAST, [p], TESTS, 0.8)
        depth = "unpipelined" if p == 1 else f"pipelined (-P {p})"
        fast = 'Throughput: engramdb (`async`) vs Redis (`--save "" --appendonly no`)'
        table(f"{fast}, {depth}", THROUGHPUT, rows, "lrrrrrrrrrrrl", publish=p == 1)
    durable = "Durable writes: engramdb (`sync`) vs Redis (`--appendonly yes --appendfsync always`)"
    table(durable, ["server", "SET rps", "avg ms", "p50 ms", "p99 ms", "max ms"],
          [[f"`{SYSTEMS[x][1]}`", cells(r)[0], *(ms(r.get(f"{k}_ms")) for k in ("avg", "p50",
            "p99", "max"))] for x in DURABLE if (r := find_run(runs, x, "set"))], "lrrrrr",
          text=f"SET from {s.clients} concurrent connections (`redis-benchmark -t set "
          f"-c {s.clients} -n {s.durable_requests:,}`), each acknowledged only once "
          "durable:")  # fmt: skip
    table(durable, THROUGHPUT, throughput_rows(b, DURABLE, (1, 16), WRITE_TESTS, 1.0),
          "lrrrrrrrrrrrl", text="Every test against the durable configurations (reads included, "
          "for reference; the target applies to the unpipelined write tests):")  # fmt: skip
    table("Client latency: one client thread, closed loop",
          ["op", "client → server", "one call", "p50", "p99", "p999", "ops/s", "p99 / Redis"],
          [[op, path, f"`{call}`", *map(fmt_us, (st.p50_us, st.p99_us, st.p999_us)),
            f"{st.ops_s:,.0f}", fmt_ratio(st.p99_us / b.latency[i // 3 * 3].p99_us)]
           for i, ((op, path, call), st) in enumerate(zip(LATENCY_ROWS, b.latency))],
          "lllrrrrr", text=f"{s.latency_calls:,} calls per row, each timed, after {warm:,} "
          f"warmup calls; random keys of {s.keys:,} preloaded (seed {s.seed}), {s.value_size}-byte "
          f"values; the clients take turns in {s.rounds} slices. Latencies in µs; the last column "
          "is p99 / Redis's p99 (below 1 favours engramdb).")  # fmt: skip
    table("LPUSH as one list grows",
          ["server", "list length", "rps", "avg ms", "CPU µs/req (median)", "core use"],
          [[SYSTEMS[x][0], f"{n:,}", cells(r)[0], ms(r.get("avg_ms")),
            fmt_cpu(median_cpu_us(runs, x, f"lpush@{n}")), cells(r)[3]]
           for x in FAST[::-1] for n in flat_lengths(runs)
           if (r := find_run(runs, x, f"lpush@{n}"))], "lrrrrr",
          text=f"At each length, {s.repeats} runs of `redis-benchmark -t lpush -c {s.clients} -n "
          f"{s.flat_requests:,}` onto one list (`mylist`), after untimed pipelined LPUSHes grew it "
          f"to that length (up to {s.flat_items:,} items); rps and latency of the median run by "
          "rps.")  # fmt: skip
    base = median_cpu_us(runs, "engramdb", "set@tracking")
    table("Client tracking: what it costs the writes",
          ["server", "SET rps", "CPU µs/req (median)", "CPU vs nobody tracking"],
          [[SYSTEMS[x][0], cells(r)[0], fmt_cpu(cpu := median_cpu_us(runs, x, "set@tracking")),
            fmt_ratio(cpu / base) if cpu and base else "—"]
           for x in ("engramdb", "engramdb_tracked", "engramdb_bcast")
           if (r := find_run(runs, x, "set@tracking"))], "lrrr",
          text=f"`redis-benchmark -t set -c {s.clients} -n {s.requests:,}` against `engramdb serve "
          "--durability async`, with nobody tracking, with one RESP3 client that ran `CLIENT "
          "TRACKING ON` (each commit's changes are read back from the log before its replies), "
          "and with one that ran `CLIENT TRACKING ON BCAST` (sent an invalidation for every "
          f"write), taking turns, {s.repeats} runs each.")  # fmt: skip
    table("Worker processes",
          ["server", "test", "-P", "rps", "p50 / p99 ms", "CPU µs/req", "core use",
           "redis-benchmark core use"],
          [[SYSTEMS[x][1], t.upper(), str(p), *cells(r), client_core(r)] for p in (1, 16)
           for t in ("set", "get") for x in WORKERS[::-1] if (r := find_run(runs, x, t, p))],
          "lllrrrrr", text=f"`redis-benchmark -t TEST -c {s.clients}` (`-n "
          f"{s.workers_requests:,}`, and `-n {s.workers_pipelined_requests:,} -P 16`) against one "
          "worker process and against `--workers 2` (CPU: every process of the server; core use "
          "200% is both cores). The last column is the load generator's own CPU over the run's "
          "wall time. Unpipelined, two workers and redis-benchmark take turns on two cores: "
          "each worker wakes for fewer requests at a time, so a request costs it more CPU, and "
          "the client gets less of a core; with `-P 16` the client needs a fraction of a core "
          "and the workers get the rest.")  # fmt: skip
    report.note("Notes", "\n".join([
        f"- **CPU µs/req**: user + system CPU of the server (all its processes, {TICK_S * 1000:g} "
        "ms ticks: `~` under 10, `<` none) over the requests: a request's cost, whatever the "
        "load. **Core use**: that CPU over the run's wall time (near 100%: the server was the "
        "bottleneck). **Writes / commit**: per group-commit transaction (an fsync each at `sync`).",
        "- Single-client p99 rests on the 1% of calls that waited for a core on this shared "
        "machine, which also runs redis-benchmark (often the bottleneck with `-P 16`); p50 is "
        "steadier. Each test hits one key (no `-r`); LPUSH grows one list.",
        f"- A run past {s.run_timeout} s is an error; an error in any of the {s.repeats} repeats "
        "is the test's.",
    ]))  # fmt: skip
    report.raw = {"sizes": asdict(s), "redis_benchmark": runs}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument("--redis-server", help="redis-server executable (default: on PATH)")
    parser.add_argument("--redis-benchmark", help="redis-benchmark executable (default: on PATH)")
    args = parser.parse_args(argv)
    s, redis_exe = sizes_from(args, FULL, QUICK), args.redis_server or find_redis_server()
    near = os.path.join(os.path.dirname(redis_exe or ""), "redis-benchmark")
    rb = args.redis_benchmark or (near if os.access(near, os.X_OK) else None)
    if not redis_exe or not (rb := rb or shutil.which("redis-benchmark")):
        return skip("needs redis-server and redis-benchmark (Debian: redis-server, redis-tools)")
    exit_on_sigterm()
    b = Bench(s, rb)
    version = {x: (subprocess.run([x, "--version"], capture_output=True, text=True).stdout
                   .strip().split("\n")[0] or "unknown") for x in (redis_exe, rb)}  # fmt: skip
    with temp_dir("engramdb-bench-server-", args.data_dir) as root, b.progress:
        extra = {
            "redis-server": f"{version[redis_exe]} ({redis_exe})",
            "redis-benchmark": version[rb],
            "redis-py parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure Python",
        }
        machine = machine_info(("engramdb", "redis", "hiredis", "lmdb", "uvloop"), data_dir=root,
                               extra=extra)  # fmt: skip
        # Durable first: its servers write to disk, and their directories go before the rest.
        aof = ("--appendonly", "yes", "--appendfsync", "always")
        with (RedisServer(redis_exe, extra_args=aof, parent=root) as r,
              EngramServer(f"{root}/engramdb-sync", durability="sync") as e,
              engramdb.connect(e.url) as client):  # fmt: skip
            endpoints = [Endpoint("redis_always", r), Endpoint("engramdb_sync", e, client)]
            b.throughput("durable", endpoints, {1: s.durable_requests, 16: s.durable_requests})
        with (RedisServer(redis_exe, parent=root) as r,
              EngramServer(f"{root}/engramdb-async", durability="async") as e,
              engramdb.connect(e.url) as client):  # fmt: skip
            endpoints = [Endpoint("redis", r), Endpoint("engramdb", e, client)]
            b.throughput("no fsync", endpoints, {1: s.requests, 16: s.pipelined_requests})
            b.latency_runs(r.port, e)
            b.lpush_flat(endpoints)
            b.tracking(endpoints[1])
        with contextlib.ExitStack() as stack:  # SET, GET: 1 and 2 workers
            endpoints = [Endpoint(x, stack.enter_context(EngramServer(f"{root}/engramdb-{x}",
                         durability="async", extra_args=("--workers", x[-1]))))
                         for x in ("engramdb_w1", "engramdb_w2")]  # fmt: skip
            b.throughput("workers", endpoints,
                         {1: s.workers_requests, 16: s.workers_pipelined_requests},
                         ("set", "get"), False)  # fmt: skip
    machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    build_report(b, machine, args.quick).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
