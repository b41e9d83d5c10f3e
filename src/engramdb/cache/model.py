"""``db.cache``: a cache-aside helper that cannot stampede.

``get_or_set(key, loader, ttl=...)`` returns the cached value or computes it, with:

- **Single flight.** Concurrent misses on one key run the loader once. In one process,
  threads (or asyncio tasks) wait on the first caller's flight; across processes and clients,
  the caller that wins a *lease* (a record created with ``create_only`` and a TTL, so a
  crashed holder frees it by expiring) loads while the others poll for its result. Waiters
  get the value, or the loader's exception (in other processes as ``LoaderError``).
- **Probabilistic early recomputation** (XFetch, Vattani et al. 2015): a hit recomputes
  early with probability rising as expiry nears, scaled by how long the last computation
  took (``early_recompute`` is the beta; 0 turns it off), so a hot key is refreshed before
  it expires instead of by everyone at once.
- **Stale-while-revalidate.** For ``stale_ttl`` seconds after expiry the old value is served
  while one caller (the lease holder) refreshes it.
- **No stale sets.** ``delete(key)`` removes the value *and* the lease in one write, and a
  loader's result is stored only together with the removal of its own lease: a loader that
  started before an invalidation cannot write back the data it invalidated (memcache's
  lease-token fix).

The algorithm is written once as a generator of effects (peek, acquire, load, fill, sleep);
a sync and an async driver run it against a ``CacheCore``, which is local for an embedded
database and remote for a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from engramdb.errors import EngramError, InvalidArgument, Timeout
from engramdb.records.codec import check_value, encode_value
from engramdb.records.limits import Limits
from engramdb.records.writes import check_ttl

__all__ = ["Cache", "LoaderError", "ThreadedCore"]

ERROR_GRACE = 1.0  # seconds a failed load's error stays visible to waiters elsewhere
T = TypeVar("T")


class LoaderError(EngramError):
    """The loader failed in another process or client (its type and message are kept)."""


# the algorithm, as effects ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Peek:
    key: str


@dataclass(frozen=True, slots=True)
class _Acquire:
    key: str
    lease_ttl: float


@dataclass(frozen=True, slots=True)
class _Load:
    pass


@dataclass(frozen=True, slots=True)
class _Fill:
    key: str
    token: str
    value: Any
    ttl: float
    stale_ttl: float
    delta: float
    error: str | None

    def args(self) -> tuple[Any, ...]:
        return (self.key, self.token, self.value, self.ttl, self.stale_ttl, self.delta, self.error)


@dataclass(frozen=True, slots=True)
class _Release:
    key: str
    token: str
    error: str | None


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Options:
    ttl: float
    stale_ttl: float
    early_recompute: float
    negative_ttl: float
    lease_ttl: float
    wait_timeout: float


class _Loaded:
    """What ``_Load`` gives back: a value and the seconds it took, or the exception."""

    __slots__ = ("error", "seconds", "value")

    def __init__(self, value: Any, seconds: float, error: BaseException | None) -> None:
        self.value, self.seconds, self.error = value, seconds, error


Flow = Generator[Any, Any, Any]


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = dict.fromkeys(
            ("hits", "misses", "loader_calls", "stale_served", "early_recomputes",
             "lease_waits", "loader_errors", "invalidated_fills"),
            0,
        )  # fmt: skip

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


_LOAD: Any = object()  # "no answer without loading"


def _early(entry: dict[str, Any], options: _Options, rng: random.Random) -> bool:
    """XFetch: recompute once now - delta * beta * ln(U) reaches the expiry."""
    beta = options.early_recompute
    return (
        beta > 0
        and entry["now"] - entry["delta"] * beta * math.log(max(rng.random(), 1e-300))
        >= entry["exp"]
    )


def _quick(
    entry: dict[str, Any], options: _Options, counters: _Counters, rng: random.Random, busy: bool
) -> Any:
    """The answer a caller can have from what is stored, or ``_LOAD``. ``busy``: a load of
    this key is already under way (in this process, or anywhere: its lease is held)."""
    busy = busy or (entry.get("lease") is not None and "error" not in entry["lease"])
    fresh = "exp" in entry and entry["now"] < entry["exp"]
    if fresh and "err" in entry:
        counters.add("hits")
        raise LoaderError(entry["err"])
    if "v" not in entry:
        return _LOAD
    if fresh and (busy or not _early(entry, options, rng)):
        counters.add("hits")
        return entry["v"]
    if not fresh and busy:  # stale but kept: served while the load under way refreshes it
        counters.add("stale_served")
        return entry["v"]
    return _LOAD


def _flow(
    key: str,
    options: _Options,
    counters: _Counters,
    rng: random.Random,
    judged: dict[str, Any] | None = None,
) -> Flow:
    """One get_or_set by the caller that loads, as a generator of effects.

    ``judged``: an entry the caller already peeked and ``_quick`` answered ``_LOAD`` for.
    It is not judged again: a second XFetch draw would square the early-recompute chance.
    """
    deadline = time.monotonic() + options.wait_timeout
    pause = 0.001
    first = True
    while True:
        if judged is not None:
            entry, judged = judged, None
        else:
            entry = yield _Peek(key)
            answer = _quick(entry, options, counters, rng, busy=False)
            if answer is not _LOAD:
                return answer
        lease = entry.get("lease")
        fresh_or_stale = "v" in entry
        if lease is not None and "error" in lease:
            if not first:  # we were waiting for that load: its failure is our answer
                raise LoaderError(lease["error"])
            lease = None  # a failure before we came: not cached, so load again
        if lease is None:
            if first and not fresh_or_stale:
                counters.add("misses")
            token = yield _Acquire(key, options.lease_ttl)
            if token is not None:
                again = yield _Peek(key)
                if (
                    "v" in again
                    and again["now"] < again["exp"]
                    and not (fresh_or_stale and again.get("exp") == entry.get("exp"))
                ):
                    # Someone stored a fresh value between our look and our lease.
                    yield _Release(key, token, None)
                    counters.add("hits")
                    return again["v"]
                if fresh_or_stale and again["now"] < again["exp"]:
                    counters.add("early_recomputes")
                return (yield from _load(key, token, options, counters))
        # Someone else (another process or client) is loading: wait for its result.
        if first:
            counters.add("lease_waits")
        first = False
        if time.monotonic() > deadline:
            raise Timeout(f"waited {options.wait_timeout}s for another caller to load {key!r}")
        yield _Sleep(pause)
        pause = min(pause * 2, 0.02)


def _load(key: str, token: str, options: _Options, counters: _Counters) -> Flow:
    counters.add("loader_calls")
    loaded: _Loaded = yield _Load()
    if loaded.error is not None:
        counters.add("loader_errors")
        text = _describe(loaded.error)
        if options.negative_ttl > 0:
            yield _Fill(key, token, None, options.negative_ttl, 0.0, loaded.seconds, text)
        else:
            yield _Release(key, token, text)
        raise loaded.error
    stored = yield _Fill(
        key, token, loaded.value, options.ttl, options.stale_ttl, loaded.seconds, None
    )
    if not stored:
        counters.add("invalidated_fills")  # invalidated while loading: not written back
    return loaded.value


# drivers ---------------------------------------------------------------------------------


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Cache:
    """The stampede-proof cache of one database (``db.cache``) or client.

    Args:
        core: the storage primitives (local ``CacheCore`` or a client's remote one).
        async_core: the same for asyncio callers (methods may return awaitables).
    """

    def __init__(
        self, core: Any, *, async_core: Any = None, rng: random.Random | None = None
    ) -> None:
        self._core = core
        self._async_core = async_core
        self._rng = rng or random.Random()
        self._counters = _Counters()
        self._flights: dict[str, _Flight] = {}
        self._aflights: dict[tuple[int, str], asyncio.Future[Any]] = {}
        self._lock = threading.Lock()

    @property
    def core(self) -> Any:
        """The storage primitives this cache runs over (what the server serves remotely)."""
        return self._core

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: float,
        stale_ttl: float = 0.0,
        early_recompute: float = 1.0,
        negative_ttl: float = 0.0,
        lease_ttl: float = 10.0,
        wait_timeout: float = 30.0,
    ) -> Any:
        """The value under ``key``, loading it with ``loader()`` on a miss (see the module).

        With an ``async def`` loader this returns an awaitable. ``ttl``: seconds a value is
        fresh; ``stale_ttl``: seconds after that it may be served while refreshed;
        ``negative_ttl``: seconds a failure is cached (0: never); ``lease_ttl``: how long a
        crashed loader can hold the key; ``wait_timeout``: longest wait for another loader.
        """
        if type(key) is not str or not key:
            raise InvalidArgument("cache keys are non-empty str")
        if not callable(loader):
            raise InvalidArgument("loader must be callable")
        check_ttl(ttl)
        for name, value in (("stale_ttl", stale_ttl), ("early_recompute", early_recompute),
                            ("negative_ttl", negative_ttl)):  # fmt: skip
            if type(value) not in (int, float) or value < 0 or value != value:
                raise InvalidArgument(f"{name} must be a non-negative number")
        check_ttl(lease_ttl)
        options = _Options(ttl, stale_ttl, early_recompute, negative_ttl, lease_ttl, wait_timeout)
        if inspect.iscoroutinefunction(loader):
            return self._aget_or_set(key, loader, options)
        return self._get_or_set(key, loader, options)

    # sync --------------------------------------------------------------------------------

    def _get_or_set(self, key: str, loader: Callable[[], Any], options: _Options) -> Any:
        # Hits, and stale or early values while a load is under way, are answered here,
        # without the flight table: only callers who need the loader wait for one.
        entry = self._core.peek(key)
        answer = _quick(entry, options, self._counters, self._rng, busy=key in self._flights)
        if answer is not _LOAD:
            return answer
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            # Another thread of this process is on it: share its outcome.
            self._counters.add("lease_waits")
            if not flight.done.wait(options.wait_timeout + options.lease_ttl):
                raise Timeout(f"waited for another thread to load {key!r}")
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flow = _flow(key, options, self._counters, self._rng, judged=entry)
            flight.value = self._run(flow, loader)
            return flight.value
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _run(self, flow: Flow, loader: Callable[[], Any]) -> Any:
        core = self._core
        held: list[tuple[str, str]] = []  # the (key, token) of a lease this call holds
        try:
            return self._drive(flow, loader, core, held)
        except BaseException:
            # A fill refused by the store (too big, say) or an interrupt mid-load: give the
            # lease back at once instead of making everyone else wait out its TTL.
            if held:
                key, token = held[0]
                with contextlib.suppress(Exception):  # best effort: it also expires by TTL
                    core.release(key, token, None)
            raise

    def _drive(
        self, flow: Flow, loader: Callable[[], Any], core: Any, held: list[tuple[str, str]]
    ) -> Any:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration as done:
                return done.value
            kind = type(effect)
            if kind is _Peek:
                reply = core.peek(effect.key)
            elif kind is _Acquire:
                reply = core.acquire(effect.key, effect.lease_ttl)
                if reply is not None:
                    held[:] = [(effect.key, reply)]
            elif kind is _Load:
                started = time.perf_counter()
                try:
                    value = loader()
                    _check_storable(value)
                    reply = _Loaded(value, time.perf_counter() - started, None)
                except Exception as e:
                    reply = _Loaded(None, time.perf_counter() - started, e)
            elif kind is _Fill:
                reply = core.fill(*effect.args())
                held.clear()
            elif kind is _Release:
                reply = core.release(effect.key, effect.token, effect.error)
                held.clear()
            elif kind is _Sleep:
                time.sleep(effect.seconds)
                reply = None

    # async -------------------------------------------------------------------------------

    async def _aget_or_set(
        self, key: str, loader: Callable[[], Awaitable[Any]], options: _Options
    ) -> Any:
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = await _maybe(self._async_core.peek(key))
        answer = _quick(entry, options, self._counters, self._rng, busy=slot in self._aflights)
        if answer is not _LOAD:
            return answer
        waiting = self._aflights.get(slot)
        if waiting is not None:
            self._counters.add("lease_waits")
            return await asyncio.shield(waiting)
        future: asyncio.Future[Any] = loop.create_future()
        self._aflights[slot] = future
        try:
            flow = _flow(key, options, self._counters, self._rng, judged=entry)
            value = await self._arun(flow, loader)
            future.set_result(value)
            return value
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._aflights.pop(slot, None)

    async def _arun(self, flow: Flow, loader: Callable[[], Awaitable[Any]]) -> Any:
        core = self._async_core
        held: list[tuple[str, str]] = []
        try:
            return await self._adrive(flow, loader, core, held)
        except BaseException:
            if held:  # as in _run; also when the caller's task was cancelled mid-load
                key, token = held[0]
                with contextlib.suppress(Exception):  # best effort: it also expires by TTL
                    await _maybe(core.release(key, token, None))
            raise

    async def _adrive(
        self,
        flow: Flow,
        loader: Callable[[], Awaitable[Any]],
        core: Any,
        held: list[tuple[str, str]],
    ) -> Any:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration as done:
                return done.value
            kind = type(effect)
            if kind is _Peek:
                reply = await _maybe(core.peek(effect.key))
            elif kind is _Acquire:
                reply = await _maybe(core.acquire(effect.key, effect.lease_ttl))
                if reply is not None:
                    held[:] = [(effect.key, reply)]
            elif kind is _Load:
                started = time.perf_counter()
                try:
                    value = await loader()
                    _check_storable(value)
                    reply = _Loaded(value, time.perf_counter() - started, None)
                except Exception as e:
                    reply = _Loaded(None, time.perf_counter() - started, e)
            elif kind is _Fill:
                reply = await _maybe(core.fill(*effect.args()))
                held.clear()
            elif kind is _Release:
                reply = await _maybe(core.release(effect.key, effect.token, effect.error))
                held.clear()
            elif kind is _Sleep:
                await asyncio.sleep(effect.seconds)
                reply = None

    # the rest ----------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The fresh value under ``key``, or None (no loading, no lease)."""
        entry = self._core.peek(key)
        if "v" in entry and entry["now"] < entry["exp"]:
            return entry["v"]
        return None

    def set(self, key: str, value: Any, *, ttl: float, stale_ttl: float = 0.0) -> None:
        """Store ``value`` now (refusing the write-back of any load in flight)."""
        _check_storable(value)
        self._core.set(key, value, ttl, stale_ttl)

    def delete(self, key: str) -> bool:
        """Invalidate ``key``: its value goes, and a load in flight cannot write back."""
        return bool(self._core.delete(key))

    def memoize(
        self, *, ttl: float, stale_ttl: float = 0.0, early_recompute: float = 1.0,
        negative_ttl: float = 0.0, prefix: str | None = None,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:  # fmt: skip
        """Decorator: cache a function's results by its (msgpack-able) arguments."""
        check_ttl(ttl)

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            name = prefix or f"memo:{fn.__module__}.{fn.__qualname__}"

            def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                try:
                    digest = hashlib.blake2b(
                        encode_value([list(args), sorted(kwargs.items())]), digest_size=16
                    ).hexdigest()
                except (TypeError, InvalidArgument) as e:
                    raise InvalidArgument(f"memoized arguments must be msgpack-able: {e}") from e
                return f"{name}:{digest}"

            options = {"ttl": ttl, "stale_ttl": stale_ttl, "early_recompute": early_recompute,
                       "negative_ttl": negative_ttl}  # fmt: skip
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self.get_or_set(
                        key_of(args, kwargs), lambda: fn(*args, **kwargs), **options
                    )

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> T:
                return self.get_or_set(  # type: ignore[no-any-return]
                    key_of(args, kwargs), lambda: fn(*args, **kwargs), **options
                )

            return wrapper

        return decorate

    def stats(self) -> dict[str, int]:
        """hits, misses, loader_calls, stale_served, early_recomputes, lease_waits,
        loader_errors and invalidated_fills since this cache object was created."""
        with self._counters.lock:
            return dict(self._counters.values)

    def close(self) -> None:
        pass


_ANY_SIZE = Limits(max_vector_dim=1 << 30)  # sizes are the store's to judge, types ours


def _check_storable(value: Any) -> None:
    check_value(value, _ANY_SIZE, "cached value")


async def _maybe(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


class ThreadedCore:
    """A blocking core for asyncio callers: calls that may wait (an fsync, a network round
    trip) run on a worker thread so they never block the event loop. ``local_reads``: peeks
    are in-process LMDB reads, cheap enough to run inline."""

    def __init__(self, core: Any, *, local_reads: bool = False) -> None:
        self._core = core
        self._local_reads = local_reads

    async def peek(self, key: str) -> dict[str, Any]:
        if self._local_reads:
            return self._core.peek(key)  # type: ignore[no-any-return]
        return await asyncio.to_thread(self._core.peek, key)

    async def acquire(self, key: str, lease_ttl: float) -> str | None:
        return await asyncio.to_thread(self._core.acquire, key, lease_ttl)

    async def fill(self, *args: Any) -> bool:
        return await asyncio.to_thread(self._core.fill, *args)

    async def release(self, *args: Any) -> None:
        await asyncio.to_thread(self._core.release, *args)
