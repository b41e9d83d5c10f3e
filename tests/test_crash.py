"""kill -9 durability: every acknowledged write survives a SIGKILL of its writer.

A writer process (``tests/helpers/crash_writer.py``) writes with ``durability="sync"`` and
prints one line per acknowledged write; it is killed at a random moment, the database is
reopened and checked against a model built from those lines, change log included. Cycles
accumulate on one database directory: 20 by default, 1000 with ``--soak``. A second loop
keeps this process's handle open and writing while the writers die, so some die holding
LMDB's write lock with this process waiting on it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

import engramdb
from engramdb import Change, Database, ops

WRITER = Path(__file__).parent / "helpers" / "crash_writer.py"
SET = "crash"
WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed


@dataclass
class Model:
    """What the acknowledged writes of all cycles so far promise about the database."""

    # p*/u* key -> (generation, token) of its latest acknowledged put/update
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)
    # c* key -> highest value an acknowledged increment returned
    counters: dict[str, int] = field(default_factory=dict)
    # every key -> highest generation seen on reopen (generations never go back)
    seen: dict[str, int] = field(default_factory=dict)
    # every key -> its generation after the last change verified in the change log
    logged: dict[str, int] = field(default_factory=dict)
    # every key -> the generation its current life started at (the sequence of its creation)
    born: dict[str, int] = field(default_factory=dict)
    verified_sequence: int = 0
    acknowledged: int = 0
    parent_writes: int = 0


@dataclass
class Cycle:
    """The acknowledged writes of one writer process."""

    number: int
    seed: int
    acks: list[list[str]]
    # (key, kind, generation) of each acknowledged write, as the change log must show it
    expected: list[tuple[str, str, int]] = field(default_factory=list)
    # (key, value) of each acknowledged increment; its generation is born + value - 1
    increments: list[tuple[str, int]] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    put_not_deleted: dict[str, tuple[int, int]] = field(default_factory=dict)


def run_writer(path: Path, cycle: int, seed: int, rng: random.Random, stderr: Path) -> list[str]:
    """Start a writer, SIGKILL it at a random moment; returns its complete ack lines."""
    lines: list[bytes] = []
    ready = threading.Event()

    def read(stream: IO[bytes]) -> None:
        for line in stream:
            if line == b"ready\n":
                ready.set()
            elif line.endswith(b"\n"):  # a line cut short by the kill was never acknowledged
                lines.append(line)

    # One cycle in five is killed at a moment counted from its start, so some kills land in
    # interpreter start-up or inside engramdb.open; the rest land among the writes.
    from_start = rng.random() < 0.2
    delay = rng.uniform(0.0, 0.3) if from_start else rng.uniform(0.02, 0.3)
    with stderr.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(cycle), str(seed)],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert child.stdout is not None
    reader = threading.Thread(target=read, args=(child.stdout,), daemon=True)
    reader.start()
    try:
        if not from_start and not ready.wait(WAIT):
            pytest.fail(f"writer never became ready: {stderr.read_text()}")
        time.sleep(delay)  # the fault's timing, not a wait for a condition
    finally:
        child.kill()
        child.wait(WAIT)
        reader.join(WAIT)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, (
        f"cycle {cycle} (seed {seed}): writer exited by itself ({child.returncode}): "
        f"{stderr.read_text()}"
    )
    return [line.decode() for line in lines]


def parse(cycle: int, seed: int, lines: list[str]) -> Cycle:
    parsed = Cycle(cycle, seed, [line.split() for line in lines])
    for parts in parsed.acks:
        match parts:
            case ["put" | "update", key, generation, token]:
                parsed.expected.append((key, "put", int(generation)))
                if key.startswith("d"):
                    parsed.put_not_deleted[key] = (int(generation), int(token))
            case ["incr", key, value]:
                # Counters are only ever incremented: generation == born + value - 1.
                parsed.increments.append((key, int(value)))
            case ["delete", key]:
                put_generation, _ = parsed.put_not_deleted.pop(key)
                parsed.expected.append((key, "delete", put_generation))
                parsed.deleted.add(key)
            case _:
                raise AssertionError(f"unexpected writer output {parts!r}")
    return parsed


def check_records(db: Database, model: Model, cycle: Cycle) -> None:
    records = db.records(SET)
    where = f"cycle {cycle.number} (seed {cycle.seed})"
    for parts in cycle.acks:
        key = parts[1]
        if parts[0] in ("put", "update") and not key.startswith("d"):
            model.latest[key] = (int(parts[2]), int(parts[3]))
        elif parts[0] == "incr":
            model.counters[key] = max(model.counters.get(key, 0), int(parts[2]))
    model.acknowledged += len(cycle.acks)

    for key, (generation, token) in model.latest.items():
        record = records.get(key)
        assert record is not None, f"{where}: acknowledged {key} is gone"
        assert record.generation >= generation, f"{where}: {key} lost acknowledged writes"
        if record.generation == generation:
            assert record["t"] == token, f"{where}: {key} has another write's bins"
        if key.startswith("p") and record.generation == generation:
            assert record.bins == {"t": token}, f"{where}: put of {key} did not replace bins"
    for key, value in model.counters.items():
        record = records.get(key)
        assert record is not None, f"{where}: acknowledged counter {key} is gone"
        assert record["n"] >= value, f"{where}: counter {key} lost acknowledged increments"
    for key in [*model.latest, *model.counters]:
        record = records.get(key)
        assert record is not None
        assert record.generation >= model.seen.get(key, 0), f"{where}: {key} went back in time"
        model.seen[key] = record.generation

    for key in cycle.deleted:
        assert records.get(key) is None, f"{where}: acknowledged delete of {key} was undone"
    # A d-key is deleted right after its put, so only the last one can have had its delete
    # in flight when the writer died; whether that delete landed is unknown.
    assert len(cycle.put_not_deleted) <= 1, f"{where}: writer skipped a delete"
    for key, (generation, token) in cycle.put_not_deleted.items():
        record = records.get(key)
        if record is not None:
            assert (record.generation, record.bins) == (generation, {"t": token})


def read_changes(db: Database, since: int) -> list[Change]:
    changes: list[Change] = []
    while batch := db.changes(since, limit=1000):
        changes.extend(batch)
        since = batch[-1].sequence
    return changes


def check_change_log(db: Database, model: Model, cycle: Cycle) -> None:
    """The new changes continue the log without a gap, each key's generations follow one
    another, every acknowledged write is there, and the records agree with the log."""
    where = f"cycle {cycle.number} (seed {cycle.seed})"
    last = db.last_sequence()
    assert last >= model.verified_sequence, f"{where}: the change log lost committed changes"
    assert last >= model.acknowledged + model.parent_writes
    assert db.first_sequence() == 1, f"{where}: changes were dropped without retention"
    changes = read_changes(db, model.verified_sequence)
    assert [c.sequence for c in changes] == list(range(model.verified_sequence + 1, last + 1))
    for change in changes:
        assert change.set_name == SET
        key = str(change.key)
        before = model.logged.get(key, 0)
        if change.kind == "put" and before == 0:
            # A new life starts at its change's sequence: generations are never reused.
            assert change.generation == change.sequence, f"{where}: {change} reuses a generation"
            model.logged[key] = model.born[key] = change.generation
        elif change.kind == "put":
            assert change.generation == before + 1, f"{where}: {change} does not follow {before}"
            model.logged[key] = change.generation
        else:
            assert change.kind == "delete", f"{where}: unexpected {change}"
            assert change.generation == before, f"{where}: {change} does not follow {before}"
            model.logged[key] = 0
    cycle.expected += [(k, "put", model.born[k] + value - 1) for k, value in cycle.increments]
    logged = {(str(c.key), c.kind, c.generation) for c in changes}
    missing = [write for write in cycle.expected if write not in logged]
    assert not missing, f"{where}: acknowledged writes missing from the change log: {missing}"
    records = db.records(SET)
    for key in {str(c.key) for c in changes}:
        record = records.get(key)
        generation = 0 if record is None else record.generation
        assert generation == model.logged[key], f"{where}: {key} disagrees with the change log"
    for key in model.counters:
        record = records.get(key)
        assert record is not None
        torn = record.generation - model.born[key] + 1 != record["n"]
        assert not torn, f"{where}: counter {key} is torn"
    model.verified_sequence = last


def parent_writer(db: Database, stop: threading.Event, values: list[int]) -> None:
    """Increment the parent's own counter until ``stop``; ``values`` collects the results."""
    records = db.records(SET)
    while not stop.is_set():
        values.append(records.operate("parent", [ops.incr("n")])[0])


