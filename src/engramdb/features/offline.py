"""The offline log: every ingested row, append-only, and point-in-time joins over it.

Rows are Parquet files under ``<database>/features/offline/<view>/``, one per ingest, written
to a temporary name, fsynced and renamed into place (a reader sees a file whole or not at
all). A database without a directory (the memory engine) keeps them as Arrow tables.

Each row carries ``__ingest``: the ingest's number (from an atomic counter) times 2^30 plus
the row's position, so rows with the same event and created timestamps still have one
order, the same offline and online: the later ingest wins.

``join`` answers "the latest value with event_timestamp <= t, within ttl" for every entity
row with DuckDB's ASOF join, after keeping one row per (entity, event_timestamp): the one
with the newest created_timestamp, then the latest ingest. DuckDB streams Parquet and spills
to a temporary directory when the join outgrows memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engramdb.errors import StorageError

__all__ = ["OfflineLog", "ViewSpec"]

INGEST = "__ingest"


class ViewSpec:
    """What a join needs of a view: its keys, features and ttl."""

    def __init__(
        self, name: str, keys: Sequence[str], features: Sequence[str], ttl: float | None
    ) -> None:
        self.name, self.keys, self.features, self.ttl = name, list(keys), list(features), ttl


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class OfflineLog:
    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._tables: dict[str, list[pa.Table]] = {}
        self._lock = threading.Lock()

    def _view_dir(self, view: str) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, view)

    def append(self, view: str, table: pa.Table, number: int) -> str | None:
        """Add an ingest's rows; returns the file written (None in memory)."""
        if self.directory is None:
            with self._lock:
                self._tables.setdefault(view, []).append(table)
            return None
        directory = self._view_dir(view)
        os.makedirs(directory, exist_ok=True)
        final = os.path.join(directory, f"{number:012d}-{secrets.token_hex(4)}.parquet")
        temporary = os.path.join(directory, f".tmp-{os.path.basename(final)}")
        try:
            pq.write_table(table, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise StorageError(f"cannot write the offline log of {view!r}: {e}") from e
        return final

    def undo(self, view: str, written: str | None, table: pa.Table) -> None:
        """Take back an append (the online half of an ingest failed)."""
        if written is not None:
            with contextlib.suppress(OSError):
                os.remove(written)
            return
        with self._lock:
            tables = self._tables.get(view, [])
            for i in range(len(tables) - 1, -1, -1):
                if tables[i] is table:
                    del tables[i]
                    break

    def files(self, view: str) -> list[str]:
        if self.directory is None:
            return []
        directory = self._view_dir(view)
        if not os.path.isdir(directory):
            return []
        return sorted(
            os.path.join(directory, name)
            for name in os.listdir(directory)
            if name.endswith(".parquet") and not name.startswith(".")
        )

    def rows(self, view: str) -> int:
        if self.directory is None:
            return sum(t.num_rows for t in self._tables.get(view, []))
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.files(view))

    # queries -----------------------------------------------------------------------------

    def connect(self, spill: str | None = None) -> Any:
        import duckdb

        connection = duckdb.connect(config={"temp_directory": spill or tempfile.gettempdir()})
        return connection

    def source(self, connection: Any, view: str, schema: pa.Schema) -> str | None:
        """A SQL table expression over the view's rows (None when it has none)."""
        if self.directory is None:
            with self._lock:
                tables = list(self._tables.get(view, []))
            if not tables:
                return None
            name = f"offline_{view}"
            connection.register(name, pa.concat_tables(tables, promote_options="default"))
            return _quote(name)
        files = self.files(view)
        if not files:
            return None
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        return f"read_parquet([{listed}], union_by_name = true)"

    def latest_sql(self, source: str, spec: ViewSpec, alias: str) -> str:
        """One row per (entity, event_timestamp): newest created, then latest ingest."""
        keys = ", ".join(_quote(k) for k in spec.keys)
        columns = ", ".join(
            [*(_quote(k) for k in spec.keys), "event_timestamp AS __ts",
             *(_quote(f) for f in spec.features)]
        )  # fmt: skip
        return (
            f"(SELECT {columns} FROM {source} QUALIFY row_number() OVER "
            f"(PARTITION BY {keys}, event_timestamp ORDER BY created_timestamp DESC, "
            f"{INGEST} DESC) = 1) {alias}"
        )

    def join(
        self,
        connection: Any,
        entities: str,
        passthrough: Sequence[str],
        specs: Sequence[ViewSpec],
        sources: dict[str, str | None],
        names: dict[tuple[str, str], str],
        types: dict[tuple[str, str], str],
    ) -> str:
        """The SQL of a point-in-time join of ``entities`` with every view in ``specs``."""
        select = [f"e.{_quote(c)}" for c in passthrough]
        joins: list[str] = []
        for i, spec in enumerate(specs):
            alias = f"v{i}"
            source = sources[spec.name]
            for feature in spec.features:
                output = _quote(names[(spec.name, feature)])
                if source is None:
                    select.append(f"CAST(NULL AS {types[(spec.name, feature)]}) AS {output}")
                    continue
                value = f"{alias}.{_quote(feature)}"
                if spec.ttl is not None:
                    micros = int(spec.ttl * 1_000_000)
                    value = (
                        f"CASE WHEN e.event_timestamp - {alias}.__ts <= "
                        f"INTERVAL {micros} MICROSECONDS THEN {value} END"
                    )
                select.append(f"{value} AS {output}")
            if source is None:
                continue
            on = " AND ".join(f"e.{_quote(k)} = {alias}.{_quote(k)}" for k in spec.keys)
            joins.append(
                f"ASOF LEFT JOIN {self.latest_sql(source, spec, alias)} "
                f"ON {on} AND e.event_timestamp >= {alias}.__ts"
            )
        return f"SELECT {', '.join(select)} FROM {entities} e {' '.join(joins)} ORDER BY e.__row"
