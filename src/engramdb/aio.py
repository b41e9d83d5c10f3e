"""The asyncio client: ``await engramdb.aio.connect(url)``; the same calls, awaited.

Built on the same sans-I/O core as the sync client (``engramdb.client._core``): the record
and database methods are written once there; this module only moves bytes. Failure rules are
the sync client's: idempotent reads retry once on a fresh connection, a write whose outcome
is unknown raises ``Timeout``/``Unavailable`` saying so, ``-BUSY`` raises ``Overloaded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import hiredis

from engramdb.cache import Cache
from engramdb.client._core import (
    METHODS,
    Address,
    DatabaseCalls,
    RecordSetCalls,
    encode_call,
    is_fatal,
    parse_url,
    result_of,
)
from engramdb.client._roles import AsyncSessionsCalls, CacheCoreCalls
from engramdb.client._vectors import CollectionCalls, VectorStoreCalls
from engramdb.errors import (
    AuthError,
    EngramError,
    StorageError,
    Timeout,
    Unavailable,
)
from engramdb.observability.metrics import Metrics
from engramdb.protocol.resp import encode_command
from engramdb.records.keys import set_prefix
from engramdb.records.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.records.model import Change, Record, ScanPage
    from engramdb.records.ops import Op
    from engramdb.vectors.model import CollectionInfo, Hit, Item

__all__ = ["AsyncClient", "AsyncCollection", "AsyncRecordSet", "AsyncVectorStore", "connect"]

if TYPE_CHECKING:
    # mypy sees the awaited signatures declared below instead of the shared sync ones.
    class _RecordSetBase:
        name: str

        def __init__(self, owner: Any, name: str) -> None: ...

    class _DatabaseBase:
        pass

    class _VectorStoreBase:
        def __init__(self, owner: Any) -> None: ...

    class _CollectionBase:
        info: CollectionInfo
        name: str

        def __init__(self, owner: Any, info: CollectionInfo) -> None: ...

else:
    _RecordSetBase = RecordSetCalls
    _DatabaseBase = DatabaseCalls
    _VectorStoreBase = VectorStoreCalls
    _CollectionBase = CollectionCalls


class _AsyncConn:
    __slots__ = ("reader", "stream_in", "stream_out")

    def __init__(self, stream_in: asyncio.StreamReader, stream_out: asyncio.StreamWriter) -> None:
        self.stream_in = stream_in
        self.stream_out = stream_out
        self.reader = hiredis.Reader()

    @classmethod
    async def open(cls, address: Address, timeout: float) -> _AsyncConn:
        try:
            async with asyncio.timeout(timeout):
                stream_in, stream_out = await asyncio.open_connection(address.host, address.port)
        except (OSError, TimeoutError) as e:
            raise Unavailable(f"cannot connect to {address.host}:{address.port}: {e}") from e
        conn = cls(stream_in, stream_out)
        if address.password is not None:
            async with asyncio.timeout(timeout):
                reply = await conn.request(encode_command(b"AUTH", address.password.encode()))
            if isinstance(reply, hiredis.ReplyError):
                conn.close()
                raise AuthError(str(reply))
        return conn

    async def request(self, frame: bytes) -> Any:
        self.stream_out.write(frame)
        reader = self.reader
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = await self.stream_in.read(1 << 16)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            reader.feed(data)

    def close(self) -> None:
        self.stream_out.close()


class AsyncClient(_DatabaseBase):
    """``engramdb.Database`` over the network for asyncio code; every call is awaited."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, pool_size: int = 16, retries: int = 1
    ) -> None:
        self.address = parse_url(url)
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._pool_size = pool_size
        self._idle: list[_AsyncConn] = []
        self._sets: dict[str, AsyncRecordSet] = {}
        self._closed = False
        self._cache: Cache | None = None
        self.metrics = Metrics()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _acquire(self) -> _AsyncConn:
        if self._idle:
            return self._idle.pop()
        return await _AsyncConn.open(self.address, self.timeout)

    def _release(self, conn: _AsyncConn) -> None:
        if not self._closed and len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()

    def _call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return self._acall(method, args, kwargs)

    async def _acall(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self._closed:
            raise StorageError("the client is closed")
        frame = encode_call(method, args, kwargs)
        idempotent = METHODS[method].idempotent
        metrics = self.metrics.op(method.rpartition(".")[2])
        started = perf_counter_ns()
        try:
            reply = await self._roundtrip(method, frame, idempotent)
            return result_of(method, reply)
        except EngramError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(perf_counter_ns() - started)

    async def _roundtrip(self, method: str, frame: bytes, idempotent: bool) -> Any:
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            conn = await self._acquire()
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await conn.request(frame)
            except TimeoutError as e:
                conn.close()
                if attempt + 1 < attempts:
                    continue
                unknown = "" if idempotent else "; the write may or may not have been applied"
                raise Timeout(f"{method} timed out after {self.timeout}s{unknown}") from e
            except OSError as e:
                conn.close()
                if attempt + 1 < attempts:
                    continue
                unknown = "" if idempotent else "; the write may or may not have been applied"
                raise Unavailable(f"{method}: connection lost ({e}){unknown}") from e
            if is_fatal(reply):
                conn.close()  # the server closes after a protocol error: do not pool it
            else:
                self._release(conn)
            return reply
        raise AssertionError("unreachable")

    def records(self, set_name: str) -> AsyncRecordSet:
        if self._closed:
            raise StorageError("the client is closed")
        if set_name not in self._sets:
            set_prefix(set_name, DEFAULT_LIMITS)  # the default naming rules, checked here
        return self._sets.setdefault(set_name, AsyncRecordSet(self, set_name))

    @property
    def vectors(self) -> AsyncVectorStore:
        """The embedding store of the server's database; every call is awaited."""
        return AsyncVectorStore(self)

    @property
    def sessions(self) -> AsyncSessionsCalls:
        """Agent sessions of the server's database; every call is awaited."""
        return AsyncSessionsCalls(self)

    @property
    def cache(self) -> Cache:
        """The stampede-proof cache; use ``async def`` loaders (get_or_set is awaited)."""
        if self._cache is None:
            self._cache = Cache(None, async_core=CacheCoreCalls(self))
        return self._cache

    async def _collection(self, info: Any) -> AsyncCollection:
        return AsyncCollection(self, await info)

    async def stats(self) -> dict[str, Any]:
        figures: dict[str, Any] = await self._acall("db.stats", (), {})
        figures["server_operations"] = figures.get("operations", {})
        figures["operations"] = self.metrics.snapshot()
        return figures

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    if TYPE_CHECKING:  # the awaited signatures of DatabaseCalls' methods

        async def sets(self) -> list[str]: ...
        async def changes(self, since: int = 0, *, limit: int = 1000) -> list[Change]: ...
        async def last_sequence(self) -> int: ...
        async def first_sequence(self) -> int: ...
        async def sweep(self, *, limit: int = 10_000) -> int: ...


class AsyncVectorStore(_VectorStoreBase):
    """``db.vectors`` for asyncio code: ``await store.create_collection(...)`` and so on."""

    if TYPE_CHECKING:  # the awaited signatures of VectorStoreCalls' methods

        async def create_collection(
            self,
            name: str,
            dim: int,
            metric: str = "cosine",
            *,
            text: bool = True,
            m: int = 16,
            ef_construction: int = 200,
            ef_search: int = 64,
            exact_threshold: int = 4096,
            exist_ok: bool = False,
        ) -> AsyncCollection: ...
        async def get_collection(self, name: str) -> AsyncCollection: ...
        async def list_collections(self) -> list[CollectionInfo]: ...
        async def drop_collection(self, name: str) -> bool: ...


class AsyncCollection(_CollectionBase):
    """A collection for asyncio code: every method returns an awaitable."""

    if TYPE_CHECKING:  # the awaited signatures of CollectionCalls' methods

        async def upsert(
            self,
            ids: Sequence[str | int],
            vectors: Any,
            metadata: Sequence[Mapping[str, Any] | None] | None = None,
            texts: Sequence[str | None] | None = None,
            *,
            ttl: float | None = None,
            expect_generation: Sequence[int | None] | None = None,
        ) -> list[int]: ...
        async def delete(self, ids: Sequence[str | int]) -> int: ...
        async def touch(self, ids: Sequence[str | int], ttl: float) -> int: ...
        async def get(self, ids: Sequence[str | int]) -> list[Item | None]: ...
        async def count(self) -> int: ...
        async def search(
            self,
            vector: Any,
            k: int = 10,
            *,
            filter: Mapping[str, Any] | None = None,
            ef: int | None = None,
            include: Sequence[str] = ...,
        ) -> list[Hit]: ...
        async def search_many(
            self,
            vectors: Any,
            k: int = 10,
            *,
            filter: Mapping[str, Any] | None = None,
            ef: int | None = None,
            include: Sequence[str] = ...,
        ) -> list[list[Hit]]: ...
        async def text_search(
            self,
            query: str,
            k: int = 10,
            *,
            filter: Mapping[str, Any] | None = None,
            include: Sequence[str] = ...,
        ) -> list[Hit]: ...
        async def hybrid_search(
            self,
            text: str,
            vector: Any,
            k: int = 10,
            *,
            fusion: str = "rrf",
            alpha: float = 0.5,
            filter: Mapping[str, Any] | None = None,
            candidates: int | None = None,
            ef: int | None = None,
            include: Sequence[str] = ...,
        ) -> list[Hit]: ...


class AsyncRecordSet(_RecordSetBase):
    """``engramdb.RecordSet`` over the network for asyncio code."""

    async def iterate(
        self, prefix: str | bytes | None = None, *, batch: int = 1000
    ) -> AsyncIterator[Record]:
        cursor: str | None = None
        while True:
            page = await self.scan(prefix, cursor=cursor, limit=batch)
            for record in page.records:
                yield record
            if page.cursor is None:
                return
            cursor = page.cursor

    if TYPE_CHECKING:  # the awaited signatures of RecordSetCalls' methods

        async def get(self, key: Key) -> Record | None: ...
        async def get_many(self, keys: Sequence[Key]) -> list[Record | None]: ...
        async def exists(self, key: Key) -> bool: ...
        async def count(self) -> int: ...
        async def scan(
            self, prefix: str | bytes | None = None, *, cursor: str | None = None, limit: int = 100
        ) -> ScanPage: ...
        async def put(
            self,
            key: Key,
            bins: Mapping[str, Any],
            *,
            ttl: float | None = None,
            expect_generation: int | None = None,
            create_only: bool = False,
            update_only: bool = False,
        ) -> int: ...
        async def update(
            self,
            key: Key,
            bins: Mapping[str, Any],
            *,
            ttl: float | None = None,
            expect_generation: int | None = None,
            create_only: bool = False,
            update_only: bool = False,
        ) -> int: ...
        async def delete(self, key: Key, *, expect_generation: int | None = None) -> bool: ...
        async def touch(
            self, key: Key, ttl: float, *, expect_generation: int | None = None
        ) -> int: ...
        async def operate(
            self,
            key: Key,
            ops: Sequence[Op],
            *,
            ttl: float | None = None,
            expect_generation: int | None = None,
            create_only: bool = False,
            update_only: bool = False,
        ) -> list[Any]: ...


async def connect(
    url: str = "engramdb://127.0.0.1:7379",
    *,
    timeout: float = 5.0,
    pool_size: int = 16,
    retries: int = 1,
) -> AsyncClient:
    """Connect to an ``engramdb serve`` server (asyncio)."""
    client = AsyncClient(url, timeout=timeout, pool_size=pool_size, retries=retries)
    client._release(await _AsyncConn.open(client.address, timeout))  # fail fast
    return client
