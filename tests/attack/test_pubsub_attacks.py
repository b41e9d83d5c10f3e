"""Attacks on pub/sub, keyspace notifications and the tooling commands (MONITOR, SLOWLOG,
CONFIG, CLIENT, SCAN cursors): subscribers that never read, subscription floods, forged
cursors, password leaks through MONITOR and SLOWLOG, strangers before AUTH.

Servers are real ``engramdb serve`` subprocesses, bytes go over real sockets; memory is read
from the server's /proc.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time

import pytest
import redis

from engramdb.protocol.resp import encode_command
from engramdb.server.pubsub import MAX_SUBSCRIPTIONS
from engramdb.server.scan_cursor import FILE_NAME, SLOTS

from .conftest import Raw, Served, ServeFactory

PASSWORD = "correct horse battery staple"
WAIT = 10.0


def _deaf_subscriber(server: Served, *command: bytes) -> socket.socket:
    """Subscribes, then never reads again (and keeps a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(encode_command(*command))
    sock.settimeout(WAIT)
    assert sock.recv(4096)  # the confirmation
    return sock


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(WAIT)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    return True


def test_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    publisher = redis.Redis(port=server.port)
    deaf = _deaf_subscriber(server, b"SUBSCRIBE", b"firehose")
    before = server.memory_kb("VmRSS")
    message = b"m" * (256 << 10)
    published = 0
    # 128 MiB offered to a client that reads nothing; the default limit is 32 MiB.
    while published < 512 and publisher.publish("firehose", message):
        published += 1
    assert published < 512, "the subscriber was never cut off"
    assert _closed(deaf)
    peak = server.memory_kb("VmHWM")
    assert peak - before < 80 << 10, (before, peak)  # KiB: the limit plus working space
    assert publisher.info("stats")["pubsub_output_buffer_limit_disconnections"] == 1
    assert publisher.ping()
    deaf.close()
    publisher.close()


def test_keyspace_notification_flood_cuts_off_a_deaf_subscriber_not_the_server(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    client.config_set("notify-keyspace-events", "KEA")
    client.config_set("client-output-buffer-limit", "pubsub 2mb 0 0")
    deaf = _deaf_subscriber(server, b"PSUBSCRIBE", b"*")
    value = "v" * 1000
    for batch in range(40):
        client.mset({f"key:{batch}:{i}:" + "k" * 200: value for i in range(500)})
    assert _closed(deaf)
    listener = client.pubsub()
    listener.subscribe("__keyevent@0__:set")
    listener.get_message(timeout=WAIT)
    client.set("after", "1")  # notifications go on for everyone else
    deadline = time.monotonic() + WAIT
    while (message := listener.get_message(timeout=0.5)) is None or message["data"] != b"after":
        assert time.monotonic() < deadline
    listener.close()
    deaf.close()
    client.close()


def test_monitor_that_never_reads_is_cut_off(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    deaf = _deaf_subscriber(server, b"MONITOR")
    big = b"x" * (1 << 20)
    # Each SET shows as an 8 KiB line: 64 MiB (the output limit) takes ~8,000 of them.
    for _ in range(100):
        client.execute_command("MSET", *[b"k%d" % i if j % 2 == 0 else big[: 8 << 10]
                                         for i in range(200) for j in range(2)])  # fmt: skip
        if client.info("stats")["client_output_buffer_limit_disconnections"]:
            break
    assert _closed(deaf)
    deaf.close()
    client.close()


def test_subscription_flood_is_refused_past_the_per_client_limit(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw(timeout=60) as conn:
        names = [b"c%d" % i for i in range(MAX_SUBSCRIPTIONS + 1)]
        conn.send(encode_command(b"SUBSCRIBE", *names))
        (refused,) = conn.replies(1)
        assert "too many subscriptions" in str(refused)
        conn.send(encode_command(b"PUBSUB", b"NUMSUB", b"c0"))
        assert conn.replies(1) == [[b"c0", 0]]  # nothing of the refused request was kept


def test_forged_scan_cursors_never_fail_or_lose_keys(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    keys = {f"user:{i:04d}".encode() for i in range(300)}
    client.mset(dict.fromkeys(keys, "1"))
    rng = random.Random(7)
    for forged in [1, (1 << 63) - 1, (1 << 64) - 1, *(rng.getrandbits(64) for _ in range(30))]:
        cursor, found = forged, []
        for _ in range(1000):
            cursor, page = client.scan(cursor, count=50)
            found.extend(page)
            if cursor == 0:
                break
        assert cursor == 0, "a forged cursor must still end"
        assert set(found) <= keys
    for bad in ("-1", str(1 << 64), "1" * 40, "abc", "1.5"):
        with pytest.raises(redis.ResponseError, match="invalid cursor"):
            client.execute_command("SCAN", bad)
    # A cursor that names a position the server never handed out resumes from its prefix:
    # every key after that position is still returned.
    prefix = int.from_bytes(b"\x03user:0", "big") >> 8 << 15 | 12345
    rest = []
    cursor = prefix
    while True:
        cursor, page = client.scan(cursor, count=50)
        rest.extend(page)
        if cursor == 0:
            break
    assert keys <= set(rest)
    client.close()


def test_scan_cursor_flood_keeps_the_cursor_table_bounded(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    total = SLOTS + 4000
    client.mset({f"k{i:06d}": "1" for i in range(total)})
    table = server.data / FILE_NAME
    size = table.stat().st_size
    before = server.memory_kb("VmRSS")
    # A new cursor for every key: more than the table has slots.
    with server.raw() as conn:
        cursor = b"0"
        for _ in range(total):
            conn.send(encode_command(b"SCAN", cursor, b"COUNT", b"1"))
            ((cursor, _page),) = conn.replies(1)
    assert cursor == b"0"
    assert table.stat().st_size == size == SLOTS * 1040
    assert server.memory_kb("VmRSS") - before < 40 << 10  # KiB
    client.close()


def test_monitor_and_slowlog_never_show_passwords(serve: ServeFactory) -> None:
    server = serve("--durability", "none", password=PASSWORD)
    admin = redis.Redis(port=server.port, password=PASSWORD, protocol=2)
    admin.config_set("slowlog-log-slower-than", "0")
    with server.raw() as monitor:
        monitor.send(encode_command(b"AUTH", PASSWORD) + encode_command(b"MONITOR"))
        assert monitor.replies(2) == [b"OK", b"OK"]
        with server.raw() as other:
            other.send(encode_command(b"AUTH", b"default", PASSWORD))
            other.send(encode_command(b"HELLO", b"2", b"AUTH", b"default", PASSWORD))
            other.send(encode_command(b"PING"))
            other.replies(3)
        lines = monitor.replies(3)
    text = b"\n".join(lines)
    assert PASSWORD.encode() not in text
    assert b'"AUTH" "(redacted)" "(redacted)"' in text
    assert b'"HELLO" "2" "AUTH" "(redacted)" "(redacted)"' in text
    logged = b" ".join(e["command"] for e in admin.slowlog_get(-1))
    assert b"AUTH" in logged
    assert PASSWORD.encode() not in logged
    admin.close()


def test_slowlog_stays_bounded_whatever_the_arguments(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    client.config_set("slowlog-log-slower-than", "0")
    client.execute_command("ECHO", b"z" * (1 << 20))
    client.execute_command("MGET", *[b"k" * 1000 for _ in range(10_000)])
    entries = client.slowlog_get(5)
    assert all(len(e["command"]) < 32 * 160 for e in entries)
    with pytest.raises(redis.ResponseError, match="between"):
        client.config_set("slowlog-max-len", str(10**9))
    client.close()


def test_strangers_cannot_subscribe_publish_or_use_the_tools(serve: ServeFactory) -> None:
    server = serve("--durability", "none", password=PASSWORD)
    with server.raw() as stranger:
        for command in (
            (b"SUBSCRIBE", b"c"),
            (b"PSUBSCRIBE", b"*"),
            (b"PUBLISH", b"c", b"m"),
            (b"MONITOR",),
            (b"CLIENT", b"LIST"),
            (b"CLIENT", b"KILL", b"TYPE", b"normal"),
            (b"CONFIG", b"GET", b"*"),
            (b"SLOWLOG", b"GET"),
            (b"SCAN", b"0"),
            (b"INFO",),
        ):
            stranger.send(encode_command(*command))
            (reply,) = stranger.replies(1)
            assert str(reply).startswith("NOAUTH"), command


def test_config_reveals_no_path_and_no_password(serve: ServeFactory) -> None:
    server = serve("--durability", "none", password=PASSWORD)
    client = redis.Redis(port=server.port, password=PASSWORD)
    everything = client.config_get("*")
    for name, value in everything.items():
        assert str(server.data) not in value, name
        assert PASSWORD not in value, name
    assert client.config_get("requirepass") == {}
    assert client.config_get("dir") == {}
    with pytest.raises(redis.ResponseError):
        client.config_set("requirepass", "")
    with pytest.raises(redis.ResponseError):
        client.config_set("dir", "/tmp")
    client.close()


def test_client_output_limits_cannot_be_lifted_for_normal_clients(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    client = redis.Redis(port=server.port)
    with pytest.raises(redis.ResponseError, match="normal class is fixed"):
        client.config_set("client-output-buffer-limit", "normal 0 0 0")
    with Raw(("127.0.0.1", server.port), WAIT) as conn:
        conn.send(encode_command(b"CONFIG", b"SET", b"client-output-buffer-limit", b"pubsub x 0 0"))
        (reply,) = conn.replies(1)
        assert "buffer limit" in str(reply)
    client.close()


def _bus_socket(server: Served) -> str:
    return str(server.data / "pubsub" / f"{server.pid}.sock")


def test_bus_socket_is_private_and_drops_malformed_peers(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    directory = server.data / "pubsub"
    assert directory.stat().st_mode & 0o777 == 0o700
    client = redis.Redis(port=server.port)
    listener = client.pubsub()
    listener.subscribe("c")
    listener.get_message(timeout=WAIT)
    for garbage in (
        b"\x02" + (2**31).to_bytes(4, "little") + b"\0\0\0\0",  # a 2 GiB frame announced
        b"\x09\0\0\0\0\0\0\0\0",  # an unknown kind
    ):
        with socket.socket(socket.AF_UNIX) as peer:
            peer.connect(_bus_socket(server))
            peer.sendall(garbage)
            peer.settimeout(WAIT)
            with contextlib.suppress(ConnectionResetError):
                while peer.recv(4096):
                    pass  # the server's HELLO, then it hangs up
    with socket.socket(socket.AF_UNIX) as peer:  # a message before HELLO: ignored
        peer.connect(_bus_socket(server))
        peer.sendall(b"\x02\x01\0\0\0\x01\0\0\0cm")
    assert listener.get_message(timeout=0.5) is None  # nothing was delivered
    assert client.publish("c", "still works") == 1
    assert listener.get_message(timeout=WAIT)["data"] == b"still works"
    listener.close()
    client.close()
