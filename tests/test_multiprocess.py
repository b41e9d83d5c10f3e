"""Several processes, and several handles in one process, on one LMDB path.

The peer is a real process (spawn context) that opens its own ``Database`` and serves
commands over a pipe, so the test decides exactly when each write returns and what the other
process does next.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import pytest

import engramdb
from engramdb import Database, EngramError, InvalidArgument, StorageError, ops

SPAWN = multiprocessing.get_context("spawn")
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed

Durability = Literal["sync", "async", "none"]


# the peer process ------------------------------------------------------------------------


def _get(db: Database, set_name: str, key: str) -> tuple[int, dict[str, Any]] | None:
    record = db.records(set_name).get(key)
    return None if record is None else (record.generation, record.bins)


def _burst(db: Database, shared: str, own: str, n: int) -> list[int]:
    """``n`` rounds of: increment the shared counter, then put this process's own key."""
    records = db.records("log")
    values = []
    for i in range(n):
        values.append(records.operate(shared, [ops.incr("n")])[0])
        records.put(own, {"i": i})
    return values


def _changes(db: Database) -> list[tuple[int, str, Any, str, int]]:
    out: list[tuple[int, str, Any, str, int]] = []
    since = 0
    while batch := db.changes(since, limit=1000):
        out.extend((c.sequence, c.set_name, c.key, c.kind, c.generation) for c in batch)
        since = batch[-1].sequence
    return out


COMMANDS: dict[str, Callable[..., Any]] = {
    "put": lambda db, set_name, key, bins: db.records(set_name).put(key, bins),
    "get": _get,
    "delete": lambda db, set_name, key: db.records(set_name).delete(key),
    "count": lambda db, set_name: db.records(set_name).count(),
    "keys": lambda db, set_name: [r.key for r in db.records(set_name).iterate()],
    "burst": _burst,
    "changes": _changes,
    "last_sequence": lambda db: db.last_sequence(),
}


def _serve(path: str, conn: Connection) -> None:
    """The peer: open the database, then run commands from ``conn`` until told to stop."""
    with engramdb.open(path, durability="sync", sweep_interval=None) as db:
        conn.send(("ok", os.getpid()))
        while True:
            command, *args = conn.recv()
            if command == "stop":
                break
            try:
                conn.send(("ok", COMMANDS[command](db, *args)))
            except EngramError as e:
                conn.send(("error", repr(e)))


