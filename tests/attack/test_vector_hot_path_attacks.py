"""Attacks on the vector hot path: hits served from the index, single-query shortcuts, and
the background calibration of ``ef`` (racing writes, drops and closes)."""

from __future__ import annotations

import datetime as dt
import glob
import os
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import engramdb
from engramdb import InvalidArgument, NotFound
from engramdb.vectors.state import RWLock
from tests.attack.conftest import wait_for

DIM = 48


def uniform(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).random((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def calibration_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("engramdb-calibrate-")]


def test_calibration_racing_deletes_and_upserts_never_brings_a_deleted_item_back() -> None:
    data = uniform(6000)
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, text=False, exact_threshold=100)
        collection.upsert(list(range(3000)), data[:3000])
        errors: list[BaseException] = []
        done = threading.Event()

        def calibrate_forever() -> None:
            try:
                while not done.is_set():
                    collection.calibrate()
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=calibrate_forever)
        thread.start()
        deleted: set[int] = set()
        try:
            for step in range(30):
                gone = list(range(step * 100, step * 100 + 50))
                collection.delete(gone)
                deleted.update(gone)
                fresh = list(range(3000 + step * 100, 3000 + step * 100 + 100))
                collection.upsert(fresh, data[fresh])
                for query in data[gone[:5]]:
                    found = {h.id for h in collection.search(query, 10, include=[])}
                    assert not found & deleted
        finally:
            done.set()
            thread.join(60)
        assert not errors
        stats = collection.calibrate()
        assert stats["last_calibration_error"] is None
        assert stats["calibrated_size"] == stats["items_indexed"]
        hits = collection.search_many(data[:200], 10, include=["metadata", "vector"])
        assert not {h.id for row in hits for h in row} & deleted


def test_dropping_a_collection_mid_calibration_leaves_nothing_behind() -> None:
    data = uniform(8000)
    with engramdb.open(None, sweep_interval=None) as db:
        for round_ in range(5):
            collection = db.vectors.create_collection("c", DIM, text=False, exact_threshold=100)
            collection.upsert(list(range(8000)), data)
            outcome: list[Any] = []

            def calibrate(collection: Any = collection, outcome: list[Any] = outcome) -> None:
                try:
                    outcome.append(collection.calibrate())
                except BaseException as e:
                    outcome.append(e)

            thread = threading.Thread(target=calibrate)
            thread.start()
            assert db.vectors.drop_collection("c")
            thread.join(60)
            assert not thread.is_alive()
            # Finished before the drop, or refused after it: never another error.
            assert isinstance(outcome[0], dict | NotFound), outcome
            again = db.vectors.create_collection("c", DIM, text=False, exact_threshold=100)
            stats = again.stats()
            assert stats["calibrated_size"] is None, f"round {round_}: inherited a calibration"
            assert stats["calibrations"] == 0
            assert db.vectors.drop_collection("c")
        wait_for(lambda: not calibration_threads(), 10, "calibration threads to end")


def test_closing_the_database_mid_calibration_stops_its_thread(tmp_path: Path) -> None:
    data = uniform(20_000, 96)
    db = engramdb.open(tmp_path / "db", durability="none", sweep_interval=None)
    collection = db.vectors.create_collection("c", 96, text=False, exact_threshold=100)
    for start in range(0, 20_000, 5000):
        collection.upsert(list(range(start, start + 5000)), data[start : start + 5000])
    db.close()  # whatever calibration is running is abandoned, and joined
    assert not calibration_threads()
    with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as again:
        hits = again.vectors.get_collection("c").search(data[7], 1, include=[])
        assert hits[0].id == 7


