"""Operations for ``operate``: plain data, applied in order to one record.

Each operation is a frozen msgspec struct tagged with its name, so a list of them encodes to
msgpack as it is (the network client sends them unchanged). ``apply_ops`` is pure: it takes
the record's bins as they are and returns the new bins and each operation's result, never
touching storage. Containers are copied on write, so a ``read`` result keeps the value it saw
even when a later operation in the same call changes that bin, and a failing operation leaves
the caller's bins untouched.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from engramdb.errors import InvalidArgument, NotFound
from engramdb.records.codec import check_bin_name, check_value
from engramdb.records.limits import Limits

__all__ = [
    "DeleteBin",
    "Incr",
    "ListAppend",
    "ListTrim",
    "MapPut",
    "MapRemove",
    "Op",
    "Read",
    "Touch",
    "Write",
    "apply_ops",
]

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 63) - 1


class Read(msgspec.Struct, frozen=True, tag="read"):
    bins: tuple[str, ...] = ()


class Write(msgspec.Struct, frozen=True, tag="write"):
    bin: str
    value: Any


class DeleteBin(msgspec.Struct, frozen=True, tag="delete_bin"):
    bin: str


class Incr(msgspec.Struct, frozen=True, tag="incr"):
    bin: str
    by: int | float = 1


class ListAppend(msgspec.Struct, frozen=True, tag="list_append"):
    bin: str
    value: Any
    max_len: int | None = None


class ListTrim(msgspec.Struct, frozen=True, tag="list_trim"):
    bin: str
    start: int
    stop: int | None = None


class MapPut(msgspec.Struct, frozen=True, tag="map_put"):
    bin: str
    key: Any  # str, int or bytes (msgspec cannot decode that union); checked when applied
    value: Any


class MapRemove(msgspec.Struct, frozen=True, tag="map_remove"):
    bin: str
    key: Any  # str, int or bytes (msgspec cannot decode that union); checked when applied


class Touch(msgspec.Struct, frozen=True, tag="touch"):
    ttl: float


Op = Read | Write | DeleteBin | Incr | ListAppend | ListTrim | MapPut | MapRemove | Touch

_OP_TYPES = (Read, Write, DeleteBin, Incr, ListAppend, ListTrim, MapPut, MapRemove, Touch)


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _wrong_type(op: str, bin_name: str, want: str, value: object) -> InvalidArgument:
    return InvalidArgument(f"{op} on bin {bin_name!r}: it holds {type(value).__name__}, not {want}")


def _map_key(key: object) -> str | int | bytes:
    if type(key) is int:
        if not _INT_MIN <= key <= (1 << 64) - 1:
            raise InvalidArgument(f"map key {key} does not fit in 64 bits")
        return key
    if type(key) is str or type(key) is bytes:
        return key
    raise InvalidArgument(f"map keys must be str, int or bytes, not {type(key).__name__}")


class Applied:
    """The outcome of ``apply_ops``: new bins, per-op results, and what changed."""

    __slots__ = ("bins", "results", "touched_ttl", "wrote")

    def __init__(self, bins: dict[str, Any]) -> None:
        self.bins = bins
        self.results: list[Any] = []
        self.wrote = False
        self.touched_ttl: float | None = None


def apply_ops(
    bins: dict[str, Any] | None, ops: list[Op] | tuple[Op, ...], limits: Limits
) -> Applied:
    """Apply ``ops`` in order to ``bins`` (None when the record does not exist).

    Raises ``InvalidArgument`` on an unknown op, a bad argument, or a bin of the wrong type;
    the caller's ``bins`` are never modified.
    """
    if not isinstance(ops, list | tuple) or not ops:
        raise InvalidArgument("operate needs a non-empty list of operations")
    exists = bins is not None
    state = Applied(dict(bins) if bins is not None else {})
    current = state.bins
    results = state.results
    for op in ops:
        kind = type(op)
        if kind is Read:
            names = op.bins  # type: ignore[union-attr]
            if names:
                results.append({name: current.get(name) for name in names})
            else:
                results.append(dict(current))
            continue
        if kind not in _OP_TYPES:
            raise InvalidArgument(f"unknown operation {op!r}; build operations with engramdb.ops")
        if kind is Touch:
            ttl = op.ttl  # type: ignore[union-attr]
            if not _is_number(ttl) or not 0 < ttl < math.inf:
                raise InvalidArgument(f"touch ttl must be a positive number, not {ttl!r}")
            if not exists and not state.wrote:
                raise NotFound("touch: the record does not exist")
            state.touched_ttl = float(ttl)
            state.wrote = True
            results.append(None)
            continue
        name = check_bin_name(op.bin, limits)  # type: ignore[union-attr]
        old = current.get(name)
        if kind is Write:
            value = op.value  # type: ignore[union-attr]
            check_value(value, limits, name)
            # Stored tuples read back as lists; later ops in this call must see a list too.
            current[name] = list(value) if type(value) is tuple else value
            results.append(None)
        elif kind is DeleteBin:
            current.pop(name, None)
            results.append(None)
        elif kind is Incr:
            by = op.by  # type: ignore[union-attr]
            if not _is_number(by):
                raise InvalidArgument(f"incr by must be an int or float, not {by!r}")
            if old is None:
                old = 0
            elif not _is_number(old):
                raise _wrong_type("incr", name, "a number", old)
            new = old + by
            if type(new) is int and not _INT_MIN <= new <= _INT_MAX:
                raise InvalidArgument(f"incr on bin {name!r} would overflow a signed 64-bit int")
            current[name] = new
            results.append(new)
        elif kind is ListAppend:
            max_len = op.max_len  # type: ignore[union-attr]
            if max_len is not None and (type(max_len) is not int or max_len < 1):
                raise InvalidArgument(
                    f"list_append max_len must be a positive int, not {max_len!r}"
                )
            if old is None:
                old = []
            elif type(old) is not list:
                raise _wrong_type("list_append", name, "a list", old)
            check_value(op.value, limits, name, 1)  # type: ignore[union-attr]
            items = [*old, op.value]  # type: ignore[union-attr]
            if max_len is not None and len(items) > max_len:
                items = items[len(items) - max_len :]
            current[name] = items
            results.append(len(items))
        elif kind is ListTrim:
            start, stop = op.start, op.stop  # type: ignore[union-attr]
            if type(start) is not int or (stop is not None and type(stop) is not int):
                raise InvalidArgument("list_trim start and stop must be ints (stop may be None)")
            if old is None:
                results.append(0)
                continue
            if type(old) is not list:
                raise _wrong_type("list_trim", name, "a list", old)
            items = old[start:stop]
            current[name] = items
            results.append(len(items))
        elif kind is MapPut:
            key = _map_key(op.key)  # type: ignore[union-attr]
            if old is None:
                old = {}
            elif type(old) is not dict:
                raise _wrong_type("map_put", name, "a map", old)
            check_value(op.value, limits, name, 1)  # type: ignore[union-attr]
            mapping = dict(old)
            mapping[key] = op.value  # type: ignore[union-attr]
            current[name] = mapping
            results.append(len(mapping))
        elif kind is MapRemove:
            key = _map_key(op.key)  # type: ignore[union-attr]
            if old is None:
                results.append(None)
                continue
            if type(old) is not dict:
                raise _wrong_type("map_remove", name, "a map", old)
            mapping = dict(old)
            results.append(mapping.pop(key, None))
            current[name] = mapping
        state.wrote = True
    if not exists and not state.wrote:
        state.bins = None  # type: ignore[assignment]
    return state
