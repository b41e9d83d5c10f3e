"""The consistency recorder keeps every operation that may have happened.

A compare-and-set whose reply is lost (the connection drops after the server applied it)
has an unknown outcome: the history must carry it as such (``end=None``), or a later read
of the value it wrote looks like a read of a value nobody wrote, and a correct server is
reported as not linearizable. The stub server applies one compare-and-set, drops its
connection, then refuses writes for half a second so that readers see the value.
"""

from __future__ import annotations

import pytest

from engramdb.audit.history import record_histories
from engramdb.audit.linearizability import check
from tests.audit.resp_stub import StubRedis

OPTIONS = {"namespace": "engramdb-audit-test"}


def test_a_compare_and_set_with_a_lost_reply_is_kept_as_unknown() -> None:
    with StubRedis(lose_cas_reply_after=20, refuse_writes_seconds=0.5) as stub:
        ops, _acked, _maybe, used_cas = record_histories(
            stub.url, OPTIONS, workers=1, clients=8, keys=1, counters=1, seconds=2.0, prefix="h"
        )
        lost = stub.lost_cas_value
    # The set-up, checked with pytest.fail so that it cannot pass for the expected failure.
    if not used_cas or lost is None:
        pytest.fail(f"the fault did not fire (compare-and-set used: {used_cas})")
    value = int(lost)
    if not any(o.kind == "read" and o.output == value for o in ops):
        pytest.fail("no read saw the value of the compare-and-set whose reply was lost")

    assert any(o.kind == "cas" and o.end is None and o.input[1] == value for o in ops)
    assert check(ops).linearizable is True
