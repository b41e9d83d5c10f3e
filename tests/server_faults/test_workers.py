"""``engramdb serve --workers 2``: two processes over one port and one data directory.

A connection lands on one worker for its life; its client id says which (worker ``i`` of
``N`` issues ids ``i+1, i+1+N, ...``), so each test holds a connection on each worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hiredis import ReplyError

from engramdb.protocol.resp import encode_command

from .conftest import START_WAIT, Raw, Served, ServeFactory, wait_for

WAIT = 30.0  # seconds; a bound on hangs, never an expectation of speed


def command(conn: Raw, *args: bytes | str) -> object:
    conn.send(encode_command(*(a.encode() if isinstance(a, str) else a for a in args)))
    return conn.replies(1)[0]


@contextlib.contextmanager
def on_each_worker(server: Served, workers: int = 2) -> Iterator[list[Raw]]:
    """One connection served by each worker (closed on the way out)."""
    found: dict[int, Raw] = {}
    spare: list[Raw] = []
    for _ in range(200):
        conn = server.raw()
        worker = (int(command(conn, "CLIENT", "ID")) - 1) % workers  # type: ignore[call-overload]
        if worker in found:
            spare.append(conn)
        else:
            found[worker] = conn
        if len(found) == workers:
            break
    for conn in spare:
        conn.close()
    try:
        assert len(found) == workers, "the kernel gave every connection to one worker"
        yield [found[i] for i in range(workers)]
    finally:
        for conn in found.values():
            conn.close()


def children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_write_on_one_worker_is_read_at_once_on_the_other(serve: ServeFactory) -> None:
    server = serve("--workers", "2", "--durability", "sync")
    with on_each_worker(server) as (first, second):
        for i in range(50):
            assert command(first, "SET", f"k{i}", str(i)) == b"OK"
            assert command(second, "GET", f"k{i}") == str(i).encode()
            assert command(second, "LPUSH", "list", str(i)) == i + 1
            assert command(first, "LINDEX", "list", "0") == str(i).encode()
        assert command(first, "INCR", "n") == 1
        assert command(second, "INCR", "n") == 2


def answered(conns: list[Raw], settle: float = 0.5) -> int:
    """How many of ``conns`` have a reply waiting, once some have and no new one came for
    ``settle`` s (bounded by ``WAIT``: a worker slow to resume is waited for, not raced)."""
    seen, before = 0, -1
    deadline = time.monotonic() + WAIT
    while (seen == 0 or seen != before) and time.monotonic() < deadline:
        before = seen
        time.sleep(settle)
        readable, _, _ = select.select([c.sock for c in conns], [], [], 0)
        seen = len(readable)
    return seen


def test_connections_that_queue_up_are_spread_across_the_workers(serve: ServeFactory) -> None:
    # Connections opened while both workers are busy (stopped, here) wait in the kernel. On
    # one shared listening socket, the first worker to run accepted all of them (libuv
    # accepts until the backlog is empty) and served all their load on one core.
    server = serve("--workers", "2")
    first, second = children(server.pid)
    for pid in (first, second):
        os.kill(pid, signal.SIGSTOP)
    conns: list[Raw] = []
    try:
        conns = [server.raw() for _ in range(50)]
        for conn in conns:
            conn.send(encode_command(b"CLIENT", b"ID"))
        os.kill(first, signal.SIGCONT)
        by_first = answered(conns)
        os.kill(second, signal.SIGCONT)
        ids = [int(conn.replies(1)[0]) for conn in conns]
    finally:
        for pid in (first, second):
            os.kill(pid, signal.SIGCONT)
        for conn in conns:
            conn.close()
    assert len(set(ids)) == 50
    assert 12 <= by_first <= 38, by_first  # a fair split is 25; outside 12..38: p < 1e-4


def test_a_second_server_with_workers_cannot_join_the_first_ones_port(
    serve: ServeFactory, tmp_path: Path
) -> None:
    # Both would be in one SO_REUSEPORT group, splitting clients between two data directories.
    first = serve("--workers", "2")
    second = subprocess.run(
        [sys.executable, "-m", "engramdb.cli", "serve", "--workers", "2", "--data", "other",
         "--port", str(first.port), "--metrics-port", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=START_WAIT,
    )  # fmt: skip
    assert second.returncode == 1
    assert "already in use" in second.stderr
    assert not (tmp_path / "other").exists()


def test_client_ids_are_unique_across_workers(serve: ServeFactory) -> None:
    server = serve("--workers", "2")
    conns = [server.raw() for _ in range(12)]
    try:
        ids = [command(conn, "CLIENT", "ID") for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert len(set(ids)) == len(ids)


def test_watch_sees_a_write_made_through_the_other_worker(serve: ServeFactory) -> None:
    server = serve("--workers", "2")
    with on_each_worker(server) as (first, second):
        assert command(first, "WATCH", "balance") == b"OK"
        assert command(second, "SET", "balance", "100") == b"OK"
        assert command(first, "MULTI") == b"OK"
        assert command(first, "SET", "balance", "0") == b"QUEUED"
        assert command(first, "EXEC") is None
        assert command(second, "GET", "balance") == b"100"


def test_publish_on_one_worker_reaches_a_subscriber_on_the_other(serve: ServeFactory) -> None:
    server = serve("--workers", "2")
    with on_each_worker(server) as (first, second):
        first.send(encode_command(b"SUBSCRIBE", b"news"))
        assert first.replies(1) == [[b"subscribe", b"news", 1]]

        def delivered() -> bool:
            command(second, "PUBLISH", "news", "hello")
            first.sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError, OSError):
                first.reader.feed(first.sock.recv(1 << 16))
            return first.reader.gets() == [b"message", b"news", b"hello"]

        # The bus connects the workers once both listen: retry until it has.
        wait_for(delivered, WAIT, "a message published on the other worker")


def test_client_pause_and_monitor_are_refused_with_several_workers(serve: ServeFactory) -> None:
    server = serve("--workers", "2")
    with server.raw() as conn:
        for args in (("CLIENT", "PAUSE", "1000"), ("MONITOR",)):
            reply = command(conn, *args)
            assert isinstance(reply, ReplyError)
            assert "--workers" in str(reply)
        assert command(conn, "PING") == b"PONG"


def test_a_killed_worker_is_restarted_and_acknowledged_writes_survive(
    serve: ServeFactory,
) -> None:
    server = serve("--workers", "2", "--durability", "sync")
    with on_each_worker(server) as (first, second):
        for i in range(100):
            assert command(first if i % 2 else second, "SET", f"k{i}", str(i)) == b"OK"
        workers = children(server.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: len(set(children(server.pid)) - {workers[0]}) == 2, WAIT, "a new worker")
        seen: set[int] = set()

        def both_answer() -> bool:
            with server.raw() as conn:
                worker = (int(command(conn, "CLIENT", "ID")) - 1) % 2  # type: ignore[call-overload]
                assert [command(conn, "GET", f"k{i}") for i in range(100)] == [
                    str(i).encode() for i in range(100)
                ]
                seen.add(worker)
            return seen == {0, 1}

        wait_for(both_answer, WAIT, "both workers to answer with every acknowledged write")
        assert server.alive()


def test_kill_9_of_the_supervisor_takes_the_workers_with_it(serve: ServeFactory) -> None:
    server = serve("--workers", "2")
    workers = children(server.pid)
    assert len(workers) == 2
    server.kill()
    wait_for(lambda: all(gone(pid) for pid in workers), WAIT, "the workers to die")
    # A killed worker shows as a zombie while its other threads still exit, and they hold
    # its listening socket until the last one is gone: wait for the port, do not race it.
    wait_for(lambda: refuses(server), WAIT, "the port to refuse connections")


def refuses(server: Served) -> bool:
    try:
        server.raw(timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_every_worker_and_exits_cleanly(serve: ServeFactory) -> None:
    server = serve("--workers", "2", "--durability", "sync")
    with on_each_worker(server) as (first, second):
        assert command(first, "SET", "a", "1") == b"OK"
        assert command(second, "SET", "b", "2") == b"OK"
        workers = children(server.pid)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(START_WAIT) == 0
        assert all(gone(pid) for pid in workers)
        restarted = server.start()
        with restarted.raw() as conn:
            assert command(conn, "MGET", "a", "b") == [b"1", b"2"]


def test_a_worker_that_cannot_start_stops_the_server(serve: ServeFactory, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")
    server = Served(blocker, "--workers", "2")
    with pytest.raises(AssertionError, match="exited at start"):
        server.start()
    assert server.wait_exit() == 1


def test_testing_mode_is_refused_with_several_workers(tmp_path: Path) -> None:
    server = Served(tmp_path / "db", "--workers", "2", "--testing")
    with pytest.raises(AssertionError, match="one worker only"):
        server.start()
