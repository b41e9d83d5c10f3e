"""The feature store against Feast: online lookups and point-in-time joins, in one run.

    python bench/features.py [--quick]    # full: ~30 min on 2 cores; --help: every size

Feast runs in its own virtualenv (``--feast-python``) through ``bench/_feast_side.py``.

**Online.** Drivers with 3 rows each at distinct times in shuffled order (the latest must win)
in five 40-feature views and one 50-feature view; shapes 1 entity x 200 features and 100 x 50.
Sides one after the other on the same entity sequences, each through ``_common.measure``'s
loop (Feast's in its own process): engramdb embedded and served, Feast with SQLite and Redis
online stores (``get_online_features(...).to_dict()``: the Python values engramdb's response
holds), plain record ``get_many`` (what the feature layer adds) and timing noise.
**Offline.** Events (drivers x 100 over a year; ttl 7 days), 10 entity rows per driver.
engramdb ingests and joins to Parquet, each in a fresh process (time, peak RSS); Feast's
``file`` (Dask) store joins the same file at ``--feast-events`` sizes while each fits
``--feast-timeout`` and memory. **Identity.** Every output is matched on (driver, time) to a
numpy ground truth, floats exactly, null = NaN.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import _common
import engramdb
from _common import Meter, PeerRun, Report, Stats, fmt_lat, fmt_ratio, measure, stats_cells
from engramdb.features import Entity, FeatureView, Field

TARGET_P99_US = 100.0  # embedded 1 x 200 p99
TARGET_ONLINE = 20.0  # Feast p99 / engramdb embedded p99, each shape and online store
TARGET_OFFLINE = 10.0  # Feast join time / engramdb join time at the same size
FEAST_SIDE = Path(__file__).resolve().with_name("_feast_side.py")
FEAST_INSTALL = (
    "python -m venv /tmp/feast-venv && "
    "/tmp/feast-venv/bin/pip install 'feast[redis]' pandas pyarrow"
)
ENTITY, JOIN_KEY, VIEW = "driver", "driver_id", "events"
BASE_US = 1_700_000_000 * 1_000_000  # 2023-11-14 22:13:20 UTC
YEAR_S, MONTH_S = 365 * 86_400, 30 * 86_400
OFFLINE_FEATURES = (("f0", "float64"), ("f1", "float64"), ("f2", "float64"), ("f3", "int64"))
OFFLINE_REFS = [f"{VIEW}:{n}" for n, _ in OFFLINE_FEATURES]
SIDES = {"embedded": "engramdb embedded", "floor": "engramdb record reads",
         "noise": "timing noise", "server": "engramdb server", "feast_sqlite": "Feast SQLite",
         "feast_redis": "Feast Redis"}  # fmt: skip
SHAPES = {"single": "1 x 200", "batch": "100 x 50"}
FEAST_SIDES = ("feast_sqlite", "feast_redis")


@dataclass(frozen=True)
class Sizes:
    entities: int = 100_000  # online drivers
    rows_per_entity: int = 3  # historical rows per driver and online view (latest wins)
    wide_views: int = 5
    wide_features: int = 40
    narrow_features: int = 50
    batch: int = 100  # entities per call of the batch shape
    single_calls: int = 10_000  # calls of 1 x (wide_views x wide_features)
    batch_calls: int = 1_000  # calls of batch x narrow_features
    warmup: float = 0.1  # warmup calls, as a fraction of measured calls (at least 20)
    answers: int = 20  # calls per shape and side whose answers are checked
    events: int = 10_000_000  # offline events (engramdb's largest size)
    events_per_entity: int = 100
    rows_per_driver: int = 10  # offline entity rows per driver
    feast_events: str = "1000000,3000000,10000000"  # Feast offline sizes, ascending
    feast_timeout: float = 600.0  # seconds per Feast offline size
    ttl_days: float = 7.0
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(
    entities=2_000,
    single_calls=1_000,
    batch_calls=200,
    answers=5,
    events=300_000,
    feast_events="100000",
    feast_timeout=120.0,
)


def _count(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if abs(v - round(v)) < 0.05 else f"{v:.1f}{unit}"
    return str(n)


def _gib(kib: float) -> str:
    return f"{kib / (1 << 20):.2f} GiB"


# the online data ---------------------------------------------------------------------------


@dataclass
class OnlineData:
    views: list[tuple[str, tuple[str, ...], str]]  # (name, features, parquet path)
    truth: dict[str, np.ndarray]  # view -> (entities, features): each driver's latest row
    shapes: dict[str, tuple[list[str], list[list[int]], list[list[int]]]]  # refs, warm, calls
    rows: int  # rows ingested, all views


def make_online(sizes: Sizes, root: str) -> OnlineData:
    rng = np.random.default_rng(sizes.seed)
    n, r = sizes.entities, sizes.rows_per_entity
    specs = [
        (f"wide{v}", tuple(f"w{v}_f{j:02d}" for j in range(sizes.wide_features)))
        for v in range(sizes.wide_views)
    ]
    specs.append(("narrow", tuple(f"n_f{j:02d}" for j in range(sizes.narrow_features))))
    views, truth = [], {}
    for name, features in specs:
        stamps = BASE_US + rng.integers(0, YEAR_S, (n, r)) * 1_000_000 + np.arange(r)[None, :]
        values = rng.random((n, r, len(features)))
        truth[name] = values[np.arange(n), stamps.argmax(axis=1)]
        order = rng.permutation(n * r)
        flat = values.reshape(n * r, len(features))[order]
        columns = {
            JOIN_KEY: pa.array(np.repeat(np.arange(n, dtype=np.int64), r)[order]),
            "event_timestamp": pa.array(stamps.ravel()[order], pa.timestamp("us", tz="UTC")),
            **{f: pa.array(flat[:, j]) for j, f in enumerate(features)},
        }
        path = os.path.join(root, f"online-{name}.parquet")
        pq.write_table(pa.table(columns), path)
        views.append((name, features, path))

    def warm(count: int) -> int:
        return max(20, int(count * sizes.warmup))

    def singles(count: int) -> list[list[int]]:
        return [[int(i)] for i in rng.integers(0, n, count)]

    def batches(count: int) -> list[list[int]]:
        k = min(sizes.batch, n)
        return [sorted(int(i) for i in rng.choice(n, k, replace=False)) for _ in range(count)]

    single = [f"{v}:{f}" for v, fs, _ in views[:-1] for f in fs]
    narrow = [f"{views[-1][0]}:{f}" for f in views[-1][1]]
    s_warm, s_calls = singles(warm(sizes.single_calls)), singles(sizes.single_calls)
    b_warm, b_calls = batches(warm(sizes.batch_calls)), batches(sizes.batch_calls)
    shapes = {"single": (single, s_warm, s_calls), "batch": (narrow, b_warm, b_calls)}
    return OnlineData(views, truth, shapes, len(specs) * n * r)


def check_answers(
    data: OnlineData, refs: list[str], calls: list[list[int]], answers: list[dict[str, Any]]
) -> tuple[int, int]:
    """(values checked, values wrong) of ``answers`` to ``calls`` against the latest rows."""
    index = {f"{v}:{f}": (v, j) for v, fs, _ in data.views for j, f in enumerate(fs)}
    checked = wrong = 0
    for ids, answer in zip(calls, answers):
        checked += len(ids) * len(refs)
        if list(answer.get(JOIN_KEY, ids)) != ids:
            wrong += len(ids) * len(refs)
            continue
        for ref in refs:
            view, j = index[ref]
            got, want = answer.get(ref.partition(":")[2]), data.truth[view][ids, j]
            if got is None or len(got) != len(ids):
                wrong += len(ids)
            else:
                wrong += sum(1 for a, b in zip(got, want) if a is None or float(a) != float(b))
    return checked, wrong


# the offline data --------------------------------------------------------------------------


@dataclass
class OfflineData:
    """The largest size in memory; size ``n`` is its first ``n / events_per_entity`` drivers."""

    per_driver: int
    stamps: np.ndarray  # (drivers, per_driver) µs, sorted per driver
    values: np.ndarray  # (drivers * per_driver, 4) float64 (f3 holds ints)
    row_driver: np.ndarray  # entity rows
    row_stamp: np.ndarray
    ttl_us: int


def make_offline(sizes: Sizes) -> OfflineData:
    rng = np.random.default_rng(sizes.seed + 1)
    k = sizes.events_per_entity
    drivers = sizes.events // k
    seconds = np.sort(rng.integers(0, YEAR_S, (drivers, k)), axis=1)
    stamps = BASE_US + seconds * 1_000_000 + np.arange(k)[None, :]  # distinct per driver
    values = np.empty((drivers * k, 4))
    values[:, :3] = rng.standard_normal((drivers * k, 3))
    values[:, 3] = rng.integers(0, 1_000_000, drivers * k)
    count = drivers * sizes.rows_per_driver
    row_driver = rng.integers(0, drivers, count)
    row_stamp = BASE_US + rng.integers(-MONTH_S, YEAR_S + MONTH_S, count) * 1_000_000
    # (driver, time) must be unique: Feast's Dask store keeps one output row per pair.
    key = row_driver.astype(np.int64) * (2 * YEAR_S) + (row_stamp - BASE_US) // 1_000_000
    keep = np.sort(np.unique(key, return_index=True)[1])
    ttl_us = int(sizes.ttl_days * 86_400 * 1_000_000)
    return OfflineData(k, stamps, values, row_driver[keep], row_stamp[keep], ttl_us)


@dataclass(frozen=True)
class OfflineSize:
    events: int
    drivers: int
    rows: int
    events_path: str
    entities_path: str
    truth: np.ndarray = field(repr=False)  # (rows, 4), NaN where there is no value
    keys: np.ndarray = field(repr=False)  # the entity rows' (driver, time) keys, in order

    @property
    def label(self) -> str:
        return f"{_count(self.events)} x {_count(self.rows)}"


# Every time lies in [BASE - MONTH, BASE + YEAR + MONTH]: (driver, time) packs into one int64.
_KEY_SPAN = (YEAR_S + 2 * MONTH_S) * 1_000_000 + 1


def _row_keys(driver: np.ndarray, stamp_us: np.ndarray) -> np.ndarray:
    """One sortable int64 per (driver, time): by driver, then time."""
    keys = driver.astype(np.int64) * _KEY_SPAN + (stamp_us - (BASE_US - MONTH_S * 1_000_000))
    return np.asarray(keys, dtype=np.int64)


def write_offline(data: OfflineData, events: int, root: str) -> OfflineSize:
    """Size ``events``'s two Parquet files, and what its point-in-time join must return."""
    drivers = events // data.per_driver
    n = drivers * data.per_driver
    ev_driver = np.repeat(np.arange(drivers, dtype=np.int64), data.per_driver)
    ev_stamp = data.stamps[:drivers].ravel()
    ts, f = pa.timestamp("us", tz="UTC"), data.values[:n]
    paths = [os.path.join(root, f"{what}-{n}.parquet") for what in ("events", "entities")]
    pq.write_table(pa.table({JOIN_KEY: ev_driver, "event_timestamp": pa.array(ev_stamp, ts),
                             "f0": f[:, 0], "f1": f[:, 1], "f2": f[:, 2],
                             "f3": f[:, 3].astype(np.int64)}), paths[0])  # fmt: skip
    mask = data.row_driver < drivers
    driver, stamp = data.row_driver[mask], data.row_stamp[mask]
    entities = {JOIN_KEY: driver.astype(np.int64), "event_timestamp": pa.array(stamp, ts)}
    pq.write_table(pa.table(entities), paths[1])
    keys = _row_keys(driver, stamp)
    pos = np.searchsorted(_row_keys(ev_driver, ev_stamp), keys, side="right") - 1
    safe = np.maximum(pos, 0)
    hit = (pos >= 0) & (ev_driver[safe] == driver) & (stamp - ev_stamp[safe] <= data.ttl_us)
    truth = np.full((driver.size, 4), np.nan)
    truth[hit] = data.values[safe[hit]]
    return OfflineSize(n, drivers, int(mask.sum()), *paths, truth, keys)


