"""Clients parked by blocking commands (BLPOP, BRPOP, BLMOVE, BLMPOP, BZPOPMIN...).

A blocking command first tries its pop as an ordinary write. When there was nothing to pop,
its reply step returns a ``Block`` and the client is parked here: no thread waits, the
event loop serves everyone else, and the client runs nothing until it is woken or its
timeout passes. Waking runs the pop again (another write); if someone else got there
first, the client is parked again, keeping its place.

What wakes a parked client:
- a push through this server (LPUSH, RPUSH, LMOVE, ZADD... outside MULTI): at once, as
  many waiters of that key (oldest first) as elements were pushed;
- anything else that fills the key (a MULTI/EXEC or a script, another ``engramdb serve``
  process or the engramdb API on the same data): a poll, every ``POLL_SECONDS`` while
  anyone is parked, reads each awaited key's header and wakes its waiters when it holds
  something. So such pushes reach a blocked client within ``POLL_SECONDS``.

Timeouts run on the server's clock (``Server.now``): a timer on the monotonic clock, or,
under ``--testing``, the poll checks the fake clock, so tests time out a wait by moving it.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from engramdb.protocol.resp import ErrorReply
from engramdb.server.commands import Block
from engramdb.server.structures import Found, key_of

if TYPE_CHECKING:
    import asyncio

    from engramdb.server.app import Server
    from engramdb.server.connection import Connection

__all__ = ["POLL_SECONDS", "Blocked"]

POLL_SECONDS = 0.1
_UNBLOCKED = "UNBLOCKED client unblocked via CLIENT UNBLOCK"


class _Waiter:
    __slots__ = ("block", "conn", "done", "slot", "timer")

    def __init__(self, conn: Connection, slot: Any, block: Block) -> None:
        self.conn = conn
        self.slot = slot
        self.block = block
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


class Blocked:
    """The parked clients of one server, by the keys they wait on."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._waiting: dict[tuple[str, bytes], deque[_Waiter]] = {}
        self._by_conn: dict[Connection, _Waiter] = {}
        # Read only: whether anyone is parked at all, for pushes to test without a call.
        self.parked: dict[Connection, Any] = self._by_conn
        self._poller: asyncio.TimerHandle | None = None
        self._loop_thread: int | None = None

    def __len__(self) -> int:
        return len(self._by_conn)

    def __contains__(self, conn: object) -> bool:
        return conn in self._by_conn

    def keys_waited_on(self) -> int:
        return len(self._waiting)

    def park(self, conn: Connection, slot: Any, block: Block) -> None:
        """Park ``conn`` (event loop only) until woken or ``block.deadline``."""
        self._loop_thread = threading.get_ident()
        waiter = _Waiter(conn, slot, block)
        self._by_conn[conn] = waiter
        for key in dict.fromkeys(block.keys):
            self._waiting.setdefault((block.set_name, key), deque()).append(waiter)
        if block.deadline is not None and self._server.clock is None:
            delay = max(0.0, block.deadline - self._server.now())
            waiter.timer = self._server.call_later(delay, lambda: self._time_out(waiter))
        if self._poller is None:
            self._poller = self._server.call_later(POLL_SECONDS, self._poll)

    def wake(self, set_name: str, key: bytes, count: int = 1) -> None:
        """Up to ``count`` waiters of ``key`` try again (any thread)."""
        if (set_name, key) not in self._waiting:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake(set_name, key, count)
        else:
            loop: asyncio.AbstractEventLoop | None = getattr(self._server, "_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(self._wake, set_name, key, count)

    def unblock(self, conn: Connection, error: bool) -> bool:
        """CLIENT UNBLOCK: end ``conn``'s wait now, as a timeout or with an error reply;
        False when it is not waiting."""
        waiter = self._by_conn.get(conn)
        if waiter is None:
            return False
        self._release(waiter)
        reply = ErrorReply(_UNBLOCKED) if error else waiter.block.timed_out
        waiter.conn.unpark(waiter.slot, reply)
        return True

    def forget(self, conn: Connection) -> None:
        """``conn`` closed: drop its wait."""
        waiter = self._by_conn.get(conn)
        if waiter is not None:
            self._release(waiter)

    def _wake(self, set_name: str, key: bytes, count: int) -> None:
        queue = self._waiting.get((set_name, key))
        while queue and count > 0:
            waiter = queue[0]
            self._release(waiter)
            count -= 1
            waiter.conn.unpark(waiter.slot, waiter.block.retry())

    def _release(self, waiter: _Waiter) -> None:
        if waiter.done:
            return
        waiter.done = True
        if waiter.timer is not None:
            waiter.timer.cancel()
        if self._by_conn.get(waiter.conn) is waiter:
            del self._by_conn[waiter.conn]
        block = waiter.block
        for key in dict.fromkeys(block.keys):
            queue = self._waiting.get((block.set_name, key))
            if queue is None:
                continue
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._waiting[(block.set_name, key)]

    def _time_out(self, waiter: _Waiter) -> None:
        if waiter.done:
            return
        self._release(waiter)
        waiter.conn.unpark(waiter.slot, waiter.block.timed_out)

    def _poll(self) -> None:
        """Wake the waiters of keys that hold something (filled by whatever means)."""
        self._poller = None
        server = self._server
        if not self._waiting or not server.accepting:
            return
        if server.clock is not None:  # a fake clock: deadlines are checked here
            moment = server.now()
            for waiter in list(self._by_conn.values()):
                deadline = waiter.block.deadline
                if deadline is not None and deadline <= moment:
                    self._time_out(waiter)
        db = server.db
        engine = db._engine
        now = db._now_ms()
        for (set_name, key), queue in list(self._waiting.items()):
            if not queue:
                continue
            try:
                rk = db._internal_records(set_name)._rk(key_of(key))
                found = Found(rk, engine.get(rk), now)
            except Exception:  # a closing database, a key past the limits: nothing to wake
                continue
            if found.kind == queue[0].block.kind and (found.length > 0 or found.legacy):
                self._wake(set_name, key, max(1, found.length))
        if self._waiting:
            self._poller = server.call_later(POLL_SECONDS, self._poll)
