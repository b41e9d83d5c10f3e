"""The network clients: same interface as the embedded API, sync and asyncio."""

from __future__ import annotations

import asyncio
import socket

import pytest

import engramdb
import engramdb.aio
from engramdb import Conflict, InvalidArgument, NotFound, Unavailable, ops
from tests.conftest import ServerProcess


@pytest.fixture
def server(engram_server: ServerProcess) -> ServerProcess:
    engram_server.reset()
    return engram_server


def test_sync_client_round_trip_and_errors(server: ServerProcess) -> None:
    with engramdb.connect(server.url) as db:
        users = db.records("users")
        assert users.put("u1", {"n": 1}) == 1
        assert users.operate("u1", [ops.incr("n"), ops.read("n")]) == [2, {"n": 2}]
        with pytest.raises(Conflict) as caught:
            users.put("u1", {}, expect_generation=1)
        assert caught.value.generation == 2
        with pytest.raises(NotFound):
            users.touch("nobody", 5)
        assert [r.key for r in users.iterate(batch=1)] == ["u1"]
        assert db.last_sequence() == 2
        stats = db.stats()
        assert stats["operations"]["put"]["count"] == 2
        assert stats["operations"]["put"]["errors"] == {"Conflict": 1}
        assert stats["server_operations"] is not None


def test_async_client_round_trip_and_errors(server: ServerProcess) -> None:
    async def main() -> None:
        db = await engramdb.aio.connect(server.url)
        async with db:
            users = db.records("users")
            assert await users.put("u1", {"n": 1}, ttl=60) == 1
            results = await asyncio.gather(
                *(users.operate("u1", [ops.incr("n")]) for _ in range(20))
            )
            assert sorted(r[0] for r in results) == list(range(2, 22))
            record = await users.get("u1")
            assert record is not None
            assert record.generation == 21
            with pytest.raises(Conflict) as caught:
                await users.put("u1", {}, create_only=True)
            assert caught.value.generation == 21
            with pytest.raises(InvalidArgument):
                await users.put("u2", {"bad": {1, 2}})
            assert [r.key async for r in users.iterate(batch=1)] == ["u1"]
            assert [c.kind for c in await db.changes(0)][:1] == ["put"]
            assert (await db.stats())["operations"]["operate"]["count"] == 20

    asyncio.run(main())


def test_bad_urls_are_invalid() -> None:
    for url in ["redis://localhost:1", "engramdb://", "engramdb://host:notaport"]:
        with pytest.raises(InvalidArgument):
            engramdb.connect(url)


def test_connecting_to_nothing_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unavailable):
        engramdb.connect(f"engramdb://127.0.0.1:{port}", timeout=1)

    async def main() -> None:
        with pytest.raises(Unavailable):
            await engramdb.aio.connect(f"engramdb://127.0.0.1:{port}", timeout=1)

    asyncio.run(main())


def test_redis_side_and_native_side_share_records(server: ServerProcess) -> None:
    import redis

    with engramdb.connect(server.url) as db:
        db.records("default").put("greeting", {"$string": b"hello"})
        r = redis.Redis(host=server.host, port=server.port)
        try:
            assert r.get("greeting") == b"hello"
            r.set("counter", "41")
            record = db.records("default").get("counter")
            assert record is not None
            assert record.bins == {"$string": b"41"}
        finally:
            r.close()