def _columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """A join output's (driver, time) keys and its features as float64 (null = NaN)."""
    stamp = table["event_timestamp"]
    values = stamp.cast(pa.int64()).to_numpy()
    unit = stamp.type.unit
    micros = values // 1_000 if unit == "ns" else values * {"s": 10**6, "ms": 1_000, "us": 1}[unit]
    got = [table[n].to_pandas().to_numpy(np.float64, na_value=np.nan) for n, _ in OFFLINE_FEATURES]
    values = np.column_stack(got) if table.num_rows else np.empty((0, 4))
    return _row_keys(table[JOIN_KEY].to_numpy().astype(np.int64), micros.astype(np.int64)), values


def _differ(a: np.ndarray, b: np.ndarray) -> int:
    return int((~(np.isnan(a) & np.isnan(b)) & (a != b)).sum())


def check_join(system: str, size: OfflineSize, table: pa.Table) -> dict[str, Any]:
    """A join's output against the ground truth; ``order_kept`` (engramdb promises it)."""
    keys, got = _columns(table)
    want_keys = size.keys
    order = np.argsort(want_keys)
    sorted_keys = want_keys[order]
    at = np.clip(np.searchsorted(sorted_keys, keys), 0, max(0, sorted_keys.size - 1))
    found = sorted_keys[at] == keys if sorted_keys.size else np.zeros(keys.size, bool)
    rows = order[at[found]]
    missing = np.ones(want_keys.size, bool)
    missing[rows] = False
    kept = bool(table.num_rows == want_keys.size and np.array_equal(keys, want_keys))
    out = {"system": system, "size": size.label, "expected_rows": int(want_keys.size),
           "returned_rows": table.num_rows, "missing_rows": int(missing.sum()),
           "missing_rows_without_value": int((missing & np.isnan(size.truth).all(1)).sum()),
           "extra_rows": int((~found).sum()), "values_checked": int(size.truth[rows].size),
           "values_wrong": _differ(size.truth[rows], got[found]),
           "order_kept": kept if system == "engramdb" else None}  # fmt: skip
    out["ok"] = not out["values_wrong"] and not out["extra_rows"] and (
        out["missing_rows"] == out["missing_rows_without_value"])  # fmt: skip
    return out


