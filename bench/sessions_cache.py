"""Sessions under write contention and the stampede-proof cache, against Redis, in one run.

    python bench/sessions_cache.py [--quick] [--help for every size]

Sessions: 1, 8 and 64 writer threads update one hot session or a session each (counter + 1, one
more event, the last 20 kept) in closed loops: engramdb embedded and served, durability async
and sync, against Redis WATCH; GET; MULTI; SET; EXEC on the same msgpack (no fsync against
async, ``appendfsync always`` against sync), every side retried by ``cas_update``; latency per
successful update, retries included; every stored counter must equal its updates. Cache hits:
``get_or_set`` and naive ``records.get`` against Redis GET + decode, one thread then
``--hit-threads``. Stampede: a hot key's 250 ms TTL runs out as ``--requests`` requests arrive
from ``--threads`` threads (loader ``--loader-ms``): ``get_or_set`` (with and without
``stale_ttl``) against naive cache-aside on records and on Redis, through the server with one
shared client and a client per thread. Sides take turns cell by cell, burst by burst; GC is
collected and frozen before each.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import numpy as np

import _common
import engramdb
from _common import Meter, Report, Stats, fmt_ratio, fmt_us
from engramdb.errors import Conflict
from engramdb.sessions import cas_update

EVENTS_KEPT = 20
HOT_TTL = 3600.0  # cache hits: never expires during the run
PRIME_TTL, REFILL_TTL = 0.25, 60.0  # stampede: the hot key's TTL, then the loaders' TTL
STALE_TTL = 60.0  # stampede, stale-while-revalidate sides
SLOW_SHARE = 0.8  # a request "waited" when it took at least this share of a loader call
QUIET_LOAD = 0.7  # --wait-quiet waits for the 1-minute load average to drop below this

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


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
LAYOUTS = ("one hot session", "a session per writer")
# id: (system, durability, the Redis side it is compared with)
SESSION_SIDES = {
    "embedded.async": ("engramdb embedded", "async", "redis"),
    "server.async": ("engramdb server", "async", "redis"),
    "redis": ("Redis WATCH/MULTI", "no fsync", None),
    "embedded.sync": ("engramdb embedded", "sync (fsync)", "redis.always"),
    "server.sync": ("engramdb server", "sync (fsync)", "redis.always"),
    "redis.always": ("Redis WATCH/MULTI", "appendfsync always", None),
}
# id: (system, call)
HIT_SIDES = {
    "embedded.get_or_set": ("engramdb embedded", "cache.get_or_set (hit)"),
    "embedded.records_get": ("engramdb embedded", "records.get (naive hit)"),
    "server.get_or_set": ("engramdb server", "client cache.get_or_set (hit)"),
    "server.records_get": ("engramdb server", "client records.get (naive hit)"),
    "redis.get": ("Redis", "GET + msgpack decode"),
}
# id: (system, strategy, the naive side of the same system)
SHARED, PER_THREAD = "server, one shared client", "server, a client per thread"
NAIVE, SF, SWR = "naive cache-aside on records", "get_or_set", "get_or_set, stale_ttl=60"
STAMPEDE_SIDES = {
    "embedded.naive": ("engramdb embedded", NAIVE, None),
    "embedded.single_flight": ("engramdb embedded", SF, "embedded.naive"),
    "embedded.swr": ("engramdb embedded", SWR, "embedded.naive"),
    "server.naive": (SHARED, NAIVE, None),
    "server.single_flight": (SHARED, SF, "server.naive"),
    "server.swr": (SHARED, SWR, "server.naive"),
    "clients.single_flight": (PER_THREAD, SF, "server.naive"),
    "clients.swr": (PER_THREAD, SWR, "server.naive"),
    "redis.naive": ("Redis", "naive cache-aside (GET; SET PX)", None),
}


# session updates ---------------------------------------------------------------------------

UpdateFn = Callable[[str, Callable[[Any], Any]], Any]
Calls = Sequence[tuple[Callable[[Any], object], Any, int]]  # per thread: (fn, arg, n calls)
Arm = Callable[[], float] | None  # called before a release: the monotonic time to release at
# a session store: create(sid, state), a new update function for each writer thread, state(sid)
Store = tuple[Callable[[str, Any], object], Callable[[], UpdateFn], Callable[[str], Any]]


def engram_store(sessions: Any, retries: int) -> Store:
    """``db.sessions`` of an embedded database or of a client: the same methods."""
    update = sessions.update
    return (sessions.create, lambda: lambda sid, fn: update(sid, fn, max_retries=retries),
            lambda sid: sessions.get(sid).state)  # fmt: skip


def redis_store(r: Any, retries: int) -> Store:
    """The same read-modify-write on Redis, WATCH + GET then MULTI/SET/EXEC, retried by
    engramdb's own ``cas_update`` (a ``WatchError`` is a ``Conflict``)."""
    from redis.exceptions import WatchError

    def updater() -> UpdateFn:
        pipe = r.pipeline()  # this thread's own; holds a connection while watching

        def update(sid: str, fn: Callable[[Any], Any]) -> Any:
            key = f"session:{sid}"

            def read() -> tuple[Any, int]:
                pipe.watch(key)
                return decode(pipe.get(key)), 0

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

        return update

    return (lambda sid, state: r.set(f"session:{sid}", encode(state)), updater,
            lambda sid: decode(r.get(f"session:{sid}")))  # fmt: skip


