"""Redis hash commands.

A hash written through Redis is a structure of one entry per field
(``server/structures.py``): fields are any bytes (empty included), HSET/HGET/HDEL touch only
their fields, and HGETALL/HKEYS/HVALS/HSCAN list fields in byte order (Redis leaves the
order unspecified). A record written with the engramdb API reads as a hash of its bins;
Redis writes keep it such a record, with the types of its values (HINCRBY on an int bin
stores an int), as long as every field written is a valid bin name (1 to 64 characters of
UTF-8, none of the names the record mapping reserves) and the record stays within the
record size limit; otherwise it is converted to a structure. A hash left without fields is
deleted, as Redis does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engramdb.errors import RecordTooBig
from engramdb.records.codec import encode_body
from engramdb.server.commands import RedisError, Reply, command, wrong_args
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.members import parse_scan, random_count, sample, scan_page
from engramdb.server.handlers.values import (
    LLONG_MAX,
    LLONG_MIN,
    NOT_FLOAT,
    RESERVED_FIELDS,
    as_bytes,
    format_long_double,
    parse_int,
    parse_long_double,
)
from engramdb.server.structures import (
    HASH,
    WRONGTYPE,
    Access,
    Found,
    Parsed,
    check_sizes,
    hot_write,
    read,
    save_header,
    write,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

_MISSING = object()


def _bin_name(raw: bytes) -> str | None:
    """``raw`` as the bin name of a hash kept as a record; None when it cannot be one."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name or len(name) > 64 or name in RESERVED_FIELDS:
        return None
    return name


def _check(a: Access, raw_key: bytes) -> Found:
    found = a.find(raw_key)
    if found.kind not in ("none", HASH):
        raise RedisError(WRONGTYPE)
    return found


def _fields(a: Access, found: Found) -> list[tuple[bytes, bytes]]:
    """Every (field, value) of a hash."""
    if found.kind == "none":
        return []
    if found.legacy:
        return [
            (name.encode("utf-8", "surrogatepass"), as_bytes(value))
            for name, value in found.bins().items()
        ]
    return list(a.pages(found))


def _value(a: Access, found: Found, field: bytes) -> Any:
    """A field's stored value (_MISSING when absent); a record's keeps its type."""
    if found.kind == "none":
        return _MISSING
    if found.legacy:
        name = _bin_name(field)
        if name is None:
            return _MISSING
        return found.bins().get(name, _MISSING)
    value = a.get(found, field)
    return _MISSING if value is None else value


def _convert(a: Access, found: Found) -> None:
    """Make a hash kept as a record a structure (before a write it cannot take)."""
    fields = _fields(a, found)
    a.create(found, HASH)
    for field, value in fields:
        a.put(found, field, value, new=True)
    found.length = len(fields)


def _edit(
    a: Access,
    raw_key: bytes,
    changes: dict[bytes, Any],
    removals: list[bytes] | None = None,
) -> int:
    """Apply ``changes`` (field -> value) and ``removals`` to a hash (created if needed);
    returns how many fields it added. Every check is done: this stages."""
    found = a.find(raw_key)
    if found.kind == "none":
        a.create(found, HASH)
    elif found.legacy:
        bins = dict(found.bins())
        names = {field: _bin_name(field) for field in changes}
        if all(name is not None for name in names.values()):
            added = sum(1 for name in names.values() if name not in bins)
            for field, value in changes.items():
                bins[names[field]] = value  # type: ignore[index]
            for field in removals or ():
                name = _bin_name(field)
                if name is not None:
                    bins.pop(name, None)
            if not bins:
                a.remove(found)
                return added
            try:
                body = encode_body(bins, a.records._limits)
            except RecordTooBig:
                pass  # too big for one record now: a structure takes it
            else:
                a.put_record(found, body)
                return added
        _convert(a, found)
    added = 0
    for field, value in changes.items():
        old = a.get(found, field)
        a.put(found, field, as_bytes(value), new=old is None)
        if old is None:
            added += 1
    found.length += added
    for field in removals or ():
        if a.get(found, field) is not None:
            a.delete(found, field)
            found.length -= 1
    a.save(found)
    return added