def kill_cycles(tmp_path: Path, cycles: int, *, stay_open: bool) -> Model:
    """Run ``cycles`` writer lifetimes, each ended by SIGKILL, checking after each one.

    ``stay_open``: this process keeps its handle open throughout and writes at the same time
    as the writer, so the writer may die holding LMDB's write lock while this process waits
    for it; otherwise the database is reopened after every kill.
    """
    rng = random.Random(20240601 + stay_open)
    path = tmp_path / "db"
    model = Model()
    options: dict[str, Any] = {
        "durability": "sync",
        "sweep_interval": None,
        "changelog_retention": None,
    }
    held = engramdb.open(path, **options) if stay_open else None
    try:
        for number in range(cycles):
            seed = rng.randrange(2**32)
            values: list[int] = []
            stop = threading.Event()
            concurrent = None
            if held is not None:
                concurrent = threading.Thread(target=parent_writer, args=(held, stop, values))
                concurrent.start()
            try:
                lines = run_writer(path, number, seed, rng, tmp_path / "writer.stderr")
            finally:
                stop.set()
                if concurrent is not None:
                    concurrent.join(WAIT)
                    assert not concurrent.is_alive(), "the parent's writes hung"
            cycle = parse(number, seed, lines)
            db = held if held is not None else engramdb.open(path, **options)
            try:
                check_records(db, model, cycle)
                # The database (reopened or not) takes writes, and they join the same log.
                values += db.records(SET).operate("parent", [ops.incr("n")])
                assert values == list(
                    range(model.parent_writes + 1, model.parent_writes + len(values) + 1)
                )
                model.parent_writes += len(values)
                cycle.increments += [("parent", value) for value in values]
                check_change_log(db, model, cycle)
            finally:
                if db is not held:
                    db.close()
    finally:
        if held is not None:
            held.close()
    assert model.acknowledged > cycles, "the writers were killed before writing anything"
    return model


