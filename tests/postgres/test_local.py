"""The single-instance harness (``engramdb.cluster.local``) and the engine's URL checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import engramdb
from engramdb import InvalidArgument
from tests.postgres.conftest import wait_for

_STARTER = """
import sys, time
from engramdb.cluster.local import LocalPostgres
pg = LocalPostgres(fsync=False).start()
print(pg.pid, pg.directory, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by init.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_a_killed_test_run_leaves_no_postgres_behind(own_postgres: Any) -> None:
    # own_postgres: only to skip where PostgreSQL cannot start at all.
    with subprocess.Popen(
        [sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, text=True
    ) as starter:
        assert starter.stdout is not None
        pid_text, directory = starter.stdout.readline().split()
        pid = int(pid_text)
        assert _alive(pid)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    try:
        wait_for(lambda: not _alive(pid), 30, "postgres to die with the process that started it")
    finally:
        subprocess.run(["rm", "-rf", directory], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_a_directory_the_server_user_cannot_reach_is_refused_clearly(tmp_path: Path) -> None:
    from engramdb.cluster.binaries import BinariesNotFound
    from engramdb.cluster.local import LocalPostgres

    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    try:
        server = LocalPostgres(hidden / "pg")
    except BinariesNotFound as e:
        pytest.skip(str(e))
    with pytest.raises(BinariesNotFound, match="cannot reach"):
        server.start()
    server.close()


def test_the_server_runs_as_an_unprivileged_user(own_postgres: Any) -> None:
    assert own_postgres.psql("SELECT current_setting('data_directory')") == str(own_postgres.data)
    owner = Path(f"/proc/{own_postgres.pid}/status").read_text()
    uid = int(owner.split("\nUid:\t", 1)[1].split()[0])
    assert uid != 0
    assert own_postgres.psql("SELECT extversion FROM pg_extension WHERE extname = 'vector'")


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("schema=Robert'); DROP TABLE x;--", "schema"),
        ("schema=", "schema"),
        ("read_from=anywhere", "read_from"),
        ("failover_timeout=soon", "failover_timeout|could not convert"),
        ("no_such_libpq_option=1", "bad PostgreSQL URL"),
    ],
)
def test_bad_urls_are_refused_before_connecting(query: str, problem: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(InvalidArgument, match=problem):
        engramdb.open(f"postgresql://nobody@127.0.0.1:1/db?{query}", sweep_interval=None)


def test_binary_copies_in_a_directory_someone_else_can_write_are_refused(tmp_path: Path) -> None:
    # The copies the service user runs must not live where another local user could plant
    # binaries first (the old place was under the world-writable /var/tmp).
    from engramdb.cluster.binaries import BinariesNotFound, find_binaries, service_user

    try:
        binaries, user = find_binaries(), service_user()
    except BinariesNotFound as e:
        pytest.skip(str(e))
    if os.geteuid() != 0:
        pytest.skip("the copies are made only when root runs PostgreSQL as another user")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could have made it, or written into it
    with pytest.raises(BinariesNotFound, match="writable by no one else"):
        binaries.copied_for(user, copies=shared / "pginstall")
    planted = tmp_path / "planted"
    (planted / "pginstall").mkdir(parents=True)
    os.chown(planted / "pginstall", 65534, 65534)  # nobody's
    with pytest.raises(BinariesNotFound, match="must belong to this user"):
        binaries.copied_for(user, copies=planted / "pginstall")
