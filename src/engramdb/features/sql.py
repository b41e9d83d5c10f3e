"""DuckDB over the offline log: sandboxed connections and the SQL of point-in-time joins.

Rules of this file:

- SQL text holds only fixed keywords, identifiers that passed the identifier rule and are
  quoted anyway (``names.quote``), aliases of our own (``src0``, ``v0``) and the SQL types of
  ``SQL_TYPES``. Every value (times, ttls, directories) is a query parameter. File paths
  never appear in SQL: a view's files are attached through DuckDB's Python API.
- Every connection is sandboxed before it runs anything: file access is limited to the
  directories of the views it reads (none when the log lives in the engine and arrives as
  Arrow tables) plus its spill directory, extensions cannot be installed or loaded, and the
  configuration is locked. So even SQL that escaped every
  other check could not read ``/etc/passwd`` or ``COPY`` into an arbitrary file.
- ``event_timestamp``, ``created_timestamp`` and engramdb's ``__`` columns are fixed names.

``join`` answers "the latest value with event_timestamp <= t, within ttl" for every entity
row with DuckDB's ASOF join, after keeping one row per (entity, event_timestamp): the one
with the newest created_timestamp, then the latest ingest. DuckDB streams Parquet and spills
to the spill directory when the join outgrows memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engramdb.errors import StorageError
from engramdb.features.names import quote

if TYPE_CHECKING:
    from engramdb.features.offline import Log

__all__ = ["SQL_TYPES", "Reader", "ViewSpec", "connect", "join", "latest_per_entity"]

INGEST = "__ingest"
SQL_TYPES = {
    "int32": "INTEGER", "int64": "BIGINT", "float32": "FLOAT", "float64": "DOUBLE",
    "string": "VARCHAR", "bool": "BOOLEAN", "bytes": "BLOB", "timestamp": "TIMESTAMPTZ",
    "int64[]": "BIGINT[]", "float32[]": "FLOAT[]", "float64[]": "DOUBLE[]",
    "string[]": "VARCHAR[]",
}  # fmt: skip
_RETRIES = 8  # re-reads of the manifest when a compaction removed a file mid-query


class ViewSpec:
    """What a join needs of a view: its keys, features and ttl."""

    def __init__(
        self, name: str, keys: Sequence[str], features: Sequence[str], ttl: float | None
    ) -> None:
        self.name, self.keys, self.features, self.ttl = name, list(keys), list(features), ttl


def connect(allowed: Sequence[str] = (), spill: str | None = None) -> Any:
    """A DuckDB connection that may touch no file outside ``allowed`` directories."""
    import duckdb

    connection = duckdb.connect(
        config={
            "temp_directory": spill or tempfile.gettempdir(),
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
        }
    )
    try:
        if allowed:
            directories = [os.path.join(os.path.realpath(d), "") for d in allowed]
            connection.execute("SET allowed_directories = ?", [directories])
        connection.execute("SET enable_progress_bar = false")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


class Reader:
    """A sandboxed connection with each view's committed rows as a SQL view (``src<i>``):
    Parquet files read by DuckDB, or Arrow tables decoded from the engine (see ``Log``).

    ``run`` lists the manifest again and retries when a compaction removed a file between
    listing and reading (a reader never sees a half-compacted log: see ``offline``).
    """

    def __init__(self, log: Log, views: Sequence[str], spill: str | None) -> None:
        self.log = log
        self.views = list(dict.fromkeys(views))
        self.connection = connect(log.readable(self.views), spill)
        self.sources: dict[str, str | None] = {}
        self.columns: dict[str, frozenset[str]] = {}  # of each attached view's rows
        self._fresh = False

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def _refresh(self) -> None:
        for i, view in enumerate(self.views):
            alias = f"src{i}"
            attached = self.log.attach(self.connection, alias, view)
            self.sources[view] = quote(alias) if attached else None
            if attached:
                relation = self.connection.sql(f"SELECT * FROM {quote(alias)} LIMIT 0")
                self.columns[view] = frozenset(relation.columns)
        self._fresh = True

    def run(self, build: Callable[[dict[str, str | None]], tuple[str, list[Any]]]) -> pa.Table:
        """Run the query ``build(sources)`` returns (SQL and its parameters)."""
        import duckdb

        for attempt in range(_RETRIES):
            try:
                if not self._fresh:
                    self._refresh()
                sql, params = build(self.sources)
                table: pa.Table = self.connection.sql(sql, params=params).to_arrow_table()
                return table
            except duckdb.IOException as e:
                self._fresh = False  # a file listed a moment ago is gone: list again
                if attempt == _RETRIES - 1:
                    raise StorageError(f"cannot read the offline log: {e}") from None
            except duckdb.Error as e:
                raise StorageError(f"the offline query failed: {e}") from None
        raise AssertionError("unreachable")


def latest_per_entity(
    source: str, keys: Sequence[str], *, start: int | None = None, end: int | None = None
) -> tuple[str, list[Any]]:
    """Each entity's newest row in ``source`` (with ``start <= event < end``, in µs)."""
    where: list[str] = []
    params: list[Any] = []
    if start is not None:
        where.append("epoch_us(event_timestamp) >= ?")
        params.append(start)
    if end is not None:
        where.append("epoch_us(event_timestamp) < ?")
        params.append(end)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    partition = ", ".join(quote(k) for k in keys)
    sql = (
        f"SELECT * FROM {source} {clause} QUALIFY row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY event_timestamp DESC, created_timestamp DESC, {quote(INGEST)} DESC) = 1"
    )
    return sql, params


