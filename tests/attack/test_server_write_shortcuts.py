"""Attacks on the shortcuts of the server's write path (``structures.hot_write``, the
in-place INCR, the header parse cache): a hot key edited through every other path in
between must answer exactly as the general path does, and a write that changes nothing
must, as in Redis, touch nothing (no generation for WATCH, no notification).
"""

from __future__ import annotations

from engramdb.protocol.resp import encode_command

from .conftest import Raw, ServeFactory


def run(conn: Raw, *args: bytes | str | int) -> object:
    conn.send(encode_command(*args))
    return conn.replies(1)[0]


def test_sadd_of_members_already_there_leaves_a_watch_intact(serve: ServeFactory) -> None:
    server = serve()
    with server.raw() as watcher, server.raw() as other:
        assert run(other, "SADD", "tags", "a", "b") == 2
        assert run(watcher, "WATCH", "tags") == b"OK"
        assert run(other, "SADD", "tags", "a") == 0
        assert run(other, "SADD", "tags", "b", "a") == 0
        assert run(watcher, "MULTI") == b"OK"
        assert run(watcher, "SADD", "tags", "c") == b"QUEUED"
        assert run(watcher, "EXEC") == [1]
        assert run(other, "SADD", "tags", "d") == 1  # a real addition still dirties it
        assert run(watcher, "WATCH", "tags") == b"OK"
        assert run(other, "SADD", "tags", "e") == 1
        assert run(watcher, "MULTI") == b"OK"
        assert run(watcher, "SADD", "tags", "f") == b"QUEUED"
        assert run(watcher, "EXEC") is None


def test_sadd_of_a_member_already_there_notifies_nothing(serve: ServeFactory) -> None:
    server = serve()
    with server.raw() as sub, server.raw() as conn:
        assert run(conn, "CONFIG", "SET", "notify-keyspace-events", "KEs") == b"OK"
        assert run(conn, "SADD", "s", "x") == 1
        sub.send(encode_command("SUBSCRIBE", "__keyspace@0__:s"))
        assert sub.replies(1) == [[b"subscribe", b"__keyspace@0__:s", 1]]
        assert run(conn, "SADD", "s", "x") == 0
        assert run(conn, "SADD", "s", "y") == 1
        # The only event is the addition that changed the set.
        assert sub.replies(1) == [[b"message", b"__keyspace@0__:s", b"sadd"]]


def test_hot_list_rewritten_through_other_commands_between_pushes(serve: ServeFactory) -> None:
    server = serve()
    with server.raw() as conn:
        for _ in range(3):
            assert run(conn, "RPUSH", "q", "a") == 1
            assert run(conn, "LPUSH", "q", "b", "c") == 3
            assert run(conn, "LPOP", "q") == b"c"
            assert run(conn, "RPOP", "q") == b"a"
            assert run(conn, "LPOP", "q") == b"b"  # the last: the list goes
            assert run(conn, "EXISTS", "q") == 0
            assert run(conn, "RPUSH", "q", "x", "y") == 2
            assert run(conn, "EXPIRE", "q", "100") == 1
            assert run(conn, "LPUSH", "q", "w") == 3
            assert 0 < run(conn, "TTL", "q") <= 100  # type: ignore[operator]
            assert run(conn, "SET", "q", "now a string") == b"OK"
            reply = run(conn, "LPUSH", "q", "z")
            assert str(reply).startswith("WRONGTYPE")
            assert run(conn, "DEL", "q") == 1


def test_hot_hash_and_zset_edited_inside_multi_between_fast_writes(serve: ServeFactory) -> None:
    server = serve()
    with server.raw() as conn:
        assert run(conn, "HSET", "h", "f", "1") == 1
        assert run(conn, "HSET", "h", "f", "2", "g", "3") == 1
        conn.send(
            encode_command("MULTI")
            + encode_command("HDEL", "h", "f")
            + encode_command("HSET", "h", "f", "4")
            + encode_command("EXEC")
        )
        assert conn.replies(4) == [b"OK", b"QUEUED", b"QUEUED", [1, 1]]
        assert run(conn, "HSET", "h", "f", "5") == 0
        assert run(conn, "HGETALL", "h") == [b"f", b"5", b"g", b"3"]
        assert run(conn, "ZADD", "z", "1", "m") == 1
        assert run(conn, "ZADD", "z", "1", "m") == 0
        assert run(conn, "ZADD", "z", "2", "m", "2", "m") == 0
        assert run(conn, "ZSCORE", "z", "m") == b"2"
        assert run(conn, "ZADD", "z", "2", "m", "3", "m") == 0
        assert run(conn, "ZRANGE", "z", "0", "-1", "WITHSCORES") == [b"m", b"3"]


def test_incr_in_place_agrees_with_the_general_path_at_every_edge(serve: ServeFactory) -> None:
    server = serve()
    with server.raw() as conn:
        assert run(conn, "INCR", "n") == 1
        assert run(conn, "INCRBY", "n", "9223372036854775806") == 9223372036854775807
        assert str(run(conn, "INCR", "n")).startswith("ERR increment or decrement would overflow")
        assert run(conn, "GET", "n") == b"9223372036854775807"
        assert run(conn, "SET", "n", "-9223372036854775807") == b"OK"
        assert run(conn, "DECR", "n") == -9223372036854775808
        assert str(run(conn, "DECR", "n")).startswith("ERR increment or decrement would overflow")
        assert run(conn, "SET", "n", "007") == b"OK"
        assert str(run(conn, "INCR", "n")).startswith("ERR value is not an integer")
        assert run(conn, "SET", "n", "12", "EX", "100") == b"OK"
        assert run(conn, "INCR", "n") == 13
        assert 0 < run(conn, "TTL", "n") <= 100  # type: ignore[operator]
        assert run(conn, "APPEND", "n", "5") == 3
        assert run(conn, "INCR", "n") == 136
        assert run(conn, "LPUSH", "l", "x") == 1
        assert str(run(conn, "INCR", "l")).startswith("WRONGTYPE")
