"""``engramdb cluster up/status/down`` as a user runs them: subprocesses of the installed
command on the suite's shared cluster, then down (leaving no process behind) and up again
on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import engramdb

pytestmark = pytest.mark.cluster


def engramdb_cli(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engramdb.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (dead, not yet reaped by this process, which started
    the suite's cluster) does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_status_json_shows_every_node_its_role_and_processes(healthy: Any) -> None:
    done = engramdb_cli("cluster", "status", "--dir", str(healthy.directory), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["healthy"] is True
    assert status["problem"] is None
    assert status["url"] == healthy.url
    assert status["etcd"]["healthy"] is True
    nodes = status["nodes"]
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]
    roles = sorted(n["role"] for n in nodes)
    assert roles == ["leader", "quorum_standby", "quorum_standby"]
    timelines = {n["timeline"] for n in nodes}
    assert len(timelines) == 1
    running = set(healthy.processes())
    for node in nodes:
        assert node["patroni_pid"] in running
        assert node["postgres_pid"] in running
        assert node["state"] == ("running" if node["role"] == "leader" else "streaming")


def test_status_table_names_the_leader_and_the_url(healthy: Any) -> None:
    done = engramdb_cli("cluster", "status", "--dir", str(healthy.directory))
    assert done.returncode == 0, done.stderr
    assert "quorum_standby" in done.stdout
    assert healthy.leader().name in done.stdout
    assert f"engine URL: {healthy.url}" in done.stdout


def test_up_on_a_running_cluster_prints_its_url(healthy: Any) -> None:
    before = healthy.processes()
    done = engramdb_cli("cluster", "up", "--dir", str(healthy.directory))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == healthy.url  # stdout is the URL alone: URL=$(... up)
    assert "cluster up in" in done.stderr
    assert set(before) <= set(healthy.processes())  # nothing restarted


def test_down_leaves_no_process_and_up_restarts_on_the_same_data(healthy: Any) -> None:
    with engramdb.open(healthy.url) as db:
        db.records("kept").put("across-restart", {"v": 42})
    running = healthy.processes()
    assert len(running) > 10  # etcd, 3 Patronis, 3 postmasters and their backends

    done = engramdb_cli("cluster", "down", "--dir", str(healthy.directory))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stopped ")
    assert [pid for pid in running if alive(pid)] == []
    stopped = engramdb_cli("cluster", "status", "--dir", str(healthy.directory), "--json")
    assert stopped.returncode == 1
    assert {n["state"] for n in json.loads(stopped.stdout)["nodes"]} == {"stopped"}

    done = engramdb_cli("cluster", "up", "--dir", str(healthy.directory))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == healthy.url
    healthy.wait_healthy()  # the handle follows the new processes through cluster.json
    with engramdb.open(healthy.url) as db:
        record = db.records("kept").get("across-restart")
    assert record is not None
    assert record.bins == {"v": 42}


def test_status_of_a_directory_without_a_cluster_is_a_clean_error(tmp_path: Path) -> None:
    done = engramdb_cli("cluster", "status", "--dir", str(tmp_path / "none"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: NotFound: no cluster in ")
    assert "engramdb cluster up" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_refuses_a_directory_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a cluster")
    done = engramdb_cli("cluster", "up", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "is not empty and holds no cluster" in done.stderr
    assert (tmp_path / "precious.txt").exists()


def test_down_of_a_directory_without_a_cluster_wipes_nothing(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a cluster")
    done = engramdb_cli("cluster", "down", "--dir", str(tmp_path), "--wipe")
    assert done.returncode == 1
    assert "no cluster in" in done.stderr
    assert (tmp_path / "precious.txt").exists()
