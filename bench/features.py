"""The feature store against Feast: online lookups and point-in-time joins, in one run.

    python bench/features.py            # full run (about half an hour on 2 cores)
    python bench/features.py --quick    # a few minutes' smoke run with small sizes
    python bench/features.py --help     # every size is configurable

Feast runs in its own virtualenv (``--feast-python``, default ``/tmp/feast-venv/bin/python``)
so its pins never touch engramdb's environment; ``bench/_feast_side.py`` is its half of the
run. Create that virtualenv with::

    python -m venv /tmp/feast-venv && /tmp/feast-venv/bin/pip install 'feast[redis]' pandas pyarrow

Without it the engramdb side still runs and Feast is reported as unavailable.

**Online.** ``--entities`` drivers (100k), each with ``--rows-per-entity`` historical rows
(3, at distinct times, in shuffled order: the latest must win) in five 40-feature views and
one 50-feature view, all float64. Two shapes: 1 entity x 200 features (from the five views)
and 100 entities x 50 features (the one view). Sides, one after the other, with the same
entity sequences and the same number of calls:

- engramdb embedded: ``engramdb.open(dir, durability="none")``, ``fs.get_online_features``;
- engramdb through ``engramdb serve`` and ``engramdb.connect(url).features`` (TCP, 127.0.0.1);
- Feast, local provider, SQLite online store; and Feast with the Redis online store against
  a private ``redis-server``. Feast's call is ``get_online_features(...).to_dict()``: its
  ``OnlineResponse`` holds protobufs and ``to_dict`` is how a caller gets Python values,
  which engramdb's response already holds.

Each call is timed on its own (``perf_counter_ns``) in the loop of ``_common.measure``
(warmup discarded; ``gc.collect()`` + ``gc.freeze()`` first); Feast's side runs that same loop
and sends back raw samples, so every percentile is computed by the same code.

**Offline.** ``--events`` events (10M: ``events / events-per-entity`` drivers x 100 events
each over a year, unique times, features f0-f2 float64 and f3 int64, view ttl 7 days) and
10 entity rows per driver (1M) at random times from a month before the first event to a month
after the last, in random order. Smaller sizes are the same data cut to fewer drivers, so
every size has the same shape. engramdb ingests the Parquet file into a view with
``online=False`` (the offline bench needs no online copy; ingest time is reported but not a
target) and runs ``get_historical_features(entity_rows, features, output="x.parquet")`` in
a fresh subprocess (time and peak RSS of that process alone). Feast's local offline store
(the ``file`` store, i.e. Dask) runs ``get_historical_features(entity_df, ...).to_df()`` over a
``FileSource`` on the same Parquet file, at ``--feast-events`` sizes while each finishes within
``--feast-timeout`` (10 minutes) and fits in memory; engramdb runs each of those sizes too.

**Identity.** A numpy ground truth (for each entity row, the driver's latest event at or
before the row's time, null when there is none or it is older than the ttl) is computed
for every size; both systems' outputs are matched to it row by row on (driver_id,
event_timestamp as UTC microseconds; unique by construction), floats compared exactly,
null = NaN = missing, ints compared as floats (Feast turns an int column with gaps into
float64). Online answers (a sample of calls of both shapes, every side) are compared with
the latest row of each entity.

Writes bench/results/features.json (``_common.Report``). (The cProfile of the 1 x 200 call
that once lived here is in bench/notes/features-profile.md.)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

import engramdb
from _common import (
    Meter,
    RedisServer,
    RedisUnavailable,
    Report,
    Stats,
    Watched,
    WatchedResult,
    add_sizes,
    available_kib,
    busy_loop,
    calibrate_busy_loop,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    new_progress,
    rss_kib,
    served,
    sizes_from,
    temp_dir,
    wait_for_quiet,
)
from engramdb.features import Entity, FeatureView, Field

SECTION = "features"
TARGET_P99_US = 100.0  # embedded 1 x 200 p99
TARGET_ONLINE = 20.0  # Feast p99 / engramdb embedded p99, each shape and online store
TARGET_OFFLINE = 10.0  # Feast join time / engramdb join time at the same size
DEFAULT_FEAST_PYTHON = "/tmp/feast-venv/bin/python"
FEAST_SIDE = Path(__file__).resolve().with_name("_feast_side.py")
FEAST_INSTALL = (
    "python -m venv /tmp/feast-venv && "
    "/tmp/feast-venv/bin/pip install 'feast[redis]' pandas pyarrow"
)

ENTITY, JOIN_KEY = "driver", "driver_id"
BASE_US = 1_700_000_000 * 1_000_000  # 2023-11-14 22:13:20 UTC
YEAR_S = 365 * 86_400
MONTH_S = 30 * 86_400
OFFLINE_VIEW = "events"
OFFLINE_FEATURES: tuple[tuple[str, str], ...] = (
    ("f0", "float64"),
    ("f1", "float64"),
    ("f2", "float64"),
    ("f3", "int64"),
)


# configuration -----------------------------------------------------------------------------


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


def warmup_count(sizes: Sizes, n: int) -> int:
    return max(20, int(n * sizes.warmup))


def feast_sizes(sizes: Sizes) -> list[int]:
    return sorted({int(x) for x in sizes.feast_events.split(",") if x.strip()})


# the online data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineView:
    name: str
    features: tuple[str, ...]
    path: str


@dataclass
class OnlineData:
    views: list[OnlineView]
    truth: dict[str, np.ndarray]  # view -> (entities, features): each driver's latest row
    single: list[str]  # "view:feature" refs of the 1 x 200 shape
    narrow: list[str]  # refs of the batch x 50 shape
    single_warm: list[list[int]]
    single_calls: list[list[int]]
    batch_warm: list[list[int]]
    batch_calls: list[list[int]]
    rows: int  # rows ingested, all views

    def shapes(self) -> list[tuple[str, list[str], list[list[int]], list[list[int]]]]:
        return [
            ("single", self.single, self.single_warm, self.single_calls),
            ("batch", self.narrow, self.batch_warm, self.batch_calls),
        ]


def make_online(sizes: Sizes, root: str) -> OnlineData:
    """One Parquet file per view; every driver has ``rows_per_entity`` rows at distinct times
    in shuffled order, so only a store that keeps the latest answers right."""
    rng = np.random.default_rng(sizes.seed)
    n, r = sizes.entities, sizes.rows_per_entity
    specs = [
        (f"wide{v}", tuple(f"w{v}_f{j:02d}" for j in range(sizes.wide_features)))
        for v in range(sizes.wide_views)
    ]
    specs.append(("narrow", tuple(f"n_f{j:02d}" for j in range(sizes.narrow_features))))
    views, truth, rows = [], {}, 0
    for name, features in specs:
        seconds = rng.integers(0, YEAR_S, (n, r))
        stamps = BASE_US + seconds * 1_000_000 + np.arange(r)[None, :]  # distinct per driver
        values = rng.random((n, r, len(features)))
        truth[name] = values[np.arange(n), stamps.argmax(axis=1)]
        order = rng.permutation(n * r)
        columns: dict[str, Any] = {
            JOIN_KEY: pa.array(np.repeat(np.arange(n, dtype=np.int64), r)[order]),
            "event_timestamp": pa.array(stamps.ravel()[order], pa.timestamp("us", tz="UTC")),
        }
        flat = values.reshape(n * r, len(features))[order]
        for j, feature in enumerate(features):
            columns[feature] = pa.array(flat[:, j])
        path = os.path.join(root, f"online-{name}.parquet")
        pq.write_table(pa.table(columns), path)
        views.append(OnlineView(name, features, path))
        rows += n * r

    def singles(count: int) -> list[list[int]]:
        return [[int(i)] for i in rng.integers(0, n, count)]

    def batches(count: int) -> list[list[int]]:
        k = min(sizes.batch, n)
        return [sorted(int(i) for i in rng.choice(n, k, replace=False)) for _ in range(count)]

    return OnlineData(
        views=views,
        truth=truth,
        single=[f"{v.name}:{f}" for v in views[:-1] for f in v.features],
        narrow=[f"{views[-1].name}:{f}" for f in views[-1].features],
        single_warm=singles(warmup_count(sizes, sizes.single_calls)),
        single_calls=singles(sizes.single_calls),
        batch_warm=batches(warmup_count(sizes, sizes.batch_calls)),
        batch_calls=batches(sizes.batch_calls),
        rows=rows,
    )


def check_answers(
    data: OnlineData, refs: list[str], calls: list[list[int]], answers: list[dict[str, Any]]
) -> tuple[int, int]:
    """(values checked, values wrong) of ``answers`` to ``calls`` against the latest rows."""
    index = {f"{v.name}:{f}": (v.name, j) for v in data.views for j, f in enumerate(v.features)}
    checked = wrong = 0
    for ids, answer in zip(calls, answers):
        if list(answer.get(JOIN_KEY, ids)) != ids:
            wrong += len(ids) * len(refs)
            checked += len(ids) * len(refs)
            continue
        for ref in refs:
            view, j = index[ref]
            got = answer.get(ref.partition(":")[2])
            want = data.truth[view][ids, j]
            checked += len(ids)
            if got is None or len(got) != len(ids):
                wrong += len(ids)
                continue
            wrong += sum(1 for a, b in zip(got, want) if a is None or float(a) != float(b))
    return checked, wrong


# the offline data --------------------------------------------------------------------------


@dataclass
class OfflineData:
    """The largest size in memory; size ``n`` is its first ``n / events_per_entity`` drivers."""

    drivers: int
    per_driver: int
    stamps: np.ndarray  # (drivers, per_driver) µs, sorted per driver
    values: np.ndarray  # (drivers * per_driver, 4) float64 (f3 holds ints)
    row_driver: np.ndarray  # entity rows
    row_stamp: np.ndarray
    ttl_us: int


def make_offline(sizes: Sizes) -> OfflineData:
    rng = np.random.default_rng(sizes.seed + 1)
    drivers = sizes.events // sizes.events_per_entity
    k = sizes.events_per_entity
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
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    return OfflineData(
        drivers=drivers,
        per_driver=k,
        stamps=stamps,
        values=values,
        row_driver=row_driver[keep],
        row_stamp=row_stamp[keep],
        ttl_us=int(sizes.ttl_days * 86_400 * 1_000_000),
    )


@dataclass(frozen=True)
class OfflineSize:
    events: int
    drivers: int
    rows: int
    events_path: str
    entities_path: str

    @property
    def label(self) -> str:
        return f"{_count(self.events)} x {_count(self.rows)}"


def _count(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            value = n / size
            whole = abs(value - round(value)) < 0.05
            return f"{value:.0f}{unit}" if whole else f"{value:.1f}{unit}"
    return str(n)


def write_offline(data: OfflineData, events: int, root: str) -> OfflineSize:
    drivers = events // data.per_driver
    n = drivers * data.per_driver
    mask = data.row_driver < drivers
    table = pa.table(
        {
            JOIN_KEY: pa.array(np.repeat(np.arange(drivers, dtype=np.int64), data.per_driver)),
            "event_timestamp": pa.array(
                data.stamps[:drivers].ravel(), pa.timestamp("us", tz="UTC")
            ),
            "f0": pa.array(data.values[:n, 0]),
            "f1": pa.array(data.values[:n, 1]),
            "f2": pa.array(data.values[:n, 2]),
            "f3": pa.array(data.values[:n, 3].astype(np.int64)),
        }
    )
    events_path = os.path.join(root, f"events-{n}.parquet")
    pq.write_table(table, events_path)
    entities = pa.table(
        {
            JOIN_KEY: pa.array(data.row_driver[mask].astype(np.int64)),
            "event_timestamp": pa.array(data.row_stamp[mask], pa.timestamp("us", tz="UTC")),
        }
    )
    entities_path = os.path.join(root, f"entities-{n}.parquet")
    pq.write_table(entities, entities_path)
    return OfflineSize(n, drivers, int(mask.sum()), events_path, entities_path)


@dataclass
class Truth:
    """What a point-in-time join must return for each entity row of one size."""

    driver: np.ndarray
    stamp: np.ndarray
    values: np.ndarray  # (rows, 4), NaN where there is no value

    def keys(self) -> np.ndarray:
        return _row_keys(self.driver, self.stamp)


# Every timestamp here lies in [BASE - MONTH, BASE + YEAR + MONTH]: (driver, time) packs into
# one int64 for up to MAX_DRIVERS drivers.
_KEY_SPAN = (YEAR_S + 2 * MONTH_S) * 1_000_000 + 1
MAX_DRIVERS = ((1 << 63) - 1) // _KEY_SPAN


def _row_keys(driver: np.ndarray, stamp_us: np.ndarray) -> np.ndarray:
    """One sortable int64 per (driver, time): by driver, then time."""
    keys = driver.astype(np.int64) * _KEY_SPAN + (stamp_us - (BASE_US - MONTH_S * 1_000_000))
    return np.asarray(keys, dtype=np.int64)


def truth_of(data: OfflineData, size: OfflineSize) -> Truth:
    mask = data.row_driver < size.drivers
    driver, stamp = data.row_driver[mask], data.row_stamp[mask]
    ev_driver = np.repeat(np.arange(size.drivers), data.per_driver)
    ev_stamp = data.stamps[: size.drivers].ravel()
    ev_keys = _row_keys(ev_driver, ev_stamp)  # sorted: by driver, then time
    pos = np.searchsorted(ev_keys, _row_keys(driver, stamp), side="right") - 1
    safe = np.maximum(pos, 0)
    hit = (pos >= 0) & (ev_driver[safe] == driver) & (stamp - ev_stamp[safe] <= data.ttl_us)
    values = np.full((driver.size, 4), np.nan)
    values[hit] = data.values[safe[hit]]
    return Truth(driver, stamp, values)


@dataclass
class Identity:
    """A join's output against the ground truth."""

    system: str
    size: str
    expected_rows: int
    returned_rows: int
    missing_rows: int  # entity rows absent from the output
    missing_rows_without_value: int  # of those, rows whose truth is all-null
    extra_rows: int  # output rows matching no entity row
    values_checked: int
    values_wrong: int
    order_kept: bool | None  # output in entity-row order (engramdb promises it)

    @property
    def ok(self) -> bool:
        return (
            self.values_wrong == 0
            and self.extra_rows == 0
            and self.missing_rows == self.missing_rows_without_value
        )


