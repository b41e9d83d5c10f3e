"""Redis list commands over ``$list`` records. A list left empty is deleted, as Redis does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.protocol.resp import NULL_ARRAY
from engramdb.records.codec import decode_value, encode_value
from engramdb.records.writes import Current, Outcome
from engramdb.server.commands import Reply, command, wrong_args
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import (
    LIST_BIN,
    as_bytes,
    error,
    key_of,
    list_of,
    parse_int,
    transform,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection


def _read(conn: Connection, raw_key: bytes) -> list[Any] | None:
    record = conn.records.get(key_of(raw_key))
    return None if record is None else list_of(record.bins)


def _stored(items: list[Any]) -> dict[str, Any] | None:
    return {LIST_BIN: items} if items else None


# the stored body --------------------------------------------------------------------------
#
# A list record's body is the msgpack map {"$list": [items]}. Pushes and left pops edit those
# bytes directly (a raw transform) instead of decoding and re-encoding every item, so they
# cost a byte copy of the record rather than a Python object per item: redis-benchmark
# pushes 100k items onto one list. Anything unexpected (a record written with the Python API
# whose "$list" is not an array, items that are not strings) takes the decoded path.

_PREFIX = b"\x81\xa5$list"  # fixmap(1), fixstr(5) "$list"
_AFTER_PREFIX = len(_PREFIX)


def _items_at(body: memoryview) -> tuple[int, int] | None:
    """``(count, offset of the first item)`` of a list body, None if it is not one."""
    if len(body) <= _AFTER_PREFIX or body[:_AFTER_PREFIX] != _PREFIX:
        return None
    tag = body[_AFTER_PREFIX]
    if 0x90 <= tag <= 0x9F:
        return tag & 0x0F, _AFTER_PREFIX + 1
    if tag == 0xDC:
        return int.from_bytes(body[_AFTER_PREFIX + 1 : _AFTER_PREFIX + 3], "big"), _AFTER_PREFIX + 3
    if tag == 0xDD:
        return int.from_bytes(body[_AFTER_PREFIX + 1 : _AFTER_PREFIX + 5], "big"), _AFTER_PREFIX + 5
    return None


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _encode_items(values: list[bytes]) -> bytes:
    parts: list[bytes] = []
    for value in values:
        size = len(value)
        if size < 1 << 8:
            parts.append(b"\xc4" + bytes([size]))
        elif size < 1 << 16:
            parts.append(b"\xc5" + size.to_bytes(2, "big"))
        else:
            parts.append(b"\xc6" + size.to_bytes(4, "big"))
        parts.append(value)
    return b"".join(parts)


def _next_item(body: memoryview, at: int) -> tuple[bytes, int] | None:
    """The string item at ``at`` (bin or str) and the offset after it; None otherwise."""
    tag = body[at]
    if 0xA0 <= tag <= 0xBF:
        start, size = at + 1, tag & 0x1F
    elif tag in (0xC4, 0xD9):
        start, size = at + 2, body[at + 1]
    elif tag in (0xC5, 0xDA):
        start, size = at + 3, int.from_bytes(body[at + 1 : at + 3], "big")
    elif tag in (0xC6, 0xDB):
        start, size = at + 5, int.from_bytes(body[at + 1 : at + 5], "big")
    else:
        return None
    return bytes(body[start : start + size]), start + size


def _decoded(body: memoryview) -> list[Any]:
    """The items of a stored body that the byte paths do not handle (WRONGTYPE if no list)."""
    bins = decode_value(body)
    return list_of(bins if isinstance(bins, dict) else None, in_plan=True)


def _pop_front(
    body: memoryview, found: tuple[int, int], wanted: int
) -> tuple[list[bytes], bytes | None] | None:
    """The first ``wanted`` items and the body left (None: empty), or None to decode."""
    count, at = found
    taken: list[bytes] = []
    for _ in range(min(wanted, count)):
        item = _next_item(body, at)
        if item is None:
            return None
        taken.append(item[0])
        at = item[1]
    left = count - len(taken)
    if not left:
        return taken, None
    return taken, b"".join((_PREFIX, _array_header(left), body[at:]))


def _cut_back(
    body: memoryview, found: tuple[int, int], left: int, taken: list[Any]
) -> bytes | None:
    """The body without its last items ``taken`` (last first), ``left`` items remaining;
    None unless the stored tail is exactly their encoding (then the caller encodes)."""
    tail = b"".join(encode_value(item) for item in reversed(taken))
    cut = len(body) - len(tail)
    if cut < found[1] or body[cut:] != tail:
        return None
    return b"".join((_PREFIX, _array_header(left), body[found[1] : cut]))


# pushes ---------------------------------------------------------------------------------


def _push(conn: Connection, args: list[bytes], left: bool, only_existing: bool) -> Any:
    values = args[1:][::-1] if left else args[1:]
    encoded = _encode_items(values)

    def apply(current: Current, now: int) -> Outcome:
        body = current.body
        if body is None:
            if only_existing:
                return Outcome(0)
            return Outcome(len(values), _PREFIX + _array_header(len(values)) + encoded)
        found = _items_at(body)
        if found is None:
            items = _decoded(body)
            items = values + items if left else items + values
            return Outcome(len(items), {LIST_BIN: items})
        count, start = found
        count += len(values)
        rest = body[start:]
        head = _PREFIX + _array_header(count)
        parts: list[bytes | memoryview] = [head, encoded, rest] if left else [head, rest, encoded]
        return Outcome(count, b"".join(parts))

    return transform(conn, key_of(args[0]), apply, raw=True)


@command("lpush", -3, "write", "fast")
def lpush(conn: Connection, args: list[bytes]) -> Any:
    return _push(conn, args, left=True, only_existing=False)


@command("rpush", -3, "write", "fast")
def rpush(conn: Connection, args: list[bytes]) -> Any:
    return _push(conn, args, left=False, only_existing=False)


@command("lpushx", -3, "write", "fast")
def lpushx(conn: Connection, args: list[bytes]) -> Any:
    return _push(conn, args, left=True, only_existing=True)


@command("rpushx", -3, "write", "fast")
def rpushx(conn: Connection, args: list[bytes]) -> Any:
    return _push(conn, args, left=False, only_existing=True)


# pops -----------------------------------------------------------------------------------


def _pop(conn: Connection, args: list[bytes], left: bool, name: str) -> Any:
    if len(args) > 2:
        raise wrong_args(name)
    count: int | None = None
    if len(args) == 2:
        try:
            count = parse_int(args[1])
        except Reply:
            count = -1
        if count < 0:
            raise Reply("ERR value is out of range, must be positive")

    wanted = 1 if count is None else count

    def apply(current: Current, now: int) -> Outcome:
        body = current.body
        if body is None:
            return Outcome(None)
        found = _items_at(body)
        if found is None:
            items = _decoded(body)  # WRONGTYPE unless a list the byte path does not know
        elif count == 0 or found[0] == 0:
            items = []
        elif left and (popped := _pop_front(body, found, wanted)) is not None:
            front, after = popped
            return Outcome(front[0] if count is None else front, after)
        else:
            items = _decoded(body)
        if count == 0:
            return Outcome([])
        if not items:
            return Outcome(None)
        if left:
            taken, items = items[:wanted], items[wanted:]
        else:
            taken, items = items[: -wanted - 1 : -1], items[: max(0, len(items) - wanted)]
        values = [as_bytes(item) for item in taken]
        rest: dict[str, Any] | bytes | None = _stored(items)
        if found is not None and not left and items:
            # Finding the tail needs the decode, but the rest need not be encoded again.
            rest = _cut_back(body, found, len(items), taken) or rest
        return Outcome(values[0] if count is None else values, rest)

    def reply(value: Any) -> Any:
        if value is None and count is not None:
            return NULL_ARRAY
        return value

    return transform(conn, key_of(args[0]), apply, reply, raw=True)


@command("lpop", -2, "write", "fast")
def lpop(conn: Connection, args: list[bytes]) -> Any:
    return _pop(conn, args, left=True, name="lpop")


@command("rpop", -2, "write", "fast")
def rpop(conn: Connection, args: list[bytes]) -> Any:
    return _pop(conn, args, left=False, name="rpop")


# reads ----------------------------------------------------------------------------------


def _span(start: int, stop: int, size: int) -> tuple[int, int] | None:
    """Redis' clamping of an inclusive index range; None when it selects nothing."""
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    start = max(start, 0)
    if start > stop or start >= size:
        return None
    return start, min(stop, size - 1)


