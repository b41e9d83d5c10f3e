"""Metadata filters: a small JSON-shaped language, validated once, evaluated two ways.

The language (the shape Chroma and MongoDB users already write)::

    {"lang": "en"}                              equality (several fields: all must hold)
    {"year": {"$gte": 2020, "$lt": 2024}}       $eq $ne $gt $gte $lt $lte $in $nin
    {"tags": {"$contains": "ai"}}               list membership
    {"source": {"$exists": True}}               the field is there (any value, None too)
    {"path": {"$prefix": "docs/"}}              a str starting with the prefix
    {"author.name": "ada"}                      a dotted path into nested maps
    {"$and": [f, ...]}  {"$or": [f, ...]}  {"$not": f}

Values: a filter compares with str, int, float, bool or a timezone-aware ``datetime``
(a naive one is refused: attach a timezone). Rules:

- Kinds never mix: a number equals a number (``1 == 1.0``), never a bool or a str; a
  datetime equals the same instant in any timezone. ``$gt``-style comparisons order numbers,
  strs (by code point) or datetimes (as instants), each only against its own kind.
- A list-valued field matches when **any element** does (as in MongoDB): ``{"tags": "a"}``
  and ``{"tags": {"$in": ["a", "b"]}}`` match ``{"tags": ["a", "c"]}``, and so do ranges and
  ``$prefix`` when some element satisfies them. ``$ne``/``$nin`` are the exact negations of
  ``$eq``/``$in``: ``{"tags": {"$ne": "a"}}`` excludes every item whose tags hold ``"a"``.
- ``$contains`` matches only a list holding an equal element. It is list membership, never a
  substring test: ``{"title": {"$contains": "ai"}}`` does not match the str ``"ai"``.
- ``$prefix`` takes a str and matches strs (or list elements) starting with it.
- A missing field matches only ``$ne``, ``$nin``, ``$exists: false`` and ``$not`` of a
  condition.
- A name with dots is a path into nested maps first: ``"author.name"`` reads
  ``metadata["author"]["name"]``. Only when that path does not exist (a step is missing or
  not a map) is it read as a literal top-level key ``"author.name"``. Paths go through
  maps, not lists; keys holding a dot below the top level cannot be addressed.

Bad filters raise ``InvalidArgument`` before any search runs; filters nest at most
``MAX_FILTER_DEPTH`` levels.

``compile_filter`` returns a ``Filter`` with two evaluators: ``matches(metadata)`` for one
item, and ``mask(columns, n)`` that evaluates over a ``Columns`` store with numpy, producing
the bitmap the vector index searches with (so filtering happens inside the native graph
search, never after it). The two must agree on every input (a property test checks it).
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from engramdb.errors import InvalidArgument
from engramdb.records.codec import check_value
from engramdb.records.limits import DEFAULT_LIMITS

__all__ = ["MAX_FILTER_DEPTH", "Columns", "Filter", "compile_filter", "flatten", "resolver"]

# The kinds a filter compares; values of other types (None, bytes, maps, arrays) only exist.
_KINDS: dict[type, str] = {
    str: "str",
    bool: "bool",
    int: "num",
    float: "num",
    datetime.datetime: "time",
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
# The strict form of each comparison: where float64 rounding may tie two different ints,
# the strict one is certain and the ties are settled exactly (see _num_range).
_STRICT = {"$gt": "$gt", "$gte": "$gt", "$lt": "$lt", "$lte": "$lt"}
_OPS = {"$eq", "$ne", "$in", "$nin", "$contains", "$exists", "$prefix"} | set(_COMPARE)
_MISSING: Any = object()
# Deeper filters are refused: evaluation recurses once per level, and no real filter needs
# more (a client sent one 2,000 levels deep to exhaust the interpreter's stack).
MAX_FILTER_DEPTH = 32
# A dotted path has at most this many steps: a top-level key and the 32 levels of nesting
# a stored value may have. Longer names are only ever literal keys.
_MAX_STEPS = 33
_EXACT = 1 << 53  # ints beyond this may not survive the float64 column
_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1
_NO_TIME = np.iinfo(np.int64).min
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def _micros(value: datetime.datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact, and fits int64)."""
    return (value - _EPOCH) // _MICROSECOND


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python, and numpy arrays compare element-wise: a filter compares only
    # values of one kind.
    kind = _KINDS.get(type(a))
    return kind is not None and kind == _KINDS.get(type(b)) and bool(a == b)


