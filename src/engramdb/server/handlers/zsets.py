"""Redis sorted-set commands over per-element sorted sets (``server/structures.py``).

Each member has two entries: member -> score, and (order-preserving score, member) -> "",
so ZADD/ZREM/ZSCORE are point operations and score or lex ranges are range scans. Ranks
count entries: ZRANK and rank ranges cost O(rank) (from whichever end is nearer), where
Redis' skiplist takes O(log n). Scores are IEEE 754 doubles, replied as Redis 7.0 writes
them (``%.17g``). BYLEX ranges assume equal scores, as Redis does. ZPOPMIN/ZPOPMAX and their
blocking forms take from the ends of the order. A sorted set left empty is deleted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from engramdb.protocol.resp import NULL_ARRAY, Double
from engramdb.recordset import after_prefix
from engramdb.server.commands import RedisError, Reply, command
from engramdb.server.handlers.lists import _parse_mpop, blocking, parse_timeout, wake
from engramdb.server.handlers.members import (
    parse_intercard,
    parse_scan,
    random_count,
    sample,
    scan_page,
)
from engramdb.server.handlers.sets import heavy
from engramdb.server.handlers.values import parse_int
from engramdb.server.structures import (
    GENERAL,
    SET,
    WRONGTYPE,
    ZSET,
    Access,
    Found,
    Parsed,
    check_sizes,
    hot_write,
    ordered_score,
    read,
    score_bytes,
    score_of,
    write,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

__all__: list[str] = []

_M, _S, _S_END = b"m", b"s", b"t"
_F64 = struct.Struct(">d")
_NOT_FLOAT = "ERR value is not a valid float"
_MIN_MAX = "ERR min or max is not a float"
_LEX = "ERR min or max not valid string range item"
_INF = float("inf")


# numbers ----------------------------------------------------------------------------------


def parse_score(raw: bytes, text: str = _NOT_FLOAT) -> float:
    """A score argument as Redis' ``strtod`` check reads it (no NaN, no overflow)."""
    if not raw or raw[:1].isspace() or raw[-1:].isspace() or b"_" in raw:
        raise Reply(text)
    try:
        value = float(raw)
    except ValueError:
        raise Reply(text) from None
    if value != value:
        raise Reply(text)
    lowered = raw.lower()
    if value in (_INF, -_INF) and b"inf" not in lowered:
        raise Reply(text)  # overflow: strtod's ERANGE
    # A zero with a nonzero digit before its exponent: an underflow to zero, ERANGE as
    # well (float() took it, so that part holds only a sign, digits and a point).
    if value == 0 and lowered.split(b"e", 1)[0].translate(None, b"+-.0"):
        raise Reply(text)
    return value


def _range_float(raw: bytes) -> float:
    """A bound of a score range, as Redis' bare ``strtod`` takes it."""
    text = raw.lstrip(b" \t\n\v\f\r")
    if not text:
        return 0.0  # strtod reads nothing and stops at the end: Redis takes it as 0
    if text[-1:].isspace() or b"_" in text:
        raise Reply(_MIN_MAX)
    try:
        value = float(text)
    except ValueError:
        raise Reply(_MIN_MAX) from None
    if value != value:
        raise Reply(_MIN_MAX)
    return value


class _ScoreRange:
    __slots__ = ("high", "high_open", "low", "low_open")

    def __init__(self, low: bytes, high: bytes) -> None:
        self.low_open = low[:1] == b"("
        self.high_open = high[:1] == b"("
        self.low = _range_float(low[1:] if self.low_open else low)
        self.high = _range_float(high[1:] if self.high_open else high)

    def empty(self) -> bool:
        return self.low > self.high or (self.low == self.high and (self.low_open or self.high_open))

    def bounds(self) -> tuple[bytes, bytes]:
        """The element-key range ``[lo, hi)`` of the order index holding this range."""
        low = _S + score_bytes(self.low)
        high = _S + score_bytes(self.high)
        start = after_prefix(low) if self.low_open else low
        return start, (high if self.high_open else after_prefix(high))