def test_a_caller_cannot_change_the_index_through_a_hit() -> None:
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, exact_threshold=10)
        data = uniform(200)
        collection.upsert(
            list(range(200)),
            data,
            [{"tags": ["x"], "nested": {"n": i}} for i in range(200)],
            [f"doc {i}" for i in range(200)],
        )
        hit = collection.search(data[3], 1, include=["metadata", "text", "vector"])[0]
        hit.metadata["tags"].append("injected")
        hit.metadata["nested"]["n"] = -1
        hit.metadata["new"] = True
        np.asarray(hit.vector)[:] = 0  # a writable copy, or a read-only array
        again = collection.search(data[3], 1, include=["metadata", "vector"])[0]
        assert again.metadata == {"tags": ["x"], "nested": {"n": 3}}
        assert np.array_equal(np.asarray(again.vector), np.asarray(collection.get([3])[0].vector))
        assert collection.count({"tags": "injected"}) == 0
        assert collection.count({"nested.n": -1}) == 0


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(lambda v: v.astype(np.float64), id="float64"),
        pytest.param(lambda v: v.tolist(), id="list"),
        pytest.param(lambda v: np.repeat(v, 2)[::2], id="strided view"),
        pytest.param(lambda v: v * 1000, id="unnormalised"),
    ],
)
def test_every_form_of_a_query_gets_the_same_hits(query: Any) -> None:
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, text=False, exact_threshold=10)
        data = uniform(3000)
        collection.upsert(list(range(3000)), data)
        plain = collection.search(data[11], 10, include=[])
        other = collection.search(query(data[11]), 10, include=[])
        assert [h.id for h in other] == [h.id for h in plain]
        assert np.allclose([h.score for h in other], [h.score for h in plain], atol=1e-5)
        assert plain[0].id == 11
        assert plain[0].score <= 1.0


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(np.full(DIM, np.nan, dtype=np.float32), id="nan"),
        pytest.param(np.zeros(DIM, dtype=np.float32), id="zero"),
        pytest.param(np.full(DIM, 3e38, dtype=np.float32), id="overflows float32 norm"),
        pytest.param(np.full(DIM, 1e-30, dtype=np.float32), id="underflows float32 norm"),
        pytest.param(np.ones(DIM + 1, dtype=np.float32), id="wrong dim"),
        pytest.param(np.ones((2, DIM), dtype=np.float32), id="two rows"),
        pytest.param(np.full(DIM, np.inf, dtype=np.float32), id="inf"),
    ],
)
def test_bad_single_queries_are_refused_on_the_fast_path(query: np.ndarray) -> None:
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, text=False, exact_threshold=10)
        collection.upsert(list(range(100)), uniform(100))
        if query.shape == (DIM,) and np.isfinite(query).all() and query.any():
            # Huge or tiny but finite: a direction like any other, with proper scores.
            hits = collection.search(query, 3, include=[])
            direction = np.full(DIM, 1.0, dtype=np.float32)
            expected = collection.search(direction, 3, include=[])
            assert [h.id for h in hits] == [h.id for h in expected]
            assert np.allclose([h.score for h in hits], [h.score for h in expected], atol=1e-5)
            return
        with pytest.raises(InvalidArgument):
            collection.search(query, 3)


RICH_METADATA: list[dict[str, Any]] = [
    {},
    {"big": 2**63 - 1, "small": -(2**63), "f": 0.1, "yes": True, "none": None},
    {"blob": b"\x00\xff", "word": "zürich ✓", "empty": "", "list": [1, [2, [3]], {"k": []}]},
    {"at": dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC), "array": np.arange(4.0)},
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b)) and np.asarray(a).dtype == np.asarray(b).dtype
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "include",
    [("metadata", "text"), ["metadata"], ["metadata", "vector"], ["metadata", "text", "vector"]],
)
def test_every_kind_of_metadata_comes_back_from_a_hit_as_get_returns_it(
    tmp_path: Path, include: Any
) -> None:
    """Hits carry the index's own copy of the metadata (packed, decoded per hit): it must be
    what ``get`` reads from the record, value for value and type for type, before and after
    the index is reloaded from its snapshot."""
    data = uniform(len(RICH_METADATA))
    ids = list(range(len(RICH_METADATA)))
    for reopen in (False, True):
        with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as db:
            if reopen:
                collection = db.vectors.get_collection("c")
            else:
                collection = db.vectors.create_collection("c", DIM, exact_threshold=1)
                collection.upsert(ids, data, RICH_METADATA, [f"doc {i}" for i in ids])
            stored = {item.id: item.metadata for item in collection.get(ids) if item}
            for i in ids:
                if include == ("metadata", "text"):
                    hit = collection.search(data[i], 1)[0]
                else:
                    hit = collection.search(data[i], 1, include=include)[0]
                assert hit.id == i
                assert _same(hit.metadata, stored[i]), (hit.metadata, stored[i])
                assert _same(hit.metadata, RICH_METADATA[i])
            fused = collection.hybrid_search("doc", data[3], 4)
            assert {h.id for h in fused} == set(ids)
            for hit in fused:
                assert _same(hit.metadata, stored[hit.id])
            if reopen:
                assert db.stats()["indexes"]["c"]["snapshot_sequence"] > 0  # from the snapshot