def check_join(
    system: str, size: OfflineSize, truth: Truth, table: pa.Table, *, ordered: bool
) -> Identity:
    driver = table[JOIN_KEY].to_numpy().astype(np.int64)
    stamp = _micros(table["event_timestamp"])
    got = np.column_stack(
        [table[name].to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)
         for name, _ in OFFLINE_FEATURES]
    ) if table.num_rows else np.empty((0, 4))  # fmt: skip
    want_keys = truth.keys()
    order = np.argsort(want_keys)
    sorted_keys = want_keys[order]
    keys = _row_keys(driver, stamp)
    at = np.clip(np.searchsorted(sorted_keys, keys), 0, max(0, sorted_keys.size - 1))
    found = sorted_keys[at] == keys if sorted_keys.size else np.zeros(keys.size, bool)
    rows = order[at[found]]
    want = truth.values[rows]
    mine = got[found]
    both_nan = np.isnan(want) & np.isnan(mine)
    wrong = int((~both_nan & (want != mine)).sum())
    present = np.zeros(want_keys.size, bool)
    present[rows] = True
    missing = ~present
    without_value = int((missing & np.isnan(truth.values).all(axis=1)).sum())
    order_kept = None
    if ordered:
        order_kept = bool(table.num_rows == want_keys.size and np.array_equal(keys, want_keys))
    return Identity(
        system=system,
        size=size.label,
        expected_rows=int(want_keys.size),
        returned_rows=table.num_rows,
        missing_rows=int(missing.sum()),
        missing_rows_without_value=without_value,
        extra_rows=int((~found).sum()),
        values_checked=int(want.size),
        values_wrong=wrong,
        order_kept=order_kept,
    )