_MINUS, _PLUS = object(), object()  # "-" and "+": below and above every member


class _LexRange:
    """A BYLEX range: each bound a member (with its exclusiveness), ``_MINUS`` or ``_PLUS``."""

    __slots__ = ("high", "high_open", "low", "low_open")

    def __init__(self, low: bytes, high: bytes) -> None:
        self.low, self.low_open = _lex_item(low)
        self.high, self.high_open = _lex_item(high)

    def above_low(self, member: bytes) -> bool:
        low = self.low
        if low is _MINUS:
            return True
        if low is _PLUS:
            return False
        return bool(member > low if self.low_open else member >= low)

    def below_high(self, member: bytes) -> bool:
        high = self.high
        if high is _PLUS:
            return True
        if high is _MINUS:
            return False
        return bool(member < high if self.high_open else member <= high)


def _lex_item(raw: bytes) -> tuple[Any, bool]:
    if raw == b"-":
        return _MINUS, False
    if raw == b"+":
        return _PLUS, False
    if raw[:1] == b"[":
        return raw[1:], False
    if raw[:1] == b"(":
        return raw[1:], True
    raise Reply(_LEX)


def _lex_range(low: bytes, high: bytes) -> _LexRange:
    return _LexRange(low, high)


# the stored sorted set --------------------------------------------------------------------


def _check(a: Access, raw_key: bytes) -> Found:
    found = a.find(raw_key)
    if found.kind not in ("none", ZSET):
        raise RedisError(WRONGTYPE)
    return found


def _score(a: Access, found: Found, member: bytes) -> float | None:
    if found.kind == "none":
        return None
    raw = a.get(found, _M + member)
    return None if raw is None else score_of(raw)


def _set(a: Access, found: Found, member: bytes, old: float | None, score: float) -> None:
    if old is not None:
        a.delete(found, _S + score_bytes(old) + member)
    a.put(found, _M + member, _F64.pack(score), new=old is None)
    a.put(found, _S + score_bytes(score) + member, b"", new=True)
    if old is None:
        found.length += 1


def _drop(a: Access, found: Found, member: bytes, score: float) -> None:
    a.delete(found, _M + member)
    a.delete(found, _S + score_bytes(score) + member)
    found.length -= 1


def _entry(sub: bytes) -> tuple[bytes, float]:
    return sub[9:], ordered_score(sub[1:9])


def _walk(
    a: Access, found: Found, reverse: bool = False, lo: bytes = _S, hi: bytes = _S_END
) -> Iterator[tuple[bytes, float]]:
    """(member, score) in score order (or reversed), within order keys ``[lo, hi)``."""
    if found.kind == "none":
        return
    for sub, _ in a.pages(found, lo, hi, reverse):
        yield _entry(sub)


def _by_rank(
    a: Access, found: Found, start: int, stop: int, reverse: bool
) -> list[tuple[bytes, float]]:
    """Entries ``start..stop`` (inclusive, already clamped) of the order (or reversed),
    walked from whichever end is nearer."""
    size = found.length
    if size - 1 - stop < start:
        near = islice(_walk(a, found, not reverse), size - 1 - stop, size - start)
        return list(near)[::-1]
    return list(islice(_walk(a, found, reverse), start, stop + 1))


def _by_score(
    a: Access, found: Found, bounds: _ScoreRange, reverse: bool
) -> Iterator[tuple[bytes, float]]:
    if bounds.empty():
        return iter(())
    lo, hi = bounds.bounds()
    return _walk(a, found, reverse, lo, hi)


