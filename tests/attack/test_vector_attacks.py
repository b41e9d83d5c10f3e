"""Attacks on the embedding store: its collections, indexes and snapshots.

Each test is one thing a hostile client, a crash or a full disk did to a collection. Crashes
are real ``kill -9`` of a real process; the full disk is ``tests/helpers/failwrite.c``, an
``LD_PRELOAD`` shim that makes writes under a directory fail with ENOSPC. Forged records
are written the only way left to write them, through the internal record API a role uses,
since the generic record API refuses the sets the embedding store reserves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import engramdb
from engramdb import Database, InvalidArgument, NotFound, StorageError
from tests.attack.conftest import wait_for

WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed
SNAPSHOT_EVERY = 20_000  # changes between index snapshots (vectors/state.py)


def _open(path: Path, **options: Any) -> Database:
    options.setdefault("durability", "none")
    options.setdefault("sweep_interval", None)
    return engramdb.open(path, **options)


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32) + 0.01


# dropping a collection ----------------------------------------------------------------------

DROP_CHILD = r"""
import json, sys
import numpy as np
import engramdb

db = engramdb.open(sys.argv[1], durability="none", sweep_interval=None)
collection = db.vectors.create_collection("c", 8, m=4, ef_construction=16)
vectors = np.random.default_rng(1).normal(size=(20_000, 8)).astype(np.float32) + 0.01
collection.upsert(list(range(20_000)), vectors, texts=["orphan text"] * 20_000)
print(json.dumps({"set": getattr(collection, "set_name", "vec.c")}), flush=True)
sys.stdin.readline()
db.vectors.drop_collection("c")
while True:
    db.sweep()  # reclaiming the items, until killed
