"""A tiny in-memory Redis for the audit's tests, with faults injected on purpose.

It speaks RESP2 and RESP3 through engramdb's sans-I/O codec and knows just what the audit
sends: PING, GET, SET, INCR(BY), SCRIPT LOAD and EVALSHA of the audit's compare-and-set script
(whose effect it performs itself: there is no Lua here), and HELLO and CLIENT (redis-py's
handshake). It runs its own event loop on a thread, so a test can point blocking audit code
at ``stub.url``.

Faults, each at most once:

- ``stall_after=n``: after the n-th GET/SET the whole server stops for ``stall_seconds``.
  Nothing is executed or answered meanwhile; afterwards everything queued is answered. This
  is the stall an open-loop generator must see on every request that arrived during it.
- ``lose_cas_reply_after=n``: the first compare-and-set to succeed after n EVALSHAs is
  applied, then its connection is closed without a reply (the caller cannot know it
  happened), and writes are refused for ``refuse_writes_seconds`` so that readers see the
  value it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from engramdb.protocol.resp import (
    ErrorReply,
    ParserLimits,
    RequestParser,
    SimpleString,
    encode_reply,
)

Reply = bytes | int | None | SimpleString | ErrorReply | dict[bytes, object]


class _LoseReply(Exception):
    """Close the connection instead of answering."""


@dataclass
class _Session:
    resp3: bool = False


class StubRedis:
    """Context manager: a stub server on a free loopback port for the ``with`` block."""

    def __init__(
        self,
        *,
        stall_after: int | None = None,
        stall_seconds: float = 1.0,
        lose_cas_reply_after: int | None = None,
        refuse_writes_seconds: float = 0.5,
    ) -> None:
        self.stall_after = stall_after
        self.stall_seconds = stall_seconds
        self.lose_cas_reply_after = lose_cas_reply_after
        self.refuse_writes_seconds = refuse_writes_seconds
        self.data: dict[bytes, bytes] = {}
        self.scripts: set[bytes] = set()
        self.commands_served = 0
        self.stalled: tuple[float, float] | None = None  # (began, ended), wall-clock
        self.lost_cas_value: bytes | None = None
        self._requests = 0  # GET/SET, counted for the stall
        self._evalshas = 0
        self._refuse_writes_until = 0.0
        self._gate = asyncio.Event()  # set: serving; clear: stalled
        self._gate.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        self._table: dict[bytes, Callable[[list[bytes], _Session], Reply]] = {
            b"HELLO": self._hello,
            b"PING": lambda args, session: SimpleString("PONG"),
            b"CLIENT": lambda args, session: SimpleString("OK"),
            b"GET": self._get,
            b"SET": self._set,
            b"INCR": self._incr,
            b"INCRBY": self._incr,
            b"SCRIPT": self._script,
            b"EVALSHA": self._evalsha,
        }

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def __enter__(self) -> StubRedis:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        parser = RequestParser(ParserLimits())
        session = _Session()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                for command in parser.commands():
                    await self._gate.wait()  # a stalled server executes nothing...
                    reply = self._execute(command, session)
                    await self._gate.wait()  # ...and answers nothing, until it resumes
                    writer.write(encode_reply(reply, session.resp3))
                await writer.drain()
                if parser.error is not None:
                    break
        except (_LoseReply, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _execute(self, command: list[bytes], session: _Session) -> Reply:
        self.commands_served += 1
        handler = self._table.get(command[0].upper())
        if handler is None:
            return ErrorReply(f"ERR unknown command '{command[0].decode(errors='replace')}'")
        return handler(command[1:], session)

    # commands ---------------------------------------------------------------------------

    def _count_request(self) -> None:
        self._requests += 1
        if self._requests == self.stall_after:
            self._gate.clear()
            began = time.time()

            def resume() -> None:
                self.stalled = (began, time.time())
                self._gate.set()

            asyncio.get_running_loop().call_later(self.stall_seconds, resume)

    def _hello(self, args: list[bytes], session: _Session) -> Reply:
        if args:
            session.resp3 = args[0] == b"3"
        return {
            b"server": b"resp-stub",
            b"version": b"7.0.0",
            b"proto": 3 if session.resp3 else 2,
            b"mode": b"standalone",
            b"role": b"master",
            b"modules": [],
        }

    def _refused(self) -> ErrorReply | None:
        if time.monotonic() < self._refuse_writes_until:
            return ErrorReply("ERR writes refused for a moment (test fault)")
        return None

    def _get(self, args: list[bytes], session: _Session) -> Reply:
        self._count_request()
        return self.data.get(args[0])

    def _set(self, args: list[bytes], session: _Session) -> Reply:
        self._count_request()
        refused = self._refused()
        if refused is not None:
            return refused
        self.data[args[0]] = args[1]
        return SimpleString("OK")

    def _incr(self, args: list[bytes], session: _Session) -> Reply:
        refused = self._refused()
        if refused is not None:
            return refused
        value = int(self.data.get(args[0], b"0")) + (int(args[1]) if len(args) > 1 else 1)
        self.data[args[0]] = str(value).encode()
        return value

    def _script(self, args: list[bytes], session: _Session) -> Reply:
        if args[0].upper() != b"LOAD":
            return ErrorReply("ERR only SCRIPT LOAD here")
        sha = hashlib.sha1(args[1]).hexdigest().encode()
        self.scripts.add(sha)
        return sha

    def _evalsha(self, args: list[bytes], session: _Session) -> Reply:
        # EVALSHA sha 1 key expected new: the audit's compare-and-set ('' expects absence)
        if args[0] not in self.scripts:
            return ErrorReply("NOSCRIPT No matching script. Please use SCRIPT LOAD.")
        refused = self._refused()
        if refused is not None:
            return refused
        self._evalshas += 1
        key, expected, new = args[2], args[3], args[4]
        current = self.data.get(key)
        if current != (expected or None):
            return 0
        self.data[key] = new
        if (
            self.lose_cas_reply_after is not None
            and self._evalshas > self.lose_cas_reply_after
            and self.lost_cas_value is None
        ):
            self.lost_cas_value = new
            self._refuse_writes_until = time.monotonic() + self.refuse_writes_seconds
            raise _LoseReply
        return 1
