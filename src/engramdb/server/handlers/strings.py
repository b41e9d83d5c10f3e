"""Redis string commands over ``$string`` records.

Expiry arguments follow Redis 7: options are parsed first (a bad combination is a syntax
error before any number is read), then the time, which must be positive and must not
overflow a signed 64-bit millisecond timestamp (GETEX reads it only once it has found a
string under the key). Counters (INCR...), APPEND and SETRANGE keep the key's TTL; SET,
GETSET and MSET replace it. INCRBYFLOAT computes in C ``long double``, as Redis does.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from engramdb.errors import RecordTooBig
from engramdb.records.codec import FORMAT, HEADER, HEADER_SIZE, encode_body
from engramdb.records.limits import Limits
from engramdb.records.writes import KEEP, Current, Outcome
from engramdb.recordset import RecordSet
from engramdb.server.commands import Offload, Reply, Write, command, wrong_args
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import (
    LLONG_MAX,
    LLONG_MIN,
    STRING_BIN,
    as_bytes,
    error,
    format_long_double,
    key_of,
    kind_of,
    parse_int,
    parse_long_double,
    record_key,
    string_in,
    string_of,
    transform,
    wrongtype,
)

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

_OVERFLOW = "ERR increment or decrement would overflow"
# How a Redis string's bins start, up to its length byte: a map of one bin, "$string",
# holding bytes (msgpack bin 8: a length byte, then the bytes).
_DIGITS_AT = encode_body({"$string": b""}, Limits())[:-1]
_HEADER_META = struct.Struct("<Qqq")  # generation, expires_at_ms, updated_at_ms (after FORMAT)
_MAX_STRING = 512 << 20  # Redis' proto-max-bulk-len


@command("get", 2, "readonly", "fast")
def get(conn: Connection, args: list[bytes]) -> Any:
    records = conn.records
    return string_in(records._live(record_key(records, args[0])))


@command("mget", -2, "readonly", "fast", keys=(1, -1, 1))
def mget(conn: Connection, args: list[bytes]) -> Any:
    out: list[bytes | None] = []
    for record in conn.records.get_many([key_of(raw) for raw in args]):
        bins = None if record is None else record.bins
        if bins is not None and len(bins) == 1 and STRING_BIN in bins:
            out.append(string_of(bins))
        else:
            out.append(None)  # MGET answers nil for a key of another type
    return out


@command("strlen", 2, "readonly", "fast")
def strlen(conn: Connection, args: list[bytes]) -> Any:
    record = conn.records.get(key_of(args[0]))
    return 0 if record is None else len(string_of(record.bins) or b"")


@command("getrange", 4, "readonly")
def getrange(conn: Connection, args: list[bytes]) -> Any:
    start, end = parse_int(args[1]), parse_int(args[2])
    record = conn.records.get(key_of(args[0]))
    value = b"" if record is None else string_of(record.bins) or b""
    size = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    start = max(0, start + size if start < 0 else start)
    end = max(0, end + size if end < 0 else end)
    end = min(end, size - 1)
    if start > end or size == 0:
        return b""
    return value[start : end + 1]


# SUBSTR is GETRANGE's pre-2.0 name, which Redis still answers (deprecated, same semantics).
command("substr", 4, "readonly")(getrange)


# SET and its relatives ------------------------------------------------------------------

# Milliseconds per unit of each time option, negative for an absolute time; then, per
# command, each option and the options it cannot be combined with (Redis'
# parseExtendedStringArgumentsOrReply as data).
_TIMES = {b"EX": 1000, b"PX": 1, b"EXAT": -1000, b"PXAT": -1}
_TIME_OPTIONS = frozenset(_TIMES)
_SET_EXCLUDES: dict[bytes, frozenset[bytes]] = {
    b"NX": frozenset({b"XX"}),
    b"XX": frozenset({b"NX"}),
    b"GET": frozenset(),
    b"KEEPTTL": _TIME_OPTIONS,
    **{name: frozenset({b"KEEPTTL"} | (_TIME_OPTIONS - {name})) for name in _TIMES},
}
_GETEX_EXCLUDES: dict[bytes, frozenset[bytes]] = {
    b"PERSIST": _TIME_OPTIONS,
    **{name: frozenset({b"PERSIST"} | (_TIME_OPTIONS - {name})) for name in _TIMES},
}


class _Expiry:
    """A parsed EX/PX/EXAT/PXAT argument: ``at(now)`` is the absolute expiry in ms."""

    __slots__ = ("absolute", "ms")

    def __init__(
        self, option: bytes, raw: bytes, name: str, now_ms: int, in_plan: bool = False
    ) -> None:
        amount = parse_int(raw, in_plan)
        scale = _TIMES[option]
        invalid = f"ERR invalid expire time in '{name}' command"
        if amount <= 0 or (abs(scale) == 1000 and amount > LLONG_MAX // 1000):
            raise error(invalid, in_plan)
        self.ms = amount * abs(scale)
        self.absolute = scale < 0
        if not self.absolute and self.ms > LLONG_MAX - now_ms:
            raise error(invalid, in_plan)

    def at(self, now: int) -> int:
        return self.ms if self.absolute else min(now + self.ms, LLONG_MAX)


def _parse_options(
    args: list[bytes], excludes: dict[bytes, frozenset[bytes]]
) -> tuple[set[bytes], tuple[bytes, bytes] | None]:
    """The flags, and the time option with its unparsed argument (SET parses it at once,
    GETEX only after finding a string under the key, as Redis does)."""
    flags: set[bytes] = set()
    time: tuple[bytes, bytes] | None = None
    i = 0
    while i < len(args):
        option = args[i].upper()
        rule = excludes.get(option)
        if rule is None or flags & rule:
            raise Reply("ERR syntax error")
        if option in _TIMES:
            if i + 1 >= len(args):
                raise Reply("ERR syntax error")
            time = (option, args[i + 1])  # a repeated option: the last one wins, as in Redis
            i += 1
        flags.add(option)
        i += 1
    return flags, time


def _ok(_: Any) -> Any:
    return OK


@command("set", -3, "write")
def set_(conn: Connection, args: list[bytes]) -> Any:
    if len(args) == 2:  # a plain SET: a put of the encoded value, nothing to decide
        records = conn.records
        body = encode_body({STRING_BIN: args[1]}, records._limits)
        return Write(records._plan_put_body(record_key(records, args[0]), body), _ok)
    flags, time = _parse_options(args[2:], _SET_EXCLUDES)
    expiry = None if time is None else _Expiry(*time, "set", conn.db._now_ms())
    key, bins = key_of(args[0]), {STRING_BIN: args[1]}
    if not flags:
        return Write(conn.records._plan_put(key, bins), _ok)
    return _set(conn, key, bins, flags, expiry)


def _set(
    conn: Connection,
    key: Key,
    bins: dict[str, Any],
    flags: set[bytes],
    expiry: _Expiry | None,
    reply: Any = None,
) -> Write:
    want_old = b"GET" in flags
    nx, xx, keep_ttl = b"NX" in flags, b"XX" in flags, b"KEEPTTL" in flags

    def apply(current: Current, now: int) -> Outcome:
        old = string_of(current.bins, in_plan=True) if want_old else None
        exists = current.generation > 0
        if (nx and exists) or (xx and not exists):
            return Outcome((False, old))
        if expiry is None:
            return Outcome((True, old), bins, KEEP if keep_ttl else 0)
        expires = expiry.at(now)
        if expires <= now:
            return Outcome((True, old), None)  # an absolute time in the past: gone at once
        return Outcome((True, old), bins, expires)

    def answer(result: tuple[bool, bytes | None]) -> Any:
        written, old = result
        if want_old:
            return old
        if reply is not None:
            return reply[written]
        return OK if written else None

    # Only SET ... GET needs the old value decoded; the rest look at existence alone.
    return transform(conn, key, apply, answer, raw=not want_old)


@command("setnx", 3, "write", "fast")
def setnx(conn: Connection, args: list[bytes]) -> Any:
    return _set(conn, key_of(args[0]), {STRING_BIN: args[1]}, {b"NX"}, None, (0, 1))


def _setex(conn: Connection, args: list[bytes], option: bytes, name: str) -> Any:
    expiry = _Expiry(option, args[1], name, conn.db._now_ms())
    return _set(conn, key_of(args[0]), {STRING_BIN: args[2]}, {option}, expiry)


@command("setex", 4, "write")
def setex(conn: Connection, args: list[bytes]) -> Any:
    return _setex(conn, args, b"EX", "setex")


@command("psetex", 4, "write")
def psetex(conn: Connection, args: list[bytes]) -> Any:
    return _setex(conn, args, b"PX", "psetex")


@command("getset", 3, "write", "fast")
def getset(conn: Connection, args: list[bytes]) -> Any:
    return _set(conn, key_of(args[0]), {STRING_BIN: args[1]}, {b"GET"}, None)


@command("mset", -3, "write", keys=(1, -1, 2))
def mset(conn: Connection, args: list[bytes]) -> Any:
    if len(args) % 2:
        raise wrong_args("mset")
    return _mset(conn, args, only_new=False)


@command("msetnx", -3, "write", keys=(1, -1, 2))
def msetnx(conn: Connection, args: list[bytes]) -> Any:
    if len(args) % 2:
        raise wrong_args("msetnx")
    return _mset(conn, args, only_new=True)


def _mset(conn: Connection, args: list[bytes], only_new: bool) -> Write:
    pairs = [(key_of(args[i]), args[i + 1]) for i in range(0, len(args), 2)]
    keys = [key for key, _ in pairs]
    # One transform over every key: MSETNX checks them all in the first items (which
    # write nothing) before any is set, so the whole command is one atomic decision.
    blocked = [False]

    def check(current: Current, now: int) -> Outcome:
        if current.generation:
            blocked[0] = True
        return Outcome(None)

    def setter(value: bytes) -> Any:
        def apply(current: Current, now: int) -> Outcome:
            if blocked[0]:
                return Outcome(0)
            return Outcome(1, {STRING_BIN: value}, 0)

        return apply

    items: list[Any] = [(key, check) for key in keys] if only_new else []
    items.extend((key, setter(value)) for key, value in pairs)
    plan = conn.records._plan_transform(items, raw=True)  # no old value is looked at

    def run(txn: Any) -> Any:
        blocked[0] = False  # a plan may be run again if its batch is retried
        return plan(txn)

    if only_new:
        return Write(run, lambda results: results[-1])
    return Write(plan, lambda _: OK)


@command("getdel", 2, "write", "fast")
def getdel(conn: Connection, args: list[bytes]) -> Any:
    def apply(current: Current, now: int) -> Outcome:
        value = string_of(current.bins, in_plan=True)
        return Outcome(value, None if value is not None else KEEP)

    return transform(conn, key_of(args[0]), apply)


@command("getex", -2, "write", "fast")
def getex(conn: Connection, args: list[bytes]) -> Any:
    flags, time = _parse_options(args[1:], _GETEX_EXCLUDES)
    persist = b"PERSIST" in flags

    def apply(current: Current, now: int) -> Outcome:
        value = string_of(current.bins, in_plan=True)
        if value is None:
            return Outcome(None)
        if time is not None:
            expiry = _Expiry(*time, "getex", now, in_plan=True)
            expires = expiry.at(now)
            if expires <= now:
                return Outcome(value, None)
            return Outcome(value, KEEP, expires)
        if persist and current.expires_ms:
            return Outcome(value, KEEP, 0)
        return Outcome(value)

    return transform(conn, key_of(args[0]), apply)


@command("append", 3, "write", "fast")
def append(conn: Connection, args: list[bytes]) -> Any:
    tail = args[1]
    limit = conn.db.limits.max_record_bytes

    def apply(current: Current, now: int) -> Outcome:
        value = string_of(current.bins, in_plan=True) or b""
        if len(value) + len(tail) > _MAX_STRING:
            raise error("ERR string exceeds maximum allowed size (proto-max-bulk-len)", True)
        if len(value) + len(tail) > limit:
            raise RecordTooBig(f"the string would exceed the record limit of {limit} bytes")
        joined = value + tail
        return Outcome(len(joined), {STRING_BIN: joined})

    return transform(conn, key_of(args[0]), apply)


@command("setrange", 4, "write")
def setrange(conn: Connection, args: list[bytes]) -> Any:
    offset, chunk = parse_int(args[1]), args[2]
    if offset < 0:
        raise Reply("ERR offset is out of range")
    limit = conn.db.limits.max_record_bytes

    def apply(current: Current, now: int) -> Outcome:
        value = string_of(current.bins, in_plan=True)
        if not chunk:
            return Outcome(0 if value is None else len(value))
        if offset + len(chunk) > _MAX_STRING:
            raise error("ERR string exceeds maximum allowed size (proto-max-bulk-len)", True)
        if offset + len(chunk) > limit:
            raise RecordTooBig(f"the string would exceed the record limit of {limit} bytes")
        value = value or b""
        if len(value) < offset:
            value += bytes(offset - len(value))
        joined = value[:offset] + chunk + value[offset + len(chunk) :]
        return Outcome(len(joined), {STRING_BIN: joined})

    return transform(conn, key_of(args[0]), apply)


# counters -------------------------------------------------------------------------------


def _stored_type(current: Current) -> type:
    """The Python type of a string record's value (a record written with the Python API may
    hold an int or a float there; counters keep that type)."""
    return type(current.bins[STRING_BIN]) if current.bins is not None else bytes


def _same(value: Any) -> Any:
    return value


def _incr(conn: Connection, raw_key: bytes, amount: int) -> Write:
    records = conn.records
    if type(records) is not RecordSet:  # inside MULTI or a script: the general path
        return _incr_general(conn, raw_key, amount)
    rk = record_key(records, raw_key)
    now_ms = conn.db._now_ms
    start = HEADER_SIZE + len(_DIGITS_AT)

    def fast(txn: WriteTxn) -> Any:
        # A counter stored as Redis strings are (one bin of decimal digits, as msgpack bin
        # 8) is read and rewritten in place, without decoding and encoding its bins; any
        # other record (absent, expiring now, an int written through the API) takes the
        # general path, which answers exactly as this one does.
        stored = txn.get(rk)
        if (
            stored is None
            or not stored.startswith(_DIGITS_AT, HEADER_SIZE)
            or len(stored) != start + 1 + stored[start]
        ):
            return _incr_general(conn, raw_key, amount).plan(txn)
        generation, expires, _ = _HEADER_META.unpack_from(stored, 1)
        now = now_ms()
        if expires and expires <= now:
            return _incr_general(conn, raw_key, amount).plan(txn)
        number = parse_int(stored[start + 1 :], in_plan=True)
        if (amount < 0 and number < 0 and amount < LLONG_MIN - number) or (
            amount > 0 and number > 0 and amount > LLONG_MAX - number
        ):
            raise error(_OVERFLOW, True)
        number += amount
        text = b"%d" % number
        generation += 1
        body = _DIGITS_AT + bytes((len(text),)) + text
        txn.put(rk, HEADER.pack(FORMAT, generation, expires, now) + body, expires, expires)
        txn.log("put", rk, generation, now)
        return number

    return Write(fast, _same)


def _incr_general(conn: Connection, raw_key: bytes, amount: int) -> Write:
    def apply(current: Current, now: int) -> Outcome:
        bins = current.bins
        if bins is None:
            number = 0
            stored_int = False
        else:
            if len(bins) != 1 or STRING_BIN not in bins:
                raise wrongtype(True)
            value = bins[STRING_BIN]
            # A record written with the Python API may hold an int: counters keep its type.
            stored_int = type(value) is int
            number = value if stored_int else parse_int(as_bytes(value), in_plan=True)
        if (amount < 0 and number < 0 and amount < LLONG_MIN - number) or (
            amount > 0 and number > 0 and amount > LLONG_MAX - number
        ):
            raise error(_OVERFLOW, True)
        number += amount
        return Outcome(number, {STRING_BIN: number if stored_int else b"%d" % number})

    return transform(conn, raw_key, apply)


@command("incr", 2, "write", "fast")
def incr(conn: Connection, args: list[bytes]) -> Any:
    return _incr(conn, args[0], 1)


@command("decr", 2, "write", "fast")
def decr(conn: Connection, args: list[bytes]) -> Any:
    return _incr(conn, args[0], -1)


@command("incrby", 3, "write", "fast")
def incrby(conn: Connection, args: list[bytes]) -> Any:
    return _incr(conn, args[0], parse_int(args[1]))


@command("decrby", 3, "write", "fast")
def decrby(conn: Connection, args: list[bytes]) -> Any:
    amount = parse_int(args[1])
    if amount == LLONG_MIN:
        raise Reply("ERR decrement would overflow")
    return _incr(conn, args[0], -amount)


@command("incrbyfloat", 3, "write", "fast")
def incrbyfloat(conn: Connection, args: list[bytes]) -> Any:
    import numpy as np

    raw_amount = args[1]

    def apply(current: Current, now: int) -> Outcome:
        value = string_of(current.bins, in_plan=True)
        number = parse_long_double(b"0" if value is None else value, in_plan=True)
        amount = parse_long_double(raw_amount, in_plan=True)
        with np.errstate(all="ignore"):
            total = number + amount
        if not np.isfinite(total):
            raise error("ERR increment would produce NaN or Infinity", True)
        text = format_long_double(total)
        stored = float(total) if _stored_type(current) is float else text
        return Outcome(text, {STRING_BIN: stored})

    return transform(conn, key_of(args[0]), apply)


# LCS -----------------------------------------------------------------------------------

# Redis refuses an LCS whose table would exceed proto-max-bulk-len; this table is Python
# ints computed on a worker thread, so the bound is far lower and stated in the error.
_LCS_MAX_CELLS = 1 << 22


@command("lcs", -3, "readonly", keys=(1, 2, 1))
def lcs(conn: Connection, args: list[bytes]) -> Any:
    """The longest common subsequence of two strings, as Redis 7: the string, its LEN, or
    with IDX the matching ranges (last first, as Redis walks back) filtered by MINMATCHLEN,
    each with its length under WITHMATCHLEN."""
    get_len = get_idx = with_len = False
    min_len = 0
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"LEN":
            get_len = True
        elif option == b"IDX":
            get_idx = True
        elif option == b"WITHMATCHLEN":
            with_len = True
        elif option == b"MINMATCHLEN" and i + 1 < len(args):
            min_len = max(0, parse_int(args[i + 1]))
            i += 1
        else:
            raise Reply("ERR syntax error")
        i += 1
    if get_len and get_idx:
        raise Reply("ERR If you want both the length and indexes, please just use IDX.")
    values: list[bytes] = []
    for raw in args[:2]:
        record = conn.records.get(key_of(raw))
        if record is not None and kind_of(record.bins) != "string":
            raise Reply("ERR The specified keys must hold string values")
        values.append(b"" if record is None else string_of(record.bins) or b"")
    a, b = values
    if (len(a) + 1) * (len(b) + 1) > _LCS_MAX_CELLS:
        raise Reply(
            f"ERR LCS of strings this long is not supported by engramdb "
            f"(len(a)+1)*(len(b)+1) must be at most {_LCS_MAX_CELLS}"
        )
    return Offload(lambda: _lcs(a, b, get_len, get_idx, with_len, min_len), lambda r: r)


def _lcs(a: bytes, b: bytes, get_len: bool, get_idx: bool, with_len: bool, min_len: int) -> Any:
    # table[i][j]: LCS length of a[:i] and b[:j] (Redis' lcsCommand, row-major).
    table = [[0] * (len(b) + 1)]
    for i in range(1, len(a) + 1):
        above, row, ch = table[i - 1], [0], a[i - 1]
        for j in range(1, len(b) + 1):
            row.append(above[j - 1] + 1 if ch == b[j - 1] else max(above[j], row[j - 1]))
        table.append(row)
    total = table[len(a)][len(b)]
    if get_len:
        return total
    out = bytearray(total)
    matches: list[Any] = []
    at = total
    i, j = len(a), len(b)
    a_start = len(a)  # no range open
    a_end = b_start = b_end = 0
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            out[at - 1] = a[i - 1]
            if a_start == len(a):
                a_start = a_end = i - 1
                b_start = b_end = j - 1
            elif a_start == i and b_start == j:
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            at, i, j = at - 1, i - 1, j - 1
        else:
            if table[i - 1][j] > table[i][j - 1]:
                i -= 1
            else:
                j -= 1
            if a_start != len(a):
                emit = True
        if emit:
            length = a_end - a_start + 1
            if min_len == 0 or length >= min_len:
                match: list[Any] = [[a_start, a_end], [b_start, b_end]]
                if with_len:
                    match.append(length)
                matches.append(match)
            a_start = len(a)
    if get_idx:
        return {b"matches": matches, b"len": total}
    return bytes(out)