# writes ---------------------------------------------------------------------------------


def _hset(conn: Connection, args: list[bytes], name: str, reply: Callable[[int], Any]) -> Any:
    if len(args) % 2 == 0:
        raise wrong_args(name)
    limit = conn.db.limits.max_record_bytes
    if len(args) == 3:  # one field (the common HSET): no comprehension, no concatenation
        changes = {args[1]: args[2]}
        if len(args[1]) + len(args[2]) > limit:
            check_sizes([args[1] + args[2]], limit)
    else:
        changes = {args[i]: args[i + 1] for i in range(1, len(args), 2)}
        check_sizes([f + v for f, v in changes.items()], limit)
    key = args[0]

    def apply(a: Access) -> int:
        _check(a, key)
        return _edit(a, key, changes)

    def fast(txn: WriteTxn, rk: bytes, parsed: Parsed, now: int) -> int:
        prefix = parsed[6]
        added = 0
        for field, value in changes.items():  # as _edit, on a hash stored per field
            sub = prefix + field
            if txn.get(sub) is None:
                txn.put(sub, value, 0, None)
                added += 1
            else:
                txn.put(sub, value, 0, 0)
        save_header(txn, rk, parsed, parsed[2] + added, parsed[3], now)
        return added

    return hot_write(conn, key, HASH, fast, apply, reply)


@command("hset", -4, "write", "fast")
def hset(conn: Connection, args: list[bytes]) -> Any:
    return _hset(conn, args, "hset", lambda added: added)


@command("hmset", -4, "write", "fast")
def hmset(conn: Connection, args: list[bytes]) -> Any:
    return _hset(conn, args, "hmset", lambda _: OK)


