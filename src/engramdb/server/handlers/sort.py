"""SORT and SORT_RO over lists, sets and sorted sets, as Redis 7 answers them.

Follows Redis' sortCommand: BY and GET patterns substitute the element for the first ``*``
and read a string key, or a hash field after ``->``; ``GET #`` is the element itself; a BY
pattern without ``*`` skips sorting (a sorted set then keeps its score order, reversed by
DESC). Numeric sorting parses each weight as C ``strtod`` would (a missing BY key weighs 0)
and breaks ties by comparing the elements' bytes; ALPHA compares bytes (Redis' ``strcoll`` in
the C locale), a missing BY value first. LIMIT clamps as Redis does. STORE replaces the
destination with a list of the results (nil as the empty string), deleting it when there are
none, and answers how many it stored. The work runs off the event loop: it is O(N log N)
plus one lookup per element and pattern.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from engramdb.server.commands import RedisError, Reply, command
from engramdb.server.handlers import hashes, lists, sets, zsets
from engramdb.server.handlers.values import STRING_BIN, as_bytes, parse_int
from engramdb.server.structures import HASH, LIST, SET, WRONGTYPE, ZSET, read, write

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.server.structures import Access

_NOT_DOUBLE = "ERR One or more scores can't be converted into double"
# What C strtod accepts whole (decimal forms; no hex floats, no digit separators).
_STRTOD = re.compile(
    rb"[ \t\n\v\f\r]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
    re.IGNORECASE,
)


def _strtod(raw: bytes) -> float:
    if raw == b"":
        return 0.0  # strtod reads nothing and stops at the terminator: Redis takes 0
    if _STRTOD.fullmatch(raw) is None:
        raise Reply(_NOT_DOUBLE)
    value = float(raw.strip().decode("ascii"))
    if math.isnan(value) or (math.isinf(value) and b"n" not in raw.lower()):
        raise Reply(_NOT_DOUBLE)  # NaN, or ERANGE (an overflow to infinity)
    return value


class _Options:
    __slots__ = ("alpha", "by", "desc", "gets", "limit", "store")

    def __init__(self, args: list[bytes], read_only: bool) -> None:
        self.alpha = self.desc = False
        self.by: bytes | None = None
        self.gets: list[bytes] = []
        self.limit: tuple[int, int] | None = None
        self.store: bytes | None = None
        i = 1
        while i < len(args):
            option, left = args[i].upper(), len(args) - i - 1
            if option == b"ASC":
                self.desc = False
            elif option == b"DESC":
                self.desc = True
            elif option == b"ALPHA":
                self.alpha = True
            elif option == b"LIMIT" and left >= 2:
                self.limit = (parse_int(args[i + 1]), parse_int(args[i + 2]))
                i += 2
            elif option == b"STORE" and left >= 1 and not read_only:
                self.store = args[i + 1]
                i += 1
            elif option == b"BY" and left >= 1:
                self.by = args[i + 1]
                i += 1
            elif option == b"GET" and left >= 1:
                self.gets.append(args[i + 1])
                i += 1
            else:
                raise Reply("ERR syntax error")
            i += 1


def _lookup(a: Access, pattern: bytes, element: bytes) -> bytes | None:
    """Redis' lookupKeyByPattern: the value ``pattern`` names for ``element``, or None."""
    if pattern == b"#":
        return element
    star = pattern.find(b"*")
    if star < 0:
        return None
    arrow = pattern.find(b"->", star + 1)
    field: bytes | None = None
    if arrow >= 0 and arrow + 2 < len(pattern):
        field = pattern[arrow + 2 :]
        pattern = pattern[:arrow]
    key = pattern[:star] + element + pattern[star + 1 :]
    found = a.find(key)
    if field is None:
        if found.kind != "string":
            return None
        return as_bytes(found.bins()[STRING_BIN])
    if found.kind != HASH:
        return None
    value = hashes._value(a, found, field)
    return None if value is hashes._MISSING else as_bytes(value)


def _elements(a: Access, key: bytes, desc: bool, dont_sort: bool) -> list[bytes]:
    found = a.find(key)
    if found.kind == "none":
        return []
    if found.kind == LIST:
        return lists._all(a, found)
    if found.kind == SET:
        return sets._members(a, found)
    if found.kind == ZSET:
        rows = sorted(zsets._members_of(a, found), key=lambda row: (row[1], row[0]))
        if dont_sort and desc:
            rows.reverse()  # Redis walks a sorted set backwards for an unsorted DESC
        return [member for member, _ in rows]
    raise RedisError(WRONGTYPE)


def _sorted(a: Access, elements: list[bytes], o: _Options) -> list[bytes]:
    if o.alpha:
        if o.by is None:
            return sorted(elements, reverse=o.desc)
        weights = [(_lookup(a, o.by, e), e) for e in elements]
        missing = [e for w, e in weights if w is None]
        present = [
            e
            for _, e in sorted(
                ((w, e) for w, e in weights if w is not None),
                key=lambda p: p[0],
                reverse=o.desc,
            )
        ]
        return present + missing if o.desc else missing + present
    scored: list[tuple[float, bytes]] = []
    for e in elements:
        raw = e if o.by is None else _lookup(a, o.by, e)
        scored.append((0.0 if raw is None else _strtod(raw), e))
    scored.sort(reverse=o.desc)
    return [e for _, e in scored]


def _limited(items: list[bytes], limit: tuple[int, int] | None) -> list[bytes]:
    if limit is None:
        return items
    size = len(items)
    start = max(0, limit[0])
    end = size - 1 if limit[1] < 0 else start + limit[1] - 1
    if start >= size:
        return []
    return items[start : min(end, size - 1) + 1]


def _result(a: Access, key: bytes, o: _Options) -> list[bytes | None]:
    dont_sort = o.by is not None and b"*" not in o.by
    elements = _elements(a, key, o.desc, dont_sort)
    if not dont_sort:
        elements = _sorted(a, elements, o)
    elements = _limited(elements, o.limit)
    if not o.gets:
        return list(elements)
    return [_lookup(a, pattern, e) for e in elements for pattern in o.gets]


def _sort(conn: Connection, args: list[bytes], read_only: bool) -> Any:
    o = _Options(args, read_only)
    key, dst = args[0], o.store
    if dst is None:
        return read(conn, lambda a: _result(a, key, o))

    def apply(a: Access) -> int:
        values = [b"" if v is None else v for v in _result(a, key, o)]
        found = a.find(dst)
        a.remove(found)
        if not values:
            return 0
        a.create(found, LIST)
        lists._push(a, found, values, left=False)
        a.save(found)
        return found.length

    def reply(stored: int) -> int:
        lists.wake(conn, dst, stored)
        return stored

    # Small sources commit on the loop's group commit (with their keyspace event); big ones
    # from a worker thread, as the set-algebra stores do.
    return write(conn, apply, reply, heavy=sets.heavy(conn, [key]))


def _stores(args: list[bytes]) -> bool:
    return any(arg.upper() == b"STORE" for arg in args[1:])


@command("sort", -2, "write", writes=_stores)
def sort(conn: Connection, args: list[bytes]) -> Any:
    """Sort the elements of a list, set or sorted set (optionally storing the result)."""
    return _sort(conn, args, read_only=False)


@command("sort_ro", -2, "readonly")
def sort_ro(conn: Connection, args: list[bytes]) -> Any:
    """SORT without STORE, for replicas and read-only contexts."""
    return _sort(conn, args, read_only=True)
