"""Input tables: pandas, polars, pyarrow, Parquet paths or rows, as checked Arrow tables.

Everything becomes a pyarrow Table with the join keys, ``event_timestamp`` (UTC, µs),
``created_timestamp`` (filled with the ingest time when absent) and the view's features cast
to their declared types. Anything that does not fit raises ``InvalidArgument`` before a byte
is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engramdb.errors import InvalidArgument
from engramdb.features.definitions import DTYPES

__all__ = ["TS", "arrow_type", "conform", "to_arrow", "to_micros"]

TS = pa.timestamp("us", tz="UTC")
_INT_KEY = pa.int64()


def arrow_type(dtype: str) -> pa.DataType:
    return {
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "bytes": pa.binary(),
        "timestamp": TS,
        "int64[]": pa.list_(pa.int64()),
        "float32[]": pa.list_(pa.float32()),
        "float64[]": pa.list_(pa.float64()),
        "string[]": pa.list_(pa.string()),
    }[dtype]


def to_arrow(data: Any) -> pa.Table:
    """A pyarrow Table from a pandas/polars frame, an Arrow table, a Parquet path or rows."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, str | os.PathLike):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(os.fspath(data))
        except (OSError, pa.ArrowInvalid) as e:
            raise InvalidArgument(f"cannot read Parquet at {data}: {e}") from None
    module = type(data).__module__.split(".")[0]
    try:
        if module == "pandas":
            return pa.Table.from_pandas(data, preserve_index=False)
        if module == "polars":
            return data.to_arrow()
        if isinstance(data, Mapping):
            return pa.table(dict(data))
        if isinstance(data, Sequence) and not isinstance(data, str | bytes):
            return pa.Table.from_pylist(list(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise InvalidArgument(f"cannot read these rows: {e}") from None
    raise InvalidArgument(
        f"expected a pandas/polars DataFrame, a pyarrow Table, a Parquet path or a list of "
        f"rows, not {type(data).__name__}"
    )


def _timestamps(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    kind = column.type
    try:
        if pa.types.is_timestamp(kind):
            if kind.tz is None:
                column = pc.assume_timezone(column, "UTC")
            return column.cast(TS)
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            raise InvalidArgument(
                f"{name} must be timestamps (datetime), not numbers: say which unit by "
                "converting them first"
            )
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.cast(pc.strptime(column, format="%Y-%m-%dT%H:%M:%S", unit="us"), TS)
        return column.cast(TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InvalidArgument(f"{name}: cannot read as timestamps ({e})") from None


def conform(
    table: pa.Table,
    keys: Sequence[str],
    key_dtype: dict[str, str],
    features: Sequence[tuple[str, str]],
    *,
    now: float,
    require_features: bool = True,
) -> pa.Table:
    """Check and cast ``table`` to ``keys + event_timestamp + created_timestamp + features``.

    Features missing from the table are an error unless ``require_features`` is False, in
    which case they are filled with nulls.
    """
    names = set(table.column_names)
    missing = [k for k in [*keys, "event_timestamp"] if k not in names]
    if missing:
        raise InvalidArgument(f"the rows need columns {missing} (join keys and event_timestamp)")
    if table.num_rows == 0:
        raise InvalidArgument("no rows to ingest")
    columns: dict[str, pa.ChunkedArray] = {}
    for key in keys:
        column = table[key]
        want = _INT_KEY if key_dtype.get(key, "int64") == "int64" else pa.string()
        try:
            column = column.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise InvalidArgument(f"join key {key!r} must be {want}, got {column.type}") from None
        if column.null_count:
            raise InvalidArgument(f"join key {key!r} has missing values")
        columns[key] = column
    event = _timestamps(table["event_timestamp"], "event_timestamp")
    if event.null_count:
        raise InvalidArgument("event_timestamp has missing values")
    columns["event_timestamp"] = event
    if "created_timestamp" in names:
        created = _timestamps(table["created_timestamp"], "created_timestamp")
        if created.null_count:
            raise InvalidArgument("created_timestamp has missing values")
    else:
        stamp = pa.scalar(int(now * 1_000_000), type=pa.int64()).cast(TS)
        created = pa.chunked_array(
            [pa.array([stamp.value] * table.num_rows, type=pa.int64())]
        ).cast(TS)
    columns["created_timestamp"] = created
    for name, dtype in features:
        if name not in names:
            if require_features:
                raise InvalidArgument(f"the rows lack feature column {name!r}")
            columns[name] = pa.chunked_array([pa.nulls(table.num_rows, arrow_type(dtype))])
            continue
        column = table[name]
        want = arrow_type(dtype)
        if dtype == "timestamp":
            columns[name] = _timestamps(column, name)
            continue
        if column.type != want:
            if pa.types.is_floating(column.type) and pa.types.is_integer(want):
                raise InvalidArgument(f"feature {name!r} is {dtype}, got {column.type}")
            try:
                column = column.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InvalidArgument(
                    f"feature {name!r} must be {dtype}, got {column.type}"
                ) from None
        columns[name] = column
    known = {*keys, "event_timestamp", "created_timestamp", *(n for n, _ in features)}
    extra = sorted(names - known)
    if extra:
        raise InvalidArgument(f"unknown columns {extra} (not in the view's schema)")
    return pa.table(columns)


def to_micros(value: Any) -> int:
    """A timestamp (datetime, pandas/Arrow scalar, or epoch seconds) as UTC microseconds."""
    import datetime

    if isinstance(value, int | float):
        return int(value * 1_000_000)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1_000_000)
    scalar = pa.scalar(value)
    return int(_timestamps(pa.chunked_array([[scalar.as_py()]]), "timestamp")[0].value)


DTYPE_NAMES = tuple(DTYPES)
