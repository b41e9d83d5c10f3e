"""The feature store: online features and point-in-time training data from one definition.

Definitions load eagerly; the store (pyarrow, DuckDB) only when used.
"""

from typing import TYPE_CHECKING, Any

from engramdb.features.definitions import (
    DTYPES,
    Bool,
    Bytes,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)
from engramdb.features.model import HistoricalResult, IngestResult, OnlineResponse, SkewReport

if TYPE_CHECKING:
    from engramdb.features.store import FeatureStore

__all__ = [
    "DTYPES",
    "Bool",
    "Bytes",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "Float32",
    "Float64",
    "HistoricalResult",
    "IngestResult",
    "Int32",
    "Int64",
    "OnlineResponse",
    "SkewReport",
    "String",
    "UnixTimestamp",
]


def __getattr__(name: str) -> Any:
    if name == "FeatureStore":
        from engramdb.features.store import FeatureStore

        return FeatureStore
    raise AttributeError(name)
