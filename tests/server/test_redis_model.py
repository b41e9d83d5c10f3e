"""How Redis values map onto records, where there is no Redis to compare with: the Python
API and Redis clients see the same data, hash field rules, SCAN cursors, glob patterns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import engramdb
from engramdb import Database
from engramdb.server.handlers.pattern import compile_pattern
from tests.server.conftest import Served


@pytest.fixture
def embedded(engramdb_server: Served, engramdb_client: redis.Redis) -> Iterator[Database]:
    """The server's own database, opened alongside it (LMDB is shared between processes)."""
    assert engramdb_server.data is not None
    db = engramdb.open(engramdb_server.data, durability="none", sweep_interval=None)
    yield db
    db.close()


def test_python_sees_what_redis_wrote(engramdb_client: redis.Redis, embedded: Database) -> None:
    r = engramdb_client
    records = embedded.records("default")
    r.set("s", "v")
    r.hset("h", mapping={"name": "Ada", "n": "1"})
    r.rpush("l", "b", "c")
    r.lpush("l", "a")  # pushes edit the stored bytes: the result must decode the same
    r.rpush("l", *[f"x{i}" for i in range(20)])  # past the 15-item msgpack fixarray
    r.lpop("l", 3)
    assert r.rpop("l", 2) == [b"x19", b"x18"]
    assert records.get("s").bins == {"$string": b"v"}
    assert records.get("h").bins == {"name": b"Ada", "n": b"1"}
    assert records.get("l").bins == {"$list": [f"x{i}".encode() for i in range(18)]}
    r.rpush("l", *["y"] * 70_000)  # past the 65535-item array16 header
    r.lpop("l", 4_468)
    items = records.get("l").bins["$list"]
    assert len(items) == 65_550
    assert set(items) == {b"y"}


def test_redis_reads_what_python_wrote(engramdb_client: redis.Redis, embedded: Database) -> None:
    r = engramdb_client
    records = embedded.records("default")
    records.put("user", {"name": "Ada", "age": 36, "score": 1.5, "tags": ["a"], "ok": True})
    assert r.type("user") == b"hash"
    assert r.hgetall("user") == {
        b"name": b"Ada",
        b"age": b"36",
        b"score": b"1.5",
        b"tags": b'["a"]',
        b"ok": b"1",
    }
    assert r.hincrby("user", "age", 1) == 37
    assert r.hincrbyfloat("user", "score", 0.25) == 1.75
    bins = records.get("user").bins
    assert bins["age"] == 37
    assert bins["score"] == 1.75

    records.put("mixed", {"$list": ["a", 1, b"x", None, "long text " * 4, 2.5]})
    assert r.lrange("mixed", 0, -1) == [b"a", b"1", b"x", b"", b"long text " * 4, b"2.5"]
    assert r.lpop("mixed", 2) == [b"a", b"1"]
    assert r.rpop("mixed", 2) == [b"2.5", b"long text " * 4]
    assert r.lpush("mixed", "z") == 3
    assert records.get("mixed").bins == {"$list": [b"z", b"x", None]}

    records.put("odd", {"$list": "not a list"})
    assert r.llen("odd") == 1
    assert r.rpush("odd", "more") == 2
    records.put("count", {"$string": 41})
    assert r.incr("count") == 42
    records.put("ratio", {"$string": 0.5})
    assert r.incrbyfloat("ratio", 0.25) == 0.75
    assert records.get("count").bins == {"$string": 42}
    assert records.get("ratio").bins == {"$string": 0.75}
    records.put("text", {"$string": "caf\u00e9"})
    assert r.get("text") == "caf\u00e9".encode()
    assert r.append("text", "!") == 6
    records.put(7, {"$string": b"int key"})
    assert r.get("7") is None  # "7" (str) and 7 (int) are different records...
    assert b"7" in r.keys("*")  # ...but an int key is listed the way Redis would show it


