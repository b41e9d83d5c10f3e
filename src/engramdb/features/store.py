"""``db.features``: one definition serves both online features and point-in-time training data.

- ``apply`` stores definitions (see ``registry``).
- ``ingest`` / ``push`` check rows against the view, append them to the offline log and, for
  online views, store each entity's newest row online; a failure leaves both unchanged (the
  offline file is written first and removed again if the online half fails).
- ``get_online_features`` reads one record per (view, entity) — each entity's features of a
  view are stored together — and reports a status per value.
- ``get_historical_features`` is a DuckDB ASOF join per view over the offline log, in chunks
  of entity rows (with a progress bar) or straight to a Parquet file for large inputs.
- ``validate_online`` compares the online store with the offline log as of now.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa

from engramdb._progress import progress_bar
from engramdb.errors import EngramError, InvalidArgument
from engramdb.features.definitions import Entity, FeatureService, FeatureView
from engramdb.features.frames import TS, conform, to_arrow
from engramdb.features.model import HistoricalResult, IngestResult, OnlineResponse, SkewReport
from engramdb.features.offline import INGEST, OfflineLog, ViewSpec
from engramdb.features.online import (
    CREATED,
    OnlineStore,
    entity_key,
)
from engramdb.features.online import (
    TS as ONLINE_TS,
)
from engramdb.features.registry import Registry
from engramdb.records.ops import Incr
from engramdb.remote import DEFAULT_CAP, remote

if TYPE_CHECKING:
    from engramdb.database import Database

__all__ = ["FeatureStore", "HistoricalResult", "IngestResult", "SkewReport"]

CHUNK_ROWS = 1_000_000  # entity rows per point-in-time join query
_SQL_TYPES = {
    "int32": "INTEGER", "int64": "BIGINT", "float32": "FLOAT", "float64": "DOUBLE",
    "string": "VARCHAR", "bool": "BOOLEAN", "bytes": "BLOB", "timestamp": "TIMESTAMPTZ",
    "int64[]": "BIGINT[]", "float32[]": "FLOAT[]", "float64[]": "DOUBLE[]",
    "string[]": "VARCHAR[]",
}  # fmt: skip


class _Plan:
    """A parsed feature list: per view, its keys, features, ttl and output names."""

    def __init__(
        self,
        views: list[tuple[FeatureView, list[str], list[str]]],
        names: dict[tuple[str, str], str],
    ) -> None:
        self.views = views  # (view, join keys, features)
        self.names = names
        # Per view: its features' output names, in order.
        self.outputs = {
            view.name: [names[(view.name, f)] for f in feats] for view, _, feats in views
        }
        # Per view: which of its features are timestamps (converted on the way out).
        self.stamps = {
            view.name: {f.name: True for f in view.schema if f.dtype == "timestamp"}
            for view, _, _ in views
        }


class FeatureStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = Registry(db)
        self.online = OnlineStore(db)
        root = None if db.path is None else os.path.join(db.path, "features")
        self.offline = OfflineLog(None if root is None else os.path.join(root, "offline"))
        self._spill = None if root is None else os.path.join(root, "spill")
        self._counter = db._internal_records("_feature_ingests")
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._plans_lock = threading.Lock()

    # definitions -------------------------------------------------------------------------

    @remote("slow", writes=True, wire={"definitions": "definitions"})
    def apply(
        self, definitions: Sequence[Entity | FeatureView | FeatureService]
    ) -> list[tuple[str, str, int]]:
        """Store definitions (all or none); ``(kind, name, version)`` for each."""
        return self.registry.apply(definitions)

    def get_feature_view(self, name: str) -> FeatureView:
        return self.registry.view(name)

    @remote("read")
    def list_feature_views(self) -> list[FeatureView]:
        """Every applied feature view, by name."""
        return self.registry.definitions("view")

    def list_entities(self) -> list[Entity]:
        return self.registry.definitions("entity")

    # ingestion ---------------------------------------------------------------------------

    def _key_types(self, view: FeatureView) -> dict[str, str]:
        return {
            k: self.registry.entity(e).dtype
            for e in view.entities
            for k in self.registry.entity(e).join_keys
        }

    @remote("slow", writes=True, wire={"data": "table"})
    def ingest(self, view: str, data: Any) -> IngestResult:
        """Append rows (pandas/polars/Arrow/Parquet path/list of dicts) to ``view``.

        They must carry the view's join keys, ``event_timestamp`` and every feature
        (``created_timestamp`` is optional). Offline and online change together or not at all.
        """
        definition = self.registry.view(view)
        keys = self.registry.join_keys(definition)
        table = conform(
            to_arrow(data), keys, self._key_types(definition),
            [(f.name, f.dtype) for f in definition.schema], now=self.db._clock(),
        )  # fmt: skip
        number = int(self._counter.operate("n", [Incr("n")])[0])
        ordinal = pa.array(np.arange(table.num_rows, dtype=np.int64) + (number << 30))
        table = table.append_column(INGEST, ordinal)
        written = self.offline.append(view, table, number)
        online = 0
        try:
            if definition.online:
                online = self.online.write(view, self._latest_rows(table, keys, definition))
        except BaseException:
            self.offline.undo(view, written, table)
            raise
        return IngestResult(view, table.num_rows, online, written)

    def push(self, view: str, rows: Sequence[dict[str, Any]]) -> IngestResult:
        """Ingest a few rows as they happen (a stream); the same rules as ``ingest``."""
        if isinstance(rows, dict):
            rows = [rows]
        return self.ingest(view, list(rows))

    def _latest_rows(
        self, table: pa.Table, keys: list[str], view: FeatureView
    ) -> list[tuple[Any, dict[str, Any]]]:
        connection = self.offline.connect(self._spill)
        try:
            connection.register("batch", table)
            order = "event_timestamp DESC, created_timestamp DESC, __ingest DESC"
            partition = ", ".join(f'"{k}"' for k in keys)
            latest = connection.sql(
                f"SELECT * FROM batch QUALIFY row_number() OVER (PARTITION BY {partition} "
                f"ORDER BY {order}) = 1"
            ).to_arrow_table()
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
            index = table.column_names.index(name)
            table = table.set_column(index, name, table[name].cast(pa.int64()))
        columns = table.to_pydict()
        rows: list[tuple[Any, dict[str, Any]]] = []
        features = [f.name for f in view.schema]
        for i in range(table.num_rows):
            bins = {name: columns[name][i] for name in features}
            bins[ONLINE_TS] = columns["event_timestamp"][i]
            bins[CREATED] = columns["created_timestamp"][i]
            bins[INGEST] = columns[INGEST][i]
            rows.append((entity_key([columns[k][i] for k in keys]), bins))
        return rows

    @remote("slow", writes=True)
    def materialize(self, views: Sequence[str], start: Any = None, end: Any = None) -> int:
        """Load the online store from the offline log (rows with start <= event < end);
        returns how many entity rows were written (older ones never overwrite newer)."""
        from engramdb.features.frames import to_micros

        written = 0
        for name in views:
            definition = self.registry.view(name)
            keys = self.registry.join_keys(definition)
            connection = self.offline.connect(self._spill)
            try:
                source = self.offline.source(connection, name, pa.schema([]))
                if source is None:
                    continue
                where = []
                if start is not None:
                    where.append(f"epoch_us(event_timestamp) >= {to_micros(start)}")
                if end is not None:
                    where.append(f"epoch_us(event_timestamp) < {to_micros(end)}")
                clause = f"WHERE {' AND '.join(where)}" if where else ""
                partition = ", ".join(f'"{k}"' for k in keys)
                latest = connection.sql(
                    f"SELECT * FROM {source} {clause} QUALIFY row_number() OVER (PARTITION BY "
                    f"{partition} ORDER BY event_timestamp DESC, created_timestamp DESC, "
                    f"{INGEST} DESC) = 1"
                ).to_arrow_table()
            finally:
                connection.close()
            written += self.online.write(name, self._online_rows(latest, keys, definition))
        return written

    # online ------------------------------------------------------------------------------

    def _plan(self, features: Sequence[str] | str, full_feature_names: bool) -> _Plan:
        snapshot = self.registry._current()
        signature = (
            id(snapshot),
            tuple(features) if not isinstance(features, str) else features,
            full_feature_names,
        )
        found = self._plans.get(signature)
        if found is not None:
            return found
        if isinstance(features, str):  # a feature service
            service = snapshot["service"].get(features)
            if service is None:
                raise InvalidArgument(f"no feature service {features!r}")
            refs = list(service.features)
        else:
            refs = list(features)
        if not refs:
            raise InvalidArgument("ask for at least one feature")
        order: dict[str, list[str]] = {}
        for ref in refs:
            if type(ref) is not str or ":" not in ref:
                raise InvalidArgument(f"features are 'view:feature', not {ref!r}")
            view_name, _, feature = ref.partition(":")
            view = snapshot["view"].get(view_name)
            if view is None:
                raise InvalidArgument(f"unknown feature view {view_name!r} in {ref!r}")
            view.feature(feature)
            order.setdefault(view_name, []).append(feature)
        names: dict[tuple[str, str], str] = {}
        seen: set[str] = set()
        views = []
        for view_name, feats in order.items():
            view = snapshot["view"][view_name]
            keys = [k for e in view.entities for k in snapshot["entity"][e].join_keys]
            for feature in feats:
                name = f"{view_name}__{feature}" if full_feature_names else feature
                if name in seen:
                    raise InvalidArgument(
                        f"feature name {name!r} is asked twice; pass full_feature_names=True"
                    )
                seen.add(name)
                names[(view_name, feature)] = name
            views.append((view, keys, feats))
        plan = _Plan(views, names)
        with self._plans_lock:
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[signature] = plan
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
        metrics = self.db._metrics.op("get_online_features")
        try:
            return self._online(plan, entity_rows)
        except EngramError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(perf_counter_ns() - started)

    def _online(self, plan: _Plan, entity_rows: Sequence[dict[str, Any]]) -> OnlineResponse:
        columns: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        requests = []
        for view, keys, _ in plan.views:
            for key in keys:
                if key not in columns:
                    try:
                        columns[key] = [row[key] for row in entity_rows]
                    except (KeyError, TypeError):
                        raise InvalidArgument(f"every entity row needs join key {key!r}") from None
            requests.append(
                (view.name, [entity_key([row[k] for k in keys]) for row in entity_rows])
            )
        fetched = self.online.fetch(requests)
        now = self.db._clock()
        for (view, _, feats), records in zip(plan.views, fetched):
            stamps = plan.stamps[view.name]
            values, states = self.online.columns(records, feats, view.ttl, stamps, now)
            out = plan.outputs[view.name]
            columns.update(zip(out, values))
            statuses.update(zip(out, states))
        return OnlineResponse(columns, statuses)

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
        and columns. ``output``: write a Parquet file instead of returning the table."""
        plan = self._plan(features, full_feature_names)
        table = to_arrow(entity_df)
        needed = {"event_timestamp", *(k for _, keys, _ in plan.views for k in keys)}
        missing = sorted(needed - set(table.column_names))
        if missing:
            raise InvalidArgument(f"the entity rows need columns {missing}")
        from engramdb.features.frames import _timestamps

        table = table.set_column(
            table.column_names.index("event_timestamp"), "event_timestamp",
            _timestamps(table["event_timestamp"], "event_timestamp"),
        )  # fmt: skip
        passthrough = list(table.column_names)
        specs = [ViewSpec(view.name, keys, feats, view.ttl) for view, keys, feats in plan.views]
        types = {
            (view.name, f): _SQL_TYPES[view.feature(f).dtype]
            for view, _, feats in plan.views
            for f in feats
        }
        connection = self.offline.connect(self._spill)
        writer = None
        pieces: list[pa.Table] = []
        try:
            sources = {
                spec.name: self.offline.source(connection, spec.name, pa.schema([]))
                for spec in specs
            }
            total = table.num_rows
            with progress_bar("point-in-time join", total) as advance:
                for start in range(0, max(total, 1), CHUNK_ROWS):
                    chunk = table.slice(start, CHUNK_ROWS)
                    chunk = chunk.append_column(
                        "__row", pa.array(np.arange(start, start + chunk.num_rows, dtype=np.int64))
                    )
                    connection.register("entity_rows", chunk)
                    sql = self.offline.join(
                        connection, "entity_rows", passthrough, specs, sources, plan.names, types
                    )
                    result = connection.sql(sql).to_arrow_table()
                    if output is not None:
                        import pyarrow.parquet as pq

                        if writer is None:
                            writer = pq.ParquetWriter(output, result.schema)
                        writer.write_table(result)
                    else:
                        pieces.append(result)
                    advance(chunk.num_rows)
        finally:
            if writer is not None:
                writer.close()
            connection.close()
        if output is not None:
            return HistoricalResult(None, output)
        return HistoricalResult(pa.concat_tables(pieces) if pieces else None, None)

    # skew --------------------------------------------------------------------------------

    @remote("slow", caps={"sample": DEFAULT_CAP})
    def validate_online(
        self, view: str, *, sample: int = 100, seed: int | None = None
    ) -> SkewReport:
        """Compare online values of up to ``sample`` entities with the offline log as of now."""
        definition = self.registry.view(view)
        keys = self.registry.join_keys(definition)
        rng = random.Random(seed)
        chosen: list[Any] = []
        for i, record in enumerate(self.db._internal_records(self.online.set_of(view)).iterate()):
            if len(chosen) < sample:
                chosen.append(record.key)
            elif (j := rng.randrange(i + 1)) < sample:
                chosen[j] = record.key
        if not chosen:
            return SkewReport(view, 0)
        rows = []
        for key in chosen:
            values = msgspec.msgpack.decode(key) if isinstance(key, bytes) else [key]
            rows.append(dict(zip(keys, values)))
        now = self.db._clock()
        refs = [f"{view}:{f.name}" for f in definition.schema]
        online = self.get_online_features(refs, rows, full_feature_names=True)
        stamp = pa.array([int(now * 1_000_000)] * len(rows), type=pa.int64()).cast(TS)
        entity = pa.table({**{k: [r[k] for r in rows] for k in keys}, "event_timestamp": stamp})
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

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {
            view.name: {
                "online_entities": self.db._internal_records(self.online.set_of(view.name)).count(),
                "offline_rows": self.offline.rows(view.name),
            }
            for view in self.registry.definitions("view")
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return bool(a == b)
