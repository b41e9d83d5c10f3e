"""Sessions under write contention and the stampede-proof cache, against Redis, in one run.

    python bench/sessions_cache.py            # full run (about 4 minutes on 2 cores)
    python bench/sessions_cache.py --quick    # ~1 minute smoke run with short cells
    python bench/sessions_cache.py --help     # every size is configurable

1. **Session updates under contention.** A session's state is a small dict, ``{"n": counter,
   "events": the last 20 events}``; the update function bumps the counter and appends an event
   (dropping the oldest past 20). 1, 8 and 64 writer threads run closed loops of updates for
   ``--seconds`` (after ``--warmup`` seconds of unrecorded updates), either all on **one hot
   session** or each on **its own session**. Sides, taking turns cell by cell so load drift on
   a shared machine hits them alike:

   - engramdb embedded, ``db.sessions.update(sid, fn)``, LMDB at durability ``async`` (flushed
     every second) and ``sync`` (fsync per commit, group commit across threads);
   - engramdb through ``engramdb serve`` (the same two durabilities), ``client.sessions.update``
     from threads sharing one client whose pool holds a connection per thread;
   - Redis with redis-py: ``WATCH key; GET; MULTI; SET; EXEC`` on a msgpack string holding the
     same dict, retried on ``WatchError``, against ``redis-server --save "" --appendonly no``
     (paired with ``async``) and ``--appendonly yes --appendfsync always`` (paired with ``sync``).

   Every side retries through the very same function, ``engramdb.sessions.cas_update`` (read,
   apply, compare-and-set; on a conflict sleep ``uniform(0, min(50 ms, 0.2 ms * 2**attempt))``,
   full jitter; at most 100 retries, then ``Conflict``): Redis's read is WATCH + GET and its
   write MULTI/SET/EXEC, whose ``WatchError`` becomes ``Conflict``. Latency is per successful
   update, retries and backoff included; retries are counted as extra calls of the update
   function. No lost update: after each cell every session's counter must equal the updates
   that returned successfully on it (warmup included).

2. **Cache hits.** One thread, each call timed on its own (``_common.measure_interleaved``):
   ``cache.get_or_set`` of a cached key (embedded and through a client), the naive hit path
   ``records.get`` (embedded and client), and Redis ``GET`` + msgpack decode as the reference.
   Then the same calls from ``--hit-threads`` threads at once on one hot key.

3. **Stampede.** A hot key is stored with a 250 ms TTL; the moment it runs out, a burst of
   ``--requests`` (1,000) requests for it is released from ``--threads`` (200) threads, each
   making requests back to back (threads, not asyncio: the sync API is what most callers use,
   and a thread blocked in the loader is the realistic cost). The loader sleeps
   ``--loader-ms`` (50 ms) and returns a new ~160 B value. Compared: ``get_or_set`` (single
   flight), ``get_or_set`` with ``stale_ttl=60`` (stale-while-revalidate), and naive
   cache-aside (GET; on a miss call the loader and SET with the TTL) on engramdb records and on
   Redis. Through the server both with threads sharing one client (one process) and with a
   client per thread (each thread standing for another process). Reported: loader calls per
   burst, p50/p99/p999 of the requests, and how many waited at least 80% of a loader call.
   ``--rounds`` bursts per side, sides taking turns.

GC stays on; before each measured loop or cell ``gc.collect()`` + ``gc.freeze()``. Every
server started is stopped on the way out, errors and SIGTERM included. Writes
bench/results/sessions_cache.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
from rich.console import Console
from rich.progress import Progress

import engramdb
from _common import (
    Meter,
    Report,
    Stats,
    add_redis_args,
    add_sizes,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure_interleaved,
    new_progress,
    redis_peer,
    served,
    sizes_from,
    temp_dir,
    wait_for_quiet,
)
from engramdb.errors import Conflict, NotFound
from engramdb.sessions import cas_update

SECTION = "sessions-cache"
EVENTS_KEPT = 20
HOT_TTL = 3600.0  # cache hits: never expires during the run
PRIME_TTL = 0.25  # stampede: the hot key's TTL before the burst
REFILL_TTL = 60.0  # stampede: TTL the loaders store (no second expiry inside a burst)
STALE_TTL = 60.0  # stampede, stale-while-revalidate sides
SLOW_SHARE = 0.8  # a request "waited" when it took at least this share of a loader call
QUIET_LOAD = 0.7  # --wait-quiet waits for the 1-minute load average to drop below this

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


# configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    seconds: float = 3.0  # measured seconds per session cell
    warmup: float = 0.5  # unrecorded seconds of updates before each cell
    max_retries: int = 100
    hits: int = 20_000  # single-thread hit calls per side
    hit_threads: int = 8
    hot_keys: int = 1_000
    requests: int = 1_000  # per stampede burst
    threads: int = 200  # stampede thread pool
    loader_ms: float = 50.0
    rounds: int = 5  # stampede bursts per side
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(seconds=0.4, warmup=0.1, hits=2_000, rounds=1)
WRITERS = (1, 8, 64)
LAYOUTS = ("one hot session", "a session per writer")


# sides: policy as data ---------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSide:
    id: str
    system: str
    durability: str
    peer: str | None  # the Redis side it is compared with


SESSION_SIDES: tuple[SessionSide, ...] = (
    SessionSide("embedded.async", "engramdb embedded", "async", "redis"),
    SessionSide("server.async", "engramdb server", "async", "redis"),
    SessionSide("redis", "Redis WATCH/MULTI", "no fsync", None),
    SessionSide("embedded.sync", "engramdb embedded", "sync (fsync)", "redis.always"),
    SessionSide("server.sync", "engramdb server", "sync (fsync)", "redis.always"),
    SessionSide("redis.always", "Redis WATCH/MULTI", "appendfsync always", None),
)
SESSION_SIDE = {s.id: s for s in SESSION_SIDES}


@dataclass(frozen=True)
class HitSide:
    id: str
    system: str
    call: str


HIT_SIDES: tuple[HitSide, ...] = (
    HitSide("embedded.get_or_set", "engramdb embedded", "cache.get_or_set (hit)"),
    HitSide("embedded.records_get", "engramdb embedded", "records.get (naive hit)"),
    HitSide("server.get_or_set", "engramdb server", "client cache.get_or_set (hit)"),
    HitSide("server.records_get", "engramdb server", "client records.get (naive hit)"),
    HitSide("redis.get", "Redis", "GET + msgpack decode"),
)
HIT_SIDE = {s.id: s for s in HIT_SIDES}


@dataclass(frozen=True)
class StampedeSide:
    id: str
    system: str
    strategy: str
    baseline: str | None  # the naive side of the same system, for ratios


STAMPEDE_SIDES: tuple[StampedeSide, ...] = (
    StampedeSide("embedded.naive", "engramdb embedded", "naive cache-aside on records", None),
    StampedeSide("embedded.single_flight", "engramdb embedded", "get_or_set", "embedded.naive"),
    StampedeSide("embedded.swr", "engramdb embedded", "get_or_set, stale_ttl=60", "embedded.naive"),
    StampedeSide("server.naive", "server, one shared client", "naive cache-aside on records", None),
    StampedeSide("server.single_flight", "server, one shared client", "get_or_set", "server.naive"),
    StampedeSide(
        "server.swr", "server, one shared client", "get_or_set, stale_ttl=60", "server.naive"
    ),
    StampedeSide(
        "clients.single_flight", "server, a client per thread", "get_or_set", "server.naive"
    ),
    StampedeSide(
        "clients.swr", "server, a client per thread", "get_or_set, stale_ttl=60", "server.naive"
    ),
    StampedeSide("redis.naive", "Redis", "naive cache-aside (GET; SET PX)", None),
)
STAMPEDE_SIDE = {s.id: s for s in STAMPEDE_SIDES}


# session updates ---------------------------------------------------------------------------

UpdateFn = Callable[[str, Callable[[Any], Any]], Any]


class SessionTarget(Protocol):
    def create(self, sid: str, state: dict[str, Any]) -> None: ...

    def updater(self) -> UpdateFn:
        """An update callable for one writer thread (it may hold a connection)."""
        ...

    def counter(self, sid: str) -> tuple[int, int]:
        """(counter, number of events) of the session as stored."""
        ...

    def close(self) -> None: ...


class EngramSessions:
    """``db.sessions`` of an embedded database or of a client: the same methods."""

    def __init__(self, sessions: Any, max_retries: int) -> None:
        self.sessions = sessions
        self.max_retries = max_retries

    def create(self, sid: str, state: dict[str, Any]) -> None:
        self.sessions.create(sid, state)

    def updater(self) -> UpdateFn:
        update, retries = self.sessions.update, self.max_retries

        def call(sid: str, fn: Callable[[Any], Any]) -> Any:
            return update(sid, fn, max_retries=retries)

        return call

    def counter(self, sid: str) -> tuple[int, int]:
        session = self.sessions.get(sid)
        assert session is not None, f"session {sid} vanished"
        return int(session.state["n"]), len(session.state["events"])

    def close(self) -> None:
        pass


class RedisSessions:
    """The same read-modify-write on Redis: WATCH + GET, then MULTI/SET/EXEC, retried by
    engramdb's own ``cas_update`` so both sides follow one retry and backoff policy."""

    def __init__(self, client: Any, max_retries: int) -> None:
        self.r = client
        self.max_retries = max_retries

    @staticmethod
    def key(sid: str) -> str:
        return f"session:{sid}"

    def create(self, sid: str, state: dict[str, Any]) -> None:
        self.r.set(self.key(sid), encode(state))

    def updater(self) -> UpdateFn:
        from redis.exceptions import WatchError

        pipe = self.r.pipeline()  # this thread's own; holds a connection while watching
        retries = self.max_retries

        def call(sid: str, fn: Callable[[Any], Any]) -> Any:
            key = self.key(sid)

            def read() -> tuple[Any, int]:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    raise NotFound(f"no session {sid!r}")
                return decode(raw), 0

            def write(state: Any, generation: int) -> None:
                pipe.multi()
                pipe.set(key, encode(state))
                try:
                    pipe.execute()
                except WatchError as e:
                    raise Conflict("the watched key changed", generation) from e

            try:
                return cas_update(read, write, fn, max_retries=retries)
            finally:
                pipe.reset()

        return call

    def counter(self, sid: str) -> tuple[int, int]:
        state = decode(self.r.get(self.key(sid)))
        return int(state["n"]), len(state["events"])

    def close(self) -> None:
        pass


