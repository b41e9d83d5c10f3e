"""Failover under writes, through engramdb's postgres engine (routing by Patroni's REST API):
no acknowledged write is lost and the compare-and-set histories stay linearizable, whether
the leader's node crashes (kill -9 of Patroni and postgres), its postmaster alone crashes,
or leadership is handed over. Strict synchronous mode holds commits when no standby is left
rather than acknowledge them alone.

Short versions run in the suite; ``--soak`` repeats each fault (10 node crashes).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import engramdb
from engramdb.audit.linearizability import check
from tests.cluster.workload import WRITES, Results, Workload

pytestmark = pytest.mark.cluster


def _verify(cluster: Any, results: Results) -> None:
    """Every acknowledged write is on the (new) leader; the histories are linearizable;
    every error the clients saw came from engramdb's error tree."""
    assert results.acked, "no write was acknowledged"
    with engramdb.open(cluster.url) as db:
        found = db.records(WRITES).get_many(results.acked)
    lost = [key for key, record in zip(results.acked, found) if record is None]
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    verdict = check(results.operations)
    assert verdict.linearizable is True, (
        f"not linearizable: failed {verdict.failed_keys}, undecided {verdict.undecided_keys}; "
        f"e.g. {verdict.example[:6]}"
    )
    assert results.leaked == [], f"errors outside engramdb's tree: {results.leaked[:3]}"


def _under_writes(cluster: Any, rounds: int, fault: Callable[[], None]) -> Results:
    """Run ``fault`` ``rounds`` times while writers and CAS clients run; each round waits for
    writes to flow again and the cluster to heal before the next."""
    with Workload(cluster.url) as workload:
        workload.wait_acked(100)
        for _ in range(rounds):
            fault()
            workload.wait_acked(100)  # writes go through again, to the new leader
            cluster.wait_healthy()
            workload.wait_acked(50)
        return workload.stop()


@pytest.mark.timeout(1800)  # --soak: 10 crashes, each a ~20 s outage and a rejoin
def test_leader_node_crash_under_writes_loses_no_acknowledged_write(
    healthy: Any, soak: bool
) -> None:
    cluster = healthy

    def crash_leader_node() -> None:
        old = cluster.kill_leader_node()
        new = cluster.wait_leader(other_than=old)
        assert new != old
        cluster.start_node(old)  # it rejoins as a replica (pg_rewind if it had diverged)

    results = _under_writes(cluster, 10 if soak else 1, crash_leader_node)
    _verify(cluster, results)


@pytest.mark.timeout(900)
def test_leader_postgres_crash_under_writes_loses_no_acknowledged_write(
    healthy: Any, soak: bool
) -> None:
    # Patroni restarts the postmaster in place and keeps the leader key.
    results = _under_writes(healthy, 5 if soak else 1, healthy.kill_leader_postgres)
    _verify(healthy, results)


