"""Attacks on the network server's transport and limits: strangers before AUTH, password
guessing, descriptor exhaustion, idle connections, oversized frames, an exposed /metrics.

Servers are real ``engramdb serve`` subprocesses, bytes go over real sockets. The AUTH
backoff is real time by nature (it is the server making a guesser wait): those tests count
what an attacker gets in a window, they never assert a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import selectors
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import numpy as np
import pytest

import engramdb
import engramdb.aio
from engramdb.clock import FakeClock
from engramdb.protocol.resp import encode_command
from engramdb.server.limits import AuthAttempts, AuthThrottle, address_key
from tests.server_faults.conftest import MORE, ServeFactory

from .conftest import Raw, Served, wait_for

PASSWORD = "correct horse battery staple"


def log_text(server: Served) -> str:
    return server.log.read_text()


def authed(server: Served) -> Raw:
    conn = server.raw()
    if server.password is not None:
        conn.send(encode_command(b"AUTH", server.password))
        assert conn.replies(1) == [b"OK"]
    return conn


# before AUTH -----------------------------------------------------------------------------


@pytest.fixture
def guarded(serve: ServeFactory) -> Served:
    return serve("--durability", "none", password=PASSWORD)


def test_stranger_gets_noauth_for_everything_but_auth_hello_ping_quit(
    guarded: Served,
) -> None:
    refused = [
        encode_command(b"COMMAND"),
        encode_command(b"COMMAND", b"DOCS"),
        encode_command(b"COMMAND", b"COUNT"),
        encode_command(b"INFO"),
        encode_command(b"INFO", b"server"),
        encode_command(b"CLIENT", b"LIST"),
        encode_command(b"CONFIG", b"GET", b"*"),
        encode_command(b"DBSIZE"),
        encode_command(b"ECHO", b"x"),
    ]
    with guarded.raw() as conn:
        conn.send(b"".join(refused))
        for frame, reply in zip(refused, conn.replies(len(refused))):
            assert isinstance(reply, hiredis.ReplyError), (frame, reply)
            assert str(reply).startswith("NOAUTH"), (frame, reply)
        conn.send(b"PING\r\n" + encode_command(b"HELLO", b"3"))
        pong, hello = conn.replies(2)
        assert pong == b"PONG"
        assert str(hello).startswith("NOAUTH HELLO must be called")
        conn.send(b"QUIT\r\n")
        replies, _ = conn.until_closed()
        assert replies == [b"OK"]
    with guarded.raw() as conn:  # HELLO with AUTH authenticates and switches to RESP3
        conn.send(encode_command(b"HELLO", b"3", b"AUTH", b"default", PASSWORD))
        (hello,) = conn.replies(1)
        assert isinstance(hello, dict), hello
        assert hello[b"proto"] == 3
        conn.send(encode_command(b"SET", b"k", b"v") + encode_command(b"GET", b"k"))
        assert conn.replies(2) == [b"OK", b"v"]


# password guessing -----------------------------------------------------------------------


def count_replies(conns: list[Raw], seconds: float) -> Counter[str]:
    """Every reply the connections get within ``seconds``, by kind."""
    kinds: Counter[str] = Counter()
    selector = selectors.DefaultSelector()
    for conn in conns:
        conn.sock.setblocking(False)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                conn = key.data
                with contextlib.suppress(BlockingIOError):
                    data = conn.sock.recv(1 << 16)
                    if not data:
                        selector.unregister(conn.sock)
                        continue
                    conn.reader.feed(data)
                while (reply := conn.reader.gets()) is not MORE:
                    text = str(reply)
                    kinds[text.split(" ", 1)[0] if text[:1].isupper() else text] += 1
                    if "too many failed AUTH" in text:
                        kinds["refused unchecked"] += 1
    finally:
        selector.close()
        for conn in conns:
            conn.sock.setblocking(True)
    return kinds


def info_once_admitted(server: Served) -> dict[str, str]:
    """``INFO`` over a connection that authenticates once the backoff lets it."""
    found: dict[str, str] = {}

    def admitted() -> bool:
        with server.raw() as conn:
            conn.send(encode_command(b"AUTH", PASSWORD))
            if conn.replies(1) != [b"OK"]:
                return False
            conn.send(b"INFO\r\n")
            (text,) = conn.replies(1)
        found.update(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
        return True

    wait_for(admitted, 20, "AUTH to be accepted once the guessing stopped")
    return found


def guesses(count: int) -> bytes:
    return b"".join(encode_command(b"AUTH", b"guess-%d" % i) for i in range(count))


def test_pipelined_password_guesses_are_slowed_down_the_right_one_still_works(
    guarded: Served,
) -> None:
    """Without a backoff one connection gets ~55,000 answers a second."""
    with guarded.raw() as conn:
        conn.send(guesses(500))
        got = count_replies([conn], 2.0)
    print(f"answers to pipelined guesses in 2 s: {dict(got)}")
    assert 1 <= got["WRONGPASS"] <= 12, got

    def admitted() -> bool:  # the right password still works once the backoff has passed
        with guarded.raw() as attempt:
            attempt.send(encode_command(b"AUTH", PASSWORD))
            (reply,) = attempt.replies(1)
            if isinstance(reply, hiredis.ReplyError):
                assert "too many failed AUTH attempts" in str(reply), reply
                return False
            attempt.send(encode_command(b"DBSIZE"))
            return bool(attempt.replies(1) == [0])

    wait_for(admitted, 20, "the right password to be accepted after the guesses")
    with engramdb.connect(guarded.url) as db:  # and the client connects as usual
        db.records("s").put("k", {"v": 1})


def test_password_guesses_from_many_connections_share_one_backoff(guarded: Served) -> None:
    conns = [guarded.raw() for _ in range(40)]
    try:
        for conn in conns:
            conn.send(guesses(20) + encode_command(b"HELLO", b"3", b"AUTH", b"default", b"no"))
        got = count_replies(conns, 2.0)
    finally:
        for conn in conns:
            conn.close()
    print(f"answers to 40 parallel guessers in 2 s: {dict(got)}")
    # Checked guesses are what matters: refusals without a check reveal nothing.
    assert 1 <= got["WRONGPASS"] <= 15, got
    info = info_once_admitted(guarded)
    assert int(info["auth_failures"]) >= got["WRONGPASS"]
    assert int(info["auth_refused_by_backoff"]) >= got["refused unchecked"]


def test_failure_memory_of_many_addresses_stays_bounded() -> None:
    clock = FakeClock(1000.0)
    throttle = AuthThrottle(clock, max_addresses=1000)
    for i in range(50_000):  # one guess from each of 50,000 addresses
        throttle.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", AuthAttempts())
    assert len(throttle) == 1000
    # One IPv6 host owns a /64: its addresses are one guesser, not 2^64.
    attempts = AuthAttempts()
    for i in range(20):
        throttle.failed(address_key(f"2001:db8::{i:x}"), attempts)
    wait = throttle.reserve(address_key("2001:db8::ffff"), AuthAttempts())
    assert wait is None or wait > 1.0
    clock.advance(3600)  # an address that stopped guessing is forgiven
    assert throttle.reserve(address_key("2001:db8::ffff"), AuthAttempts()) == 0


# descriptors, client count, idle connections ---------------------------------------------


class LimitedServe(Served):
    """``engramdb serve`` started under an open-file limit of ``(soft, hard)``."""

    def __init__(self, data: Path, nofile: tuple[int, int], *flags: str) -> None:
        super().__init__(data, *flags)
        self.nofile = nofile

    def command(self) -> list[str]:
        launcher = (
            "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, {self.nofile}); "
            "sys.argv = ['engramdb', *sys.argv[1:]]; "
            "runpy.run_module('engramdb.cli', run_name='__main__')"
        )
        return [sys.executable, "-c", launcher, *super().command()[3:]]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        server.kill()


def open_clients(server: Served, count: int) -> list[Raw]:
    conns = []
    for _ in range(count):
        conn = server.raw()
        conns.append(conn)
        conn.send(b"PING\r\n")
    for conn in conns:
        assert conn.replies(1) == [b"PONG"]
    return conns


def refused_reply(server: Served) -> Any:
    with server.raw() as extra:
        extra.send(b"PING\r\n")
        replies, how = extra.until_closed()
    assert len(replies) == 1, (replies, how)
    return replies[0]


def test_descriptor_limit_is_raised_to_hold_max_clients(
    tmp_path: Path, limited: list[Served]
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = LimitedServe(
        tmp_path / "db", (64, hard), "--durability", "none", "--max-clients", "300"
    )
    limited.append(server)
    server.start()
    conns = open_clients(server, 300)  # 64 descriptors would reset the 60th or so
    try:
        reply = refused_reply(server)
        assert "max number of clients reached" in str(reply)
    finally:
        for conn in conns:
            conn.close()
    assert re.search(r"raised the open-file limit from 64 to \d+", log_text(server))


def test_too_low_hard_descriptor_limit_lowers_max_clients_and_says_so(
    tmp_path: Path, limited: list[Served]
) -> None:
    server = LimitedServe(tmp_path / "db", (300, 300), "--durability", "none")
    limited.append(server)
    server.start()
    log = log_text(server)
    found = re.search(r"serving at most (\d+) clients", log)
    assert found, log
    most = int(found.group(1))
    assert 0 < most < 300
    conns = open_clients(server, most)
    try:
        # Past the lowered bound a client is told why, instead of being reset.
        assert "max number of clients reached" in str(refused_reply(server))
    finally:
        for conn in conns:
            conn.close()
    with authed(server) as conn:
        conn.send(encode_command(b"CONFIG", b"GET", b"maxclients"))
        assert conn.replies(1) == [[b"maxclients", str(most).encode()]]


def test_connection_past_max_clients_is_refused_with_a_log_line(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--max-clients", "2")
    conns = open_clients(server, 2)
    try:
        assert "max number of clients reached" in str(refused_reply(server))
    finally:
        for conn in conns:
            conn.close()
    assert re.search(
        r"WARNING .*refused a connection from 127\.0\.0\.1:\d+: max number of clients reached "
        r"\(2, --max-clients\)",
        log_text(server),
    ), log_text(server)


def test_idle_connections_are_closed_after_idle_timeout_and_only_with_it(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none", "--testing", "--idle-timeout", "30")
    idle = server.raw()
    try:
        idle.send(b"PING\r\n")
        assert idle.replies(1) == [b"PONG"]
        with server.raw() as admin:  # move the server's clock past the timeout
            admin.send(encode_command(b"ENGRAM.DEBUG", b"CLOCK", b"ADVANCE", b"31"))
            admin.replies(1)
        replies, how = idle.until_closed()
        assert (replies, how) == ([], "eof")
    finally:
        idle.close()
    with server.raw() as fresh:  # new clients are served as ever
        fresh.send(b"PING\r\n")
        assert fresh.replies(1) == [b"PONG"]
    assert re.search(
        r"closed 127\.0\.0\.1:\d+ after 3\d s idle \(--idle-timeout 30\)", log_text(server)
    )
    assert int(server.info()["idle_disconnects"]) >= 1

    keeper = serve("--durability", "none", "--testing", name="no-timeout")  # the default: 0
    with keeper.raw() as idle:
        idle.send(b"PING\r\n")
        assert idle.replies(1) == [b"PONG"]
        with keeper.raw() as admin:
            admin.send(encode_command(b"ENGRAM.DEBUG", b"CLOCK", b"ADVANCE", b"86400"))
            admin.replies(1)
        threading.Event().wait(1.5)  # longer than a sweep would take
        idle.send(b"PING\r\n")
        assert idle.replies(1) == [b"PONG"]


# oversized frames ------------------------------------------------------------------------


def test_oversized_vector_upsert_raises_request_too_large_and_writes_nothing(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    with engramdb.connect(server.url) as db:
        collection = db.vectors.create_collection("docs", 384)
        ids = [f"d{i}" for i in range(10_000)]
        vectors = np.random.default_rng(0).random((10_000, 384), dtype=np.float32)
        with pytest.raises(engramdb.RequestTooLarge) as caught:
            collection.upsert(ids, vectors)
        message = str(caught.value)
        assert "max frame of 2097152 bytes (--max-frame)" in message
        assert "split the batch" in message
        assert isinstance(caught.value, engramdb.EngramError)
        assert collection.count() == 0  # nothing was applied
        collection.upsert(ids[:1000], vectors[:1000])  # a batch under the limit goes through
        assert collection.count() == 1000
    assert re.search(
        r"WARNING .*refused a request from 127\.0\.0\.1:\d+: .*request too large: an argument "
        r"of \d+ bytes exceeds the server's max frame of 2097152 bytes",
        log_text(server),
    )


def test_oversized_record_raises_request_too_large_sync_and_async(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    big = {"blob": b"x" * (3 << 20)}
    with engramdb.connect(server.url) as db:
        with pytest.raises(engramdb.RequestTooLarge, match="--max-frame"):
            db.records("s").put("k", big)
        assert db.records("s").get("k") is None

    async def remote() -> None:
        client = await engramdb.aio.connect(server.url)
        try:
            with pytest.raises(engramdb.RequestTooLarge, match="--max-frame"):
                await client.records("s").put("k", big)
            assert await client.records("s").get("k") is None
        finally:
            await client.close()

    asyncio.run(remote())


def test_raw_oversized_bulk_is_answered_with_the_limit_then_closed_cleanly(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "none")
    with server.raw() as conn:
        conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000000\r\n" + b"x" * 200_000)
        with contextlib.suppress(OSError):
            conn.send(b"x" * 500_000)  # still sending when the server answers
        replies, how = conn.until_closed()
    assert len(replies) == 1, replies
    assert str(replies[0]).startswith(
        "ERR Protocol error: request too large: an argument of 3000000 bytes exceeds the "
        "server's max frame of 2097152 bytes (--max-frame)"
    ), replies
    assert how == "eof"  # a half-close after the reply, not a reset


def test_max_frame_flag_admits_bigger_requests(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--max-frame", "8M")
    with engramdb.connect(server.url) as db:
        # The frame is admitted; the record limit (1 MiB) is what refuses it now.
        with pytest.raises(engramdb.RecordTooBig):
            db.records("s").put("k", {"blob": b"x" * (3 << 20)})
        collection = db.vectors.create_collection("docs", 384)
        vectors = np.random.default_rng(0).random((4000, 384), dtype=np.float32)
        collection.upsert([f"d{i}" for i in range(4000)], vectors)
        assert collection.count() == 4000


# what an authenticated client can grow ---------------------------------------------------


def test_client_names_cannot_grow_server_memory(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw() as conn:
        conn.send(encode_command(b"CLIENT", b"SETNAME", b"n" * 100_000))
        (reply,) = conn.replies(1)
        assert isinstance(reply, hiredis.ReplyError)
        assert "limited to 512 bytes" in str(reply)
        conn.send(encode_command(b"HELLO", b"2", b"SETNAME", b"n" * 100_000))
        (reply,) = conn.replies(1)
        assert isinstance(reply, hiredis.ReplyError)
        conn.send(encode_command(b"CLIENT", b"SETNAME", b"worker-1") + b"CLIENT GETNAME\r\n")
        assert conn.replies(2) == [b"OK", b"worker-1"]


# /metrics --------------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    raw = bytes.fromhex(address)
                    if len(raw) == 4:
                        found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:
                        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                        found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_listen_on_loopback_when_the_server_listens_everywhere(
    serve: ServeFactory,
) -> None:
    port = free_port()
    server = serve(
        "--durability", "none", "--metrics-port", str(port), host="0.0.0.0", password=PASSWORD
    )
    assert listening_addresses(server.port) == {"0.0.0.0"}
    assert listening_addresses(port) == {"127.0.0.1"}


def test_metrics_host_flag_exposes_metrics_with_a_warning(serve: ServeFactory) -> None:
    port = free_port()
    server = serve("--durability", "none", "--metrics-port", str(port), "--metrics-host", "0.0.0.0")
    assert listening_addresses(port) == {"0.0.0.0"}
    assert re.search(
        r"WARNING .*/metrics listens at 0\.0\.0\.0:\d+ without authentication", log_text(server)
    )
