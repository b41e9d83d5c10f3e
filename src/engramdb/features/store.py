"""``db.features``: one definition serves both online features and point-in-time training data.

- ``apply`` stores definitions (see ``registry``); every name in them follows one identifier
  rule (``names``), checked when applied and again when read back.
- ``ingest`` / ``push`` check rows against the view, write them to the offline log and, for
  online views, store each entity's newest row online. The online rows and the offline
  log's manifest record commit in ONE transaction: offline and online change together or
  not at all, even across a kill -9 (see ``offline``). The log is Parquet files beside an
  LMDB database, and records of the engine itself (``blobs``, committed in that same
  transaction) for a database without a directory. Small files or blobs are compacted.
- ``get_online_features`` reads one record per (view, entity) — each entity's features of a
  view are stored together — and reports a status per value.
- ``get_historical_features`` is a DuckDB ASOF join per view over the offline log, in chunks
  of entity rows (with a progress bar), optionally straight to a Parquet file.
- ``validate_online`` compares the online store with the offline log as of now.

Timestamps must say their time zone: timezone-naive timestamps (and zone-less strings) are
refused with ``InvalidArgument`` rather than guessed to be UTC.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa

from engramdb._progress import progress_bar
from engramdb.errors import EngramError, InvalidArgument, StorageError
from engramdb.features.definitions import Entity, FeatureService, FeatureView, split_ref
from engramdb.features.frames import TS, conform, timestamps, to_arrow, to_micros
from engramdb.features.model import (
    HistoricalResult,
    IngestResult,
    OnlineResponse,
    ParquetOutput,
    SkewReport,
)
from engramdb.features.offline import INGEST, FileLog, Log, inside
from engramdb.features.online import (
    CREATED,
    OnlineStore,
    entity_key,
)
from engramdb.features.online import (
    TS as ONLINE_TS,
)
from engramdb.features.registry import Registry, Snapshot
from engramdb.features.sql import Reader, ViewSpec, connect, join, latest_per_entity
from engramdb.records.ops import Incr
from engramdb.remote import DEFAULT_CAP, remote

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.records.model import Record
    from engramdb.recordset import RecordSet
    from engramdb.store import Store

    # (set, keys) reads to make in one snapshot, and what turns them into the response
    OnlineReads = tuple[
        list[tuple[RecordSet, list[Key]]],
        Callable[[Sequence[Sequence[Record | None]]], OnlineResponse],
    ]

__all__ = ["FeatureStore", "HistoricalResult", "IngestResult", "SkewReport", "online_reads"]

log = logging.getLogger("engramdb.features")

CHUNK_ROWS = 1_000_000  # entity rows per point-in-time join query
MAX_SAMPLE = 100_000  # validate_online's sample, at most
PLAN_CACHE_ENTRIES = 256  # parsed feature lists kept...
PLAN_CACHE_REFS = 65_536  # ...holding at most this many feature references in all


class _Plan:
    """A parsed feature list: per view, its keys, features, ttl and output names."""

    def __init__(
        self,
        views: list[tuple[FeatureView, list[str], list[str]]],
        names: dict[tuple[str, str], str],
        refs: int,
    ) -> None:
        self.views = views  # (view, join keys, features)
        self.names = names
        self.refs = refs
        # Per view: its features' output names, in order.
        self.outputs = {
            view.name: [names[(view.name, f)] for f in feats] for view, _, feats in views
        }
        # Per view: which of its features are timestamps (converted on the way out).
        self.stamps = {
            view.name: {f.name: True for f in view.schema if f.dtype == "timestamp"}
            for view, _, _ in views
        }


class _PlanCache:
    """Parsed feature lists of the current registry version, least recently used first.

    Keyed by what clients ask for, so bounded both in entries and in the feature references
    they hold; emptied when the registry changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()
        self._refs = 0
        self._snapshot: Snapshot | None = None

    def get(self, snapshot: Snapshot, key: tuple[Any, ...]) -> _Plan | None:
        with self._lock:
            if snapshot is not self._snapshot:
                return None
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, snapshot: Snapshot, key: tuple[Any, ...], plan: _Plan) -> None:
        if plan.refs > PLAN_CACHE_REFS // 16:
            return  # a huge list: parsing it again costs less than what it would evict
        with self._lock:
            if snapshot is not self._snapshot:
                self._plans.clear()
                self._refs = 0
                self._snapshot = snapshot
            if key in self._plans:
                return
            self._plans[key] = plan
            self._refs += plan.refs
            while len(self._plans) > PLAN_CACHE_ENTRIES or self._refs > PLAN_CACHE_REFS:
                _, dropped = self._plans.popitem(last=False)
                self._refs -= dropped.refs

    def __len__(self) -> int:
        return len(self._plans)


class FeatureStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = Registry(store)
        self.online = OnlineStore(store)
        self.offline = _offline_log(store)
        home = store.data_dir
        self._spill = None if home is None else inside(home, "features", "spill")
        self._counter = store.records("_feature_ingests")
        self._plans = _PlanCache()
        # Complete or roll back ingests and compactions a crash cut short.
        self.offline.recover()

    # definitions -------------------------------------------------------------------------

    @remote("slow", writes=True, wire={"definitions": "definitions"})
    def apply(
        self, definitions: Sequence[Entity | FeatureView | FeatureService]
    ) -> list[tuple[str, str, int]]:
        """Store definitions (all or none); ``(kind, name, version)`` for each.

        Every name (entity, join key, view, feature, service) must be 1-63 ASCII letters,
        digits or ``_``, not starting with a digit or ``__``.
        """
        return self.registry.apply(definitions)

    @remote("read")
    def get_feature_view(self, name: str) -> FeatureView:
        """The applied feature view ``name``; ``NotFound`` if there is none."""
        return self.registry.view(name)

    @remote("read")
    def list_feature_views(self) -> list[FeatureView]:
        """Every applied feature view, by name."""
        return self.registry.definitions("view")

    @remote("read")
    def list_entities(self) -> list[Entity]:
        """Every applied entity, by name."""
        return self.registry.definitions("entity")

    # ingestion ---------------------------------------------------------------------------

    def _key_types(self, view: FeatureView) -> dict[str, str]:
        return {
            k: self.registry.entity(e).dtype
            for e in view.entities
            for k in self.registry.entity(e).join_keys
        }

    def _number(self) -> int:
        return int(self._counter.operate("n", [Incr("n")])[0])

    @remote("slow", writes=True, wire={"data": "table"})
    def ingest(self, view: str, data: Any) -> IngestResult:
        """Append rows (pandas/polars/Arrow/Parquet path/list of dicts) to ``view``.

        They must carry the view's join keys, ``event_timestamp`` and every feature
        (``created_timestamp`` is optional). Timestamps must be timezone-aware (or strings
        with an offset such as ``Z``); naive ones raise ``InvalidArgument``.

        Offline and online change together or not at all: both are committed by one
        transaction, and a crash at any moment leaves either the whole ingest or none of it
        once the database is opened again.
        """
        definition = self.registry.view(view)
        keys = self.registry.join_keys(definition)
        table = conform(
            to_arrow(data), keys, self._key_types(definition),
            [(f.name, f.dtype) for f in definition.schema], now=self.store.now(),
        )  # fmt: skip
        number = self._number()
        ordinal = pa.array(np.arange(table.num_rows, dtype=np.int64) + (number << 30))
        table = table.append_column(INGEST, ordinal)
        online_step = None
        if definition.online:
            online_step = self.online.step(view, self._latest_rows(table, keys, definition))
        staged = self.offline.stage(view, table, number)
        steps = self.offline.commit_steps(staged)
        if online_step is not None:
            steps.append(online_step)
        results = self.offline.commit(staged, steps)
        online = sum(results[-1]) if online_step is not None else 0
        try:
            self.offline.compact(view, self._number)
        except Exception:
            # The ingest is committed: raising now would invite a retry that ingests twice.
            # A failed compaction leaves the log as it was (see ``offline``); the next
            # ingest tries again.
            log.exception("compacting the offline log of %r failed", view)
        return IngestResult(view, table.num_rows, online, staged.path)

    @remote("slow", writes=True)
    def push(self, view: str, rows: Sequence[dict[str, Any]]) -> IngestResult:
        """Ingest a few rows as they happen (a stream); the same rules as ``ingest``."""
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
            raise InvalidArgument("push takes a row (a dict) or a list of them")
        return self.ingest(view, list(rows))

    @remote("slow", writes=True)
    def compact(self, view: str) -> int:
        """Merge the view's small offline files into one now (ingests do this on their own
        once a view has many); returns how many files were merged. Results of every query
        are the same before and after."""
        self.registry.view(view)
        return self.offline.compact(view, self._number, at_least=2)

    def _latest_rows(
        self, table: pa.Table, keys: list[str], view: FeatureView
    ) -> list[tuple[Any, dict[str, Any]]]:
        connection = connect((), self._spill)
        try:
            connection.register("batch", table)
            sql, params = latest_per_entity('"batch"', keys)
            latest = connection.sql(sql, params=params).to_arrow_table()
        finally:
            connection.close()
        return self._online_rows(latest, keys, view)

    @staticmethod
    def _online_rows(
        table: pa.Table, keys: list[str], view: FeatureView
    ) -> list[tuple[Any, dict[str, Any]]]:
        # Timestamps travel as int64 microseconds (msgpack has no datetime here).
        for name in [
            "event_timestamp",
            "created_timestamp",
            *(f.name for f in view.schema if f.dtype == "timestamp"),
        ]:
            if name not in table.column_names:
                continue  # a feature added to the view after these rows were written
            index = table.column_names.index(name)
            table = table.set_column(index, name, table[name].cast(pa.int64()))
        columns = table.to_pydict()
        rows: list[tuple[Any, dict[str, Any]]] = []
        features = [f.name for f in view.schema]
        for i in range(table.num_rows):
            bins = {name: columns[name][i] for name in features if name in columns}
            bins[ONLINE_TS] = columns["event_timestamp"][i]
            bins[CREATED] = columns["created_timestamp"][i]
            bins[INGEST] = columns[INGEST][i]
            rows.append((entity_key([columns[k][i] for k in keys]), bins))
        return rows

    @remote("slow", writes=True)
    def materialize(self, views: Sequence[str], start: Any = None, end: Any = None) -> int:
        """Load the online store from the offline log (rows with start <= event < end);
        returns how many entity rows were written (older ones never overwrite newer)."""
        if isinstance(views, str):
            views = [views]
        if not isinstance(views, Sequence):
            raise InvalidArgument("materialize takes a list of view names")
        low = None if start is None else to_micros(start)
        high = None if end is None else to_micros(end)
        written = 0
        for name in views:
            definition = self.registry.view(name)
            keys = self.registry.join_keys(definition)
            with Reader(self.offline, [name], self._spill) as reader:

                def build(
                    sources: dict[str, str | None], name: str = name, keys: list[str] = keys
                ) -> tuple[str, list[Any]]:
                    source = sources[name]
                    if source is None:
                        return "SELECT NULL WHERE false", []
                    return latest_per_entity(source, keys, start=low, end=high)

                latest = reader.run(build)
            if INGEST not in latest.column_names:
                continue  # the view has no rows yet
            written += self.online.write(name, self._online_rows(latest, keys, definition))
        return written

    # online ------------------------------------------------------------------------------

    def _plan(self, features: Sequence[str] | str, full_feature_names: bool) -> _Plan:
        snapshot = self.registry.current()
        if isinstance(features, str):
            signature: tuple[Any, ...] = (features, bool(full_feature_names))
        elif isinstance(features, Sequence):
            signature = (*features, bool(full_feature_names))
        else:
            raise InvalidArgument("features is a list of 'view:feature' or a service name")
        try:
            found = self._plans.get(snapshot, signature)
        except TypeError:  # an unhashable element: not a feature reference anyway
            raise InvalidArgument("features are 'view:feature' strings") from None
        if found is not None:
            return found
        if isinstance(features, str):  # a feature service
            try:
                refs = list(snapshot.lookup("service", features).features)
            except EngramError as e:
                raise InvalidArgument(str(e)) from None
        else:
            refs = list(features)
        if not refs:
            raise InvalidArgument("ask for at least one feature")
        order: dict[str, list[str]] = {}
        for ref in refs:
            view_name, feature = split_ref(ref)
            try:
                view = snapshot.lookup("view", view_name)
            except StorageError:
                raise
            except EngramError:
                raise InvalidArgument(f"unknown feature view {view_name!r} in {ref!r}") from None
            view.feature(feature)
            order.setdefault(view_name, []).append(feature)
        names: dict[tuple[str, str], str] = {}
        seen: set[str] = set()
        views = []
        for view_name, feats in order.items():
            view = snapshot.lookup("view", view_name)
            keys = snapshot.join_keys(view)
            for feature in feats:
                name = f"{view_name}__{feature}" if full_feature_names else feature
                if name in seen:
                    raise InvalidArgument(
                        f"feature name {name!r} is asked twice; pass full_feature_names=True"
                    )
                seen.add(name)
                names[(view_name, feature)] = name
            views.append((view, keys, feats))
        plan = _Plan(views, names, len(refs))
        self._plans.put(snapshot, signature, plan)
        return plan

    @remote("read")
    def get_online_features(
        self,
        features: Sequence[str] | str,
        entity_rows: Sequence[dict[str, Any]],
        *,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """The latest values of ``features`` (``"view:feature"``s or a service name) for each
        entity row, columnar, with a status per value."""
        plan = self._plan(features, full_feature_names)
        if isinstance(entity_rows, dict) or not isinstance(entity_rows, Sequence):
            raise InvalidArgument("entity_rows is a list of {join key: value} dicts")
        started = perf_counter_ns()
        metrics = self.store.metrics.op("get_online_features")
        try:
            return self._online(plan, entity_rows)
        except EngramError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(perf_counter_ns() - started)

    def _reads(self, plan: _Plan, entity_rows: Sequence[dict[str, Any]]) -> OnlineReads:
        columns: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        requests: list[tuple[RecordSet, list[Key]]] = []
        for view, keys, _ in plan.views:
            for key in keys:
                if key not in columns:
                    try:
                        columns[key] = [row[key] for row in entity_rows]
                    except (KeyError, TypeError, IndexError):
                        raise InvalidArgument(f"every entity row needs join key {key!r}") from None
            records = self.store.records(self.online.set_of(view.name))
            requests.append((records, [entity_key([row[k] for k in keys]) for row in entity_rows]))

        def finish(fetched: Sequence[Sequence[Record | None]]) -> OnlineResponse:
            now = self.store.now()
            for (view, _, feats), records in zip(plan.views, fetched):
                stamps = plan.stamps[view.name]
                values, states = self.online.columns(records, feats, view.ttl, stamps, now)
                out = plan.outputs[view.name]
                columns.update(zip(out, values))
                statuses.update(zip(out, states))
            return OnlineResponse(columns, statuses)

        return requests, finish

    def _online(self, plan: _Plan, entity_rows: Sequence[dict[str, Any]]) -> OnlineResponse:
        requests, finish = self._reads(plan, entity_rows)
        return finish(self.store.read(requests))

    # offline -----------------------------------------------------------------------------

    @remote("slow", local_only=("output",), wire={"entity_df": "table"})
    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        full_feature_names: bool = False,
        output: str | None = None,
    ) -> HistoricalResult:
        """For each entity row: the latest value of each feature with event_timestamp <= the
        row's, within the view's ttl (ties: newest created_timestamp). Rows keep their order
        and columns. ``event_timestamp`` must be timezone-aware.

        ``output``: write a Parquet file there instead of returning the table. It is a path
        of the calling process, written with its rights: embedded use only (a server never
        accepts it from a client). The file is written beside it under a temporary name,
        fsynced and renamed, so it appears whole or not at all and replaces whatever was at
        ``output`` (a symlink there is replaced, not followed). A path inside the
        database's own directory is refused.
        """
        plan = self._plan(features, full_feature_names)
        target = None if output is None else self._output_path(output)
        table = to_arrow(entity_df)
        if len(set(table.column_names)) != len(table.column_names):
            raise InvalidArgument("the entity rows have two columns of the same name")
        key_types = {k: t for view, _, _ in plan.views for k, t in self._key_types(view).items()}
        missing = sorted({"event_timestamp", *key_types} - set(table.column_names))
        if missing:
            raise InvalidArgument(f"the entity rows need columns {missing}")
        clash = sorted(set(plan.names.values()) & set(table.column_names))
        if clash:
            raise InvalidArgument(
                f"the entity rows already have columns {clash}; pass full_feature_names=True"
            )
        stamps = timestamps(table["event_timestamp"], "event_timestamp")
        table = table.set_column(
            table.column_names.index("event_timestamp"), "event_timestamp", stamps
        )
        # Only join keys and the time reach DuckDB; other columns are joined back in Arrow.
        probe = {"event_timestamp": stamps}
        for key, dtype in key_types.items():
            want = pa.int64() if dtype == "int64" else pa.string()
            try:
                probe[key] = table[key].cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InvalidArgument(
                    f"join key {key!r} must be {want}, got {table[key].type}"
                ) from None
        probe_table = pa.table(probe)
        specs = [ViewSpec(view.name, keys, feats, view.ttl) for view, keys, feats in plan.views]
        types = {
            (view.name, f): view.feature(f).dtype for view, _, feats in plan.views for f in feats
        }
        outputs = [plan.names[(spec.name, f)] for spec in specs for f in spec.features]
        writer: ParquetOutput | None = None if target is None else ParquetOutput(target)
        pieces: list[pa.Table] = []
        try:
            with Reader(self.offline, [s.name for s in specs], self._spill) as reader:
                total = table.num_rows
                with progress_bar("point-in-time join", total) as advance:
                    for start in range(0, max(total, 1), CHUNK_ROWS):
                        chunk = probe_table.slice(start, CHUNK_ROWS)
                        rows = chunk.num_rows
                        chunk = chunk.append_column(
                            "__row", pa.array(np.arange(rows, dtype=np.int64))
                        )
                        reader.connection.register("entity_rows", chunk)
                        result = reader.run(
                            lambda sources: join(
                                "entity_rows", specs, sources, plan.names, types, reader.columns
                            )
                        )
                        if result.num_rows != rows:
                            raise StorageError("the point-in-time join lost entity rows")
                        piece = table.slice(start, rows)
                        for name in outputs:
                            piece = piece.append_column(name, result[name])
                        if writer is not None:
                            writer.write(piece)
                        else:
                            pieces.append(piece)
                        advance(rows)
            if writer is not None:
                writer.commit()
                writer = None
                return HistoricalResult(None, target)
        finally:
            if writer is not None:
                writer.abort()
        return HistoricalResult(pa.concat_tables(pieces) if pieces else None, None)

    def _output_path(self, output: Any) -> str:
        if not isinstance(output, str | os.PathLike):
            raise InvalidArgument(f"output is a file path, not {type(output).__name__}")
        path = os.path.abspath(os.fspath(output))
        if not os.path.isdir(os.path.dirname(path)):
            raise InvalidArgument(f"output {path!r}: its directory does not exist")
        if self.store.data_dir is not None:
            home = os.path.realpath(self.store.data_dir)
            real = os.path.realpath(path)
            if real == home or real.startswith(home + os.sep):
                raise InvalidArgument("output cannot be inside the database's directory")
        return path

    # skew --------------------------------------------------------------------------------

    @remote("slow", caps={"sample": DEFAULT_CAP})
    def validate_online(
        self, view: str, *, sample: int = 100, seed: int | None = None
    ) -> SkewReport:
        """Compare online values of up to ``sample`` entities with the offline log as of now."""
        definition = self.registry.view(view)
        keys = self.registry.join_keys(definition)
        if type(sample) is not int or not 1 <= sample <= MAX_SAMPLE:
            raise InvalidArgument(f"sample is an int from 1 to {MAX_SAMPLE}, not {sample!r}")
        if seed is not None and type(seed) is not int:
            raise InvalidArgument(f"seed is an int or None, not {seed!r}")
        rng = random.Random(seed)
        chosen: list[Any] = []
        for i, record in enumerate(self.store.records(self.online.set_of(view)).iterate()):
            if len(chosen) < sample:
                chosen.append(record.key)
            elif (j := rng.randrange(i + 1)) < sample:
                chosen[j] = record.key
        if not chosen:
            return SkewReport(view, 0)
        rows = []
        for key in chosen:
            try:
                values = msgspec.msgpack.decode(key) if isinstance(key, bytes) else [key]
            except msgspec.DecodeError:
                raise StorageError(f"the online store of {view!r} holds a corrupt key") from None
            rows.append(dict(zip(keys, values)))
        now = self.store.now()
        refs = [f"{view}:{f.name}" for f in definition.schema]
        online = self.get_online_features(refs, rows, full_feature_names=True)
        stamp = pa.array([int(now * 1_000_000)] * len(rows), type=pa.int64()).cast(TS)
        entity = pa.table({**{k: [r.get(k) for r in rows] for k in keys}, "event_timestamp": stamp})
        offline = (
            self.get_historical_features(entity, refs, full_feature_names=True)
            .to_arrow()
            .to_pydict()
        )
        report = SkewReport(view, len(rows))
        for feature in definition.schema:
            name = f"{view}__{feature.name}"
            for i, row in enumerate(rows):
                a, b = online.columns[name][i], offline[name][i]
                if not _same(a, b):
                    report.mismatches.append(
                        {"entity": row, "feature": feature.name, "online": a, "offline": b}
                    )
        return report

    def _close(self) -> None:
        pass

    def _stats(self) -> dict[str, Any]:
        """Per view: online entities, offline rows, files (or blobs) and Parquet bytes; how
        many parsed feature lists are cached (bounded: see ``PLAN_CACHE_ENTRIES``); and
        where the offline log lives (``files`` or ``engine``, with its blob records and its
        bounded cache of decoded tables)."""
        views = {}
        for view in self.registry.definitions("view"):
            entries = self.offline.entries(view.name)
            views[view.name] = {
                "online_entities": self.store.records(self.online.set_of(view.name)).count(),
                "offline_rows": sum(e.rows for e in entries),
                "offline_files": len(entries),
                "offline_bytes": sum(e.size for e in entries),
            }
        return {"views": views, "cached_plans": len(self._plans), "offline": self.offline.stats()}


def _offline_log(store: Store) -> Log:
    """Files beside the records when the database has a directory (DuckDB reads them
    directly); records of the engine otherwise, so every node sharing it sees the log."""
    if store.data_dir is not None:
        return FileLog(store)
    from engramdb.features.blobs import EngineLog

    return EngineLog(store)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return bool(a == b)


def online_reads(
    fs: FeatureStore,
    features: Sequence[str] | str,
    entity_rows: Sequence[dict[str, Any]],
    *,
    full_feature_names: bool = False,
) -> OnlineReads:
    """``get_online_features`` in two halves, for a caller that reads these records in
    one snapshot with others (``Store.read``): the ``(set, keys)`` reads to make, and
    the function that turns what they read into the response."""
    plan = fs._plan(features, full_feature_names)
    if isinstance(entity_rows, dict) or not isinstance(entity_rows, Sequence):
        raise InvalidArgument("entity_rows is a list of {join key: value} dicts")
    return fs._reads(plan, entity_rows)