# paths ------------------------------------------------------------------------------------


def resolver(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """The function reading ``path`` from metadata (the module docs say how): it returns
    the value, or a private sentinel when the field is missing."""
    if "." not in path:
        return lambda m: m.get(path, _MISSING)
    steps = path.split(".")
    if len(steps) > _MAX_STEPS:
        return lambda m: m.get(path, _MISSING)

    def resolve(m: Mapping[str, Any]) -> Any:
        node = m.get(steps[0], _MISSING)
        for step in steps[1:]:
            if type(node) is not dict:
                return m.get(path, _MISSING)
            node = node.get(step, _MISSING)
        return m.get(path, _MISSING) if node is _MISSING else node

    return resolve


def flatten(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Every path a filter can read in ``metadata`` and its value, resolved exactly as
    ``resolver`` does (nested maps first, then literal dotted keys).

    Metadata with nothing nested is returned itself, not copied (its paths are its keys):
    the columns keep it for every label, beside the index's own reference to it, so a copy
    would double the memory of every flat item. Callers must not change the result."""
    if type(metadata) is dict and not any(
        type(k) is not str or type(v) is dict for k, v in metadata.items()
    ):
        return metadata
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[Any, Any], steps: int) -> None:
        for key, value in node.items():
            if type(key) is not str or "." in key:
                continue  # not reachable by a dotted path (a literal top-level key is below)
            path = prefix + key
            out[path] = value
            if type(value) is dict and steps < _MAX_STEPS:
                walk(path + ".", value, steps + 1)

    walk("", metadata, 1)
    for key, value in metadata.items():
        if type(key) is str and "." in key:
            out.setdefault(key, value)
    return out


# the column store -------------------------------------------------------------------------


class _Column:
    """What the labels hold at one path, by kind: numbers, bools and datetimes in numpy
    arrays, strs (and the strs inside lists) in postings, lists by label."""

    __slots__ = ("_sorted", "big", "bools", "count", "lists", "numbers", "postings", "present",
                 "size", "times")  # fmt: skip

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.present = np.zeros(size, dtype=bool)
        self.numbers: np.ndarray | None = None  # float64, NaN where not a number
        self.bools: np.ndarray | None = None  # int8: 1, 0, or -1 where not a bool
        self.times: np.ndarray | None = None  # int64 microseconds, _NO_TIME where none
        self.lists: set[int] = set()  # labels holding a list here
        self.big: set[int] = set()  # labels holding an int the float column rounds
        # str value -> labels holding it (or holding a list with it): equality on a string
        # (a user or tenant scope, the common filter) costs its matches, not a comparison
        # of every label (~1 ms at 100k labels, most of a memory add when it was).
        self.postings: dict[str, set[int]] = {}
        self._sorted: list[str] | None = None  # postings' keys in order, for $prefix/ranges

    def grow(self, size: int) -> None:
        def wider(array: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(size, fill, dtype=array.dtype)
            out[: self.size] = array
            return out

        self.present = wider(self.present, False)
        if self.numbers is not None:
            self.numbers = wider(self.numbers, np.nan)
        if self.bools is not None:
            self.bools = wider(self.bools, -1)
        if self.times is not None:
            self.times = wider(self.times, _NO_TIME)
        self.size = size

    def put(self, label: int, value: Any) -> None:
        self.present[label] = True
        self.count += 1
        kind = type(value)
        if kind is str:
            self._post(value, label)
        elif kind is int or kind is float:
            if self.numbers is None:
                self.numbers = np.full(self.size, np.nan)
            self.numbers[label] = float(value)
            if kind is int and not -_EXACT <= value <= _EXACT:
                self.big.add(label)
        elif kind is bool:
            if self.bools is None:
                self.bools = np.full(self.size, -1, dtype=np.int8)
            self.bools[label] = value
        elif kind is datetime.datetime:
            if self.times is None:
                self.times = np.full(self.size, _NO_TIME, dtype=np.int64)
            self.times[label] = _micros(value)
        elif kind is list:
            self.lists.add(label)
            for item in value:
                if type(item) is str:
                    self._post(item, label)

    def unset(self, label: int, value: Any) -> None:
        self.present[label] = False
        self.count -= 1
        kind = type(value)
        if kind is str:
            self._unpost(value, label)
        elif kind is int or kind is float:
            assert self.numbers is not None
            self.numbers[label] = np.nan
            self.big.discard(label)
        elif kind is bool:
            assert self.bools is not None
            self.bools[label] = -1
        elif kind is datetime.datetime:
            assert self.times is not None
            self.times[label] = _NO_TIME
        elif kind is list:
            self.lists.discard(label)
            for item in value:
                if type(item) is str:
                    self._unpost(item, label)

    def _post(self, value: str, label: int) -> None:
        holders = self.postings.get(value)
        if holders is None:
            self.postings[value] = holders = set()
            self._sorted = None
        holders.add(label)

    def _unpost(self, value: str, label: int) -> None:
        holders = self.postings.get(value)
        if holders is None:
            return  # a list holding the same str twice: already gone
        holders.discard(label)
        if not holders:
            del self.postings[value]
            self._sorted = None

    def strings(self) -> list[str]:
        """The distinct strs held, sorted (rebuilt after a new or vanished value only)."""
        found = self._sorted
        if found is None:
            # Searches share the read lock: two may build this at once; both build the same.
            found = self._sorted = sorted(self.postings)
        return found


class Columns:
    """Metadata of every label of an index, stored path by path (see ``flatten``) and kind
    by kind, for ``Filter.mask``. Rows grow in chunks; freed labels are cleared. A path no
    label holds any longer is forgotten, so churning keys do not pile up columns."""

    def __init__(self) -> None:
        self.size = 0
        self.fields: dict[str, _Column] = {}
        self._flat: list[dict[str, Any] | None] = []  # each label's flattened metadata

    def _ensure(self, label: int) -> None:
        if label < self.size:
            return
        grown = max(label + 1, self.size * 2, 1024)
        for column in self.fields.values():
            column.grow(grown)
        self._flat.extend([None] * (grown - self.size))
        self.size = grown

    def set(self, label: int, metadata: Mapping[str, Any] | None) -> None:
        self._ensure(label)
        old = self._flat[label] or {}
        new = flatten(metadata) if metadata else {}
        for path, value in old.items():
            column = self.fields[path]
            column.unset(label, value)
            if not column.count and path not in new:
                del self.fields[path]
        for path, value in new.items():
            holder = self.fields.get(path)
            if holder is None:
                self.fields[path] = holder = _Column(self.size)
            holder.put(label, value)
        self._flat[label] = new or None

    def clear(self, label: int) -> None:
        if label < self.size:
            self.set(label, None)

    def value(self, label: int, path: str) -> Any:
        """What ``label`` holds at ``path`` (the sentinel when nothing)."""
        flat = self._flat[label] if label < self.size else None
        return _MISSING if flat is None else flat.get(path, _MISSING)


def _fit(array: np.ndarray | None, n: int, fill: Any, dtype: Any) -> np.ndarray:
    """``array`` over labels ``0..n-1``: a view when it is long enough, else padded (labels
    past the last one a column saw hold nothing)."""
    if array is None:
        return np.full(n, fill, dtype=dtype)
    if len(array) >= n:
        return array[:n]
    out = np.full(n, fill, dtype=dtype)
    out[: len(array)] = array
    return out


def _labels_mask(groups: Iterable[set[int]], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    labels = np.fromiter(itertools.chain.from_iterable(groups), dtype=np.int64)
    out[labels[labels < n]] = True
    return out


# compiling -------------------------------------------------------------------------------

Mask = Callable[["Columns", int], np.ndarray]
Match = Callable[[Mapping[str, Any]], bool]
# The vectorised part of a condition: (columns, the path's column, n) -> bool[n]
Scalar = Callable[["Columns", _Column, int], np.ndarray]


class Filter:
    """A validated filter. ``mask(columns, n)`` is a bool array over labels ``0..n-1``."""

    def __init__(self, spec: Mapping[str, Any], match: Match, mask: Mask) -> None:
        self.spec = spec
        self._match = match
        self._mask = mask

    def matches(self, metadata: Any) -> bool:
        """Whether one item's metadata passes (metadata that is not a map passes nothing
        but negations of conditions, as an empty map does)."""
        return self._match(metadata if isinstance(metadata, Mapping) else {})

    def mask(self, columns: Columns, n: int) -> np.ndarray:
        return self._mask(columns, n)

    def __repr__(self) -> str:
        return f"Filter({self.spec!r})"


def compile_filter(spec: Mapping[str, Any] | None) -> Filter | None:
    """Validate ``spec`` and build its evaluators; None for no filter."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgument(f"a filter must be a non-empty mapping, not {spec!r:.200}")
    match, mask = _compile(spec, 1)
    return Filter(spec, match, mask)


def _compile(spec: Any, depth: int) -> tuple[Match, Mask]:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidArgument(f"a filter may nest at most {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgument(f"a filter clause must be a non-empty mapping, not {spec!r:.200}")
    parts: list[tuple[Match, Mask]] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple) or not value:
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


def _check_scalar(op: str, value: Any) -> str:
    """The kind of a value a filter compares with; ``InvalidArgument`` for anything else."""
    kind = _KINDS.get(type(value))
    if kind is None or (type(value) is float and math.isnan(value)):
        raise InvalidArgument(
            f"{op} compares with a str, number, bool or aware datetime, not {value!r:.100}"
        )
    if type(value) is int and not _INT_MIN <= value <= _UINT_MAX:
        raise InvalidArgument(f"{op}: {value} is beyond the 64-bit range of stored ints")
    if kind == "time":
        check_value(value, DEFAULT_LIMITS, op)  # an instant, as stored values are
    return kind


def _field(name: str, condition: Any) -> tuple[Match, Mask]:
    if not isinstance(condition, Mapping):
        return _op(name, "$eq", condition)
    if not condition:
        raise InvalidArgument(f"empty condition for field {name!r}")
    parts = [_op(name, op, value) for op, value in condition.items()]
    return parts[0] if len(parts) == 1 else _all(parts)


def _any_element(
    name: str, pred: Callable[[Any], bool], scalar: Scalar, covered: bool
) -> tuple[Match, Mask]:
    """A condition met when the value, or any element of a list value, passes ``pred``.

    ``scalar`` computes it for the labels' plain values with numpy; the labels holding a
    list are then checked element by element with ``pred`` itself, unless ``covered`` says
    ``scalar`` already saw list elements (strs, through the postings)."""
    resolve = resolver(name)

    def match(m: Mapping[str, Any]) -> bool:
        found = resolve(m)
        if type(found) is list:
            return any(pred(item) for item in found)
        return found is not _MISSING and pred(found)

    def mask(c: Columns, n: int) -> np.ndarray:
        column = c.fields.get(name)
        if column is None:
            return np.zeros(n, dtype=bool)
        out = scalar(c, column, n)
        if not covered and column.lists:
            for label in column.lists:
                if label < n and not out[label]:
                    out[label] = any(pred(item) for item in c.value(label, name))
        return out

    return match, mask


def _nothing(c: Columns, column: _Column, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool)


def _eq_scalar(name: str, value: Any, kind: str) -> Scalar:
    """Labels whose plain value (or, for a str, a list element) equals ``value``."""
    if kind == "str":

        def strs(c: Columns, column: _Column, n: int) -> np.ndarray:
            holders = column.postings.get(value)
            return _labels_mask([holders], n) if holders else np.zeros(n, dtype=bool)

        return strs
    if kind == "bool":
        flag = int(value)
        return lambda c, column, n: _fit(column.bools, n, -1, np.int8) == flag
    if kind == "time":
        micros = _micros(value)
        return lambda c, column, n: _fit(column.times, n, _NO_TIME, np.int64) == micros
    lossy = type(value) is int and not -_EXACT <= value <= _EXACT
    approx = float(value)

    def numbers(c: Columns, column: _Column, n: int) -> np.ndarray:
        out = np.asarray(_fit(column.numbers, n, np.nan, np.float64) == approx)
        if lossy or column.big:  # float64 may tie different ints: settle ties exactly
            for label in np.flatnonzero(out).tolist():
                out[label] = _equal(c.value(label, name), value)
        return out

    return numbers


def _range_scalar(name: str, op: str, value: Any, kind: str) -> Scalar:
    compare = _COMPARE[op]
    if kind == "str":

        def strs(c: Columns, column: _Column, n: int) -> np.ndarray:
            keys = column.strings()
            if op in ("$gt", "$gte"):
                cut = (bisect.bisect_right if op == "$gt" else bisect.bisect_left)(keys, value)
                chosen = keys[cut:]
            else:
                cut = (bisect.bisect_left if op == "$lt" else bisect.bisect_right)(keys, value)
                chosen = keys[:cut]
            return _labels_mask((column.postings[k] for k in chosen), n)

        return strs
    if kind == "time":
        micros = _micros(value)

        def times(c: Columns, column: _Column, n: int) -> np.ndarray:
            held = _fit(column.times, n, _NO_TIME, np.int64)
            return np.asarray(compare(held, micros) & (held != _NO_TIME))

        return times
    lossy = type(value) is int and not -_EXACT <= value <= _EXACT
    approx = float(value)
    strict = _COMPARE[_STRICT[op]]

    def numbers(c: Columns, column: _Column, n: int) -> np.ndarray:
        held = _fit(column.numbers, n, np.nan, np.float64)
        with np.errstate(invalid="ignore"):
            if not (lossy or column.big):
                return np.asarray(compare(held, approx), dtype=bool)
            # Rounding to float64 keeps order but may tie: the strict comparison is certain,
            # and each tie is settled with the exact values.
            out = np.asarray(strict(held, approx), dtype=bool)
            for label in np.flatnonzero(held == approx).tolist():
                out[label] = bool(compare(c.value(label, name), value))
        return out

    return numbers


def _op(name: str, op: Any, value: Any) -> tuple[Match, Mask]:
    if op not in _OPS:
        raise InvalidArgument(f"unknown operator {op!r} for field {name!r}")
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple) or not value:
            raise InvalidArgument(f"{op} takes a non-empty list, not {value!r:.100}")
        options = [(v, _check_scalar(op, v)) for v in value]
        scalars = [_eq_scalar(name, v, kind) for v, kind in options]

        def anyone(c: Columns, column: _Column, n: int) -> np.ndarray:
            out = scalars[0](c, column, n)
            for scalar in scalars[1:]:
                out = out | scalar(c, column, n)
            return out

        inside = _any_element(
            name,
            lambda item: any(_equal(item, v) for v, _ in options),
            anyone,
            all(kind == "str" for _, kind in options),
        )
        return inside if op == "$in" else _negate(inside)
    if op == "$exists":
        if type(value) is not bool:
            raise InvalidArgument(f"$exists takes true or false, not {value!r:.100}")
        return _exists(name, value)
    if op == "$prefix":
        if type(value) is not str:
            raise InvalidArgument(f"$prefix takes a str, not {value!r:.100}")
        return _any_element(
            name,
            lambda item: type(item) is str and item.startswith(value),
            _prefix_scalar(value),
            True,
        )
    kind = _check_scalar(op, value)
    if op == "$contains":
        return _contains(name, value, kind)
    if op in ("$eq", "$ne"):
        equal = _any_element(
            name, lambda item: _equal(item, value), _eq_scalar(name, value, kind), kind == "str"
        )
        return equal if op == "$eq" else _negate(equal)
    if kind == "bool":
        raise InvalidArgument(f"{op} needs a number, a str or a datetime, not a bool")
    compare = _COMPARE[op]
    return _any_element(
        name,
        lambda item: _KINDS.get(type(item)) == kind and bool(compare(item, value)),
        _range_scalar(name, op, value, kind),
        kind == "str",
    )


