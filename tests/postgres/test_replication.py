"""A primary with a real streaming standby (``pg_basebackup``), synchronous replication
to it, replica reads that keep read-your-writes, and a failover by promotion that loses no
acknowledged write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import engramdb
from tests.postgres.conftest import wait_for


@pytest.fixture
def pair(own_postgres: Any) -> Iterator[tuple[Any, Any]]:
    """(primary, standby): the standby streams from the primary, which waits for it on
    every commit (synchronous_standby_names); the standby applies WAL 300 ms late, so a
    read from it right after a commit would miss the commit without the LSN wait."""
    from engramdb.cluster.local import LocalPostgres

    primary = own_postgres
    standby = LocalPostgres(
        fsync=False,
        standby_of=primary,
        settings={"cluster_name": "standby1", "recovery_min_apply_delay": "300ms"},
    )
    try:
        standby.start()
    except engramdb.EngramError as e:
        pytest.skip(f"no standby could start here: {e}")
    try:
        # Set after the base backup, so the standby does not inherit it: promoted, it must
        # not wait for a standby of its own (with Patroni, Patroni manages this setting).
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        primary.psql("SELECT pg_reload_conf()")
        wait_for(
            lambda: primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync",
            30,
            "the standby to become synchronous",
        )
        yield primary, standby
    finally:
        standby.close()


def _url(primary: Any, standby: Any, **params: str) -> str:
    # The standby is listed first: writes must still find the primary.
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"postgresql://postgres@{standby.address},{primary.address}/engramdb?{query}"


def test_replica_reads_wait_for_the_callers_last_commit(pair: tuple[Any, Any]) -> None:
    primary, standby = pair
    url = _url(primary, standby, read_from="replica", replica_wait="5")
    with engramdb.open(url, sweep_interval=None) as db:
        s = db.records("s")
        for i in range(3):
            generation = s.put(f"k{i}", {"i": i})
            found = s.get(f"k{i}")  # from the standby, once it replayed this commit
            assert found is not None
            assert found.generation == generation
            assert s.count() == i + 1
        engine = db.stats()["engine"]
        assert engine["replica_reads"] >= 6, str(engine)
        assert engine["replica_fallbacks"] == 0
        assert engine["server"] == standby.address


def test_replica_reads_fall_back_to_the_leader_when_the_standby_lags(
    pair: tuple[Any, Any],
) -> None:
    primary, standby = pair
    url = _url(primary, standby, read_from="replica", replica_wait="0.01")
    with engramdb.open(url, sweep_interval=None) as db:
        s = db.records("s")
        generation = s.put("k", {"v": 1})
        found = s.get("k")  # the standby is 300 ms behind: read from the leader
        assert found is not None
        assert found.generation == generation
        assert db.stats()["engine"]["replica_fallbacks"] >= 1


def test_failover_to_the_promoted_standby_loses_no_acknowledged_write(
    pair: tuple[Any, Any],
) -> None:
    primary, standby = pair
    url = _url(primary, standby, failover_timeout="30")
    with engramdb.open(url, sweep_interval=None) as db:
        s = db.records("s")
        acknowledged = {f"k{i}": s.put(f"k{i}", {"i": i}) for i in range(50)}
        primary.kill()
        standby.psql("SELECT pg_promote()")
        # The next write finds the new leader by itself (libpq multi-host, read-write).
        acknowledged["after"] = s.put("after", {"i": -1})
        found = s.get_many(list(acknowledged))
        assert [r.generation if r else None for r in found] == list(acknowledged.values())
        assert db.last_sequence() == 51
        assert db.stats()["engine"]["server"] == standby.address
