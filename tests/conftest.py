"""Shared fixtures.

``db`` is the contract fixture: the same tests run against every placement of the API
(the in-memory engine and the LMDB engine today; the network client joins later). Tests use
a ``FakeClock`` and never sleep for TTLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import engramdb
from engramdb import Database, FakeClock

ENGINES = ["memory", "lmdb"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long soak and crash loops (e.g. 1000 kill -9 cycles instead of 20)",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


OpenDb = Callable[..., Database]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_db(engine_name: str, tmp_path: Path, clock: FakeClock) -> Iterator[OpenDb]:
    """Opens databases on the engine under test; closes them all afterwards."""
    opened: list[Database] = []

    def _open(**options: Any) -> Database:
        options.setdefault("clock", clock)
        options.setdefault("sweep_interval", None)
        if engine_name == "memory":
            db = engramdb.open(None, **options)
        else:
            options.setdefault("durability", "none")
            db = engramdb.open(tmp_path / "db", **options)
        opened.append(db)
        return db

    yield _open
    for db in opened:
        db.close()


@pytest.fixture
def db(open_db: OpenDb) -> Database:
    return open_db()
