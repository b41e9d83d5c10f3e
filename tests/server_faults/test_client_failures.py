"""What a client call reports when the server dies, freezes or comes back.

- A write whose request reached the server before it died: ``Unavailable`` saying the
  outcome is unknown (the server may have applied it).
- A frozen server (SIGSTOP): ``Timeout``, again "may or may not" for writes.
- A read on a connection the restarted server no longer knows: retried once on a fresh
  connection, so it succeeds; with ``retries=0`` it raises ``Unavailable``.
- Nothing listening: ``Unavailable`` saying it could not connect (nothing was sent).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import engramdb
import engramdb.aio
from engramdb import Timeout, Unavailable

from .conftest import Served, ServeFactory, wait_for

UNKNOWN = "may or may not have been applied"


def request_waiting(server: Served) -> bool:
    """Whether some connection to ``server`` holds bytes the server has not read yet
    (from /proc/net/tcp: the receive queue of its side of an established connection)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        state, unread = fields[3], int(fields[4].partition(":")[2], 16)
        if local_port == server.port and state == "01" and unread > 0:
            return True
    return False


def test_write_in_flight_when_the_server_dies_has_unknown_outcome(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    outcome: dict[str, Any] = {}
    with engramdb.connect(server.url, timeout=30.0) as db:
        records = db.records("s")
        records.put("warm", {"v": 0})
        server.signal(signal.SIGSTOP)  # frozen: the next request waits in the socket

        def call() -> None:
            try:
                outcome["value"] = records.put("k", {"v": 1})
            except Exception as e:
                outcome["error"] = e

        pending = threading.Thread(target=call)
        pending.start()
        wait_for(lambda: request_waiting(server), 10, "the write to reach the server")
        server.signal(signal.SIGKILL)
        assert server.wait_exit() == -signal.SIGKILL
        pending.join(30)
        assert not pending.is_alive(), "the client call hung after the server died"
    error = outcome.get("error")
    assert isinstance(error, Unavailable), outcome
    assert UNKNOWN in str(error)


def test_async_write_in_flight_when_the_server_dies(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")

    async def scenario() -> BaseException | None:
        client = await engramdb.aio.connect(server.url, timeout=30.0)
        try:
            records = client.records("s")
            await records.put("warm", {"v": 0})
            server.signal(signal.SIGSTOP)
            call = asyncio.ensure_future(records.put("k", {"v": 1}))
            deadline = time.monotonic() + 10
            while not request_waiting(server):
                assert time.monotonic() < deadline, "the write never reached the server"
                await asyncio.sleep(0.01)
            server.signal(signal.SIGKILL)
            async with asyncio.timeout(30):
                done = await asyncio.gather(call, return_exceptions=True)
            return done[0] if isinstance(done[0], BaseException) else None
        finally:
            await client.close()

    error = asyncio.run(scenario())
    assert isinstance(error, Unavailable), error
    assert UNKNOWN in str(error)


def test_frozen_server_times_out_and_the_write_may_still_land(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with engramdb.connect(server.url, timeout=0.5) as db:
        records = db.records("s")
        records.put("warm", {"v": 0})
        server.signal(signal.SIGSTOP)
        try:
            with pytest.raises(Timeout, match=UNKNOWN):
                records.put("k", {"v": 1})
            with pytest.raises(Timeout) as read_error:  # retried once, then given up
                records.get("warm")
            assert UNKNOWN not in str(read_error.value)
        finally:
            server.signal(signal.SIGCONT)
        # "Unknown" is the honest answer: the server had the request and applies it late.
        wait_for(lambda: records.get("k") is not None, 10, "the late write to land")
        assert records.put("k", {"v": 2}) >= 2


def test_read_is_retried_against_a_restarted_server(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with (
        engramdb.connect(server.url) as retrying,
        engramdb.connect(server.url, retries=0) as single,
    ):
        retrying.records("s").put("k", {"v": 1})
        assert single.records("s").get("k") is not None  # each now pools one connection
        server.kill()
        server.start()  # same data directory and port; the pooled sockets are dead

        record = retrying.records("s").get("k")
        assert record is not None
        assert record["v"] == 1
        with pytest.raises(Unavailable, match="connection lost"):
            single.records("s").get("k")
        assert single.records("s").get("k") is not None  # a fresh connection works


def test_write_on_a_dead_pooled_connection_is_not_retried(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with engramdb.connect(server.url) as db:
        records = db.records("s")
        records.put("k", {"v": 1})
        server.kill()
        server.start()
        with pytest.raises(Unavailable, match=UNKNOWN):
            records.put("k", {"v": 2})
        record = records.get("k")  # here it had not been applied: the request never arrived
        assert record is not None
        assert record["v"] == 1


def test_dead_server_raises_unavailable(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with engramdb.connect(server.url, timeout=2.0) as db:
        records = db.records("s")
        records.put("k", {"v": 1})
        server.kill()
        with pytest.raises(Unavailable):
            records.get("k")  # the pooled socket fails, the retry cannot connect
        with pytest.raises(Unavailable, match="cannot connect") as write_error:
            records.put("k", {"v": 2})
        assert UNKNOWN not in str(write_error.value), "nothing was sent: the outcome is known"
    with pytest.raises(Unavailable, match="cannot connect"):
        engramdb.connect(server.url, timeout=2.0)