def _exists(name: str, wanted: bool) -> tuple[Match, Mask]:
    resolve = resolver(name)

    def match(m: Mapping[str, Any]) -> bool:
        return (resolve(m) is not _MISSING) == wanted

    def mask(c: Columns, n: int) -> np.ndarray:
        column = c.fields.get(name)
        present = (
            np.zeros(n, dtype=bool) if column is None else _fit(column.present, n, False, bool)
        )
        return present.copy() if wanted else ~present

    return match, mask


def _prefix_scalar(prefix: str) -> Scalar:
    def strs(c: Columns, column: _Column, n: int) -> np.ndarray:
        keys = column.strings()
        end = start = bisect.bisect_left(keys, prefix)
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return _labels_mask((column.postings[k] for k in keys[start:end]), n)

    return strs


def _contains(name: str, value: Any, kind: str) -> tuple[Match, Mask]:
    resolve = resolver(name)

    def match(m: Mapping[str, Any]) -> bool:
        found = resolve(m)
        return type(found) is list and any(_equal(item, value) for item in found)

    if kind == "str":

        def in_lists(c: Columns, column: _Column, n: int) -> np.ndarray:
            holders = column.postings.get(value)
            if not holders:
                return np.zeros(n, dtype=bool)
            return _labels_mask([holders & column.lists], n)

        mask = _any_element(name, lambda item: False, in_lists, True)[1]
    else:
        # Only the list part counts: a plain value equal to ``value`` is not a list.
        mask = _any_element(name, lambda item: _equal(item, value), _nothing, False)[1]
    return match, mask
