"""Pub/sub and keyspace notifications of ``engramdb serve``, against real sockets and, where
a ``redis-server`` is installed, byte for byte against Redis.

Keyspace notifications come from the change log, so they are also checked for writes made
by another process through the embedded API, and for expiry by the server's sweeper on its
fake clock (``--testing``): no test sleeps through a TTL.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis

import engramdb
from engramdb.protocol.resp import encode_command
from tests.server.conftest import Served as PeerServed
from tests.server_faults.conftest import MORE, Raw, ServeFactory, serve, wait_for

__all__ = ["serve"]

WAIT = 10.0


def _raw(port: int) -> Raw:
    return Raw(("127.0.0.1", port), WAIT)


def _send(conn: Raw, *args: bytes | str) -> None:
    conn.send(encode_command(*args))


def _bytes_until(sock: socket.socket, count: int, deadline: float) -> bytes:
    """Read until ``count`` bytes arrived (the exact frames we expect)."""
    data = b""
    while len(data) < count:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {data!r}")
        data += chunk
    return data


def _exchange(port: int, script: list[tuple[int, tuple[bytes, ...]]]) -> list[bytes]:
    """Send each command of ``script`` on one connection; the raw bytes of the ``n``
    frames each one is answered with."""
    out: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        for frames, command in script:
            sock.sendall(encode_command(*command))
            reader = hiredis.Reader(notEnoughData=MORE)
            data = b""
            got = 0
            while got < frames:
                chunk = sock.recv(65536)
                assert chunk, f"EOF after {data!r}"
                data += chunk
                reader.feed(chunk)
                while got < frames and reader.gets() is not MORE:
                    got += 1
            out.append(data)
    return out


@pytest.fixture
def engram(engramdb_server: PeerServed) -> Iterator[redis.Redis]:
    client = engramdb_server.client()
    client.flushall()
    client.config_set("notify-keyspace-events", "")
    yield client
    client.config_set("notify-keyspace-events", "")
    client.close()


def _messages(pubsub: redis.client.PubSub, count: int) -> list[tuple[Any, ...]]:
    """The next ``count`` messages (not confirmations), as (type, [pattern,] channel, data)."""
    out: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + WAIT
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {out!r}"
        message = pubsub.get_message(timeout=0.2)
        if message is None or message["type"] not in ("message", "pmessage", "smessage"):
            continue
        if message["type"] == "pmessage":
            out.append(("pmessage", message["pattern"], message["channel"], message["data"]))
        else:
            out.append((message["type"], message["channel"], message["data"]))
    return out


def _no_more(pubsub: redis.client.PubSub) -> None:
    """Nothing else arrives (the server had time to send it: a PING round trip after)."""
    pubsub.ping()
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        assert message["type"] == "pong", message


# publishing ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_publish_reaches_channel_and_pattern_subscribers(
    engramdb_server: PeerServed, engram: redis.Redis, protocol: int
) -> None:
    client = engramdb_server.client(protocol)
    listener = client.pubsub()
    listener.subscribe("news.tech")
    listener.psubscribe("news.*", "*.tech")
    assert engram.publish("news.tech", "hello") == 3  # one channel and two pattern matches
    assert engram.publish("news.art", "paint") == 1
    assert engram.publish("weather", "rain") == 0
    got = _messages(listener, 4)
    assert got[0] == ("message", b"news.tech", b"hello")
    assert sorted(got[1:3]) == [
        ("pmessage", b"*.tech", b"news.tech", b"hello"),
        ("pmessage", b"news.*", b"news.tech", b"hello"),
    ]
    assert got[3] == ("pmessage", b"news.*", b"news.art", b"paint")
    _no_more(listener)
    listener.close()
    client.close()


def test_resp3_subscriber_keeps_running_commands_between_push_messages(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    sock = socket.create_connection(("127.0.0.1", engramdb_server.port), timeout=WAIT)
    with sock:
        sock.sendall(encode_command(b"HELLO", b"3"))
        sock.recv(65536)
        sock.sendall(encode_command(b"SUBSCRIBE", b"c3"))
        confirmation = b">3\r\n$9\r\nsubscribe\r\n$2\r\nc3\r\n:1\r\n"
        assert _bytes_until(sock, len(confirmation), time.monotonic() + WAIT) == confirmation
        assert engram.publish("c3", "m1") == 1
        message = b">3\r\n$7\r\nmessage\r\n$2\r\nc3\r\n$2\r\nm1\r\n"
        assert _bytes_until(sock, len(message), time.monotonic() + WAIT) == message
        # Not in subscribed mode: a RESP3 connection runs anything while subscribed.
        sock.sendall(encode_command(b"SET", b"k", b"v") + encode_command(b"GET", b"k"))
        assert _bytes_until(sock, 12, time.monotonic() + WAIT) == b"+OK\r\n$1\r\nv\r\n"


def test_resp2_subscribed_mode_allows_only_the_subscribe_family(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    with _raw(engramdb_server.port) as conn:
        _send(conn, "SUBSCRIBE", "a", "b")
        assert conn.replies(2) == [[b"subscribe", b"a", 1], [b"subscribe", b"b", 2]]
        _send(conn, "GET", "x")
        (refused,) = conn.replies(1)
        assert str(refused) == (
            "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
            "RESET are allowed in this context"
        )
        _send(conn, "PING")
        _send(conn, "PING", "hi")
        assert conn.replies(2) == [[b"pong", b""], [b"pong", b"hi"]]
        _send(conn, "UNSUBSCRIBE")
        assert conn.replies(2) == [[b"unsubscribe", b"a", 1], [b"unsubscribe", b"b", 0]]
        _send(conn, "UNSUBSCRIBE")
        assert conn.replies(1) == [[b"unsubscribe", None, 0]]
        _send(conn, "GET", "x")  # back in normal mode
        assert conn.replies(1) == [None]


def test_shard_channels_are_their_own_namespace(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    with _raw(engramdb_server.port) as conn:
        _send(conn, "SSUBSCRIBE", "orders")
        assert conn.replies(1) == [[b"ssubscribe", b"orders", 1]]
        assert engram.publish("orders", "not for shard subscribers") == 0
        assert engram.execute_command("SPUBLISH", "orders", "o1") == 1
        assert conn.replies(1) == [[b"smessage", b"orders", b"o1"]]
        assert engram.execute_command("PUBSUB", "SHARDCHANNELS") == [b"orders"]
        assert engram.execute_command("PUBSUB", "SHARDNUMSUB", "orders") == [b"orders", 1]
        assert engram.pubsub_channels() == []


def test_pubsub_introspection_counts_live_subscriptions(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    first, second = _raw(engramdb_server.port), _raw(engramdb_server.port)
    _send(first, "SUBSCRIBE", "jobs:1", "jobs:2", "other")
    first.replies(3)
    _send(second, "SUBSCRIBE", "jobs:1")
    _send(second, "PSUBSCRIBE", "jobs:*", "x?")
    second.replies(3)
    assert sorted(engram.pubsub_channels()) == [b"jobs:1", b"jobs:2", b"other"]
    assert sorted(engram.pubsub_channels("jobs:*")) == [b"jobs:1", b"jobs:2"]
    assert engram.pubsub_numsub("jobs:1", "jobs:2", "none") == [
        (b"jobs:1", 2),
        (b"jobs:2", 1),
        (b"none", 0),
    ]
    assert engram.pubsub_numpat() == 2
    second.close()  # a client that goes away takes its subscriptions with it
    wait_for(lambda: engram.pubsub_numpat() == 0, WAIT, "the patterns to be dropped")
    assert engram.pubsub_numsub("jobs:1") == [(b"jobs:1", 1)]
    first.close()
    wait_for(lambda: engram.pubsub_channels() == [], WAIT, "the channels to be dropped")


def test_reset_leaves_subscribed_mode(engramdb_server: PeerServed, engram: redis.Redis) -> None:
    with _raw(engramdb_server.port) as conn:
        _send(conn, "PSUBSCRIBE", "p*")
        conn.replies(1)
        _send(conn, "RESET")
        _send(conn, "GET", "k")
        assert conn.replies(2) == [b"RESET", None]
    assert engram.pubsub_numpat() == 0


def test_pubsub_replies_are_the_same_bytes_as_redis(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    script: list[tuple[int, tuple[bytes, ...]]] = [  # (frames in the answer, command)
        (2, (b"SUBSCRIBE", b"d1", b"d2")),
        (1, (b"PSUBSCRIBE", b"d*")),
        (1, (b"PING",)),
        (1, (b"PING", b"x")),
        (1, (b"GET", b"k")),
        (2, (b"UNSUBSCRIBE", b"d2", b"nope")),
        (1, (b"PUNSUBSCRIBE",)),
        (1, (b"UNSUBSCRIBE",)),
        (1, (b"UNSUBSCRIBE",)),
        (1, (b"PUNSUBSCRIBE", b"z")),
        (1, (b"HELLO", b"3")),
        (2, (b"SUBSCRIBE", b"r3", b"r3")),
        (1, (b"PING",)),
        (1, (b"UNSUBSCRIBE", b"r3")),
    ]
    ours = _exchange(engramdb_server.port, script)
    theirs = _exchange(redis_server.port, script)
    # HELLO answers with each server's own id and version; everything else is Redis' bytes.
    hello = 10
    assert ours[:hello] + ours[hello + 1 :] == theirs[:hello] + theirs[hello + 1 :]


# keyspace notifications -----------------------------------------------------------------


def _listen(server_port: int, *patterns: str) -> redis.client.PubSub:
    listener = redis.Redis(port=server_port).pubsub()
    listener.psubscribe(*patterns)
    for _ in patterns:
        assert listener.get_message(timeout=WAIT)["type"] == "psubscribe"
    return listener


def test_keyspace_notifications_are_off_until_configured(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    listener = _listen(engramdb_server.port, "__key*__:*")
    engram.set("quiet", "1")
    _no_more(listener)
    with pytest.raises(redis.ResponseError, match="Invalid event class character"):
        engram.config_set("notify-keyspace-events", "KQ")
    assert engram.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}
    engram.config_set("notify-keyspace-events", "KEA")
    assert engram.config_get("notify-keyspace-events") == {"notify-keyspace-events": "AKE"}
    engram.set("loud", "1")
    assert sorted(_messages(listener, 2)) == [
        ("pmessage", b"__key*__:*", b"__keyevent@0__:set", b"loud"),
        ("pmessage", b"__key*__:*", b"__keyspace@0__:loud", b"set"),
    ]
    listener.close()


def test_keyspace_notification_classes_filter_events(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    engram.config_set("notify-keyspace-events", "Kl")  # list events, keyspace channel only
    listener = _listen(engramdb_server.port, "__key*__:*")
    engram.set("s", "1")
    engram.hset("h", "f", "1")
    engram.rpush("q", "job")
    got = _messages(listener, 1)
    assert got == [("pmessage", b"__key*__:*", b"__keyspace@0__:q", b"rpush")]
    _no_more(listener)
    listener.close()


def _events(port: int, run: Any, count: int) -> list[tuple[bytes, bytes]]:
    """(channel, message) of the first ``count`` notifications ``run()`` causes."""
    listener = _listen(port, "__key*__:*")
    run()
    got = [(m[2], m[3]) for m in _messages(listener, count)]
    listener.close()
    return got


def test_keyspace_events_are_named_as_redis_names_them(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    def script(client: redis.Redis) -> None:
        client.set("s", "1")
        client.incrby("s", 2)
        client.append("s", "0")
        client.expire("s", 100)
        client.persist("s")
        client.getdel("s")
        client.lpush("q", "a", "b")
        client.rpop("q")
        client.rpop("q")  # empties the list: "rpop", then "del"
        client.hset("h", mapping={"a": "1", "b": "2"})
        client.hincrby("h", "a", 5)
        client.hdel("h", "a")
        client.mset({"m1": "x", "m2": "y"})
        client.delete("m1", "m2", "h")
        client.setex("t", 100, "v")
        client.pexpire("t", -1)  # in the past: deleted, "del" (not "expire")

    results = []
    for server in (engramdb_server, redis_server):
        client = server.client()
        client.flushall()
        client.config_set("notify-keyspace-events", "KEA")
        try:
            results.append(_events(server.port, lambda c=client: script(c), 42))
        finally:
            client.config_set("notify-keyspace-events", "")
            client.close()
    ours, theirs = results
    assert ours == theirs


def test_writes_by_another_process_are_notified(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve("--durability", "none")
    admin = redis.Redis(port=server.port)
    admin.config_set("notify-keyspace-events", "KEA")
    listener = _listen(server.port, "__keyspace@0__:*")
    # The embedded API, in this process, on the data directory the server serves.
    with engramdb.open(server.data, durability="none") as db:
        db.records("default").put("from-python", {"$string": b"v"})
        db.records("default").put("profile", {"name": "Ada"})
        db.records("default").delete("from-python")
        db.records("elsewhere").put("not-a-redis-key", {"x": 1})
    got = _messages(listener, 3)
    assert got == [
        ("pmessage", b"__keyspace@0__:*", b"__keyspace@0__:from-python", b"set"),
        ("pmessage", b"__keyspace@0__:*", b"__keyspace@0__:profile", b"set"),
        ("pmessage", b"__keyspace@0__:*", b"__keyspace@0__:from-python", b"del"),
    ]
    _no_more(listener)
    listener.close()
    admin.close()


def test_expiry_by_the_sweeper_sends_expired(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--testing")
    admin = redis.Redis(port=server.port)
    admin.config_set("notify-keyspace-events", "Ex")
    listener = _listen(server.port, "__keyevent@0__:*")
    admin.set("session", "s", px=5000)
    admin.set("forever", "f")
    admin.execute_command("ENGRAM.DEBUG", "CLOCK", "ADVANCE", "6")
    with engramdb.connect(server.url) as db:
        db.sweep()  # the background sweeper does the same within a second
    assert _messages(listener, 1) == [
        ("pmessage", b"__keyevent@0__:*", b"__keyevent@0__:expired", b"session")
    ]
    _no_more(listener)
    listener.close()
    admin.close()


# slow subscribers --------------------------------------------------------------------------


def _slow_subscriber(port: int, channel: bytes) -> socket.socket:
    """A subscriber with a tiny receive buffer that never reads after subscribing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(encode_command(b"SUBSCRIBE", channel))
    expected = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(channel), channel)
    assert _bytes_until(sock, len(expected), time.monotonic() + WAIT) == expected
    return sock


