"""The feature store over the network (sync client).

Tables travel as Arrow IPC streams. Large inputs are split so no request passes the
server's frame limits: an ingest goes in chunks (each atomic on its own), a historical join
in chunks of entity rows (point-in-time joins are row by row, so the chunks' results simply
concatenate in order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engramdb.features.definitions import Entity, FeatureService, FeatureView
from engramdb.features.online import OnlineResponse

if TYPE_CHECKING:  # pyarrow and the store load only when features are used
    from engramdb.features.store import HistoricalResult, IngestResult, SkewReport

__all__ = ["RESULTS", "RemoteFeatureStore"]


def to_arrow(data: Any) -> Any:
    from engramdb.features.frames import to_arrow as convert

    return convert(data)


def _view(raw: Any) -> FeatureView:
    import msgspec

    return msgspec.convert(raw, FeatureView)


def _report(raw: Any) -> SkewReport:
    from engramdb.features.store import SkewReport

    return SkewReport(**raw)


_KIND = {Entity: "entity", FeatureView: "view", FeatureService: "service"}
_CHUNK_BYTES = 1 << 20  # well under the server's 2 MiB bulk limit
_JOIN_ROWS = 20_000


def _same(raw: Any) -> Any:
    return raw


RESULTS: dict[str, tuple[Any, bool]] = {
    "features.apply": (lambda raw: [tuple(r) for r in raw], False),
    "features.ingest": (_same, False),
    "features.materialize": (_same, False),
    "features.get_online_features": (
        lambda raw: OnlineResponse(raw["columns"], raw["statuses"]),
        True,
    ),
    "features.get_historical_features": (_same, True),
    "features.validate_online": (_report, True),
    "features.list_feature_views": (lambda raw: [_view(v) for v in raw], True),
}


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _chunks(table: Any, budget: int) -> list[Any]:
    """Slices of ``table`` whose IPC encoding stays under ``budget`` bytes."""
    if table.num_rows == 0:
        return [table]
    per_row = max(1, table.nbytes // table.num_rows)
    rows = max(1, budget // (2 * per_row))
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


class RemoteFeatureStore:
    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"features.{method}", args, kwargs)

    def apply(self, definitions: Sequence[Any]) -> list[tuple[str, str, int]]:
        if isinstance(definitions, Entity | FeatureView | FeatureService):
            definitions = [definitions]
        tagged = [{"kind": _KIND[type(d)], **dataclasses.asdict(d)} for d in definitions]
        return self._call("apply", tagged)  # type: ignore[no-any-return]

    def ingest(self, view: str, data: Any) -> IngestResult:
        """Send rows in chunks under the frame limit; each chunk is one atomic ingest."""
        rows = written = 0
        for chunk in _chunks(to_arrow(data), _CHUNK_BYTES):
            reply = self._call("ingest", view, _ipc(chunk))
            rows += reply["rows"]
            written += reply["online_written"]
        from engramdb.features.store import IngestResult

        return IngestResult(view, rows, written, None)

    def push(self, view: str, rows: Sequence[dict[str, Any]]) -> IngestResult:
        return self.ingest(view, [rows] if isinstance(rows, dict) else list(rows))

    def materialize(self, views: Sequence[str], start: Any = None, end: Any = None) -> int:
        return self._call("materialize", list(views), start, end)  # type: ignore[no-any-return]

    def get_online_features(
        self, features: Sequence[str] | str, entity_rows: Sequence[dict[str, Any]],
        *, full_feature_names: bool = False,
    ) -> OnlineResponse:  # fmt: skip
        return self._call(  # type: ignore[no-any-return]
            "get_online_features",
            features if isinstance(features, str) else list(features),
            list(entity_rows),
            full_feature_names=full_feature_names,
        )

    def get_historical_features(
        self, entity_df: Any, features: Sequence[str] | str,
        *, full_feature_names: bool = False, output: str | None = None,
    ) -> HistoricalResult:  # fmt: skip
        import pyarrow as pa

        table = to_arrow(entity_df)
        wanted = features if isinstance(features, str) else list(features)
        pieces = []
        for start in range(0, max(1, table.num_rows), _JOIN_ROWS):
            chunk = table.slice(start, _JOIN_ROWS)
            raw = self._call(
                "get_historical_features", _ipc(chunk), wanted,
                full_feature_names=full_feature_names,
            )  # fmt: skip
            pieces.append(pa.ipc.open_stream(raw).read_all())
        result = pa.concat_tables(pieces)
        from engramdb.features.store import HistoricalResult

        if output is not None:
            import pyarrow.parquet as pq

            pq.write_table(result, output)
            return HistoricalResult(None, output)
        return HistoricalResult(result, None)

    def list_feature_views(self) -> list[FeatureView]:
        return self._call("list_feature_views")  # type: ignore[no-any-return]

    def get_feature_view(self, name: str) -> FeatureView:
        from engramdb.errors import NotFound

        for view in self.list_feature_views():
            if view.name == name:
                return view
        raise NotFound(f"no feature view {name!r}; apply() it first")

    def validate_online(
        self, view: str, *, sample: int = 100, seed: int | None = None
    ) -> SkewReport:
        return self._call("validate_online", view, sample=sample, seed=seed)  # type: ignore[no-any-return]
