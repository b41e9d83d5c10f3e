"""What the audit talks to: one small async interface over any data tier.

A target is named by a string: a directory path (an embedded engramdb database),
``engramdb://host:port`` (the engramdb server, native calls), ``postgresql://...`` (the
postgres engine, run in each load process, e.g. on a Patroni cluster) or
``redis://host:port`` (Redis, Valkey, or engramdb's RESP side). Each load-generating
process builds its own ``Target`` from that string and the run's namespace (see
``scratch``): an engramdb target keeps its registers in the set named by the namespace, a
Redis target under keys ``<namespace>:``.
A target never touches anything outside its namespace. Operations:

- ``read(key)``, ``write(key, value)`` on registers;
- ``cas(key, expected, new)`` — compare-and-set on the value (engramdb: on the record's
  generation, retried while the value still matches; Redis: a Lua script). A target
  without a CAS raises ``Unsupported`` and the consistency section uses reads and writes;
- ``incr(key)`` for the lost-update counters.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engramdb.errors import Conflict, EngramError, Overloaded, Timeout, Unavailable

__all__ = [
    "OUTCOME_FAIL",
    "OUTCOME_OK",
    "OUTCOME_UNKNOWN",
    "Target",
    "Unsupported",
    "classify",
    "is_postgres_url",
    "make_target",
]

OUTCOME_OK, OUTCOME_FAIL, OUTCOME_UNKNOWN = "ok", "fail", "unknown"
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class Unsupported(Exception):
    """The target cannot do this operation (e.g. no compare-and-set)."""


def classify(error: BaseException) -> tuple[str, str]:
    """(kind, outcome) of a failed call: ``shed`` (BUSY: not executed), ``unknown`` (timeout
    or connection lost: may have happened) or ``error`` (refused: did not happen)."""
    name = type(error).__name__
    text = str(error)
    if isinstance(error, Overloaded) or text.startswith("BUSY"):
        return "shed", OUTCOME_FAIL
    if isinstance(error, Timeout | Unavailable | OSError | asyncio.TimeoutError) or name in (
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
    ):
        return "unknown", OUTCOME_UNKNOWN
    return "error", OUTCOME_FAIL


class Target:
    """Base: subclasses implement the async operations."""

    name = "target"
    supports_cas = True

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self, key: str) -> Any:
        raise NotImplementedError

    async def write(self, key: str, value: Any) -> None:
        raise NotImplementedError

    async def cas(self, key: str, expected: Any, new: Any) -> bool:
        raise Unsupported("no compare-and-set")

    async def incr(self, key: str) -> int:
        raise NotImplementedError


class _EngramCommon(Target):
    """Register semantics over records ``<namespace>/<key>`` with bin ``v``, shared by the
    embedded and network placements (``_call`` runs a database call for either)."""

    namespace: str

    async def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def read(self, key: str) -> Any:
        record = await self._call("get", key)
        return None if record is None else record.bins.get("v")

    async def write(self, key: str, value: Any) -> None:
        await self._call("put", key, {"v": value})

    async def cas(self, key: str, expected: Any, new: Any) -> bool:
        while True:
            record = await self._call("get", key)
            current = None if record is None else record.bins.get("v")
            if current != expected:
                return False
            try:
                await self._call(
                    "put",
                    key,
                    {"v": new},
                    expect_generation=0 if record is None else record.generation,
                )
                return True
            except Conflict:
                continue  # it changed since the read: judge again on a fresh read

    async def incr(self, key: str) -> int:
        from engramdb.records.ops import Incr

        result = await self._call("operate", key, [Incr("n")])
        return int(result[0])


class EmbeddedTarget(_EngramCommon):
    name = "engramdb (embedded)"

    def __init__(
        self, path: str, namespace: str, durability: str = "sync", threads: int = 16
    ) -> None:
        self.path = path
        self.namespace = namespace
        self.durability = durability
        self._pool = ThreadPoolExecutor(threads)
        self._db: Any = None

    async def open(self) -> None:
        import engramdb

        self._db = engramdb.open(self.path, durability=self.durability)  # type: ignore[arg-type]
        self._records = self._db.records(self.namespace)

    async def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        method = getattr(self._records, fn)
        return await loop.run_in_executor(self._pool, lambda: method(*args, **kwargs))

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._db is not None:
            self._db.close()


class NetworkTarget(_EngramCommon):
    name = "engramdb (server)"

    def __init__(
        self, url: str, namespace: str, connections: int = 64, timeout: float = 2.0
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.connections = connections
        self.timeout = timeout
        self._client: Any = None

    async def open(self) -> None:
        import engramdb.aio

        self._client = engramdb.aio.AsyncClient(
            self.url, pool_size=self.connections, timeout=self.timeout, retries=0
        )
        self._records = self._client.records(self.namespace)

    async def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self._records, fn)(*args, **kwargs)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


_POOL_WAIT = 60.0  # seconds a request may wait for a free connection before failing


class RedisTarget(Target):
    name = "redis"

    def __init__(
        self, url: str, namespace: str, connections: int = 64, timeout: float = 2.0
    ) -> None:
        self.url = url
        self.prefix = f"{namespace}:"
        self.connections = connections
        self.timeout = timeout
        self._client: Any = None
        self._cas: Any = None

    async def open(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # A blocking pool: a request beyond ``connections`` in flight waits for one, and
        # that wait is latency (the default pool raises MaxConnectionsError instead, which
        # would turn a stalled server's backlog into errors outside the histogram).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.connections,
            timeout=_POOL_WAIT,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # One request on the wire per call: a silent retry would make the server count
            # more than the client sent, and hide an outage from the latency figures.
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.asyncio.Redis(connection_pool=pool)
        try:
            self._cas = self._client.register_script(_CAS_SCRIPT)
            await self._client.script_load(_CAS_SCRIPT)
        except Exception:
            self._cas = None  # no Lua (e.g. engramdb's RESP side): reads and writes only
            self.supports_cas = False

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def read(self, key: str) -> Any:
        raw = await self._client.get(self._key(key))
        return None if raw is None else _decode(raw)

    async def write(self, key: str, value: Any) -> None:
        await self._client.set(self._key(key), _encode(value))

    async def cas(self, key: str, expected: Any, new: Any) -> bool:
        if self._cas is None:
            raise Unsupported("no Lua scripting: no compare-and-set")
        result = await self._cas(
            keys=[self._key(key)],
            args=[_encode(expected) if expected is not None else b"", _encode(new)],
        )
        return bool(result)

    async def incr(self, key: str) -> int:
        return int(await self._client.incr(self._key(key)))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose(close_connection_pool=True)


def _encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _decode(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    return int(text) if text.lstrip("-").isdigit() and len(text) < 19 else raw


def make_target(
    spec: str,
    *,
    namespace: str,
    durability: str = "sync",
    connections: int = 64,
    timeout: float = 2.0,
) -> Target:
    """A target from its name (see the module docs), writing only under ``namespace``."""
    if spec.startswith("engramdb://"):
        return NetworkTarget(spec, namespace, connections, timeout)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisTarget(spec, namespace, connections, timeout)
    if is_postgres_url(spec):
        # The postgres engine runs in each load process, as in an application's.
        return EmbeddedTarget(spec, namespace, durability)
    if "://" in spec:
        raise EngramError(
            f"unknown target {spec!r}: a path, engramdb://host:port, redis://host:port "
            "or postgresql://..."
        )
    return EmbeddedTarget(os.path.abspath(spec), namespace, durability)


def is_postgres_url(spec: str) -> bool:
    """Whether ``spec`` names a PostgreSQL database (the postgres engine)."""
    return spec.startswith(("postgresql://", "postgres://"))