def _snapshot_state(path: Path) -> tuple[Path, dict[str, Any]]:
    (pointer,) = glob.glob(os.path.join(path, "indexes", "*", "CURRENT"))
    tag = Path(pointer).read_text().strip()
    state_path = Path(os.path.dirname(pointer)) / f"state-{tag}.msgpack"
    return state_path, msgspec.msgpack.decode(state_path.read_bytes())


def _filled(path: Path) -> np.ndarray:
    data = uniform(300)
    with engramdb.open(path, durability="none", sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, exact_threshold=10)
        collection.upsert(list(range(300)), data, [{"n": i, "odd": i % 2} for i in range(300)])
    return data


def test_a_snapshot_from_before_metadata_was_packed_is_loaded_with_its_metadata(
    tmp_path: Path,
) -> None:
    """A format-2 snapshot (metadata as maps) is as trustworthy as a current one: loaded,
    not rebuilt, and it serves the same metadata and filters."""
    data = _filled(tmp_path / "db")
    state_path, state = _snapshot_state(tmp_path / "db")
    assert state["format"] == 3
    state["format"] = 2
    state["metadata"] = [
        None if m is None else msgspec.msgpack.decode(m) for m in state["metadata"]
    ]
    state_path.write_bytes(msgspec.msgpack.encode(state))
    with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as db:
        collection = db.vectors.get_collection("c")
        hit = collection.search(data[41], 1)[0]
        assert (hit.id, hit.metadata) == (41, {"n": 41, "odd": 1})
        assert collection.count({"odd": 1}) == 150
        assert db.stats()["indexes"]["c"]["snapshot_sequence"] > 0  # loaded, not rebuilt


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(b"\xc1", id="not msgpack"),
        pytest.param(msgspec.msgpack.encode([1, 2]), id="a packed list"),
        pytest.param(msgspec.msgpack.encode({"n": 1}) + b"\x00", id="trailing bytes"),
        pytest.param(None, id="missing for a live item"),
        pytest.param({"n": -1}, id="a map in a current-format snapshot"),
    ],
)
def test_forged_packed_metadata_in_a_snapshot_is_rebuilt_not_served(
    tmp_path: Path, forged: Any
) -> None:
    data = _filled(tmp_path / "db")
    state_path, state = _snapshot_state(tmp_path / "db")
    state["metadata"][41] = forged
    state_path.write_bytes(msgspec.msgpack.encode(state))
    with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as db:
        collection = db.vectors.get_collection("c")
        hit = collection.search(data[41], 1)[0]
        assert (hit.id, hit.metadata) == (41, {"n": 41, "odd": 1})
        assert collection.count({"odd": 1}) == 150
        assert db.stats()["indexes"]["c"]["snapshot_sequence"] == 0  # rebuilt


def test_the_index_lock_lets_searches_share_it_and_keeps_writers_exclusive() -> None:
    lock = RWLock()
    order: list[str] = []
    writer_in, writer_go = threading.Event(), threading.Event()

    def write() -> None:
        with lock.write():
            order.append("write")
            writer_in.set()
            writer_go.wait(10)
        order.append("write done")

    def read(name: str) -> None:
        with lock.read():
            order.append(name)

    with lock.read(), lock.read():  # readers share (the same thread twice, too)
        writer = threading.Thread(target=write)
        writer.start()
        assert not writer_in.wait(0.2)  # it waits for both readers to leave
    assert writer_in.wait(10)
    reader = threading.Thread(target=read, args=("late reader",))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # a reader arriving during the write waits for it
    writer_go.set()
    writer.join(10)
    reader.join(10)
    assert order[0] == "write"
    assert sorted(order[1:]) == ["late reader", "write done"]
    with lock.write():  # and everything is released
        pass
