"""Attacks on the embedding store's listing and bulk-delete calls, its filter language and
datetime values, through a real ``engramdb serve``.

Each test is one thing a hostile or careless client sent: a page size past the server's cap,
a forged cursor, a filter that is not a map or nests without end, bytes claiming to be a
datetime, a bulk delete with no filter, a datetime where Redis clients expect text. The
server refuses each with ``InvalidArgument`` (``-INVALID``), deletes nothing, and keeps
serving.
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import msgspec
import numpy as np
import pytest
from redis import Redis

import engramdb
from engramdb import InvalidArgument
from engramdb.protocol.resp import encode_command
from tests.attack.conftest import Raw, Served, ServeFactory


def call(conn: Raw, method: str, payload: bytes) -> Any:
    conn.send(encode_command(b"ENGRAM", method.encode(), payload))
    (reply,) = conn.replies(1)
    return reply


def native(conn: Raw, method: str, *args: Any, **kwargs: Any) -> Any:
    return call(conn, method, msgspec.msgpack.encode([list(args), kwargs]))


def is_invalid(reply: Any) -> bool:
    """Refused as an invalid argument by the method itself (not as a call the server does
    not know, or arguments its signature does not take)."""
    text = str(reply)
    return (
        isinstance(reply, Exception)
        and text.startswith("INVALID ")
        and "unknown method" not in text
        and "bad arguments" not in text
    )


@pytest.fixture
def server(serve: ServeFactory) -> Served:
    return serve("--durability", "none")


@pytest.fixture
def docs(server: Served) -> Any:
    db = engramdb.connect(server.url)
    collection = db.vectors.create_collection("docs", 2)
    collection.upsert(
        list(range(50)),
        np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32) + 0.01,
        [{"team": "red" if i % 5 else "blue", "i": i} for i in range(50)],
    )
    yield collection
    db.close()


def test_a_scan_page_past_the_servers_cap_is_refused(server: Served, docs: Any) -> None:
    with pytest.raises(InvalidArgument, match="maximum"):
        docs.scan(limit=1_000_000)
    with pytest.raises(InvalidArgument, match="maximum"):
        docs.scan(filter={"team": "red"}, limit=10_001)
    assert len(docs.scan(limit=10_000).items) == 50


@pytest.mark.parametrize("cursor", ["zz", 12, ["00"], "0" * 3])
def test_a_forged_scan_cursor_is_refused(server: Served, docs: Any, cursor: Any) -> None:
    with server.raw() as conn:
        reply = native(conn, "collection.scan", "docs", cursor=cursor)
        assert is_invalid(reply), reply
        reply = native(conn, "collection.scan", "docs", filter={"i": {"$lt": 3}}, cursor=cursor)
        assert is_invalid(reply), reply


def test_a_well_formed_cursor_of_a_key_that_never_existed_only_positions_the_scan(
    docs: Any,
) -> None:
    # Cursors are encoded keys: one made up by hand starts after that key, nothing more.
    after_41 = (b"\x01" + struct.pack(">Q", 41 + (1 << 63))).hex()
    assert [i.id for i in docs.scan(cursor=after_41).items] == list(range(42, 50))
    assert [i.id for i in docs.scan(cursor="ff" * 40).items] == []
    assert [i.id for i in docs.scan(filter={"team": "blue"}, cursor=after_41).items] == [45]


@pytest.mark.parametrize(
    "flt",
    [
        "team = red",
        ["team", "red"],
        7,
        {"team": {"$where": "sleep(10)"}},
        {"team": {"$prefix": {"$gt": ""}}},
        {"$or": "team"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("method", ["scan", "count", "delete_where", "search"])
def test_a_filter_that_is_not_the_language_is_refused_before_anything_runs(
    server: Served, docs: Any, flt: Any, method: str
) -> None:
    with server.raw() as conn:
        if method == "search":
            reply = native(conn, "collection.search", "docs", [1.0, 0.0], 3, filter=flt)
        elif method == "scan":
            reply = native(conn, "collection.scan", "docs", filter=flt)
        else:
            reply = native(conn, f"collection.{method}", "docs", flt)
        assert is_invalid(reply), reply
    assert docs.count() == 50


@pytest.mark.parametrize("method", ["scan", "count", "delete_where"])
def test_a_filter_nested_past_the_depth_limit_is_refused_on_every_new_call(
    server: Served, docs: Any, method: str
) -> None:
    # Built as bytes: {"$not": {"$not": ... {"team": "red"}}}, 500 levels deep (deep enough
    # to exhaust the stack of a recursive evaluator, shallow enough to decode).
    nested = b"\x81\xa4$not" * 500 + msgspec.msgpack.encode({"team": "red"})
    args = b"\x91\xa4docs" if method == "scan" else b"\x92\xa4docs" + nested
    kwargs = b"\x81\xa6filter" + nested if method == "scan" else b"\x80"
    with server.raw() as conn:
        reply = call(conn, f"collection.{method}", b"\x92" + args + kwargs)
        assert is_invalid(reply), reply
        assert "nest" in str(reply), reply
    assert docs.count() == 50


@pytest.mark.parametrize("flt", [None, {}], ids=["none", "empty"])
def test_a_bulk_delete_without_a_filter_deletes_nothing(
    server: Served, docs: Any, flt: Any
) -> None:
    with pytest.raises(InvalidArgument):
        docs.delete_where(flt)
    with server.raw() as conn:
        assert "bad arguments" in str(native(conn, "collection.delete_where", "docs"))
        assert is_invalid(native(conn, "collection.delete_where", "docs", flt))
    assert docs.count() == 50


@pytest.mark.parametrize(
    "ext",
    [
        struct.pack(">Iq", 0, 1 << 62),  # seconds far past year 9999
        struct.pack(">Iq", 2_000_000_000, 0),  # nanoseconds past 1e9
        b"\x00\x01\x02",  # no timestamp has three bytes
    ],
    ids=["year-huge", "nanos-over", "bad-length"],
)
def test_bytes_claiming_to_be_a_datetime_are_refused(server: Served, docs: Any, ext: bytes) -> None:
    forged = msgspec.msgpack.Ext(-1, ext)
    with server.raw() as conn:
        reply = native(conn, "collection.count", "docs", {"at": {"$lt": forged}})
        assert is_invalid(reply), reply
        reply = native(conn, "records.put", "events", "e1", {"at": forged})
        assert is_invalid(reply), reply
        conn.send(b"PING\r\n")
        assert conn.replies(1) == [b"PONG"]
    assert docs.count() == 50


def test_a_naive_datetime_is_refused_by_the_client_before_sending(docs: Any) -> None:
    naive = dt.datetime(2024, 5, 1, 12)
    with pytest.raises(InvalidArgument, match="timezone"):
        docs.upsert([99], [[1.0, 0.0]], [{"at": naive}])
    with pytest.raises(InvalidArgument, match="timezone"):
        docs.count({"at": {"$lt": naive}})
    assert docs.count() == 50


def test_a_datetime_bin_reads_as_iso_text_through_redis_commands(server: Served) -> None:
    at = dt.datetime(2024, 5, 1, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with engramdb.connect(server.url) as db:
        db.records("default").put("event", {"at": at, "seen": [at], "n": 1})
    redis = Redis(port=server.port)
    assert redis.hget("event", "at") == b"2024-05-01T12:30:00+00:00"
    assert redis.hget("event", "seen") == b'["2024-05-01T12:30:00+00:00"]'
    assert redis.hgetall("event")[b"at"] == b"2024-05-01T12:30:00+00:00"
    assert redis.type("event") == b"hash"
    with pytest.raises(Exception, match="not an integer"):
        redis.hincrby("event", "at", 1)
    assert redis.hincrby("event", "n", 1) == 2
    assert redis.hstrlen("event", "at") == len("2024-05-01T12:30:00+00:00")
    redis.close()
