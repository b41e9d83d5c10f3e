"""Overload: shed at once past the in-flight bound, recover after; cut off slow readers.

The server runs with a tiny ``--max-inflight`` and ``--durability sync`` (so writes stay in
flight for an fsync each) and is hit from many connections at once. A shed request must be
answered ``-BUSY`` (``Overloaded`` in the client), must not have been applied, and must not
cost the client its connection.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter

import hiredis

import engramdb
from engramdb.protocol.resp import encode_command

from .conftest import Raw, Served, ServeFactory, wait_for

MB = 1024  # kB per MB, for /proc figures
OUTPUT_CAP_MB = 64  # ServerConfig.max_output_buffer; not settable from the command line
BIG = b"x" * 900_000  # a string value near the 1 MiB record limit


def inflight(server: Served) -> int:
    return int(server.info()["inflight"])


def test_pipelined_burst_is_shed_with_busy_and_recovers(serve: ServeFactory) -> None:
    server = serve("--durability", "sync", "--max-inflight", "4")
    conns = [server.raw() for _ in range(16)]
    keys = [[b"c%d-%d" % (c, i) for i in range(50)] for c in range(len(conns))]
    try:
        for conn, mine in zip(conns, keys):
            conn.send(b"".join(encode_command(b"SET", key, key) for key in mine))
        outcome: dict[bytes, str] = {}
        for conn, mine in zip(conns, keys):
            replies = conn.replies(len(mine))  # exactly one reply each, none dropped
            for key, reply in zip(mine, replies):
                if reply == b"OK":
                    outcome[key] = "ok"
                else:
                    assert isinstance(reply, hiredis.ReplyError), reply
                    assert str(reply).startswith("BUSY "), reply
                    outcome[key] = "busy"
        counts = Counter(outcome.values())
        assert counts["busy"] > 0, "nothing was shed"
        assert counts["ok"] > 0, "nothing got through"

        for conn in conns:  # every connection survived the burst
            conn.send(b"PING\r\n")
            assert conn.replies(1) == [b"PONG"]
        wait_for(lambda: inflight(server) == 0, 10, "in-flight work to drain")
        info = server.info()
        assert int(info["shed_busy_replies"]) >= counts["busy"]

        # A shed write never ran; an acknowledged one is there.
        reader = conns[0]
        every = [key for mine in keys for key in mine]
        reader.send(b"".join(encode_command(b"GET", key) for key in every))
        for key, value in zip(every, reader.replies(len(every))):
            assert value == (key if outcome[key] == "ok" else None), (key, outcome[key])

        # Recovery: at a pace the bound allows, every request succeeds.
        for conn in conns:
            for i in range(5):
                conn.send(encode_command(b"SET", b"after-%d" % i, b"v"))
                assert conn.replies(1) == [b"OK"]
    finally:
        for conn in conns:
            conn.close()


def test_client_gets_overloaded_then_recovers(serve: ServeFactory) -> None:
    server = serve("--durability", "sync", "--max-inflight", "4")
    outcomes: list[tuple[str, str]] = []
    unexpected: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    with engramdb.connect(server.url, pool_size=32) as db:
        records = db.records("burst")

        def writer(index: int) -> None:
            start.wait(30)
            for i in range(15):
                key = f"w{index}-{i}"
                try:
                    records.put(key, {"i": i})
                    result = "ok"
                except engramdb.Overloaded:
                    result = "busy"
                except Exception as e:  # any other failure fails the test below
                    with lock:
                        unexpected.append(f"{key}: {type(e).__name__}: {e}")
                    return
                with lock:
                    outcomes.append((key, result))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads), "a writer hung"
        assert unexpected == [], "only Overloaded may fail a write under load"
        counts = Counter(result for _, result in outcomes)
        assert counts["busy"] > 0, "the burst never reached the in-flight bound"
        assert counts["ok"] > 0

        for key, result in outcomes:  # Overloaded means "not applied": safe to retry
            record = records.get(key)
            assert (record is not None) == (result == "ok"), (key, result)

        wait_for(lambda: inflight(server) == 0, 10, "in-flight work to drain")
        for i in range(20):  # recovered: sequential writes all succeed
            records.put(f"after-{i}", {"i": i})
        assert records.count() == counts["ok"] + 20


def _send_or_closed(conn: Raw, data: bytes) -> bool:
    """Send; False once the server has cut the connection."""
    try:
        conn.send(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def test_slow_reader_is_disconnected_others_are_served(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw() as setup:
        setup.send(encode_command(b"SET", b"big", BIG))
        assert setup.replies(1) == [b"OK"]
        setup.send(encode_command(b"GET", b"big"))
        assert setup.replies(1) == [BIG]
    peak_before = server.memory_kb("VmHWM")

    with server.raw() as slow, server.raw() as other:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        def cut_off() -> bool:
            # Eight GETs a time (~7 MB of replies) that this client never reads.
            if not _send_or_closed(slow, encode_command(b"GET", b"big") * 8):
                return True
            other.send(encode_command(b"GET", b"big") + b"PING\r\n")
            assert other.replies(2) == [BIG, b"PONG"], "a bystander got a wrong answer"
            return int(server.info()["output_buffer_disconnects"]) >= 1

        wait_for(cut_off, 60, "the slow reader to be disconnected")
        # The stat is counted before the abort: a closed connection was the output cap's doing.
        assert int(server.info()["output_buffer_disconnects"]) == 1
        other.send(encode_command(b"GET", b"big"))
        assert other.replies(1) == [BIG]

    assert server.alive()
    peak_grown = server.memory_kb("VmHWM") - peak_before
    # The cap, plus the batch in hand when it is crossed, plus a generous margin.
    assert peak_grown < (OUTPUT_CAP_MB + 100) * MB, f"peak RSS grew by {peak_grown} kB"


def test_output_cap_holds_within_one_pipelined_read(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw() as setup:
        setup.send(encode_command(b"SET", b"big", BIG))
        assert setup.replies(1) == [b"OK"]
        setup.send(encode_command(b"GET", b"big"))
        assert setup.replies(1) == [BIG]
    peak_before = server.memory_kb("VmHWM")
    with server.raw() as slow:
        slow.send(b"GET big\r\n" * 250)  # 2.2 KB asking for 225 MB; never read
        wait_for(
            lambda: int(server.info()["output_buffer_disconnects"]) >= 1,
            30,
            "the slow reader to be disconnected",
        )
    assert server.alive()
    peak_grown = server.memory_kb("VmHWM") - peak_before
    assert peak_grown < (OUTPUT_CAP_MB + 100) * MB, f"peak RSS grew by {peak_grown} kB"
