"""Redis list commands over per-element lists (``server/structures.py``).

A list is a deque of positions: pushes and pops at either end are O(1), LINDEX/LSET are
position arithmetic, LRANGE is one range scan, LTRIM removes what it cuts, and LINSERT and
LREM move the shorter side (O(n), as in Redis). A list left empty is deleted, as Redis does.
A list stored whole by earlier versions (one ``$list`` record) reads as it is and is
converted on its first write.

Blocking pops (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP) pop at once when they can;
otherwise the client is parked (``server/blocking.py``) until a push wakes it or its
timeout passes. Inside MULTI or a script they never block, as in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engramdb.protocol.resp import NULL_ARRAY
from engramdb.recordset import RecordSet
from engramdb.server.commands import Block, RedisError, Reply, Write, command, wrong_args
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import (
    LIST_BIN,
    WRONGTYPE,
    as_bytes,
    key_of,
    parse_int,
    parse_long_double,
    parse_numkeys,
)
from engramdb.server.structures import (
    LIST,
    PARSED,
    Access,
    Found,
    check_sizes,
    position,
    read,
    record_set,
    save_header,
    write,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

__all__ = ["blocking", "parse_timeout", "wake"]


# the list as stored ------------------------------------------------------------------------


def _legacy_items(found: Found) -> list[bytes]:
    """The items of a list stored whole (one ``$list`` record)."""
    items = found.bins()[LIST_BIN]
    return [as_bytes(item) for item in (items if type(items) is list else [items])]


def _writable(a: Access, raw_key: bytes, create: bool) -> Found | None:
    """The list under ``raw_key`` ready to edit (created when ``create``), None when
    absent; WRONGTYPE for another type. Call once every check of the command passed."""
    found = a.find(raw_key)
    if found.kind == "none":
        if not create:
            return None
        a.create(found, LIST)
        return found
    if found.kind != LIST:
        raise RedisError(WRONGTYPE)
    if found.legacy:
        items = _legacy_items(found)
        a.create(found, LIST)
        _push(a, found, items, left=False)
    return found


def _editable(a: Access, raw_key: bytes) -> Found:
    """The list under ``raw_key``, which the command checked is one, ready to edit."""
    found = _writable(a, raw_key, create=False)
    assert found is not None
    return found


def _created(a: Access, raw_key: bytes) -> Found:
    """The list under ``raw_key`` ready to edit, created when absent."""
    found = _writable(a, raw_key, create=True)
    assert found is not None
    return found


def _check(a: Access, raw_key: bytes) -> Found:
    """The list under ``raw_key`` for a read or a check (absent: kind "none")."""
    found = a.find(raw_key)
    if found.kind not in ("none", LIST):
        raise RedisError(WRONGTYPE)
    return found


def _push(a: Access, found: Found, values: list[bytes], left: bool) -> None:
    for value in values:
        if left:
            found.head -= 1
            a.put(found, position(found.head), value, new=True)
        else:
            a.put(found, position(found.head + found.length), value, new=True)
        found.length += 1


def _pop(a: Access, found: Found, count: int, left: bool) -> list[bytes]:
    """Take up to ``count`` items from one end (header saved by the caller)."""
    count = min(count, found.length)
    if count <= 0:
        return []
    if count == 1:
        pos = found.head if left else found.head + found.length - 1
        value = a.get(found, position(pos))
        a.delete(found, position(pos))
        items = [] if value is None else [value]
    else:
        lo = found.head if left else found.head + found.length - count
        rows = a.range(found, position(lo), position(lo + count), count, reverse=not left)
        for sub, _ in rows:
            a.delete(found, sub)
        items = [value for _, value in rows]
    if left:
        found.head += count
    found.length -= count
    return items


def _items(a: Access, found: Found, start: int, stop: int) -> list[bytes]:
    """Items ``start..stop`` (inclusive indexes, already clamped)."""
    if found.legacy:
        return _legacy_items(found)[start : stop + 1]
    lo, hi = found.head + start, found.head + stop + 1
    return [value for _, value in a.range(found, position(lo), position(hi), hi - lo)]


def _all(a: Access, found: Found) -> list[bytes]:
    if found.legacy:
        return _legacy_items(found)
    return [value for _, value in a.pages(found)]


def _length(a: Access, found: Found) -> int:
    return len(_legacy_items(found)) if found.legacy else found.length


def _rewrite(a: Access, found: Found, items: list[bytes], old: list[bytes]) -> None:
    """Store ``items`` as the whole list, replacing ``old`` (its current items): only the
    positions whose item changes are written."""
    for index in range(max(len(items), len(old))):
        sub = position(found.head + index)
        if index >= len(items):
            a.delete(found, sub)
        elif index >= len(old) or old[index] != items[index]:
            a.put(found, sub, items[index], new=index >= len(old))
    found.length = len(items)


def wake(conn: Connection, raw_key: bytes, count: int) -> None:
    """Let clients blocked on ``raw_key`` try again (after a push committed)."""
    blocked = conn.server.blocked
    if blocked and count > 0 and getattr(conn, "txn", None) is None:  # anyone parked at all
        blocked.wake(record_set(conn).name, raw_key, count)


# pushes ---------------------------------------------------------------------------------


def _pusher(conn: Connection, args: list[bytes], left: bool, only_existing: bool) -> Any:
    values = args[1:]
    limit = conn.db.limits.max_record_bytes
    if len(values) > 1 or len(values[0]) > limit:
        check_sizes(values, limit)
    key = args[0]
    records = conn.records
    if type(records) is not RecordSet or getattr(conn, "txn", None) is not None:
        # MULTI, scripts: the general path (no blocked client is woken from inside them).
        return write(conn, lambda a: _push_into(a, key, values, left, only_existing))
    rk = records._rk_of_text(key) if key.isascii() else records._rk(key_of(key))
    now_ms = conn.db._now_ms
    blocked = conn.server.blocked
    pushed = len(values)

    def plan(txn: WriteTxn) -> int:
        now = now_ms()
        parsed = PARSED.get(txn.get(rk))  # type: ignore[arg-type]
        if parsed is None or parsed[0] != LIST or 0 < parsed[5] <= now:
            return _push_into(Access(txn, records, now, txn), key, values, left, only_existing)
        # A live list whose header is parsed already (the common case: a hot list): as
        # ``_push_into`` and ``Access.save``, without ``Access`` and ``Found``.
        length, head, prefix = parsed[2], parsed[3], parsed[6]
        for value in values:
            if left:
                head -= 1
                txn.put(prefix + position(head), value, 0, None)
            else:
                txn.put(prefix + position(head + length), value, 0, None)
            length += 1
        save_header(txn, rk, parsed, length, head, now)
        return length

    def reply(length: int) -> int:
        if blocked.parked:
            blocked.wake(records.name, key, pushed)
        return length

    return Write(plan, reply)


def _push_into(a: Access, key: bytes, values: list[bytes], left: bool, only_existing: bool) -> int:
    if only_existing and _check(a, key).kind == "none":
        return 0
    found = _created(a, key)
    _push(a, found, values, left)
    a.save(found)
    return found.length


@command("lpush", -3, "write", "fast")
def lpush(conn: Connection, args: list[bytes]) -> Any:
    return _pusher(conn, args, left=True, only_existing=False)


@command("rpush", -3, "write", "fast")
def rpush(conn: Connection, args: list[bytes]) -> Any:
    return _pusher(conn, args, left=False, only_existing=False)


@command("lpushx", -3, "write", "fast")
def lpushx(conn: Connection, args: list[bytes]) -> Any:
    return _pusher(conn, args, left=True, only_existing=True)


@command("rpushx", -3, "write", "fast")
def rpushx(conn: Connection, args: list[bytes]) -> Any:
    return _pusher(conn, args, left=False, only_existing=True)


# pops -----------------------------------------------------------------------------------


def _pop_count(raw: bytes) -> int:
    try:
        count = parse_int(raw)
    except Reply:
        count = -1
    if count < 0:
        raise Reply("ERR value is out of range, must be positive")
    return count


def _popper(conn: Connection, args: list[bytes], left: bool, name: str) -> Any:
    if len(args) > 2:
        raise wrong_args(name)
    count = _pop_count(args[1]) if len(args) == 2 else None
    key = args[0]
    records = conn.records
    if (
        count is not None
        or type(records) is not RecordSet
        or getattr(conn, "txn", None) is not None
    ):
        return write(conn, lambda a: _pop_from(a, key, count, left))
    rk = records._rk_of_text(key) if key.isascii() else records._rk(key_of(key))
    now_ms = conn.db._now_ms

    def plan(txn: WriteTxn) -> Any:
        now = now_ms()
        parsed = PARSED.get(txn.get(rk))  # type: ignore[arg-type]
        # The list goes with its last item: the general path removes it.
        if parsed is None or parsed[0] != LIST or 0 < parsed[5] <= now or parsed[2] <= 1:
            return _pop_from(Access(txn, records, now, txn), key, None, left)
        # A live list whose header is parsed already (the common case: a hot list): as
        # ``_pop_from`` and ``Access.save`` for one item, without ``Access`` and ``Found``.
        length, head, prefix = parsed[2], parsed[3], parsed[6]
        sub = prefix + position(head if left else head + length - 1)
        value = txn.get(sub)
        txn.delete(sub, 0)
        save_header(txn, rk, parsed, length - 1, head + 1 if left else head, now)
        return value

    return Write(plan, _same)


def _pop_from(a: Access, key: bytes, count: int | None, left: bool) -> Any:
    found = _check(a, key)
    if found.kind == "none":
        return None if count is None else NULL_ARRAY
    if count == 0:
        return []
    found = _editable(a, key)
    items = _pop(a, found, 1 if count is None else count, left)
    a.save(found)
    if count is None:
        return items[0] if items else None
    return items


@command("lpop", -2, "write", "fast")
def lpop(conn: Connection, args: list[bytes]) -> Any:
    return _popper(conn, args, left=True, name="lpop")


@command("rpop", -2, "write", "fast")
def rpop(conn: Connection, args: list[bytes]) -> Any:
    return _popper(conn, args, left=False, name="rpop")


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

    def run(a: Access) -> Any:
        found = _check(a, args[0])
        if found.kind == "none":
            return []
        span = _span(start, stop, _length(a, found))
        return [] if span is None else _items(a, found, *span)

    return read(conn, run)


@command("llen", 2, "readonly", "fast")
def llen(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access) -> Any:
        found = _check(a, args[0])
        return 0 if found.kind == "none" else _length(a, found)

    return read(conn, run)


@command("lindex", 3, "readonly")
def lindex(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access) -> Any:
        found = _check(a, args[0])
        if found.kind == "none":
            return None
        index = parse_int(args[1])
        size = _length(a, found)
        if index < 0:
            index += size
        if not 0 <= index < size:
            return None
        if found.legacy:
            return _legacy_items(found)[index]
        return a.get(found, position(found.head + index))

    return read(conn, run)


def _non_negative(raw: bytes, message: str) -> int:
    """A count that must be a non-negative integer; Redis gives one message for both."""
    try:
        value = parse_int(raw)
    except Reply:
        raise Reply(message) from None
    if value < 0:
        raise Reply(message)
    return value


@command("lpos", -3, "readonly")
def lpos(conn: Connection, args: list[bytes]) -> Any:
    key, wanted = args[0], args[1]
    rank, count, maxlen = 1, None, 0
    i = 2
    while i < len(args):
        option = args[i].upper()
        if i + 1 >= len(args) or option not in (b"RANK", b"COUNT", b"MAXLEN"):
            raise Reply("ERR syntax error")
        if option == b"RANK":
            value = parse_int(args[i + 1])
            if value == 0:
                raise Reply(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the "
                    "second ... or use negative to start from the end of the list"
                )
            rank = value
        elif option == b"COUNT":
            count = _non_negative(args[i + 1], "ERR COUNT can't be negative")
        else:
            maxlen = _non_negative(args[i + 1], "ERR MAXLEN can't be negative")
        i += 2

    def run(a: Access) -> Any:
        found = _check(a, key)
        if found.kind == "none":
            return None if count is None else []
        size = _length(a, found)
        forward = rank > 0
        skip = abs(rank) - 1
        matches: list[int] = []
        limit = maxlen or size
        if found.legacy:
            items = _legacy_items(found)
            order = range(size) if forward else range(size - 1, -1, -1)
            pairs: Any = ((index, items[index]) for index in order)
        else:
            base = found.head
            pairs = (
                (int.from_bytes(sub, "big") - (1 << 63) - base, value)
                for sub, value in a.pages(found, reverse=not forward)
            )
        for seen, (index, value) in enumerate(pairs):
            if seen >= limit:
                break
            if value != wanted:
                continue
            if skip:
                skip -= 1
                continue
            matches.append(index)
            if count is None or (count and len(matches) >= count):
                break
        if count is None:
            return matches[0] if matches else None
        return matches

    return read(conn, run)


# edits ----------------------------------------------------------------------------------


@command("ltrim", 4, "write")
def ltrim(conn: Connection, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])
    key = args[0]

    def apply(a: Access) -> Any:
        if _check(a, key).kind == "none":
            return OK
        found = _editable(a, key)
        span = _span(start, stop, found.length) or (found.length, found.length - 1)
        keep_from, keep_to = span
        for index in [*range(keep_from), *range(keep_to + 1, found.length)]:
            a.delete(found, position(found.head + index))
        found.head += keep_from
        found.length = max(0, keep_to - keep_from + 1)
        a.save(found)
        return OK

    return write(conn, apply, heavy=_longer_than(conn, key, 4096))


@command("lset", 4, "write")
def lset(conn: Connection, args: list[bytes]) -> Any:
    key, raw_index, value = args
    check_sizes([value], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> Any:
        found = _check(a, key)
        if found.kind == "none":
            raise RedisError("ERR no such key")
        index = parse_int(raw_index, in_plan=True)
        size = _length(a, found)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise RedisError("ERR index out of range")
        found = _editable(a, key)
        a.put(found, position(found.head + index), value, new=False)
        a.save(found)
        return OK

    return write(conn, apply)


@command("lrem", 4, "write")
def lrem(conn: Connection, args: list[bytes]) -> Any:
    key, wanted = args[0], args[2]
    count = parse_int(args[1])

    def apply(a: Access) -> Any:
        if _check(a, key).kind == "none":
            return 0
        found = _editable(a, key)
        old = _all(a, found)
        order = range(len(old)) if count >= 0 else range(len(old) - 1, -1, -1)
        gone: set[int] = set()
        for index in order:
            if old[index] == wanted:
                gone.add(index)
                if count and len(gone) == abs(count):
                    break
        if not gone:
            return 0
        items = [item for index, item in enumerate(old) if index not in gone]
        _rewrite(a, found, items, old)
        a.save(found)
        return len(gone)

    return write(conn, apply, heavy=_longer_than(conn, key, 4096))


@command("linsert", 5, "write")
def linsert(conn: Connection, args: list[bytes]) -> Any:
    key, where, pivot, value = args
    side = where.upper()
    if side not in (b"BEFORE", b"AFTER"):
        raise Reply("ERR syntax error")
    check_sizes([value], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> Any:
        if _check(a, key).kind == "none":
            return 0
        found = _editable(a, key)
        old = _all(a, found)
        try:
            at = old.index(pivot)
        except ValueError:
            return -1
        if side == b"AFTER":
            at += 1
        if at < len(old) - at:
            # Move the front: every item before ``at`` one position towards the head.
            for index in range(at):
                a.put(found, position(found.head + index - 1), old[index], new=index == 0)
            found.head -= 1
            a.put(found, position(found.head + at), value, new=at == 0)
        else:
            last = len(old) - 1
            for index in range(last, at - 1, -1):
                a.put(found, position(found.head + index + 1), old[index], new=index == last)
            a.put(found, position(found.head + at), value, new=at == len(old))
        found.length += 1
        a.save(found)
        return found.length

    def reply(length: int) -> int:
        wake(conn, key, 1)
        return length

    return write(conn, apply, reply, heavy=_longer_than(conn, key, 4096))


def _longer_than(conn: Connection, raw_key: bytes, size: int) -> bool:
    """Whether the list under ``raw_key`` looks longer than ``size`` now (a hint for where
    O(n) work runs, read without a transaction)."""
    if getattr(conn, "txn", None) is not None:
        return False
    rk = record_set(conn)._rk(key_of(raw_key))
    return Found(rk, conn.db._engine.get(rk), conn.db._now_ms()).length > size


# moves ----------------------------------------------------------------------------------

_SIDES = {b"LEFT": True, b"RIGHT": False}


def _side(raw: bytes) -> bool:
    side = _SIDES.get(raw.upper())
    if side is None:
        raise Reply("ERR syntax error")
    return side


def _mover(src: bytes, dst: bytes, from_left: bool, to_left: bool) -> Callable[[Access], Any]:
    def apply(a: Access) -> Any:
        source = _check(a, src)
        if source.kind == "none":
            return None
        _check(a, dst)
        source = _editable(a, src)
        items = _pop(a, source, 1, from_left)
        if not items:
            return None
        target = _created(a, dst)
        _push(a, target, items, to_left)
        # the destination's change first: Redis notifies the push, then the pop
        if target is not source:
            a.save(target)
        a.save(source)
        return items[0]

    return apply


def _moved(conn: Connection, dst: bytes) -> Callable[[Any], Any]:
    def reply(value: Any) -> Any:
        if value is not None:
            wake(conn, dst, 1)
        return value

    return reply


@command("lmove", 5, "write", keys=(1, 2, 1))
def lmove(conn: Connection, args: list[bytes]) -> Any:
    from_left, to_left = _side(args[2]), _side(args[3])
    return write(conn, _mover(args[0], args[1], from_left, to_left), _moved(conn, args[1]))


@command("rpoplpush", 3, "write", keys=(1, 2, 1))
def rpoplpush(conn: Connection, args: list[bytes]) -> Any:
    return write(conn, _mover(args[0], args[1], False, True), _moved(conn, args[1]))


def _parse_mpop(args: list[bytes], sides: dict[bytes, Any]) -> tuple[list[bytes], Any, int]:
    """``numkeys key... side [COUNT n]`` of LMPOP/ZMPOP: (keys, side, count)."""
    numkeys = parse_numkeys(args[0])
    if len(args) < numkeys + 2:
        raise Reply("ERR syntax error")
    keys = args[1 : numkeys + 1]
    side = sides.get(args[numkeys + 1].upper())
    if side is None:
        raise Reply("ERR syntax error")
    rest = args[numkeys + 2 :]
    count = 1
    if rest:
        if len(rest) != 2 or rest[0].upper() != b"COUNT":
            raise Reply("ERR syntax error")
        try:
            count = parse_int(rest[1])
        except Reply:
            count = 0
        if count <= 0:
            raise Reply("ERR count should be greater than 0")
    return keys, side, count


def _mpopper(keys: list[bytes], left: bool, count: int) -> Callable[[Access], Any]:
    def apply(a: Access) -> Any:
        for key in keys:
            found = _check(a, key)
            if found.kind == "none":
                continue
            found = _editable(a, key)
            items = _pop(a, found, count, left)
            a.save(found)
            return [key, items]
        return None

    return apply


@command("lmpop", -4, "write", keys=(0, 0, 0))
def lmpop(conn: Connection, args: list[bytes]) -> Any:
    keys, left, count = _parse_mpop(args, _SIDES)
    return write(conn, _mpopper(keys, left, count), _nil_array)


def _nil_array(value: Any) -> Any:
    return NULL_ARRAY if value is None else value


# blocking -------------------------------------------------------------------------------


def parse_timeout(raw: bytes, now_ms: int) -> float | None:
    """A blocking command's timeout in seconds (Redis' rules, as on x86-64); None: none."""
    value = parse_long_double(raw, "ERR timeout is not a float or out of range")
    ms = value * 1000
    if ms >= (1 << 63) or ms < 0:
        raise Reply("ERR timeout is negative")  # what (long long) of a huge value gives
    whole = int(ms)
    if whole > (1 << 63) - 1 - now_ms:
        raise Reply("ERR timeout is out of range")
    return None if whole == 0 else whole / 1000


def blocking(
    conn: Connection,
    keys: list[bytes],
    kind: str,
    timeout: float | None,
    attempt: Callable[[Access], Any],
    done: Callable[[Any], Any],
    timed_out: Any,
) -> Any:
    """Try ``attempt`` (a write returning None when there was nothing to take); if it took
    nothing, park the client until a push to ``keys`` or ``timeout``, then try again."""
    in_transaction = getattr(conn, "txn", None) is not None
    # On the server's clock: the fake one under --testing, so tests time out a BLPOP by
    # moving it instead of sleeping.
    deadline = None if timeout is None or in_transaction else conn.server.now() + timeout
    set_name = record_set(conn).name

    def step() -> Any:
        return write(conn, attempt, after)

    def after(value: Any) -> Any:
        if value is not None:
            return done(value)
        if in_transaction:
            return timed_out  # Redis never blocks inside MULTI or a script
        return Block(set_name, keys, kind, deadline, step, timed_out)

    return step()


@command("blpop", -3, "write", "blocking", keys=(1, -2, 1))
def blpop(conn: Connection, args: list[bytes]) -> Any:
    return _bpop(conn, args, left=True)


@command("brpop", -3, "write", "blocking", keys=(1, -2, 1))
def brpop(conn: Connection, args: list[bytes]) -> Any:
    return _bpop(conn, args, left=False)


def _bpop(conn: Connection, args: list[bytes], left: bool) -> Any:
    keys = args[:-1]
    timeout = parse_timeout(args[-1], conn.db._now_ms())

    def attempt(a: Access) -> Any:
        result = _mpopper(keys, left, 1)(a)
        return None if result is None else [result[0], result[1][0]]

    return blocking(conn, keys, LIST, timeout, attempt, _same, NULL_ARRAY)


def _same(value: Any) -> Any:
    return value


@command("brpoplpush", 4, "write", "blocking", keys=(1, 2, 1))
def brpoplpush(conn: Connection, args: list[bytes]) -> Any:
    timeout = parse_timeout(args[2], conn.db._now_ms())
    mover = _mover(args[0], args[1], False, True)
    return blocking(conn, [args[0]], LIST, timeout, mover, _moved(conn, args[1]), None)


@command("blmove", 6, "write", "blocking", keys=(1, 2, 1))
def blmove(conn: Connection, args: list[bytes]) -> Any:
    from_left, to_left = _side(args[2]), _side(args[3])
    timeout = parse_timeout(args[4], conn.db._now_ms())
    mover = _mover(args[0], args[1], from_left, to_left)
    return blocking(conn, [args[0]], LIST, timeout, mover, _moved(conn, args[1]), None)


@command("blmpop", -5, "write", "blocking", keys=(0, 0, 0))
def blmpop(conn: Connection, args: list[bytes]) -> Any:
    timeout = parse_timeout(args[0], conn.db._now_ms())
    keys, left, count = _parse_mpop(args[1:], _SIDES)
    return blocking(conn, keys, LIST, timeout, _mpopper(keys, left, count), _same, NULL_ARRAY)
