"""Redis behaviour that redis-py's own test suite checks and engramdb missed
(``bench/redis_py_suite.py`` runs that suite; each test here pins one fix), compared with a
real ``redis-server`` where one is installed."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis

from tests.server.conftest import Served


def test_substr_is_getrange(engramdb_client: redis.Redis) -> None:
    r = engramdb_client
    r.set("a", "0123456789")
    assert r.substr("a", 0) == b"0123456789"
    assert r.substr("a", 2) == b"23456789"
    assert r.substr("a", 3, 5) == b"345"
    assert r.substr("a", 3, -2) == b"345678"
    assert r.substr("missing", 0, 3) == b""


def test_randomkey_answers_nil_then_every_key_of_the_database(
    engramdb_client: redis.Redis,
) -> None:
    r = engramdb_client
    assert r.randomkey() is None
    r.set("a", 1)
    r.rpush("b", "x")
    r.hset("c", "f", "v")
    seen = {r.randomkey() for _ in range(200)}
    # Uniform over three keys: missing one in 200 draws has probability 3 * (2/3)^200.
    assert seen == {b"a", b"b", b"c"}
    r.select(1)
    assert r.randomkey() is None  # only the selected database's keys
    r.select(0)


def test_randomkey_matches_redis_arity(engramdb_server: Served, redis_server: Served) -> None:
    for served in (engramdb_server, redis_server):
        with served.client() as client, pytest.raises(redis.ResponseError) as caught:
            client.execute_command("RANDOMKEY", "extra")
        assert "wrong number of arguments" in str(caught.value), served.name


_KEYS_AND_FLAGS = [
    ("LMOVE", "a", "b", "left", "left"),
    ("BLMOVE", "a", "b", "left", "left", "0"),
    ("RPOPLPUSH", "a", "b"),
    ("BRPOPLPUSH", "a", "b", "0"),
    ("SMOVE", "a", "b", "m"),
    ("DEL", "a", "b"),
    ("UNLINK", "a"),
    ("RENAME", "a", "b"),
    ("RENAMENX", "a", "b"),
    ("COPY", "a", "b"),
    ("SET", "a", "b"),
    ("GETDEL", "a"),
    ("LPOP", "a"),
    ("RPUSH", "a", "x"),
    ("SADD", "a", "m"),
    ("SREM", "a", "m"),
    ("HSET", "a", "f", "v"),
    ("INCR", "a"),
    ("GET", "a"),
]


@pytest.mark.parametrize("command", _KEYS_AND_FLAGS, ids=lambda c: c[0])
def test_command_getkeysandflags_names_each_keys_role_as_redis(
    command: tuple[str, ...], engramdb_server: Served, redis_server: Served
) -> None:
    """A move's source is read and emptied, its destination inserted into; DEL removes;
    SET overwrites: the access flags Redis reports per key, not one flag set per command."""
    answers = []
    for served in (engramdb_server, redis_server):
        with served.client() as client:
            answers.append(client.command_getkeysandflags(*command))
    assert answers[0] == answers[1]


def test_command_getkeysandflags_lmove_as_redis_py_expects(engramdb_client: redis.Redis) -> None:
    res = engramdb_client.command_getkeysandflags("LMOVE", "mylist1", "mylist2", "left", "left")
    assert res == [
        [b"mylist1", [b"RW", b"access", b"delete"]],
        [b"mylist2", [b"RW", b"insert"]],
    ]


def _lcs_both(
    engramdb_server: Served, redis_server: Served, protocol: int, values: dict[str, str], *args: str
) -> list[Any]:
    """LCS's reply (or its error text) from each server, with the same keys set."""
    out: list[Any] = []
    for served in (engramdb_server, redis_server):
        with served.client(protocol) as client:
            client.flushall()
            if values:
                client.mset(values)
            client.rpush("list", "x")
            try:
                out.append(client.execute_command("LCS", *args))
            except redis.ResponseError as e:
                out.append(f"error: {str(e).split()[0]}")
    return out


_LCS_CASES = [
    ("foo", "bar"),
    ("foo", "bar", "LEN"),
    ("foo", "bar", "IDX"),
    ("foo", "bar", "IDX", "MINMATCHLEN", "3"),
    ("foo", "bar", "IDX", "WITHMATCHLEN"),
    ("foo", "bar", "IDX", "MINMATCHLEN", "2", "WITHMATCHLEN"),
    ("foo", "missing"),
    ("missing", "other", "IDX"),
    ("foo", "bar", "LEN", "IDX"),
    ("foo", "list"),
    ("foo", "bar", "BOGUS"),
]


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("args", _LCS_CASES, ids=" ".join)
def test_lcs_answers_as_redis(
    args: tuple[str, ...], protocol: int, engramdb_server: Served, redis_server: Served
) -> None:
    values = {"foo": "ohmytext", "bar": "mynewtext"}
    ours, theirs = _lcs_both(engramdb_server, redis_server, protocol, values, *args)
    assert ours == theirs


