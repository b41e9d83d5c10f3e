"""Input tables: pandas, polars, pyarrow, Parquet paths or rows, as checked Arrow tables.

Everything becomes a pyarrow Table with the join keys, ``event_timestamp`` (UTC, µs),
``created_timestamp`` (filled with the ingest time when absent) and the view's features cast
to their declared types. Anything that does not fit raises ``InvalidArgument`` before a byte
is written.

Timestamps must carry their time zone: timezone-aware datetimes / Arrow timestamps, or ISO
strings with an offset (``2024-05-01T12:00:00Z``, ``...+02:00``). Timezone-naive values and
dates are refused (``InvalidArgument``) instead of being guessed to be UTC: a guess that is
wrong shifts every point-in-time join silently. Localize them first, e.g. pandas
``df["event_timestamp"].dt.tz_localize("UTC")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from engramdb.errors import InvalidArgument
from engramdb.features.definitions import DTYPES

__all__ = ["TS", "arrow_type", "conform", "timestamps", "to_arrow", "to_micros"]

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
            rows = list(data)
            for row in rows:
                if not isinstance(row, Mapping):
                    raise InvalidArgument(
                        f"rows are dicts of column -> value, not {type(row).__name__}"
                    )
            return pa.Table.from_pylist(rows)
    except (
        pa.ArrowException, TypeError, ValueError, AttributeError, KeyError, OverflowError
    ) as e:  # fmt: skip
        raise InvalidArgument(f"cannot read these rows: {e}"[:500]) from None
    raise InvalidArgument(
        f"expected a pandas/polars DataFrame, a pyarrow Table, a Parquet path or a list of "
        f"rows, not {type(data).__name__}"
    )


_NAIVE = (
    "{name} is timezone-naive; engramdb does not guess a zone. Give timezone-aware "
    "timestamps (e.g. pandas .dt.tz_localize('UTC')) or strings with an offset ('...Z')"
)


def timestamps(column: pa.ChunkedArray | pa.Array, name: str) -> pa.ChunkedArray:
    """``column`` as UTC microsecond timestamps; naive timestamps raise ``InvalidArgument``."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    kind = column.type
    try:
        if pa.types.is_timestamp(kind):
            if kind.tz is None:
                raise InvalidArgument(_NAIVE.format(name=name))
            return column.cast(TS)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            try:
                return column.cast(TS)  # parses ISO 8601, and requires a zone offset
            except pa.ArrowInvalid:
                column.cast(pa.timestamp("us"))  # not even a zone-less time: raises
                raise InvalidArgument(_NAIVE.format(name=name)) from None
        if pa.types.is_null(kind):
            return column.cast(TS)
        raise InvalidArgument(
            f"{name} must be timezone-aware timestamps, not {kind} (numbers: say which unit "
            "and zone by converting them first)"
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InvalidArgument(f"{name}: cannot read as timestamps ({e})"[:500]) from None


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
    if len(names) != len(table.column_names):
        raise InvalidArgument("the rows have two columns of the same name")
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
    event = timestamps(table["event_timestamp"], "event_timestamp")
    if event.null_count:
        raise InvalidArgument("event_timestamp has missing values")
    columns["event_timestamp"] = event
    if "created_timestamp" in names:
        created = timestamps(table["created_timestamp"], "created_timestamp")
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
            columns[name] = timestamps(column, name)
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
    """A timestamp (timezone-aware datetime, pandas/Arrow scalar, or epoch seconds) as UTC
    microseconds; a naive one raises ``InvalidArgument``."""
    import datetime
    import math

    if type(value) in (int, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"a time is finite, not {value!r}")
        return int(value * 1_000_000)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise InvalidArgument(_NAIVE.format(name="the time"))
        return int(value.timestamp() * 1_000_000)
    try:
        scalar = pa.scalar(value)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        raise InvalidArgument(f"not a time: {value!r}"[:200]) from None
    stamp = timestamps(pa.array([scalar.as_py()], type=scalar.type), "the time")[0]
    return int(stamp.value)


DTYPE_NAMES = tuple(DTYPES)
