"""Differential tests: the same command sequences against engramdb and a real Redis.

Each sequence runs on both servers (flushed first) through redis-py with its reply
callbacks removed, so replies are compared exactly as parsed from the wire; errors compare
by type and message. A step may ask for a looser comparison: ``Sorted`` (KEYS: Redis
answers in hash order), ``Approx`` (PTTL: the two servers run a few milliseconds apart) or
``ScanAll`` (a whole SCAN iteration: cursors differ by design, the keys found must not).
Replies whose order Redis leaves unspecified (the fields of a hash, the members of a set:
``UNORDERED``) compare as multisets, HGETALL's field-value pairs kept together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from tests.server.conftest import Served

pytestmark = pytest.mark.peer

Args = tuple[Any, ...]
LLONG_MAX = "9223372036854775807"
LLONG_MIN = "-9223372036854775808"
FUTURE = "4102444800"  # 2100-01-01, in seconds


@dataclass(frozen=True)
class Sorted:
    args: Args


@dataclass(frozen=True)
class Approx:
    args: Args
    within: int = 2000


@dataclass(frozen=True)
class ScanAll:
    options: Args = ()


Step = Args | Sorted | Approx | ScanAll


def sorted_(*args: Any) -> Sorted:
    return Sorted(args)


def approx(*args: Any) -> Approx:
    return Approx(args)


def scan_all(*options: Any) -> ScanAll:
    return ScanAll(options)


@dataclass
class Sequence:
    steps: list[Step]
    resp3: bool = False  # also run it over RESP3
    tags: list[str] = field(default_factory=list)


SEQUENCES: dict[str, Sequence] = {}


def sequence(name: str, *steps: Step, resp3: bool = False) -> None:
    SEQUENCES[name] = Sequence(list(steps), resp3)


# strings ----------------------------------------------------------------------------------

sequence(
    "set-get-options",
    ("SET", "k", "v"), ("GET", "k"), ("GET", "nope"),
    ("SET", "k", "v2", "XX"), ("SET", "n", "v", "XX"), ("GET", "n"),
    ("SET", "k", "x", "NX"), ("SET", "n", "v", "NX"), ("GET", "n"),
    ("SET", "k", "y", "GET"), ("SET", "k", "z", "NX", "GET"), ("SET", "k", "w", "XX", "GET"),
    ("SET", "fresh", "1", "GET"), ("GET", "fresh"), ("SET", "k", "1", "nx", "ex", "100"),
    ("SET", "k", "v", "EX", "10", "EX", "100"), ("TTL", "k"),
    ("SET", "k", "v", "BAD"), ("SET", "k", "v", "NX", "XX"), ("SET", "k", "v", "EX", "0"),
    ("SET", "k", "v", "EX", "-1"), ("SET", "k", "v", "EX", "abc"), ("SET", "k", "v", "EX"),
    ("SET", "k", "v", "KEEPTTL", "EX", "10"), ("SET", "k", "v", "EX", "10", "PX", "100"),
    ("SET", "k", "v", "EX", LLONG_MAX), ("SET", "k", "v", "PX", LLONG_MAX),
    ("SET", "k", "v", "XX", "EX", "abc", "NX"), ("SET", "k"), ("GET",), ("GET", "a", "b"),
    ("SET", "gone", "v", "EXAT", "1"), ("GET", "gone"), ("EXISTS", "gone"),
    ("SET", "gone", "v", "PXAT", "1000"), ("EXISTS", "gone"),
    resp3=True,
)  # fmt: skip

sequence(
    "set-family",
    ("SETNX", "a", "1"), ("SETNX", "a", "2"), ("GET", "a"),
    ("GETSET", "a", "3"), ("GETSET", "new", "x"), ("GET", "a"),
    ("GETDEL", "a"), ("GETDEL", "a"), ("EXISTS", "a"),
    ("MSET", "x", "1", "y", "2", "z", "3"), ("MGET", "x", "y", "nope", "z"),
    ("MSET", "x", "1", "y"), ("MSET", "x", "9", "x", "10"), ("GET", "x"),
    ("MSETNX", "x", "9", "w", "8"), ("EXISTS", "w"), ("MSETNX", "v", "1", "w", "2"),
    ("MGET", "v", "w", "x"), ("MSETNX", "p", "1", "p", "2"), ("GET", "p"),
    ("APPEND", "s", "hello"), ("APPEND", "s", " world"), ("GET", "s"), ("STRLEN", "s"),
    ("STRLEN", "nope"), ("APPEND", "s", ""), ("SETEX", "t", "100", "v"), ("TTL", "t"),
    ("APPEND", "t", "x"), ("TTL", "t"), ("SETEX", "t", "0", "v"), ("SETEX", "t", "abc", "v"),
    ("SETEX", "t", "-5", "v"), ("PSETEX", "t", "100000", "v"), approx("PTTL", "t"),
    ("PSETEX", "t", "0", "v"), ("SETEX", "t", LLONG_MAX, "v"), ("MGET", "t", "nope"),
    resp3=True,
)  # fmt: skip

sequence(
    "getex",
    ("SET", "k", "v"), ("GETEX", "k"), ("TTL", "k"), ("GETEX", "k", "EX", "200"),
    ("TTL", "k"), ("GETEX", "k", "PERSIST"), ("TTL", "k"), ("GETEX", "k", "PX", "50000"),
    approx("PTTL", "k"), ("GETEX", "k", "EXAT", FUTURE), ("EXPIRETIME", "k"),
    ("GETEX", "k", "PXAT", FUTURE + "000"), ("PEXPIRETIME", "k"),
    ("GETEX", "k", "EX", "10", "PX", "10"), ("GETEX", "k", "PERSIST", "EX", "10"),
    ("GETEX", "k", "BAD"), ("GETEX", "k", "EX", "0"), ("GETEX", "k", "EX"),
    ("GETEX", "nope", "EX", "10"), ("GETEX", "k", "EXAT", "1"), ("EXISTS", "k"),
)  # fmt: skip

sequence(
    "counters",
    ("INCR", "c"), ("INCR", "c"), ("INCRBY", "c", "10"), ("DECR", "c"), ("DECRBY", "c", "5"),
    ("INCRBY", "c", "-20"), ("GET", "c"), ("INCRBY", "c", "abc"), ("INCRBY", "c", "1.5"),
    ("INCRBY", "c", " 1"), ("INCRBY", "c", "+1"), ("INCRBY", "c", "9223372036854775808"),
    ("SET", "s", "abc"), ("INCR", "s"), ("SET", "lead", "01"), ("INCR", "lead"),
    ("SET", "neg0", "-0"), ("DECR", "neg0"), ("SET", "sp", "1 "), ("INCR", "sp"),
    ("SET", "big", LLONG_MAX), ("INCR", "big"), ("INCRBY", "big", "0"), ("DECR", "big"),
    ("SET", "small", LLONG_MIN), ("DECR", "small"), ("INCRBY", "small", "-1"),
    ("DECRBY", "c", LLONG_MIN), ("INCRBY", "c", LLONG_MIN), ("DECRBY", "c", LLONG_MAX),
    ("SET", "t", "5", "EX", "100"), ("INCR", "t"), ("TTL", "t"), ("GET", "t"),
    ("INCR",), ("INCRBY", "c"), ("DECRBY", "c", "1", "2"),
    resp3=True,
)  # fmt: skip

sequence(
    "incrbyfloat",
    ("INCRBYFLOAT", "f", "0.1"), ("INCRBYFLOAT", "f", "0.2"), ("GET", "f"),
    ("INCRBYFLOAT", "f", "1e3"), ("INCRBYFLOAT", "f", "-1000.3"), ("INCRBYFLOAT", "f", "abc"),
    ("INCRBYFLOAT", "f", "inf"), ("INCRBYFLOAT", "f", "-inf"), ("INCRBYFLOAT", "f", "nan"),
    ("INCRBYFLOAT", "f", "1 "), ("INCRBYFLOAT", "f", " 1"), ("INCRBYFLOAT", "f", "1_0"),
    ("INCRBYFLOAT", "f", ""), ("INCRBYFLOAT", "f", "1e400"), ("INCRBYFLOAT", "f", "0x10"),
    ("SET", "g", "10.5"), ("INCRBYFLOAT", "g", "0.1"), ("SET", "g", "5.0e3"),
    ("INCRBYFLOAT", "g", "2.0e2"), ("INCRBYFLOAT", "g", "1.5"), ("INCRBYFLOAT", "g", "-5201.5"),
    ("INCRBYFLOAT", "g", "3.0000000000000001"), ("INCRBYFLOAT", "g", "1e20"),
    ("INCRBYFLOAT", "g", "-1e-5"), ("INCRBYFLOAT", "h", "-0.0"), ("GET", "h"),
    ("SET", "s", "abc"), ("INCRBYFLOAT", "s", "1"), ("SET", "n", "7"),
    ("INCRBYFLOAT", "n", "3"), ("INCR", "n"), ("INCRBYFLOAT", "m", "1.1"), ("INCR", "m"),
    ("SET", "t", "1", "EX", "100"), ("INCRBYFLOAT", "t", "1"), ("TTL", "t"),
    resp3=True,
)  # fmt: skip

sequence(
    "ranges",
    ("SET", "r", "Hello World"), ("GETRANGE", "r", "0", "4"), ("GETRANGE", "r", "-5", "-1"),
    ("GETRANGE", "r", "5", "2"), ("GETRANGE", "r", "-1", "-5"), ("GETRANGE", "r", "0", "100"),
    ("GETRANGE", "r", "-100", "2"), ("GETRANGE", "r", "11", "12"),
    ("GETRANGE", "nope", "0", "1"), ("GETRANGE", "r", "a", "1"),
    ("SETRANGE", "r", "6", "Redis"), ("GET", "r"), ("SETRANGE", "r", "9", "xxxxx"),
    ("GET", "r"), ("SETRANGE", "pad", "5", "x"), ("GET", "pad"), ("SETRANGE", "r", "-1", "x"),
    ("SETRANGE", "none", "3", ""), ("EXISTS", "none"), ("SETRANGE", "r", "2", ""),
    ("SETRANGE", "r", "abc", "x"), ("SETRANGE", "r", "536870912", "x"),
)  # fmt: skip

sequence(
    "strings-wrongtype",
    ("LPUSH", "l", "a"), ("HSET", "h", "f", "v"), ("GET", "l"), ("GET", "h"), ("INCR", "h"),
    ("INCRBY", "l", "1"), ("INCRBYFLOAT", "h", "1"), ("APPEND", "h", "x"), ("STRLEN", "l"),
    ("GETRANGE", "h", "0", "1"), ("SETRANGE", "h", "0", "x"), ("GETDEL", "h"),
    ("GETEX", "l"), ("GETSET", "h", "v"), ("SET", "h", "v", "GET"), ("SETNX", "h", "v"),
    ("MGET", "h", "l"), ("DECR", "l"), ("SET", "l", "now a string"), ("GET", "l"),
    ("TYPE", "l"), ("MSET", "h", "x"), ("TYPE", "h"),
    resp3=True,
)  # fmt: skip

# keyspace ---------------------------------------------------------------------------------

sequence(
    "del-exists-type",
    ("MSET", "a", "1", "b", "2"), ("RPUSH", "l", "x"), ("HSET", "h", "f", "v"),
    ("TYPE", "a"), ("TYPE", "l"), ("TYPE", "h"), ("TYPE", "nope"),
    ("EXISTS", "a", "a", "nope", "l"), ("DEL", "a", "a", "nope"), ("EXISTS", "a"),
    ("UNLINK", "b", "l", "h", "nope"), ("DBSIZE",), ("DEL",), ("EXISTS",),
    ("SET", "x", "1"), ("DEL", "x", "x", "x"), ("DBSIZE",),
    resp3=True,
)  # fmt: skip

sequence(
    "expire-options",
    ("SET", "k", "v"), ("TTL", "k"), ("PTTL", "k"), ("TTL", "nope"), ("PTTL", "nope"),
    ("EXPIRE", "nope", "100"), ("EXPIRE", "k", "100"), ("TTL", "k"), ("EXPIRE", "k", "100", "NX"),
    ("EXPIRE", "k", "200", "XX"), ("TTL", "k"), ("EXPIRE", "k", "100", "GT"),
    ("EXPIRE", "k", "300", "GT"), ("TTL", "k"), ("EXPIRE", "k", "400", "LT"),
    ("EXPIRE", "k", "50", "LT"), ("TTL", "k"), ("PERSIST", "k"), ("PERSIST", "k"),
    ("PERSIST", "nope"), ("EXPIRE", "k", "100", "XX"), ("EXPIRE", "k", "100", "GT"),
    ("TTL", "k"), ("EXPIRE", "k", "100", "LT"), ("TTL", "k"), ("PERSIST", "k"),
    ("EXPIRE", "k", "100", "NX"), ("EXPIRE", "k", "100", "nx", "xx"),
    ("EXPIRE", "k", "100", "GT", "LT"), ("EXPIRE", "k", "100", "NX", "GT"),
    ("EXPIRE", "k", "100", "FOO"), ("EXPIRE", "k", "abc"), ("EXPIRE", "k", "1.5"),
    ("EXPIRE", "k", LLONG_MAX), ("EXPIRE", "k", "9223372036854775"),
    ("PEXPIRE", "k", LLONG_MAX), ("EXPIREAT", "k", LLONG_MAX), ("EXPIRE", "k", "abc", "FOO"),
    ("EXPIRE", "k", "abc", "NX", "XX"), ("TTL", "k"), ("EXPIRE", "k"), ("TTL", "k", "x"),
    resp3=True,
)  # fmt: skip

sequence(
    "expire-times",
    ("SET", "k", "v"), ("PEXPIRE", "k", "150000"), approx("PTTL", "k"), ("TTL", "k"),
    ("EXPIREAT", "k", FUTURE), ("EXPIRETIME", "k"), ("PEXPIRETIME", "k"),
    ("PEXPIREAT", "k", FUTURE + "123"), ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"),
    ("EXPIRETIME", "nope"), ("SET", "p", "v"), ("EXPIRETIME", "p"), ("PEXPIRETIME", "p"),
    ("EXPIREAT", "k", "4102444900", "GT"), ("EXPIRETIME", "k"),
    ("PEXPIREAT", "k", "4102444800000", "LT"), ("PEXPIRETIME", "k"),
    ("EXPIRE", "k", "-1"), ("EXISTS", "k"), ("SET", "k", "v"), ("EXPIRE", "k", "0"),
    ("GET", "k"), ("SET", "k", "v"), ("PEXPIRE", "k", "-5"), ("EXISTS", "k"),
    ("SET", "k", "v"), ("EXPIREAT", "k", "1"), ("EXISTS", "k"), ("SET", "k", "v"),
    ("PEXPIREAT", "k", "0"), ("EXISTS", "k"), ("SET", "k", "v", "EX", "100"),
    ("EXPIREAT", "k", "1", "GT"), ("EXISTS", "k"), ("EXPIREAT", "k", "1", "LT"), ("EXISTS", "k"),
    ("RPUSH", "l", "a"), ("EXPIRE", "l", "100"), ("TTL", "l"), ("HSET", "h", "f", "v"),
    ("EXPIRE", "h", "100"), ("TTL", "h"), ("HSET", "h", "g", "w"), ("TTL", "h"),
    ("RPUSH", "l", "b"), ("LPOP", "l"), ("TTL", "l"), ("SET", "h", "v"), ("TTL", "h"),
    ("PEXPIREAT", "h", LLONG_MAX), ("PEXPIRETIME", "h"), ("EXPIRETIME", "h"),
    Approx(("TTL", "h"), within=1), approx("PTTL", "h"),
)  # fmt: skip

_KEYS = [
    "user:1", "user:2", "user:10", "admin", "hello", "hallo", "hxllo", "hbllo", "heeeello",
    "a*b", "a\\b", "a?b", "[x]", "x]", "-", "]", "^", "key with space", "UPPER", "h\u00e9llo",
]  # fmt: skip
_MSET = ("MSET", *[part for key in _KEYS for part in (key, "v")])

sequence(
    "keys-patterns",
    _MSET, ("RPUSH", "list:1", "x"), ("HSET", "hash:1", "f", "v"),
    sorted_("KEYS", "*"), sorted_("KEYS", "user:*"), sorted_("KEYS", "h?llo"),
    sorted_("KEYS", "h*llo"), sorted_("KEYS", "h[ae]llo"), sorted_("KEYS", "h[^e]llo"),
    sorted_("KEYS", "h[a-b]llo"), sorted_("KEYS", "h[b-a]llo"), sorted_("KEYS", "*1*"),
    sorted_("KEYS", "a\\*b"), sorted_("KEYS", "a\\?b"), sorted_("KEYS", "a\\\\b"),
    sorted_("KEYS", "a?b"), sorted_("KEYS", "\\[x\\]"), sorted_("KEYS", "[[]x]"),
    sorted_("KEYS", "[]]"), sorted_("KEYS", "[\\]]"), sorted_("KEYS", "[-]"),
    sorted_("KEYS", "[a-]*"), sorted_("KEYS", "[^a-z]*"), sorted_("KEYS", "h["),
    sorted_("KEYS", "h[a"), sorted_("KEYS", "[^]*"), sorted_("KEYS", "[]*"),
    sorted_("KEYS", ""), sorted_("KEYS", "**"), sorted_("KEYS", "*o"), sorted_("KEYS", "nope"),
    sorted_("KEYS", "key*space"), sorted_("KEYS", "upper"), sorted_("KEYS", "h?llo*"),
    sorted_("KEYS", "h\u00e9*"), sorted_("KEYS", "h??llo"), sorted_("KEYS", "*\\"),
    ("KEYS",), ("KEYS", "a", "b"),
)  # fmt: skip

sequence(
    "scan",
    _MSET, ("RPUSH", "list:1", "x"), ("HSET", "hash:1", "f", "v"), ("HSET", "hash:2", "f", "v"),
    scan_all(), scan_all("COUNT", "1"), scan_all("COUNT", "3", "MATCH", "user:*"),
    scan_all("MATCH", "h*"), scan_all("MATCH", "*"), scan_all("TYPE", "hash"),
    scan_all("TYPE", "list"), scan_all("TYPE", "string", "MATCH", "*1*"),
    scan_all("TYPE", "HASH"), scan_all("TYPE", "nothing"), scan_all("MATCH", "nope*"),
    ("SCAN", "abc"), ("SCAN", "-"), ("SCAN", "0", "COUNT", "0"), ("SCAN", "0", "COUNT", "abc"),
    ("SCAN", "0", "COUNT", "-1"), ("SCAN", "0", "FOO", "bar"), ("SCAN", "0", "MATCH"),
    ("SCAN",),
    resp3=True,
)  # fmt: skip

# hashes -----------------------------------------------------------------------------------

sequence(
    "hashes",
    ("HSET", "h", "f1", "v1", "f2", "v2"), ("HSET", "h", "f1", "x", "f3", "y"),
    ("HGET", "h", "f1"), ("HGET", "h", "nope"), ("HGET", "nope", "f"),
    ("HMGET", "h", "f1", "nope", "f3"), ("HMGET", "nope", "a", "b"), ("HGETALL", "h"),
    ("HKEYS", "h"), ("HVALS", "h"), ("HLEN", "h"), ("HEXISTS", "h", "f1"),
    ("HEXISTS", "h", "nope"), ("HEXISTS", "nope", "f"), ("HSTRLEN", "h", "f1"),
    ("HSTRLEN", "h", "nope"), ("HDEL", "h", "f1", "nope"), ("HDEL", "h", "f1"),
    ("HGETALL", "h"), ("HDEL", "h", "f2", "f3"), ("EXISTS", "h"), ("HDEL", "h", "f2"),
    ("HGETALL", "nope"), ("HKEYS", "nope"), ("HVALS", "nope"), ("HLEN", "nope"),
    ("HSET", "h", "f"), ("HSET", "h", "f", "v", "g"), ("HSET", "h"), ("HGET", "h"),
    ("HMSET", "m", "a", "1", "b", "2"), ("HMSET", "m", "a"), ("HMSET", "m", "a", "1", "b"),
    ("HGETALL", "m"), ("HSETNX", "m", "a", "3"), ("HSETNX", "m", "c", "3"), ("HGETALL", "m"),
    ("HSETNX", "m", "c"), ("HMGET", "m"), ("HDEL", "m"),
    resp3=True,
)  # fmt: skip

sequence(
    "hash-counters",
    ("HINCRBY", "h", "n", "5"), ("HINCRBY", "h", "n", "-10"), ("HSET", "h", "a", "1"),
    ("HINCRBY", "h", "a", "1"), ("HSET", "h", "s", "abc"), ("HINCRBY", "h", "s", "1"),
    ("HINCRBY", "h", "n", "abc"), ("HINCRBY", "h", "n", "1.5"), ("HSET", "h", "big", LLONG_MAX),
    ("HINCRBY", "h", "big", "1"), ("HINCRBY", "h", "big", LLONG_MIN), ("HGET", "h", "big"),
    ("HSET", "h", "small", LLONG_MIN), ("HINCRBY", "h", "small", "-1"),
    ("HINCRBYFLOAT", "h", "fl", "0.1"), ("HINCRBYFLOAT", "h", "fl", "0.2"),
    ("HINCRBYFLOAT", "h", "s", "1"), ("HINCRBYFLOAT", "h", "fl", "inf"),
    ("HINCRBYFLOAT", "h", "fl", "nan"), ("HINCRBYFLOAT", "h", "fl", "abc"),
    ("HINCRBYFLOAT", "h", "fl", "1e5000"), ("HINCRBYFLOAT", "h", "a", "1.5"),
    ("HINCRBYFLOAT", "h", "n", "-0.5e1"), ("HSET", "h", "lead", "01"),
    ("HINCRBY", "h", "lead", "1"), ("HINCRBYFLOAT", "h", "lead", "1"), ("HGETALL", "h"),
    ("HINCRBY", "h", "n"), ("HINCRBYFLOAT", "h", "n"),
    resp3=True,
)  # fmt: skip

sequence(
    "hashes-wrongtype",
    ("SET", "s", "v"), ("RPUSH", "l", "a"), ("HSET", "s", "f", "v"), ("HGET", "s", "f"),
    ("HMGET", "l", "f"), ("HGETALL", "s"), ("HKEYS", "l"), ("HVALS", "s"), ("HLEN", "l"),
    ("HEXISTS", "s", "f"), ("HSTRLEN", "l", "f"), ("HDEL", "s", "f"), ("HINCRBY", "l", "f", "1"),
    ("HINCRBYFLOAT", "s", "f", "1"), ("HSETNX", "l", "f", "v"), ("HMSET", "s", "f", "v"),
    ("HINCRBY", "s", "f", "abc"), ("HINCRBYFLOAT", "s", "f", "abc"),
    resp3=True,
)  # fmt: skip

# lists ------------------------------------------------------------------------------------

sequence(
    "lists",
    ("RPUSH", "l", "a", "b", "c"), ("LPUSH", "l", "x", "y"), ("LRANGE", "l", "0", "-1"),
    ("LRANGE", "l", "-2", "-1"), ("LRANGE", "l", "1", "2"), ("LRANGE", "l", "5", "10"),
    ("LRANGE", "l", "-100", "100"), ("LRANGE", "l", "3", "1"), ("LRANGE", "l", "-1", "-2"),
    ("LRANGE", "nope", "0", "-1"), ("LRANGE", "l", "a", "1"), ("LLEN", "l"), ("LLEN", "nope"),
    ("LINDEX", "l", "0"), ("LINDEX", "l", "-1"), ("LINDEX", "l", "100"), ("LINDEX", "l", "-100"),
    ("LINDEX", "l", "abc"), ("LINDEX", "nope", "abc"), ("LSET", "l", "0", "z"),
    ("LSET", "l", "-1", "w"), ("LSET", "l", "100", "q"), ("LSET", "l", "-6", "q"),
    ("LSET", "nope", "0", "x"), ("LSET", "l", "abc", "x"), ("LRANGE", "l", "0", "-1"),
    ("LPUSHX", "nope", "a"), ("RPUSHX", "nope", "a"), ("EXISTS", "nope"),
    ("LPUSHX", "l", "p", "q"), ("RPUSHX", "l", "r"), ("LRANGE", "l", "0", "-1"),
    ("LPUSH", "l"), ("RPUSH", "l"), ("LRANGE", "l", "0"), ("LINDEX", "l"),
    resp3=True,
)  # fmt: skip

sequence(
    "list-pops",
    ("RPUSH", "l", "1", "2", "3", "4", "5", "6", "7"), ("LPOP", "l"), ("RPOP", "l"),
    ("LPOP", "l", "2"), ("RPOP", "l", "2"), ("LPOP", "l", "0"), ("RPOP", "l", "0"),
    ("LRANGE", "l", "0", "-1"), ("LPOP", "l", "-1"), ("LPOP", "l", "abc"), ("RPOP", "l", "1.5"),
    ("LPOP", "l", "1", "2"), ("LPOP", "nope"), ("LPOP", "nope", "2"), ("RPOP", "nope", "0"),
    ("LPOP", "nope", "-1"), ("LPOP", "l"), ("EXISTS", "l"),
    ("RPUSH", "e", "a", "b"), ("LPOP", "e", "5"), ("EXISTS", "e"),
    ("RPUSH", "e", "a", "b", "c"), ("RPOP", "e", "5"), ("EXISTS", "e"),
    ("RPUSH", "e", "a"), ("RPOP", "e"), ("LLEN", "e"), ("RPOP", "e"),
    ("RPUSH", "t", "v"), ("EXPIRE", "t", "100"), ("RPUSH", "t", "w"), ("LPOP", "t"), ("TTL", "t"),
    resp3=True,
)  # fmt: skip

sequence(
    "ltrim",
    ("RPUSH", "t", "1", "2", "3", "4", "5", "6"), ("LTRIM", "t", "1", "-2"),
    ("LRANGE", "t", "0", "-1"), ("LTRIM", "t", "0", "100"), ("LRANGE", "t", "0", "-1"),
    ("LTRIM", "t", "-100", "1"), ("LRANGE", "t", "0", "-1"), ("LTRIM", "t", "a", "1"),
    ("LTRIM", "t", "1", "0"), ("EXISTS", "t"), ("LTRIM", "nope", "0", "1"),
    ("RPUSH", "u", "1", "2"), ("LTRIM", "u", "5", "10"), ("EXISTS", "u"),
    ("RPUSH", "u", "1", "2"), ("LTRIM", "u", "-1", "-1"), ("LRANGE", "u", "0", "-1"),
    ("LTRIM", "u", "0"),
)  # fmt: skip

sequence(
    "lists-wrongtype",
    ("SET", "s", "v"), ("HSET", "h", "f", "v"), ("LPUSH", "s", "a"), ("RPUSH", "h", "a"),
    ("LPUSHX", "s", "a"), ("LPOP", "s"), ("RPOP", "h", "2"), ("LPOP", "s", "0"),
    ("LRANGE", "s", "0", "-1"), ("LLEN", "h"), ("LINDEX", "s", "0"), ("LSET", "h", "0", "x"),
    ("LTRIM", "s", "0", "1"), ("LRANGE", "s", "a", "b"), ("LPOP", "s", "abc"),
    ("LINDEX", "s", "abc"), ("LSET", "s", "abc", "x"), ("LTRIM", "h", "x", "1"),
    resp3=True,
)  # fmt: skip

_MANY = [f"item{i}" for i in range(2000)]
sequence(
    "long-lists",
    ("RPUSH", "big", *_MANY[:10]), ("RPUSH", "big", *_MANY[10:20]), ("LLEN", "big"),
    ("LPUSH", "big", *_MANY[:300]), ("LLEN", "big"), ("LRANGE", "big", "0", "5"),
    ("LRANGE", "big", "-3", "-1"), ("LPOP", "big", "300"), ("LLEN", "big"), ("LPOP", "big"),
    ("RPUSH", "big", *_MANY), ("LLEN", "big"), ("LINDEX", "big", "1000"),
    ("LPOP", "big", "1990"), ("LRANGE", "big", "0", "-1"), ("RPOP", "big", "25"),
    ("EXISTS", "big"), ("RPUSH", "big", "x" * 300, "y" * 70000, ""), ("LPOP", "big", "2"),
    ("LRANGE", "big", "0", "-1"), ("LPOP", "big"), ("EXISTS", "big"),
)  # fmt: skip

sequence(
    "huge-list",
    ("RPUSH", "huge", *["x"] * 70_000), ("LLEN", "huge"), ("LPUSH", "huge", "first"),
    ("LINDEX", "huge", "0"), ("LINDEX", "huge", "-1"), ("LPOP", "huge", "4466"),
    ("LLEN", "huge"), ("LPOP", "huge"), ("LLEN", "huge"), ("RPUSH", "huge", "last"),
    ("LRANGE", "huge", "-2", "-1"), ("RPOP", "huge"), ("LTRIM", "huge", "0", "9"),
    ("LRANGE", "huge", "0", "-1"),
)  # fmt: skip

_BINARY = [b"\xff\xfe", b"\x80abc", b"caf\xc3\xa9", b"\x00nul", b"plain", b"\xe9t\xe9"]
sequence(
    "binary-keys",
    ("MSET", *[part for key in _BINARY for part in (key, key + b"-value")]),
    ("MGET", *_BINARY), sorted_("KEYS", "*"), sorted_("KEYS", b"[\x80-\xff]*"),
    sorted_("KEYS", b"[a-\xff]*"), sorted_("KEYS", b"\xff*"), sorted_("KEYS", b"?\xfe"),
    sorted_("KEYS", b"*\xe9*"), scan_all("MATCH", b"*\xe9*"), scan_all("COUNT", "2"),
    ("RPUSH", b"\xfflist", b"\x00\xff"), ("LRANGE", b"\xfflist", "0", "-1"),
    ("HSET", b"\xfehash", "f", b"\xff"), ("HGETALL", b"\xfehash"), ("TYPE", b"\xfehash"),
    ("DEL", *_BINARY), ("DBSIZE",),
)  # fmt: skip

# lists, hashes, sets and sorted sets inside transactions and scripts -------------------

sequence(
    "structures-in-multi",
    ("MULTI",), ("RPUSH", "l", "a", "b", "c"), ("SADD", "s", "x", "y"), ("ZADD", "z", "1", "m"),
    ("HSET", "h", "", "empty", b"\xff", "binary"), ("LMOVE", "l", "l2", "LEFT", "RIGHT"),
    ("BLPOP", "l", "0"), ("BLPOP", "nothing", "0"), ("ZPOPMIN", "z"), ("SISMEMBER", "s", "y"),
    ("LINSERT", "l", "BEFORE", "c", "b2"), ("LREM", "l", "0", "c"), ("HSTRLEN", "h", ""),
    ("ZADD", "z", "INCR", "2.5", "n"), ("ZRANGE", "z", "0", "-1", "WITHSCORES"),
    ("SADD", "h", "wrong"), ("RENAME", "l", "l3"), ("COPY", "l3", "l4"), ("EXEC",),
    ("LRANGE", "l2", "0", "-1"), ("LRANGE", "l4", "0", "-1"), ("EXISTS", "l"), ("TYPE", "h"),
    ("MULTI",), ("ZADD", "z", "1"), ("EXEC",),
    resp3=True,
)  # fmt: skip

sequence(
    "structures-in-eval",
    ("EVAL", "redis.call('RPUSH', KEYS[1], 'a', 'b'); redis.call('ZADD', KEYS[2], 1.5, 'm'); "
     "redis.call('SADD', KEYS[3], 'x'); redis.call('HSET', KEYS[4], '', 'v'); "
     "return {redis.call('LRANGE', KEYS[1], 0, -1), "
     "redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'), redis.call('ZSCORE', KEYS[2], 'm'), "
     "redis.call('SMEMBERS', KEYS[3]), redis.call('HGETALL', KEYS[4]), "
     "redis.call('LPOS', KEYS[1], 'b'), redis.call('ZRANK', KEYS[2], 'm')}",
     "4", "l", "z", "s", "h"),
    ("EVAL", "return redis.pcall('BLPOP', KEYS[1], 0)", "1", "l"),
    ("EVAL", "return redis.pcall('BZPOPMIN', KEYS[1], 1)", "1", "z"),
    ("EVAL", "return redis.pcall('ZADD', KEYS[1], 1, 'm')", "1", "l"),
    ("EVAL", "return redis.call('ZINCRBY', KEYS[1], 2, 'm')", "1", "z"),
    ("LRANGE", "l", "0", "-1"),
    resp3=True,
)  # fmt: skip

sequence(
    "rename-copy-select",
    ("RPUSH", "l", "a", "b"), ("EXPIRE", "l", "1000"), ("RENAME", "l", "m"), ("TTL", "m"),
    ("LRANGE", "m", "0", "-1"), ("EXISTS", "l"), ("COPY", "m", "n"), ("TTL", "n"),
    ("RPUSH", "n", "c"), ("LRANGE", "m", "0", "-1"), ("COPY", "m", "n"),
    ("COPY", "m", "n", "REPLACE"), ("LRANGE", "n", "0", "-1"), ("COPY", "m", "m"),
    ("RENAME", "nope", "x"), ("RENAMENX", "m", "n"), ("RENAMENX", "m", "fresh"),
    ("SADD", "s", "x"), ("RENAME", "s", "fresh"), ("TYPE", "fresh"), ("RENAME", "fresh", "fresh"),
    ("COPY", "fresh", "other", "DB", "1"), ("SELECT", "1"), ("SMEMBERS", "other"),
    ("ZADD", "z1", "1", "a"), ("DBSIZE",), ("SELECT", "16"), ("SELECT", "-1"), ("SELECT", "x"),
    ("SELECT", "0"), ("EXISTS", "other"), ("EXISTS", "z1"),
    ("COPY", "fresh", "other", "DB", "99"),
)  # fmt: skip

sequence(
    "intercard",
    ("SADD", "a", "1", "2", "3", "4"), ("SADD", "b", "2", "3", "4", "5"),
    ("ZADD", "za", "1", "x", "2", "y", "3", "z"), ("ZADD", "zb", "1", "y", "2", "z"),
    ("SINTERCARD", "2", "a", "b"), ("SINTERCARD", "2", "a", "b", "LIMIT", "2"),
    ("SINTERCARD", "2", "a", "b", "LIMIT", "0"),
    ("SINTERCARD", "1", "a", "LIMIT", "2", "LIMIT", "9"),
    ("SINTERCARD", "2", "a", "missing"), ("SINTERCARD", "0", "a"), ("SINTERCARD", "x", "a"),
    ("SINTERCARD", "3", "a", "b"), ("SINTERCARD", "2", "a", "b", "LIMIT"),
    ("SINTERCARD", "2", "a", "b", "LIMIT", "-1"), ("SINTERCARD", "2", "a", "b", "LIMIT", "x"),
    ("SINTERCARD", "2", "a", "b", "JUNK", "1"), ("SINTERCARD", "2", "a", "za"),
    ("ZINTERCARD", "2", "za", "zb"), ("ZINTERCARD", "2", "za", "zb", "LIMIT", "1"),
    ("ZINTERCARD", "-1", "za"), ("ZINTERCARD", "5", "za"), ("ZINTERCARD", "1", "za", "LIMIT", "-5"),
    ("ZINTERCARD", "2", "za", "a"), ("ZINTERCARD", "x", "za"),
    ("ZINTERCARD", "1", "za", "WEIGHTS", "2"),
)  # fmt: skip

# running them -----------------------------------------------------------------------------


def _raw_client(server: Served, protocol: int) -> redis.Redis:
    client = server.client(protocol)
    client.response_callbacks.clear()  # compare replies exactly as they came off the wire
    return client


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", _plain(call()))
    except redis.ResponseError as e:
        return ("error", type(e).__name__, str(e))


def _plain(value: Any) -> Any:
    """Errors inside a reply (EXEC's) as comparable text: exceptions compare by identity."""
    if isinstance(value, Exception):
        return f"error: {value}"
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _scan_keys(client: redis.Redis, options: Args) -> Any:
    cursor: Any = b"0"
    keys: list[bytes] = []
    for _ in range(10_000):
        reply = client.execute_command("SCAN", cursor, *options)
        cursor, page = reply[0], reply[1]
        keys.extend(page)
        if cursor == b"0":
            return sorted(set(keys))
    raise AssertionError("SCAN did not finish")


UNORDERED = frozenset(
    {"HGETALL", "HKEYS", "HVALS", "SMEMBERS", "SINTER", "SUNION", "SDIFF", "SPOP"}
)


def unordered(command: Any, result: Any) -> Any:
    """``result`` in a canonical order when ``command`` answers in an unspecified one."""
    name = command.decode() if isinstance(command, bytes) else str(command)
    if result[0] != "ok" or name.upper() not in UNORDERED or not isinstance(result[1], list):
        return result
    items = result[1]
    if name.upper() == "HGETALL":
        return ("ok", sorted(zip(items[::2], items[1::2])))
    return ("ok", sorted(items))


def _run(client: redis.Redis, step: Step) -> Any:
    if isinstance(step, ScanAll):
        return _outcome(lambda: _scan_keys(client, step.options))
    if isinstance(step, Sorted):
        result = _outcome(lambda: client.execute_command(*step.args))
        return ("ok", sorted(result[1])) if result[0] == "ok" else result
    args = step.args if isinstance(step, Approx) else step
    return unordered(args[0], _outcome(lambda: client.execute_command(*args)))


def _same(step: Step, ours: Any, theirs: Any) -> bool:
    if isinstance(step, Approx) and ours[0] == theirs[0] == "ok":
        return bool(abs(ours[1] - theirs[1]) <= step.within)
    return bool(ours == theirs)


def _cases() -> list[Any]:
    cases = []
    for name, seq in SEQUENCES.items():
        cases.append(pytest.param(seq, 2, id=f"{name}-resp2"))
        if seq.resp3:
            cases.append(pytest.param(seq, 3, id=f"{name}-resp3"))
    return cases


@pytest.mark.parametrize(("seq", "protocol"), _cases())
def test_same_replies_as_redis(
    seq: Sequence, protocol: int, engramdb_server: Served, redis_server: Served
) -> None:
    ours, theirs = _raw_client(engramdb_server, protocol), _raw_client(redis_server, protocol)
    try:
        ours.execute_command("FLUSHALL")
        theirs.execute_command("FLUSHALL")
        mismatches = []
        for i, step in enumerate(seq.steps):
            got, want = _run(ours, step), _run(theirs, step)
            if not _same(step, got, want):
                mismatches.append(f"step {i} {step!r}:\n  engramdb: {got!r}\n  redis:    {want!r}")
        assert not mismatches, "\n".join(mismatches)
    finally:
        ours.close()
        theirs.close()


# the wire itself --------------------------------------------------------------------------

_WIRE: list[Args] = [
    ("RPUSH", "l", "a", "b"), ("LPOP", "nope", "2"), ("LPOP", "nope"), ("LPOP", "l", "0"),
    ("GET", "nope"), ("TYPE", "l"), ("TYPE", "nope"), ("HGETALL", "nope"), ("HSET", "h", "f", "1"),
    ("HGETALL", "h"), ("MGET", "nope", "l"), ("INCRBYFLOAT", "f", "1.5"), ("SET", "s", "v"),
    ("SET", "s", "v", "NX"), ("SET", "s", "w", "XX", "GET"), ("SCAN", "0", "MATCH", "nope*"),
    ("KEYS", "nope*"), ("LRANGE", "nope", "0", "-1"), ("EXPIRE", "s", "10"), ("TTL", "s"),
    ("GETEX", "nope"), ("HMGET", "h", "f", "g"), ("LPOP", "l", "5"), ("EXISTS", "l"),
    ("DEL", "s", "h"), ("RPOP", "l"), ("GET", "l", "x"), ("LPUSH", "s"),
]  # fmt: skip


def _wire_replies(port: int, protocol: int) -> list[bytes]:
    import socket

    import hiredis

    replies: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        commands: list[Args] = [("FLUSHALL",)]
        if protocol == 3:
            commands.insert(0, ("HELLO", "3"))
        commands.extend(_WIRE)
        for args in commands:
            parts = [str(a).encode() for a in args]
            sock.sendall(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            )
            reader, data = hiredis.Reader(), b""
            while True:
                chunk = sock.recv(65536)
                assert chunk, "connection closed"
                data += chunk
                reader.feed(chunk)
                if reader.gets() is not False:
                    break
            replies.append(data)
    return replies[2:] if protocol == 3 else replies[1:]


@pytest.mark.parametrize("protocol", [2, 3])
def test_same_bytes_on_the_wire(
    protocol: int, engramdb_server: Served, redis_server: Served
) -> None:
    """Null arrays vs null bulks, maps, doubles and status replies, byte for byte."""
    ours = _wire_replies(engramdb_server.port, protocol)
    theirs = _wire_replies(redis_server.port, protocol)
    for args, got, want in zip(_WIRE, ours, theirs):
        assert got == want, f"{args}: engramdb {got!r} != redis {want!r}"