def _disconnected(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (draining what it had sent first)."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    return True


def test_subscriber_that_stops_reading_is_disconnected_at_the_hard_limit(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    admin = redis.Redis(port=server.port)
    admin.config_set("client-output-buffer-limit", "pubsub 1mb 0 0")
    slow = _slow_subscriber(server.port, b"firehose")
    message = b"x" * 64 * 1024
    sent = 0
    while admin.publish("firehose", message) == 1:
        sent += 1
        assert sent < 2000, "the subscriber was never cut off"
    assert _disconnected(slow)
    assert admin.info("stats")["pubsub_output_buffer_limit_disconnections"] == 1
    assert admin.pubsub_numsub("firehose") == [(b"firehose", 0)]
    slow.close()
    admin.close()


def test_subscriber_over_the_soft_limit_for_too_long_is_disconnected(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none", "--testing")
    admin = redis.Redis(port=server.port)
    admin.config_set("client-output-buffer-limit", "pubsub 0 256kb 30")
    slow = _slow_subscriber(server.port, b"ticker")
    message = b"y" * 32 * 1024
    # Past the kernel's buffers and the soft limit: still connected, the clock has not moved.
    for _ in range(400):
        assert admin.publish("ticker", message) == 1
    admin.execute_command("ENGRAM.DEBUG", "CLOCK", "ADVANCE", "31")
    assert admin.publish("ticker", message) == 0  # over the soft limit for 31 s: cut off
    assert admin.pubsub_numsub("ticker") == [(b"ticker", 0)]
    assert _disconnected(slow)
    slow.close()
    admin.close()


# several server processes on one data directory ----------------------------------------


def test_publish_reaches_subscribers_of_every_process_of_the_data_directory(
    serve: ServeFactory,
) -> None:
    first = serve("--durability", "none")
    second = serve("--durability", "none", start=False)
    second.data = first.data  # a second process (a worker) serving the same directory
    second.start()
    a, b = redis.Redis(port=first.port), redis.Redis(port=second.port)
    on_a, on_b = a.pubsub(), b.pubsub()
    on_a.subscribe("jobs")
    on_b.psubscribe("jo*")
    on_a.get_message(timeout=WAIT)
    on_b.get_message(timeout=WAIT)
    # Each PUBLISH counts the receivers of the process it ran on, as in Redis Cluster.
    assert b.publish("jobs", "from b") == 1
    assert _messages(on_a, 1) == [("message", b"jobs", b"from b")]
    assert _messages(on_b, 1) == [("pmessage", b"jo*", b"jobs", b"from b")]
    assert a.publish("jobs", "from a") == 1
    assert _messages(on_a, 1) == [("message", b"jobs", b"from a")]
    assert _messages(on_b, 1) == [("pmessage", b"jo*", b"jobs", b"from a")]
    # CONFIG SET on one holds for both; each notifies its own subscribers once per change.
    a.config_set("notify-keyspace-events", "E$")
    wait_for(
        lambda: b.config_get("notify-keyspace-events") == {"notify-keyspace-events": "$E"},
        WAIT,
        "the setting to reach the other process",
    )
    on_a.psubscribe("__keyevent@0__:*")
    on_a.get_message(timeout=WAIT)
    b.set("written-on-b", "1")
    assert _messages(on_a, 1) == [
        ("pmessage", b"__keyevent@0__:*", b"__keyevent@0__:set", b"written-on-b")
    ]
    _no_more(on_a)
    # A process that dies is forgotten; one that starts later joins, settings included.
    second.kill()
    assert a.publish("jobs", "nobody on b") == 1
    second.start()
    b = redis.Redis(port=second.port)
    wait_for(
        lambda: b.config_get("notify-keyspace-events") == {"notify-keyspace-events": "$E"},
        WAIT,
        "the new process to take the settings",
    )
    wait_for(lambda: b.publish("jobs", "again") == 0 and _got(on_a, b"again"), WAIT, "a message")
    for client in (on_a, on_b, a, b):
        client.close()


def _got(listener: redis.client.PubSub, data: bytes) -> bool:
    message = listener.get_message(timeout=0.5)
    return message is not None and message["data"] == data


# fronts of one PostgreSQL database -------------------------------------------------------


def test_fronts_of_one_postgres_database_notify_each_others_writes(
    serve: ServeFactory, postgres_url: str
) -> None:
    """Fronts share the change log, not a directory: a write through one is notified to
    the other's subscribers, PUBLISH stays on its front, and SCAN works on both."""
    a = serve("--data", postgres_url, "--durability", "sync")
    b = serve("--data", postgres_url, "--durability", "sync")
    via_a, via_b = redis.Redis(port=a.port), redis.Redis(port=b.port)
    for client in (via_a, via_b):  # no group to carry CONFIG SET: each front is told
        # Every class ("A"): a class filter would look up the type of a key set by another
        # process, which the DEL right after may have removed by then (README).
        client.config_set("notify-keyspace-events", "KA")
    listener = _listen(b.port, "__keyspace@0__:*", "news")
    via_a.set("written-on-a", "1")
    via_a.delete("written-on-a")
    assert _messages(listener, 2) == [
        ("pmessage", b"__keyspace@0__:*", b"__keyspace@0__:written-on-a", b"set"),
        ("pmessage", b"__keyspace@0__:*", b"__keyspace@0__:written-on-a", b"del"),
    ]
    assert via_a.publish("news", "only a's") == 0
    assert via_b.publish("news", "b's") == 1
    assert _messages(listener, 1) == [("pmessage", b"news", b"news", b"b's")]
    _no_more(listener)
    via_a.mset({f"k{i}": i for i in range(30)})
    cursor, first = via_a.scan(0, count=10)
    assert 0 < cursor < 1 << 63
    rest: list[bytes] = []
    while cursor:  # a's cursor, resumed on b (from its prefix: nothing missed)
        cursor, keys = via_b.scan(cursor, count=10)
        rest.extend(keys)
    assert set(first) | set(rest) == {f"k{i}".encode() for i in range(30)}
    listener.close()
    via_a.close()
    via_b.close()
