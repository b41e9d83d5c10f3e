"""The blocking client's hedged reads: ``engramdb.connect([url_a, url_b], hedge=True)``.

The policy (when to hedge, the budget, the counts) is ``client/hedge.py``; this module only
moves the bytes: it sends a read to one server, waits on its socket for the policy's delay,
sends the same frame to the next server if the budget allows, and returns whichever reply
comes first. The losing connection is closed rather than pooled, so its late reply can never
be read as the answer to a later request.
"""

from __future__ import annotations

import selectors
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from engramdb.client._core import _idempotent
from engramdb.client.hedge import Hedge, Hedger
from engramdb.client.sync import Client, _Conn
from engramdb.errors import Timeout, Unavailable

__all__ = ["HedgedClient", "connected"]


class HedgedClient(Client):
    """A client of several servers over one store that hedges its reads
    (``engramdb.client.hedge``). Reads take turns across the servers; writes, raw commands
    and anything not declared a read go to the first server, once."""

    _label = "engramdb.Client(hedged)"

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
        self.servers: list[Client] = [self]
        try:
            for url in urls[1:]:
                self.servers.append(
                    Client(url, timeout=timeout, pool_size=pool_size, retries=retries)
                )
        except BaseException:
            self.close()
            raise

    def _roundtrip(self, method: str, frame: bytes) -> Any:
        if not _idempotent(method):
            return Client._roundtrip(self, method, frame)  # writes: first server, once
        first, second = self.hedger.pair(self.servers)
        delay = self.hedger.delay(method)
        started = perf_counter()
        conn = first._acquire()
        try:
            conn.sock.sendall(frame)
        except OSError as e:
            # A stale pooled connection (the server restarted): the next server answers.
            first._failed(conn, method, e, last=False)
            return Client._roundtrip(second, method, frame)
        racing = {conn: first}
        try:
            won = self._race(method, frame, racing, second, delay, started)
        finally:
            for loser in racing:
                loser.close()
        if won is None:
            # Every connection it went out on broke (a server restarted, say): the next
            # server answers, with the ordinary retry rule for reads.
            return Client._roundtrip(second, method, frame)
        reply, conn, owner = won
        self.hedger.observe(method, perf_counter() - started, owner is not first)
        return owner._release(conn, reply)

    def _race(
        self,
        method: str,
        frame: bytes,
        racing: dict[_Conn, Client],
        second: Client,
        delay: float | None,
        started: float,
    ) -> tuple[Any, _Conn, Client] | None:
        """The first reply among ``racing``, which gains the hedge once ``delay`` has passed
        with no reply (None: never) if the budget allows; the winner leaves ``racing``.
        None when every connection broke before a reply."""
        deadline = started + self.timeout
        hedge_at = deadline if delay is None else started + delay
        with selectors.DefaultSelector() as waiting:
            for conn in racing:
                waiting.register(conn.sock, selectors.EVENT_READ, conn)
            while racing:
                ready = waiting.select(max(0.0, min(deadline, hedge_at) - perf_counter()))
                if not ready:
                    if perf_counter() >= deadline:
                        raise Timeout(f"{method} timed out after {self.timeout}s")
                    if hedge_at < deadline:
                        hedge_at = deadline  # one hedge per read at most
                        extra = self._hedge(second, frame)
                        if extra is not None:
                            racing[extra] = second
                            waiting.register(extra.sock, selectors.EVENT_READ, extra)
                    continue
                for key, _ in ready:
                    conn = key.data
                    owner = racing.pop(conn)
                    waiting.unregister(conn.sock)
                    try:
                        return conn.read(), conn, owner
                    except OSError:
                        conn.close()  # the other may still answer
        return None

    def _hedge(self, server: Client, frame: bytes) -> _Conn | None:
        """The connection a hedge went out on, or None (budget spent, or the server is
        unreachable: the first server may still answer)."""
        if not self.hedger.spend():
            return None
        try:
            conn = server._acquire()
        except Unavailable:
            return None
        try:
            conn.sock.sendall(frame)
        except OSError:
            conn.close()
            return None
        return conn

    def stats(self) -> dict[str, Any]:
        figures = super().stats()
        figures["hedging"] = self.hedger.snapshot()
        return figures

    def _close(self) -> None:
        for server in getattr(self, "servers", [self]):
            server._close_idle()


def connected(url: str | Sequence[str], hedge: bool | Hedge, **options: Any) -> Client:
    """What ``engramdb.connect`` returns: a plain client of one server, or a client of
    several that hedges its reads when ``hedge`` says so (with several servers and no
    hedge, the reads only take turns)."""
    urls = [url] if isinstance(url, str) else list(url)
    if len(urls) == 1 and hedge is False:
        return Client(urls[0], **options)
    if hedge is True:
        hedge = Hedge()
    return HedgedClient(urls, hedge or Hedge(budget=0.0), **options)