def test_acknowledged_writes_survive_kill_9(tmp_path: Path, soak: bool) -> None:
    kill_cycles(tmp_path, 1000 if soak else 20, stay_open=False)


def test_a_process_keeps_working_while_co_writers_are_killed(tmp_path: Path, soak: bool) -> None:
    # Each killed writer leaves a reader slot behind; they are reclaimed (see below), so the
    # soak may run past LMDB's 1024 slots.
    model = kill_cycles(tmp_path, 1000 if soak else 10, stay_open=True)
    assert model.parent_writes > 10


# A stand-in for processes that died while holding LMDB reader slots: each killed engramdb
# process keeps at least one (its spare read transaction), this one takes them all at once.
HOLD_READER_SLOTS = """
import sys
import lmdb

env = lmdb.open(sys.argv[1], max_dbs=8)
held = []
try:
    while True:
        held.append(env.begin())
except lmdb.ReadersFullError:
    pass
print("holding", len(held), flush=True)
sys.stdin.read()
"""


def test_reader_slots_of_killed_processes_are_reclaimed(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        records = db.records("s")
        records.put("k", {"n": 1})
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD_READER_SLOTS, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            assert child.stdout.readline().startswith("holding ")
        finally:
            child.kill()
            child.wait(WAIT)
            child.stdout.close()
            child.stdin.close()
        assert child.returncode == -signal.SIGKILL
        record = records.get("k")
        assert record is not None
        assert record["n"] == 1
        assert records.put("k", {"n": 2}) == record.generation + 1
