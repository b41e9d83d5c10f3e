"""Feature definitions, in the vocabulary of Feast: entities, fields, views and services."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engramdb.errors import InvalidArgument
from engramdb.features.names import check_name

__all__ = [
    "DTYPES",
    "RESERVED",
    "Bool",
    "Bytes",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "String",
    "UnixTimestamp",
    "split_ref",
]

# dtype name -> Arrow type name (pyarrow is imported only where tables are built)
DTYPES: dict[str, str] = {
    "int32": "int32",
    "int64": "int64",
    "float32": "float32",
    "float64": "float64",
    "string": "string",
    "bool": "bool",
    "bytes": "binary",
    "timestamp": "timestamp[us, tz=UTC]",
    "int64[]": "list<item: int64>",
    "float32[]": "list<item: float>",
    "float64[]": "list<item: double>",
    "string[]": "list<item: string>",
}
Int32, Int64, Float32, Float64 = "int32", "int64", "float32", "float64"
String, Bool, Bytes, UnixTimestamp = "string", "bool", "bytes", "timestamp"

RESERVED = frozenset({"event_timestamp", "created_timestamp"})


@dataclass(frozen=True)
class Field:
    """A feature (or join key) and its type: one of ``DTYPES``."""

    name: str
    dtype: str

    def check(self) -> None:
        check_name(self.name, "field")
        if self.name in RESERVED:
            raise InvalidArgument(f"{self.name!r} is reserved for the timestamps")
        if type(self.dtype) is not str or self.dtype not in DTYPES:
            raise InvalidArgument(f"field {self.name!r}: dtype must be one of {sorted(DTYPES)}")


@dataclass(frozen=True)
class Entity:
    """What features describe (a driver, a user): its name and join key columns."""

    name: str
    join_keys: Sequence[str] = ()
    dtype: str = "int64"  # of the join keys: int64 or string

    def __post_init__(self) -> None:
        object.__setattr__(self, "join_keys", tuple(self.join_keys or (self.name,)))

    def check(self) -> None:
        check_name(self.name, "entity")
        if not self.join_keys:
            raise InvalidArgument(f"entity {self.name!r} needs at least one join key")
        for key in self.join_keys:
            check_name(key, "join key")
            if key in RESERVED:
                raise InvalidArgument(f"join key {key!r} is reserved for the timestamps")
        if len(set(self.join_keys)) != len(self.join_keys):
            raise InvalidArgument(f"entity {self.name!r} lists a join key twice")
        if self.dtype not in ("int64", "string"):
            raise InvalidArgument("entity join keys are int64 or string")


def _seconds(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, datetime.timedelta):
        ttl = ttl.total_seconds()
    if type(ttl) not in (int, float) or not 0 < ttl < math.inf:
        raise InvalidArgument(f"a view ttl is positive seconds or a timedelta, not {ttl!r}")
    return float(ttl)


@dataclass(frozen=True)
class FeatureView:
    """A group of features of the same entities, ingested together.

    ``ttl``: how old a value may be and still be served (online) or joined (offline);
    None for no limit. ``online``: whether ingested rows also go to the online store.
    """

    name: str
    entities: Sequence[Any]  # entity names (Entity objects are accepted and reduced to names)
    schema: Sequence[Field]
    ttl: Any = None
    online: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        names = tuple(e.name if isinstance(e, Entity) else e for e in self.entities)
        object.__setattr__(self, "entities", names)
        object.__setattr__(self, "schema", tuple(self.schema))
        object.__setattr__(self, "ttl", _seconds(self.ttl))

    def check(self) -> None:
        check_name(self.name, "feature view")
        if not self.entities:
            raise InvalidArgument(f"view {self.name!r} needs at least one entity")
        for entity in self.entities:
            check_name(entity, "entity")
        if len(set(self.entities)) != len(self.entities):
            raise InvalidArgument(f"view {self.name!r} lists an entity twice")
        if not self.schema:
            raise InvalidArgument(f"view {self.name!r} needs at least one feature")
        seen: set[str] = set()
        for field in self.schema:
            if not isinstance(field, Field):
                raise InvalidArgument(f"view {self.name!r}: schema takes Field objects")
            field.check()
            if field.name in seen:
                raise InvalidArgument(f"view {self.name!r}: feature {field.name!r} appears twice")
            seen.add(field.name)

    def feature(self, name: str) -> Field:
        for field in self.schema:
            if field.name == name:
                return field
        raise InvalidArgument(f"view {self.name!r} has no feature {name!r}")


@dataclass(frozen=True)
class FeatureService:
    """A named list of features a model uses (``"view:feature"`` references)."""

    name: str
    features: Sequence[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))

    def check(self) -> None:
        check_name(self.name, "feature service")
        if not self.features:
            raise InvalidArgument(f"service {self.name!r} lists no features")
        for ref in self.features:
            split_ref(ref)


def split_ref(ref: object) -> tuple[str, str]:
    """``"view:feature"`` as its two names, each checked by the identifier rule."""
    if type(ref) is not str or ref.count(":") != 1:
        raise InvalidArgument(f"features are 'view:feature', not {ref!r}"[:200])
    view, _, feature = ref.partition(":")
    return check_name(view, "feature view"), check_name(feature, "feature")