"""


def test_kill_9_in_the_middle_of_a_drop_leaves_no_items_to_resurrect(tmp_path: Path) -> None:
    path = tmp_path / "db"
    child = subprocess.Popen(
        [sys.executable, "-c", DROP_CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        old_set = json.loads(child.stdout.readline())["set"]
        with _open(path) as watcher:
            assert [i.name for i in watcher.vectors.list_collections()] == ["c"]
            child.stdin.write("go\n")
            child.stdin.flush()
            wait_for(lambda: not watcher.vectors.list_collections(), WAIT, "the drop to commit")
            child.send_signal(signal.SIGKILL)  # as soon as the drop is visible
    finally:
        child.kill()
        child.wait(WAIT)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    with _open(path) as db:
        store = db.vectors
        assert store.list_collections() == []
        with pytest.raises(NotFound):
            store.get_collection("c")
        # The same name again, with another dimension: none of the old items may show.
        again = store.create_collection("c", 4)
        assert again.upsert(["x", "y"], _vectors(2, 4, seed=2)) is not None
        assert again.count() == 2
        assert {h.id for h in again.search(np.ones(4), 100, include=[])} == {"x", "y"}
        assert again.text_search("orphan", 100) == []
        with pytest.raises(InvalidArgument):
            again.upsert(["z"], _vectors(1, 8))  # the old dimension: refused, and not stored
        assert again.get(["z"]) == [None]
        assert again.count() == 2
        # The sweeper resumes the reclaim the crash interrupted.
        for _ in range(100):
            db.sweep()
            if not {old_set, "_collections_dropped"} & set(db.sets()):
                break
        assert old_set not in db.sets()
        assert "_collections_dropped" not in db.sets()
        assert {h.id for h in again.search(np.ones(4), 100, include=[])} == {"x", "y"}


def test_an_upsert_racing_a_drop_in_another_handle_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with _open(path) as writer, _open(path) as dropper:
        collection = writer.vectors.create_collection("c", 4)
        collection.upsert([1], _vectors(1, 4))
        assert dropper.vectors.drop_collection("c") is True
        with pytest.raises(NotFound):
            collection.upsert([2, 3], _vectors(2, 4))
        with pytest.raises(NotFound):
            collection.delete([1])
        dropper.sweep()
        assert not [s for s in writer.sets() if s.startswith("vec.")]
        fresh = writer.vectors.create_collection("c", 4)
        assert fresh.count() == 0
        assert fresh.search(np.ones(4), 10) == []


# forged definitions and items ---------------------------------------------------------------


def _definition(name: str, **changes: Any) -> dict[str, Any]:
    bins = {
        "name": name,
        "dim": 4,
        "metric": "cosine",
        "text": True,
        "m": 16,
        "ef_construction": 200,
        "ef_search": 64,
        "exact_threshold": 4096,
        "uid": "0123456789abcdef",
        "created_at": 0.0,
    }
    return {**bins, **changes}


def test_forged_collection_definitions_break_only_themselves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db"
    escape = tmp_path / "escaped"
    with _open(path) as db:
        good = db.vectors.create_collection("good", 4)
        good.upsert(["a", "b"], _vectors(2, 4), texts=["alpha", "beta"])
        registry = db._internal_records("_collections")
        forged: dict[Any, dict[str, Any]] = {
            "garbage": {"dim": "four", "name": ["x"]},
            "traversal": _definition(f"../../../{escape.name}"),
            "bad-uid": _definition("bad-uid", uid="../../escaped"),
            "no-dim": _definition("no-dim", dim=0),
            "odd-layout": _definition("odd-layout", layout=99),
            7: _definition("seven"),
        }
        for key, bins in forged.items():
            registry.put(key, bins)
        with caplog.at_level(logging.WARNING, logger="engramdb.vectors"):
            assert [i.name for i in db.vectors.list_collections()] == ["good"]
        assert "corrupt definition" in caplog.text
        for name in ("garbage", "traversal", "bad-uid", "no-dim", "odd-layout"):
            with pytest.raises(StorageError, match="corrupt definition"):
                db.vectors.get_collection(name)
        assert {h.id for h in good.search(np.ones(4), 10, include=[])} == {"a", "b"}
        assert [h.id for h in good.text_search("alpha", 10)] == ["a"]
        assert db.vectors.drop_collection("bad-uid") is True
        db.sweep()
    assert not escape.exists()
    for entry in os.listdir(path / "indexes"):
        assert entry.startswith("vec."), entry
    with _open(path) as db:  # and from the snapshots
        good = db.vectors.get_collection("good")
        assert {h.id for h in good.search(np.ones(4), 10, include=[])} == {"a", "b"}


def test_forged_items_are_skipped_not_fatal_to_searches(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with _open(path) as db:
        collection = db.vectors.create_collection("c", 4)
        good = _vectors(3, 4)
        collection.upsert(["a", "b", "c"], good, metadata=[{"g": 1}] * 3, texts=["word alpha"] * 3)
        items = db._internal_records(collection.set_name)
        forged: dict[Any, dict[str, Any]] = {
            "text-vector": {"vector": "abcd", "metadata": {"g": 1}, "text": "word"},
            "short": {"vector": [1.0, 2.0], "metadata": {"g": 1}, "text": "word"},
            "nan": {"vector": [float("nan")] * 4, "metadata": {"g": 1}},
            "list-metadata": {"vector": [1.0] * 4, "metadata": [1, 2], "text": "word"},
            "int-text": {"vector": [1.0] * 4, "metadata": {"g": 1}, "text": 5},
            "nothing": {"other": 1},
            "c": {"vector": [1.0] * 3, "metadata": {"g": 1}},  # replaces a good item
        }
        for key, bins in forged.items():
            items.put(key, bins)
        expected = {"a", "b"}
        assert {h.id for h in collection.search(np.ones(4), 50, include=[])} == expected
        found = collection.search(np.ones(4), 50, filter={"g": 1}, include=[])
        assert {h.id for h in found} == expected
        assert {h.id for h in collection.text_search("word", 50, include=[])} == expected
        hybrid = collection.hybrid_search("word", np.ones(4), 50, include=[])
        assert {h.id for h in hybrid} == expected
        assert db.stats()["indexes"]["c"]["skipped_items"] == len(forged)
        collection.upsert(["d"], _vectors(1, 4, seed=9))  # writes still index
        assert "d" in {h.id for h in collection.search(np.ones(4), 50, include=[])}
    with _open(path) as db:  # rebuilt or loaded: the same answer
        collection = db.vectors.get_collection("c")
        found = {h.id for h in collection.search(np.ones(4), 50, include=[])}
        assert found == {"a", "b", "d"}


# bad vectors ----------------------------------------------------------------------------------

BAD_VECTORS: dict[str, Any] = {
    "complex-list": [1 + 2j, 0.0, 1.0, 0.0],
    "complex-array": np.array([1 + 2j, 0, 1, 0]),
    "numeric-strings": ["1", "2", "3", "4"],
    "huge-int": [10**400, 1, 1, 1],
    "beyond-float32": [1e300, 1.0, 1.0, 1.0],
    "infinity": [float("inf"), 1.0, 1.0, 1.0],
    "nan": [float("nan"), 1.0, 1.0, 1.0],
    "zero": [0.0, 0.0, 0.0, 0.0],
    "none": None,
    "none-inside": [1.0, None, 1.0, 1.0],
    "dict": {"a": 1},
    "bytes": b"abcd",
    "set": {1.0, 2.0, 3.0, 4.0},
    "empty": [],
    "wrong-dim": [1.0, 2.0, 3.0],
    "ragged": [[1.0, 2.0, 3.0, 4.0], [1.0]],
    "three-d": np.ones((1, 1, 4)),
    "dates": np.array(["2020-01-01"] * 4, dtype="datetime64[D]"),
    "durations": np.array([1, 2, 3, 4], dtype="timedelta64[s]"),
    "booleans": [True, False, True, True],
    "nested-strings": [["a", "b", "c", "d"]],
}


@pytest.mark.parametrize("value", list(BAD_VECTORS.values()), ids=list(BAD_VECTORS))
def test_bad_vectors_are_invalid_arguments_never_library_errors(db: Database, value: Any) -> None:
    collection = db.vectors.create_collection("c", 4)
    collection.upsert(["kept"], np.ones((1, 4)), texts=["kept"])
    calls = {
        "upsert": lambda: collection.upsert(["x"], [value]),
        "upsert-matrix": lambda: collection.upsert(["x"], value),
        "search": lambda: collection.search(value, 1),
        "search_many": lambda: collection.search_many([value], 1),
        "hybrid_search": lambda: collection.hybrid_search("kept", value, 1),
    }
    for name, call in calls.items():
        try:
            call()
        except InvalidArgument:
            continue
        except Exception as e:
            pytest.fail(f"{name} raised {type(e).__name__}: {e}")
        if name.startswith("upsert"):
            pytest.fail(f"{name} accepted {value!r}")
    assert collection.count() == 1
    assert collection.get(["x"]) == [None]


def test_a_hybrid_search_with_no_query_vector_is_an_invalid_argument(db: Database) -> None:
    collection = db.vectors.create_collection("c", 4)
    collection.upsert(["kept"], np.ones((1, 4)), texts=["kept"])
    for value in (np.zeros((0, 4)), np.ones((2, 4))):
        with pytest.raises(InvalidArgument):
            collection.hybrid_search("kept", value, 1)


@pytest.mark.parametrize("name", ["complex-list", "huge-int", "beyond-float32", "none-inside",
                                  "dates", "numeric-strings", "wrong-dim", "zero"])  # fmt: skip
def test_bad_memory_embeddings_are_invalid_arguments(db: Database, name: str) -> None:
    memory = db.memory
    with pytest.raises(InvalidArgument):
        memory.add("a fact", user_id="u", embedding=BAD_VECTORS[name])
    with pytest.raises(InvalidArgument):
        memory.search("a fact", user_id="u", embedding=BAD_VECTORS[name])
    assert memory.list(user_id="u")[0] == []


# a full disk --------------------------------------------------------------------------------


def test_a_snapshot_that_cannot_be_written_is_not_a_failed_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A regular file where the snapshot directories go: every snapshot fails with a real
    OSError, on the write path and at close."""
    path = tmp_path / "db"
    db = _open(path)
    (path / "indexes").write_text("not a directory")
    collection = db.vectors.create_collection("c", 8, m=4, ef_construction=16)
    n = SNAPSHOT_EVERY + 500
    with caplog.at_level(logging.WARNING, logger="engramdb.vectors"):
        generations = collection.upsert(list(range(n)), _vectors(n, 8))
    assert len(generations) == n
    figures = db.stats()["indexes"]["c"]
    assert figures["snapshot_failures"] >= 1
    assert figures["last_snapshot_error"]
    assert figures["snapshot_sequence"] == 0
    assert "could not save the index snapshot" in caplog.text
    collection.upsert([n], _vectors(1, 8, seed=5))  # one more change to snapshot at close
    db.close()  # its snapshot fails too: logged, not raised
    # Everything was released: the same path opens again, even with another durability.
    with engramdb.open(path, durability="sync", sweep_interval=None) as again:
        collection = again.vectors.get_collection("c")
        assert collection.count() == n + 1
        assert [h.id for h in collection.search(_vectors(1, 8, seed=5)[0], 1)] == [n]