@pytest.mark.timeout(900)
def test_a_standby_left_behind_is_not_promoted_over_one_ahead_which_streams_on_unrewound(
    healthy: Any, tmp_path: Path
) -> None:
    """When the leader dies, its last WAL may have reached one standby and not the other.
    Promoting the one behind leaves the other diverged: it must be pg_rewind-ed before it
    streams again, and strict mode holds every commit meanwhile (writes came back 5-10 s
    after the election, once in 10 node crashes). Here the leader's WAL sender to one
    standby (the one a commit waits for, if there is just one) is stopped before the crash:
    the standby ahead is promoted, and the one behind streams on without a rewind."""
    from engramdb.cluster.patroni import SYNC_ROLES
    from engramdb.cluster.timeline import Timeline

    cluster = healthy
    members = cluster.members()
    leader = next(m.name for m in members if m.role == "leader")
    behind = next(m.name for m in members if m.role in SYNC_ROLES)
    ahead = next(m.name for m in members if m.name not in (leader, behind))
    with Workload(cluster.url) as workload:
        workload.wait_acked(50)
        with psycopg.connect(cluster.dsn(leader, superuser=True), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_replication WHERE application_name = %s", [behind]
            ).fetchone()
        assert row is not None, f"{behind} does not stream from {leader}"
        timeline = Timeline(cluster).start()
        try:
            os.kill(row[0], signal.SIGSTOP)  # dies stopped with the leader's node below
            time.sleep(0.5)  # writes go on: WAL reaches the other standby only
            assert cluster.kill_leader_node() == leader
            new = cluster.wait_leader(other_than=leader)
            workload.wait_acked(100)
            cluster.start_node(leader)
            cluster.wait_healthy()
        finally:
            timeline.stop()
            timeline.keep_logs(tmp_path)
        results = workload.stop()
    assert new == ahead, f"{new} was promoted, though {ahead} had more WAL"
    said = (tmp_path / f"{behind}-patroni.log").read_text()
    assert "pg_rewind" not in said, f"{behind} was rewound:\n{said[-2000:]}"
    _verify(cluster, results)


@pytest.mark.timeout(900)
def test_switchover_under_writes_loses_no_acknowledged_write(healthy: Any, soak: bool) -> None:
    leaders: list[str] = []

    def switchover() -> None:
        old = healthy.leader().name
        leaders.append(healthy.switchover())
        assert leaders[-1] != old

    results = _under_writes(healthy, 5 if soak else 1, switchover)
    _verify(healthy, results)


def test_strict_mode_holds_commits_while_no_standby_is_left(healthy: Any) -> None:
    """With both replicas gone a commit is not acknowledged: it waits, uncancelled, and
    completes once a standby is back (a non-strict cluster would acknowledge it alone,
    and lose it if the leader then died)."""
    cluster = healthy
    removed = [cluster.remove_replica(), cluster.remove_replica()]
    leader = cluster.leader()
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with psycopg.connect(cluster.dsn(leader.name), autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS strict_probe (id int)")
        except BaseException as e:  # reported by the assertion below
            errors.append(e)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    # Patroni needs a loop or two to notice the standbys are gone; then a non-strict
    # cluster stops waiting for them (synchronous_standby_names '') and a strict one waits
    # for any standby ('ANY 1 (*)'). Wait for that (8 s at most), then a few more loops
    # (loop_wait is 1 s): the commit stays held throughout.
    deadline = time.monotonic() + 8.0
    while not done.is_set() and time.monotonic() < deadline:
        if not any(name in _synchronous_standby_names(cluster, leader.name) for name in removed):
            break
        time.sleep(0.2)
    assert not done.wait(3.0), "a commit was acknowledged with no synchronous standby"
    cluster.start_node(removed[0])
    assert done.wait(120.0), "the held commit did not complete once a standby was back"
    assert errors == []
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('strict_probe')").fetchone() == ("strict_probe",)
        conn.execute("DROP TABLE strict_probe")


def _synchronous_standby_names(cluster: Any, node: str) -> str:
    with psycopg.connect(cluster.dsn(node, superuser=True), autocommit=True) as conn:
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    assert row is not None
    return str(row[0])


def test_leader_serves_pgvector_to_the_engramdb_role(healthy: Any) -> None:
    with psycopg.connect(healthy.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("engramdb",)
        distance = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector").fetchone()
        assert distance == (2.0,)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        standbys = conn.execute("SHOW synchronous_standby_names").fetchone()
        assert standbys is not None
        assert standbys[0] not in ("", "*")
    with engramdb.open(healthy.url) as db:
        db.records("smoke").put("k", {"v": 1})
        record = db.records("smoke").get("k")
    assert record is not None
    assert record.bins == {"v": 1}


def test_an_unknown_node_is_a_clean_error(healthy: Any) -> None:
    with pytest.raises(engramdb.NotFound, match="no node 'node9'"):
        healthy.start_node("node9")
