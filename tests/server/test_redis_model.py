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
    r.lpush("l", "a")
    r.sadd("set", "x", "y", "z")
    r.zadd("z", {"m": 1.5})
    assert records.get("s").bins == {"$string": b"v"}
    # A structure is a header record: its type and length; the elements are stored apart.
    hash_header = records.get("h").bins
    assert hash_header["$type"] == "hash"
    assert hash_header["$len"] == 2
    assert records.get("l").bins["$type"] == "list"
    assert records.get("l").bins["$len"] == 3
    assert records.get("set").bins["$len"] == 3
    assert records.get("z").bins["$type"] == "zset"
    assert records.count() == 5
    # One change per command on the key, whatever it did to its elements.
    before = embedded.last_sequence()
    r.rpush("l", *[f"x{i}" for i in range(100)])
    changes = embedded.changes(before)
    assert [(c.key, c.kind) for c in changes] == [("l", "put")]
    assert records.get("l").generation == changes[0].generation
    # The elements live in a set the record API refuses.
    with pytest.raises(engramdb.InvalidArgument, match="reserved"):
        embedded.records("_redis")
    # TTL, existence and deletion are the header's.
    r.expire("l", 100)
    assert records.get("l").expires_at is not None
    records.delete("h")
    assert r.hgetall("h") == {}
    assert r.exists("h") == 0


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
    # Writes keep a record written with the Python API a record, with its types...
    assert r.hincrby("user", "age", 1) == 37
    assert r.hincrbyfloat("user", "score", 0.25) == 1.75
    assert r.hset("user", "city", "London") == 1
    bins = records.get("user").bins
    assert bins["age"] == 37
    assert bins["score"] == 1.75
    assert bins["city"] == b"London"
    # ...until a field could not be a bin: then it becomes a structure, fields and all.
    assert r.hset("user", b"\xff", "binary") == 1
    assert records.get("user").bins["$type"] == "hash"
    assert r.hget("user", "name") == b"Ada"
    assert r.hget("user", b"\xff") == b"binary"
    assert r.hlen("user") == 7

    # A list stored whole by earlier versions reads as it is, and converts on its first write.
    records.put("mixed", {"$list": ["a", 1, b"x", None, "long text " * 4, 2.5]}, ttl=100)
    assert r.lrange("mixed", 0, -1) == [b"a", b"1", b"x", b"", b"long text " * 4, b"2.5"]
    assert r.lindex("mixed", -1) == b"2.5"
    assert r.lpop("mixed", 2) == [b"a", b"1"]
    assert records.get("mixed").bins["$type"] == "list"
    assert r.rpop("mixed", 2) == [b"2.5", b"long text " * 4]
    assert r.lpush("mixed", "z") == 3
    assert r.lrange("mixed", 0, -1) == [b"z", b"x", b""]
    assert 0 < r.ttl("mixed") <= 100  # the conversion kept the TTL

    records.put("odd", {"$list": "not a list"})
    assert r.llen("odd") == 1
    assert r.rpush("odd", "more") == 2
    assert r.lrange("odd", 0, -1) == [b"not a list", b"more"]
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
    ["", "f" * 65, "$list", "$string", "$type", b"\xff", b"\x00\xfe" * 300],
    ids=["empty", "too-long", "list-bin", "string-bin", "header-bin", "not-utf8", "long-binary"],
)
def test_hash_fields_are_any_bytes(engramdb_client: redis.Redis, field: str | bytes) -> None:
    r = engramdb_client
    assert r.hset("h", field, "v") == 1
    assert r.hincrby("h", "n", 1) == 1
    assert r.hget("h", field) == b"v"
    assert r.hexists("h", field) is True
    assert r.hstrlen("h", field) == 1
    raw = field.encode() if isinstance(field, str) else field
    assert r.hgetall("h") == {raw: b"v", b"n": b"1"}
    assert r.hdel("h", field, "n") == 2
    assert r.exists("h") == 0
    assert r.sadd("s", field) == 1
    assert r.smembers("s") == {raw}
    assert r.zadd("z", {field: 2}) == 1
    assert r.zrange("z", 0, -1, withscores=True) == [(raw, 2.0)]


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
