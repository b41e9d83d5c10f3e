"""The load generator counts latency from each request's intended send time.

A stub server stalls once for a second under 200 req/s of open-loop load. Every request
that arrived during the stall must show the wait it suffered, so the stall reaches the
p99 and the maximum. A closed-loop client measured against the same stall (send, wait for
the reply, send the next) records the second once and keeps a p99 that hides it: coordinated
omission, the mistake the generator exists to avoid.

The bounds are loose on purpose (the machine may be busy): they separate "the stall is in
the figures" from "it is not", not one fast run from another.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hdrh.histogram import HdrHistogram

from engramdb.audit.load import Phase, Workload, new_histogram, percentiles, run_load
from engramdb.protocol.resp import encode_command
from tests.audit.resp_stub import StubRedis

RATE = 200
SECONDS = 3.0
STALL = 1.0
# The stall begins after ~0.5 s of load, so the run holds the whole of it and then catches up.
STALL_AFTER = 100
NAMESPACE = "engramdb-audit-test"
WORKLOAD = Workload("stall probe", read=0.5, update=0.5, keys=100, value_bytes=16)


def _share_at_least(histogram: HdrHistogram, ms: float) -> float:
    """The fraction of the recorded requests that took ``ms`` or longer."""
    slow = sum(
        int(item.count_at_value_iterated_to)
        for item in histogram.get_recorded_iterator()
        if item.value_iterated_to >= ms * 1000
    )
    return slow / max(1, int(histogram.get_total_count()))


def test_open_loop_latency_includes_a_one_second_stall() -> None:
    with StubRedis(stall_after=STALL_AFTER, stall_seconds=STALL) as stub:
        # A pool larger than the stall's backlog: every request waits in the server, none is
        # refused by the client for want of a connection.
        result = run_load(
            stub.url,
            WORKLOAD,
            [Phase("steady", SECONDS, RATE)],
            workers=1,
            options={"connections": 1024, "namespace": NAMESPACE},
        )
        assert stub.stalled is not None
        began, ended = stub.stalled
    assert ended - began >= STALL
    assert result.errors == {}
    assert result.dropped == 0
    sent = sum(result.counts.values())
    assert result.completed["steady"] == sent
    overall = percentiles(result.phase_histogram("steady"))
    # The first request caught by the stall waited all of it.
    assert 0.9 * STALL * 1000 <= overall["max"] < 5 * STALL * 1000
    # ~STALL * RATE requests arrived during the stall, each waiting until its end: about a
    # fifth of the run waited, up to a second, so the p99 sits near the second.
    assert overall["p99"] >= 0.5 * STALL * 1000
    assert _share_at_least(result.phase_histogram("steady"), 100) >= 0.1


async def _closed_loop(port: int, seconds: float, pace: float) -> HdrHistogram:
    """Send GET, wait for the reply, sleep out the pace, repeat; latency is send to reply."""
    histogram = new_histogram()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = encode_command("GET", "k")
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sent = time.monotonic()
            writer.write(request)
            await writer.drain()
            await reader.readline()  # "$-1": the key is never set
            took = time.monotonic() - sent
            histogram.record_value(max(1, int(took * 1_000_000)))
            await asyncio.sleep(max(0.0, pace - took))
    finally:
        writer.close()
        await writer.wait_closed()
    return histogram


def test_a_closed_loop_measurement_would_hide_the_same_stall() -> None:
    with StubRedis(stall_after=STALL_AFTER, stall_seconds=STALL) as stub:
        histogram = asyncio.run(_closed_loop(stub.port, SECONDS, 1 / RATE))
        assert stub.stalled is not None
    closed = percentiles(histogram)
    # The stall is one slow sample among hundreds: it reaches the max, not the p99.
    assert closed["max"] >= 0.9 * STALL * 1000
    assert closed["p99"] < 0.5 * STALL * 1000
    assert _share_at_least(histogram, 100) < 0.02


def test_a_stall_longer_than_the_connection_pool_is_still_latency() -> None:
    with StubRedis(stall_after=STALL_AFTER, stall_seconds=STALL) as stub:
        # The default pool: ~STALL * RATE = 200 requests queue up behind 64 connections.
        result = run_load(
            stub.url,
            WORKLOAD,
            [Phase("steady", 2.5, RATE)],
            workers=1,
            options={"namespace": NAMESPACE},
        )
        if stub.stalled is None:
            pytest.fail("the stub did not stall")
    assert result.errors == {}
    assert result.completed["steady"] == sum(result.counts.values())
