"""Metadata filters: a small JSON-shaped language, validated once, evaluated two ways.

The language (the shape Chroma and MongoDB users already write)::

    {"lang": "en"}                              equality (several fields: all must hold)
    {"year": {"$gte": 2020, "$lt": 2024}}       $eq $ne $gt $gte $lt $lte $in $nin
    {"$and": [f, ...]}  {"$or": [f, ...]}  {"$not": f}

Rules: ``$gt``-style comparisons take numbers (or, all of one kind, strings); ``$in``/``$nin``
take a list; a missing field matches only ``$ne``/``$nin``/``$not`` of a condition. Bad
filters raise ``InvalidArgument`` before any search runs.

``compile_filter`` returns a ``Filter`` with two evaluators: ``matches(metadata)`` for one
item, and ``mask(columns)`` that evaluates over a ``Columns`` store with numpy, producing the
bitmap the vector index searches with (so filtering happens inside the native graph search,
never after it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from engramdb.errors import InvalidArgument

__all__ = ["Columns", "Filter", "compile_filter"]

_SCALAR = (str, int, float, bool)
_COMPARE = {"$gt", "$gte", "$lt", "$lte"}
_OPS = {"$eq", "$ne", "$in", "$nin"} | _COMPARE
_MISSING = object()
# Deeper filters are refused: evaluation recurses once per level, and no real filter needs
# more (a client sent one 2,000 levels deep to exhaust the interpreter's stack).
MAX_FILTER_DEPTH = 32


class Columns:
    """Metadata of every label of an index, stored column by column.

    ``objects[field]`` holds each label's value (``None`` when absent); ``numbers[field]`` is
    the float64 view used for range comparisons (NaN when absent or not a number). Rows grow
    in chunks; freed labels are cleared.
    """

    def __init__(self) -> None:
        self.size = 0
        self.objects: dict[str, np.ndarray] = {}
        self.numbers: dict[str, np.ndarray] = {}
        # field -> str value -> labels holding it: equality on a string (a user or tenant
        # scope, the common filter) costs its matches, not a comparison of every label
        # (~1 ms at 100k labels, most of a memory add when it was).
        self.postings: dict[str, dict[str, set[int]]] = {}

    def _ensure(self, label: int) -> None:
        if label < self.size:
            return
        grown = max(label + 1, self.size * 2, 1024)
        for field, column in self.objects.items():
            wider = np.empty(grown, dtype=object)
            wider[: self.size] = column
            self.objects[field] = wider
        for field, column in self.numbers.items():
            wider_n = np.full(grown, np.nan)
            wider_n[: self.size] = column
            self.numbers[field] = wider_n
        self.size = grown

    def set(self, label: int, metadata: Mapping[str, Any] | None) -> None:
        self._ensure(label)
        metadata = metadata or {}
        for field in metadata:
            if field not in self.objects:
                self.objects[field] = np.empty(self.size, dtype=object)
                self.numbers[field] = np.full(self.size, np.nan)
        for field, column in self.objects.items():
            value = metadata.get(field)
            self._unpost(field, column[label], label)
            column[label] = value
            if type(value) is str:
                self.postings.setdefault(field, {}).setdefault(value, set()).add(label)
            numeric = value if type(value) in (int, float) else None
            self.numbers[field][label] = np.nan if numeric is None else numeric

    def clear(self, label: int) -> None:
        if label >= self.size:
            return
        for field, column in self.objects.items():
            self._unpost(field, column[label], label)
            column[label] = None
        for numbers in self.numbers.values():
            numbers[label] = np.nan

    def _unpost(self, field: str, old: Any, label: int) -> None:
        if type(old) is str:
            holders = self.postings[field][old]
            holders.discard(label)
            if not holders:
                del self.postings[field][old]


Mask = Callable[[Columns, int], np.ndarray]
Match = Callable[[Mapping[str, Any]], bool]


class Filter:
    """A validated filter. ``mask(columns, n)`` is a bool array over labels ``0..n-1``."""

    def __init__(self, spec: Mapping[str, Any], match: Match, mask: Mask) -> None:
        self.spec = spec
        self.matches = match
        self._mask = mask

    def mask(self, columns: Columns, n: int) -> np.ndarray:
        return self._mask(columns, n)

    def __repr__(self) -> str:
        return f"Filter({self.spec!r})"


def compile_filter(spec: Mapping[str, Any] | None) -> Filter | None:
    """Validate ``spec`` and build its evaluators; None for no filter."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgument(f"a filter must be a non-empty mapping, not {spec!r}")
    match, mask = _compile(spec, 1)
    return Filter(spec, match, mask)


