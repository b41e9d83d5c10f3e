"""Public result types of the feature store (what clients import; no pyarrow until used).

Printing a result shows its data: a short table of the first rows, not an address.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engramdb.errors import StorageError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "HistoricalResult",
    "IngestResult",
    "OnlineResponse",
    "ParquetOutput",
    "SkewReport",
    "preview",
]

PREVIEW_ROWS = 5
_CELL = 24


def _cell(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def preview(columns: dict[str, list[Any]], total: int, title: str) -> str:
    """``title``, then the first rows of ``columns`` as an aligned text table."""
    names = list(columns)
    shown = min(total, PREVIEW_ROWS)
    cells = [[_cell(columns[n][i]) for n in names] for i in range(shown)]
    widths = [max([len(n), *(len(row[j]) for row in cells)]) for j, n in enumerate(names)]
    lines = [title, "  ".join(n.ljust(w) for n, w in zip(names, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    if total > shown:
        lines.append(f"… {total - shown} more rows")
    return "\n".join(line.rstrip() for line in lines)


class OnlineResponse:
    """The answer of ``get_online_features``: columns (join keys, then features, in the
    order asked) and, per feature, a status per row (PRESENT / NOT_FOUND / OUTSIDE_MAX_AGE)."""

    def __init__(self, columns: dict[str, list[Any]], statuses: dict[str, list[str]]) -> None:
        self.columns = columns
        self.statuses = statuses

    def to_dict(self) -> dict[str, list[Any]]:
        return dict(self.columns)

    def to_arrow(self) -> pa.Table:
        import pyarrow as pa

        return pa.table(self.columns)

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def __repr__(self) -> str:
        rows = len(next(iter(self.columns.values()), []))
        title = f"OnlineResponse: {rows} rows x {len(self.statuses)} features"
        missing = sum(s != "PRESENT" for column in self.statuses.values() for s in column)
        if missing:
            title += f" ({missing} values not present)"
        return preview(self.columns, rows, title)


@dataclass(frozen=True)
class IngestResult:
    """What an ingest wrote: rows, online entities written, and (embedded) the offline file."""

    view: str
    rows: int
    online_written: int
    offline_file: str | None


@dataclass
class SkewReport:
    """``validate_online``: entities checked and every value where online != offline."""

    view: str
    checked: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


class HistoricalResult:
    """Training data: a pyarrow Table (or, with ``output=``, the Parquet file written)."""

    def __init__(self, table: pa.Table | None, path: str | None) -> None:
        self._table = table
        self.path = path

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            import pyarrow.parquet as pq

            assert self.path is not None
            return pq.read_table(self.path)
        return self._table

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    @property
    def num_rows(self) -> int:
        return int(self.to_arrow().num_rows)

    def __repr__(self) -> str:
        table = self.to_arrow()
        head = table.slice(0, PREVIEW_ROWS).to_pydict()
        where = f" (in {self.path})" if self.path is not None else ""
        title = f"HistoricalResult: {table.num_rows} rows x {table.num_columns} columns{where}"
        return preview(head, table.num_rows, title)


class ParquetOutput:
    """A Parquet file written beside its final path and renamed into place when complete."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path)
        fd, self.temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".partial"
        )
        self.handle = os.fdopen(fd, "wb")
        self.writer: Any = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.handle, table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def commit(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.temporary, self.path)
        except OSError as e:
            self.abort()
            raise StorageError(f"cannot write {self.path!r}: {e}") from e

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer is not None:
                self.writer.close()
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            os.remove(self.temporary)
