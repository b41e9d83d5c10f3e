"""The blocking client: ``engramdb.connect(url)`` gives the ``Database`` interface over TCP.

A thread-safe pool of sockets; each call borrows one, sends one request, reads one reply
(hiredis parses it) and returns the socket. Failures and what they mean:

- Cannot connect: ``Unavailable`` (nothing was sent, so the call did not happen).
- The connection breaks or times out after a request was sent: reads (idempotent) are retried
  once on a fresh connection; writes raise ``Unavailable``/``Timeout`` saying their outcome
  is unknown, because the server may have applied them.
- ``-BUSY``: ``Overloaded`` (the server shed the request before running it; back off).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from time import perf_counter_ns
from typing import Any

import hiredis

from engramdb.cache import Cache, ThreadedCore
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
from engramdb.client._features import RemoteFeatureStore
from engramdb.client._roles import CacheCoreCalls, MemoryCalls, SessionsCalls
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
from engramdb.records.model import Record
from engramdb.vectors.model import CollectionInfo

__all__ = ["Client", "RemoteRecordSet", "connect"]


class _Conn:
    __slots__ = ("reader", "sock")

    def __init__(self, address: Address, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        except OSError as e:
            raise Unavailable(f"cannot connect to {address.host}:{address.port}: {e}") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        if address.password is not None:
            reply = self.request(encode_command(b"AUTH", address.password.encode()))
            if isinstance(reply, hiredis.ReplyError):
                self.close()
                raise AuthError(str(reply))

    def request(self, frame: bytes) -> Any:
        try:
            self.sock.sendall(frame)
        except OSError:
            # A server that refuses a too-large request replies and closes while we are
            # still sending; its reply, when there is one, says what happened.
            with contextlib.suppress(OSError):
                return self.read()
            raise
        return self.read()

    def read(self) -> Any:
        reader = self.reader
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            reader.feed(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Client(DatabaseCalls):
    """A remote database with the same interface as ``engramdb.Database``.

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
        self._pool_size = pool_size
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._sets: dict[str, RemoteRecordSet] = {}
        self._closed = False
        self._cache: Cache | None = None
        self.metrics = Metrics()
        self._release(self._connect())  # fail fast on a bad address or password

    def __repr__(self) -> str:
        return f"<engramdb.Client {self.address.host}:{self.address.port}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> _Conn:
        return _Conn(self.address, self.timeout)

    def _acquire(self) -> _Conn:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def _call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self._closed:
            raise StorageError("the client is closed")
        frame = encode_call(method, args, kwargs)
        spec = METHODS[method]
        metrics = self.metrics.op(method.rpartition(".")[2])
        started = perf_counter_ns()
        try:
            reply = self._roundtrip(method, frame, spec.idempotent)
            return result_of(method, reply)
        except EngramError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(perf_counter_ns() - started)

    def _roundtrip(self, method: str, frame: bytes, idempotent: bool) -> Any:
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            conn = self._acquire()
            try:
                reply = conn.request(frame)
            except TimeoutError as e:
                conn.close()
                if attempt + 1 < attempts:
                    continue
                if idempotent:
                    raise Timeout(f"{method} timed out after {self.timeout}s") from e
                raise Timeout(
                    f"{method} timed out after {self.timeout}s; the write may or may not "
                    "have been applied"
                ) from e
            except OSError as e:
                conn.close()
                if attempt + 1 < attempts:
                    continue
                if idempotent:
                    raise Unavailable(f"{method} failed: connection lost ({e})") from e
                raise Unavailable(
                    f"{method}: connection lost after the request was sent ({e}); the write "
                    "may or may not have been applied"
                ) from e
            if is_fatal(reply):
                conn.close()  # the server closes after a protocol error: do not pool it
            else:
                self._release(conn)
            return reply
        raise AssertionError("unreachable")

    def records(self, set_name: str) -> RemoteRecordSet:
        if self._closed:
            raise StorageError("the client is closed")
        found = self._sets.get(set_name)
        if found is None:
            set_prefix(set_name, DEFAULT_LIMITS)  # the default naming rules, checked here
            found = self._sets.setdefault(set_name, RemoteRecordSet(self, set_name))
        return found

    @property
    def vectors(self) -> RemoteVectorStore:
        """The embedding store of the server's database."""
        return RemoteVectorStore(self)

    @property
    def sessions(self) -> SessionsCalls:
        """Agent sessions of the server's database."""
        return SessionsCalls(self)

    @property
    def memory(self) -> MemoryCalls:
        """Long-term memory of the server's database (embedded by the server)."""
        return MemoryCalls(self)

    @property
    def features(self) -> RemoteFeatureStore:
        """The feature store of the server's database."""
        return RemoteFeatureStore(self)

    @property
    def cache(self) -> Cache:
        """The stampede-proof cache, over the server's storage primitives."""
        if self._cache is None:
            core = CacheCoreCalls(self)
            self._cache = Cache(core, async_core=ThreadedCore(core))
        return self._cache

    def _collection(self, info: CollectionInfo) -> RemoteCollection:
        return RemoteCollection(self, info)

    def stats(self) -> dict[str, Any]:
        """The server database's stats, with ``operations`` as this client observed them
        (``server_operations`` keeps the server's own)."""
        figures: dict[str, Any] = self._call("db.stats", (), {})
        figures["server_operations"] = figures.get("operations", {})
        figures["operations"] = self.metrics.snapshot()
        return figures

    def execute(self, *args: bytes | str | int) -> Any:
        """Send one raw command (e.g. ``"PING"``) and return hiredis' reply."""
        conn = self._acquire()
        try:
            reply = conn.request(encode_command(*args))
        except OSError as e:
            conn.close()
            raise Unavailable(f"connection lost: {e}") from e
        if is_fatal(reply):
            conn.close()
        else:
            self._release(conn)
        return reply

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class RemoteVectorStore(VectorStoreCalls):
    """``db.vectors`` over the network (sync)."""

    def create_collection(self, *args: Any, **kwargs: Any) -> RemoteCollection:
        return super().create_collection(*args, **kwargs)  # type: ignore[no-any-return]

    def get_collection(self, name: str) -> RemoteCollection:
        return super().get_collection(name)  # type: ignore[no-any-return]


class RemoteCollection(CollectionCalls):
    """``engramdb.vectors.Collection`` over the network (sync)."""


class RemoteRecordSet(RecordSetCalls):
    """``engramdb.RecordSet`` over the network (sync)."""

    def iterate(self, prefix: str | bytes | None = None, *, batch: int = 1000) -> Iterator[Record]:
        cursor: str | None = None
        while True:
            page = self.scan(prefix, cursor=cursor, limit=batch)
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor


def connect(
    url: str = "engramdb://127.0.0.1:7379",
    *,
    timeout: float = 5.0,
    pool_size: int = 16,
    retries: int = 1,
) -> Client:
    """Connect to an ``engramdb serve`` server: the ``engramdb.open()`` interface, remote."""
    return Client(url, timeout=timeout, pool_size=pool_size, retries=retries)
