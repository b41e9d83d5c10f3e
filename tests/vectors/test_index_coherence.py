"""Every index of a collection agrees with a scan of its records, whatever happened to them.

Random sequences of upserts (vectors, metadata, a unique text token per version, TTLs),
deletes, expiries, re-creations of the same ids, sweeps and restarts; after them, every
answer of the vector index (an exhaustive search: ids and scores), the metadata filter and
the BM25 index is compared with the same answer computed from the records themselves
(``tests/vectors/coherence_child.py``). In one process with two handles (one writes while
the other does not look, so it catches up several changes at once), across real processes,
across ``kill -9`` of the writer, and through index snapshots loaded by fresh processes.

Keys come back often (six of them), so a re-created record meets the index state of its
earlier incarnation: a generation reused for a key would make that state look current.
``--soak`` runs many more examples.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    rule,
    run_state_machine_as_test,
)

import engramdb
from engramdb import FakeClock
from tests.vectors.coherence_child import (
    COLLECTION,
    DIM,
    GROUPS,
    KEYS,
    apply,
    differences,
    expected_view,
    random_op,
    view,
)

START = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0  # seconds; a bound on a hung child, never an expectation of speed


def _open(path: str, clock: FakeClock) -> engramdb.Database:
    return engramdb.open(path, clock=clock, sweep_interval=None, durability="none")


def assert_coherent(collection: Any, tokens: list[str], where: str) -> None:
    found = differences(view(collection, tokens), expected_view(collection, tokens))
    assert not found, f"{where}: the indexes disagree with the records:\n" + "\n".join(found)


# one process, two handles ----------------------------------------------------------------


class TwoHandles(RuleBasedStateMachine):
    """Two ``Database`` handles on one LMDB path (each with its own indexes), one clock."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="engramdb-coherence-")
        self.path = os.path.join(self.directory, "db")
        self.clock = FakeClock(START)
        self.handles = [_open(self.path, self.clock), _open(self.path, self.clock)]
        self.handles[0].vectors.create_collection(COLLECTION, DIM)
        self.tokens: list[str] = []

    def collection(self, side: int) -> Any:
        return self.handles[side].vectors.get_collection(COLLECTION)

    @rule(
        side=st.sampled_from([0, 1]),
        key=st.sampled_from(KEYS),
        seed=st.integers(0, 2**30),
        group=st.integers(0, GROUPS - 1),
        ttl=st.sampled_from([None, None, 1, 3]),
    )
    def upsert(self, side: int, key: Any, seed: int, group: int, ttl: int | None) -> None:
        token = f"zq{len(self.tokens)}"
        self.tokens.append(token)
        write = ["upsert", key, seed, token, group, ttl]
        apply(self.collection(side), self.handles[side], self.clock, write)

    @rule(side=st.sampled_from([0, 1]), key=st.sampled_from(KEYS))
    def delete(self, side: int, key: Any) -> None:
        apply(self.collection(side), self.handles[side], self.clock, ["delete", key])

    @rule(seconds=st.sampled_from([1, 2, 4]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(side=st.sampled_from([0, 1]))
    def sweep(self, side: int) -> None:
        self.handles[side].sweep()

    @rule(side=st.sampled_from([0, 1]))
    def reopen(self, side: int) -> None:
        """Close (which writes a snapshot) and open again (which loads it)."""
        self.handles[side].close()
        self.handles[side] = _open(self.path, self.clock)

    @rule(side=st.sampled_from([0, 1]))
    def check(self, side: int) -> None:
        assert_coherent(self.collection(side), self.tokens, f"handle {side}")

    def teardown(self) -> None:
        try:
            for side in (0, 1):
                assert_coherent(self.collection(side), self.tokens, f"handle {side} at the end")
        finally:
            for handle in self.handles:
                handle.close()
            shutil.rmtree(self.directory, ignore_errors=True)


def test_indexes_match_the_records_in_one_process(soak: bool) -> None:
    run_state_machine_as_test(
        TwoHandles,
        settings=settings(
            max_examples=400 if soak else 25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )


def test_an_expired_item_upserted_again_is_found_with_its_new_vector_and_text(
    tmp_path: Path,
) -> None:
    clock = FakeClock(START)
    with _open(str(tmp_path / "db"), clock) as db:
        collection = db.vectors.create_collection(COLLECTION, DIM)
        tokens = ["zqold", "zqnew"]
        apply(collection, db, clock, ["upsert", "a", 1, "zqold", 0, 1])
        assert_coherent(collection, tokens, "before expiry")
        clock.advance(2)
        apply(collection, db, clock, ["upsert", "a", 2, "zqnew", 1, None])
        assert_coherent(collection, tokens, "after expiry and upsert")


def test_a_deleted_item_created_again_behind_the_index_is_not_the_old_one(tmp_path: Path) -> None:
    clock = FakeClock(START)
    path = str(tmp_path / "db")
    tokens = ["zqold", "zqnew"]
    with _open(path, clock) as reader, _open(path, clock) as writer:
        writer.vectors.create_collection(COLLECTION, DIM)
        written = writer.vectors.get_collection(COLLECTION)
        apply(written, writer, clock, ["upsert", "a", 1, "zqold", 0, None])
        seen = reader.vectors.get_collection(COLLECTION)
        assert_coherent(seen, tokens, "reader, first look")
        # The reader catches up on both changes at once.
        apply(written, writer, clock, ["delete", "a"])
        apply(written, writer, clock, ["upsert", "a", 2, "zqnew", 1, None])
        assert_coherent(seen, tokens, "reader after delete + re-create")
    with _open(path, clock) as fresh:  # and from the snapshot the reader left
        assert_coherent(fresh.vectors.get_collection(COLLECTION), tokens, "fresh handle")


# across processes --------------------------------------------------------------------------


class Child:
    """``coherence_child`` in a subprocess, driven one JSON line at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.vectors.coherence_child"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def ask(self, **command: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the child died (exit code {self.proc.poll()})"
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)
        self._release()

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.ask(op="exit")
            self.proc.wait(WAIT)
        finally:
            self.kill()

    def _release(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _lists(value: Any) -> Any:
    """JSON turned the view's tuples into lists and kept ints as ints: compare as JSON."""
    return json.loads(json.dumps(value))


def assert_child_coherent(child: Child, collection: Any, tokens: list[str], where: str) -> None:
    got = child.ask(op="view", tokens=tokens)
    found = differences(got, _lists(expected_view(collection, tokens)))
    assert not found, f"{where}: the other process's indexes disagree:\n" + "\n".join(found)


def test_indexes_match_the_records_across_processes(tmp_path: Path, soak: bool) -> None:
    """The child writes while this process looks now and then (so it catches up on many
    changes at once), and the other way round; each side restarts from snapshots."""
    child = Child()
    try:
        for round_ in range(40 if soak else 3):
            rng = random.Random(round_)
            path = str(tmp_path / f"db{round_}")
            clock = FakeClock(START)
            db = _open(path, clock)
            db.vectors.create_collection(COLLECTION, DIM)
            child.ask(op="open", path=path, clock=START)
            tokens: list[str] = []
            for _ in range(12):
                batch = [random_op(rng, tokens) for _ in range(rng.randint(1, 8))]
                if rng.random() < 0.7:  # the child writes
                    clock.set(child.ask(op="apply", ops=batch)["clock"])
                else:
                    collection = db.vectors.get_collection(COLLECTION)
                    for write in batch:
                        apply(collection, db, clock, write)
                    child.ask(op="apply", ops=[], clock=clock())  # one time for both
                if rng.random() < 0.1:  # the child restarts from the snapshots on disk
                    child.ask(op="close")
                    child.ask(op="open", path=path, clock=clock())
                collection = db.vectors.get_collection(COLLECTION)
                if rng.random() < 0.6:
                    assert_coherent(collection, tokens, f"round {round_}: this process")
                if rng.random() < 0.4:
                    assert_child_coherent(child, collection, tokens, f"round {round_}: child")
                if rng.random() < 0.2:
                    db.close()  # a snapshot of whatever this process had indexed
                    db = _open(path, clock)
            collection = db.vectors.get_collection(COLLECTION)
            assert_coherent(collection, tokens, f"round {round_}: this process at the end")
            assert_child_coherent(child, collection, tokens, f"round {round_}: child at the end")
            child.ask(op="close")
            db.close()
            db = _open(path, clock)  # loads the snapshot the last closer wrote
            assert_coherent(
                db.vectors.get_collection(COLLECTION), tokens, f"round {round_}: reopened"
            )
            db.close()
    finally:
        child.stop()


def test_a_writer_killed_mid_stream_leaves_indexes_and_snapshots_coherent(
    tmp_path: Path, soak: bool
) -> None:
    for round_ in range(10 if soak else 3):
        path = str(tmp_path / f"db{round_}")
        clock = FakeClock(START)
        db = _open(path, clock)
        collection = db.vectors.create_collection(COLLECTION, DIM)
        apply(collection, db, clock, ["upsert", "a", 0, "zqfirst", 0, None])
        collection.search(np.ones(DIM), 1)  # this process indexes from here on
        child = Child()
        try:
            child.ask(op="open", path=path, clock=START)
            tokens = ["zqfirst"]
            reply = child.ask(op="stream", seed=round_)
            for i in range(random.Random(round_).randint(30, 300)):
                if reply["op"][0] == "upsert":
                    tokens.append(reply["op"][3])
                if i % 2 == 0:  # catch up now and then, on a few changes at once
                    collection.search(np.ones(DIM), 1)
                reply = child.read()
        finally:
            child.kill()  # kill -9, mid-write as likely as not
        # The tokens of acknowledged writes; a write in flight at the kill may or may not
        # have committed, and the records say which.
        assert_coherent(collection, tokens, f"round {round_}: after the kill")
        clock.advance(5)  # every TTL of the stream has run out
        assert_coherent(collection, tokens, f"round {round_}: after expiry")
        db.close()
        db = _open(path, clock)  # the snapshot this process left
        assert_coherent(db.vectors.get_collection(COLLECTION), tokens, f"round {round_}: reopened")
        db.close()
        fresh = Child()
        try:
            fresh.ask(op="open", path=path, clock=clock())
            with _open(path, clock) as check:
                assert_child_coherent(
                    fresh, check.vectors.get_collection(COLLECTION), tokens, "fresh process"
                )
        finally:
            fresh.stop()


# snapshots of an older format ---------------------------------------------------------------


def test_a_snapshot_of_the_previous_format_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    """A version-1 snapshot (no ``format``) may hold a re-created item's old vector and text
    under the generation its new record has again: it is never loaded."""
    path = str(tmp_path / "db")
    clock = FakeClock(START)
    with _open(path, clock) as db:
        collection = db.vectors.create_collection(COLLECTION, DIM)
        for i, key in enumerate(KEYS):
            apply(collection, db, clock, ["upsert", key, i, "zqfresh", 0, None])
    (pointer,) = glob.glob(os.path.join(path, "indexes", "*", "CURRENT"))
    directory = os.path.dirname(pointer)
    tag = Path(pointer).read_text().strip()
    state_path = os.path.join(directory, f"state-{tag}.msgpack")
    state = msgspec.msgpack.decode(Path(state_path).read_bytes())
    state.pop("format", None)  # as the previous version wrote it
    state["texts"] = ["zqstale common" for _ in state["texts"]]
    Path(state_path).write_bytes(msgspec.msgpack.encode(state))
    with _open(path, clock) as db:
        collection = db.vectors.get_collection(COLLECTION)
        assert collection.text_search("zqstale", 10) == []
        assert {h.id for h in collection.text_search("zqfresh", 10)} == set(KEYS)
        assert db.stats()["indexes"][COLLECTION]["snapshot_sequence"] == 0  # rebuilt
        assert_coherent(collection, ["zqstale", "zqfresh"], "after the rebuild")