def offline_child(spec_path: str, out_path: str) -> int:
    """``--offline-child``: one ingest or one join, alone in this process; JSON out."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    with engramdb.open(spec["db"], durability="none", sweep_interval=None) as db:
        fs = db.features
        if spec["mode"] == "ingest":
            fields = [Field(name, dtype) for name, dtype in OFFLINE_FEATURES]
            ttl = dt.timedelta(days=spec["ttl_days"])
            # online=False: the offline bench puts nothing in the online store
            fs.apply([Entity(ENTITY, [JOIN_KEY]), FeatureView(VIEW, [ENTITY], fields, ttl=ttl,
                                                              online=False)])  # fmt: skip
            began = time.perf_counter()
            done = fs.ingest(VIEW, spec["events"])
            result = {"seconds": time.perf_counter() - began, "rows": done.rows}
        else:
            entities = pq.read_table(spec["entities"])
            before, _ = _common.rss_kib()
            began = time.perf_counter()
            fs.get_historical_features(entities, OFFLINE_REFS, output=spec["output"])
            seconds = time.perf_counter() - began
            rows = pq.ParquetFile(spec["output"]).metadata.num_rows
            result = {"seconds": seconds, "rss_before_kib": before, "rows": rows}
        result["peak_rss_kib"] = _common.rss_kib()[1]
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


# the run -----------------------------------------------------------------------------------

OURS = [sys.executable, str(Path(__file__).resolve()), "--offline-child"]


@dataclass
class JoinRun:
    system: str  # engramdb / Feast
    size: OfflineSize
    result: PeerRun
    ingest: PeerRun | None = None
    identity: dict[str, Any] | None = None


class Run:
    def __init__(self, sizes: Sizes, root: str, feast: list[str] | None) -> None:
        self.sizes, self.root, self.feast = sizes, root, feast  # feast: its side's argv
        self.progress = _common.new_progress()
        self.redis: _common.RedisServer | None = None
        self.mem_limit_kib = int(_common.available_kib() * 0.85) or None
        self.online: dict[str, Stats] = {}  # "<side>.<shape>"
        self.notes: dict[str, str] = {}  # side -> why it is missing
        self.identity: dict[str, tuple[int, int]] = {}  # "<side>.<shape>" -> (checked, wrong)
        self.loads: dict[str, float] = {}  # side -> seconds to load the online store
        self.joins: list[JoinRun] = []
        self.agreement: list[dict[str, Any]] = []
        self.load_avg: dict[str, str] = {}

    def note_load(self, phase: str) -> None:
        self.load_avg[phase] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def start(self, argv: list[str], spec: dict[str, Any], name: str, **watch: Any) -> Any:
        return _common.start_peer(
            argv, spec, self.root, name, max_rss_kib=self.mem_limit_kib, **watch
        )

    def child(self, argv: list[str], spec: dict[str, Any], name: str, what: str) -> PeerRun:
        timeout = self.sizes.feast_timeout + 60 if spec.get("mode") == "offline" else None
        return self.start(argv, spec, name, timeout_s=timeout)(self.progress, what)

    def feast_online(self, data: OnlineData, store: str, **spec: Any) -> dict[str, Any]:
        online: dict[str, Any] = {"type": "sqlite"}
        if store == "redis" and self.redis is not None:
            online = {"type": "redis", "connection_string": f"127.0.0.1:{self.redis.port}"}
        views = [{"name": v, "path": p, "features": [[f, "float64"] for f in fs], "ttl_s": 0}
                 for v, fs, p in data.views]  # fmt: skip
        entity = {"name": ENTITY, "join_key": JOIN_KEY}
        repo = os.path.join(self.root, f"feast-{store}")
        return {"repo": repo, "online_store": online, "entity": entity, "views": views, **spec}

    # online

    def run_online(self, data: OnlineData) -> None:
        stores = ["sqlite", "redis"] if self.redis else ["sqlite"]
        stores = stores if self.feast else []
        # Loading is not what is measured: Feast's materializations run in the background
        # while engramdb ingests, then every side is measured alone.
        loads = {s: self.start(self.feast or [], self.feast_online(data, s, mode="online-load"),
                               f"feast-online-load-{s}") for s in stores}  # fmt: skip
        db_path = os.path.join(self.root, "engramdb-online")
        with engramdb.open(db_path, durability="none", sweep_interval=None) as db:
            fs = db.features
            views = [FeatureView(v, [ENTITY], [Field(f, "float64") for f in features])
                     for v, features, _ in data.views]  # fmt: skip
            fs.apply([Entity(ENTITY, [JOIN_KEY]), *views])
            meter = Meter(self.progress)
            meter.start("online load · engramdb ingest", data.rows)
            began = time.perf_counter()
            for v, _, path in data.views:
                meter.advance(fs.ingest(v, path).rows, force=True)
            self.loads["embedded"] = time.perf_counter() - began
            for store, job in loads.items():
                got = job(self.progress, f"online load · Feast {store} materialize")
                if got.ok:
                    self.loads[f"feast_{store}"] = got.data["materialize_s"]
                else:
                    self.notes[f"feast_{store}"] = f"materialize failed: {got.note}"
            self.note_load("online (engramdb embedded)")
            self.measure_engram("embedded", fs, data)
            # What the feature layer adds: the same reads as plain ``get_many`` on the online
            # store's record sets (one per view, the entity's id as the key; no columns).
            sets = [fs.online.store.records(fs.online.set_of(v)) for v, _, _ in data.views]
            self.measure_side(
                "floor", "single", lambda ids: [s.get_many(ids) for s in sets[:-1]], data
            )
            self.measure_side("floor", "batch", lambda ids: sets[-1].get_many(ids), data)
            # The machine's own jitter: pure-Python work as long as the 1 x 200 p50.
            n = _common.calibrate_busy_loop(self.online["embedded.single"].p50_us)
            self.measure_side("noise", "single", lambda _: _common.busy_loop(n), data)
        self.note_load("online (engramdb server)")
        with _common.served(db_path, "none") as (_, client):
            self.measure_engram("server", client.features, data)
        for store in stores:
            if f"feast_{store}" not in self.notes:
                self.note_load(f"online ({SIDES[f'feast_{store}']})")
                self.measure_feast(store, data)

    def measure_side(self, side: str, shape: str, fn: Any, data: OnlineData) -> None:
        _, warm, calls = data.shapes[shape]
        what = f"online {SHAPES[shape]} · {SIDES[side]}"
        self.online[f"{side}.{shape}"] = measure(
            fn, calls, warmup=warm, meter=Meter(self.progress), description=what, batch=64
        )

    def measure_engram(self, side: str, fs: Any, data: OnlineData) -> None:
        for shape, (refs, _, calls) in data.shapes.items():

            def call(ids: list[int], refs: list[str] = refs) -> Any:
                return fs.get_online_features(refs, [{JOIN_KEY: i} for i in ids])

            self.measure_side(side, shape, call, data)
            some = calls[: self.sizes.answers]
            answers = [call(ids).to_dict() for ids in some]
            self.identity[f"{side}.{shape}"] = check_answers(data, refs, some, answers)

    def measure_feast(self, store: str, data: OnlineData) -> None:
        side, dump = f"feast_{store}", self.sizes.answers
        work = [{"id": shape, "features": refs, "warmup": warm, "calls": calls, "dump": dump}
                for shape, (refs, warm, calls) in data.shapes.items()]  # fmt: skip
        spec = self.feast_online(data, store, mode="online-measure", workloads=work)
        got = self.child(self.feast or [], spec, f"feast-online-measure-{store}",
                         f"online · {SIDES[side]} (both shapes)")  # fmt: skip
        if not got.ok:
            self.notes[side] = f"measurement failed: {got.note}"
            return
        for shape, (refs, _, calls) in data.shapes.items():
            w = got.data["workloads"][shape]
            self.online[f"{side}.{shape}"] = Stats.from_samples(w["samples_ns"], w["wall_ns"])
            self.identity[f"{side}.{shape}"] = check_answers(data, refs, calls[:dump], w["answers"])

    # offline

    def run_offline(self, data: OfflineData) -> None:
        sizes = self.sizes
        feast = sorted({int(x) for x in sizes.feast_events.split(",") if x.strip()})
        feast = [n for n in feast if n <= sizes.events] if self.feast else []
        largest = (sizes.events // sizes.events_per_entity) * sizes.events_per_entity
        stop = "" if self.feast else "Feast not available"
        last: JoinRun | None = None
        for events in sorted({*feast, largest}):
            size = write_offline(data, events, self.root)
            ours = self.join("engramdb", size)
            if events not in feast:
                continue
            if not stop and last is not None:
                stop = self.projection(last, size)
            if stop:
                self.joins.append(JoinRun("Feast", size, PeerRun(False, note=stop)))
                continue
            theirs = self.join("Feast", size)
            if not theirs.result.ok:
                stop = f"a smaller size did not finish ({theirs.result.note})"
                continue
            last = theirs
            if ours.result.ok:
                a, b = (
                    _columns(pq.read_table(self.output(s, size))) for s in ("engramdb", "Feast")
                )
                common, i, j = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
                self.agreement.append({"size": size.label, "rows_in_both": int(common.size),
                                       "values_compared": int(a[1][i].size),
                                       "values_differ": _differ(a[1][i], b[1][j])})  # fmt: skip

    def projection(self, last: JoinRun, size: OfflineSize) -> str:
        """Why Feast should not try ``size`` given how the last size went ('' to try)."""
        scale, took, limit = size.events / last.size.events, last.result.data["seconds"], 1 << 20
        peak = last.result.data["peak_rss_kib"] * scale
        if took * scale > self.sizes.feast_timeout * 1.5:
            return (f"skipped: {_count(last.size.events)} took {took:.0f} s, so ~{took * scale:.0f}"
                    f" s projected (limit {self.sizes.feast_timeout:.0f} s)")  # fmt: skip
        if self.mem_limit_kib is not None and peak > self.mem_limit_kib:
            return (f"skipped: ~{peak / limit:.0f} GiB peak RSS projected "
                    f"(limit {self.mem_limit_kib / limit:.0f} GiB)")  # fmt: skip
        return ""

    def output(self, system: str, size: OfflineSize) -> str:
        return os.path.join(self.root, f"{system.lower()}-join-{size.events}.parquet")

    def join(self, system: str, size: OfflineSize) -> JoinRun:
        """One size's point-in-time join: engramdb ingests then joins, Feast does both at
        once (the limit bounds its join; its import and apply come on top, a few seconds)."""
        self.note_load(f"offline {system} {size.label}")
        out, what = self.output(system, size), f"offline {size.label} · {system}"
        ingest = None
        if system == "Feast":
            view = {"name": VIEW, "path": size.events_path, "ttl_s": self.sizes.ttl_days * 86_400,
                    "features": [list(f) for f in OFFLINE_FEATURES]}  # fmt: skip
            repo = os.path.join(self.root, f"feast-offline-{size.events}")
            spec = {"mode": "offline", "repo": repo, "views": [view], "features": OFFLINE_REFS,
                    "entity": {"name": ENTITY, "join_key": JOIN_KEY},
                    "entities": size.entities_path, "result": out}  # fmt: skip
            result = self.child(self.feast or [], spec, f"feast-join-{size.events}", f"{what} join")
            if result.ok and result.data["seconds"] > self.sizes.feast_timeout:
                result = PeerRun(False, result.data, f"took {result.data['seconds']:.0f} s")
        else:
            db = os.path.join(self.root, f"engramdb-offline-{size.events}")
            spec = {"mode": "ingest", "db": db, "events": size.events_path,
                    "ttl_days": self.sizes.ttl_days}  # fmt: skip
            ingest = self.child(OURS, spec, f"engramdb-ingest-{size.events}", f"{what} ingest")
            result = PeerRun(False, note="ingest failed")
            if ingest.ok:
                spec = {"mode": "join", "db": db, "entities": size.entities_path, "output": out}
                result = self.child(OURS, spec, f"engramdb-join-{size.events}", f"{what} join")
        run = JoinRun(system, size, result, ingest)
        if result.ok:
            run.identity = check_join(system, size, pq.read_table(out))
        self.joins.append(run)
        return run


# report ------------------------------------------------------------------------------------


def ok_join(run: Run, events: int) -> JoinRun | None:
    """engramdb's finished join of ``events`` events, if any."""
    ours = [j for j in run.joins if j.system == "engramdb" and j.result.ok]
    return next((j for j in ours if j.size.events == events), None)