def test_lcs_of_random_strings_matches_redis(engramdb_server: Served, redis_server: Served) -> None:
    rng = random.Random(16)
    for _ in range(25):
        a = "".join(rng.choice("abc ") for _ in range(rng.randrange(0, 40)))
        b = "".join(rng.choice("abc ") for _ in range(rng.randrange(0, 40)))
        for extra in ((), ("IDX", "WITHMATCHLEN"), ("IDX", "MINMATCHLEN", "2")):
            ours, theirs = _lcs_both(
                engramdb_server, redis_server, 2, {"a": a, "b": b}, "a", "b", *extra
            )
            assert ours == theirs, (a, b, extra)


def test_lcs_refuses_strings_too_long_for_its_table(engramdb_client: redis.Redis) -> None:
    engramdb_client.mset({"a": "x" * 5000, "b": "y" * 5000})
    with pytest.raises(redis.ResponseError, match="not supported"):
        engramdb_client.execute_command("LCS", "a", "b")


def _sort_fixture(client: redis.Redis) -> None:
    client.flushall()
    client.rpush("nums", "3", "2", "10", "1", "4", "2.5", "-1")
    client.rpush("words", "pear", "apple", "fig", "Banana", "apple")
    client.rpush("bad", "1", "x", "2")
    client.sadd("s", "5", "3", "9", "1")
    client.zadd("z", {"c": 1, "a": 3, "b": 2, "d": 2})
    client.rpush("ids", "1", "2", "3", "4")
    client.mset({"w_1": "40", "w_2": "10", "w_3": "30", "name_1": "d", "name_2": "b"})
    client.hset("h_1", mapping={"age": "7", "n": "x"})
    client.hset("h_2", mapping={"age": "3"})
    client.hset("h_4", mapping={"age": "5", "n": "y"})
    client.set("str", "v")


_SORT_CASES = [
    ("nums",),
    ("nums", "DESC"),
    ("nums", "LIMIT", "1", "3"),
    ("nums", "LIMIT", "-5", "2"),
    ("nums", "LIMIT", "5", "-1"),
    ("nums", "LIMIT", "99", "2"),
    ("words", "ALPHA"),
    ("words", "ALPHA", "DESC", "LIMIT", "0", "2"),
    ("words",),
    ("bad",),
    ("s",),
    ("z",),
    ("z", "BY", "nosort"),
    ("z", "BY", "nosort", "DESC"),
    ("z", "ALPHA"),
    ("ids", "BY", "w_*"),
    ("ids", "BY", "w_*", "DESC"),
    ("ids", "BY", "name_*", "ALPHA"),
    ("ids", "BY", "name_*", "ALPHA", "DESC"),
    ("ids", "BY", "h_*->age"),
    ("ids", "GET", "name_*"),
    ("ids", "GET", "#", "GET", "h_*->n", "GET", "w_*"),
    ("ids", "BY", "w_*", "GET", "#", "GET", "nopattern"),
    ("ids", "BY", "nosort", "GET", "h_*->age"),
    ("missing",),
    ("str",),
    ("nums", "BOGUS"),
    ("nums", "LIMIT", "1"),
    ("nums", "LIMIT", "x", "1"),
]


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("args", _SORT_CASES, ids=" ".join)
def test_sort_answers_as_redis(
    args: tuple[str, ...], protocol: int, engramdb_server: Served, redis_server: Served
) -> None:
    answers: list[Any] = []
    for served in (engramdb_server, redis_server):
        with served.client(protocol) as client:
            _sort_fixture(client)
            try:
                answers.append(
                    [
                        client.execute_command("SORT", *args),
                        client.execute_command("SORT_RO", *args),
                    ]
                )
            except redis.ResponseError as e:
                answers.append(f"error: {e}")
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    "args",
    [
        ("nums", "STORE", "out"),
        ("ids", "BY", "w_*", "GET", "#", "GET", "name_*", "STORE", "out"),
        ("missing", "STORE", "str"),
        ("s", "DESC", "STORE", "nums"),
    ],
    ids=" ".join,
)
def test_sort_store_replaces_the_destination_as_redis(
    args: tuple[str, ...], engramdb_server: Served, redis_server: Served
) -> None:
    answers: list[Any] = []
    for served in (engramdb_server, redis_server):
        with served.client() as client:
            _sort_fixture(client)
            stored = client.execute_command("SORT", *args)
            dst = args[-1]
            answers.append((stored, client.type(dst), client.lrange(dst, 0, -1)))
    assert answers[0] == answers[1]