def bumped(state: dict[str, Any], writer: int, seq: int) -> dict[str, Any]:
    """The update every side applies: counter + 1 and one more event, the last 20 kept."""
    event = {"writer": writer, "seq": seq, "kind": "tool_call", "tokens": 128}
    return {"n": state["n"] + 1, "events": [*state["events"][-(EVENTS_KEPT - 1) :], event]}


def state_bytes() -> int:
    """Size of a session's state once its event list is full."""
    state: dict[str, Any] = {"n": 0, "events": []}
    for i in range(EVENTS_KEPT + 5):
        state = bumped(state, 63, 100_000 + i)
    return len(encode(state))


@dataclass
class Cell:
    """One (side, layout, writers) run of session updates."""

    side: str
    layout: str
    writers: int
    stats: Stats | None
    updates: int  # successful updates in the measured window
    attempts: int  # calls of the update function in the measured window
    gave_up: int  # updates that raised Conflict after the retry budget
    total_ok: int  # successful updates, warmup included
    stored: int  # sum of the counters read back afterwards
    events_ok: bool  # every session holds min(counter, 20) events

    @property
    def lost(self) -> int:
        return self.total_ok - self.stored

    @property
    def retries_per_update(self) -> float:
        return (self.attempts - self.updates - self.gave_up) / max(1, self.updates)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stats"}
        out["stats"] = self.stats.to_json() if self.stats else None
        out["lost"] = self.lost
        out["retries_per_update"] = self.retries_per_update
        return out


