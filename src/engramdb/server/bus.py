"""Pub/sub and settings across every server process of one data directory.

Several ``engramdb serve`` processes may serve one data directory (worker processes, or
servers started side by side): they are one database, so a PUBLISH to one must reach the
subscribers of all, and ``CONFIG SET`` on one must hold for all. Each process listens on a
Unix socket in ``<data>/pubsub/`` and keeps a connection to every other one; a message is
delivered to local subscribers at once and forwarded to every peer, which delivers it to
its own (never forwarding it again).

Rules:
- Delivery is at most once, like Redis pub/sub: a peer that cannot keep up (more than
  ``MAX_BACKLOG`` bytes unsent to it) is disconnected and reconnected, and what it missed is
  lost, exactly as for a subscriber cut off at its output-buffer limit. Nothing grows
  without bound.
- PUBLISH answers the receivers in this process, as PUBLISH in Redis Cluster counts the
  receivers on the node it ran on; PUBSUB CHANNELS/NUMSUB/NUMPAT count this process's
  subscriptions.
- Only processes of the same user reach the sockets (the directory is ``0700``); a peer's
  frame is checked before it is used, and a malformed one drops that peer.
- Peers are found by listing the directory: at start, and again whenever a peer's
  connection is lost. A process that starts connects to those already there, so each pair
  has a connection from the moment the newer one is listening. A socket left by a process
  that died is removed by the first process that fails to reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from engramdb.server.app import Server

__all__ = ["MAX_BACKLOG", "Bus"]

log = logging.getLogger("engramdb.server")

DIRECTORY = "pubsub"
MAX_BACKLOG = 64 << 20  # bytes unsent to one peer before it is dropped
_HEAD = struct.Struct("<BII")  # kind, first length, second length
# Frame kinds.
HELLO, PUBLISH, SPUBLISH, SETTING = 1, 2, 3, 4
_KINDS = frozenset({HELLO, PUBLISH, SPUBLISH, SETTING})


def _frame(kind: int, first: bytes, second: bytes) -> bytes:
    return _HEAD.pack(kind, len(first), len(second)) + first + second


class _Peer(asyncio.Protocol):
    """One connection to another process of the group (either side may have opened it)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pid = 0
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_frame(HELLO, str(os.getpid()).encode(), b""))

    def connection_lost(self, exc: Exception | None) -> None:
        self.bus.lost(self)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("pub/sub peer process %d is not keeping up: disconnected", self.pid)
            transport.abort()
            return
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            kind, first, second = _HEAD.unpack_from(buf, pos)
            if first + second > self.bus.max_frame or kind not in _KINDS:
                log.warning("malformed frame from a pub/sub peer: disconnected")
                assert self.transport is not None
                self.transport.abort()
                return
            end = pos + _HEAD.size + first + second
            if len(buf) < end:
                break
            start = pos + _HEAD.size
            self.bus.received(self, kind, bytes(buf[start : start + first]),
                              bytes(buf[start + first : end]))  # fmt: skip
            pos = end
        del buf[:pos]


class Bus:
    """This process's link to the other server processes of its data directory."""

    def __init__(self, server: Server, directory: str) -> None:
        self.server = server
        self.directory = os.path.join(directory, DIRECTORY)
        self.peers: dict[int, _Peer] = {}
        # A frame is a channel and a message, each at most one argument of a request.
        self.max_frame = 2 * server.config.max_frame + 1024
        self.forwarded = 0
        self.received_messages = 0
        self._listener: asyncio.base_events.Server | None = None
        self._path = ""
        self._dir_fd = -1
        self._connecting: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._path = os.path.join(self.directory, f"{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # a process with our pid that died
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self._short(self._path))
        except OSError:
            sock.close()
            raise
        self._listener = await loop.create_unix_server(lambda: _Peer(self), sock=sock)
        await self.discover()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _short(self, path: str) -> str:
        """``path``, or an equivalent under ``/proc/self/fd`` when it is too long for a
        Unix socket address (108 bytes)."""
        if len(path.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
            return path
        if self._dir_fd < 0:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{os.path.basename(path)}"

    async def discover(self) -> None:
        """Connect to every process of the directory not connected yet."""
        mine = os.getpid()
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            pid_text, _, ext = name.partition(".")
            if ext != "sock" or not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid == mine or pid in self.peers or pid in self._connecting:
                continue
            self._connecting.add(pid)
            try:
                await self._connect(pid, os.path.join(self.directory, name))
            finally:
                self._connecting.discard(pid)

    async def _connect(self, pid: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_unix_connection(lambda: _Peer(self), self._short(path))
        except OSError:
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # left by a process that died

    # traffic ---------------------------------------------------------------------------

    def publish(self, channel: bytes, message: bytes, shard: bool = False) -> None:
        """Forward a message published here to every other process."""
        if not self.peers:
            return
        data = _frame(SPUBLISH if shard else PUBLISH, channel, message)
        for peer in list(self.peers.values()):
            peer.send(data)
        self.forwarded += 1

    def setting(self, name: bytes, value: bytes) -> None:
        """Forward a CONFIG SET made here to every other process."""
        data = _frame(SETTING, name, value)
        for peer in list(self.peers.values()):
            peer.send(data)

    def received(self, peer: _Peer, kind: int, first: bytes, second: bytes) -> None:
        if kind == HELLO:
            if first.isdigit():
                pid = int(first)
                if pid in self.peers and self.peers[pid] is not peer:
                    # Both sides connected at once: keep one connection per pair.
                    if peer.transport is not None:
                        peer.transport.close()
                    return
                peer.pid = pid
                self.peers[pid] = peer
                # A process that starts later takes the settings changed before it came.
                for name, value in self.server.changed_settings.items():
                    peer.send(_frame(SETTING, name, value))
            return
        if not peer.pid:
            return  # nothing before HELLO
        hub = self.server.pubsub
        if kind == PUBLISH:
            self.received_messages += 1
            hub.publish(channel=first, message=second)
        elif kind == SPUBLISH:
            self.received_messages += 1
            hub.spublish(first, second)
        elif kind == SETTING:
            self.server.apply_setting(first, second, from_peer=True)

    def lost(self, peer: _Peer) -> None:
        if self.peers.get(peer.pid) is peer:
            del self.peers[peer.pid]
            if self.server.accepting:
                # It may have only been restarted: look again shortly.
                self.server.call_later(0.5, self._rediscover)

    def _rediscover(self) -> None:
        if self.server.accepting:
            task = asyncio.ensure_future(self.discover())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
