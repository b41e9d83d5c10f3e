"""Cache contract: single flight, XFetch, stale-while-revalidate, invalidation, metrics."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from engramdb import Database, FakeClock, InvalidArgument
from engramdb.cache import LoaderError
from tests.conftest import Blocking


def counting(value: Any = "v") -> tuple[list[int], Any]:
    calls: list[int] = []

    def loader() -> Any:
        calls.append(1)
        return value if not callable(value) else value(len(calls))

    return calls, loader


def test_miss_loads_then_hits(db: Database) -> None:
    calls, loader = counting({"answer": 42})
    assert db.cache.get_or_set("k", loader, ttl=60) == {"answer": 42}
    assert db.cache.get_or_set("k", loader, ttl=60, early_recompute=0) == {"answer": 42}
    assert len(calls) == 1
    stats = db.cache.stats()
    assert stats["misses"] == 1
    assert stats["hits"] == 1
    assert stats["loader_calls"] == 1


def test_expired_values_are_reloaded(db: Database, clock: FakeClock) -> None:
    _calls, loader = counting(lambda n: n)
    assert db.cache.get_or_set("k", loader, ttl=10, early_recompute=0) == 1
    clock.advance(9)
    assert db.cache.get_or_set("k", loader, ttl=10, early_recompute=0) == 1
    clock.advance(1)
    assert db.cache.get_or_set("k", loader, ttl=10, early_recompute=0) == 2


def test_concurrent_misses_run_the_loader_once(db: Database) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(10)
        return "loaded"

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(db.cache.get_or_set("hot", slow, ttl=60)))
        for _ in range(32)
    ]
    for t in threads:
        t.start()
    started.wait(10)
    release.set()
    for t in threads:
        t.join()
    assert results == ["loaded"] * 32
    assert len(calls) == 1
    assert db.cache.stats()["lease_waits"] >= 1


def test_loader_errors_reach_every_waiter_and_are_not_cached(db: Database) -> None:
    release = threading.Event()

    def failing() -> Any:
        release.wait(10)
        raise ValueError("backend down")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            db.cache.get_or_set("bad", failing, ttl=60)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert len(errors) == 8
    assert all(isinstance(e, ValueError | LoaderError) and "backend down" in str(e) for e in errors)
    _calls, loader = counting("recovered")
    assert db.cache.get_or_set("bad", loader, ttl=60) == "recovered"  # the error was not cached


def test_negative_ttl_caches_failures(db: Database, clock: FakeClock) -> None:
    def failing() -> Any:
        raise KeyError("missing upstream")

    with pytest.raises(KeyError):
        db.cache.get_or_set("neg", failing, ttl=60, negative_ttl=5)
    calls, loader = counting("fine")
    with pytest.raises(LoaderError, match="missing upstream"):
        db.cache.get_or_set("neg", loader, ttl=60, negative_ttl=5)
    assert calls == []
    clock.advance(5)
    assert db.cache.get_or_set("neg", loader, ttl=60, negative_ttl=5) == "fine"


def test_stale_while_revalidate_serves_stale_while_one_refreshes(
    db: Database, clock: FakeClock
) -> None:
    _calls, loader = counting(lambda n: n)
    assert db.cache.get_or_set("k", loader, ttl=10, stale_ttl=30, early_recompute=0) == 1
    clock.advance(15)  # expired, inside the stale window
    assert db.cache.get_or_set("k", loader, ttl=10, stale_ttl=30, early_recompute=0) == 2
    clock.advance(50)  # past the stale window: a plain miss
    assert db.cache.get_or_set("k", loader, ttl=10, stale_ttl=30, early_recompute=0) == 3


def test_stale_value_is_served_while_a_lease_is_held(db: Database, clock: FakeClock) -> None:
    _calls, loader = counting(lambda n: n)
    db.cache.get_or_set("k", loader, ttl=10, stale_ttl=30, early_recompute=0)
    clock.advance(15)
    core = db.cache._core
    token = core.acquire("k", 30)  # another caller is refreshing
    assert token is not None
    assert db.cache.get_or_set("k", loader, ttl=10, stale_ttl=30, early_recompute=0) == 1
    assert db.cache.stats()["stale_served"] == 1


def test_xfetch_recomputes_early_as_expiry_nears(db: Database, clock: FakeClock) -> None:
    import time

    def slow_loader() -> str:
        time.sleep(0.02)  # a recorded compute time makes early recomputation likelier
        return "v"

    db.cache.get_or_set("k", slow_loader, ttl=1)
    clock.advance(0.999)
    for _ in range(200):
        db.cache.get_or_set("k", slow_loader, ttl=1, early_recompute=50)
    assert db.cache.stats()["early_recomputes"] >= 1


def test_delete_wins_over_a_late_loader_write(db: Database) -> None:
    loading = threading.Event()
    finish = threading.Event()

    def slow() -> str:
        loading.set()
        finish.wait(10)
        return "stale data"

    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(db.cache.get_or_set("k", slow, ttl=60)))
    worker.start()
    loading.wait(10)
    assert db.cache.delete("k") is False  # nothing stored yet, but the lease is revoked
    finish.set()
    worker.join()
    assert result == ["stale data"]  # the caller still gets its value...
    assert db.cache.get("k") is None  # ...but it was not written back over the delete
    assert db.cache.stats()["invalidated_fills"] == 1


def test_set_get_delete(db: Database, clock: FakeClock) -> None:
    db.cache.set("k", [1, 2], ttl=5)
    assert db.cache.get("k") == [1, 2]
    assert db.cache.delete("k") is True
    assert db.cache.get("k") is None
    db.cache.set("k", "x", ttl=5)
    clock.advance(5)
    assert db.cache.get("k") is None


def test_memoize(db: Database) -> None:
    calls: list[int] = []

    @db.cache.memoize(ttl=60)
    def double(x: int, *, plus: int = 0) -> int:
        calls.append(x)
        return 2 * x + plus

    assert double(3) == 6
    assert double(3) == 6
    assert double(3, plus=1) == 7
    assert calls == [3, 3]


def test_async_loaders_share_one_flight(db: Database) -> None:
    if isinstance(db, Blocking):
        pytest.skip("drives the sync face's async-loader path; asyncio faces: tests/client")
    calls: list[int] = []

    async def loader() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        return "async value"

    async def main() -> list[Any]:
        return await asyncio.gather(*(db.cache.get_or_set("a", loader, ttl=60) for _ in range(20)))

    assert asyncio.run(main()) == ["async value"] * 20
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [("", {"ttl": 5}), ("k", {"ttl": 0}), ("k", {"ttl": 5, "stale_ttl": -1}), (5, {"ttl": 5})],
)
def test_bad_arguments(db: Database, key: Any, kwargs: Any) -> None:
    with pytest.raises(InvalidArgument):
        db.cache.get_or_set(key, lambda: 1, **kwargs)


def test_unstorable_values_are_refused(db: Database) -> None:
    with pytest.raises(InvalidArgument):
        db.cache.get_or_set("k", lambda: {1, 2}, ttl=5)
    assert db.cache.get("k") is None


def test_threads_get_the_stale_value_while_one_refreshes(db: Database, clock: FakeClock) -> None:
    calls: list[int] = []
    refreshing = threading.Event()
    finish = threading.Event()

    def slow() -> int:
        calls.append(1)
        if len(calls) > 1:
            refreshing.set()
            finish.wait(10)
        return len(calls)

    assert db.cache.get_or_set("k", slow, ttl=10, stale_ttl=60, early_recompute=0) == 1
    clock.advance(11)  # stale now
    results: list[Any] = []
    refresher = threading.Thread(
        target=lambda: results.append(
            db.cache.get_or_set("k", slow, ttl=10, stale_ttl=60, early_recompute=0)
        )
    )
    refresher.start()
    refreshing.wait(10)
    # While the refresh runs, everyone else gets the stale value at once instead of waiting.
    stale = [
        db.cache.get_or_set("k", slow, ttl=10, stale_ttl=60, early_recompute=0) for _ in range(20)
    ]
    finish.set()
    refresher.join()
    assert stale == [1] * 20
    assert results == [2]
    assert len(calls) == 2
    assert db.cache.stats()["stale_served"] == 20


def test_hits_do_not_wait_for_an_early_recompute(db: Database, clock: FakeClock) -> None:
    core = db.cache._core
    db.cache.get_or_set("k", lambda: "v1", ttl=10)
    token = core.acquire("k", 30)  # a recompute under way elsewhere
    assert token is not None
    clock.advance(9.99)  # XFetch would recompute now, but someone already is
    assert db.cache.get_or_set("k", lambda: "v2", ttl=10, early_recompute=1000) == "v1"
