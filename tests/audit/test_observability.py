"""The observability section compares a server's own request counts with the audit's.

Both sides must count the same requests. The load's warm-up (each worker's connections
opened with reads before the clock starts) reaches the server's counters too: counted on
one side only, it made engramdb's own server "fail" by exactly 2 rounds x 16 reads x 2
workers = 64 reads. Here the comparison is exact on a real ``engramdb serve`` started by the
audit (``--managed``), and the attack suite checks that it still fails when another client
really does add requests (``tests/attack/test_audit_attacks.py``).
"""

from __future__ import annotations

from pathlib import Path

from tests.audit.runs import TINY, audit

WORKERS = 2  # as the issue ran it: the warm-up of two workers was the 64


def test_a_managed_engramdb_server_agrees_exactly_with_the_audit(tmp_path: Path) -> None:
    tiny = [*TINY]
    tiny[tiny.index("--workers") + 1] = str(WORKERS)
    ran = audit(
        "engramdb://x", tmp_path / "report", *tiny, "--managed", "--sections",
        "latency,observability",
    )  # fmt: skip
    assert ran.returncode in (0, 3), ran.output
    section = ran.report["sections"]["observability"]
    reads, writes = section["counts"]
    assert reads["warmup"] == WORKERS * 2 * 16  # counted on the client side too
    for row in (reads, writes):
        assert row["client_sent"] > 0
        assert row["client_sent"] - row["uncertain"] <= row["server_counted"]
        assert row["server_counted"] <= row["client_sent"]
        assert row["agree"] is True, row
    assert section["pass"] is True, section
    assert "warm-up" in ran.output
