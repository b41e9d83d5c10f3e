"""The data-loss trap of synchronous replication: a cancelled wait reports COMMIT OK.

A single server is made to wait for a synchronous standby that does not exist
(``synchronous_standby_names``), so every commit waits; then the wait is cancelled the ways
it happens in production (``pg_cancel_backend``, ``pg_terminate_backend``, Ctrl-C). Rows
committed like that are lost at a failover, so the engine must never acknowledge them and
must never be the one that cancels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

import engramdb
from engramdb import Unavailable
from tests.postgres.conftest import wait_for

WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"


def _reload(pg: Any, expected: str) -> None:
    pg.psql("SELECT pg_reload_conf()")
    # A new session sees the setting once the postmaster reloaded, and by then it has
    # signalled every backend (they apply it before their next command).
    wait_for(lambda: pg.psql("SHOW synchronous_standby_names") == expected, 10, "the reload")


def _require_missing_standby(pg: Any) -> None:
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby_that_does_not_exist'")
    _reload(pg, "standby_that_does_not_exist")


def _release_commits(pg: Any) -> None:
    pg.psql("ALTER SYSTEM RESET synchronous_standby_names")
    _reload(pg, "")


def _put_in_thread(db: engramdb.Database, key: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            outcome["generation"] = db.records("s").put(key, {"v": 1})
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=write)
    thread.start()
    return thread, outcome


def test_plain_client_gets_commit_ok_for_a_cancelled_sync_wait(own_postgres: Any) -> None:
    # The trap itself, without engramdb: PostgreSQL answers COMMIT with success (and only a
    # warning) when the wait for the standby is cancelled. The tests below rely on this.
    pg = own_postgres
    _require_missing_standby(pg)
    notices: list[str] = []
    with psycopg.connect(pg.url()) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("CREATE TABLE t (v int)")
        done = threading.Event()
        errors: list[BaseException] = []

        def commit() -> None:
            try:
                conn.commit()
            except BaseException as e:
                errors.append(e)
            done.set()

        threading.Thread(target=commit).start()
        wait_for(lambda: pg.psql(WAITING) == "1", 10, "COMMIT to wait for the standby")
        pg.psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event='SyncRep'")
        assert done.wait(10)
    assert errors == []
    assert any("canceling wait for synchronous replication" in n for n in notices), notices


def test_cancelled_sync_wait_is_an_unknown_outcome_not_a_success(own_postgres: Any) -> None:
    pg = own_postgres
    with engramdb.open(pg.url(), sweep_interval=None) as db:
        db.records("s").put("before", {"v": 0})
        _require_missing_standby(pg)
        thread, outcome = _put_in_thread(db, "k")
        wait_for(lambda: pg.psql(WAITING) == "1", 10, "the commit to wait for the standby")
        pg.psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event='SyncRep'")
        thread.join(10)
        assert "generation" not in outcome
        error = outcome["error"]
        assert isinstance(error, Unavailable)
        assert "outcome of this write is unknown" in str(error)
        assert "canceling wait for synchronous replication" in str(error)
        _release_commits(pg)
        # It did commit locally (which is why it must not be called a success): the
        # generation resolves the unknown outcome, and the engine keeps working.
        assert db.records("s").get("k") is not None
        assert db.records("s").put("after", {"v": 2}) > 0


def test_terminated_sync_wait_is_an_unknown_outcome(own_postgres: Any) -> None:
    pg = own_postgres
    with engramdb.open(pg.url(), sweep_interval=None) as db:
        db.records("s").put("before", {"v": 0})
        _require_missing_standby(pg)
        thread, outcome = _put_in_thread(db, "k")
        wait_for(lambda: pg.psql(WAITING) == "1", 10, "the commit to wait for the standby")
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event='SyncRep'")
        thread.join(10)
        error = outcome["error"]
        assert isinstance(error, Unavailable)
        assert "outcome" in str(error)
        assert "unknown" in str(error)
        _release_commits(pg)
        assert db.records("s").put("after", {"v": 2}) > 0  # reconnected


_INTERRUPTED = """
import sys, engramdb
db = engramdb.open(sys.argv[1], sweep_interval=None)
print("ready", flush=True)
try:
    db.records("s").put("k", {"v": 1})
    print("acknowledged", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
db.close()  # waits for the commit, which goes on without us
print("closed", flush=True)
"""


def test_ctrl_c_never_cancels_a_commit_waiting_for_the_standby(own_postgres: Any) -> None:
    # psycopg answers KeyboardInterrupt by cancelling the running query: on a COMMIT that
    # waits for the standby that is the trap above. The write is made on the main thread of
    # a real process and interrupted with a real SIGINT.
    pg = own_postgres
    engramdb.open(pg.url(), sweep_interval=None).close()  # create the schema first
    _require_missing_standby(pg)
    with subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, pg.url()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            wait_for(lambda: pg.psql(WAITING) == "1", 10, "the commit to wait for the standby")
            proc.send_signal(signal.SIGINT)
            assert proc.stdout.readline().strip() == "interrupted"
            # The caller stopped waiting; the commit did not: it still waits for the standby.
            assert pg.psql(WAITING) == "1"
            _release_commits(pg)
            assert proc.stdout.readline().strip() == "closed"
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    with engramdb.open(pg.url(), sweep_interval=None) as db:
        assert db.records("s").get("k") is not None


@pytest.mark.parametrize("durability", ["async", "none"])
def test_weaker_durability_does_not_wait_for_the_standby(
    own_postgres: Any, durability: str
) -> None:
    pg = own_postgres
    _require_missing_standby(pg)
    with engramdb.open(pg.url(), durability=durability, sweep_interval=None) as db:  # type: ignore[arg-type]
        assert db.records("s").put("k", {"v": 1}) > 0
        assert db.records("s").get("k") is not None
