"""asyncio faces of the API: the same calls as ``engramdb.open()``, awaited.

- ``await engramdb.aio.connect(url)``: a network client of ``engramdb serve``, with the sync
  client's failure rules (``client._core.Pool``).
- ``await engramdb.aio.open(path)``: an embedded database for asyncio applications. Point
  reads run inline (microseconds, no thread hop); writes go to group commit and are awaited
  without blocking the loop while the commit fsyncs; searches, scans and other slow calls
  run on a worker thread. Results and errors are the embedded ones.

The methods are generated (``client/_generated.py``); each face here only moves the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import hiredis

from engramdb.client._core import Address, Pool
from engramdb.client._generated import (
    AsyncCollection,
    AsyncDatabaseFace,
    AsyncMemoryStore,
    AsyncRecordSet,
)
from engramdb.errors import AuthError, Unavailable
from engramdb.observability.calls import Measured
from engramdb.protocol.resp import encode_command
from engramdb.records.limits import Limits

if TYPE_CHECKING:
    from engramdb.client.hedge import Hedge
    from engramdb.database import Database
    from engramdb.embedders import Embedder

__all__ = ["AsyncClient", "AsyncCollection", "AsyncDatabase", "AsyncRecordSet", "connect", "open"]


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


class AsyncClient(Pool, AsyncDatabaseFace):
    """``engramdb.Database`` over the network for asyncio code; every call is awaited.

    Args:
        url: ``engramdb://[:password@]host[:port]``.
        timeout: seconds to wait for connecting and for each reply.
        pool_size: most idle connections kept for reuse.
        retries: extra attempts for idempotent reads after a connection failure.
    """

    _label = "engramdb.aio.AsyncClient"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _acquire(self) -> _AsyncConn:
        conn: _AsyncConn | None = self._idle_conn()
        return await _AsyncConn.open(self.address, self.timeout) if conn is None else conn

    async def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        with Measured(self._meter, method, self._tracer, args) as trace:
            frame = self._frame(method, args, kwargs, trace)
            return self._decoded(method, await self._roundtrip(method, frame))

    async def _roundtrip(self, method: str, frame: bytes) -> Any:
        for last in self._attempts(method):
            conn = await self._acquire()
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await conn.request(frame)
            except OSError as e:  # TimeoutError included
                self._failed(conn, method, e, last)
                continue
            return self._release(conn, reply)
        raise AssertionError("unreachable")

    def _limits(self) -> Limits:
        assert self._server_limits is not None, "connect with engramdb.aio.connect()"
        return self._server_limits

    async def stats(self) -> dict[str, Any]:
        return self._with_client_figures(await super().stats())

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one raw command (e.g. ``"PING"``) and return hiredis' reply."""
        return await self._roundtrip("execute", encode_command(*args))

    async def _close(self) -> None:
        self._close_idle()


async def connect(
    url: str | Sequence[str] = "engramdb://127.0.0.1:7379",
    *,
    timeout: float = 5.0,
    pool_size: int = 16,
    retries: int = 1,
    hedge: bool | Hedge = False,
) -> AsyncClient:
    """Connect to an ``engramdb serve`` server (asyncio); ``hedge`` hedges reads over several."""
    from engramdb.client.ahedged import connected

    return await connected(url, hedge, timeout=timeout, pool_size=pool_size, retries=retries)


# in-process ------------------------------------------------------------------------------


class AsyncDatabase(AsyncDatabaseFace):
    """An embedded database for asyncio code (``await engramdb.aio.open(path)``).

    Point reads run inline; writes are committed by group commit and awaited without
    blocking the loop (an fsync never stalls it); slow calls run on ``workers`` threads."""

    def __init__(self, db: Database, *, workers: int = 4) -> None:
        from engramdb.dispatch import entry

        self.db = db
        self._owner = self
        self._entry = entry
        self._sets: dict[str, AsyncRecordSet] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="engramdb-aio")
        self._meter = db.metrics

    def __repr__(self) -> str:
        return f"<engramdb.aio.AsyncDatabase {self.db.path or 'memory'}>"

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _limits(self) -> Limits:
        return self.db.limits

    async def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        found = self._entry(method, remote=False)
        assert found is not None, f"no method {method}"
        db, args, kwargs = self.db, list(args), dict(kwargs)
        if found.kind == "read":
            return self._handle(found.call(db, args, kwargs))
        if found.kind == "write":
            # The embedded method is bypassed for its plan, so count the call here.
            with Measured(self._meter, method, db._tracer, args):
                plan = found.call(db, args, kwargs)  # validated here, before anything queues
                done: Future[Any] = Future()
                done.set_running_or_notify_cancel()  # a cancelled caller leaves it to commit
                db._submit(plan, lambda v, e: done.set_exception(e) if e else done.set_result(v))
                return await asyncio.wrap_future(done)
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(self._pool, found.call, db, args, kwargs)
        return self._handle(value)

    @staticmethod
    def _encode(form: str, value: Any) -> Any:
        return value  # in-process: arguments need no wire form

    def _handle(self, value: Any) -> Any:
        if type(value).__name__ == "Collection":
            return AsyncCollection(self, value.info)
        return value

    def _memory_with(self, embedder: Embedder, **options: Any) -> AsyncMemoryStore:
        # In-process, the store itself is the address: its embedder runs in its own calls.
        return AsyncMemoryStore(self, self.db.memory_with(embedder, **options))

    async def _close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)


async def open(path: str | None = None, *, workers: int = 4, **options: Any) -> AsyncDatabase:
    """Open an embedded database for asyncio code; ``options`` as ``engramdb.open()``.

    Opening (creating directories, mapping LMDB) runs on a worker thread."""
    import engramdb

    db = await asyncio.get_running_loop().run_in_executor(
        None, lambda: engramdb.open(path, **options)
    )
    return AsyncDatabase(db, workers=workers)