@command("lrange", 4, "readonly")
def lrange(conn: Connection, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])
    items = _read(conn, args[0]) or []
    span = _span(start, stop, len(items))
    if span is None:
        return []
    return [as_bytes(item) for item in items[span[0] : span[1] + 1]]


@command("llen", 2, "readonly", "fast")
def llen(conn: Connection, args: list[bytes]) -> Any:
    return len(_read(conn, args[0]) or [])


@command("lindex", 3, "readonly")
def lindex(conn: Connection, args: list[bytes]) -> Any:
    items = _read(conn, args[0])
    if items is None:
        return None
    index = parse_int(args[1])
    if index < 0:
        index += len(items)
    return as_bytes(items[index]) if 0 <= index < len(items) else None


# edits ----------------------------------------------------------------------------------


@command("ltrim", 4, "write")
def ltrim(conn: Connection, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])

    def apply(current: Current, now: int) -> Outcome:
        items = list_of(current.bins, in_plan=True)
        if current.bins is None:
            return Outcome(None)
        span = _span(start, stop, len(items))
        if span is None:
            return Outcome(None, None)
        if span == (0, len(items) - 1):
            return Outcome(None)
        return Outcome(None, {LIST_BIN: items[span[0] : span[1] + 1]})

    return transform(conn, key_of(args[0]), apply, lambda _: OK)


@command("lset", 4, "write")
def lset(conn: Connection, args: list[bytes]) -> Any:
    raw_index, value = args[1], args[2]

    def apply(current: Current, now: int) -> Outcome:
        if current.bins is None:
            raise error("ERR no such key", True)
        items = list_of(current.bins, in_plan=True)
        index = parse_int(raw_index, in_plan=True)
        if index < 0:
            index += len(items)
        if not 0 <= index < len(items):
            raise error("ERR index out of range", True)
        items[index] = value
        return Outcome(None, {LIST_BIN: items})

    return transform(conn, key_of(args[0]), apply, lambda _: OK)