def test_sort_ro_refuses_store(engramdb_server: Served, redis_server: Served) -> None:
    errors = []
    for served in (engramdb_server, redis_server):
        with served.client() as client, pytest.raises(redis.ResponseError) as caught:
            client.execute_command("SORT_RO", "nums", "STORE", "out")
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def test_sort_store_notifies_sortstore_as_redis(
    engramdb_server: Served, redis_server: Served
) -> None:
    seen: list[Any] = []
    for served in (engramdb_server, redis_server):
        with served.client() as client:
            _sort_fixture(client)
            client.config_set("notify-keyspace-events", "Kl")
            pubsub = client.pubsub()
            try:
                pubsub.subscribe("__keyspace@0__:out")
                pubsub.get_message(timeout=5)  # the subscribe confirmation
                client.execute_command("SORT", "nums", "STORE", "out")
                message = pubsub.get_message(timeout=10)
                seen.append(None if message is None else message["data"])
            finally:
                pubsub.close()
                client.config_set("notify-keyspace-events", "")
    assert seen == [b"sortstore", b"sortstore"]


def _dump_fixture(client: redis.Redis) -> None:
    client.flushall()
    client.set("str", "foo")
    client.set("int", "12345")
    client.set("neg", "-7")
    client.set("long", "abcabcabcabc" * 20)  # Redis LZF-compresses it
    client.set("big", "x" * 20000)
    client.rpush("list", "a", "b", "a", "100")
    client.sadd("set", "m1", "m2", "3")
    client.hset("hash", mapping={"f": "v", "n": "1"})
    client.zadd("zset", {"a": 1.5, "b": -2, "c": 1e300})


_DUMP_KEYS = ["str", "int", "neg", "long", "big", "list", "set", "hash", "zset"]


def _value(client: redis.Redis, key: str) -> Any:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return sorted(client.smembers(key))
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    return kind


@pytest.mark.parametrize("key", _DUMP_KEYS)
def test_engramdb_dump_restores_on_redis_and_back(
    key: str, engramdb_server: Served, redis_server: Served
) -> None:
    """What engramdb DUMPs, redis-server RESTOREs to the same value, and engramdb too."""
    with engramdb_server.client() as ours, redis_server.client() as theirs:
        _dump_fixture(ours)
        theirs.flushall()
        payload = ours.dump(key)
        assert payload is not None
        assert theirs.restore("copy", 0, payload)
        assert ours.restore("copy", 0, payload)
        assert _value(theirs, "copy") == _value(ours, key) == _value(ours, "copy")


@pytest.mark.parametrize("key", ["str", "int", "neg", "long", "big"])
def test_redis_string_dumps_restore_on_engramdb(
    key: str, engramdb_server: Served, redis_server: Served
) -> None:
    with engramdb_server.client() as ours, redis_server.client() as theirs:
        _dump_fixture(theirs)
        ours.flushall()
        assert ours.restore(key, 0, theirs.dump(key))
        assert ours.get(key) == theirs.get(key)


def test_restore_refuses_redis_compact_encodings_by_name(
    engramdb_server: Served, redis_server: Served
) -> None:
    with engramdb_server.client() as ours, redis_server.client() as theirs:
        _dump_fixture(theirs)
        with pytest.raises(redis.ResponseError, match="not supported by engramdb"):
            ours.restore("x", 0, theirs.dump("list"))
        assert ours.exists("x") == 0


@pytest.mark.parametrize(
    "case",
    ["busy", "replace", "bad-crc", "short", "neg-ttl", "ttl", "absttl-past", "idle+freq", "freq"],
)
def test_restore_options_and_errors_as_redis(
    case: str, engramdb_server: Served, redis_server: Served
) -> None:
    answers: list[Any] = []
    for served in (engramdb_server, redis_server):
        with served.client() as client:
            client.flushall()
            client.set("k", "v")
            payload = client.dump("k")
            assert payload is not None
            args: list[Any] = {
                "busy": ["k", 0, payload],
                "replace": ["k", 0, payload, "REPLACE"],
                "bad-crc": ["n", 0, payload[:-1] + bytes([payload[-1] ^ 1])],
                "short": ["n", 0, b"abc"],
                "neg-ttl": ["n", -1, payload],
                "ttl": ["n", 100000, payload],
                "absttl-past": ["k", 1000, payload, "REPLACE", "ABSTTL"],
                "idle+freq": ["n", 0, payload, "IDLETIME", 5, "FREQ", 5],
                "freq": ["n", 0, payload, "FREQ", 300],
            }[case]
            try:
                reply = client.execute_command("RESTORE", *args)
            except redis.ResponseError as e:
                reply = f"error: {e}"
            answers.append((reply, client.exists("k", "n"), client.ttl("n") > 0))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("name", ["sort", "sort_ro", "dump", "restore", "lcs", "randomkey"])
def test_new_commands_document_their_redis_group(
    name: str, engramdb_server: Served, redis_server: Served
) -> None:
    groups = []
    for served in (engramdb_server, redis_server):
        conn = redis.Connection(port=served.port, protocol=3)
        try:
            conn.send_command("COMMAND", "DOCS", name)
            docs = conn.read_response()
        finally:
            conn.disconnect()
        groups.append(docs[name.encode()][b"group"])
    assert groups[0] == groups[1]