def compare_outputs(size: OfflineSize, a: pa.Table, b: pa.Table) -> tuple[int, int, int]:
    """(rows in both, values compared, values that differ) between two join outputs."""
    ka = _row_keys(a[JOIN_KEY].to_numpy().astype(np.int64), _micros(a["event_timestamp"]))
    kb = _row_keys(b[JOIN_KEY].to_numpy().astype(np.int64), _micros(b["event_timestamp"]))
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    differ = compared = 0
    for name, _ in OFFLINE_FEATURES:
        va = a[name].to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)[ia]
        vb = b[name].to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)[ib]
        compared += va.size
        differ += int((~(np.isnan(va) & np.isnan(vb)) & (va != vb)).sum())
    return int(common.size), compared, differ


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column (any unit, any zone) as int64 UTC microseconds."""
    values = column.cast(pa.int64()).to_numpy()
    unit = column.type.unit
    if unit == "ns":
        return np.asarray(values // 1_000, dtype=np.int64)
    return np.asarray(values * {"s": 1_000_000, "ms": 1_000, "us": 1}[unit], dtype=np.int64)


# engramdb in subprocesses (offline) --------------------------------------------------------


def offline_definitions(ttl_days: float) -> list[Any]:
    return [
        Entity(ENTITY, [JOIN_KEY]),
        FeatureView(
            OFFLINE_VIEW,
            [ENTITY],
            [Field(name, dtype) for name, dtype in OFFLINE_FEATURES],
            ttl=dt.timedelta(days=ttl_days),
            online=False,  # the offline bench: nothing goes to the online store
        ),
    ]


def offline_child(spec_path: str, out_path: str) -> int:
    """``--offline-child``: one ingest or one join, alone in this process; JSON out."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    with engramdb.open(spec["db"], durability="none", sweep_interval=None) as db:
        fs = db.features
        result: dict[str, Any] = {}
        if spec["mode"] == "ingest":
            fs.apply(offline_definitions(spec["ttl_days"]))
            began = time.perf_counter()
            done = fs.ingest(OFFLINE_VIEW, spec["events"])
            result = {"seconds": time.perf_counter() - began, "rows": done.rows}
        else:
            entities = pq.read_table(spec["entities"])
            before, _ = rss_kib()
            began = time.perf_counter()
            fs.get_historical_features(entities, spec["features"], output=spec["output"])
            seconds = time.perf_counter() - began
            result = {
                "seconds": seconds,
                "rows": pq.ParquetFile(spec["output"]).metadata.num_rows,
                "rss_before_kib": before,
            }
        result["peak_rss_kib"] = rss_kib()[1]
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