def bumped(state: dict[str, Any], writer: int, seq: int) -> dict[str, Any]:
    """The update every side applies: counter + 1 and one more event, the last 20 kept."""
    event = {"writer": writer, "seq": seq, "kind": "tool_call", "tokens": 128}
    return {"n": state["n"] + 1, "events": [*state["events"][-(EVENTS_KEPT - 1) :], event]}


def together(work: Callable[[int], None], threads: int, arm: Arm = None) -> int:
    """``work(k)`` on ``threads`` threads released at once, GC collected and frozen (at the
    monotonic time ``arm()`` returns, if given). Returns the wall ns from the release to the
    last thread's end; a thread's error is raised here."""
    clock, barrier, errors = time.perf_counter_ns, threading.Barrier(threads + 1), []

    def body(k: int) -> None:
        try:
            barrier.wait()
            work(k)
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    pool = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    gc.collect()
    gc.freeze()
    try:
        time.sleep(max(0.0, arm() - time.monotonic()) if arm else 0.0)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        began = clock()
        for t in pool:
            t.join()
        wall = clock() - began
    finally:
        gc.unfreeze()
    if errors:
        raise RuntimeError("a thread failed") from errors[0]
    return wall


def run_cell(store: Store, side: str, layout: str, writers: int, s: Sizes) -> dict[str, Any]:
    """``writers`` threads in closed loops of updates for ``s.seconds`` after ``s.warmup``."""
    create, updater, read = store
    hot = layout == LAYOUTS[0]
    prefix = f"{side}-{'hot' if hot else 'own'}-{writers}"
    sids = [f"{prefix}-{i}" for i in range(1 if hot else writers)]
    for sid in sids:
        create(sid, {"n": 0, "events": []})
    # per writer: [measured latencies, fn calls measured, updates ok, gave up, last end]
    done: list[list[Any]] = [[[], 0, 0, 0, 0] for _ in range(writers)]
    window: list[int] = []
    clock = time.perf_counter_ns

    def work(k: int) -> None:
        me, calls, update, (start, end) = done[k], [0], updater(), window

        def fn(state: Any) -> Any:
            calls[0] += 1
            return bumped(state, k, calls[0])

        while (t0 := clock()) < end:
            before = calls[0]
            try:
                update(sids[0 if hot else k], fn)
            except Conflict:  # the retries ran out: counted, not timed
                if t0 >= start:
                    me[1], me[3] = me[1] + calls[0] - before, me[3] + 1
                continue
            t1 = clock()
            me[2] += 1
            if t0 >= start:
                me[0].append(t1 - t0)
                me[1], me[4] = me[1] + calls[0] - before, t1

    def arm() -> float:
        start = clock() + int(s.warmup * 1e9)
        window[:] = [start, start + int(s.seconds * 1e9)]
        return 0.0

    together(work, writers, arm)
    lat = [x for d in done for x in d[0]]
    attempts, gave_up = sum(d[1] for d in done), sum(d[3] for d in done)
    lost, events_ok = 0, True
    for sid, ok in zip(sids, [sum(d[2] for d in done)] if hot else [d[2] for d in done]):
        state = read(sid)
        lost += ok - state["n"]
        events_ok &= state["n"] == ok and len(state["events"]) == min(ok, EVENTS_KEPT)
    stats = Stats.from_samples(lat, max(d[4] for d in done) - window[0]) if lat else None
    return {"side": side, "layout": layout, "writers": writers, "stats": stats,
            "updates": len(lat), "attempts": attempts, "gave_up": gave_up, "lost": lost,
            "events_ok": events_ok,
            "retries_per_update": (attempts - len(lat) - gave_up) / max(1, len(lat))}  # fmt: skip