@dataclass
class _Writer:
    latencies: list[int] = field(default_factory=list)
    calls: int = 0
    measured_calls: int = 0
    ok: int = 0
    gave_up: int = 0
    last_done: int = 0
    error: BaseException | None = None


def run_cell(
    target: SessionTarget,
    side: str,
    layout: str,
    writers: int,
    sizes: Sizes,
    prefix: str,
) -> Cell:
    hot = layout == LAYOUTS[0]
    sids = [f"{prefix}-{i}" for i in range(1 if hot else writers)]
    for sid in sids:
        target.create(sid, {"n": 0, "events": []})
    states = [_Writer() for _ in range(writers)]
    oks = [0] * len(sids)
    window: dict[str, int] = {}
    barrier = threading.Barrier(writers + 1)
    clock = time.perf_counter_ns

    def work(k: int) -> None:
        me = states[k]
        sid = sids[0 if hot else k]
        try:
            update = target.updater()

            def fn(state: Any) -> Any:
                me.calls += 1
                return bumped(state, k, me.calls)

            barrier.wait()
            start, end = window["start"], window["end"]
            while True:
                t0 = clock()
                if t0 >= end:
                    break
                before = me.calls
                try:
                    update(sid, fn)
                except Conflict:
                    if t0 >= start:
                        me.gave_up += 1
                        me.measured_calls += me.calls - before
                    continue
                t1 = clock()
                me.ok += 1
                if t0 >= start:
                    me.latencies.append(t1 - t0)
                    me.measured_calls += me.calls - before
                    me.last_done = t1
        except BaseException as e:
            me.error = e
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(writers)]
    for t in threads:
        t.start()
    gc.collect()
    gc.freeze()
    try:
        now = clock()
        window["start"] = now + int(sizes.warmup * 1e9)
        window["end"] = window["start"] + int(sizes.seconds * 1e9)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        for t in threads:
            t.join()
    finally:
        gc.unfreeze()
    for me in states:
        if me.error is not None:
            raise RuntimeError(f"{side}: a writer failed") from me.error
    for k, me in enumerate(states):
        oks[0 if hot else k] += me.ok
    stored, events_ok = 0, True
    for sid, ok in zip(sids, oks):
        n, events = target.counter(sid)
        stored += n
        events_ok = events_ok and events == min(n, EVENTS_KEPT) and n == ok
    latencies = [x for me in states for x in me.latencies]
    last = max((me.last_done for me in states), default=0)
    stats = Stats.from_samples(latencies, last - window["start"]) if latencies else None
    return Cell(
        side=side,
        layout=layout,
        writers=writers,
        stats=stats,
        updates=len(latencies),
        attempts=sum(me.measured_calls for me in states),
        gave_up=sum(me.gave_up for me in states),
        total_ok=sum(oks),
        stored=stored,
        events_ok=events_ok,
    )


# cache hits --------------------------------------------------------------------------------


