"""After the kill -9, the availability section reads back every acknowledged write.

That check must survive the target being slow for a moment (it has just restarted, and the
machine is busy with the load generator): a read that times out should be retried or
reported as unverified, not end the whole audit with a traceback and no report. The stub
server stalls for longer than the client's 2 s timeout while the keys are being read back.
"""

from __future__ import annotations

import asyncio
import gc

from engramdb.audit.runner import _missing
from tests.audit.resp_stub import StubRedis

KEYS = [f"v{i}" for i in range(300)]
NAMESPACE = "engramdb-audit-test"


def test_reading_back_acknowledged_writes_rides_out_a_stall() -> None:
    failure = None
    missing = None
    with StubRedis(stall_after=100, stall_seconds=2.5) as stub:
        stub.data.update({f"{NAMESPACE}:{key}".encode(): b"1" for key in KEYS})
        try:
            missing = asyncio.run(_missing(stub.url, KEYS, NAMESPACE))
        except Exception as e:
            failure = f"{type(e).__name__}: {e}"
    gc.collect()
    assert failure is None
    assert missing == []
