"""Redis set commands over per-element sets (``server/structures.py``).

Members are any bytes (empty included), one entry each: SADD, SREM, SISMEMBER and SMOVE
touch only their members. SMEMBERS, SSCAN and the set algebra list members in byte order
(Redis leaves the order unspecified). SPOP and SRANDMEMBER pick uniformly from sets of up
to 1,024 members and by probing the member space above that (``handlers/members.py``).
Commands over many members (SMEMBERS of a large set, SINTERSTORE...) run on a worker
thread. A set left empty is deleted, as Redis does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engramdb.protocol.resp import SetReply
from engramdb.server.commands import RedisError, Reply, command
from engramdb.server.handlers.members import parse_intercard, parse_scan, sample, scan_page
from engramdb.server.handlers.values import parse_int
from engramdb.server.structures import (
    SET,
    WRONGTYPE,
    Access,
    Found,
    Parsed,
    check_sizes,
    hot_write,
    key_of,
    read,
    record_set,
    save_header,
    write,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

__all__ = ["heavy"]

_LOOP_MEMBERS = 4096  # set algebra over more members than this commits off the event loop


def _check(a: Access, raw_key: bytes) -> Found:
    found = a.find(raw_key)
    if found.kind not in ("none", SET):
        raise RedisError(WRONGTYPE)
    return found


def _members(a: Access, found: Found) -> list[bytes]:
    if found.kind == "none":
        return []
    return [member for member, _ in a.pages(found)]


def _has(a: Access, found: Found, member: bytes) -> bool:
    return found.kind != "none" and a.get(found, member) is not None


def _add(a: Access, raw_key: bytes, members: list[bytes]) -> int:
    found = a.find(raw_key)
    if found.kind == "none":
        a.create(found, SET)
    added = 0
    for member in members:
        if a.get(found, member) is None:
            a.put(found, member, b"", new=True)
            added += 1
    if added:  # as in Redis, adding only members already there changes nothing
        found.length += added
        a.save(found)
    return added


def _remove(a: Access, found: Found, members: list[bytes]) -> int:
    removed = 0
    for member in members:
        if a.get(found, member) is not None:
            a.delete(found, member)
            removed += 1
    if removed:
        found.length -= removed
        a.save(found)
    return removed


def heavy(conn: Connection, raw_keys: list[bytes], limit: int = _LOOP_MEMBERS) -> bool:
    """Whether the structures under ``raw_keys`` look bigger than ``limit`` elements in all
    now (a hint, read without a transaction, for where O(n) work runs)."""
    if getattr(conn, "txn", None) is not None:
        return False
    records = record_set(conn)
    engine, now = conn.db._engine, conn.db._now_ms()
    total = 0
    for raw in raw_keys:
        rk = records._rk(key_of(raw))
        total += Found(rk, engine.get(rk), now).length
        if total > limit:
            return True
    return False


# writes ---------------------------------------------------------------------------------


@command("sadd", -3, "write", "fast")
def sadd(conn: Connection, args: list[bytes]) -> Any:
    key, members = args[0], list(dict.fromkeys(args[1:]))
    check_sizes(members, conn.db.limits.max_record_bytes)

    def apply(a: Access) -> int:
        _check(a, key)
        return _add(a, key, members)

    def fast(txn: WriteTxn, rk: bytes, parsed: Parsed, now: int) -> int:
        prefix = parsed[6]
        added = 0
        for member in members:  # as _add
            if txn.get(prefix + member) is None:
                txn.put(prefix + member, b"", 0, None)
                added += 1
        if added:
            save_header(txn, rk, parsed, parsed[2] + added, parsed[3], now)
        return added

    return hot_write(conn, key, SET, fast, apply)


@command("srem", -3, "write", "fast")
def srem(conn: Connection, args: list[bytes]) -> Any:
    key, members = args[0], list(dict.fromkeys(args[1:]))

    def apply(a: Access) -> int:
        found = _check(a, key)
        return 0 if found.kind == "none" else _remove(a, found, members)

    return write(conn, apply)


def _pop_count(raw: bytes) -> int:
    try:
        count = parse_int(raw)
    except Reply:
        count = -1
    if count < 0:
        raise Reply("ERR value is out of range, must be positive")
    return count


@command("spop", -2, "write", "fast")
def spop(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 2:
        raise Reply("ERR syntax error")
    count = _pop_count(args[1]) if len(args) == 2 else None
    key = args[0]

    def apply(a: Access) -> Any:
        found = _check(a, key)
        if found.kind == "none":
            return None if count is None else SetReply()
        picked = [member for member, _ in sample(a, found, count or 1, distinct=True)]
        if count == 0:
            picked = []
        _remove(a, found, picked)
        if count is None:
            return picked[0] if picked else None
        return SetReply(picked)

    return write(conn, apply)


@command("smove", 4, "write", "fast", keys=(1, 2, 1))
def smove(conn: Connection, args: list[bytes]) -> Any:
    src, dst, member = args

    def apply(a: Access) -> int:
        source = _check(a, src)
        if source.kind == "none":
            return 0  # before the destination's type, as Redis
        target = _check(a, dst)
        if not _has(a, source, member):
            return 0
        if source is target:
            return 1
        _remove(a, source, [member])
        _add(a, dst, [member])
        return 1

    return write(conn, apply)


# reads ----------------------------------------------------------------------------------


def _reader(conn: Connection, key: bytes, fn: Callable[[Access, Found], Any]) -> Any:
    return read(conn, lambda a: fn(a, _check(a, key)))


@command("smembers", 2, "readonly")
def smembers(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: SetReply(_members(a, found)))


@command("sismember", 3, "readonly", "fast")
def sismember(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: int(_has(a, found, args[1])))


@command("smismember", -3, "readonly", "fast")
def smismember(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: [int(_has(a, found, m)) for m in args[1:]])


@command("scard", 2, "readonly", "fast")
def scard(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: found.length)


@command("srandmember", -2, "readonly")
def srandmember(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 2:
        raise Reply("ERR syntax error")
    count = parse_int(args[1]) if len(args) == 2 else None
    if count is not None and count < -((1 << 63) - 1):
        raise Reply(
            "ERR value is out of range, value must between -9223372036854775807 and "
            "9223372036854775807"
        )

    def run(a: Access, found: Found) -> Any:
        if found.kind == "none":
            return None if count is None else []
        wanted = 1 if count is None else abs(count)
        picked = [member for member, _ in sample(a, found, wanted, distinct=(count or 1) > 0)]
        if count is None:
            return picked[0] if picked else None
        return picked

    return _reader(conn, args[0], run)


@command("sscan", -3, "readonly")
def sscan(conn: Connection, args: list[bytes]) -> Any:
    options = parse_scan(args[1:])

    def run(a: Access, found: Found) -> Any:
        if found.kind == "none":
            return [b"0", []]
        cursor, rows = scan_page(a, found, options)
        matches = options.matches
        return [cursor, [m for m, _ in rows if matches is None or matches(m)]]

    return _reader(conn, args[0], run)


# set algebra ----------------------------------------------------------------------------


def _algebra(a: Access, keys: list[bytes], op: str) -> list[bytes]:
    """The members of ``op`` (inter, union, diff) over the sets under ``keys``."""
    sets = [_check(a, key) for key in keys]  # WRONGTYPE for any of them, as in Redis
    if op == "inter":
        if any(found.kind == "none" for found in sets):
            return []
        smallest = min(sets, key=lambda found: found.length)
        others = [found for found in sets if found is not smallest]
        return [m for m in _members(a, smallest) if all(_has(a, f, m) for f in others)]
    if op == "union":
        union: dict[bytes, None] = {}
        for found in sets:
            union.update(dict.fromkeys(_members(a, found)))
        return sorted(union)
    first, rest = sets[0], sets[1:]
    return [m for m in _members(a, first) if not any(_has(a, f, m) for f in rest)]


def _store(a: Access, dst: bytes, members: list[bytes]) -> int:
    """Replace whatever ``dst`` holds with a set of ``members`` (deleted when empty)."""
    found = a.find(dst)
    a.remove(found)
    if members:
        _add(a, dst, members)
    return len(members)


def _algebra_command(op: str, store: bool) -> Callable[[Connection, list[bytes]], Any]:
    def handler(conn: Connection, args: list[bytes]) -> Any:
        if store:
            dst, keys = args[0], args[1:]
            return write(
                conn,
                lambda a: _store(a, dst, _algebra(a, keys, op)),
                heavy=heavy(conn, keys),
            )
        return read(conn, lambda a: SetReply(_algebra(a, args, op)))

    return handler


for _op in ("inter", "union", "diff"):
    command(f"s{_op}", -2, "readonly", keys=(1, -1, 1))(_algebra_command(_op, store=False))
    command(f"s{_op}store", -3, "write", keys=(1, -1, 1))(_algebra_command(_op, store=True))


@command("sintercard", -3, "readonly", keys=(0, 0, 0))
def sintercard(conn: Connection, args: list[bytes]) -> Any:
    keys, limit = parse_intercard(args, "sintercard")

    def run(a: Access) -> int:
        members = _algebra(a, keys, "inter")
        return min(len(members), limit) if limit else len(members)

    return read(conn, run)
