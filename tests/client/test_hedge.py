"""Hedged reads: two real ``engramdb serve`` processes over one LMDB directory, one of them
stopped with SIGSTOP (a real stall: the process does not run at all) while the client reads.

Each read goes to one server; after the p95 latency the client has seen, a hedge goes to the
other, within a budget. Writes are counted on the servers themselves (their ``stats()``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import engramdb
from engramdb import Hedge, InvalidArgument, Timeout
from tests.server_faults.conftest import Served, ServeFactory, serve

__all__ = ["serve"]  # the fixture, imported to be used here

WARMUP = 40  # reads before a method's p95 is known (Hedge.warmup is 32)


@pytest.fixture
def fronts(serve: ServeFactory, tmp_path: Path) -> tuple[Served, Served]:
    """Two servers over one data directory (the second through a symlink, so each keeps
    its own log)."""
    a = serve("--durability", "none", name="a")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    b = serve("--durability", "none", name="b")
    return a, b


@contextlib.contextmanager
def stopped(server: Served) -> Iterator[None]:
    server.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.signal(signal.SIGCONT)


def server_calls(server: Served, method: str) -> int:
    """How many ``method`` calls the server ran (INFO commandstats)."""
    with engramdb.connect(server.url) as db:
        text = db.execute("INFO", "commandstats").decode()
    found = re.search(rf"^cmdstat_{re.escape(method)}:calls=(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def test_a_read_stalled_on_a_stopped_server_is_answered_by_the_other(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts
    with engramdb.connect([a.url, b.url], hedge=True, timeout=30.0) as db:
        users = db.records("users")
        users.put("u1", {"n": 1})
        for _ in range(WARMUP):
            assert users.get("u1") is not None
        with stopped(b):
            # Reads take turns: of any two, one is sent to the stopped server first.
            got = [users.get("u1") for _ in range(2)]
        hedging = db.stats()["hedging"]
        assert [r.bins for r in got if r is not None] == [{"n": 1}, {"n": 1}]
        assert hedging["hedges_sent"] >= 1
        assert hedging["hedges_won"] >= 1


def test_an_agent_steps_context_call_is_hedged_too(fronts: tuple[Served, Served]) -> None:
    a, b = fronts
    with engramdb.connect([a.url, b.url], hedge=True, timeout=30.0) as db:
        db.records("users").put("u1", {"name": "Ada"})
        for _ in range(WARMUP):
            db.context(records={"users": ["u1"]})
        with stopped(b):
            steps = [db.context(records={"users": ["u1"]}) for _ in range(2)]
        assert db.stats()["hedging"]["hedges_won"] >= 1
    for ctx in steps:
        assert ctx.records is not None
        (user,) = ctx.records.result()["users"]
        assert user is not None
        assert user.bins == {"name": "Ada"}


def test_hedging_is_off_by_default(fronts: tuple[Served, Served]) -> None:
    a, b = fronts
    for one in (a.url, [a.url]):
        with engramdb.connect(one) as single:
            assert "hedging" not in single.stats()
    with engramdb.connect([a.url, b.url], timeout=0.5, retries=0) as db:
        users = db.records("users")
        users.put("u1", {"n": 1})
        for _ in range(WARMUP):
            users.get("u1")
        timed_out = 0
        with stopped(b):
            for _ in range(2):  # one of them is sent to the stopped server, and waits there
                try:
                    users.get("u1")
                except Timeout:
                    timed_out += 1
        assert timed_out == 1
        assert db.stats()["hedging"]["hedges_sent"] == 0


def test_writes_are_never_sent_twice(fronts: tuple[Served, Served]) -> None:
    a, b = fronts
    before = server_calls(a, "records.put") + server_calls(b, "records.put")
    with engramdb.connect([a.url, b.url], hedge=Hedge(budget=1.0), timeout=30.0) as db:
        users = db.records("users")
        for i in range(WARMUP):
            users.put(f"w{i}", {"i": i})
            users.get(f"w{i}")
        # Writes go to the first server: stall it mid-write, far past the p95 of put.
        for i in range(3):
            with stopped(a):
                writer = threading.Thread(target=users.put, args=(f"s{i}", {"i": i}))
                writer.start()
                threading.Event().wait(0.2)
            writer.join()
        assert users.get("s2") is not None
    assert server_calls(a, "records.put") + server_calls(b, "records.put") - before == WARMUP + 3


@contextlib.contextmanager
def stuttering(server: Served, stop: float = 0.05, every: float = 0.1) -> Iterator[None]:
    """The server stopped for ``stop`` seconds of every ``every``, until the block ends."""
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            with stopped(server):
                done.wait(stop)
            done.wait(every - stop)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_the_budget_bounds_the_extra_requests(fronts: tuple[Served, Served]) -> None:
    a, b = fronts
    with engramdb.connect([a.url, b.url], hedge=Hedge(budget=0.05), timeout=30.0) as db:
        users = db.records("users")
        users.put("u1", {"n": 1})
        for _ in range(WARMUP):
            users.get("u1")
        with stuttering(b):
            # A quarter of these start on a stopped server: far more than 5% want a hedge.
            for _ in range(200):
                assert users.get("u1") is not None
        hedging = db.stats()["hedging"]
    assert hedging["budget_refusals"] > 0
    assert 1 <= hedging["hedges_sent"] <= 0.05 * hedging["reads"]


def test_a_hedged_read_sees_a_write_the_client_saw_acknowledged(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts
    with engramdb.connect([a.url, b.url], hedge=Hedge(budget=1.0), timeout=30.0) as db:
        counters = db.records("counters")
        counters.put("c", {"n": 0})
        for _ in range(WARMUP):
            counters.get("c")
        for n in range(1, 21):
            counters.put("c", {"n": n})  # to the first server
            for _ in range(2):  # one of the two reads starts on the other server
                record = counters.get("c")
                assert record is not None
                assert record.bins == {"n": n}


def test_a_read_on_a_restarted_servers_stale_connection_is_answered(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts
    with engramdb.connect([a.url, b.url], hedge=True, timeout=30.0, retries=0) as db:
        users = db.records("users")
        users.put("u1", {"n": 1})
        for _ in range(WARMUP):
            users.get("u1")  # both servers now have pooled connections
        b.kill()
        b.start()  # same port, same data; the pooled connections to it are dead
        for _ in range(4):
            record = users.get("u1")
            assert record is not None
            assert record.bins == {"n": 1}


def test_hedging_needs_two_servers_and_a_sane_budget(fronts: tuple[Served, Served]) -> None:
    a, _ = fronts
    with pytest.raises(InvalidArgument):
        engramdb.connect(a.url, hedge=True)
    with pytest.raises(InvalidArgument):
        Hedge(budget=1.5)