def hot_value(i: int) -> dict[str, Any]:
    """A ~160 B cached value (what a loader would build: an answer and its sources)."""
    return {"answer": f"answer {i:06d} " + "x" * 120, "sources": [i, i + 1, i + 2], "v": 0}


def _never(*_: object) -> Any:
    raise AssertionError("a hit must not call the loader")


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:120]}"


def concurrent_calls(
    calls: Sequence[Callable[[], object]], per_thread: int
) -> tuple[Stats, Counter[str]]:
    """Run ``calls[k]`` ``per_thread`` times on thread k, all threads at once; every call timed
    on its own. Returns the pooled Stats (ops/s over the whole wall) and failed calls."""
    clock = time.perf_counter_ns
    samples = [np.empty(per_thread, dtype=np.int64) for _ in calls]
    errors: Counter[str] = Counter()
    barrier = threading.Barrier(len(calls) + 1)

    def work(k: int) -> None:
        fn, out = calls[k], samples[k]
        lat = [0] * per_thread
        barrier.wait()
        for i in range(per_thread):
            t0 = clock()
            try:
                fn()
            except Exception as e:
                errors[describe(e)] += 1
            lat[i] = clock() - t0
        out[:] = lat

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(calls))]
    for t in threads:
        t.start()
    gc.collect()
    gc.freeze()
    try:
        barrier.wait()
        began = clock()
        for t in threads:
            t.join()
        wall = clock() - began
    finally:
        gc.unfreeze()
    return Stats.from_samples(np.concatenate(samples), wall), errors


# stampede ----------------------------------------------------------------------------------


class Loader:
    """The slow computation behind the hot key: counts its calls, sleeps, returns a value."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.seconds)
        value = hot_value(n)
        value["v"] = n
        return value


class StampedeTarget(Protocol):
    def prime(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key`` with a PRIME_TTL-second TTL."""
        ...

    def request(self, k: int) -> Callable[[str], Any]:
        """What thread ``k`` calls for one request."""
        ...

    def counters(self) -> dict[str, int]:
        """The cache's own counters (summed over its cache objects), or {}."""
        ...


class GetOrSet:
    """``get_or_set`` on one or several ``Cache`` objects (one per thread: other processes)."""

    def __init__(self, caches: Sequence[Any], loader: Loader, stale_ttl: float) -> None:
        self.caches = caches
        self.loader = loader
        self.stale_ttl = stale_ttl

    def prime(self, key: str, value: dict[str, Any]) -> None:
        self.caches[0].set(key, value, ttl=PRIME_TTL, stale_ttl=self.stale_ttl)

    def request(self, k: int) -> Callable[[str], Any]:
        cache, loader, stale = self.caches[k % len(self.caches)], self.loader, self.stale_ttl

        def call(key: str) -> Any:
            return cache.get_or_set(key, loader, ttl=REFILL_TTL, stale_ttl=stale)

        return call

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for cache in {id(c): c for c in self.caches}.values():
            for name, n in cache.stats().items():
                total[name] = total.get(name, 0) + n
        return total


class NaiveRecords:
    """Naive cache-aside on engramdb records: get; on a miss, load and put with the TTL."""

    def __init__(self, records: Any, loader: Loader) -> None:
        self.records = records
        self.loader = loader

    def prime(self, key: str, value: dict[str, Any]) -> None:
        self.records.put(key, value, ttl=PRIME_TTL)

    def request(self, k: int) -> Callable[[str], Any]:
        records, loader = self.records, self.loader

        def call(key: str) -> Any:
            found = records.get(key)
            if found is not None:
                return found.bins
            value = loader()
            records.put(key, value, ttl=REFILL_TTL)
            return value

        return call

    def counters(self) -> dict[str, int]:
        return {}


class NaiveRedis:
    """Naive cache-aside on Redis: GET; on a miss, load and SET with PX."""

    def __init__(self, client: Any, loader: Loader) -> None:
        self.r = client
        self.loader = loader

    def prime(self, key: str, value: dict[str, Any]) -> None:
        self.r.set(key, encode(value), px=int(PRIME_TTL * 1000))

    def request(self, k: int) -> Callable[[str], Any]:
        r, loader, px = self.r, self.loader, int(REFILL_TTL * 1000)

        def call(key: str) -> Any:
            raw = r.get(key)
            if raw is not None:
                return decode(raw)
            value = loader()
            r.set(key, encode(value), px=px)
            return value

        return call

    def counters(self) -> dict[str, int]:
        return {}


@dataclass
class Burst:
    loader_calls: int
    errors: Counter[str]
    waited: int  # requests that took at least SLOW_SHARE of a loader call
    stale_served: int | None
    latencies: np.ndarray
    wall_ns: int


