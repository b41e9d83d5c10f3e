"""Operations for ``RecordSet.operate``, applied atomically and in order to one record.

>>> from engramdb import ops
>>> users.operate("u1", [ops.incr("visits"), ops.list_append("seen", "p9", max_len=50),
...                      ops.read("visits")])
[12, 50, {'visits': 12}]
"""

from __future__ import annotations

from typing import Any

from engramdb.records.ops import (
    DeleteBin,
    Incr,
    ListAppend,
    ListTrim,
    MapPut,
    MapRemove,
    Op,
    Read,
    Touch,
    Write,
)

__all__ = [
    "Op",
    "delete_bin",
    "incr",
    "list_append",
    "list_trim",
    "map_put",
    "map_remove",
    "read",
    "touch",
    "write",
]


def read(*bins: str) -> Read:
    """Result: ``{bin: value}`` for the named bins (None when absent), or every bin."""
    return Read(bins)


def write(bin: str, value: Any) -> Write:
    """Set a bin. Result: None."""
    return Write(bin, value)


def delete_bin(bin: str) -> DeleteBin:
    """Remove a bin. Result: None."""
    return DeleteBin(bin)


def incr(bin: str, by: int | float = 1) -> Incr:
    """Add to a numeric bin (a missing bin counts as 0). Result: the new value."""
    return Incr(bin, by)


def list_append(bin: str, value: Any, max_len: int | None = None) -> ListAppend:
    """Append to a list bin, dropping the oldest items beyond ``max_len``. Result: new length."""
    return ListAppend(bin, value, max_len)


def list_trim(bin: str, start: int, stop: int | None = None) -> ListTrim:
    """Keep ``items[start:stop]`` (Python slice rules). Result: new length."""
    return ListTrim(bin, start, stop)


def map_put(bin: str, key: str | int | bytes, value: Any) -> MapPut:
    """Set one key of a map bin. Result: the map's new size."""
    return MapPut(bin, key, value)


def map_remove(bin: str, key: str | int | bytes) -> MapRemove:
    """Remove one key of a map bin. Result: the removed value, or None."""
    return MapRemove(bin, key)


def touch(ttl: float) -> Touch:
    """Set the record to expire ``ttl`` seconds from now. Result: None."""
    return Touch(ttl)