FULL_DISK_CHILD = r"""
import ctypes, json, logging, os, sys
import numpy as np
import engramdb

path, trigger, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
refusals = ctypes.CDLL(None).engram_failwrite_refusals  # AttributeError: no shim
report = {}

def attempt(fn):
    try:
        fn()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "ok"

logging.basicConfig(level=logging.WARNING)
db = engramdb.open(path, durability="none", sweep_interval=None)
collection = db.vectors.create_collection("c", 8, m=4, ef_construction=16)
open(trigger, "w").close()  # the disk is full from now on (for the snapshots)
n = every + 500
vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32) + 0.01
report["upsert"] = attempt(lambda: collection.upsert(list(range(n)), vectors))
report["memory_add"] = attempt(lambda: db.memory.add("the sky is blue", user_id="u"))
figures = db.stats()["indexes"]
report["failures"] = {name: f["snapshot_failures"] for name, f in figures.items()}
report["errors"] = {name: f["last_snapshot_error"] for name, f in figures.items()}
report["close"] = attempt(db.close)
report["refusals"] = refusals()
os.remove(trigger)
def reopen():
    with engramdb.open(path, durability="sync", sweep_interval=None) as again:
        report["count"] = again.vectors.get_collection("c").count()
        report["memories"] = len(again.memory.list(user_id="u")[0])
report["reopen"] = attempt(reopen)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def failwrite(preload_shim: Callable[[str], Path]) -> Path:
    return preload_shim("failwrite")


def test_a_full_disk_during_index_snapshots_fails_no_write_and_no_close(
    failwrite: Path, tmp_path: Path
) -> None:
    path = tmp_path / "db"
    trigger = tmp_path / "disk-full"
    preload = ":".join(p for p in (str(failwrite), os.environ.get("LD_PRELOAD", "")) if p)
    env = {
        **os.environ,
        "LD_PRELOAD": preload,
        "ENGRAM_FAIL_WRITE_UNDER": str(path / "indexes"),
        "ENGRAM_FAIL_WRITE_TRIGGER": str(trigger),
    }
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(path), str(trigger), str(SNAPSHOT_EVERY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["upsert"] == "ok"
    assert report["memory_add"] == "ok"
    assert report["close"] == "ok"
    assert report["reopen"] == "ok"
    assert report["refusals"] >= 2  # the shim really refused the snapshots' files
    assert report["failures"]["c"] >= 1
    assert "No space left on device" in report["errors"]["c"]
    assert all(count >= 1 for count in report["failures"].values())  # the memories' too
    assert report["count"] == SNAPSHOT_EVERY + 500
    assert report["memories"] == 1
    assert "could not save the index snapshot" in child.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_whose_snapshots_fail_acknowledges_writes_and_reports_the_failures(
    serve: Any, tmp_path: Path
) -> None:
    data = tmp_path / "db"
    data.mkdir()
    (data / "indexes").write_text("not a directory")  # every snapshot fails
    metrics_port = _free_port()
    server = serve("--metrics-port", str(metrics_port), "--durability", "none")
    n = SNAPSHOT_EVERY + 500
    vectors = _vectors(n, 8)
    with engramdb.connect(server.url) as db:
        collection = db.vectors.create_collection("c", 8, m=4, ef_construction=16)
        for start in range(0, n, 5000):
            end = min(n, start + 5000)
            assert (
                len(collection.upsert(list(range(start, end)), vectors[start:end])) == end - start
            )
        assert collection.count() == n
        figures = db.stats()["indexes"]["c"]
        assert figures["snapshot_failures"] >= 1
        assert figures["last_snapshot_error"]
    r = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        assert r.info("indexes")["index_c"]["snapshot_failures"] >= 1
    finally:
        r.close()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    failures = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "engramdb_index_snapshot_failures"
        and sample.labels == {"collection": "c"}
    ]
    assert len(failures) == 1
    assert failures[0] >= 1


# the sweeper ----------------------------------------------------------------------------------


def test_the_background_sweeper_reclaims_a_dropped_collection(tmp_path: Path) -> None:
    with _open(tmp_path / "db", sweep_interval=0.01) as db:
        collection = db.vectors.create_collection("c", 4)
        collection.upsert(list(range(2500)), _vectors(2500, 4))
        items = collection.set_name
        assert db.vectors.drop_collection("c") is True
        wait_for(lambda: items not in db.sets(), WAIT, "the sweeper to reclaim the items")
        wait_for(lambda: "_collections_dropped" not in db.sets(), WAIT, "the marker to go")


def test_leftovers_of_an_interrupted_legacy_drop_are_reclaimed(tmp_path: Path) -> None:
    """Items an older version left in ``vec.<name>`` after losing the definition (its drop
    deleted the definition first) never reach a collection created under that name, and
    the sweeper reclaims them."""
    path = tmp_path / "db"
    with _open(path) as db:
        leftovers = db._internal_records("vec.c")
        for i in range(50):
            leftovers.put(i, {"vector": _vectors(1, 8, seed=i)[0], "metadata": {}})
        again = db.vectors.create_collection("c", 4)
        again.upsert(["x"], _vectors(1, 4))
        assert {h.id for h in again.search(np.ones(4), 100, include=[])} == {"x"}
        db.sweep()
        db.sweep()
        assert "vec.c" not in db.sets()
        assert again.count() == 1


def test_a_collection_of_the_legacy_layout_keeps_working_and_drops_cleanly(
    tmp_path: Path,
) -> None:
    """A database written before collections had a set per incarnation: the definition
    without ``layout``, the items in ``vec.<name>``."""
    path = tmp_path / "db"
    with _open(path) as db:
        db._internal_records("_collections").put("old", _definition("old"))
        items = db._internal_records("vec.old")
        for i, vector in enumerate(_vectors(20, 4)):
            items.put(i, {"vector": vector, "metadata": {"i": i}, "text": f"item {i}"})
    with _open(path) as db:
        old = db.vectors.get_collection("old")
        assert old.set_name == "vec.old"
        assert old.count() == 20
        assert len(old.search(np.ones(4), 100)) == 20
        assert [h.id for h in old.text_search("item 7", 1)] == [7]
        old.upsert([20], _vectors(1, 4, seed=3))
        assert old.count() == 21
        db.vectors.drop_collection("old")
        fresh = db.vectors.create_collection("old", 4)
        assert fresh.set_name != "vec.old"
        assert fresh.count() == 0
        db.sweep()
        assert "vec.old" not in db.sets()


def test_a_process_closing_after_a_drop_elsewhere_writes_no_snapshot_of_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    with _open(path) as db, _open(path) as other:
        collection = db.vectors.create_collection("c", 4)
        collection.upsert([1], _vectors(1, 4))  # db has an index of it, not yet saved
        other.vectors.drop_collection("c")
        other.sweep()
        db.close()  # would save a snapshot of the dropped collection
        assert not (path / "indexes").exists() or os.listdir(path / "indexes") == []
