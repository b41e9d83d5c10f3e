"""Redis lists, hashes, sets and sorted sets on the PostgreSQL engine, through two
``engramdb serve`` fronts: elements are per-element rows, ranges are range scans inside the
write transaction, and a removed structure's rows are reclaimed by whichever front runs.
"""

from __future__ import annotations

import redis

import engramdb
from tests.postgres.conftest import ServeFactory, wait_for


def test_structures_written_through_one_front_are_read_through_another(
    serve: ServeFactory, postgres_url: str
) -> None:
    a = serve("--data", postgres_url, "--durability", "sync", name="front-a")
    b = serve("--data", postgres_url, "--durability", "sync", name="front-b")
    ra, rb = redis.Redis(port=a.port), redis.Redis(port=b.port)
    ra.rpush("l", *[b"i%d" % i for i in range(200)])
    assert rb.lpush("l", "first") == 201
    assert ra.lrange("l", 0, 2) == [b"first", b"i0", b"i1"]
    assert rb.linsert("l", "BEFORE", "i100", "mid") == 202
    assert ra.lrem("l", 0, "i5") == 1
    assert ra.lpos("l", "mid") == 100  # first, i0..i99, mid; less i5
    ra.hset("h", mapping={b"": b"empty", b"\xff": b"binary"})
    assert rb.hgetall("h") == {b"": b"empty", b"\xff": b"binary"}
    ra.sadd("s", "x", "y", "z")
    assert rb.sinter("s") == {b"x", b"y", b"z"}
    ra.zadd("z", {"a": 1, "b": 2, "c": 3})
    assert rb.zrange("z", "(1", "+inf", byscore=True, withscores=True) == [
        (b"b", 2.0),
        (b"c", 3.0),
    ]
    assert rb.zpopmin("z") == [(b"a", 1.0)]
    pipe = rb.pipeline(transaction=True)
    pipe.zadd("z", {"d": 0})
    pipe.zrange("z", 0, -1)
    pipe.rename("l", "l2")
    assert pipe.execute() == [1, [b"d", b"b", b"c"], True]
    assert ra.llen("l2") == 201
    assert ra.eval("return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')", 1, "z") == [
        b"d",
        b"0",
    ]
    ra.delete("l2", "h", "s", "z")
    assert rb.exists("l2", "h", "s", "z") == 0

    def reclaimed() -> bool:
        with engramdb.open(postgres_url) as db:
            return int(db.stats()["sets"].get("_redis", 0)) <= 1

    wait_for(reclaimed, 60, "the removed structures' rows to be reclaimed")