def run_burst(target: StampedeTarget, loader: Loader, key: str, sizes: Sizes) -> Burst:
    threads = min(sizes.threads, sizes.requests)
    shares = [sizes.requests // threads + (k < sizes.requests % threads) for k in range(threads)]
    calls = [target.request(k) for k in range(threads)]
    samples = [np.empty(n, dtype=np.int64) for n in shares]
    errors: Counter[str] = Counter()
    barrier = threading.Barrier(threads + 1)
    clock = time.perf_counter_ns

    def work(k: int) -> None:
        fn, n = calls[k], shares[k]
        lat = [0] * n
        barrier.wait()
        for i in range(n):
            t0 = clock()
            try:
                fn(key)
            except Exception as e:
                errors[describe(e)] += 1  # Counter updates are atomic enough under the GIL
            lat[i] = clock() - t0
        samples[k][:] = lat

    workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for t in workers:
        t.start()
    target.prime(key, hot_value(0))
    expires = time.monotonic() + PRIME_TTL
    before_calls, before = loader.calls, target.counters()
    gc.collect()
    gc.freeze()
    try:
        # Release the burst just as the TTL runs out (5 ms late: every store's clock agrees).
        time.sleep(max(0.0, expires + 0.005 - time.monotonic()))
        barrier.wait()
        began = clock()
        for t in workers:
            t.join()
        wall = clock() - began
    finally:
        gc.unfreeze()
    after = target.counters()
    lat = np.concatenate(samples)
    return Burst(
        loader_calls=loader.calls - before_calls,
        errors=errors,
        waited=int((lat >= SLOW_SHARE * sizes.loader_ms * 1e6).sum()),
        stale_served=(after["stale_served"] - before["stale_served"]) if after else None,
        latencies=lat,
        wall_ns=wall,
    )


@dataclass
class StampedeResult:
    side: str
    stats: Stats
    loader_calls: list[int]
    waited: list[int]
    errors: Counter[str]
    stale_served: list[int] | None

    @property
    def mean_loader_calls(self) -> float:
        return sum(self.loader_calls) / len(self.loader_calls)

    @property
    def mean_waited(self) -> float:
        return sum(self.waited) / len(self.waited)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(STAMPEDE_SIDE[self.side]),
            "loader_calls": self.loader_calls,
            "waited": self.waited,
            "errors": dict(self.errors),
            "stale_served": self.stale_served,
            "stats": self.stats.to_json(),
        }


# the run -----------------------------------------------------------------------------------