# the run -----------------------------------------------------------------------------------


@dataclass
class SubResult:
    """What a subprocess (Feast's side or an engramdb child) reported, or why it did not."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    peak_rss_kib: int = 0


@dataclass(frozen=True)
class Job:
    """A running subprocess and the JSON file it will write its result to."""

    watched: Watched
    out_path: Path


@dataclass
class JoinRun:
    system: str  # engramdb / Feast
    size: OfflineSize
    result: SubResult
    ingest: SubResult | None = None
    identity: Identity | None = None
    skipped: str = ""


@dataclass
class Results:
    online: dict[str, Stats] = field(default_factory=dict)  # "<side>.<shape>"
    online_notes: dict[str, str] = field(default_factory=dict)  # side -> why missing
    online_identity: dict[str, tuple[int, int]] = field(default_factory=dict)
    loads: dict[str, float] = field(default_factory=dict)  # side -> load seconds
    joins: list[JoinRun] = field(default_factory=list)
    join_agreement: list[dict[str, Any]] = field(default_factory=list)
    feast_version: str = ""
    load_avg: dict[str, str] = field(default_factory=dict)


SIDES: tuple[tuple[str, str], ...] = (
    ("embedded", "engramdb embedded"),
    ("floor", "engramdb record reads"),
    ("noise", "timing noise"),
    ("server", "engramdb server"),
    ("feast_sqlite", "Feast SQLite"),
    ("feast_redis", "Feast Redis"),
)
SIDE_NAME = dict(SIDES)
SHAPES: tuple[tuple[str, str], ...] = (("single", "1 x 200"), ("batch", "100 x 50"))
SHAPE_NAME = dict(SHAPES)


class Run:
    def __init__(self, sizes: Sizes, args: argparse.Namespace, root: str) -> None:
        self.sizes = sizes
        self.args = args
        self.root = root
        self.results = Results()
        self.progress = new_progress()
        self.console = Console()
        self.feast_python: str | None = args.feast_python
        self.redis: RedisServer | None = None
        self.mem_limit_kib = int(available_kib() * 0.85) or None

    # helpers

    def log(self, message: str) -> None:
        self.progress.console.print(message)
        self.progress.refresh()

    def spin(self, description: str) -> Callable[[float], None]:
        task = self.progress.add_task(description, total=None)
        self.progress.refresh()
        last = [0.0]

        def tick(elapsed: float) -> None:
            if elapsed - last[0] >= 0.5:
                self.progress.update(task, description=f"{description} ({elapsed:.0f} s)")
                self.progress.refresh()
                last[0] = elapsed

        return tick

    def subprocess(
        self,
        argv_head: list[str],
        spec: dict[str, Any],
        name: str,
        *,
        timeout_s: float | None = None,
    ) -> Job:
        spec_path = os.path.join(self.root, f"{name}.spec.json")
        out_path = os.path.join(self.root, f"{name}.out.json")
        Path(spec_path).write_text(json.dumps(spec), encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            os.remove(out_path)
        watched = Watched(
            [*argv_head, spec_path, out_path],
            log_path=os.path.join(self.root, f"{name}.log"),
            timeout_s=timeout_s,
            max_rss_kib=self.mem_limit_kib,
        )
        return Job(watched.start(), Path(out_path))

    def finish(self, job: Job, description: str) -> SubResult:
        done: WatchedResult = job.watched.wait(self.spin(description))
        out = job.out_path
        if not done.ok or not out.exists():
            tail = job.watched.log_tail(600).strip().splitlines()[-3:]
            note = done.reason or "no result written"
            self.log(f"[yellow]{description}: {note}[/yellow]\n" + "\n".join(tail))
            return SubResult(False, note=note, seconds=done.seconds, peak_rss_kib=done.peak_rss_kib)
        data = json.loads(out.read_text(encoding="utf-8"))
        if data.get("feast_version"):
            self.results.feast_version = data["feast_version"]
        return SubResult(True, data, "", done.seconds, done.peak_rss_kib)

    def feast(self, spec: dict[str, Any], name: str, *, timeout_s: float | None = None) -> Job:
        assert self.feast_python is not None
        return self.subprocess(
            [self.feast_python, str(FEAST_SIDE)], spec, name, timeout_s=timeout_s
        )

    def engram_child(self, spec: dict[str, Any], name: str) -> Job:
        return self.subprocess(
            [sys.executable, str(Path(__file__).resolve()), "--offline-child"], spec, name
        )

    def note_load(self, phase: str) -> None:
        self.results.load_avg[phase] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    # online

    def online_views(self, data: OnlineData) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "path": v.path,
                "features": [[f, "float64"] for f in v.features],
                "ttl_s": 0,
            }
            for v in data.views
        ]

    def feast_online_spec(self, data: OnlineData, store: str) -> dict[str, Any]:
        online: dict[str, Any] = {"type": "sqlite"}
        if store == "redis":
            assert self.redis is not None
            online = {"type": "redis", "connection_string": f"127.0.0.1:{self.redis.port}"}
        return {
            "repo": os.path.join(self.root, f"feast-{store}"),
            "online_store": online,
            "entity": {"name": ENTITY, "join_key": JOIN_KEY},
            "views": self.online_views(data),
        }

    def online(self, data: OnlineData) -> None:
        r = self.results
        stores = []
        if self.feast_python is not None:
            stores.append("sqlite")
            if self.redis is not None:
                stores.append("redis")
        # Loading is not what is measured: Feast's two materializations run in the
        # background while engramdb ingests, then every side is measured alone.
        loads = {
            store: self.feast({**self.feast_online_spec(data, store), "mode": "online-load"},
                              f"feast-online-load-{store}")
            for store in stores
        }  # fmt: skip
        db_path = os.path.join(self.root, "engramdb-online")
        with engramdb.open(db_path, durability="none", sweep_interval=None) as db:
            fs = db.features
            definitions: list[Any] = [Entity(ENTITY, [JOIN_KEY])]
            definitions += [
                FeatureView(v.name, [ENTITY], [Field(f, "float64") for f in v.features])
                for v in data.views
            ]
            fs.apply(definitions)
            meter = Meter(self.progress)
            meter.start("online load · engramdb ingest", data.rows)
            began = time.perf_counter()
            for v in data.views:
                done = fs.ingest(v.name, v.path)
                meter.advance(done.rows, force=True)
            r.loads["embedded"] = time.perf_counter() - began
            for store, watched in loads.items():
                got = self.finish(watched, f"online load · Feast {store} materialize")
                if got.ok:
                    r.loads[f"feast_{store}"] = got.data["materialize_s"]
                else:
                    r.online_notes[f"feast_{store}"] = f"materialize failed: {got.note}"
            self.note_load("online (engramdb embedded)")
            self.measure_engram("embedded", fs, data)
            self.measure_floor(db, fs, data)
            self.measure_noise(data)
        self.note_load("online (engramdb server)")
        with served(db_path, "none") as (_, client):
            self.measure_engram("server", client.features, data)
        for store in stores:
            side = f"feast_{store}"
            if side in r.online_notes:
                continue
            self.note_load(f"online ({SIDE_NAME[side]})")
            self.measure_feast(store, data)

    def measure_engram(self, side: str, fs: Any, data: OnlineData) -> None:
        for shape, refs, warm, calls in data.shapes():

            def call(ids: list[int], refs: list[str] = refs) -> Any:
                return fs.get_online_features(refs, [{JOIN_KEY: i} for i in ids])

            self.results.online[f"{side}.{shape}"] = measure(
                call,
                calls,
                warmup=warm,
                meter=Meter(self.progress),
                description=f"online {SHAPE_NAME[shape]} · {SIDE_NAME[side]}",
                batch=64,
            )
            answers = [call(ids).to_dict() for ids in calls[: self.sizes.answers]]
            self.results.online_identity[f"{side}.{shape}"] = check_answers(
                data, refs, calls[: self.sizes.answers], answers
            )

    def measure_floor(self, db: engramdb.Database, fs: Any, data: OnlineData) -> None:
        """What the feature layer adds: the same reads as plain ``get_many`` on the online
        store's record sets (one per view, the entity's id as the key; no columns built)."""
        wide = [db.records(fs.online.set_of(v.name)) for v in data.views[:-1]]
        narrow = db.records(fs.online.set_of(data.views[-1].name))

        def single(ids: list[int]) -> Any:
            return [s.get_many(ids) for s in wide]

        def batch(ids: list[int]) -> Any:
            return narrow.get_many(ids)

        for shape, fn, warm, calls in (
            ("single", single, data.single_warm, data.single_calls),
            ("batch", batch, data.batch_warm, data.batch_calls),
        ):
            self.results.online[f"floor.{shape}"] = measure(
                fn,
                calls,
                warmup=warm,
                meter=Meter(self.progress),
                description=f"online {SHAPE_NAME[shape]} · record reads",
                batch=64,
            )

    def measure_noise(self, data: OnlineData) -> None:
        """The machine's own jitter: pure-Python work as long as the embedded 1 x 200 p50,
        through the same harness (its p99 is what any µs-scale call gets added)."""
        ours = self.results.online.get("embedded.single")
        if ours is None:
            return
        n = calibrate_busy_loop(ours.p50_us)
        self.results.online["noise.single"] = measure(
            lambda _: busy_loop(n),
            data.single_calls,
            warmup=data.single_warm,
            meter=Meter(self.progress),
            description="online 1 x 200 · timing noise",
            batch=64,
        )

    def measure_feast(self, store: str, data: OnlineData) -> None:
        side = f"feast_{store}"
        spec = {
            **self.feast_online_spec(data, store),
            "mode": "online-measure",
            "workloads": [
                {"id": shape, "features": refs, "warmup": warm, "calls": calls,
                 "dump": self.sizes.answers}
                for shape, refs, warm, calls in data.shapes()
            ],
        }  # fmt: skip
        got = self.finish(
            self.feast(spec, f"feast-online-measure-{store}"),
            f"online · {SIDE_NAME[side]} (both shapes)",
        )
        if not got.ok:
            self.results.online_notes[side] = f"measurement failed: {got.note}"
            return
        for shape, refs, _, calls in data.shapes():
            w = got.data["workloads"][shape]
            self.results.online[f"{side}.{shape}"] = Stats.from_samples(
                w["samples_ns"], w["wall_ns"]
            )
            self.results.online_identity[f"{side}.{shape}"] = check_answers(
                data, refs, calls[: self.sizes.answers], w["answers"]
            )

    # offline

    def offline(self, data: OfflineData) -> None:
        sizes = self.sizes
        limit = [n for n in feast_sizes(sizes) if n <= sizes.events]
        if self.feast_python is None:
            limit = []
        largest = (sizes.events // sizes.events_per_entity) * sizes.events_per_entity
        sizes_to_run = sorted({*limit, largest})
        feast_stop = "" if self.feast_python is not None else "Feast not available"
        last_feast: JoinRun | None = None
        for events in sizes_to_run:
            size = write_offline(data, events, self.root)
            truth = truth_of(data, size)
            ours = self.engram_join(size, truth)
            if events not in limit:
                continue
            if not feast_stop and last_feast is not None:
                feast_stop = self.projection(last_feast, size)
            if feast_stop:
                self.results.joins.append(
                    JoinRun("Feast", size, SubResult(False, note=feast_stop), skipped=feast_stop)
                )
                continue
            theirs = self.feast_join(size, truth)
            if theirs.result.ok:
                last_feast = theirs
                self.agree(size, ours, theirs)
            else:
                feast_stop = f"a smaller size did not finish ({theirs.result.note})"

    def projection(self, last: JoinRun, size: OfflineSize) -> str:
        """Why Feast should not try ``size`` given how the last size went ('' to try)."""
        scale = size.events / last.size.events
        seconds = last.result.data["seconds"] * scale
        peak = last.result.data["peak_rss_kib"] * scale
        if seconds > self.sizes.feast_timeout * 1.5:
            return (
                f"skipped: {_count(last.size.events)} took {last.result.data['seconds']:.0f} s, "
                f"so ~{seconds:.0f} s projected (limit {self.sizes.feast_timeout:.0f} s)"
            )
        if self.mem_limit_kib is not None and peak > self.mem_limit_kib:
            return (
                f"skipped: ~{peak / (1 << 20):.0f} GiB peak RSS projected "
                f"(limit {self.mem_limit_kib / (1 << 20):.0f} GiB)"
            )
        return ""

    def engram_join(self, size: OfflineSize, truth: Truth) -> JoinRun:
        db = os.path.join(self.root, f"engramdb-offline-{size.events}")
        self.note_load(f"offline engramdb {size.label}")
        ingest = self.finish(
            self.engram_child(
                {"mode": "ingest", "db": db, "events": size.events_path,
                 "ttl_days": self.sizes.ttl_days},
                f"engramdb-ingest-{size.events}",
            ),
            f"offline {size.label} · engramdb ingest",
        )  # fmt: skip
        output = os.path.join(self.root, f"engramdb-join-{size.events}.parquet")
        result = SubResult(False, note="ingest failed")
        if ingest.ok:
            result = self.finish(
                self.engram_child(
                    {"mode": "join", "db": db, "entities": size.entities_path,
                     "features": [f"{OFFLINE_VIEW}:{n}" for n, _ in OFFLINE_FEATURES],
                     "output": output},
                    f"engramdb-join-{size.events}",
                ),
                f"offline {size.label} · engramdb join",
            )  # fmt: skip
        run = JoinRun("engramdb", size, result, ingest)
        if result.ok:
            table = pq.read_table(output)
            run.identity = check_join("engramdb", size, truth, table, ordered=True)
        self.results.joins.append(run)
        return run

    def feast_join(self, size: OfflineSize, truth: Truth) -> JoinRun:
        output = os.path.join(self.root, f"feast-join-{size.events}.parquet")
        spec = {
            "mode": "offline",
            "repo": os.path.join(self.root, f"feast-offline-{size.events}"),
            "entity": {"name": ENTITY, "join_key": JOIN_KEY},
            "views": [
                {"name": OFFLINE_VIEW, "path": size.events_path,
                 "features": [list(f) for f in OFFLINE_FEATURES],
                 "ttl_s": self.sizes.ttl_days * 86_400}
            ],
            "entities": size.entities_path,
            "features": [f"{OFFLINE_VIEW}:{n}" for n, _ in OFFLINE_FEATURES],
            "result": output,
        }  # fmt: skip
        self.note_load(f"offline Feast {size.label}")
        # The limit bounds the join; Feast's import and apply come on top (a few seconds).
        result = self.finish(
            self.feast(spec, f"feast-join-{size.events}", timeout_s=self.sizes.feast_timeout + 60),
            f"offline {size.label} · Feast join",
        )
        if result.ok and result.data["seconds"] > self.sizes.feast_timeout:
            result = replace(result, ok=False, note=f"took {result.data['seconds']:.0f} s")
        run = JoinRun("Feast", size, result)
        if result.ok:
            run.identity = check_join("Feast", size, truth, pq.read_table(output), ordered=False)
        self.results.joins.append(run)
        return run

    def agree(self, size: OfflineSize, ours: JoinRun, theirs: JoinRun) -> None:
        if not ours.result.ok or not theirs.result.ok:
            return
        a = pq.read_table(os.path.join(self.root, f"engramdb-join-{size.events}.parquet"))
        b = pq.read_table(os.path.join(self.root, f"feast-join-{size.events}.parquet"))
        common, compared, differ = compare_outputs(size, a, b)
        self.results.join_agreement.append(
            {"size": size.label, "rows_in_both": common, "values_compared": compared,
             "values_differ": differ}
        )  # fmt: skip


# report ------------------------------------------------------------------------------------


def us(x: float) -> str:
    """A latency with its unit (``fmt_us`` switches to ms past 10,000 µs)."""
    text = fmt_us(x)
    return text if text.endswith("ms") else f"{text} µs"


def join_of(r: Results, system: str, events: int) -> JoinRun | None:
    return next(
        (j for j in r.joins if j.system == system and j.size.events == events and j.result.ok),
        None,
    )


def checks(r: Results, rep: Report) -> None:
    """The targets, each a headline row: engramdb's own p99, Feast's p99 and join time over
    engramdb's, and identical answers."""
    single, noise = r.online.get("embedded.single"), r.online.get("noise.single")
    if single is not None:
        detail = f"p50 {us(single.p50_us)}" + (
            f"; pure-Python work as long as that p50 has p99 {us(noise.p99_us)} (timing noise)"
            if noise
            else ""
        )
        rep.check(
            "engramdb embedded p99, 1 x 200",
            "—",
            f"{us(single.p99_us)} ({detail})",
            f"≤ {TARGET_P99_US:g} µs",
            single.p99_us <= TARGET_P99_US,
        )
    for shape, shape_name in SHAPES:
        ours = r.online.get(f"embedded.{shape}")
        for store in ("feast_sqlite", "feast_redis"):
            if ours and (theirs := r.online.get(f"{store}.{shape}")):
                ratio = theirs.p99_us / ours.p99_us
                rep.check(
                    f"{SIDE_NAME[store]} p99 / engramdb p99, {shape_name}",
                    SIDE_NAME[store],
                    f"{fmt_ratio(ratio)} ({us(theirs.p99_us)} vs {us(ours.p99_us)})",
                    f"≥ {TARGET_ONLINE:g}x",
                    ratio >= TARGET_ONLINE,
                )
    for run in (j for j in r.joins if j.system == "Feast" and j.result.ok):
        if mine := join_of(r, "engramdb", run.size.events):
            theirs_s, mine_s = run.result.data["seconds"], mine.result.data["seconds"]
            rep.check(
                f"point-in-time join time: Feast / engramdb, {run.size.label}",
                "Feast",
                f"{fmt_ratio(theirs_s / mine_s)} ({theirs_s:.1f} s vs {mine_s:.2f} s)",
                f"≥ {TARGET_OFFLINE:g}x",
                theirs_s / mine_s >= TARGET_OFFLINE,
            )
    idents = [j.identity for j in r.joins if j.identity is not None]
    if idents:
        online_wrong = sum(w for _, w in r.online_identity.values())
        differ = sum(a["values_differ"] for a in r.join_agreement)
        compared = sum(a["values_compared"] for a in r.join_agreement)
        wrong = sum(i.values_wrong for i in idents) + online_wrong
        rep.check(
            "identical results (online and point-in-time join)",
            "Feast",
            f"{wrong} values wrong; engramdb vs Feast: {differ} of {compared:,} differ",
            "identical",
            all(i.ok for i in idents) and not wrong and not differ,
        )