def _by_lex(
    a: Access, found: Found, bounds: _LexRange, reverse: bool
) -> Iterator[tuple[bytes, float]]:
    """Members in a lex range (scores equal, as Redis assumes): from the first member past
    the low bound (from the end: before the high bound), while within the other bound."""
    entries = _walk(a, found, reverse)
    if not reverse:
        for member, score in entries:
            if bounds.above_low(member):
                if not bounds.below_high(member):
                    return
                yield member, score
                break
        for member, score in entries:
            if not bounds.below_high(member):
                return
            yield member, score
    else:
        for member, score in entries:
            if bounds.below_high(member):
                if not bounds.above_low(member):
                    return
                yield member, score
                break
        for member, score in entries:
            if not bounds.above_low(member):
                return
            yield member, score


def _rank_span(start: int, stop: int, size: int) -> tuple[int, int] | None:
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    start = max(start, 0)
    if start > stop or start >= size:
        return None
    return start, min(stop, size - 1)


def _scores(rows: list[tuple[bytes, float]], with_scores: bool, resp3: bool) -> list[Any]:
    if not with_scores:
        return [member for member, _ in rows]
    if resp3:
        return [[member, Double(score)] for member, score in rows]
    return [part for member, score in rows for part in (member, Double(score))]


def _store(a: Access, dst: bytes, rows: list[tuple[bytes, float]]) -> int:
    """Replace whatever ``dst`` holds with a sorted set of ``rows`` (deleted when empty)."""
    found = a.find(dst)
    a.remove(found)
    if not rows:
        return 0
    a.create(found, ZSET)
    for member, score in rows:
        _set(a, found, member, None, score)
    a.save(found)
    return found.length


# ZADD and friends -------------------------------------------------------------------------