@command("hsetnx", 4, "write", "fast")
def hsetnx(conn: Connection, args: list[bytes]) -> Any:
    key, field, value = args
    check_sizes([field + value], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> int:
        if _value(a, _check(a, key), field) is not _MISSING:
            return 0
        _edit(a, key, {field: value})
        return 1

    return write(conn, apply)


@command("hdel", -3, "write", "fast")
def hdel(conn: Connection, args: list[bytes]) -> Any:
    key, fields = args[0], list(dict.fromkeys(args[1:]))

    def apply(a: Access) -> int:
        found = _check(a, key)
        gone = [field for field in fields if _value(a, found, field) is not _MISSING]
        if gone:
            _edit(a, key, {}, gone)
        return len(gone)

    return write(conn, apply)


@command("hincrby", 4, "write", "fast")
def hincrby(conn: Connection, args: list[bytes]) -> Any:
    key, field = args[0], args[1]
    amount = parse_int(args[2])

    def apply(a: Access) -> int:
        old = _value(a, _check(a, key), field)
        if old is _MISSING:
            number = 0
        else:
            try:
                number = parse_int(old, in_plan=True)
            except RedisError:
                raise RedisError("ERR hash value is not an integer") from None
        if (amount < 0 and number < 0 and amount < LLONG_MIN - number) or (
            amount > 0 and number > 0 and amount > LLONG_MAX - number
        ):
            raise RedisError("ERR increment or decrement would overflow")
        number += amount
        _edit(a, key, {field: number if type(old) is int else b"%d" % number})
        return number

    return write(conn, apply)


@command("hincrbyfloat", 4, "write", "fast")
def hincrbyfloat(conn: Connection, args: list[bytes]) -> Any:
    import numpy as np

    key, field = args[0], args[1]
    amount = parse_long_double(args[2], NOT_FLOAT)
    if not np.isfinite(amount):
        raise Reply("ERR value is NaN or Infinity")

    def apply(a: Access) -> bytes:
        old = _value(a, _check(a, key), field)
        number = (
            np.longdouble(0)
            if old is _MISSING
            else parse_long_double(old, "ERR hash value is not a float", in_plan=True)
        )
        with np.errstate(all="ignore"):
            total = number + amount
        if not np.isfinite(total):
            raise RedisError("ERR increment would produce NaN or Infinity")
        text = format_long_double(total)
        _edit(a, key, {field: float(total) if type(old) is float else text})
        return text

    return write(conn, apply)


# reads ----------------------------------------------------------------------------------


def _reader(conn: Connection, key: bytes, fn: Callable[[Access, Found], Any]) -> Any:
    return read(conn, lambda a: fn(a, _check(a, key)))


@command("hget", 3, "readonly", "fast")
def hget(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> Any:
        value = _value(a, found, args[1])
        return None if value is _MISSING else as_bytes(value)

    return _reader(conn, args[0], run)


@command("hmget", -3, "readonly", "fast")
def hmget(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> Any:
        values = (_value(a, found, field) for field in args[1:])
        return [None if value is _MISSING else as_bytes(value) for value in values]

    return _reader(conn, args[0], run)


@command("hgetall", 2, "readonly")
def hgetall(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: dict(_fields(a, found)))


@command("hkeys", 2, "readonly")
def hkeys(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: [f for f, _ in _fields(a, found)])


@command("hvals", 2, "readonly")
def hvals(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: [v for _, v in _fields(a, found)])


@command("hlen", 2, "readonly", "fast")
def hlen(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> int:
        if found.legacy:
            return len(found.bins())
        return found.length

    return _reader(conn, args[0], run)


@command("hexists", 3, "readonly", "fast")
def hexists(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: int(_value(a, found, args[1]) is not _MISSING))


@command("hstrlen", 3, "readonly", "fast")
def hstrlen(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> int:
        value = _value(a, found, args[1])
        return 0 if value is _MISSING else len(as_bytes(value))

    return _reader(conn, args[0], run)


@command("hscan", -3, "readonly")
def hscan(conn: Connection, args: list[bytes]) -> Any:
    options = parse_scan(args[1:], novalues=True)

    def run(a: Access, found: Found) -> Any:
        if found.legacy:
            rows = _fields(a, found)
            if options.after is not None:
                rows = []
            cursor = b"0"
        elif found.kind == "none":
            return [b"0", []]
        else:
            cursor, rows = scan_page(a, found, options)
        out: list[bytes] = []
        for field, value in rows:
            if options.matches is not None and not options.matches(field):
                continue
            out.append(field)
            if not options.novalues:
                out.append(value)
        return [cursor, out]

    return _reader(conn, args[0], run)


@command("hrandfield", -2, "readonly")
def hrandfield(conn: Connection, args: list[bytes]) -> Any:
    if len(args) == 1:
        count, with_values, single = 1, False, True
    else:
        count, with_values = random_count(args[1:], b"WITHVALUES")
        single = False
    resp3 = conn.resp3

    def run(a: Access, found: Found) -> Any:
        if found.kind == "none":
            return None if single else []
        if found.legacy:
            picked = _sample_rows(_fields(a, found), count)
        else:
            picked = sample(a, found, abs(count), distinct=count > 0)
        if single:
            return picked[0][0] if picked else None
        if not with_values:
            return [field for field, _ in picked]
        if resp3:
            return [[field, value] for field, value in picked]
        return [part for row in picked for part in row]

    return _reader(conn, args[0], run)


def _sample_rows(rows: list[tuple[bytes, bytes]], count: int) -> list[tuple[bytes, bytes]]:
    import random

    rng = random.SystemRandom()
    if not rows or count == 0:
        return []
    if count > 0:
        return rng.sample(rows, min(count, len(rows)))
    return [rng.choice(rows) for _ in range(-count)]