def checks(run: Run, rep: Report) -> None:
    """engramdb's own p99, Feast's p99 and join time over engramdb's, identical answers."""
    if st := run.online.get("embedded.single"):
        detail = f"p50 {fmt_lat(st.p50_us)}"
        if noise := run.online.get("noise.single"):
            noisy = fmt_lat(noise.p99_us)
            detail += f"; pure-Python work as long as that p50 has p99 {noisy} (timing noise)"
        rep.check("engramdb embedded p99, 1 x 200", "—", f"{fmt_lat(st.p99_us)} ({detail})",
                  f"≤ {TARGET_P99_US:g} µs", st.p99_us <= TARGET_P99_US)  # fmt: skip
    for (shape, shape_name), store in itertools.product(SHAPES.items(), FEAST_SIDES):
        ours, theirs = run.online.get(f"embedded.{shape}"), run.online.get(f"{store}.{shape}")
        if ours and theirs:
            ratio = theirs.p99_us / ours.p99_us
            rep.check(f"{SIDES[store]} p99 / engramdb p99, {shape_name}", SIDES[store],
                      f"{fmt_ratio(ratio)} ({fmt_lat(theirs.p99_us)} vs {fmt_lat(ours.p99_us)})",
                      f"≥ {TARGET_ONLINE:g}x", ratio >= TARGET_ONLINE)  # fmt: skip
    for j in (j for j in run.joins if j.system == "Feast" and j.result.ok):
        if mine := ok_join(run, j.size.events):
            theirs_s, mine_s = j.result.data["seconds"], mine.result.data["seconds"]
            rep.check(f"point-in-time join time: Feast / engramdb, {j.size.label}", "Feast",
                      f"{fmt_ratio(theirs_s / mine_s)} ({theirs_s:.1f} s vs {mine_s:.2f} s)",
                      f"≥ {TARGET_OFFLINE:g}x", theirs_s / mine_s >= TARGET_OFFLINE)  # fmt: skip
    if idents := [j.identity for j in run.joins if j.identity is not None]:
        differ = sum(a["values_differ"] for a in run.agreement)
        compared = sum(a["values_compared"] for a in run.agreement)
        wrong = sum(i["values_wrong"] for i in idents) + sum(w for _, w in run.identity.values())
        same = all(i["ok"] for i in idents) and not wrong and not differ
        rep.check("identical results (online and point-in-time join)", "Feast",
                  f"{wrong} values wrong; engramdb vs Feast: {differ} of {compared:,} differ",
                  "identical", same)  # fmt: skip


