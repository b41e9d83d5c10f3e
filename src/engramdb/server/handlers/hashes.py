"""Redis hash commands: a hash is a record whose bins are its fields.

Values written through Redis are bytes. A record written with the Python API keeps its
types: HINCRBY on an int bin stores an int, HINCRBYFLOAT on a float bin stores a float, so
the same record reads naturally from both sides. A hash left without fields is deleted, as
Redis does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.records.writes import Current, Outcome
from engramdb.server.commands import RedisError, Reply, command, wrong_args
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import (
    LLONG_MAX,
    LLONG_MIN,
    NOT_FLOAT,
    as_bytes,
    error,
    field_lookup,
    field_name,
    format_long_double,
    hash_of,
    key_of,
    parse_int,
    parse_long_double,
    transform,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection


def _read(conn: Connection, raw_key: bytes) -> dict[str, Any]:
    record = conn.records.get(key_of(raw_key))
    return hash_of(None if record is None else record.bins)


def _hset(conn: Connection, args: list[bytes], name: str, reply: Any) -> Any:
    if len(args) % 2 == 0:
        raise wrong_args(name)
    changes = {field_name(args[i]): args[i + 1] for i in range(1, len(args), 2)}

    def apply(current: Current, now: int) -> Outcome:
        fields = dict(hash_of(current.bins, in_plan=True))
        added = sum(1 for f in changes if f not in fields)
        fields.update(changes)
        return Outcome(added, fields)

    return transform(conn, key_of(args[0]), apply, reply)


@command("hset", -4, "write", "fast")
def hset(conn: Connection, args: list[bytes]) -> Any:
    return _hset(conn, args, "hset", lambda added: added)


@command("hmset", -4, "write", "fast")
def hmset(conn: Connection, args: list[bytes]) -> Any:
    return _hset(conn, args, "hmset", lambda _: OK)


@command("hsetnx", 4, "write", "fast")
def hsetnx(conn: Connection, args: list[bytes]) -> Any:
    field, value = field_name(args[1]), args[2]

    def apply(current: Current, now: int) -> Outcome:
        fields = hash_of(current.bins, in_plan=True)
        if field in fields:
            return Outcome(0)
        return Outcome(1, {**fields, field: value})

    return transform(conn, key_of(args[0]), apply)


@command("hget", 3, "readonly", "fast")
def hget(conn: Connection, args: list[bytes]) -> Any:
    fields = _read(conn, args[0])
    value = fields.get(field_lookup(args[1]) or "", _MISSING)
    return None if value is _MISSING else as_bytes(value)


_MISSING = object()


@command("hmget", -3, "readonly", "fast")
def hmget(conn: Connection, args: list[bytes]) -> Any:
    fields = _read(conn, args[0])
    out: list[bytes | None] = []
    for raw in args[1:]:
        value = fields.get(field_lookup(raw) or "", _MISSING)
        out.append(None if value is _MISSING else as_bytes(value))
    return out


@command("hgetall", 2, "readonly")
def hgetall(conn: Connection, args: list[bytes]) -> Any:
    return {name.encode(): as_bytes(value) for name, value in _read(conn, args[0]).items()}


@command("hkeys", 2, "readonly")
def hkeys(conn: Connection, args: list[bytes]) -> Any:
    return [name.encode() for name in _read(conn, args[0])]


@command("hvals", 2, "readonly")
def hvals(conn: Connection, args: list[bytes]) -> Any:
    return [as_bytes(value) for value in _read(conn, args[0]).values()]


@command("hlen", 2, "readonly", "fast")
def hlen(conn: Connection, args: list[bytes]) -> Any:
    return len(_read(conn, args[0]))


@command("hexists", 3, "readonly", "fast")
def hexists(conn: Connection, args: list[bytes]) -> Any:
    return int((field_lookup(args[1]) or "") in _read(conn, args[0]))


@command("hstrlen", 3, "readonly", "fast")
def hstrlen(conn: Connection, args: list[bytes]) -> Any:
    value = _read(conn, args[0]).get(field_lookup(args[1]) or "", _MISSING)
    return 0 if value is _MISSING else len(as_bytes(value))


@command("hdel", -3, "write", "fast")
def hdel(conn: Connection, args: list[bytes]) -> Any:
    names = [field_lookup(raw) for raw in args[1:]]

    def apply(current: Current, now: int) -> Outcome:
        fields = hash_of(current.bins, in_plan=True)
        gone = {name for name in names if name is not None and name in fields}
        if not gone:
            return Outcome(0)
        left = {name: value for name, value in fields.items() if name not in gone}
        return Outcome(len(gone), left or None)

    return transform(conn, key_of(args[0]), apply)


@command("hincrby", 4, "write", "fast")
def hincrby(conn: Connection, args: list[bytes]) -> Any:
    amount = parse_int(args[2])
    field = field_name(args[1])

    def apply(current: Current, now: int) -> Outcome:
        fields = hash_of(current.bins, in_plan=True)
        old = fields.get(field, _MISSING)
        if old is _MISSING:
            number = 0
        else:
            try:
                number = parse_int(old, in_plan=True)
            except RedisError:
                raise error("ERR hash value is not an integer", True) from None
        if (amount < 0 and number < 0 and amount < LLONG_MIN - number) or (
            amount > 0 and number > 0 and amount > LLONG_MAX - number
        ):
            raise error("ERR increment or decrement would overflow", True)
        number += amount
        stored: Any = number if type(old) is int else b"%d" % number
        return Outcome(number, {**fields, field: stored})

    return transform(conn, key_of(args[0]), apply)


@command("hincrbyfloat", 4, "write", "fast")
def hincrbyfloat(conn: Connection, args: list[bytes]) -> Any:
    import numpy as np

    amount = parse_long_double(args[2], NOT_FLOAT)
    if not np.isfinite(amount):
        raise Reply("ERR value is NaN or Infinity")
    field = field_name(args[1])

    def apply(current: Current, now: int) -> Outcome:
        fields = hash_of(current.bins, in_plan=True)
        old = fields.get(field, _MISSING)
        number = (
            np.longdouble(0)
            if old is _MISSING
            else parse_long_double(old, "ERR hash value is not a float", in_plan=True)
        )
        with np.errstate(all="ignore"):
            total = number + amount
        if not np.isfinite(total):
            raise error("ERR increment would produce NaN or Infinity", True)
        text = format_long_double(total)
        stored: Any = float(total) if type(old) is float else text
        return Outcome(text, {**fields, field: stored})

    return transform(conn, key_of(args[0]), apply)
