"""Bad input and strangers: refused early, answered clearly, and memory stays bounded.

Every check runs against a real ``engramdb serve`` over real sockets. Memory is read from
``/proc/PID/status`` (``VmRSS`` now, ``VmHWM`` the peak since start).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import hiredis
import pytest

import engramdb
import engramdb.aio
from engramdb.protocol.resp import encode_command

from .conftest import Raw, Served, ServeFactory, is_protocol_error, wait_for

MB = 1024  # kB per MB, for /proc figures
PASSWORD = "correct horse battery staple"

ABUSE = {
    "2^40 bulk": b"*3\r\n$3\r\nSET\r\n$1099511627776\r\n",
    "million-argument array": b"*1000000\r\n$3\r\nSET\r\n",
    "over-long inline line": b"SET k " + b"v" * (64 << 10),
}


def refused(server: Served, frame: bytes, timeout: float = 5.0) -> list[object]:
    """Send ``frame`` and nothing more; the server must answer and close on its own."""
    with Raw(("127.0.0.1", server.port), timeout) as conn:
        conn.send(frame)
        replies, _ = conn.until_closed()  # fails if the server waits for the payload
    assert replies, f"closed without a reply to {frame[:40]!r}"
    assert is_protocol_error(replies[-1]), replies
    return replies


@pytest.mark.parametrize("name", list(ABUSE))
def test_oversized_requests_are_refused_without_waiting_for_data(
    serve: ServeFactory, name: str
) -> None:
    server = serve("--durability", "none")
    refused(server, ABUSE[name])
    with server.raw() as conn:  # the server itself is fine
        conn.send(b"PING\r\n")
        assert conn.replies(1) == [b"PONG"]


def test_memory_stays_bounded_under_repeated_abuse(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    for frame in ABUSE.values():  # warm up every code path before the baseline
        refused(server, frame)
    rss_before = server.memory_kb("VmRSS")
    peak_before = server.memory_kb("VmHWM")

    # 100 connections at once, each holding an abusive frame, then all read.
    frames = list(ABUSE.values())
    conns = [server.raw() for _ in range(100)]
    try:
        for i, conn in enumerate(conns):
            conn.send(frames[i % len(frames)])
        for conn in conns:
            replies, _ = conn.until_closed()
            assert is_protocol_error(replies[-1]), replies
    finally:
        for conn in conns:
            conn.close()
    # ...and 100 more, one after the other.
    for i in range(100):
        refused(server, frames[i % len(frames)])

    assert server.alive()
    grown = server.memory_kb("VmRSS") - rss_before
    peak_grown = server.memory_kb("VmHWM") - peak_before
    assert grown < 50 * MB, f"RSS grew by {grown} kB"
    assert peak_grown < 50 * MB, f"peak RSS grew by {peak_grown} kB"
    assert int(server.info()["protocol_errors"]) >= 200 + len(ABUSE)


# binding and authentication --------------------------------------------------------------


def test_non_loopback_bind_without_password_is_refused(serve: ServeFactory) -> None:
    server = serve(host="0.0.0.0", start=False)
    result = subprocess.run(
        server.command(), capture_output=True, text=True, timeout=60, env=_env_without_password()
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without a password" in result.stderr
    assert not server.data.exists() or not any(server.data.iterdir())


def _env_without_password() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ENGRAMDB_PASSWORD"}


def test_non_loopback_bind_with_password_starts(serve: ServeFactory) -> None:
    server = serve("--durability", "none", host="0.0.0.0", password=PASSWORD)
    with engramdb.connect(server.url) as db:
        db.records("s").put("k", {"v": 1})
        assert db.records("s").get("k") is not None
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


@pytest.fixture
def guarded(serve: ServeFactory) -> Served:
    return serve("--durability", "none", password=PASSWORD)


def test_wrong_password_and_commands_before_auth(guarded: Served) -> None:
    with guarded.raw() as conn:
        conn.send(b"GET k\r\n" + encode_command(b"SET", b"k", b"v") + b"DBSIZE\r\n")
        for reply in conn.replies(3):
            assert isinstance(reply, hiredis.ReplyError)
            assert str(reply).startswith("NOAUTH"), reply
        conn.send(encode_command(b"AUTH", b"guess") + encode_command(b"AUTH", b"default", b"x"))
        for reply in conn.replies(2):
            assert isinstance(reply, hiredis.ReplyError)
            assert str(reply).startswith("WRONGPASS"), reply
        conn.send(b"PING\r\n")  # still connected, still unauthenticated but allowed to PING
        assert conn.replies(1) == [b"PONG"]
        conn.send(encode_command(b"GET", b"k"))
        assert str(conn.replies(1)[0]).startswith("NOAUTH")
        conn.send(encode_command(b"AUTH", PASSWORD) + encode_command(b"SET", b"k", b"v"))
        assert conn.replies(2) == [b"OK", b"OK"]
        conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10240\r\n" + b"x" * 10240 + b"\r\n")
        assert conn.replies(1) == [b"OK"], "after AUTH the full limits apply"


@pytest.mark.parametrize(
    "frame",
    [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10240\r\n",  # a 10 KB bulk, payload never sent
        b"*2\r\n$4\r\nAUTH\r\n$4096\r\n",
        b"*20\r\n$4\r\nAUTH\r\n",  # more arguments than any pre-auth command needs
        b"AUTH " + b"x" * 2000,  # an inline line past the pre-auth bound
    ],
    ids=["10KB-bulk", "4KB-password", "20-arguments", "2KB-inline"],
)
def test_big_frames_before_auth_are_refused_at_once(guarded: Served, frame: bytes) -> None:
    refused(guarded, frame)


def test_pre_auth_frames_never_grow_memory(guarded: Served) -> None:
    frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10240\r\n"
    refused(guarded, frame)
    before = guarded.memory_kb("VmRSS")
    for _ in range(100):
        refused(guarded, frame)
    assert guarded.memory_kb("VmRSS") - before < 50 * MB


def test_pipelined_auth_then_big_frame(guarded: Served) -> None:
    with guarded.raw() as conn:
        conn.send(encode_command(b"AUTH", PASSWORD) + encode_command(b"SET", b"k", b"x" * 10240))
        assert conn.replies(2) == [b"OK", b"OK"]


def test_client_wrong_password_raises_auth_error(guarded: Served) -> None:
    bad = f"engramdb://:wrong@127.0.0.1:{guarded.port}"
    with pytest.raises(engramdb.AuthError, match="WRONGPASS"):
        engramdb.connect(bad)

    async def bad_async() -> None:
        await engramdb.aio.connect(bad)

    with pytest.raises(engramdb.AuthError, match="WRONGPASS"):
        asyncio.run(bad_async())
    anonymous = engramdb.connect(f"engramdb://127.0.0.1:{guarded.port}")
    try:
        with pytest.raises(engramdb.AuthError, match="Authentication required"):
            anonymous.records("s").get("k")
    finally:
        anonymous.close()


def test_client_right_password_works_sync_and_async(guarded: Served) -> None:
    with engramdb.connect(guarded.url) as db:
        generation = db.records("s").put("k", {"v": 1})
        record = db.records("s").get("k")
        assert record is not None
        assert (record.generation, record["v"]) == (generation, 1)

    async def use_async() -> int:
        client = await engramdb.aio.connect(guarded.url)
        try:
            await client.records("s").put("k", {"v": 2})
            got = await client.records("s").get("k")
            assert got is not None
            return int(got["v"])
        finally:
            await client.close()

    assert asyncio.run(use_async()) == 2


# connection limits -----------------------------------------------------------------------


def test_connections_past_max_clients_are_refused(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--max-clients", "3")
    conns = [server.raw() for _ in range(3)]
    try:
        for conn in conns:
            conn.send(b"PING\r\n")
            assert conn.replies(1) == [b"PONG"]
        with server.raw() as fourth:
            fourth.send(b"PING\r\n")  # may already be closed; the reply came first
            replies, _ = fourth.until_closed()
        assert len(replies) == 1
        assert isinstance(replies[0], hiredis.ReplyError)
        assert "max number of clients" in str(replies[0])
        for conn in conns:  # the three admitted clients are untouched
            conn.send(b"PING\r\n")
            assert conn.replies(1) == [b"PONG"]
        conns.pop().close()

        def admitted() -> bool:
            with server.raw() as again:
                again.send(b"PING\r\n")
                return bool(again.replies(1) == [b"PONG"])

        wait_for(admitted, 10, "a slot to free up after a client left")
    finally:
        for conn in conns:
            conn.close()
    assert int(server.info()["rejected_connections"]) >= 1


# replies owed when a connection ends -----------------------------------------------------


def bytes_in(server: Served) -> int:
    return int(server.info()["total_net_input_bytes"])


def test_protocol_error_with_writes_in_flight_still_answers(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    batch = b"".join(encode_command(b"SET", b"k%d" % i, b"v" * 100) for i in range(200))
    failures: list[str] = []
    for attempt in range(5):
        with server.raw() as conn:
            received = bytes_in(server) + len(batch)
            conn.send(batch)
            # The garbage must come in a later read than the SETs, while they commit.

            def all_read(received: int = received) -> bool:
                return bytes_in(server) >= received

            wait_for(all_read, 10, "the server to read the SETs")
            conn.send(b"*x\r\n")
            replies, how = conn.until_closed()
        if len(replies) != 201 or not is_protocol_error(replies[-1]):
            failures.append(f"attempt {attempt}: {len(replies)} of 201 replies, then {how}")
    assert failures == []


def test_quit_is_answered(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw() as conn:
        conn.send(b"QUIT\r\n")
        replies, _ = conn.until_closed()
    assert replies == [b"OK"]


def test_reply_stream_survives_interleaved_errors(serve: ServeFactory) -> None:
    """Unknown commands, arity errors and failed native calls keep the connection open."""
    server = serve("--durability", "none")
    with server.raw() as conn:
        conn.send(
            b"NOSUCH a b\r\n"
            + encode_command(b"GET")
            + encode_command(b"SET", b"k", b"v")
            + encode_command(b"GET", b"k")
            + b"\r\n\r\n"  # empty inline lines are skipped
            + encode_command(b"ENGRAM", b"no.such", b"\x90")
        )
        unknown, arity, ok, value, native = conn.replies(5)
    assert str(unknown).startswith("ERR unknown command")
    assert str(arity).startswith("ERR wrong number of arguments")
    assert (ok, value) == (b"OK", b"v")
    assert isinstance(native, hiredis.ReplyError)