def _gib(kib: float) -> str:
    return f"{kib / (1 << 20):.2f} GiB"


def online_rows(r: Results) -> list[list[str]]:
    rows = []
    for shape, shape_name in SHAPES:
        ours = r.online.get(f"embedded.{shape}")
        for side, side_name in SIDES:
            st = r.online.get(f"{side}.{shape}")
            if st is None and side in ("floor", "noise"):
                continue
            if st is None:
                rows.append([shape_name, side_name, "—", "—", "—", "—", "—", "—"])
                continue
            vs = fmt_ratio(st.p99_us / ours.p99_us) if ours and side != "embedded" else ""
            rows.append(
                [shape_name, side_name, f"{st.n:,}", fmt_us(st.p50_us), fmt_us(st.p99_us),
                 fmt_us(st.p999_us), f"{st.ops_s:,.0f}", vs]
            )  # fmt: skip
    return rows


def ratio_rows(r: Results) -> list[list[str]]:
    rows = []
    for shape, shape_name in SHAPES:
        for side in ("embedded", "server"):
            ours = r.online.get(f"{side}.{shape}")
            for store in ("feast_sqlite", "feast_redis"):
                theirs = r.online.get(f"{store}.{shape}")
                if ours is None or theirs is None:
                    continue
                rows.append(
                    [shape_name, SIDE_NAME[side], SIDE_NAME[store],
                     fmt_ratio(theirs.p50_us / ours.p50_us), fmt_ratio(theirs.p99_us / ours.p99_us),
                     fmt_ratio(ours.ops_s / theirs.ops_s)]
                )  # fmt: skip
    return rows


