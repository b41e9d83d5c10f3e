"""Hedged reads from the asyncio client: ``await engramdb.aio.connect([a, b], hedge=True)``.

The same two real servers over one LMDB directory as test_hedge.py, one of them stopped with
SIGSTOP while the client reads; the policy is shared, the race is the asyncio client's own.
"""

from __future__ import annotations

import asyncio

import pytest

import engramdb.aio
from engramdb import Hedge, InvalidArgument, Timeout
from tests.client.test_hedge import WARMUP, fronts, server_calls, stopped, stuttering
from tests.server_faults.conftest import Served, serve

__all__ = ["fronts", "serve"]  # the fixtures, imported to be used here


def test_a_read_stalled_on_a_stopped_server_is_answered_by_the_other(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts

    async def main() -> tuple[list[object], dict[str, int]]:
        async with await engramdb.aio.connect([a.url, b.url], hedge=True, timeout=30.0) as db:
            users = db.records("users")
            await users.put("u1", {"n": 1})
            for _ in range(WARMUP):
                assert await users.get("u1") is not None
            with stopped(b):
                # Reads take turns: of any two, one is sent to the stopped server first.
                got = [await users.get("u1") for _ in range(2)]
            return [r.bins for r in got if r is not None], (await db.stats())["hedging"]

    bins, hedging = asyncio.run(main())
    assert bins == [{"n": 1}, {"n": 1}]
    assert hedging["hedges_sent"] >= 1
    assert hedging["hedges_won"] >= 1


def test_without_hedge_a_read_on_a_stopped_server_times_out(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts

    async def main() -> tuple[int, dict[str, object]]:
        async with await engramdb.aio.connect([a.url, b.url], timeout=0.5, retries=0) as db:
            users = db.records("users")
            await users.put("u1", {"n": 1})
            for _ in range(WARMUP):
                await users.get("u1")
            timed_out = 0
            with stopped(b):
                for _ in range(2):  # one of them goes to the stopped server, and waits there
                    try:
                        await users.get("u1")
                    except Timeout:
                        timed_out += 1
            return timed_out, (await db.stats())["hedging"]

    timed_out, hedging = asyncio.run(main())
    assert timed_out == 1
    assert hedging["hedges_sent"] == 0


def test_writes_are_never_sent_twice(fronts: tuple[Served, Served]) -> None:
    a, b = fronts
    before = server_calls(a, "records.put") + server_calls(b, "records.put")

    async def main() -> object:
        policy = Hedge(budget=1.0)
        async with await engramdb.aio.connect([a.url, b.url], hedge=policy, timeout=30.0) as db:
            users = db.records("users")
            for i in range(WARMUP):
                await users.put(f"w{i}", {"i": i})
                await users.get(f"w{i}")
            # Writes go to the first server: stall it mid-write, far past the p95 of put.
            for i in range(3):
                with stopped(a):
                    write = asyncio.ensure_future(users.put(f"s{i}", {"i": i}))
                    await asyncio.sleep(0.2)
                await write
            return await users.get("s2")

    assert asyncio.run(main()) is not None
    assert server_calls(a, "records.put") + server_calls(b, "records.put") - before == WARMUP + 3


def test_the_budget_bounds_the_extra_requests(fronts: tuple[Served, Served]) -> None:
    a, b = fronts

    async def main() -> dict[str, int]:
        policy = Hedge(budget=0.05)
        async with await engramdb.aio.connect([a.url, b.url], hedge=policy, timeout=30.0) as db:
            users = db.records("users")
            await users.put("u1", {"n": 1})
            for _ in range(WARMUP):
                await users.get("u1")
            with stuttering(b):
                # A quarter of these start on a stopped server: far more than 5% want a hedge.
                for _ in range(200):
                    assert await users.get("u1") is not None
            return (await db.stats())["hedging"]

    hedging = asyncio.run(main())
    assert hedging["budget_refusals"] > 0
    assert 1 <= hedging["hedges_sent"] <= 0.05 * hedging["reads"]


def test_a_read_on_a_restarted_servers_stale_connection_is_answered(
    fronts: tuple[Served, Served],
) -> None:
    a, b = fronts

    async def main() -> list[object]:
        async with await engramdb.aio.connect(
            [a.url, b.url], hedge=True, timeout=30.0, retries=0
        ) as db:
            users = db.records("users")
            await users.put("u1", {"n": 1})
            for _ in range(WARMUP):
                await users.get("u1")  # both servers now have pooled connections
            b.kill()
            b.start()  # same port, same data; the pooled connections to it are dead
            return [await users.get("u1") for _ in range(4)]

    got = asyncio.run(main())
    assert [r.bins for r in got if r is not None] == [{"n": 1}] * 4


def test_hedging_needs_two_servers(fronts: tuple[Served, Served]) -> None:
    a, _ = fronts
    with pytest.raises(InvalidArgument):
        asyncio.run(engramdb.aio.connect(a.url, hedge=True))
