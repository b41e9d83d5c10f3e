"""kill -9 of PostgreSQL under load: no acknowledged write is lost, a write that could not
have been applied says so, an in-flight commit is an unknown outcome, and the engine
reconnects by itself once the server is back."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import engramdb
from engramdb import Unavailable
from tests.postgres.conftest import wait_for


def test_kill_9_of_postgres_mid_write(own_postgres: Any) -> None:
    pg = own_postgres
    url = pg.url() + "?failover_timeout=0.5"
    db = engramdb.open(url, sweep_interval=None)
    records = db.records("s")
    acknowledged: dict[str, int] = {}
    unknown: list[str] = []
    not_written: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(name: str) -> None:
        i = 0
        while not stop.is_set():
            key = f"{name}-{i}"
            i += 1
            try:
                generation = records.put(key, {"i": i})
            except Unavailable as e:
                with lock:
                    (unknown if "unknown" in str(e) else not_written).append(key)
                continue
            with lock:
                acknowledged[key] = generation

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 100, 30, "writes before the crash")
        pg.kill()
        # Writes that reach no server for failover_timeout give up, saying nothing was
        # written; the batch that was committing when the server died is "unknown".
        wait_for(lambda: len(not_written) >= 3, 30, "writes to fail while it is down")
        before_restart = len(acknowledged)
        pg.start()
        wait_for(lambda: len(acknowledged) >= before_restart + 100, 30, "writes after restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    db.close()
    with engramdb.open(pg.url(), sweep_interval=None) as fresh:
        s = fresh.records("s")
        found = s.get_many(list(acknowledged))
        lost = [key for key, record in zip(acknowledged, found) if record is None]
        assert lost == []
        for key, record in zip(acknowledged, found):
            assert record is not None
            assert record.generation == acknowledged[key]
        # "nothing was written" is a promise: such a write never shows up later.
        assert s.get_many(not_written) == [None] * len(not_written)


def test_unreachable_server_is_unavailable_not_a_hang(own_postgres: Any) -> None:
    pg = own_postgres
    port = pg.port
    pg.stop()
    with pytest.raises(Unavailable, match="nothing was written"):
        engramdb.open(
            f"postgresql://postgres@127.0.0.1:{port}/engramdb?failover_timeout=0.2",
            sweep_interval=None,
        )


def test_reads_retry_through_a_restart(own_postgres: Any) -> None:
    pg = own_postgres
    with engramdb.open(pg.url() + "?failover_timeout=30", sweep_interval=None) as db:
        db.records("s").put("k", {"v": 1})
        pg.kill()
        found: list[Any] = []
        reader = threading.Thread(target=lambda: found.append(db.records("s").get("k")))
        reader.start()  # its read fails, and retries, while the server is down
        threading.Event().wait(0.3)
        pg.start()  # from this thread: the server dies with the thread that started it
        reader.join(30)
        assert len(found) == 1
        assert found[0] is not None
        assert found[0].bins == {"v": 1}