class Run:
    """Opens every store, then runs the three parts in turn."""

    def __init__(self, sizes: Sizes, writers: Sequence[int], root: str) -> None:
        self.sizes = sizes
        self.writers = tuple(writers)
        self.root = root
        self.progress: Progress = new_progress()
        self.stack = contextlib.ExitStack()
        self.session_targets: dict[str, SessionTarget] = {}
        self.cells: list[Cell] = []
        self.hits: dict[str, Stats] = {}
        self.concurrent_hits: dict[str, Stats] = {}
        self.stampede: dict[str, StampedeResult] = {}
        self.redis_note = "Redis: not available"
        self.extra: dict[str, str] = {}
        self.db: engramdb.Database | None = None  # embedded, durability async
        self.client: Any = None  # client of the async server
        self.server_url = ""
        self.redis: Any = None  # redis.Redis of the no-fsync server

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    # setup

    def open(self, args: argparse.Namespace) -> None:
        s, st = self.sizes, self.stack
        pool = max(max(self.writers), s.hit_threads, s.threads)
        durabilities: tuple[Literal["async", "sync"], ...] = ("async", "sync")
        for durability in durabilities:
            db = st.enter_context(
                engramdb.open(
                    f"{self.root}/embedded-{durability}",
                    durability=durability,
                    sweep_interval=None,
                )
            )
            self.session_targets[f"embedded.{durability}"] = EngramSessions(
                db.sessions, s.max_retries
            )
            if durability == "async":
                self.db = db
            server, client = st.enter_context(
                served(f"{self.root}/server-{durability}", durability, pool_size=pool)
            )
            self.session_targets[f"server.{durability}"] = EngramSessions(
                client.sessions, s.max_retries
            )
            if durability == "async":
                self.client, self.server_url = client, server.url
        # redis-py 8 caps a pool at 100 connections by default; every thread needs one.
        fsync_args = ("--appendonly", "yes", "--appendfsync", "always")
        peer = redis_peer(st, ((), fsync_args), args=args, parent=self.root,
                          max_connections=pool + 8)  # fmt: skip
        self.redis_note, self.extra = peer.note, peer.machine
        if not peer.clients:
            return
        import redis

        self.redis, always = peer.clients
        self.session_targets["redis"] = RedisSessions(self.redis, s.max_retries)
        self.session_targets["redis.always"] = RedisSessions(always, s.max_retries)
        self.redis_note = (
            f'Redis {peer.servers[0].version} on 127.0.0.1 (`--save "" --appendonly no`, and '
            f"`--appendonly yes --appendfsync always` for the fsync rows), redis-py "
            f"{redis.__version__} with {peer.parser}"
        )

    # parts

    def run(self) -> None:
        with self.progress:
            self.sessions()
            self.cache_hits()
            self.stampedes()

    def sessions(self) -> None:
        sides = [s for s in SESSION_SIDES if s.id in self.session_targets]
        task = self.progress.add_task("sessions", total=len(sides) * 2 * len(self.writers))
        self.progress.refresh()
        for layout in LAYOUTS:
            for writers in self.writers:
                for side in sides:
                    self.progress.update(task, description=f"sessions · {writers} · {side.id}")
                    self.progress.refresh()
                    prefix = f"{side.id}-{'hot' if layout == LAYOUTS[0] else 'own'}-{writers}"
                    self.cells.append(
                        run_cell(
                            self.session_targets[side.id],
                            side.id,
                            layout,
                            writers,
                            self.sizes,
                            prefix,
                        )
                    )
                    self.progress.update(task, advance=1)
                    self.progress.refresh()

    def cache_hits(self) -> None:
        s = self.sizes
        assert self.db is not None
        rng = random.Random(s.seed)
        keys = [f"hot:{i:05d}" for i in range(s.hot_keys)]
        values = [hot_value(i) for i in range(s.hot_keys)]
        embedded_records = self.db.records("naive")
        client_records = self.client.records("naive")
        for key, value in zip(keys, values):
            self.db.cache.set(key, value, ttl=HOT_TTL)
            embedded_records.put(key, value)
            self.client.cache.set(key, value, ttl=HOT_TTL)
            client_records.put(key, value)
            if self.redis is not None:
                self.redis.set(key, encode(value))

        def get_or_set(cache: Any) -> Callable[[str], Any]:
            def call(key: str) -> Any:
                return cache.get_or_set(key, _never, ttl=HOT_TTL)

            return call

        def records_get(records: Any) -> Callable[[str], Any]:
            def call(key: str) -> Any:
                return records.get(key).bins

            return call

        def redis_get(key: str) -> Any:
            return decode(self.redis.get(key))

        fns: dict[str, Callable[[str], Any]] = {
            "embedded.get_or_set": get_or_set(self.db.cache),
            "embedded.records_get": records_get(embedded_records),
            "server.get_or_set": get_or_set(self.client.cache),
            "server.records_get": records_get(client_records),
        }
        if self.redis is not None:
            fns["redis.get"] = redis_get
        for fn in fns.values():  # every side returns the same value
            assert fn(keys[0]) == values[0]
        args = [keys[rng.randrange(len(keys))] for _ in range(s.hits)]
        warm = args[: max(50, s.hits // 10)]
        ids = list(fns)
        stats = measure_interleaved(
            [(fns[i], args, warm) for i in ids],
            meter=Meter(self.progress),
            description="cache hits · 1 thread",
        )
        self.hits = dict(zip(ids, stats))

        task = self.progress.add_task(f"cache hits · {s.hit_threads} threads", total=len(ids))
        self.progress.refresh()
        per_thread = max(100, s.hits // s.hit_threads)
        hot = keys[0]
        for i in ids:
            call = functools.partial(fns[i], hot)
            st, errors = concurrent_calls([call] * s.hit_threads, per_thread)
            if errors:
                raise RuntimeError(f"{i}: hit calls failed: {dict(errors)}")
            self.concurrent_hits[i] = st
            self.progress.update(task, advance=1)
            self.progress.refresh()

    def stampedes(self) -> None:
        s = self.sizes
        assert self.db is not None
        loader = Loader(s.loader_ms / 1000)
        clients = [
            self.stack.enter_context(engramdb.connect(self.server_url, pool_size=1))
            for _ in range(min(s.threads, s.requests))
        ]
        client_caches = [c.cache for c in clients]
        targets: dict[str, StampedeTarget] = {
            "embedded.naive": NaiveRecords(self.db.records("stampede"), loader),
            "embedded.single_flight": GetOrSet([self.db.cache], loader, 0.0),
            "embedded.swr": GetOrSet([self.db.cache], loader, STALE_TTL),
            "server.naive": NaiveRecords(self.client.records("stampede"), loader),
            "server.single_flight": GetOrSet([self.client.cache], loader, 0.0),
            "server.swr": GetOrSet([self.client.cache], loader, STALE_TTL),
            "clients.single_flight": GetOrSet(client_caches, loader, 0.0),
            "clients.swr": GetOrSet(client_caches, loader, STALE_TTL),
        }
        if self.redis is not None:
            targets["redis.naive"] = NaiveRedis(self.redis, loader)
        ids = [side.id for side in STAMPEDE_SIDES if side.id in targets]
        bursts: dict[str, list[Burst]] = {i: [] for i in ids}
        task = self.progress.add_task("stampede", total=len(ids) * s.rounds)
        self.progress.refresh()
        for r in range(s.rounds):
            for i in ids:
                self.progress.update(task, description=f"stampede · {i}")
                self.progress.refresh()
                bursts[i].append(run_burst(targets[i], loader, f"stampede:{i}:{r}", s))
                self.progress.update(task, advance=1)
                self.progress.refresh()
        for i in ids:
            got = bursts[i]
            stale = [b.stale_served for b in got]
            self.stampede[i] = StampedeResult(
                side=i,
                stats=Stats.from_samples(
                    np.concatenate([b.latencies for b in got]), sum(b.wall_ns for b in got)
                ),
                loader_calls=[b.loader_calls for b in got],
                waited=[b.waited for b in got],
                errors=sum((b.errors for b in got), Counter()),
                stale_served=None if None in stale else [int(x or 0) for x in stale],
            )


# report ------------------------------------------------------------------------------------


def find_cell(cells: Sequence[Cell], side: str, layout: str, writers: int) -> Cell | None:
    for c in cells:
        if c.side == side and c.layout == layout and c.writers == writers:
            return c
    return None


def versus(cells: Sequence[Cell], cell: Cell) -> tuple[float | None, float | None]:
    """(engramdb updates/s ÷ Redis updates/s, Redis p99 ÷ engramdb p99) for the paired cell."""
    peer_id = SESSION_SIDE[cell.side].peer
    peer = find_cell(cells, peer_id, cell.layout, cell.writers) if peer_id else None
    if peer is None or peer.stats is None or cell.stats is None:
        return None, None
    return cell.stats.ops_s / peer.stats.ops_s, peer.stats.p99_us / cell.stats.p99_us


def session_rows(cells: Sequence[Cell], layout: str) -> list[list[str]]:
    rows = []
    for cell in cells:
        if cell.layout != layout:
            continue
        side = SESSION_SIDE[cell.side]
        ops, p99 = versus(cells, cell)
        st = cell.stats
        rows.append(
            [
                str(cell.writers),
                side.system,
                side.durability,
                f"{st.ops_s:,.0f}" if st else "—",
                fmt_us(st.p50_us) if st else "—",
                fmt_us(st.p99_us) if st else "—",
                fmt_us(st.p999_us) if st else "—",
                f"{cell.retries_per_update:.2f}",
                f"{cell.gave_up:,}",
                lost_cell(cell),
                fmt_ratio(ops) if ops is not None else "",
                fmt_ratio(p99) if p99 is not None else "",
            ]
        )
    return rows


def lost_cell(cell: Cell) -> str:
    if cell.lost > 0:
        return f"**{cell.lost:,} LOST**"
    if cell.lost < 0:
        return f"**{-cell.lost:,} APPLIED TWICE**"
    return "0" if cell.events_ok else "**events wrong**"


SESSION_HEADERS = [
    "writers", "system", "durability", "updates/s", "p50", "p99", "p999",
    "retries/update", "gave up", "lost", "updates/s vs Redis", "p99 vs Redis",
]  # fmt: skip


def hit_rows(run: Run) -> list[list[str]]:
    rows = []
    ref1 = run.hits.get("redis.get")
    refn = run.concurrent_hits.get("redis.get")
    for side in HIT_SIDES:
        if side.id not in run.hits:
            continue
        one, many = run.hits[side.id], run.concurrent_hits[side.id]
        rows.append(
            [
                side.system,
                side.call,
                fmt_us(one.p50_us),
                fmt_us(one.p99_us),
                fmt_ratio(ref1.p99_us / one.p99_us) if ref1 else "",
                fmt_us(many.p50_us),
                fmt_us(many.p99_us),
                f"{many.ops_s:,.0f}",
                fmt_ratio(refn.p99_us / many.p99_us) if refn else "",
            ]
        )
    return rows


def hit_headers(threads: int) -> list[str]:
    return [
        "system", "call", "p50", "p99", "Redis p99 ÷ this",
        f"{threads} thr p50", f"{threads} thr p99", f"{threads} thr calls/s",
        "Redis p99 ÷ this",
    ]  # fmt: skip


def _range(xs: Sequence[int]) -> str:
    mean = sum(xs) / len(xs)
    lo, hi = min(xs), max(xs)
    if lo == hi:
        return f"{lo:,}"
    return f"{mean:,.1f} ({lo:,}-{hi:,})"


def stampede_rows(run: Run) -> list[list[str]]:
    rows = []
    redis = run.stampede.get("redis.naive")
    for side in STAMPEDE_SIDES:
        res = run.stampede.get(side.id)
        if res is None:
            continue
        base = run.stampede.get(side.baseline) if side.baseline else None
        st = res.stats
        rows.append(
            [
                side.system,
                side.strategy,
                _range(res.loader_calls),
                _range(res.waited),
                _range(res.stale_served) if res.stale_served is not None else "—",
                fmt_us(st.p50_us),
                fmt_us(st.p99_us),
                fmt_us(st.p999_us),
                f"{res.errors.total():,}",
                fmt_ratio(base.mean_loader_calls / res.mean_loader_calls) if base else "",
                fmt_ratio(base.stats.p99_us / st.p99_us) if base else "",
                fmt_ratio(redis.stats.p99_us / st.p99_us) if redis else "",
            ]
        )
    return rows


STAMPEDE_HEADERS = [
    "system", "strategy", "loader calls / burst", "requests that waited", "served stale",
    "p50", "p99", "p999", "errors", "fewer loader calls vs naive", "naive p99 ÷ this",
    "Redis naive p99 ÷ this",
]  # fmt: skip


def error_notes(run: Run) -> list[str]:
    out = []
    for side in STAMPEDE_SIDES:
        res = run.stampede.get(side.id)
        if res is not None and res.errors:
            kinds = "; ".join(f"{n:,} x `{kind}`" for kind, n in res.errors.most_common(3))
            out.append(f"- **Errors** ({side.system}, {side.strategy}): {kinds}.")
    return out


def report(run: Run, quick: bool, machine: dict[str, str], quiet: str) -> Report:
    s = run.sizes
    r = Report(
        SECTION,
        "sessions_cache",
        "Sessions under contention and the stampede-proof cache",
        "`update(sid, fn)` under contention against Redis WATCH/MULTI, cache hits, and a burst "
        f"of {s.requests:,} requests on a hot key whose TTL runs out; latencies in µs unless "
        "marked ms.",
        quick,
        machine,
        about=f"{quiet} A session holds a counter and its last {EVENTS_KEPT} events "
        f"({state_bytes()} B of msgpack). {run.redis_note}.",
        raw={
            "sizes": asdict(s),
            "writers": list(run.writers),
            "sessions": [{**asdict(SESSION_SIDE[c.side]), **c.to_json()} for c in run.cells],
            "cache_hits": {
                i: {
                    **asdict(HIT_SIDE[i]),
                    "one_thread": st.to_json(),
                    "threads": run.concurrent_hits[i].to_json(),
                }
                for i, st in run.hits.items()
            },
            "stampede": {i: res.to_json() for i, res in run.stampede.items()},
        },
    )
    bad = [c for c in run.cells if c.lost or not c.events_ok]
    r.check(
        "session updates lost or applied twice, every cell",
        "—",
        f"{len(bad)} of {len(run.cells)} cells",
        "0",
        not bad,
    )
    hits = {(row[0], row[1]): row for row in hit_rows(run)}
    for system, call in [
        ("engramdb embedded", "cache.get_or_set (hit)"),
        ("engramdb server", "client cache.get_or_set (hit)"),
    ]:
        if (row := hits.get((system, call))) and row[4]:
            r.check(f"cache hit p99, one thread: Redis p99 ÷ {system} get_or_set", "Redis", row[4])
    for row in stampede_rows(run):
        if row[1] == "get_or_set" and row[9]:
            r.check(
                f"stampede, {row[0]}: loader calls per burst, get_or_set vs naive",
                "naive cache-aside",
                f"{row[2]} ({row[9]} fewer)",
            )
    for layout in LAYOUTS:
        r.table(
            f"Session updates under contention: {layout}",
            SESSION_HEADERS,
            session_rows(run.cells, layout),
            "lllrrrrrrrrr",
            publish=False,
        )
    r.table("Cache hits", hit_headers(s.hit_threads), hit_rows(run), "llrrrrrrr")
    r.table("Stampede", STAMPEDE_HEADERS, stampede_rows(run), "llrrrrrrrrrr")
    for line in error_notes(run):
        r.note("Errors", line)
    return r


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, tuple[int, ...], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb sessions and cache benchmark: embedded, server and Redis.",
    )
    parser.add_argument("--quick", action="store_true", help="short cells (~1 minute smoke run)")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument(
        "--writers",
        default=",".join(map(str, WRITERS)),
        help="writer thread counts, comma-separated (default 1,8,64)",
    )
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    add_redis_args(parser)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"first wait up to this long for the 1-minute load average to drop below {QUIET_LOAD}",
    )
    args = parser.parse_args(argv)
    sizes = sizes_from(args, FULL, QUICK)
    try:
        writers = tuple(int(w) for w in args.writers.split(","))
    except ValueError:
        parser.error("--writers takes comma-separated integers")
    if not writers or min(writers) < 1 or sizes.threads < 1 or sizes.requests < 1:
        parser.error("--writers, --threads and --requests must be positive")
    if sizes.seconds <= 0 or sizes.rounds < 1 or sizes.hits < 1 or sizes.hit_threads < 1:
        parser.error("--seconds, --rounds, --hits and --hit-threads must be positive")
    return sizes, writers, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, writers, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    quiet = True
    if args.wait_quiet > 0:
        quiet, _ = wait_for_quiet(
            QUIET_LOAD,
            args.wait_quiet,
            poll_s=30,
            report=lambda m: console.print(f"[dim]{m}[/dim]"),
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    note = f"1-minute load average {load:.2f} when the run started."
    if not quiet:
        note = (
            f"**The machine never got quiet (load below {QUIET_LOAD} within "
            f"{args.wait_quiet:g} s): 1-minute load average {load:.2f} when the run started; "
            "other processes shared the cores.**"
        )

    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-sessions-", args.data_dir))
        run = stack.enter_context(Run(sizes, writers, root))
        console.print("[bold]starting servers…[/bold]")
        run.open(args)
        machine = machine_info(
            ("engramdb", "lmdb", "msgspec", "redis", "hiredis", "numpy"),
            data_dir=root,
            extra=run.extra,
        )
        run.run()

    report(run, args.quick, machine, note).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
