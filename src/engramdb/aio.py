"""asyncio faces of the API: the same calls as ``engramdb.open()``, awaited.

- ``await engramdb.aio.connect(url)``: a network client of ``engramdb serve``. Failure rules
  are the sync client's: idempotent reads retry once on a fresh connection, a write whose
  outcome is unknown raises ``Timeout``/``Unavailable`` saying so, ``-BUSY`` raises
  ``Overloaded``, a request over the server's frame limit ``RequestTooLarge``.
- ``await engramdb.aio.open(path)``: an embedded database for asyncio applications. Point
  reads run inline (microseconds, no thread hop); writes go to group commit and are awaited
  without blocking the loop while the commit fsyncs; searches, scans and other slow calls
  run on a worker thread. Results and errors are the embedded ones.

The methods are derived from the embedded implementations' declarations
(``client/_generated.py``, ``client/_handles.py``); each face here only moves the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import hiredis

from engramdb.client._core import (
    WRITES,
    Address,
    Decoders,
    encode_call,
    failed_attempt,
    is_fatal,
    parse_url,
    result_of,
)
from engramdb.client._handles import (
    ASYNC_HANDLES,
    AsyncCollection,
    AsyncDatabaseFace,
    AsyncMemoryStore,
    AsyncRecordSet,
    document,
)
from engramdb.errors import AuthError, EngramError, StorageError, Unavailable
from engramdb.observability.metrics import Metrics
from engramdb.protocol.resp import encode_command
from engramdb.records.limits import Limits
from engramdb.vectors.model import CollectionInfo

if TYPE_CHECKING:
    from engramdb.cache.model import AsyncCache
    from engramdb.database import Database
    from engramdb.embedders import Embedder

__all__ = ["AsyncClient", "AsyncCollection", "AsyncDatabase", "AsyncRecordSet", "connect", "open"]

_DECODERS = Decoders("Async", ASYNC_HANDLES)


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


class AsyncClient(AsyncDatabaseFace):
    """``engramdb.Database`` over the network for asyncio code; every call is awaited.

    Args:
        url: ``engramdb://[:password@]host[:port]``.
        timeout: seconds to wait for connecting and for each reply.
        pool_size: most idle connections kept for reuse.
        retries: extra attempts for idempotent reads after a connection failure.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, pool_size: int = 16, retries: int = 1
    ) -> None:
        self.address = parse_url(url)
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._owner = self
        self._pool_size = pool_size
        self._idle: list[_AsyncConn] = []
        self._sets: dict[str, AsyncRecordSet] = {}
        self._closed = False
        self._cache: AsyncCache | None = None
        self._limits: Limits | None = None
        self._metrics = Metrics()

    def __repr__(self) -> str:
        return f"<engramdb.aio.AsyncClient {self.address.host}:{self.address.port}>"

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

    async def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self._closed:
            raise StorageError("the client is closed")
        frame = encode_call(method, args, kwargs)
        metrics = self._metrics.op(method.rpartition(".")[2])
        started = perf_counter_ns()
        try:
            reply = await self._roundtrip(method, frame, method not in WRITES)
            return result_of(method, reply, _DECODERS(method), self)
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
            except OSError as e:  # TimeoutError included
                conn.close()
                last = attempt + 1 == attempts
                failed = failed_attempt(
                    method, e, idempotent=idempotent, last=last, timeout=self.timeout
                )
                if failed is None:
                    continue
                raise failed from e
            if is_fatal(reply):
                conn.close()  # the server closes after a protocol error: do not pool it
            else:
                self._release(conn)
            return reply
        raise AssertionError("unreachable")

    @property
    def limits(self) -> Limits:
        """The server database's size limits (known once connected)."""
        assert self._limits is not None, "connect with engramdb.aio.connect()"
        return self._limits

    async def stats(self) -> dict[str, Any]:
        figures = await super().stats()
        figures["server_operations"] = figures.get("operations", {})
        figures["operations"] = self._metrics.snapshot()
        return figures

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one raw command (e.g. ``"PING"``) and return hiredis' reply."""
        conn = await self._acquire()
        try:
            async with asyncio.timeout(self.timeout):
                reply = await conn.request(encode_command(*args))
        except (OSError, TimeoutError) as e:
            conn.close()
            raise Unavailable(f"connection lost: {e}") from e
        if is_fatal(reply):
            conn.close()
        else:
            self._release(conn)
        return reply

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


document(AsyncClient, "Database")


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
    client._limits = Limits(**(await client._request("db.stats", (), {}))["limits"])
    return client


# in-process ------------------------------------------------------------------------------


class AsyncDatabase(AsyncDatabaseFace):
    """An embedded database for asyncio code (``await engramdb.aio.open(path)``).

    Point reads run inline; writes are committed by group commit and awaited without
    blocking the loop (an fsync never stalls it); slow calls run on ``workers`` threads.
    """

    def __init__(self, db: Database, *, workers: int = 4) -> None:
        from engramdb.dispatch import entry

        self.db = db
        self._owner = self
        self._entry = entry
        self._sets: dict[str, AsyncRecordSet] = {}
        self._cache: AsyncCache | None = None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="engramdb-aio")
        self._metrics = db.metrics

    def __repr__(self) -> str:
        return f"<engramdb.aio.AsyncDatabase {self.db.path or 'memory'}>"

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def limits(self) -> Limits:
        """The database's size limits."""
        return self.db.limits

    async def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        found = self._entry(method, remote=False)
        if found is None:
            raise AssertionError(f"no method {method}")
        db, args, kwargs = self.db, list(args), dict(kwargs)
        if found.kind == "read":
            return self._handle(found.call(db, args, kwargs))
        loop = asyncio.get_running_loop()
        if found.kind == "write":
            # The embedded method is bypassed for its plan, so count the call here.
            metrics = self._metrics.op(method.rpartition(".")[2])
            started = perf_counter_ns()
            try:
                plan = found.call(db, args, kwargs)  # validated here, before anything queues
                done: asyncio.Future[Any] = loop.create_future()

                def settle(value: Any, error: BaseException | None) -> None:
                    loop.call_soon_threadsafe(_settle, done, value, error)

                db._submit(plan, settle)
                return await done
            except EngramError as e:
                metrics.error(type(e).__name__)
                raise
            finally:
                metrics.observe(perf_counter_ns() - started)
        value = await loop.run_in_executor(self._pool, found.call, db, args, kwargs)
        return self._handle(value)

    @staticmethod
    def _encode(form: str, value: Any) -> Any:
        return value  # in-process: arguments need no wire form

    def _handle(self, value: Any) -> Any:
        if type(value).__name__ == "Collection":
            info: CollectionInfo = value.info
            return AsyncCollection(self, info)
        return value

    def memory_with(self, embedder: Embedder, **options: Any) -> AsyncMemoryStore:
        # In-process, the store itself is the address: its embedder runs in its own calls.
        return AsyncMemoryStore(self, self.db.memory_with(embedder, **options))

    async def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)


document(AsyncDatabase, "Database")


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


async def open(path: str | None = None, *, workers: int = 4, **options: Any) -> AsyncDatabase:
    """Open an embedded database for asyncio code; ``options`` as ``engramdb.open()``.

    Opening (creating directories, mapping LMDB) runs on a worker thread."""
    import engramdb

    db = await asyncio.get_running_loop().run_in_executor(
        None, lambda: engramdb.open(path, **options)
    )
    return AsyncDatabase(db, workers=workers)