def join_rows(r: Results) -> list[list[str]]:
    rows = []
    for j in sorted(r.joins, key=lambda j: (j.size.events, j.system != "engramdb")):
        d = j.result.data
        ours = join_of(r, "engramdb", j.size.events)
        ratio = ""
        if j.system == "Feast" and j.result.ok and ours is not None:
            ratio = fmt_ratio(d["seconds"] / ours.result.data["seconds"])
        ingest = ""
        if j.ingest is not None and j.ingest.ok:
            ingest = f"{j.ingest.data['seconds']:.1f} s"
        if not j.result.ok:
            rows.append([j.size.label, j.system, "—", "—", "—", "—", ingest, "", j.result.note])
            continue
        rows.append(
            [
                j.size.label,
                j.system,
                f"{d['seconds']:.2f} s",
                _gib(d["peak_rss_kib"]),
                _gib(d["rss_before_kib"]),
                f"{d['rows']:,}",
                ingest,
                ratio,
                "",
            ]
        )
    return rows


def identity_rows(r: Results) -> list[list[str]]:
    rows = []
    for j in r.joins:
        i = j.identity
        if i is None:
            continue
        missing = f"{i.missing_rows:,}"
        if i.missing_rows:
            missing += f" ({i.missing_rows_without_value:,} have no value in the truth)"
        rows.append(
            [i.size, i.system, f"{i.expected_rows:,}", f"{i.returned_rows:,}", missing,
             f"{i.values_checked:,}", f"{i.values_wrong:,}",
             "" if i.order_kept is None else ("yes" if i.order_kept else "**no**"),
             f"**{'PASS' if i.ok else 'FAIL'}**"]
        )  # fmt: skip
    return rows


