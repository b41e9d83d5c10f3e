"""Attacks on the vector hot path: hits served from the index, single-query shortcuts, and
the background calibration of ``ef`` (racing writes, drops and closes)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engramdb
from engramdb import InvalidArgument, NotFound
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