_ZADD_FLAGS = (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR")


@command("zadd", -4, "write", "fast")
def zadd(conn: Connection, args: list[bytes]) -> Any:
    key = args[0]
    flags: set[bytes] = set()
    i = 1
    while i < len(args) and args[i].upper() in _ZADD_FLAGS:
        flags.add(args[i].upper())
        i += 1
    rest = args[i:]
    if not rest or len(rest) % 2:
        raise Reply("ERR syntax error")
    if flags:
        nx, xx, gt, lt, ch, incr = (flag in flags for flag in _ZADD_FLAGS)
    else:
        nx = xx = gt = lt = ch = incr = False
    if nx and xx:
        raise Reply("ERR XX and NX options at the same time are not compatible")
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise Reply("ERR GT, LT, and/or NX options at the same time are not compatible")
    if incr and len(rest) > 2:
        raise Reply("ERR INCR option supports a single increment-element pair")
    pairs = [(parse_score(rest[j]), rest[j + 1]) for j in range(0, len(rest), 2)]
    check_sizes([member for _, member in pairs], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> Any:
        found = _check(a, key)
        current: dict[bytes, float | None] = {}
        for _, member in pairs:
            if member not in current:
                current[member] = _score(a, found, member)
        changes: dict[bytes, float] = {}
        added = changed = 0
        result: float | None = None
        for score, member in pairs:
            old = changes.get(member, current[member])
            if old is None:
                if xx:
                    continue
                changes[member] = result = score
                current[member] = None
                added += 1
                continue
            if nx:
                continue
            new = old + score if incr else score
            if new != new:
                raise RedisError("ERR resulting score is not a number (NaN)")
            if (gt and new <= old) or (lt and new >= old):
                continue
            result = new
            if new != old:
                changes[member] = new
                changed += 1
        if changes:
            if found.kind == "none":
                a.create(found, ZSET)
            for member, score in changes.items():
                _set(a, found, member, current[member], score)
            a.save(found)
        if incr:
            return None if result is None else Double(result)
        return added + changed if ch else added

    def reply(value: Any) -> Any:
        wake(conn, key, len(pairs))
        return value

    if flags:
        return write(conn, apply, reply)

    def fast(txn: WriteTxn, rk: bytes, parsed: Parsed, now: int) -> Any:
        # A plain ZADD giving members the scores they have changes nothing (as in Redis,
        # nothing is written); anything else takes the general path.
        prefix = parsed[6] + _M
        for score, member in pairs:
            raw = txn.get(prefix + member)
            if raw is None or score_of(raw) != score:
                return GENERAL
        return 0

    return hot_write(conn, key, ZSET, fast, apply, reply)


@command("zincrby", 4, "write", "fast")
def zincrby(conn: Connection, args: list[bytes]) -> Any:
    key, member = args[0], args[2]
    amount = parse_score(args[1])
    check_sizes([member], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> Any:
        found = _check(a, key)
        old = _score(a, found, member)
        new = amount if old is None else old + amount
        if new != new:
            raise RedisError("ERR resulting score is not a number (NaN)")
        if found.kind == "none":
            a.create(found, ZSET)
        _set(a, found, member, old, new)
        a.save(found)
        return Double(new)

    return write(conn, apply)


@command("zrem", -3, "write", "fast")
def zrem(conn: Connection, args: list[bytes]) -> Any:
    key, members = args[0], list(dict.fromkeys(args[1:]))

    def apply(a: Access) -> int:
        found = _check(a, key)
        removed = 0
        for member in members:
            score = _score(a, found, member)
            if score is not None:
                _drop(a, found, member, score)
                removed += 1
        if removed:
            a.save(found)
        return removed

    return write(conn, apply)


def _remover(
    key: bytes, select: Callable[[Access, Found], list[tuple[bytes, float]]]
) -> Callable[[Access], int]:
    def apply(a: Access) -> int:
        found = _check(a, key)
        if found.kind == "none":
            return 0
        rows = select(a, found)
        for member, score in rows:
            _drop(a, found, member, score)
        if rows:
            a.save(found)
        return len(rows)

    return apply


@command("zremrangebyrank", 4, "write")
def zremrangebyrank(conn: Connection, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])

    def select(a: Access, found: Found) -> list[tuple[bytes, float]]:
        span = _rank_span(start, stop, found.length)
        return [] if span is None else _by_rank(a, found, *span, reverse=False)

    return write(conn, _remover(args[0], select), heavy=heavy(conn, args[:1]))


@command("zremrangebyscore", 4, "write")
def zremrangebyscore(conn: Connection, args: list[bytes]) -> Any:
    bounds = _ScoreRange(args[1], args[2])
    select = lambda a, found: list(_by_score(a, found, bounds, False))  # noqa: E731
    return write(conn, _remover(args[0], select), heavy=heavy(conn, args[:1]))


@command("zremrangebylex", 4, "write")
def zremrangebylex(conn: Connection, args: list[bytes]) -> Any:
    bounds = _lex_range(args[1], args[2])
    select = lambda a, found: list(_by_lex(a, found, bounds, False))  # noqa: E731
    return write(conn, _remover(args[0], select), heavy=heavy(conn, args[:1]))


# reads ------------------------------------------------------------------------------------


def _reader(conn: Connection, key: bytes, fn: Callable[[Access, Found], Any]) -> Any:
    return read(conn, lambda a: fn(a, _check(a, key)))


@command("zscore", 3, "readonly", "fast")
def zscore(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> Any:
        score = _score(a, found, args[1])
        return None if score is None else Double(score)

    return _reader(conn, args[0], run)


@command("zmscore", -3, "readonly", "fast")
def zmscore(conn: Connection, args: list[bytes]) -> Any:
    def run(a: Access, found: Found) -> Any:
        scores = (_score(a, found, member) for member in args[1:])
        return [None if score is None else Double(score) for score in scores]

    return _reader(conn, args[0], run)


@command("zcard", 2, "readonly", "fast")
def zcard(conn: Connection, args: list[bytes]) -> Any:
    return _reader(conn, args[0], lambda a, found: found.length)


@command("zcount", 4, "readonly", "fast")
def zcount(conn: Connection, args: list[bytes]) -> Any:
    bounds = _ScoreRange(args[1], args[2])
    return _reader(conn, args[0], lambda a, f: sum(1 for _ in _by_score(a, f, bounds, False)))


@command("zlexcount", 4, "readonly", "fast")
def zlexcount(conn: Connection, args: list[bytes]) -> Any:
    bounds = _lex_range(args[1], args[2])
    return _reader(conn, args[0], lambda a, f: sum(1 for _ in _by_lex(a, f, bounds, False)))


def _rank(conn: Connection, args: list[bytes], reverse: bool) -> Any:
    def run(a: Access, found: Found) -> Any:
        score = _score(a, found, args[1])
        if score is None:
            return None
        key = _S + score_bytes(score) + args[1]
        if reverse:
            return sum(1 for _ in a.pages(found, key + b"\x00", _S_END))
        return sum(1 for _ in a.pages(found, _S, key))

    return _reader(conn, args[0], run)


@command("zrank", 3, "readonly", "fast")  # Redis 7.0: WITHSCORE came in 7.2
def zrank(conn: Connection, args: list[bytes]) -> Any:
    return _rank(conn, args, reverse=False)


@command("zrevrank", 3, "readonly", "fast")
def zrevrank(conn: Connection, args: list[bytes]) -> Any:
    return _rank(conn, args, reverse=True)


# ZRANGE in all its forms ------------------------------------------------------------------


class _RangeSpec:
    """A parsed range request: by rank, score or lex; order; LIMIT; WITHSCORES."""

    __slots__ = ("by", "count", "high", "low", "offset", "reverse", "with_scores")

    def __init__(
        self,
        low: bytes,
        high: bytes,
        by: str,
        reverse: bool,
        offset: int,
        count: int,
        with_scores: bool,
    ) -> None:
        self.by = by
        self.reverse = reverse
        self.offset = offset
        self.count = count
        self.with_scores = with_scores
        self.low: Any
        self.high: Any
        if by == "rank":
            self.low, self.high = parse_int(low), parse_int(high)
        elif by == "score":
            self.low = _ScoreRange(high, low) if reverse else _ScoreRange(low, high)
        else:
            self.low = _lex_range(high, low) if reverse else _lex_range(low, high)

    def rows(self, a: Access, found: Found) -> list[tuple[bytes, float]]:
        if found.kind == "none":
            return []
        if self.by == "rank":
            span = _rank_span(self.low, self.high, found.length)
            return [] if span is None else _by_rank(a, found, *span, self.reverse)
        if self.offset < 0:
            return []
        if self.by == "score":
            entries = _by_score(a, found, self.low, self.reverse)
        else:
            entries = _by_lex(a, found, self.low, self.reverse)
        stop = None if self.count < 0 else self.offset + self.count
        return list(islice(entries, self.offset, stop))


def _parse_range(args: list[bytes], by: str | None = None, rev: bool = False) -> _RangeSpec:
    """``min max [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]`` (ZRANGE's
    options; the legacy commands pass their fixed ``by``/``rev``)."""
    low, high = args[0], args[1]
    chosen = by
    reverse = rev
    offset, count = 0, -1
    with_scores = False
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"WITHSCORES" and by != "lex":
            with_scores = True
        elif option == b"LIMIT" and i + 2 < len(args) and (by is None or by != "rank"):
            offset, count = parse_int(args[i + 1]), parse_int(args[i + 2])
            i += 2
        elif by is None and option == b"BYSCORE":
            chosen = "score"
        elif by is None and option == b"BYLEX":
            chosen = "lex"
        elif by is None and option == b"REV":
            reverse = True
        else:
            raise Reply("ERR syntax error")
        i += 1
    if count != -1 and chosen in (None, "rank"):  # as Redis: LIMIT o -1 is no limit
        raise Reply(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        )
    if with_scores and chosen == "lex":
        raise Reply("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    return _RangeSpec(low, high, chosen or "rank", reverse, offset, count, with_scores)


def _ranger(by: str | None, rev: bool) -> Callable[[Connection, list[bytes]], Any]:
    def handler(conn: Connection, args: list[bytes]) -> Any:
        spec = _parse_range(args[1:], by, rev)
        resp3 = conn.resp3

        def run(a: Access, found: Found) -> Any:
            return _scores(spec.rows(a, found), spec.with_scores, resp3)

        return _reader(conn, args[0], run)

    return handler


command("zrange", -4, "readonly")(_ranger(None, False))
command("zrevrange", -4, "readonly")(_ranger("rank", True))
command("zrangebyscore", -4, "readonly")(_ranger("score", False))
command("zrevrangebyscore", -4, "readonly")(_ranger("score", True))
command("zrangebylex", -4, "readonly")(_ranger("lex", False))
command("zrevrangebylex", -4, "readonly")(_ranger("lex", True))


@command("zrangestore", -5, "write", keys=(1, 2, 1))
def zrangestore(conn: Connection, args: list[bytes]) -> Any:
    dst, src = args[0], args[1]
    spec = _parse_range(args[2:])
    if spec.with_scores:
        raise Reply("ERR syntax error")

    def apply(a: Access) -> int:
        return _store(a, dst, spec.rows(a, _check(a, src)))

    return write(conn, apply, heavy=heavy(conn, [src]))


@command("zscan", -3, "readonly")
def zscan(conn: Connection, args: list[bytes]) -> Any:
    options = parse_scan(args[1:])

    def run(a: Access, found: Found) -> Any:
        if found.kind == "none":
            return [b"0", []]
        cursor, rows = scan_page(a, found, options, _M, b"n")
        out: list[bytes] = []
        for sub, value in rows:
            member = sub[1:]
            if options.matches is None or options.matches(member):
                out.extend((member, b"%.17g" % score_of(value)))
        return [cursor, out]

    return _reader(conn, args[0], run)


@command("zrandmember", -2, "readonly")
def zrandmember(conn: Connection, args: list[bytes]) -> Any:
    single = len(args) == 1
    count, with_scores = (1, False) if single else random_count(args[1:], b"WITHSCORES")
    resp3 = conn.resp3

    def run(a: Access, found: Found) -> Any:
        if found.kind == "none":
            return None if single else []
        picked = sample(a, found, abs(count), count > 0, _M, b"n")
        rows = [(sub[1:], score_of(value)) for sub, value in picked]
        if single:
            return rows[0][0] if rows else None
        return _scores(rows, with_scores, resp3)

    return _reader(conn, args[0], run)


# pops -------------------------------------------------------------------------------------


def _take(a: Access, found: Found, count: int, top: bool) -> list[tuple[bytes, float]]:
    rows = list(islice(_walk(a, found, top), count))
    for member, score in rows:
        _drop(a, found, member, score)
    if rows:
        a.save(found)
    return rows


def _popper(top: bool) -> Callable[[Connection, list[bytes]], Any]:
    def handler(conn: Connection, args: list[bytes]) -> Any:
        if len(args) > 2:
            raise Reply("ERR syntax error")
        counted = len(args) == 2
        count = 1
        if counted:
            try:
                count = parse_int(args[1])
            except Reply:
                count = -1  # Redis reports a non-number as out of range
            if count < 0:
                raise Reply("ERR value is out of range, must be positive")
        key = args[0]
        resp3 = conn.resp3

        def apply(a: Access) -> Any:
            found = _check(a, key)
            if found.kind == "none" or count == 0:
                return []
            rows = _take(a, found, count, top)
            if resp3 and not counted:
                return [part for member, score in rows for part in (member, Double(score))]
            return _scores(rows, True, resp3)

        return write(conn, apply)

    return handler


command("zpopmin", -2, "write", "fast")(_popper(False))
command("zpopmax", -2, "write", "fast")(_popper(True))

_ENDS = {b"MIN": False, b"MAX": True}


def _mpopper(keys: list[bytes], top: bool, count: int) -> Callable[[Access], Any]:
    def apply(a: Access) -> Any:
        for key in keys:
            found = _check(a, key)
            if found.kind == "none":
                continue
            rows = _take(a, found, count, top)
            return [key, [[member, Double(score)] for member, score in rows]]
        return None

    return apply


@command("zmpop", -4, "write", keys=(0, 0, 0))
def zmpop(conn: Connection, args: list[bytes]) -> Any:
    keys, top, count = _parse_mpop(args, _ENDS)
    return write(conn, _mpopper(keys, top, count), _nil_array)


def _nil_array(value: Any) -> Any:
    return NULL_ARRAY if value is None else value


def _same(value: Any) -> Any:
    return value


def _bzpop(top: bool) -> Callable[[Connection, list[bytes]], Any]:
    def handler(conn: Connection, args: list[bytes]) -> Any:
        keys = args[:-1]
        timeout = parse_timeout(args[-1], conn.db._now_ms())

        def attempt(a: Access) -> Any:
            for key in keys:
                found = _check(a, key)
                if found.kind == "none":
                    continue
                member, score = _take(a, found, 1, top)[0]
                return [key, member, Double(score)]
            return None

        return blocking(conn, keys, ZSET, timeout, attempt, _same, NULL_ARRAY)

    return handler


command("bzpopmin", -3, "write", "blocking", keys=(1, -2, 1))(_bzpop(False))
command("bzpopmax", -3, "write", "blocking", keys=(1, -2, 1))(_bzpop(True))


@command("bzmpop", -5, "write", "blocking", keys=(0, 0, 0))
def bzmpop(conn: Connection, args: list[bytes]) -> Any:
    timeout = parse_timeout(args[0], conn.db._now_ms())
    keys, top, count = _parse_mpop(args[1:], _ENDS)
    attempt = _mpopper(keys, top, count)
    return blocking(conn, keys, ZSET, timeout, attempt, _same, NULL_ARRAY)


# union, intersection, difference ----------------------------------------------------------

_AGGREGATES = (b"SUM", b"MIN", b"MAX")


class _Combine(NamedTuple):
    keys: list[bytes]
    weights: list[float]
    aggregate: bytes
    with_scores: bool
    error: str | None  # a bad option: Redis reports it after the keys' types


def _parse_combine(args: list[bytes], name: str, weighted: bool, store: bool) -> _Combine:
    """``numkeys key... [WEIGHTS w...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]``."""
    numkeys = parse_int(args[0])
    if numkeys < 1:
        raise Reply(f"ERR at least 1 input key is needed for '{name}' command")
    if len(args) < numkeys + 1:
        raise Reply("ERR syntax error")
    try:
        return _Combine(*_parse_options(args, name, weighted, store), None)
    except Reply as e:
        return _Combine(args[1 : numkeys + 1], [], b"SUM", False, e.text)


def _parse_options(
    args: list[bytes], name: str, weighted: bool, store: bool
) -> tuple[list[bytes], list[float], bytes, bool]:
    numkeys = parse_int(args[0])
    if numkeys < 1:
        raise Reply(f"ERR at least 1 input key is needed for '{name}' command")
    if len(args) < numkeys + 1:
        raise Reply("ERR syntax error")
    keys = args[1 : numkeys + 1]
    weights = [1.0] * numkeys
    aggregate = b"SUM"
    with_scores = False
    i = numkeys + 1
    while i < len(args):
        option = args[i].upper()
        if weighted and option == b"WEIGHTS" and i + numkeys < len(args):
            weights = [
                parse_score(raw, "ERR weight value is not a float")
                for raw in args[i + 1 : i + 1 + numkeys]
            ]
            i += numkeys + 1
        elif weighted and option == b"AGGREGATE" and i + 1 < len(args):
            aggregate = args[i + 1].upper()
            if aggregate not in _AGGREGATES:
                raise Reply("ERR syntax error")
            i += 2
        elif not store and option == b"WITHSCORES":
            with_scores = True
            i += 1
        else:
            raise Reply("ERR syntax error")
    return keys, weights, aggregate, with_scores


def _source(a: Access, raw_key: bytes) -> Found:
    found = a.find(raw_key)
    if found.kind not in ("none", ZSET, SET):
        raise RedisError(WRONGTYPE)
    return found


def _members_of(a: Access, found: Found) -> Iterator[tuple[bytes, float]]:
    if found.kind == SET:
        return ((member, 1.0) for member, _ in a.pages(found))
    return ((sub[1:], score_of(value)) for sub, value in a.pages(found, _M, b"n"))


def _score_in(a: Access, found: Found, member: bytes) -> float | None:
    if found.kind == "none":
        return None
    if found.kind == SET:
        return 1.0 if a.get(found, member) is not None else None
    return _score(a, found, member)


def _weighted(score: float, weight: float) -> float:
    value = score * weight
    return 0.0 if value != value else value


def _aggregate(total: float, value: float, how: bytes) -> float:
    if how == b"SUM":
        total += value
        return 0.0 if total != total else total
    return min(total, value) if how == b"MIN" else max(total, value)


def _combine(a: Access, op: str, spec: _Combine) -> list[tuple[bytes, float]]:
    sources = [_source(a, key) for key in spec.keys]
    if spec.error is not None:
        raise RedisError(spec.error)
    weights, how = spec.weights, spec.aggregate
    result: dict[bytes, float] = {}
    if op == "union":
        for found, weight in zip(sources, weights):
            if found.kind == "none":
                continue
            for member, score in _members_of(a, found):
                value = _weighted(score, weight)
                old = result.get(member)
                result[member] = value if old is None else _aggregate(old, value, how)
    elif op == "inter":
        if any(found.kind == "none" for found in sources):
            return []
        order = sorted(range(len(sources)), key=lambda i: sources[i].length)
        first = order[0]
        for member, score in _members_of(a, sources[first]):
            total = _weighted(score, weights[first])
            for i in order[1:]:
                other = _score_in(a, sources[i], member)
                if other is None:
                    break
                total = _aggregate(total, _weighted(other, weights[i]), how)
            else:
                result[member] = total
    else:
        first_found, rest = sources[0], sources[1:]
        if first_found.kind != "none":
            for member, score in _members_of(a, first_found):
                if all(_score_in(a, found, member) is None for found in rest):
                    result[member] = score
    return sorted(result.items(), key=lambda row: (row[1], row[0]))


def _combiner(op: str, store: bool) -> Callable[[Connection, list[bytes]], Any]:
    name = f"z{op}{'store' if store else ''}"
    weighted = op != "diff"

    def handler(conn: Connection, args: list[bytes]) -> Any:
        resp3 = conn.resp3
        if store:
            dst = args[0]
            spec = _parse_combine(args[1:], name, weighted, True)
            return write(
                conn, lambda a: _store(a, dst, _combine(a, op, spec)), heavy=heavy(conn, spec.keys)
            )
        spec = _parse_combine(args, name, weighted, False)
        return read(conn, lambda a: _scores(_combine(a, op, spec), spec.with_scores, resp3))

    return handler


for _op in ("union", "inter", "diff"):
    command(f"z{_op}", -3, "readonly", keys=(0, 0, 0))(_combiner(_op, store=False))
    command(f"z{_op}store", -4, "write", keys=(1, 1, 1))(_combiner(_op, store=True))


@command("zintercard", -3, "readonly", keys=(0, 0, 0))
def zintercard(conn: Connection, args: list[bytes]) -> Any:
    keys, limit = parse_intercard(args, "zintercard")

    def run(a: Access) -> int:
        size = len(_combine(a, "inter", _Combine(keys, [1.0] * len(keys), b"SUM", False, None)))
        return min(size, limit) if limit else size

    return read(conn, run)