@pytest.mark.parametrize(
    "field",
    ["", "f" * 65, "$list", "$string", b"\xff"],
    ids=["empty", "too-long", "list-bin", "string-bin", "not-utf8"],
)
def test_hash_fields_must_be_bin_names(engramdb_client: redis.Redis, field: str | bytes) -> None:
    r = engramdb_client
    with pytest.raises(redis.ResponseError, match="hash field name"):
        r.hset("h", field, "v")
    with pytest.raises(redis.ResponseError, match="hash field name"):
        r.hincrby("h", field, 1)
    assert r.hget("h", field) is None
    assert r.hexists("h", field) is False
    assert r.hdel("h", field) == 0
    assert r.exists("h") == 0


def test_scan_cursor_walks_the_ordered_key_space(
    engramdb_client: redis.Redis, embedded: Database
) -> None:
    r = engramdb_client
    names = [f"k{i:03d}".encode() for i in range(250)] + [b"\x00", b"\xff\xfe", b"z" * 1000]
    r.mset({name: b"v" for name in names})
    embedded.records("default").put(-5, {"$string": b"int"})
    cursor, page = r.scan(0, count=7)
    assert isinstance(cursor, int)
    assert cursor > 0
    assert len(page) == 7
    seen: list[bytes] = []
    cursor = 0
    while True:
        cursor, page = r.scan(cursor, count=40)
        seen.extend(page)
        # Keys deleted or added mid-scan must not disturb the rest.
        r.delete(b"k249")
        r.set(b"added", b"v")
        if cursor == 0:
            break
    assert len(seen) == len(set(seen))
    assert set(names) - {b"k249"} <= set(seen)
    assert b"-5" in seen
    assert sorted(r.scan_iter(match="k0?0")) == [f"k0{i}0".encode() for i in range(10)]
    assert list(r.scan_iter(_type="list")) == []


# glob patterns: our regex translation against a direct port of Redis' stringmatchlen --------


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _redis_match(p: bytes, s: bytes) -> bool:
    """A line-by-line port of stringmatchlen (util.c, Redis 7.0), without nocase."""
    pi, si = 0, 0
    while pi < len(p) and si < len(s):
        c = p[pi]
        if c == ord("*"):
            while pi + 1 < len(p) and p[pi + 1] == ord("*"):
                pi += 1
            if pi + 1 == len(p):
                return True
            return any(_redis_match(p[pi + 1 :], s[k:]) for k in range(si, len(s)))
        if c == ord("?"):
            si += 1
        elif c == ord("["):
            pi += 1
            negate = pi < len(p) and p[pi] == ord("^")
            if negate:
                pi += 1
            match = False
            while True:
                if pi < len(p) and p[pi] == ord("\\") and len(p) - pi >= 2:
                    pi += 1
                    match |= p[pi] == s[si]
                elif pi < len(p) and p[pi] == ord("]"):
                    break
                elif pi >= len(p):
                    pi -= 1
                    break
                elif len(p) - pi >= 3 and p[pi + 1] == ord("-"):
                    lo, hi = sorted((_signed(p[pi]), _signed(p[pi + 2])))
                    match |= lo <= _signed(s[si]) <= hi
                    pi += 2
                else:
                    match |= p[pi] == s[si]
                pi += 1
            if match == negate:
                return False
            si += 1
        else:
            if c == ord("\\") and len(p) - pi >= 2:
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == len(s):
            while pi < len(p) and p[pi] == ord("*"):
                pi += 1
            break
    return pi >= len(p) and si == len(s)


@settings(max_examples=1500, deadline=None)
@given(
    st.binary(max_size=8).map(lambda b: bytes(b"ab*?[]^-\\\x80\xff"[x % 11] for x in b)),
    st.binary(max_size=6).map(lambda b: bytes(b"ab]-\\\x80\xff"[x % 7] for x in b)),
)
def test_glob_matches_like_redis(pattern: bytes, key: bytes) -> None:
    expected = True if pattern == b"*" else _redis_match(pattern, key)
    assert compile_pattern(pattern)(key) is expected, (pattern, key)