def tables(run: Run, rep: Report) -> None:
    online, ratios, joins, idents = [], [], [], []
    for shape, shape_name in SHAPES.items():
        ours = run.online.get(f"embedded.{shape}")
        for side, side_name in SIDES.items():
            if (st := run.online.get(f"{side}.{shape}")) is None:
                if side not in ("floor", "noise"):
                    online.append([shape_name, side_name, *["—"] * 6])
                continue
            vs = fmt_ratio(st.p99_us / ours.p99_us) if ours and side != "embedded" else ""
            online.append([shape_name, side_name, f"{st.n:,}", *stats_cells(st), vs])
        for side, store in itertools.product(("embedded", "server"), FEAST_SIDES):
            mine, theirs = run.online.get(f"{side}.{shape}"), run.online.get(f"{store}.{shape}")
            if mine and theirs:
                x = (theirs.p50_us / mine.p50_us, theirs.p99_us / mine.p99_us,
                     mine.ops_s / theirs.ops_s)  # fmt: skip
                ratios.append([shape_name, SIDES[side], SIDES[store], *map(fmt_ratio, x)])
    for j in sorted(run.joins, key=lambda j: (j.size.events, j.system != "engramdb")):
        d, ours_j = j.result.data, ok_join(run, j.size.events)
        ratio = fmt_ratio(d["seconds"] / ours_j.result.data["seconds"]) if (
            j.system == "Feast" and j.result.ok and ours_j) else ""  # fmt: skip
        ingest = f"{j.ingest.data['seconds']:.1f} s" if j.ingest and j.ingest.ok else ""
        cells = [f"{d['seconds']:.2f} s", _gib(d["peak_rss_kib"]), _gib(d["rss_before_kib"]),
                 f"{d['rows']:,}"] if j.result.ok else ["—"] * 4  # fmt: skip
        joins.append([j.size.label, j.system, *cells, ingest, ratio, j.result.note])
        if (i := j.identity) is not None:
            missing = f"{i['missing_rows']:,}" + (
                f" ({i['missing_rows_without_value']:,} have no value in the truth)"
                if i["missing_rows"] else "")  # fmt: skip
            kept = {None: "", True: "yes", False: "**no**"}[i["order_kept"]]
            counts = [f"{i[k]:,}" for k in ("values_checked", "values_wrong")]
            idents.append([i["size"], i["system"], f"{i['expected_rows']:,}",
                           f"{i['returned_rows']:,}", missing, *counts, kept,
                           f"**{'PASS' if i['ok'] else 'FAIL'}**"])  # fmt: skip
    rep.table("Online: get_online_features (last column: p99 vs engramdb embedded)",
              ["shape", "system", "calls", "p50", "p99", "p999", "calls/s", "p99 vs embedded"],
              online, "llrrrrrr")  # fmt: skip
    rep.table("Online ratios (above 1 favours engramdb)",
              ["shape", "engramdb", "against", "p50 ratio", "p99 ratio", "calls/s ratio"],
              ratios, "lllrrr", publish=False)  # fmt: skip
    rep.table("Offline: point-in-time join (fresh process; Feast time / engramdb time)",
              ["events x entity rows", "system", "join time", "peak RSS", "RSS before",
               "rows out", "ingest", "Feast / engramdb", "note"],
              joins, "llrrrrrrl", publish=False)  # fmt: skip
    rep.table("Identity (each output against a numpy ground truth)",
              ["size", "system", "entity rows", "rows out", "rows missing", "values checked",
               "values wrong", "order kept", "result"],
              idents, "llrrlrrll", publish=False)  # fmt: skip


