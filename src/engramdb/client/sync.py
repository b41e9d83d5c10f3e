"""The blocking client: ``engramdb.connect(url)`` gives the ``Database`` interface over TCP.

A thread-safe pool of sockets; each call borrows one, sends one request, reads one reply
(hiredis parses it) and returns the socket. The methods are generated from the embedded
implementations' declarations (``client/_generated.py``); this module only moves bytes, by
the failure rules of ``client._core.Pool``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis

from engramdb.client._core import Address, Pool
from engramdb.client._generated import RemoteDatabaseFace, RemoteRecordSet
from engramdb.errors import AuthError, Unavailable
from engramdb.observability.calls import Measured
from engramdb.protocol.resp import encode_command
from engramdb.records.limits import Limits

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


class Client(Pool, RemoteDatabaseFace):
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
        super().__init__(url, timeout=timeout, pool_size=pool_size, retries=retries)
        self._release(self._acquire())  # fail fast on a bad address or password

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire(self) -> _Conn:
        conn: _Conn | None = self._idle_conn()
        return _Conn(self.address, self.timeout) if conn is None else conn

    def _request(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        with Measured(self._meter, method, self._tracer, args) as trace:
            frame = self._frame(method, args, kwargs, trace)
            return self._decoded(method, self._roundtrip(method, frame))

    def _roundtrip(self, method: str, frame: bytes) -> Any:
        for last in self._attempts(method):
            conn = self._acquire()
            try:
                reply = conn.request(frame)
            except OSError as e:  # TimeoutError included
                self._failed(conn, method, e, last)
                continue
            return self._release(conn, reply)
        raise AssertionError("unreachable")

    def _limits(self) -> Limits:
        if self._server_limits is None:
            self._server_limits = Limits(**self._request("db.stats", (), {})["limits"])
        return self._server_limits

    def stats(self) -> dict[str, Any]:
        return self._with_client_figures(super().stats())

    def execute(self, *args: bytes | str | int) -> Any:
        """Send one raw command (e.g. ``"PING"``) and return hiredis' reply."""
        return self._roundtrip("execute", encode_command(*args))

    def _close(self) -> None:
        self._close_idle()


def connect(
    url: str = "engramdb://127.0.0.1:7379",
    *,
    timeout: float = 5.0,
    pool_size: int = 16,
    retries: int = 1,
) -> Client:
    """Connect to an ``engramdb serve`` server: the ``engramdb.open()`` interface, remote."""
    return Client(url, timeout=timeout, pool_size=pool_size, retries=retries)
