"""The asyncio client's hedged reads: ``await engramdb.aio.connect([url_a, url_b], hedge=True)``.

The policy (when to hedge, the budget, the counts) is ``client/hedge.py``, shared with the
blocking client (``client/hedged.py``); here a read is a task on one server's connection, a
hedge is a second task on the next server's once the policy's delay has passed, and the first
reply wins. The loser is cancelled and its connection closed rather than pooled, so its late
reply can never be read as the answer to a later request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from engramdb.aio import AsyncClient, _AsyncConn
from engramdb.client._core import _idempotent
from engramdb.client.hedge import Hedge, Hedger
from engramdb.errors import Timeout, Unavailable
from engramdb.records.limits import Limits

__all__ = ["AsyncHedgedClient", "connected"]

_Racing = dict[asyncio.Task[Any], tuple[_AsyncConn, AsyncClient]]


class AsyncHedgedClient(AsyncClient):
    """An asyncio client of several servers over one store that hedges its reads
    (``engramdb.client.hedge``). Reads take turns across the servers; writes, raw commands
    and anything not declared a read go to the first server, once."""

    _label = "engramdb.aio.AsyncClient(hedged)"

    def __init__(
        self,
        urls: Sequence[str],
        hedge: Hedge,
        *,
        timeout: float = 5.0,
        pool_size: int = 16,
        retries: int = 1,
    ) -> None:
        self.hedger = Hedger(hedge, fronts=len(urls))
        super().__init__(urls[0], timeout=timeout, pool_size=pool_size, retries=retries)
        self.servers: list[AsyncClient] = [self]
        for url in urls[1:]:
            self.servers.append(
                AsyncClient(url, timeout=timeout, pool_size=pool_size, retries=retries)
            )

    async def _roundtrip(self, method: str, frame: bytes) -> Any:
        if not _idempotent(method):
            return await AsyncClient._roundtrip(self, method, frame)  # writes: first, once
        first, second = self.hedger.pair(self.servers)
        delay = self.hedger.delay(method)
        started = perf_counter()
        racing: _Racing = {}
        try:
            async with asyncio.timeout(self.timeout):
                won = await self._race(frame, racing, first, second, delay)
        except TimeoutError:
            raise Timeout(f"{method} timed out after {self.timeout}s") from None
        finally:
            for task, (conn, _) in racing.items():
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a lost race's error is not news
                conn.close()
        if won is None:
            # Every connection it went out on broke (a server restarted, say): the next
            # server answers, with the ordinary retry rule for reads.
            return await AsyncClient._roundtrip(second, method, frame)
        reply, conn, owner = won
        self.hedger.observe(method, perf_counter() - started, owner is not first)
        return owner._release(conn, reply)

    async def _race(
        self,
        frame: bytes,
        racing: _Racing,
        first: AsyncClient,
        second: AsyncClient,
        delay: float | None,
    ) -> tuple[Any, _AsyncConn, AsyncClient] | None:
        """The first reply among ``racing``, which gains the hedge once ``delay`` has passed
        with no reply (None: never) if the budget allows; the winner leaves ``racing``.
        None when every connection broke before a reply."""
        conn = await first._acquire()
        racing[asyncio.ensure_future(conn.request(frame))] = (conn, first)
        while racing:
            done, _ = await asyncio.wait(racing, timeout=delay, return_when="FIRST_COMPLETED")
            if not done:
                delay = None  # one hedge per read at most
                extra = await self._hedge(second)
                if extra is not None:
                    racing[asyncio.ensure_future(extra.request(frame))] = (extra, second)
                continue
            for task in done:
                conn, owner = racing.pop(task)
                error = task.exception()
                if error is None:
                    return task.result(), conn, owner
                conn.close()
                if not isinstance(error, OSError):
                    raise error
                # A broken connection: the other may still answer.
        return None

    async def _hedge(self, server: AsyncClient) -> _AsyncConn | None:
        """The connection a hedge goes out on, or None (budget spent, or the server is
        unreachable: the first server may still answer)."""
        if not self.hedger.spend():
            return None
        try:
            return await server._acquire()
        except Unavailable:
            return None

    async def stats(self) -> dict[str, Any]:
        figures = await super().stats()
        figures["hedging"] = self.hedger.snapshot()
        return figures

    async def _close(self) -> None:
        for server in getattr(self, "servers", [self]):
            server._close_idle()


async def connected(url: str | Sequence[str], hedge: bool | Hedge, **options: Any) -> AsyncClient:
    """What ``engramdb.aio.connect`` returns, connected: a plain client of one server, or a
    client of several that hedges its reads when ``hedge`` says so (with several servers and
    no hedge, the reads only take turns)."""
    urls = [url] if isinstance(url, str) else list(url)
    if len(urls) == 1 and hedge is False:
        client = AsyncClient(urls[0], **options)
    else:
        policy = Hedge() if hedge is True else hedge or Hedge(budget=0.0)
        client = AsyncHedgedClient(urls, policy, **options)
    client._release(await client._acquire())  # fail fast
    client._server_limits = Limits(**(await client._request("db.stats", (), {}))["limits"])
    return client