def report(
    sizes: Sizes,
    quick: bool,
    r: Results,
    machine: dict[str, str],
    quiet_note: str,
    feast_note: str,
    data: OnlineData,
) -> Report:
    rep = Report(
        SECTION,
        "features",
        "Feature store: online lookups and point-in-time joins, against Feast",
        f"Online lookups (1 driver x {sizes.wide_views * sizes.wide_features} features from "
        f"{sizes.wide_views} views; {sizes.batch} drivers x {sizes.narrow_features} features) "
        "and point-in-time joins, against Feast with SQLite and Redis online stores and its "
        "file (Dask) offline store; latencies in µs.",
        quick,
        machine,
        about=f"{data.rows:,} online rows. Feast: {feast_note} {quiet_note}",
        raw=to_json(sizes, quick, r, machine, feast_note, quiet_note),
    )
    checks(r, rep)
    rep.table(
        "Online: get_online_features (last column: p99 vs engramdb embedded)",
        ["shape", "system", "calls", "p50", "p99", "p999", "calls/s", "p99 vs embedded"],
        online_rows(r),
        "llrrrrrr",
    )
    rep.table(
        "Online ratios (above 1 favours engramdb)",
        ["shape", "engramdb", "against", "p50 ratio", "p99 ratio", "calls/s ratio"],
        ratio_rows(r),
        "lllrrr",
        publish=False,
    )
    rep.table(
        "Offline: point-in-time join (fresh process; Feast time / engramdb time)",
        [
            "events x entity rows",
            "system",
            "join time",
            "peak RSS",
            "RSS before",
            "rows out",
            "ingest",
            "Feast / engramdb",
            "note",
        ],
        join_rows(r),
        "llrrrrrrl",
        publish=False,
    )
    rep.table(
        "Identity (each output against a numpy ground truth)",
        [
            "size",
            "system",
            "entity rows",
            "rows out",
            "rows missing",
            "values checked",
            "values wrong",
            "order kept",
            "result",
        ],
        identity_rows(r),
        "llrrlrrll",
        publish=False,
    )
    if r.loads:
        rep.note("Loading the online stores (s)", str(r.loads))
    return rep


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb feature store benchmark: online and point-in-time joins vs Feast.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument(
        "--feast-python",
        default=DEFAULT_FEAST_PYTHON,
        help=f"Feast's virtualenv interpreter (default {DEFAULT_FEAST_PYTHON})",
    )
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline half")
    parser.add_argument("--no-online", action="store_true", help="skip the online half")
    parser.add_argument("--data-dir", help="parent of the temporary data directory")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for the 1-minute load average to drop below 1.0",
    )
    args = parser.parse_args(argv)
    sizes = sizes_from(args, FULL, QUICK)
    if sizes.entities < sizes.batch or sizes.events < sizes.events_per_entity:
        parser.error("--entities must be >= --batch and --events >= --events-per-entity")
    if sizes.events // sizes.events_per_entity > MAX_DRIVERS:
        parser.error(f"--events / --events-per-entity must be at most {MAX_DRIVERS:,} drivers")
    return sizes, args