def _compile(spec: Any, depth: int) -> tuple[Match, Mask]:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidArgument(f"a filter may nest at most {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgument(f"a filter clause must be a non-empty mapping, not {spec!r}")
    parts: list[tuple[Match, Mask]] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidArgument(f"{key} takes a non-empty list of filters")
            subs = [_compile(v, depth + 1) for v in value]
            parts.append(_all(subs) if key == "$and" else _any(subs))
        elif key == "$not":
            parts.append(_negate(_compile(value, depth + 1)))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidArgument(f"unknown filter operator {key!r}")
        elif isinstance(key, str) and key:
            parts.append(_field(key, value))
        else:
            raise InvalidArgument(f"filter field names must be non-empty strings, not {key!r}")
    return parts[0] if len(parts) == 1 else _all(parts)


def _all(parts: list[tuple[Match, Mask]]) -> tuple[Match, Mask]:
    def match(m: Mapping[str, Any]) -> bool:
        return all(p[0](m) for p in parts)

    def mask(c: Columns, n: int) -> np.ndarray:
        out = parts[0][1](c, n)
        for p in parts[1:]:
            out = out & p[1](c, n)
        return out

    return match, mask


def _any(parts: list[tuple[Match, Mask]]) -> tuple[Match, Mask]:
    def match(m: Mapping[str, Any]) -> bool:
        return any(p[0](m) for p in parts)

    def mask(c: Columns, n: int) -> np.ndarray:
        out = parts[0][1](c, n)
        for p in parts[1:]:
            out = out | p[1](c, n)
        return out

    return match, mask


def _negate(part: tuple[Match, Mask]) -> tuple[Match, Mask]:
    inner_match, inner_mask = part
    return (lambda m: not inner_match(m)), (lambda c, n: ~inner_mask(c, n))


def _check_scalar(op: str, value: Any) -> None:
    if type(value) not in _SCALAR or (type(value) is float and math.isnan(value)):
        raise InvalidArgument(f"{op} compares with a str, number or bool, not {value!r}")


def _field(name: str, condition: Any) -> tuple[Match, Mask]:
    if not isinstance(condition, Mapping):
        _check_scalar("$eq", condition)
        return _op(name, "$eq", condition)
    if not condition:
        raise InvalidArgument(f"empty condition for field {name!r}")
    parts = [_op(name, op, value) for op, value in condition.items()]
    return parts[0] if len(parts) == 1 else _all(parts)


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; in a filter a bool matches only a bool.
    return a == b and (type(a) is bool) == (type(b) is bool)


def _op(name: str, op: Any, value: Any) -> tuple[Match, Mask]:
    if op not in _OPS:
        raise InvalidArgument(f"unknown operator {op!r} for field {name!r}")
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple) or not value:
            raise InvalidArgument(f"{op} takes a non-empty list, not {value!r}")
        for item in value:
            _check_scalar(op, item)
        options = list(value)

        def inside(m: Mapping[str, Any]) -> bool:
            found = m.get(name, _MISSING)
            return found is not _MISSING and any(_equal(found, o) for o in options)

        def inside_mask(c: Columns, n: int) -> np.ndarray:
            out = np.zeros(n, dtype=bool)
            if name not in c.objects:
                return out
            for option in options:
                out |= _eq_mask(c, name, n, option)
            return out

        if op == "$in":
            return inside, inside_mask
        return (lambda m: not inside(m)), (lambda c, n: ~inside_mask(c, n))
    _check_scalar(op, value)
    if op in ("$eq", "$ne"):

        def equal(m: Mapping[str, Any]) -> bool:
            found = m.get(name, _MISSING)
            return found is not _MISSING and _equal(found, value)

        def equal_mask(c: Columns, n: int) -> np.ndarray:
            if name not in c.objects:
                return np.zeros(n, dtype=bool)
            return _eq_mask(c, name, n, value)

        if op == "$eq":
            return equal, equal_mask
        return (lambda m: not equal(m)), (lambda c, n: ~equal_mask(c, n))
    # ordering comparisons
    if type(value) is bool:
        raise InvalidArgument(f"{op} needs a number or a str, not a bool")
    compare: Callable[[Any, Any], bool] = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }[op]
    numeric = type(value) in (int, float)

    def ordered(m: Mapping[str, Any]) -> bool:
        found = m.get(name, _MISSING)
        if found is _MISSING or type(found) is bool:
            return False
        if numeric:
            return type(found) in (int, float) and compare(found, value)
        return type(found) is str and compare(found, value)

    def ordered_mask(c: Columns, n: int) -> np.ndarray:
        if numeric:
            numbers = c.numbers.get(name)
            if numbers is None:
                return np.zeros(n, dtype=bool)
            with np.errstate(invalid="ignore"):
                return np.asarray(compare(numbers[:n], value), dtype=bool)
        column = c.objects.get(name)
        if column is None:
            return np.zeros(n, dtype=bool)
        return np.fromiter(
            (type(v) is str and compare(v, value) for v in column[:n]), dtype=bool, count=n
        )

    return ordered, ordered_mask


def _eq_mask(c: Columns, name: str, n: int, value: Any) -> np.ndarray:
    if type(value) in (int, float):
        # Numbers compare by value (1 == 1.0) in the float column, where bools are NaN.
        return np.asarray(c.numbers[name][:n] == value, dtype=bool)
    if type(value) is str:
        out = np.zeros(n, dtype=bool)
        holders = c.postings.get(name, {}).get(value)
        if holders:
            labels = np.fromiter(holders, dtype=np.int64, count=len(holders))
            out[labels[labels < n]] = True
        return out
    view = c.objects[name][:n]
    if type(value) is bool:
        return np.fromiter((v is value for v in view), dtype=bool, count=n)
    return np.asarray(view == value, dtype=bool)
