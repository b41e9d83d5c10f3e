"""Attacks on ``engramdb audit``'s promises: that it cleans up after itself even when it is
stopped mid-run, and that its observability verdict cannot be fooled by traffic it did not
send.

Each test runs the real CLI as a subprocess, against a real LMDB directory or a real
``engramdb serve``, at the smallest sizes the CLI allows.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

import engramdb
from tests.attack.conftest import Served, wait_for
from tests.audit.runs import RUN_WAIT, TINY, start
from tests.audit.test_footprint import snapshot_path, user_data

EXTRA_READS = 10


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_audit_mid_run_still_removes_what_it_wrote(
    tmp_path: Path, stop: signal.Signals
) -> None:
    path = tmp_path / "db"
    user_data(path)
    records_before, _ = snapshot_path(path)
    log = tmp_path / "output.txt"
    # The consistency section runs for at least 3 s, writing all along.
    audit = start(
        str(path), tmp_path / "report", log, *TINY, "--sections", "consistency", "--allow-writes"
    )
    try:

        def audit_is_writing() -> bool:
            with engramdb.open(str(path)) as db:
                return any(name.startswith("engramdb-audit-") for name in db.sets())

        wait_for(audit_is_writing, RUN_WAIT, "the audit to write its first records")
        audit.send_signal(stop)
        returncode = audit.wait(RUN_WAIT)
    finally:
        if audit.poll() is None:
            audit.kill()
            audit.wait()
    output = log.read_text()
    assert returncode == 130, output
    assert "interrupted" in output
    assert snapshot_path(path)[0] == records_before  # the audit's set is gone, the user's kept
    assert "Removed " in output
    assert "(the audit's own)" in output
    assert "Cleanup incomplete" not in output


def _calls(server: Served, command: str) -> int:
    stats = server.info().get(f"cmdstat_{command}", "")
    for part in stats.split(","):
        if part.startswith("calls="):
            return int(part[6:])
    return 0


def test_another_clients_reads_during_the_measured_phase_fail_observability(
    serve: Any, tmp_path: Path
) -> None:
    server: Served = serve()
    log = tmp_path / "output.txt"
    tiny = [*TINY]
    tiny[tiny.index("--duration") + 1] = "3"
    audit = start(
        server.url, tmp_path / "report", log, *tiny, "--sections", "latency,observability"
    )
    try:
        # The warm-up only reads: the first write means the measured phase has begun, and
        # it lasts three seconds more, far longer than ten reads take.
        wait_for(lambda: _calls(server, "records.put") > 0, RUN_WAIT, "the measured phase")
        with engramdb.connect(server.url) as other:
            for i in range(EXTRA_READS):
                other.records("someone-else").get(f"k{i}")
        returncode = audit.wait(RUN_WAIT)
    finally:
        if audit.poll() is None:
            audit.kill()
            audit.wait()
    output = log.read_text()
    assert returncode == 3, output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    section = report["sections"]["observability"]
    reads, writes = section["counts"]
    # Exactly the other client's reads are the difference (within the audit's own unknowns).
    assert reads["client_sent"] - reads["uncertain"] + EXTRA_READS <= reads["server_counted"]
    assert reads["server_counted"] <= reads["client_sent"] + EXTRA_READS
    assert reads["agree"] is False
    assert writes["agree"] is True
    assert section["pass"] is False
    with engramdb.connect(server.url) as client:
        assert client.sets() == []  # and the audit removed what it wrote on the server
