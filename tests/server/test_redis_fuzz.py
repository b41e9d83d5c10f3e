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


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sequences_match_redis(
    seed: int, engramdb_server: Served, redis_server: Served
) -> None:
    rng = random.Random(seed)
    generators = _generators(rng)
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
