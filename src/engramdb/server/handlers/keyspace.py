"""Keyspace commands: DEL UNLINK EXISTS TYPE RENAME RENAMENX COPY TIME, the EXPIRE family,
TTL, PERSIST, KEYS, SCAN.

DEL, UNLINK and RENAME of a list, hash, set or sorted set change its header only (the
elements of a large one are reclaimed in the background, ``server/reclaim.py``), so they
cost the same whatever the size; COPY copies every element (O(n), as in Redis), off the
event loop when large.

SCAN walks the key space in key order; its cursor is a 63-bit number that stands for the
last key returned (``server/scan_cursor.py``: exact while the server holds it, a safe lower
bound otherwise), so it fits the 64-bit integers clients keep cursors in, and a key that
exists for the whole scan is never missed. Like Redis' COUNT, ours is the number of keys
examined, so a page may hold fewer matches (or none) before the scan is complete.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from engramdb.errors import InvalidArgument
from engramdb.protocol.resp import SimpleString
from engramdb.records.codec import HEADER_SIZE
from engramdb.records.writes import KEEP, Current, Outcome
from engramdb.server.commands import Offload, RedisError, Reply, Write, command
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.pattern import compile_pattern
from engramdb.server.handlers.sets import heavy
from engramdb.server.handlers.values import (
    LLONG_MAX,
    LLONG_MIN,
    error,
    key_bytes,
    key_of,
    kind_of,
    parse_int,
    transform,
)
from engramdb.server.structures import (
    DATABASES,
    Access,
    database_name,
    read,
    record_set,
    write,
)

_random = random.SystemRandom()

if TYPE_CHECKING:
    from engramdb.recordset import RecordSet
    from engramdb.server.connection import Connection
    from engramdb.server.scan_cursor import CursorTable


# Commands that need no values run as raw transforms or on headers: a DEL or EXPIRE of a
# 100k-item list must not read its items.


def _del(conn: Connection, args: list[bytes]) -> Any:
    def apply(a: Access) -> int:
        removed = 0
        for raw in args:
            found = a.find(raw)
            if found.exists:
                a.remove(found)
                removed += 1
        return removed

    return write(conn, apply)


@command("del", -2, "write", keys=(1, -1, 1))
def del_(conn: Connection, args: list[bytes]) -> Any:
    return _del(conn, args)


@command("unlink", -2, "write", "fast", keys=(1, -1, 1))
def unlink(conn: Connection, args: list[bytes]) -> Any:
    return _del(conn, args)


@command("exists", -2, "readonly", "fast", keys=(1, -1, 1))
def exists(conn: Connection, args: list[bytes]) -> Any:
    records = conn.records
    return sum(records.exists(key_of(raw)) for raw in args)


@command("type", 2, "readonly", "fast")
def type_(conn: Connection, args: list[bytes]) -> Any:
    return read(conn, lambda a: SimpleString(a.find(args[0]).kind))


# moving and copying -----------------------------------------------------------------------


def _rename(conn: Connection, args: list[bytes], only_new: bool) -> Any:
    src, dst = args

    def apply(a: Access) -> Any:
        source = a.find(src)
        if not source.exists:
            raise RedisError("ERR no such key")
        target = a.find(dst)
        if target is source:
            return 0 if only_new else OK
        if only_new and target.exists:
            return 0
        expires = source.expires_ms
        if source.structure:
            a.adopt(target, source)
        else:
            assert source.raw is not None
            body = source.raw[HEADER_SIZE:]
            a.remove(source)
            a.put_record(target, body, expires)
        return 1 if only_new else OK

    return write(conn, apply)


@command("rename", 3, "write", keys=(1, 2, 1))
def rename(conn: Connection, args: list[bytes]) -> Any:
    return _rename(conn, args, only_new=False)


@command("renamenx", 3, "write", "fast", keys=(1, 2, 1))
def renamenx(conn: Connection, args: list[bytes]) -> Any:
    return _rename(conn, args, only_new=True)


@command("copy", -3, "write", keys=(1, 2, 1))
def copy(conn: Connection, args: list[bytes]) -> Any:
    src, dst = args[0], args[1]
    replace = False
    target_set = record_set(conn)
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"REPLACE":
            replace = True
            i += 1
        elif option == b"DB" and i + 1 < len(args):
            index = parse_int(args[i + 1])
            target_set = conn.db.records(database_set(conn, index))
            i += 2
        else:
            raise Reply("ERR syntax error")
    same_set = target_set.name == record_set(conn).name
    if same_set and src == dst:
        raise Reply("ERR source and destination objects are the same")

    def apply(a: Access) -> int:
        source = a.find(src)
        if not source.exists:
            return 0
        target = a.find(dst, target_set)
        if target.exists and not replace:
            return 0
        a.remove(target)
        if source.structure:
            a.copy(source, target)
        else:
            assert source.raw is not None
            a.put_record(target, source.raw[HEADER_SIZE:], source.expires_ms)
        return 1

    return write(conn, apply, heavy=heavy(conn, [src]))


def database_set(conn: Connection, index: int) -> str:
    """The record set of Redis database ``index`` (0: the server's default set)."""
    if not 0 <= index < DATABASES:
        raise Reply("ERR DB index is out of range")
    return database_name(conn.server.config.default_set, index)


@command("time", 1, "readonly", "fast", keys=(0, 0, 0))
def time_(conn: Connection, args: list[bytes]) -> Any:
    now = conn.db._clock()
    seconds = int(now)
    return [b"%d" % seconds, b"%d" % int((now - seconds) * 1_000_000)]


# expiry ---------------------------------------------------------------------------------

_EXPIRE_FLAGS = (b"NX", b"XX", b"GT", b"LT")


def _expire(conn: Connection, args: list[bytes], name: str, unit: int, relative: bool) -> Write:
    flags: set[bytes] = set()
    for raw in args[2:]:
        option = raw.upper()
        if option not in _EXPIRE_FLAGS:
            raise Reply(f"ERR Unsupported option {raw.decode(errors='replace')}")
        flags.add(option)
    if b"NX" in flags and flags & {b"XX", b"GT", b"LT"}:
        raise Reply("ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in flags and b"LT" in flags:
        raise Reply("ERR GT and LT options at the same time are not compatible")
    when = parse_int(args[1])
    invalid = f"ERR invalid expire time in '{name}' command"
    if unit == 1000:
        if when > LLONG_MAX // 1000 or when < -(-LLONG_MIN // 1000):
            raise Reply(invalid)
        when *= 1000
    nx, xx, gt, lt = (flag in flags for flag in _EXPIRE_FLAGS)

    def apply(current: Current, now: int) -> Outcome:
        at = when
        if relative:
            if at > LLONG_MAX - now:
                raise error(invalid, True)
            at += now
        if not current.generation:
            return Outcome(0)
        has_ttl = current.expires_ms != 0
        if (
            (nx and has_ttl)
            or (xx and not has_ttl)
            or (gt and (not has_ttl or at <= current.expires_ms))
            or (lt and has_ttl and at >= current.expires_ms)
        ):
            return Outcome(0)
        if at <= now:
            return Outcome(1, None)
        return Outcome(1, KEEP, at)

    return transform(conn, key_of(args[0]), apply, raw=True)


@command("expire", -3, "write", "fast")
def expire(conn: Connection, args: list[bytes]) -> Any:
    return _expire(conn, args, "expire", 1000, relative=True)


@command("pexpire", -3, "write", "fast")
def pexpire(conn: Connection, args: list[bytes]) -> Any:
    return _expire(conn, args, "pexpire", 1, relative=True)


@command("expireat", -3, "write", "fast")
def expireat(conn: Connection, args: list[bytes]) -> Any:
    return _expire(conn, args, "expireat", 1000, relative=False)


@command("pexpireat", -3, "write", "fast")
def pexpireat(conn: Connection, args: list[bytes]) -> Any:
    return _expire(conn, args, "pexpireat", 1, relative=False)


def _ttl(conn: Connection, raw: bytes, in_ms: bool, absolute: bool) -> int:
    record = conn.records.get(key_of(raw))
    if record is None:
        return -2
    if record.expires_at is None:
        return -1
    # Records carry their expiry as float seconds: exact to the millisecond up to 2**53 ms
    # (the year 287396); past that PTTL is approximate (Redis accepts PEXPIREAT up to 2**63).
    at = min(round(record.expires_at * 1000), LLONG_MAX)
    ms = max(0, at if absolute else at - conn.db._now_ms())
    return ms if in_ms else (ms + 500) // 1000


@command("ttl", 2, "readonly", "fast")
def ttl(conn: Connection, args: list[bytes]) -> Any:
    return _ttl(conn, args[0], in_ms=False, absolute=False)


@command("pttl", 2, "readonly", "fast")
def pttl(conn: Connection, args: list[bytes]) -> Any:
    return _ttl(conn, args[0], in_ms=True, absolute=False)


@command("expiretime", 2, "readonly", "fast")
def expiretime(conn: Connection, args: list[bytes]) -> Any:
    return _ttl(conn, args[0], in_ms=False, absolute=True)


@command("pexpiretime", 2, "readonly", "fast")
def pexpiretime(conn: Connection, args: list[bytes]) -> Any:
    return _ttl(conn, args[0], in_ms=True, absolute=True)


def _persist(current: Current, now: int) -> Outcome:
    if not current.generation or not current.expires_ms:
        return Outcome(0)
    return Outcome(1, KEEP, 0)


@command("persist", 2, "write", "fast")
def persist(conn: Connection, args: list[bytes]) -> Any:
    return transform(conn, key_of(args[0]), _persist, raw=True)


# iteration ------------------------------------------------------------------------------


@command("keys", 2, "readonly", keys=(0, 0, 0))
def keys(conn: Connection, args: list[bytes]) -> Any:
    matches = compile_pattern(args[0])
    records = conn.records

    def collect() -> list[bytes]:
        found: list[bytes] = []
        for record in records.iterate():
            name = key_bytes(record.key)
            if matches(name):
                found.append(name)
        return found

    return Offload(collect, lambda found: found)


@command("randomkey", 1, "readonly", keys=(0, 0, 0))
def randomkey(conn: Connection, args: list[bytes]) -> Any:
    """A key of the selected database, each equally likely; nil when it has none.

    Redis draws from its hash table in O(1); the store is ordered, so this is a reservoir
    sample over one pass of the keys (O(N), off the event loop)."""
    records = conn.records

    def draw() -> bytes | None:
        chosen: bytes | None = None
        for seen, record in enumerate(records.iterate(), start=1):
            if _random.randrange(seen) == 0:
                chosen = key_bytes(record.key)
        return chosen

    return Offload(draw, lambda found: found)


def _parse_cursor(cursors: CursorTable, raw: bytes) -> str | None:
    """Our scan position (hex of an encoded key) for a SCAN cursor; None to start."""
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 1 << 64:
        raise Reply("ERR invalid cursor")
    number = int(raw)
    if number == 0:
        return None
    position = cursors.resolve(number)
    return None if position is None else position.hex()


def _cursor_of(cursors: CursorTable, position: str | None) -> bytes:
    if position is None:
        return b"0"
    return b"%d" % cursors.issue(bytes.fromhex(position))


def _scan_page(
    records: RecordSet,
    cursors: CursorTable,
    position: str | None,
    count: int,
    pattern: bytes | None,
    kind: str | None,
) -> list[Any]:
    try:
        page = records.scan(cursor=position, limit=count)
    except InvalidArgument:
        raise Reply("ERR invalid cursor") from None
    matches = compile_pattern(pattern) if pattern is not None else None
    found: list[bytes] = []
    for record in page.records:
        name = key_bytes(record.key)
        if matches is not None and not matches(name):
            continue
        if kind is not None and kind_of(record.bins) != kind:
            continue
        found.append(name)
    return [_cursor_of(cursors, page.cursor), found]


@command("scan", -2, "readonly", keys=(0, 0, 0))
def scan(conn: Connection, args: list[bytes]) -> Any:
    cursors = conn.server.scan_cursors
    position = _parse_cursor(cursors, args[0])
    count = 10
    pattern: bytes | None = None
    kind: str | None = None
    i = 1
    while i < len(args):
        option = args[i].upper()
        if i + 1 >= len(args):
            raise Reply("ERR syntax error")
        if option == b"COUNT":
            count = parse_int(args[i + 1])
            if count < 1:
                raise Reply("ERR syntax error")
        elif option == b"MATCH":
            pattern = None if args[i + 1] == b"*" else args[i + 1]
        elif option == b"TYPE":
            kind = args[i + 1].decode(errors="replace").lower()
        else:
            raise Reply("ERR syntax error")
        i += 2
    records = conn.records
    return Offload(
        lambda: _scan_page(records, cursors, position, count, pattern, kind), lambda r: r
    )
