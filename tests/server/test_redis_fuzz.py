"""Random command sequences over a tiny key space, differential against a real Redis.

Three keys and a few values make every command meet every type, error and edge often. The
generator avoids what is timing-dependent between two servers (TTLs short enough to expire
mid-run, GT/LT against a TTL set a millisecond earlier); everything else must match exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.server.conftest import Served
from tests.server.test_redis_compat import unordered

pytestmark = pytest.mark.peer

KEYS = ["a", "b", "c"]
FIELDS = ["f", "g", "h"]
VALUES = ["", "1", "-1", "0", "-0", "10", " 2", "1.5", "1e3", "3.0", "inf", "abc", "x" * 20,
          "9223372036854775807", "-9223372036854775808"]  # fmt: skip
NUMBERS = ["-3", "-2", "-1", "0", "1", "2", "3", "5", "100", "-100", "abc", "1.5", ""]
TTLS = ["100", "200", "0", "-5", "abc", "1.5", ""]
SET_OPTIONS = ["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "100000", "0", "-1"]
GETEX_OPTIONS = ["EX", "PX", "EXAT", "PERSIST", "100000", "4102444800", "abc"]
AT = ["4102444800", "4102444900", "1", "abc"]
CONDITIONS = ["NX", "XX", "GT", "LT"]

Command = tuple[str, ...]


def _generators(rng: random.Random) -> list[Callable[[], Command]]:
    def k() -> str:
        return rng.choice(KEYS)

    def v() -> str:
        return rng.choice(VALUES)

    def n() -> str:
        return rng.choice(NUMBERS)

    def f() -> str:
        return rng.choice(FIELDS)

    def some(pool: list[str], most: int) -> list[str]:
        return rng.sample(pool, rng.randint(0, most))

    return [
        lambda: ("SET", k(), v(), *some(SET_OPTIONS, 3)), lambda: ("GET", k()),
        lambda: ("SETNX", k(), v()), lambda: ("SETEX", k(), rng.choice(TTLS), v()),
        lambda: ("MGET", k(), k()), lambda: ("MSET", k(), v(), k(), v()),
        lambda: ("MSETNX", k(), v(), k(), v()), lambda: ("GETDEL", k()),
        lambda: ("GETSET", k(), v()), lambda: ("APPEND", k(), v()), lambda: ("STRLEN", k()),
        lambda: ("INCR", k()), lambda: ("DECR", k()), lambda: ("INCRBY", k(), n()),
        lambda: ("DECRBY", k(), n()), lambda: ("INCRBYFLOAT", k(), rng.choice(VALUES + NUMBERS)),
        lambda: ("GETRANGE", k(), n(), n()), lambda: ("SETRANGE", k(), n(), v()),
        lambda: ("GETEX", k(), *some(GETEX_OPTIONS, 2)), lambda: ("DEL", k(), k()),
        lambda: ("UNLINK", k()), lambda: ("EXISTS", k(), k()), lambda: ("TYPE", k()),
        lambda: ("EXPIRE", k(), rng.choice(TTLS), *some(["NX", "XX"], 1)),
        lambda: ("EXPIREAT", k(), rng.choice(AT), *some(CONDITIONS, 2)),
        lambda: ("PEXPIREAT", k(), rng.choice(AT) + "000", *some(CONDITIONS, 1)),
        lambda: ("TTL", k()), lambda: ("PERSIST", k()), lambda: ("EXPIRETIME", k()),
        lambda: ("HSET", k(), f(), v(), *(rng.random() < 0.3) * (f(), v())),
        lambda: ("HGET", k(), f()), lambda: ("HMGET", k(), f(), f()), lambda: ("HGETALL", k()),
        lambda: ("HDEL", k(), f(), f()), lambda: ("HEXISTS", k(), f()), lambda: ("HLEN", k()),
        lambda: ("HKEYS", k()), lambda: ("HVALS", k()), lambda: ("HINCRBY", k(), f(), n()),
        lambda: ("HINCRBYFLOAT", k(), f(), rng.choice(VALUES + NUMBERS)),
        lambda: ("HSETNX", k(), f(), v()), lambda: ("HSTRLEN", k(), f()),
        lambda: ("LPUSH", k(), v(), *(rng.random() < 0.3) * (v(),)),
        lambda: ("RPUSH", k(), v(), *(rng.random() < 0.3) * (v(),)),
        lambda: ("LPUSHX", k(), v()), lambda: ("RPUSHX", k(), v()),
        lambda: ("LPOP", k(), *some([n()], 1)), lambda: ("RPOP", k(), *some([n()], 1)),
        lambda: ("LRANGE", k(), n(), n()), lambda: ("LLEN", k()),
        lambda: ("LTRIM", k(), n(), n()), lambda: ("LINDEX", k(), n()),
        lambda: ("LSET", k(), n(), v()), lambda: ("DBSIZE",),
    ]  # fmt: skip


def _outcome(client: redis.Redis, command: Command) -> tuple[str, Any]:
    try:
        return ("ok", client.execute_command(*command))
    except redis.ResponseError as e:
        return ("error", str(e))


MEMBERS = ["a", "b", "c", "", "x" * 20, "1"]
SCORES = ["0", "1", "-1", "1.5", "-2.5", "1e3", "+inf", "-inf", "abc", "", "(1", "nan"]
SCORE_BOUNDS = ["-inf", "+inf", "0", "1", "(1", "-1", "(-2.5", "1.5", "abc", "(", "2"]
LEX_BOUNDS = ["-", "+", "[a", "(a", "[b", "(c", "[", "a", "[x"]
SIDES = ["LEFT", "RIGHT"]
# Lex ranges are defined only when all scores are equal (Redis answers by its skiplist's
# shape otherwise): they run on a key only ever given score 0.
LEX_KEY = "zlex"


def _structure_generators(rng: random.Random) -> list[Callable[[], Command]]:
    """Lists, sets, sorted sets and the keyspace commands that move them. Keys come in
    families (``l1``, ``s1``, ``z1``...) so most commands meet their own type, and one key
    in ten is any key, so every command also meets the others."""
    family = {"L": ["l1", "l2"], "S": ["s1", "s2"], "Z": ["z1", "z2"], "H": ["h1", "a"]}
    anything = [key for keys in family.values() for key in keys]
    current = ["L"]

    def k() -> str:
        if rng.random() < 0.1:
            return rng.choice(anything)
        return rng.choice(family[current[0]])

    def m() -> str:
        return rng.choice(MEMBERS)

    def n() -> str:
        return rng.choice(NUMBERS)

    def s() -> str:
        return rng.choice(SCORES)

    def some(pool: list[str], most: int) -> list[str]:
        return rng.sample(pool, rng.randint(0, most))

    def keys() -> list[str]:
        return [k() for _ in range(rng.randint(1, 3))]

    def zrange() -> Command:
        by = rng.choice(["", "BYSCORE", "BYLEX"])
        bounds = {"": NUMBERS, "BYSCORE": SCORE_BOUNDS, "BYLEX": LEX_BOUNDS}[by]
        key = LEX_KEY if by == "BYLEX" else k()
        tail = [by] if by else []
        tail += some(["REV"], 1)
        if rng.random() < 0.4:
            tail += ["LIMIT", n(), n()]
        if by != "BYLEX" and rng.random() < 0.5:
            tail.append("WITHSCORES")
        return ("ZRANGE", key, rng.choice(bounds), rng.choice(bounds), *tail)

    def zadd() -> Command:
        flags = some(["NX", "XX", "GT", "LT", "CH"], 2)
        if rng.random() < 0.2:
            return ("ZADD", k(), *flags, "INCR", s(), m())
        pairs = [part for _ in range(rng.randint(1, 3)) for part in (s(), m())]
        return ("ZADD", k(), *flags, *pairs)

    def lpos() -> Command:
        options: list[str] = []
        for name in rng.sample(["RANK", "COUNT", "MAXLEN"], rng.randint(0, 2)):
            options += [name, n()]
        return ("LPOS", k(), m(), *options)

    def combine(name: str) -> Command:
        chosen = keys()
        tail: list[str] = []
        if name != "ZDIFF" and rng.random() < 0.3:
            tail += ["WEIGHTS", *[rng.choice(["1", "2", "-1", "0.5"]) for _ in chosen]]
        if name != "ZDIFF" and rng.random() < 0.3:
            tail += ["AGGREGATE", rng.choice(["SUM", "MIN", "MAX"])]
        return (name, str(len(chosen)), *chosen, *tail, *some(["WITHSCORES"], 1))

    lists = [
        lambda: ("LPUSH", k(), m(), *some(MEMBERS, 2)), lambda: ("RPUSH", k(), m(), m()),
        lambda: ("LRANGE", k(), "0", "-1"), lambda: ("LREM", k(), n(), m()),
        lambda: ("LINSERT", k(), rng.choice(["BEFORE", "AFTER", "X"]), m(), m()), lpos,
        lambda: ("LMOVE", k(), k(), rng.choice(SIDES), rng.choice(SIDES)),
        lambda: ("RPOPLPUSH", k(), k()), lambda: ("LINDEX", k(), n()),
        lambda: ("LMPOP", "2", k(), k(), rng.choice(SIDES), *some(["COUNT", "2"], 2)),
        lambda: ("LSET", k(), n(), m()), lambda: ("LTRIM", k(), n(), n()),
        lambda: ("LPOP", k(), *some([n()], 1)), lambda: ("RPOP", k()),
    ]  # fmt: skip
    sets = [
        lambda: ("SADD", k(), m(), *some(MEMBERS, 2)), lambda: ("SREM", k(), m(), m()),
        lambda: ("SMEMBERS", k()), lambda: ("SISMEMBER", k(), m()), lambda: ("SCARD", k()),
        lambda: ("SMISMEMBER", k(), m(), m()), lambda: ("SMOVE", k(), k(), m()),
        lambda: ("SINTER", *keys()), lambda: ("SUNION", *keys()), lambda: ("SDIFF", *keys()),
        lambda: (rng.choice(["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]), k(), *keys()),
        lambda: ("SINTERCARD", "2", k(), k(), *some(["LIMIT", "1"], 2)),
        lambda: ("SPOP", k(), "10"),  # takes them all: the same in any order
    ]  # fmt: skip
    zsets = [
        zadd, zrange, lambda: ("ZINCRBY", k(), s(), m()), lambda: ("ZREM", k(), m(), m()),
        lambda: ("ZSCORE", k(), m()), lambda: ("ZMSCORE", k(), m(), m()),
        lambda: ("ZCARD", k()), lambda: ("ZCOUNT", k(), *rng.sample(SCORE_BOUNDS, 2)),
        lambda: ("ZLEXCOUNT", LEX_KEY, *rng.sample(LEX_BOUNDS, 2)),
        lambda: ("ZADD", LEX_KEY, "0", m(), "0", m()), lambda: ("ZREM", LEX_KEY, m()),
        lambda: (rng.choice(["ZRANK", "ZREVRANK"]), k(), m()),
        lambda: (rng.choice(["ZPOPMIN", "ZPOPMAX"]), k(), *some([n()], 1)),
        lambda: ("ZRANGESTORE", k(), k(), "0", "-1"),
        lambda: ("ZRANGEBYSCORE", k(), *rng.sample(SCORE_BOUNDS, 2), *some(["WITHSCORES"], 1)),
        lambda: ("ZREVRANGEBYLEX", LEX_KEY, *rng.sample(LEX_BOUNDS, 2)),
        lambda: ("ZREMRANGEBYRANK", k(), n(), n()),
        lambda: ("ZREMRANGEBYSCORE", k(), *rng.sample(SCORE_BOUNDS, 2)),
        lambda: ("ZREMRANGEBYLEX", LEX_KEY, *rng.sample(LEX_BOUNDS, 2)),
        lambda: combine(rng.choice(["ZUNION", "ZINTER", "ZDIFF"])),
        lambda: (rng.choice(["ZUNIONSTORE", "ZINTERSTORE"]), k(), *combine("ZUNION")[1:-1]),
        lambda: ("ZMPOP", "2", k(), k(), rng.choice(["MIN", "MAX"]), *some(["COUNT", "2"], 2)),
    ]  # fmt: skip
    hashes = [
        lambda: ("HSET", k(), m(), m()), lambda: ("HGETALL", k()), lambda: ("HDEL", k(), m()),
        lambda: ("HSTRLEN", k(), m()), lambda: ("HINCRBY", k(), m(), n()),
    ]  # fmt: skip
    keyspace = [
        lambda: ("SET", k(), m()), lambda: ("TYPE", k()), lambda: ("DEL", k()),
        lambda: ("RENAME", k(), k()), lambda: ("RENAMENX", k(), k()),
        lambda: ("COPY", k(), k(), *some(["REPLACE"], 1)), lambda: ("EXISTS", k()),
    ]  # fmt: skip

    def in_family(name: str, make: Callable[[], Command]) -> Callable[[], Command]:
        def generate() -> Command:
            current[0] = name if name in family else rng.choice(list(family))
            return make()

        return generate

    groups = {"L": lists, "S": sets, "Z": zsets, "H": hashes, "*": keyspace}
    return [in_family(name, make) for name, makes in groups.items() for make in makes]


@pytest.mark.parametrize("family", ["values", "structures"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sequences_match_redis(
    seed: int, family: str, engramdb_server: Served, redis_server: Served
) -> None:
    rng = random.Random(seed)
    generators = (_generators if family == "values" else _structure_generators)(rng)
    ours, theirs = engramdb_server.client(), redis_server.client()
    for client in (ours, theirs):
        client.response_callbacks.clear()
        client.execute_command("FLUSHALL")
    history: list[tuple[Command, Any]] = []
    try:
        for _ in range(4000):
            command = rng.choice(generators)()
            got = unordered(command[0], _outcome(ours, command))
            want = unordered(command[0], _outcome(theirs, command))
            timed = command[0] in ("TTL", "EXPIRETIME")
            if timed and got[0] == want[0] == "ok" and abs(got[1] - want[1]) <= 1:
                got = want  # the two servers' clocks are read a moment apart
            history.append((command, want))
            shown = "\n".join(f"  {c} -> {r!r}" for c, r in history[-10:-1])
            assert got == want, f"after:\n{shown}\n{command}: engramdb {got!r}, redis {want!r}"
    finally:
        ours.close()
        theirs.close()