class Peer:
    """Another process with its own ``Database`` on the same path."""

    def __init__(self, path: Path) -> None:
        self.conn, theirs = SPAWN.Pipe()
        self.process = SPAWN.Process(target=_serve, args=(str(path), theirs), daemon=True)
        self.process.start()
        theirs.close()
        self.pid = self.receive()

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def receive(self) -> Any:
        if not self.conn.poll(WAIT):
            pytest.fail("the peer process did not answer")
        status, value = self.conn.recv()
        assert status == "ok", f"the peer failed: {value}"
        return value

    def call(self, *command: Any) -> Any:
        self.send(*command)
        return self.receive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.send("stop")
            self.process.join(WAIT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        assert self.process.exitcode == 0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def peer(path: Path) -> Iterator[Peer]:
    other = Peer(path)
    yield other
    other.stop()


@pytest.fixture
def db(path: Path) -> Iterator[Database]:
    with engramdb.open(path, durability="sync", sweep_interval=None) as opened:
        yield opened


# two processes ---------------------------------------------------------------------------


def test_a_write_is_visible_to_the_other_process_as_soon_as_it_returns(
    db: Database, peer: Peer
) -> None:
    assert peer.pid != os.getpid()
    records = db.records("s")
    for i in range(50):
        generation = records.put("k", {"i": i, "by": "parent"})
        assert peer.call("get", "s", "k") == (generation, {"i": i, "by": "parent"})

        generation = peer.call("put", "s", "k", {"i": i, "by": "peer"})
        record = records.get("k")
        assert record is not None
        assert (record.generation, record.bins) == (generation, {"i": i, "by": "peer"})
    assert peer.call("delete", "s", "k") is True
    assert records.get("k") is None
    back = records.put("k", {"back": True})
    assert back > generation  # a new life: the deleted record's generations are not reused
    assert peer.call("get", "s", "k") == (back, {"back": True})


def test_counts_and_scans_see_the_other_process_writes(db: Database, peer: Peer) -> None:
    items = db.records("items")
    for i in range(20):
        peer.call("put", "items", f"k{i:02}", {"i": i})
    assert items.count() == 20
    assert [r.key for r in items.iterate(batch=7)] == [f"k{i:02}" for i in range(20)]
    assert "items" in db.sets()

    for i in range(0, 20, 4):
        assert items.delete(f"k{i:02}")
    assert peer.call("count", "items") == 15
    assert peer.call("keys", "items") == [f"k{i:02}" for i in range(20) if i % 4]


def test_change_log_is_one_total_order_across_processes(db: Database, peer: Peer) -> None:
    n = 200
    peer.send("burst", "shared", "peer-own", n)  # runs while this process does the same
    mine = _burst(db, "shared", "parent-own", n)
    theirs: list[int] = peer.receive()

    # The shared counter was incremented atomically: each value handed out exactly once.
    assert sorted(mine + theirs) == list(range(1, 2 * n + 1))
    assert mine == sorted(mine)
    assert theirs == sorted(theirs)

    changes = _changes(db)
    assert peer.call("changes") == changes, "the processes see different change logs"
    assert [c[0] for c in changes] == list(range(1, 4 * n + 1))
    assert db.last_sequence() == peer.call("last_sequence") == 4 * n
    by_key: dict[str, list[int]] = {}
    for _, set_name, key, kind, generation in changes:
        assert (set_name, kind) == ("log", "put")
        by_key.setdefault(key, []).append(generation)
    # In sequence order, every key's generations run born, born + 1, ... without a gap,
    # each key born at the sequence of its first change.
    first_of = {key: seq for seq, _, key, _, _ in reversed(changes)}
    assert by_key == {
        key: list(range(first_of[key], first_of[key] + count))
        for key, count in (("shared", 2 * n), ("parent-own", n), ("peer-own", n))
    }
    shared = db.records("log").get("shared")
    assert shared is not None
    assert shared["n"] == 2 * n


# fork ------------------------------------------------------------------------------------


def _uses_after_fork(db: Database) -> dict[str, str]:
    """What each use of a ``Database`` inherited through ``os.fork()`` does."""
    uses: dict[str, Callable[[], Any]] = {
        "records": lambda: db.records("s"),
        "get": lambda: db.records("s").get("k"),
        "put": lambda: db.records("s").put("k", {"n": 2}),
        "last_sequence": db.last_sequence,
        "stats": db.stats,
        "close": db.close,
    }
    outcome: dict[str, str] = {}
    for name, use in uses.items():
        try:
            use()
        except StorageError as e:
            outcome[name] = f"StorageError: {e}"
        except BaseException as e:
            outcome[name] = f"unexpected {e!r}"
        else:
            outcome[name] = "ok"
    return outcome


def _reopen_after_fork(db: Database, path: Path) -> dict[str, str]:
    """In the child of ``os.fork()``, do what the error advises: open the path again."""
    outcome = {"close_inherited": "ok"}
    try:
        db.close()
    except BaseException as e:
        outcome["close_inherited"] = f"unexpected {e!r}"
    try:
        with engramdb.open(path, durability="sync", sweep_interval=None) as mine:
            record = mine.records("s").get("k")
            outcome["get"] = repr(None if record is None else record.bins)
            outcome["put"] = repr(mine.records("s").put("from-child", {"n": 1}))
    except BaseException as e:
        outcome["open"] = f"unexpected {e!r}"
    return outcome


def in_forked_child(db: Database, child: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Run ``child`` in a child made by ``os.fork()``; returns the report it sent back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            report = json.dumps(child()).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(report)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        raw = answer.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    outcome: dict[str, str] = json.loads(raw)
    return outcome


# Python 3.12+ warns about fork() while other threads (of earlier tests) are alive; the
# children here only touch engramdb and leave through os._exit.
FORK_WARNING = "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("engine", ["lmdb", "memory"])
def test_a_database_used_after_fork_raises_storage_error(path: Path, engine: str) -> None:
    with engramdb.open(
        path if engine == "lmdb" else None, durability="sync", sweep_interval=None
    ) as db:
        db.records("s").put("k", {"n": 1})

        outcome = in_forked_child(db, lambda: _uses_after_fork(db))

        for name in ("records", "get", "put", "last_sequence", "stats"):
            assert outcome[name].startswith("StorageError"), f"{name}: {outcome[name]}"
            assert "fork" in outcome[name], f"{name}: {outcome[name]}"
        assert outcome["close"] == "ok"
        # The parent's handle is untouched by what the child did.
        record = db.records("s").get("k")
        assert record is not None
        assert record.bins == {"n": 1}
        assert db.records("s").put("k", {"n": 3}) == 2


@pytest.mark.filterwarnings(FORK_WARNING)
def test_the_forked_child_can_open_the_path_again(path: Path) -> None:
    with engramdb.open(path, durability="sync", sweep_interval=None) as db:
        db.records("s").put("k", {"n": 1})

        outcome = in_forked_child(db, lambda: _reopen_after_fork(db, path))

        assert outcome["close_inherited"] == "ok"
        assert "open" not in outcome, outcome["open"]
        assert outcome["get"] == repr({"n": 1})
        assert outcome["put"] == "2"  # a new record starts at its change's sequence
        assert db.records("s").get("from-child") is not None


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_child_started_with_preexec_fn_leaves_the_parents_reads_working(path: Path) -> None:
    # subprocess runs the at-fork handlers only when it has a preexec_fn; a child that closed
    # its copies of the environments there cleared the parent's reader slots (MDB_BAD_RSLOT).
    with engramdb.open(path, durability="async", sweep_interval=None) as db:
        s = db.records("s")
        s.put("k", {"n": 1})
        for _ in range(3):  # leaves spare read transactions, each holding a reader slot
            assert s.scan("", limit=1).records[0].key == "k"

        done = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=os.getpid, check=False)

        assert done.returncode == 0
        assert s.scan("", limit=1).records[0].key == "k"
        record = s.get("k")
        assert record is not None
        assert record.bins == {"n": 1}


# one process, several handles ------------------------------------------------------------


def test_same_path_opened_twice_in_one_process_shares_the_environment(path: Path) -> None:
    first = engramdb.open(path, durability="sync", sweep_interval=None)
    second = engramdb.open(path, durability="sync", sweep_interval=None)
    try:
        a, b = first.records("s"), second.records("s")
        born = a.put("k", {"by": "first"})
        record = b.get("k")
        assert record is not None
        assert record.bins == {"by": "first"}
        assert b.put("k", {"by": "second"}, expect_generation=born) == born + 1
        record = a.get("k")
        assert record is not None
        assert (record.generation, record.bins) == (born + 1, {"by": "second"})
        assert first.last_sequence() == second.last_sequence() == 2

        first.close()
        with pytest.raises(StorageError):
            a.get("k")
        with pytest.raises(StorageError):
            a.put("k", {})
        # The other handle keeps working: the shared environment stays open.
        assert b.put("k", {"by": "second again"}) == born + 2
        record = b.get("k")
        assert record is not None
        assert record.bins == {"by": "second again"}
        assert b.count() == 1

        with engramdb.open(path, durability="sync", sweep_interval=None) as third:
            record = third.records("s").get("k")
            assert record is not None
            assert record.generation == born + 2
    finally:
        first.close()
        second.close()
    # Once every handle is closed, the path opens afresh.
    with engramdb.open(path, durability="none", sweep_interval=None) as again:
        assert again.records("s").put("k", {}) == 4


def test_same_directory_through_a_symlink_shares_the_environment(
    path: Path, tmp_path: Path
) -> None:
    with engramdb.open(path, durability="sync", sweep_interval=None) as first:
        link = tmp_path / "link"
        link.symlink_to(path, target_is_directory=True)
        with engramdb.open(link, durability="sync", sweep_interval=None) as second:
            first.records("s").put("k", {"n": 1})
            record = second.records("s").get("k")
            assert record is not None
            assert record.bins == {"n": 1}
            with pytest.raises(InvalidArgument):
                engramdb.open(link, durability="async", sweep_interval=None)
        assert first.records("s").put("k", {"n": 2}) == 2


def test_same_path_with_another_durability_in_one_process_is_refused(path: Path) -> None:
    with engramdb.open(path, durability="sync", sweep_interval=None) as first:
        others: tuple[Durability, ...] = ("async", "none")
        for other in others:
            with pytest.raises(InvalidArgument, match="durability"):
                engramdb.open(path, durability=other, sweep_interval=None)
        # The refusal left the open handle alone.
        assert first.records("s").put("k", {"n": 1}) == 1
        record = first.records("s").get("k")
        assert record is not None
    # With the first handle closed, another durability is fine.
    with engramdb.open(path, durability="async", sweep_interval=None) as second:
        assert second.records("s").put("k", {"n": 2}) == 2
