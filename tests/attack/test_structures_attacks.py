"""Attacks on Redis lists, hashes, sets and sorted sets stored per element: structures far
past the old 1 MiB record cap, a kill -9 in the middle of a stream of pushes, every command
against every wrong type, blocked clients that vanish or wait on the fake clock, field names
no record bin could carry, elements that would outlive their key.

Servers are real ``engramdb serve`` subprocesses (``--testing`` where the fake clock is
moved), crashes are real ``kill -9``; what is left on disk is read back through the public
embedded API (``engramdb.open`` on the same directory, ``Database.stats``).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

import engramdb
from engramdb.protocol.resp import encode_command

from .conftest import Served, ServeFactory, wait_for

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


def client(server: Served) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=30)


def element_entries(data: Path) -> int:
    """Entries of the structures' element set left on disk (plus its bookkeeping)."""
    db = engramdb.open(data)
    try:
        count: int = db.stats()["sets"].get("_redis", 0)
        return count
    finally:
        db.close()


def debug(server: Served, *args: bytes) -> Any:
    with server.raw() as admin:
        admin.send(encode_command(b"ENGRAM.DEBUG", *args))
        return admin.replies(1)[0]


# size ------------------------------------------------------------------------------------


def test_list_hash_set_and_zset_grow_far_past_the_old_one_mib_cap(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    item = b"x" * 1000
    total = 5_000  # 5 MB per structure: five times what one record may hold
    pipe = r.pipeline(transaction=False)
    for start in range(0, total, 500):
        batch = range(start, start + 500)
        pipe.rpush("l", *[item + b"%d" % i for i in batch])
        pipe.hset("h", mapping={b"f%d" % i: item for i in batch})
        pipe.sadd("s", *[item + b"%d" % i for i in batch])
        pipe.zadd("z", {item + b"%d" % i: i for i in batch})
    pipe.execute()
    assert r.llen("l") == r.hlen("h") == r.scard("s") == r.zcard("z") == total
    assert r.lindex("l", -1) == item + b"4999"
    assert r.lpush("l", "first") == total + 1
    assert r.lrange("l", 0, 1) == [b"first", item + b"0"]
    assert r.hget("h", "f4321") == item
    assert r.sismember("s", item + b"77")
    assert r.zrank("z", item + b"10") == 10
    assert r.zrange("z", 4998, -1, withscores=True) == [
        (item + b"4998", 4998.0),
        (item + b"4999", 4999.0),
    ]


def test_an_element_over_the_record_limit_is_refused_whole(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--max-record-bytes", "4096")
    r = client(server)
    r.rpush("l", "a")
    for call in (
        lambda: r.rpush("l", "b", "x" * 5000),
        lambda: r.hset("h", mapping={"ok": "1", "big": "x" * 5000}),
        lambda: r.sadd("s", "ok", "x" * 5000),
        lambda: r.zadd("z", {"ok": 1, "x" * 5000: 2}),
    ):
        with pytest.raises(redis.ResponseError, match="exceeds the record limit"):
            call()
    assert r.lrange("l", 0, -1) == [b"a"]  # nothing of a refused command was written
    assert r.exists("h", "s", "z") == 0


# crashes ---------------------------------------------------------------------------------


def test_kill_9_mid_lpush_stream_leaves_only_whole_acknowledged_pushes(
    serve: ServeFactory,
) -> None:
    """Each LPUSH carries 20 items tagged with its number: after a kill -9 while pushes are
    streaming, every push is on the list whole or not at all, every acknowledged one is
    there, and the list's length matches its elements."""
    server = serve()  # durability sync: an acknowledged push is on disk
    acked: list[int] = []
    stop = threading.Event()

    def push() -> None:
        r = client(server)
        n = 0
        try:
            while not stop.is_set():
                pipe = r.pipeline(transaction=False)
                for i in range(n, n + 10):
                    pipe.lpush("l", *[b"%d:%d" % (i, j) for j in range(20)])
                    pipe.hset("h", mapping={b"%d:%d" % (i, j): b"v" for j in range(20)})
                pipe.execute()
                acked.extend(range(n, n + 10))
                n += 10
        except (redis.ConnectionError, ConnectionError):
            return

    pusher = threading.Thread(target=push)
    pusher.start()
    wait_for(lambda: len(acked) >= 200, 60, "pushes to be acknowledged")
    server.kill()
    stop.set()
    pusher.join()
    server.start()
    r = client(server)
    items = r.lrange("l", 0, -1)
    assert r.llen("l") == len(items)
    pushes: dict[int, list[int]] = {}
    for item in items:
        push_no, j = map(int, item.split(b":"))
        pushes.setdefault(push_no, []).append(j)
    assert all(sorted(js) == list(range(20)) for js in pushes.values())  # whole pushes only
    assert set(acked) <= set(pushes)
    assert sorted(pushes) == list(range(len(pushes)))  # a prefix of the stream, no gap
    fields = r.hkeys("h")
    assert r.hlen("h") == len(fields)
    hashed = Counter(int(f.split(b":")[0]) for f in fields)
    assert set(hashed.values()) == {20}  # whole HSETs only
    # Each LPUSH is followed by its HSET: the kill may fall between the last two.
    assert set(hashed) in (set(pushes), set(pushes) - {max(pushes)})
    assert r.lpush("l", "after") == len(items) + 1  # the structure is still sound


def test_kill_9_before_a_deleted_big_list_is_reclaimed_reclaims_it_after_restart(
    serve: ServeFactory,
) -> None:
    server = serve()
    r = client(server)
    for start in range(0, 20_000, 1000):  # 2 MB: more than one record could hold
        r.rpush("big", *[b"x" * 100 + b"%d" % i for i in range(start, start + 1000)])
    r.delete("big")
    server.kill()  # most likely before the background reclaimer got to it
    server.start()
    r = client(server)
    assert r.llen("big") == 0
    r.rpush("big", "new")
    assert r.lrange("big", 0, -1) == [b"new"]  # no element of the old list came back
    wait_for(lambda: element_entries(server.data) <= 3, 60, "the old elements to be reclaimed")


# elements never outlive their key ----------------------------------------------------------


def test_del_expiry_flush_and_overwrite_of_big_structures_free_every_element(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none", "--testing")
    r = client(server)
    big = [b"m%d" % i for i in range(3000)]

    def fill() -> None:
        r.delete("s")
        r.rpush("l", *big)
        r.hset("h", mapping=dict.fromkeys(big, b"v"))
        r.sadd("s", *big)
        r.zadd("z", {m: i for i, m in enumerate(big)})
        r.rpush("small", "a", "b")
        r.zadd("smallz", {"a": 1, "b": 2, "c": 3})

    fill()
    r.delete("l", "h", "small")
    r.set("s", "now a string")
    r.rename("z", "smallz")  # the old small zset's elements go with it
    r.expire("smallz", 5)
    debug(server, b"CLOCK", b"ADVANCE", b"6")
    assert r.exists("l", "h", "s", "z", "small", "smallz") == 1  # the string
    wait_for(lambda: element_entries(server.data) <= 1, 60, "the elements to be reclaimed")
    fill()
    r.flushall()
    wait_for(lambda: element_entries(server.data) <= 1, 60, "flushed elements to be reclaimed")


def test_flushall_answers_once_every_element_is_freed_unless_async(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    items = [b"e%d" % i for i in range(20_000)]
    for flush in (r.flushall, r.flushdb):
        r.rpush("l", *items)
        r.sadd("s", *items[:5000])
        assert element_entries(server.data) >= 25_000
        flush()  # as Redis' default (SYNC): freed before the reply, not in the background
        assert element_entries(server.data) <= 1
    r.rpush("l", *items)
    r.flushall(asynchronous=True)  # ASYNC: answered at once, freed in the background
    wait_for(lambda: element_entries(server.data) <= 1, 60, "flushed elements to be reclaimed")
    for bad in ((b"FLUSHALL", b"LATER"), (b"FLUSHDB", b"SYNC", b"ASYNC")):
        with pytest.raises(redis.ResponseError, match="syntax error"):
            r.execute_command(*bad)


def test_random_structure_commands_leave_no_element_behind(serve: ServeFactory) -> None:
    from tests.server.test_redis_fuzz import _structure_generators

    server = serve("--durability", "none")
    r = client(server)
    rng = random.Random(7)
    generators = _structure_generators(rng)
    for _ in range(3000):
        with contextlib.suppress(redis.ResponseError):
            r.execute_command(*rng.choice(generators)())
    r.flushall()
    wait_for(lambda: element_entries(server.data) <= 1, 60, "every element to be reclaimed")


# types -----------------------------------------------------------------------------------

_BY_TYPE: dict[str, list[tuple[Any, ...]]] = {
    "list": [("LPUSH", "x"), ("RPOP",), ("LRANGE", 0, -1), ("LREM", 0, "x"), ("LPOS", "x"),
             ("LINSERT", "BEFORE", "a", "b"), ("LMOVE", "other", "LEFT", "LEFT"),
             ("BLPOP", 0.01), ("LSET", 0, "v"), ("LTRIM", 0, 1), ("LLEN",)],
    "hash": [("HSET", "f", "v"), ("HGET", "f"), ("HDEL", "f"), ("HSTRLEN", "f"),
             ("HSCAN", 0), ("HRANDFIELD",), ("HINCRBY", "f", 1), ("HGETALL",)],
    "set": [("SADD", "m"), ("SREM", "m"), ("SMEMBERS",), ("SISMEMBER", "m"), ("SCARD",),
            ("SPOP",), ("SRANDMEMBER",), ("SINTER",), ("SSCAN", 0), ("SMISMEMBER", "m")],
    "zset": [("ZADD", 1, "m"), ("ZREM", "m"), ("ZSCORE", "m"), ("ZINCRBY", 1, "m"),
             ("ZRANGE", 0, -1), ("ZRANK", "m"), ("ZPOPMIN",), ("ZCOUNT", "-inf", "+inf"),
             ("ZSCAN", 0), ("ZCARD",), ("ZMSCORE", "m")],
    "string": [("GET",), ("APPEND", "x"), ("INCR",), ("STRLEN",)],
}  # fmt: skip
_MAKE = {
    "list": ("RPUSH", "a", "b"),
    "hash": ("HSET", "a", "b"),
    "set": ("SADD", "a", "b"),
    "zset": ("ZADD", 1, "a"),
    "string": ("SET", "abc"),
}
_DUMP = {
    "list": ("LRANGE", 0, -1),
    "hash": ("HGETALL",),
    "set": ("SMEMBERS",),
    "zset": ("ZRANGE", 0, -1, "WITHSCORES"),
    "string": ("GET",),
}


@pytest.mark.parametrize("held", list(_MAKE))
def test_every_command_against_a_key_of_another_type_is_wrongtype_and_changes_nothing(
    serve: ServeFactory, held: str
) -> None:
    server = serve("--durability", "none")
    r = client(server)
    r.execute_command(_MAKE[held][0], "k", *_MAKE[held][1:])
    before = r.execute_command(_DUMP[held][0], "k", *_DUMP[held][1:])
    tried = 0
    for family, calls in _BY_TYPE.items():
        if family == held:
            continue
        for name, *rest in calls:
            with pytest.raises(redis.ResponseError, match="^" + WRONGTYPE):
                r.execute_command(name, "k", *rest)
            tried += 1
    assert tried > 30
    assert r.type("k") == held.encode()
    assert r.execute_command(_DUMP[held][0], "k", *_DUMP[held][1:]) == before


# names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"", b"\x00", b"\xff\xfe", b"$type", b"$len", b"_redis\x00e", b"\x00" * 2000],
    ids=["empty", "nul", "not-utf8", "header-bin", "length-bin", "internal-prefix", "2k-nuls"],
)
def test_hostile_field_and_member_names_round_trip_and_touch_nothing_else(
    serve: ServeFactory, name: bytes
) -> None:
    server = serve("--durability", "none")
    r = client(server)
    r.hset("h", mapping={b"ok": b"1"})
    r.sadd("s", b"ok")
    assert r.hset("h", name, b"v") == 1
    assert r.hget("h", name) == b"v"
    assert r.hgetall("h") == {b"ok": b"1", name: b"v"}
    assert r.hlen("h") == 2
    assert r.sadd("s", name) == 1
    assert r.smembers("s") == {b"ok", name}
    assert r.zadd("z", {name: 1.5, b"ok": 1}) == 2
    assert r.zrange("z", 0, -1, withscores=True) == [(b"ok", 1.0), (name, 1.5)]
    # The same bytes as a key: a key of its own, not a way into anyone's elements.
    r.rpush(name[:100] or b"k", b"item")
    assert r.hgetall("h") == {b"ok": b"1", name: b"v"}
    assert r.type("h") == b"hash"
    assert r.hdel("h", name) == 1
    assert r.hgetall("h") == {b"ok": b"1"}


def test_the_record_api_cannot_reach_element_entries(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    r.rpush("l", "a", "b")
    db = engramdb.open(server.data)
    try:
        with pytest.raises(engramdb.InvalidArgument, match="reserved"):
            db.records("_redis")
        header = db.records("default").get("l")
        assert header is not None
        assert header.bins["$type"] == "list"
        assert header.bins["$len"] == 2
    finally:
        db.close()


# blocked clients -------------------------------------------------------------------------


def test_blpop_client_that_disconnects_takes_nothing(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    gone = []
    for _ in range(20):
        conn = server.raw()
        conn.send(encode_command(b"BLPOP", b"q", b"0"))
        gone.append(conn)
    wait_for(lambda: _blocked(r) == 20, 30, "the clients to block")
    for conn in gone:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        conn.close()  # a reset, not a goodbye
    wait_for(lambda: _blocked(r) == 0, 30, "the server to forget them")
    assert r.rpush("q", "a", "b") == 2
    with server.raw() as waiter:
        waiter.send(encode_command(b"BLPOP", b"q", b"0"))
        assert waiter.replies(1) == [[b"q", b"a"]]
    assert r.lrange("q", 0, -1) == [b"b"]  # nothing went to a dead client


def test_blpop_client_that_disconnects_mid_wake_loses_nothing(serve: ServeFactory) -> None:
    """Pushes and disconnects race: every pushed item ends with a live client or on the list."""
    server = serve("--durability", "none")
    r = client(server)
    got: list[bytes] = []
    live = [server.raw() for _ in range(10)]
    for conn in live:
        conn.send(encode_command(b"BLPOP", b"q", b"0"))
    dying = [server.raw() for _ in range(10)]
    for conn in dying:
        conn.send(encode_command(b"BLPOP", b"q", b"0"))
    wait_for(lambda: _blocked(r) == 20, 30, "the clients to block")
    pusher = threading.Thread(target=lambda: [r.rpush("q", b"%d" % i) for i in range(15)])
    pusher.start()
    for conn in dying:
        conn.close()
    pusher.join()
    for conn in live:
        got.extend(reply[1] for reply in conn.replies(1))
        conn.close()
    left = r.lrange("q", 0, -1)
    assert sorted(got + left, key=int) == [b"%d" % i for i in range(15)]


def test_blpop_timeout_runs_on_the_servers_fake_clock(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--testing")
    r = client(server)
    with server.raw() as waiter, server.raw() as other:
        waiter.send(encode_command(b"BLPOP", b"q", b"100"))
        other.send(encode_command(b"BZPOPMIN", b"z", b"50"))
        wait_for(lambda: _blocked(r) == 2, 30, "the clients to block")
        debug(server, b"CLOCK", b"ADVANCE", b"60")
        assert other.replies(1) == [None]  # 50 s passed on the server's clock
        assert _blocked(r) == 1  # the 100 s wait goes on
        debug(server, b"CLOCK", b"ADVANCE", b"41")
        assert waiter.replies(1) == [None]
        # A woken wait answers with what was pushed, timeout or not.
        waiter.send(encode_command(b"BRPOP", b"q", b"100"))
        wait_for(lambda: _blocked(r) == 1, 30, "the client to block again")
        r.rpush("q", "x")
        assert waiter.replies(1) == [[b"q", b"x"]]


def test_blocking_commands_inside_multi_never_block_and_scripts_refuse_them(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    r = client(server)
    pipe = r.pipeline(transaction=True)
    pipe.blpop(["q"], 0)
    pipe.rpush("q", "a")
    pipe.blpop(["q"], 0)
    pipe.blmove("q", "p", 0)
    assert pipe.execute() == [None, 1, (b"q", b"a"), None]
    # Scripts refuse blocking commands, as Redis 7.0 does, rather than stall the server.
    for script in (
        "return redis.call('BRPOP', KEYS[1], 0)",
        "return redis.call('BLMOVE', KEYS[1], 'p', 'LEFT', 'RIGHT', 0)",
        "return redis.call('BZPOPMIN', KEYS[1], 0)",
    ):
        with pytest.raises(redis.ResponseError, match="not allowed from script"):
            r.eval(script, 1, "q")
    assert r.lrange("p", 0, -1) == []


def test_blpop_with_a_huge_or_negative_timeout_is_refused(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    for timeout in ("-1", "nan", "abc", "1e300"):
        with pytest.raises(redis.ResponseError, match="timeout"):
            r.execute_command("BLPOP", "q", timeout)
    assert _blocked(r) == 0


def _blocked(r: redis.Redis) -> int:
    # The count the server itself keeps of parked clients (INFO clients).
    info = r.info("clients")
    return int(info.get("blocked_clients", -1))


def test_pipelined_commands_behind_a_blocked_blpop_wait_their_turn(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    with server.raw() as conn:
        conn.send(
            encode_command(b"BLPOP", b"q", b"0")
            + encode_command(b"RPUSH", b"q", b"mine")
            + encode_command(b"LLEN", b"q")
        )
        wait_for(lambda: _blocked(r) == 1, 30, "the client to block")
        r.rpush("q", "theirs")
        assert conn.replies(3) == [[b"q", b"theirs"], 1, 1]


def test_client_unblock_ends_a_wait_as_a_timeout_or_an_error(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    r = client(server)
    with server.raw() as waiter:
        waiter.send(encode_command(b"CLIENT", b"ID"))
        (client_id,) = waiter.replies(1)
        assert r.client_unblock(client_id) is False  # not waiting: nothing to end
        waiter.send(encode_command(b"BLPOP", b"q", b"0"))
        wait_for(lambda: _blocked(r) == 1, 30, "the client to block")
        assert b"flags=b" in r.execute_command("CLIENT", "LIST")
        assert r.client_unblock(client_id) is True
        assert waiter.replies(1) == [None]
        waiter.send(encode_command(b"BZPOPMIN", b"z", b"0"))
        wait_for(lambda: _blocked(r) == 1, 30, "the client to block again")
        assert r.client_unblock(client_id, error=True) is True
        (reply,) = waiter.replies(1)
        assert str(reply).startswith("UNBLOCKED")
        r.rpush("q", "kept")
    assert r.lrange("q", 0, -1) == [b"kept"]  # an unblocked client took nothing
    assert _blocked(r) == 0