def _latest_per_event(
    source: str, spec: ViewSpec, alias: str, present: frozenset[str], types: dict[str, str]
) -> str:
    """One row per (entity, event_timestamp): newest created, then latest ingest.

    A feature no stored row has yet (added to the view since) reads as NULL."""
    keys = ", ".join(quote(k) for k in spec.keys)
    features = [
        quote(f) if f in present else f"CAST(NULL AS {SQL_TYPES[types[f]]}) AS {quote(f)}"
        for f in spec.features
    ]
    columns = ", ".join([*(quote(k) for k in spec.keys), "event_timestamp AS __ts", *features])
    return (
        f"(SELECT {columns} FROM {source} QUALIFY row_number() OVER "
        f"(PARTITION BY {keys}, event_timestamp ORDER BY created_timestamp DESC, "
        f"{quote(INGEST)} DESC) = 1) {alias}"
    )


def join(
    entities: str,
    specs: Sequence[ViewSpec],
    sources: dict[str, str | None],
    names: dict[tuple[str, str], str],
    types: dict[tuple[str, str], str],
    columns: dict[str, frozenset[str]],
) -> tuple[str, list[Any]]:
    """A point-in-time join of ``entities`` (join keys, ``event_timestamp``, ``__row``) with
    every view in ``specs``: ``__row`` and one column per feature, in ``__row`` order.
    ``columns``: what each source holds (``Reader.columns``)."""
    select = ['e."__row"']
    joins: list[str] = []
    params: list[Any] = []
    for i, spec in enumerate(specs):
        alias = f"v{i}"
        source = sources[spec.name]
        for feature in spec.features:
            output = quote(names[(spec.name, feature)])
            if source is None:
                select.append(f"CAST(NULL AS {SQL_TYPES[types[(spec.name, feature)]]}) AS {output}")
                continue
            value = f"{alias}.{quote(feature)}"
            if spec.ttl is not None:
                value = (
                    f"CASE WHEN epoch_us(e.event_timestamp) - epoch_us({alias}.__ts) <= ? "
                    f"THEN {value} END"
                )
                params.append(int(spec.ttl * 1_000_000))
            select.append(f"{value} AS {output}")
        if source is None:
            continue
        on = " AND ".join(f"e.{quote(k)} = {alias}.{quote(k)}" for k in spec.keys)
        own = {f: types[(spec.name, f)] for f in spec.features}
        latest = _latest_per_event(source, spec, alias, columns[spec.name], own)
        joins.append(f"ASOF LEFT JOIN {latest} ON {on} AND e.event_timestamp >= {alias}.__ts")
    sql = f"SELECT {', '.join(select)} FROM {quote(entities)} e {' '.join(joins)} ORDER BY e.__row"
    return sql, params
