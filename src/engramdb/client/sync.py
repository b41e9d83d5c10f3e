"""The blocking client: ``engramdb.connect(url)`` gives the ``Database`` interface over TCP.

A thread-safe pool of sockets; each call borrows one, sends one request, reads one reply
(hiredis parses it) and returns the socket. The methods themselves are derived from the
embedded implementations' declarations (``client/_generated.py``, ``client/_handles.py``);
this module only moves bytes. Failures and what they mean:

- Cannot connect: ``Unavailable`` (nothing was sent, so the call did not happen).
- The connection breaks or times out after a request was sent: reads (idempotent) are retried
  once on a fresh connection; writes raise ``Unavailable``/``Timeout`` saying their outcome
  is unknown, because the server may have applied them.
- ``-BUSY``: ``Overloaded`` (the server shed the request before running it; back off).
- A request over the server's frame limit: ``RequestTooLarge`` (nothing was written).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping, Sequence
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
    SYNC_HANDLES,
    RemoteDatabaseFace,
    RemoteRecordSet,
    document,
)
from engramdb.errors import AuthError, EngramError, StorageError, Unavailable
from engramdb.observability.metrics import Metrics
from engramdb.protocol.resp import encode_command
from engramdb.records.limits import Limits

if TYPE_CHECKING:
    from engramdb.cache.model import Cache

__all__ = ["Client", "RemoteRecordSet", "connect"]

_DECODERS = Decoders("", SYNC_HANDLES)


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


class Client(RemoteDatabaseFace):
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
        self._owner = self
        self._pool_size = pool_size
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._sets: dict[str, RemoteRecordSet] = {}
        self._closed = False
        self._cache: Cache | None = None
        self._limits: Limits | None = None
        self._metrics = Metrics()
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

    def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self._closed:
            raise StorageError("the client is closed")
        frame = encode_call(method, args, kwargs)
        metrics = self._metrics.op(method.rpartition(".")[2])
        started = perf_counter_ns()
        try:
            reply = self._roundtrip(method, frame, method not in WRITES)
            return result_of(method, reply, _DECODERS(method), self)
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
        """The server database's size limits."""
        if self._limits is None:
            self._limits = Limits(**self._request("db.stats", (), {})["limits"])
        return self._limits

    def stats(self) -> dict[str, Any]:
        figures = super().stats()
        figures["server_operations"] = figures.get("operations", {})
        figures["operations"] = self._metrics.snapshot()
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


document(Client, "Database")


def connect(
    url: str = "engramdb://127.0.0.1:7379",
    *,
    timeout: float = 5.0,
    pool_size: int = 16,
    retries: int = 1,
) -> Client:
    """Connect to an ``engramdb serve`` server: the ``engramdb.open()`` interface, remote."""
    return Client(url, timeout=timeout, pool_size=pool_size, retries=retries)
