"""``engramdb audit --cluster-dir DIR --allow-faults``: the availability section injects the
guide's faults into a real cluster under load — kill -9 of the leader node, a switchover,
a replica removed — and reports for each the windows without successful writes and reads,
p99 during and after, acknowledged writes lost (0) and the linearizability verdict.

One audit run injects each fault once (over two minutes of load); it refuses to fault a
cluster unless told it may. The suite's run injects the switchover alone (a leader change
under load, about 35 s); ``--soak`` injects all three. The suite covers the other two faults'
mechanisms elsewhere: ``test_failover.py`` kills the leader node under writes (and checks
no acknowledged write is lost), and holds commits with the replicas removed and started
again.
"""

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


def _audit(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engramdb.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_audit_refuses_to_fault_a_cluster_without_allow_faults(
    healthy: Any, tmp_path: Path
) -> None:
    leader = healthy.leader().name
    done = _audit(
        "--cluster-dir", str(healthy.directory), "--sections", "availability",
        "--report", str(tmp_path / "report"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--allow-faults" in done.stderr
    assert "kill -9 the leader node" in done.stderr
    assert healthy.leader().name == leader  # nothing was injected
    assert not (tmp_path / "report").exists()


def test_audit_refuses_an_unknown_fault(healthy: Any, tmp_path: Path) -> None:
    done = _audit(
        "--cluster-dir", str(healthy.directory), "--allow-faults", "--faults", "meteor",
        "--sections", "availability", "--report", str(tmp_path / "report"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "faults must be some of leader_kill, switchover, scale_in" in done.stderr


# Each fault's load runs its budget (50 s for a crash: the 20 s lease, then the rejoin; 15 s
# for a switchover; 20 s for a scale-in) plus 13 s around it; the suite runs the shortest.
SUITE_FAULTS = ("switchover",)
SOAK_FAULTS = ("leader_kill", "switchover", "scale_in")
TITLES = {
    "leader_kill": "kill -9 the leader node",
    "switchover": "switchover",
    "scale_in": "remove a replica",
}


@pytest.mark.timeout(900)
def test_audit_injects_each_fault_under_load_and_loses_no_acknowledged_write(
    healthy: Any, tmp_path: Path, soak: bool
) -> None:
    injected = SOAK_FAULTS if soak else SUITE_FAULTS
    report_dir = tmp_path / "report"
    done = _audit(
        "--cluster-dir", str(healthy.directory), "--allow-faults",
        "--faults", ",".join(injected),
        "--sections", "availability", "--rate", "60", "--duration", "4",
        "--report", str(report_dir), timeout=840,
    )  # fmt: skip
    # 0: every fault met its bound; 3: one missed it (a report, not a crash).
    assert done.returncode in (0, 3), done.stdout + done.stderr
    report = json.loads((report_dir / "report.json").read_text())
    section = report["sections"]["availability"]
    faults = {f["fault"]: f for f in section["faults"]}
    assert list(faults) == list(injected)
    for name, fault in faults.items():
        assert fault["acknowledged_writes"] > 0, name
        assert fault["acknowledged_writes_lost"] == 0, (name, fault["lost_examples"])
        assert fault["history"]["linearizable"] is True, (name, fault["history"])
        assert fault["history"]["compare_and_set"] is True
        assert fault["healed_before_load_ended"], name
        for load in ("writes", "reads"):
            for phase in ("before", "during", "after"):
                assert fault[load][phase]["requests"] > 0, (name, load, phase)
            assert fault[load]["after"]["p99_ms"] is not None, (name, load)
    if "leader_kill" in faults:
        crash = faults["leader_kill"]
        assert crash["details"]["new_leader"] != crash["details"]["killed"]
        # The crashed leader's lease must expire before another node takes writes: an
        # outage of seconds, seen by the writers, and by readers of the leader.
        assert crash["write_window_s"] > 1.0
        assert crash["read_window_s"] > 1.0
        assert crash["new_leader_s"] > 1.0
        assert crash["writes"]["during"]["p99_ms"] > crash["writes"]["before"]["p99_ms"]
    switchover = faults["switchover"]
    assert switchover["details"]["new_leader"] != switchover["details"]["old_leader"]
    assert switchover["write_window_s"] > 0
    if "scale_in" in faults:
        assert faults["scale_in"]["details"]["removed"]
    # The readable summary names every fault it injected, and its figures.
    for name, title in TITLES.items():
        assert (title in done.stdout) is (name in faults), title
    assert "acked writes lost" in done.stdout
    # Everything the audit wrote was removed; the cluster is whole again.
    assert report["cleanup"]["error"] is None
    with engramdb.open(healthy.url) as db:
        assert report["writes"]["namespace"] not in db.sets()
    healthy.wait_healthy(timeout=60)
    assert all(m.patroni_pid is not None for m in healthy.members())