def timed_calls(calls: Calls, arm: Arm = None) -> tuple[Any, int, Counter[str]]:
    """Thread k makes the ``n`` calls ``fn(arg)`` of ``calls[k]`` back to back, each timed
    alone (``together``). Returns every sample, the wall ns and the failed calls by error."""
    clock, errors = time.perf_counter_ns, Counter[str]()
    lats = [[0] * n for _, _, n in calls]

    def work(k: int) -> None:
        (fn, arg, n), lat = calls[k], lats[k]
        for i in range(n):
            t0 = clock()
            try:
                fn(arg)
            except Exception as e:
                errors[f"{type(e).__name__}: {str(e)[:120]}"] += 1
            lat[i] = clock() - t0

    wall = together(work, len(calls), arm)
    return np.concatenate([np.asarray(lat, dtype=np.int64) for lat in lats]), wall, errors


# cache hits and stampedes ------------------------------------------------------------------


def hot_value(i: int) -> dict[str, Any]:
    """A ~160 B cached value (what a loader would build: an answer and its sources)."""
    return {"answer": f"answer {i:06d} " + "x" * 120, "sources": [i, i + 1, i + 2], "v": 0}


class Loader:
    """The slow computation behind the hot key: counts its calls, sleeps, returns a value."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls, self._lock = seconds, 0, threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.seconds)
        return {**hot_value(n), "v": n}


# a stampede side: (prime(key, value) with a PRIME_TTL, thread k's request, get_or_set caches)
Side = tuple[Callable[[str, Any], object], Callable[[int], Callable[[str], Any]], Sequence[Any]]


def get_or_set(caches: Sequence[Any], loader: Loader, stale: float) -> Side:
    def request(k: int) -> Callable[[str], Any]:
        cache = caches[k % len(caches)]
        return lambda key: cache.get_or_set(key, loader, ttl=REFILL_TTL, stale_ttl=stale)

    return lambda k, v: caches[0].set(k, v, ttl=PRIME_TTL, stale_ttl=stale), request, caches


def naive(records: Any, loader: Loader) -> Side:
    def call(key: str) -> Any:
        if (found := records.get(key)) is not None:
            return found.bins
        value = loader()
        records.put(key, value, ttl=REFILL_TTL)
        return value

    return lambda key, v: records.put(key, v, ttl=PRIME_TTL), lambda k: call, ()


def naive_redis(r: Any, loader: Loader) -> Side:
    def call(key: str) -> Any:
        if (raw := r.get(key)) is not None:
            return decode(raw)
        value = loader()
        r.set(key, encode(value), px=int(REFILL_TTL * 1000))
        return value

    return lambda key, v: r.set(key, encode(v), px=int(PRIME_TTL * 1000)), lambda k: call, ()


def stale_served(caches: Sequence[Any]) -> int:
    return sum(c.stats()["stale_served"] for c in {id(c): c for c in caches}.values())


def run_burst(side: Side, loader: Loader, key: str, s: Sizes) -> dict[str, Any]:
    prime, request, caches = side
    threads = min(s.threads, s.requests)
    shares = [s.requests // threads + (k < s.requests % threads) for k in range(threads)]
    before: list[int] = []

    def arm() -> float:
        prime(key, hot_value(0))
        expires = time.monotonic() + PRIME_TTL
        before[:] = [loader.calls, stale_served(caches)]
        return expires + 0.005  # 5 ms late: every store's clock agrees the key expired

    lat, wall, errors = timed_calls([(request(k), key, n) for k, n in enumerate(shares)], arm)
    return {"loader_calls": loader.calls - before[0], "errors": errors,
            "waited": int((lat >= SLOW_SHARE * s.loader_ms * 1e6).sum()),
            "stale_served": stale_served(caches) - before[1] if caches else None,
            "latencies": lat, "wall_ns": wall}  # fmt: skip


def cache_hits(s: Sizes, db: Any, client: Any, r: Any, meter: Meter) -> dict[str, list[Stats]]:
    """Hit latency of every side: one thread (interleaved), then ``s.hit_threads`` at once."""
    keys = [f"hot:{i:05d}" for i in range(s.hot_keys)]
    local, remote = db.records("naive"), client.records("naive")
    for i, key in enumerate(keys):
        db.cache.set(key, hot_value(i), ttl=HOT_TTL)
        local.put(key, hot_value(i))
        client.cache.set(key, hot_value(i), ttl=HOT_TTL)
        remote.put(key, hot_value(i))
        if r is not None:
            r.set(key, encode(hot_value(i)))

    def cached(cache: Any) -> Callable[[str], Any]:
        return lambda key: cache.get_or_set(key, _never, ttl=HOT_TTL)

    fns = {"embedded.get_or_set": cached(db.cache),
           "embedded.records_get": lambda k: local.get(k).bins,
           "server.get_or_set": cached(client.cache),
           "server.records_get": lambda k: remote.get(k).bins,
           **({"redis.get": lambda key: decode(r.get(key))} if r is not None else {})}  # fmt: skip
    for fn in fns.values():  # every side returns the same value
        assert fn(keys[0]) == hot_value(0)
    rng = random.Random(s.seed)
    args = [keys[rng.randrange(len(keys))] for _ in range(s.hits)]
    sides = [(fn, args, args[: max(50, s.hits // 10)]) for fn in fns.values()]
    one = _common.measure_interleaved(sides, meter=meter, description="cache hits · 1 thread")
    out = {}
    for (i, fn), st in zip(fns.items(), one):
        calls = [(fn, keys[0], max(100, s.hits // s.hit_threads))] * s.hit_threads
        lat, wall, errors = timed_calls(calls)
        if errors:
            raise RuntimeError(f"{i}: hit calls failed: {dict(errors)}")
        out[i] = [st, Stats.from_samples(lat, wall)]
    return out


def _never(*_: object) -> Any:
    raise AssertionError("a hit must not call the loader")


def run(s: Sizes, writers: Sequence[int], root: str, args: Any, st: Any) -> dict[str, Any]:
    """Open every store on the ExitStack ``st``, then run the three parts in turn."""
    pool = max(*writers, s.hit_threads, s.threads)
    stores: dict[str, Store] = {}
    for durability in ("sync", "async"):  # async last: db, server and client stay async's
        path = f"{root}/embedded-{durability}"
        db = st.enter_context(engramdb.open(path, durability=durability, sweep_interval=None))
        server, client = st.enter_context(
            _common.served(f"{root}/server-{durability}", durability, pool_size=pool)
        )
        stores[f"embedded.{durability}"] = engram_store(db.sessions, s.max_retries)
        stores[f"server.{durability}"] = engram_store(client.sessions, s.max_retries)
    # redis-py 8 caps a pool at 100 connections by default; every thread needs one.
    fsync_args = ("--appendonly", "yes", "--appendfsync", "always")
    peer = _common.redis_peer(st, ((), fsync_args), args=args, parent=root,
                              max_connections=pool + 8)  # fmt: skip
    out: dict[str, Any] = {"redis_note": peer.note, "cells": [], "stampede": {}}
    r = None
    if peer.clients:
        import redis

        r, always = peer.clients
        stores["redis"] = redis_store(r, s.max_retries)
        stores["redis.always"] = redis_store(always, s.max_retries)
        out["redis_note"] = (
            f'Redis {peer.servers[0].version} on 127.0.0.1 (`--save "" --appendonly no`, and '
            f"`--appendonly yes --appendfsync always` for the fsync rows), redis-py "
            f"{redis.__version__} with {peer.parser}"
        )
    packages = ("engramdb", "lmdb", "msgspec", "redis", "hiredis", "numpy")
    out["machine"] = _common.machine_info(packages, data_dir=root, extra=peer.machine)
    with (progress := _common.new_progress()):
        sides = [i for i in SESSION_SIDES if i in stores]
        (meter := Meter(progress)).start("sessions", len(sides) * 2 * len(writers))
        for layout in LAYOUTS:
            for n in writers:
                for i in sides:
                    out["cells"].append(run_cell(stores[i], i, layout, n, s))
                    meter.advance(1, force=True)
        out["hits"] = cache_hits(s, db, client, r, Meter(progress))
        loader = Loader(s.loader_ms / 1000)
        per_thread = [st.enter_context(engramdb.connect(server.url, pool_size=1)).cache
                      for _ in range(min(s.threads, s.requests))]  # fmt: skip
        stampede = {
            "embedded.naive": naive(db.records("stampede"), loader),
            "embedded.single_flight": get_or_set([db.cache], loader, 0.0),
            "embedded.swr": get_or_set([db.cache], loader, STALE_TTL),
            "server.naive": naive(client.records("stampede"), loader),
            "server.single_flight": get_or_set([client.cache], loader, 0.0),
            "server.swr": get_or_set([client.cache], loader, STALE_TTL),
            "clients.single_flight": get_or_set(per_thread, loader, 0.0),
            "clients.swr": get_or_set(per_thread, loader, STALE_TTL),
            **({"redis.naive": naive_redis(r, loader)} if r is not None else {}),
        }
        bursts: dict[str, list[dict[str, Any]]] = {i: [] for i in stampede}
        (meter := Meter(progress)).start("stampede", len(stampede) * s.rounds)
        for k in range(s.rounds):
            for i, side in stampede.items():
                bursts[i].append(run_burst(side, loader, f"stampede:{i}:{k}", s))
                meter.advance(1, force=True)
    for i, got in bursts.items():  # per side: a list per figure, one item per burst
        res = {k: [b[k] for b in got] for k in ("loader_calls", "waited", "stale_served")}
        lat = np.concatenate([b["latencies"] for b in got])
        res["stats"] = Stats.from_samples(lat, sum(b["wall_ns"] for b in got))
        out["stampede"][i] = {**res, "errors": sum((b["errors"] for b in got), Counter())}
    return out


# report ------------------------------------------------------------------------------------


def ratio(x: float | None) -> str:
    return fmt_ratio(x) if x is not None else ""


def _range(xs: Sequence[int]) -> str:
    lo, hi = min(xs), max(xs)
    return f"{lo:,}" if lo == hi else f"{sum(xs) / len(xs):,.1f} ({lo:,}-{hi:,})"


def session_rows(cells: Sequence[dict[str, Any]], layout: str) -> list[list[str]]:
    by_key = {(c["side"], c["layout"], c["writers"]): c["stats"] for c in cells}
    rows = []
    for c in (c for c in cells if c["layout"] == layout):
        system, durability, peer_id = SESSION_SIDES[c["side"]]
        st, peer, lost = c["stats"], by_key.get((peer_id, layout, c["writers"])), c["lost"]
        shown = "0" if c["events_ok"] else "**events wrong**"
        if lost:
            shown = f"**{lost:,} LOST**" if lost > 0 else f"**{-lost:,} APPLIED TWICE**"
        numbers, vs = ["—"] * 4, ["", ""]
        if st:
            numbers = [f"{st.ops_s:,.0f}", *map(fmt_us, (st.p50_us, st.p99_us, st.p999_us))]
        if st and peer:
            vs = [ratio(st.ops_s / peer.ops_s), ratio(peer.p99_us / st.p99_us)]
        rows.append([str(c["writers"]), system, durability, *numbers,
                     f"{c['retries_per_update']:.2f}", f"{c['gave_up']:,}", shown,
                     *vs])  # fmt: skip
    return rows


def hit_rows(hits: dict[str, list[Stats]]) -> list[list[str]]:
    ref = hits.get("redis.get")
    return [[*HIT_SIDES[i], fmt_us(one.p50_us), fmt_us(one.p99_us),
             ratio(ref[0].p99_us / one.p99_us if ref else None), fmt_us(many.p50_us),
             fmt_us(many.p99_us), f"{many.ops_s:,.0f}",
             ratio(ref[1].p99_us / many.p99_us if ref else None)]
            for i, (one, many) in hits.items()]  # fmt: skip


def stampede_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows, redis = [], results.get("redis.naive")
    for i, res in results.items():
        system, strategy, baseline = STAMPEDE_SIDES[i]
        base, st, calls = results.get(baseline or ""), res["stats"], np.mean(res["loader_calls"])
        rows.append([system, strategy, _range(res["loader_calls"]), _range(res["waited"]),
                     "—" if None in res["stale_served"] else _range(res["stale_served"]),
                     fmt_us(st.p50_us), fmt_us(st.p99_us), fmt_us(st.p999_us),
                     f"{res['errors'].total():,}",
                     ratio(np.mean(base["loader_calls"]) / calls if base else None),
                     ratio(base["stats"].p99_us / st.p99_us if base else None),
                     ratio(redis["stats"].p99_us / st.p99_us if redis else None)])  # fmt: skip
    return rows


def report(s: Sizes, out: dict[str, Any], quick: bool, quiet: str, writers: Any) -> Report:
    state: dict[str, Any] = {"n": 0, "events": []}
    for i in range(EVENTS_KEPT + 5):
        state = bumped(state, 63, 100_000 + i)
    cells, stampede = out["cells"], out["stampede"]
    r = Report(
        "sessions-cache",
        "sessions_cache",
        "Sessions under contention and the stampede-proof cache",
        "`update(sid, fn)` under contention against Redis WATCH/MULTI, cache hits, and a burst "
        f"of {s.requests:,} requests on a hot key whose TTL runs out; latencies in µs unless "
        "marked ms.",
        quick,
        out["machine"],
        about=f"{quiet} A session holds a counter and its last {EVENTS_KEPT} events "
        f"({len(encode(state))} B of msgpack). {out['redis_note']}.",
        raw={"sizes": asdict(s), "writers": list(writers)},
    )  # fmt: skip
    bad = [c for c in cells if c["lost"] or not c["events_ok"]]
    r.check("session updates lost or applied twice, every cell", "—",
            f"{len(bad)} of {len(cells)} cells", "0", not bad)  # fmt: skip
    for row in hit_rows(out["hits"]):
        if row[1].endswith("get_or_set (hit)") and row[4]:
            r.check(f"cache hit p99, one thread: Redis p99 ÷ {row[0]} get_or_set", "Redis", row[4])
    for row in stampede_rows(stampede):
        if row[1] == SF and row[9]:
            r.check(f"stampede, {row[0]}: loader calls per burst, get_or_set vs naive",
                    "naive cache-aside", f"{row[2]} ({row[9]} fewer)")  # fmt: skip
    for layout in LAYOUTS:
        r.table(f"Session updates under contention: {layout}",
                ["writers", "system", "durability", "updates/s", "p50", "p99", "p999",
                 "retries/update", "gave up", "lost", "updates/s vs Redis", "p99 vs Redis"],
                session_rows(cells, layout), "lllrrrrrrrrr", publish=False)  # fmt: skip
    n = s.hit_threads
    r.table("Cache hits", ["system", "call", "p50", "p99", "Redis p99 ÷ this", f"{n} thr p50",
                           f"{n} thr p99", f"{n} thr calls/s", "Redis p99 ÷ this"],
            hit_rows(out["hits"]), "llrrrrrrr")  # fmt: skip
    r.table("Stampede", ["system", "strategy", "loader calls / burst", "requests that waited",
                         "served stale", "p50", "p99", "p999", "errors",
                         "fewer loader calls vs naive", "naive p99 ÷ this",
                         "Redis naive p99 ÷ this"],
            stampede_rows(stampede), "llrrrrrrrrrr")  # fmt: skip
    for i, res in stampede.items():
        if res["errors"]:
            kinds = "; ".join(f"{n:,} x `{kind}`" for kind, n in res["errors"].most_common(3))
            r.note("Errors", f"- **Errors** ({', '.join(STAMPEDE_SIDES[i][:2])}): {kinds}.")
    return r


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short cells (~1 minute smoke run)")
    _common.add_sizes(parser, FULL, QUICK)
    parser.add_argument("--writers", default="1,8,64",
                        help="writer thread counts, comma-separated (default 1,8,64)")  # fmt: skip
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    _common.add_redis_args(parser)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to drop "
                        f"below {QUIET_LOAD}")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = _common.sizes_from(args, FULL, QUICK)
    writers = [int(w) for w in args.writers.split(",")]
    _common.exit_on_sigterm()
    wait = _common.wait_for_quiet
    quiet = args.wait_quiet <= 0 or wait(QUIET_LOAD, args.wait_quiet, poll_s=30, report=print)[0]
    note = f"1-minute load average {os.getloadavg()[0]:.2f} when the run started."
    if not quiet:
        note = (f"**The machine never got quiet (load below {QUIET_LOAD} within "
                f"{args.wait_quiet:g} s): {note[0].lower()}{note[1:-1]}; other processes shared "
                "the cores.**")  # fmt: skip
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_dir("engramdb-bench-sessions-", args.data_dir))
        out = run(sizes, writers, root, args, stack)
    report(sizes, out, args.quick, note, writers).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
