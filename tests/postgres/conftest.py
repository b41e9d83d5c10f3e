"""Fixtures of the PostgreSQL engine suite: real PostgreSQL servers from the bundled
binaries (``engramdb.cluster.local``), real ``engramdb serve`` fronts, real ``kill -9``.

``postgres_server``/``postgres_url`` (tests/conftest.py) give a fresh schema on the shared
server; ``own_postgres`` starts a server for one test alone, for tests that crash it or
change its settings. Everything is skipped, never failed, where PostgreSQL cannot start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import engramdb
from tests.server_faults.conftest import Served, ServeFactory, serve, wait_for

__all__ = ["ServeFactory", "Served", "serve", "wait_for"]


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL server for this test alone (no fsync: only processes crash here)."""
    try:
        import psycopg  # noqa: F401

        from engramdb.cluster.local import LocalPostgres
    except ImportError as e:
        pytest.skip(f"needs the postgres and cluster extras: {e}")
    try:
        server = LocalPostgres(fsync=False).start()
    except engramdb.EngramError as e:
        pytest.skip(f"no local PostgreSQL could start here: {e}")
    try:
        yield server
    finally:
        server.close()