def report(sizes: Sizes, quick: bool, run: Run, data: OnlineData, machine: dict[str, str],
           feast_note: str) -> Report:  # fmt: skip
    # The rest of the run is in the tables.
    raw = {"sizes": asdict(sizes), "load_average": run.load_avg, "online_notes": run.notes,
           "online_identity": run.identity, "join_agreement": run.agreement}  # fmt: skip
    rep = Report(
        "features", "features",
        "Feature store: online lookups and point-in-time joins, against Feast",
        f"Online lookups (1 driver x {sizes.wide_views * sizes.wide_features} features from "
        f"{sizes.wide_views} views; {sizes.batch} drivers x {sizes.narrow_features} features) "
        "and point-in-time joins, against Feast with SQLite and Redis online stores and its "
        "file (Dask) offline store; latencies in µs.",
        quick, machine, about=f"{data.rows:,} online rows. Feast: {feast_note}",
        raw=raw,
    )  # fmt: skip
    checks(run, rep)
    tables(run, rep)
    if run.loads:
        rep.note("Loading the online stores (s)", str(run.loads))
    return rep


# main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--offline-child":
        return offline_child(argv[1], argv[2])
    parser = argparse.ArgumentParser(description="engramdb feature store vs Feast.")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    _common.add_sizes(parser, FULL, QUICK)
    parser.add_argument("--feast-python", default="/tmp/feast-venv/bin/python",
                        help="Feast's virtualenv interpreter (default %(default)s)")  # fmt: skip
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--data-dir", help="parent of the temporary data directory")
    args = parser.parse_args(argv)
    sizes = _common.sizes_from(args, FULL, QUICK)
    _common.exit_on_sigterm()
    python, feast_note = None, "skipped (`--no-feast`)."
    if not args.no_feast:
        probe = "import feast, pandas, pyarrow as a; print(feast.__version__, pandas.__version__"
        python, found = _common.peer_python(args.feast_python, probe + ", a.__version__)")
        feast_note = f"not available ({found}; create it with `{FEAST_INSTALL}`)."
    if python is not None:
        feast_note = (
            "Feast {} (pandas {}, pyarrow {}) in its own virtualenv (`{}`, installed with `pip "
            "install 'feast[redis]' pandas pyarrow`), local provider; online stores SQLite and "
            "Redis, offline store `file` (Dask).".format(*found.split(), python)
        )
    print(f"Feast: {feast_note}")
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_dir("engramdb-bench-features-", args.data_dir))
        run = Run(sizes, root, [python, str(FEAST_SIDE)] if python else None)
        extra: dict[str, str] = {}
        if python is None:
            run.notes = dict.fromkeys(FEAST_SIDES, f"Feast {feast_note.rstrip('.')}")
        else:
            extra["Feast"] = feast_note.split(" in its own")[0].removeprefix("Feast ")
            try:
                run.redis = stack.enter_context(_common.RedisServer())
                extra["redis-server"] = f"{run.redis.version} ({run.redis.executable})"
            except _common.RedisUnavailable as e:
                print(f"{e}: Feast's Redis online store is skipped")
                run.notes["feast_redis"] = f"not available ({e})"
        packages = ("engramdb", "duckdb", "pyarrow", "numpy", "msgspec")
        machine = _common.machine_info(packages, data_dir=root, extra=extra)
        print("building the online data…")
        data = make_online(sizes, root)
        with run.progress:
            run.run_online(data)
            run.progress.console.print("building the offline data…")
            run.run_offline(make_offline(sizes))
    report(sizes, args.quick, run, data, machine, feast_note).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
