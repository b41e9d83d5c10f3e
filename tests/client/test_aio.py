"""The asyncio faces beyond the contract suite: the event loop is never blocked by a commit,
asyncio-native single flight, handles and results that print their data."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import engramdb
import engramdb.aio
from engramdb.features import Entity, FeatureView, Field


def test_concurrent_embedded_writes_share_commits_while_the_loop_runs(tmp_path: Path) -> None:
    # 64 tasks write at once with durability=sync. Had each write blocked the loop for its
    # fsync, they would commit one by one; handed to group commit and awaited, they share
    # commits, and a ticker task keeps running meanwhile.
    async def main() -> tuple[int, int, int]:
        db = await engramdb.aio.open(str(tmp_path / "db"), durability="sync", sweep_interval=None)
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        running = asyncio.create_task(ticker())
        users = db.records("users")
        await asyncio.gather(*(users.put(f"u{i}", {"i": i}) for i in range(64)))
        stop.set()
        await running
        stats = await db.stats()
        await db.close()
        return stats["group_commit"]["batches"], stats["group_commit"]["writes"], ticks

    batches, writes, ticks = asyncio.run(main())
    assert writes == 64
    assert batches < writes  # commits were shared: the writes were in flight together
    assert ticks > 0


def test_asyncio_loaders_share_one_flight_on_every_asyncio_face(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], int]:
        db = await engramdb.aio.open(str(tmp_path / "db"), durability="none")
        calls = 0

        async def loader() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return "value"

        got = await asyncio.gather(*(db.cache.get_or_set("k", loader, ttl=60) for _ in range(20)))
        await db.close()
        return list(got), calls

    got, calls = asyncio.run(main())
    assert got == ["value"] * 20
    assert calls == 1


def test_feature_results_print_their_data(tmp_path: Path) -> None:
    with engramdb.open(tmp_path / "db", durability="none") as db:
        driver = Entity("driver", ["driver_id"])
        view = FeatureView("driver_stats", [driver], [Field("trips", "int64")], ttl=3600)
        db.features.apply([driver, view])
        at = dt.datetime.now(dt.UTC)  # within the view's ttl
        rows = [{"driver_id": i, "event_timestamp": at, "trips": 10 * i} for i in range(8)]
        db.features.ingest("driver_stats", rows)
        online = db.features.get_online_features(
            ["driver_stats:trips"], [{"driver_id": 1}, {"driver_id": 99}]
        )
        text = repr(online)
        assert "OnlineResponse: 2 rows x 1 features (1 values not present)" in text
        assert "driver_id" in text
        assert "trips" in text
        assert "10" in text
        entities = [{"driver_id": i, "event_timestamp": at} for i in range(8)]
        history = db.features.get_historical_features(entities, ["driver_stats:trips"])
        text = repr(history)
        assert text.startswith("HistoricalResult: 8 rows x 3 columns")
        assert "… 3 more rows" in text
        assert "70" not in text  # only the first rows are shown
        assert "40" in text