def feast_available(args: argparse.Namespace, console: Console) -> tuple[str | None, str]:
    """(interpreter, note): the Feast virtualenv's python if it imports feast."""
    if args.no_feast:
        return None, "skipped (`--no-feast`)."
    python = args.feast_python
    if not os.access(python, os.X_OK):
        console.print(f"[yellow]Feast is not available: {python} does not exist. Create it with:")
        console.print(f"  {FEAST_INSTALL}", markup=False)
        return None, f"not available ({python} missing; create it with `{FEAST_INSTALL}`)."
    try:
        version = subprocess.run(
            [python, "-c", "import feast, pandas, pyarrow; print(feast.__version__, "
             "pandas.__version__, pyarrow.__version__)"],
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        console.print(f"[yellow]Feast is not available ({e}). Create it with:[/yellow]")
        console.print(f"  {FEAST_INSTALL}", markup=False)
        return None, f"not available ({python} cannot import feast)."
    note = (
        f"Feast {version[0]} (pandas {version[1]}, pyarrow {version[2]}) in its own "
        f"virtualenv (`{python}`, installed with `pip install 'feast[redis]' pandas pyarrow`), "
        "local provider; online stores SQLite and Redis, offline store `file` (Dask)."
    )
    return python, note


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--offline-child":
        return offline_child(argv[1], argv[2])
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    quiet_note = ""
    if args.wait_quiet > 0:
        quiet, load = wait_for_quiet(
            1.0, args.wait_quiet, poll_s=30, report=lambda m: console.print(m)
        )
        quiet_note = (
            f"Started at load average {load:.2f}."
            if quiet
            else f"**The machine never got quiet: started at load average {load:.2f}.**"
        )
    feast_python, feast_note = feast_available(args, console)

    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-features-", args.data_dir))
        run = Run(sizes, args, root)
        run.feast_python = feast_python
        if feast_python is None:
            for side in ("feast_sqlite", "feast_redis"):
                run.results.online_notes[side] = f"Feast {feast_note.rstrip('.')}"
        extra: dict[str, str] = {}
        if feast_python is not None:
            extra["Feast"] = feast_note.split(" in its own")[0].removeprefix("Feast ")
            try:
                run.redis = stack.enter_context(RedisServer())
                extra["redis-server"] = f"{run.redis.version} ({run.redis.executable})"
            except RedisUnavailable as e:
                console.print(f"[yellow]{e}: Feast's Redis online store is skipped[/yellow]")
                run.results.online_notes["feast_redis"] = f"not available ({e})"
        machine = machine_info(
            ("engramdb", "duckdb", "pyarrow", "numpy", "msgspec"), data_dir=root, extra=extra
        )
        console.print("[bold]building the online data…[/bold]")
        data = make_online(sizes, root)
        with run.progress:
            if not args.no_online:
                run.online(data)
            if not args.no_offline:
                run.log("[bold]building the offline data…[/bold]")
                run.offline(make_offline(sizes))
        results = run.results

    report(sizes, args.quick, results, machine, quiet_note, feast_note, data).save()
    return 0


def to_json(
    sizes: Sizes,
    quick: bool,
    r: Results,
    machine: dict[str, str],
    feast_note: str,
    quiet_note: str,
) -> dict[str, Any]:
    return {
        "benchmark": SECTION,
        "quick": quick,
        "sizes": asdict(sizes),
        "machine": machine,
        "feast": feast_note,
        "quiet": quiet_note,
        "load_average": r.load_avg,
        "online": {key: st.to_json() for key, st in r.online.items()},
        "online_notes": r.online_notes,
        "online_identity": {
            k: {"checked": c, "wrong": w} for k, (c, w) in r.online_identity.items()
        },
        "online_load_seconds": r.loads,
        "joins": [
            {
                "system": j.system,
                "events": j.size.events,
                "entity_rows": j.size.rows,
                "drivers": j.size.drivers,
                "ok": j.result.ok,
                "note": j.result.note,
                "result": j.result.data,
                "watched_peak_rss_kib": j.result.peak_rss_kib,
                "process_seconds": j.result.seconds,
                "ingest": j.ingest.data if j.ingest is not None else None,
                "identity": asdict(j.identity) if j.identity is not None else None,
            }
            for j in r.joins
        ],
        "join_agreement": r.join_agreement,
    }


if __name__ == "__main__":
    sys.exit(main())
