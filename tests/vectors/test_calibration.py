"""Calibration of ``ef`` to a collection's ``target_recall``: when it runs, what it reports,
that it persists, and that searches reach the target with nothing but defaults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import engramdb

DIM = 32


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(0.01)


def uniform(n: int, dim: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed).random((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def recall(found: list[list[engramdb.Hit]], truth: np.ndarray) -> float:
    return float(
        np.mean([len({h.id for h in row} & set(t.tolist())) / 10 for row, t in zip(found, truth)])
    )


def test_calibration_runs_in_the_background_as_the_collection_grows() -> None:
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", DIM, text=False, exact_threshold=200)
        data = uniform(1000, DIM, 1)
        collection.upsert(list(range(150)), data[:150])
        assert collection.stats()["calibrated_size"] is None  # small: searched exactly
        collection.upsert(list(range(150, 300)), data[150:300])
        wait_for(lambda: collection.stats()["calibrated_size"] == 300, 30, "a calibration")
        assert collection.stats()["calibrations"] == 1
        collection.upsert(list(range(300, 400)), data[300:400])  # grew by less than 1.5x
        assert not collection.stats()["calibrating"]
        assert collection.stats()["calibrations"] == 1
        collection.upsert(list(range(400, 460)), data[400:460])  # 460 >= 1.5 x 300
        wait_for(lambda: collection.stats()["calibrated_size"] == 460, 30, "a recalibration")
        stats = collection.stats()
        assert stats["calibrations"] == 2
        assert stats["measured_recall"] >= 0.95
        assert stats["last_calibration_error"] is None


def test_the_calibration_is_persisted_and_reused_after_a_restart(tmp_path: Path) -> None:
    data = uniform(3000, 96, 2)
    with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", 96, text=False, exact_threshold=100)
        collection.upsert(list(range(3000)), data)
        before = collection.calibrate()
        assert before["calibrated_size"] == 3000
    with engramdb.open(tmp_path / "db", durability="none", sweep_interval=None) as db:
        after = db.vectors.get_collection("c").stats()
        assert after["calibrations"] == 0  # nothing measured in this process
        for field in ("ef", "search_mode", "measured_recall", "calibrated_size", "target_recall"):
            assert after[field] == before[field]


def test_without_a_target_the_collection_never_calibrates() -> None:
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection(
            "c", DIM, text=False, exact_threshold=50, target_recall=None, ef_search=40
        )
        collection.upsert(list(range(500)), uniform(500, DIM, 3))
        stats = collection.calibrate()
        assert stats["calibrations"] == 0
        assert stats["calibrating"] is False
        assert stats["ef"] == 40
        assert stats["search_mode"] == "graph"
        assert db.stats()["indexes"]["c"]["target_recall"] is None


def test_a_higher_target_is_reached_too() -> None:
    data = uniform(3100, 128, 4)
    base, queries = data[:3000], data[3000:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection(
            "c", 128, text=False, exact_threshold=100, target_recall=0.99
        )
        collection.upsert(list(range(3000)), base)
        stats = collection.calibrate()
        assert stats["target_recall"] == 0.99
        assert stats["measured_recall"] >= 0.99
        assert recall(collection.search_many(queries, 10, include=[]), truth) >= 0.99


def test_an_explicit_ef_is_used_as_given() -> None:
    # Calibrated collections still take a caller's ef: a tiny beam on uniform data misses
    # neighbours that the calibrated default finds.
    data = uniform(4100, 256, 5)
    base, queries = data[:4000], data[4000:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    with engramdb.open(None, sweep_interval=None) as db:
        collection = db.vectors.create_collection("c", 256, text=False, exact_threshold=100)
        collection.upsert(list(range(4000)), base)
        collection.calibrate()
        default = recall([collection.search(q, 10, include=[]) for q in queries], truth)
        narrow = recall([collection.search(q, 10, ef=10, include=[]) for q in queries], truth)
        assert default >= 0.95
        assert narrow < 0.9
