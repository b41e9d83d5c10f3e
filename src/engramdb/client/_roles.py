"""Sessions and the cache over the network, for the sync and async clients.

Sessions: every call is one remote call, except ``update``, whose optimistic retry loop runs
here (the function cannot travel) over the remote ``get`` and compare-and-set ``replace``,
exactly as the embedded API runs it. The cache runs its whole algorithm here, over the
server's storage primitives (peek / acquire / fill / release), so single flight and the
stale-set guard hold across every client and process.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from collections.abc import Callable, Mapping
from typing import Any

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.memory import Memory, MemoryEvent, MemoryHit
from engramdb.sessions import Checkpoint, Session, SessionPage, cas_update

__all__ = ["RESULTS", "AsyncSessionsCalls", "CacheCoreCalls", "MemoryCalls", "SessionsCalls"]


def _session(raw: Any) -> Session | None:
    return None if raw is None else Session(**raw)


def _page(raw: Any) -> SessionPage:
    return SessionPage([Session(**s) for s in raw["sessions"]], raw["cursor"])


def _checkpoint(raw: Any) -> Checkpoint | None:
    return None if raw is None else Checkpoint(**raw)


def _same(raw: Any) -> Any:
    return raw


def _memory(raw: Any) -> Memory | None:
    return None if raw is None else Memory(**raw)


def _hits(raw: Any) -> list[MemoryHit]:
    return [MemoryHit(Memory(**h["memory"]), h["score"], h["scores"]) for h in raw]


RESULTS: dict[str, tuple[Any, bool]] = {
    "memory.add": (_same, False),
    "memory.update": (_memory, False),
    "memory.invalidate": (_memory, False),
    "memory.delete": (_same, False),
    "memory.delete_all": (_same, False),
    "memory.search": (_hits, True),
    "memory.get": (_memory, True),
    "memory.history": (lambda raw: [MemoryEvent(**e) for e in raw], True),
    "memory.list": (lambda raw: ([Memory(**m) for m in raw[0]], raw[1]), True),
    "sessions.create": (_session, False),
    "sessions.get": (_session, True),
    "sessions.delete": (_same, False),
    "sessions.list": (_page, True),
    "sessions.replace": (_same, False),
    "sessions.append": (_same, False),
    "sessions.checkpoint": (_checkpoint, False),
    "sessions.checkpoints": (lambda raw: [Checkpoint(**c) for c in raw], True),
    "sessions.get_checkpoint": (_checkpoint, True),
    "cache.peek": (_same, True),
    "cache.acquire": (_same, False),
    "cache.fill": (_same, False),
    "cache.release": (_same, False),
    "cache.delete": (_same, False),
    "cache.set": (_same, False),
}


class SessionsCalls:
    """``db.sessions`` of a remote database (methods as ``engramdb.sessions.SessionStore``)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"sessions.{method}", args, kwargs)

    def create(
        self,
        session_id: str,
        state: Any = None,
        *,
        user_id: str | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        return self._call(  # type: ignore[no-any-return]
            "create", session_id, state, user_id=user_id, ttl=ttl,
            metadata=None if metadata is None else dict(metadata),
        )  # fmt: skip

    def get(self, session_id: str) -> Session | None:
        return self._call("get", session_id)  # type: ignore[no-any-return]

    def delete(self, session_id: str) -> bool:
        return self._call("delete", session_id)  # type: ignore[no-any-return]

    def list(
        self, user_id: str | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        return self._call("list", user_id, cursor=cursor, limit=limit)  # type: ignore[no-any-return]

    def replace(self, session_id: str, state: Any, *, expect_generation: int | None = None) -> int:
        return self._call(  # type: ignore[no-any-return]
            "replace", session_id, state, expect_generation=expect_generation
        )

    def append(self, session_id: str, event: Any, *, max_events: int | None = None) -> int:
        return self._call("append", session_id, event, max_events=max_events)  # type: ignore[no-any-return]

    def checkpoint(
        self, session_id: str, step: int, state: Any, *, parent: int | None = None
    ) -> Checkpoint:
        return self._call("checkpoint", session_id, step, state, parent=parent)  # type: ignore[no-any-return]

    def checkpoints(self, session_id: str) -> builtins.list[Checkpoint]:
        return self._call("checkpoints", session_id)  # type: ignore[no-any-return]

    def get_checkpoint(self, session_id: str, step: int) -> Checkpoint | None:
        return self._call("get_checkpoint", session_id, step)  # type: ignore[no-any-return]

    def update(self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int = 100) -> Any:
        """As ``SessionStore.update``: optimistic, retried with jittered backoff."""

        def read() -> tuple[Any, int]:
            session = self.get(session_id)
            if session is None:
                raise NotFound(f"no session {session_id!r}")
            return session.state, session.generation

        def write(state: Any, generation: int) -> Any:
            return self.replace(session_id, state, expect_generation=generation)

        return cas_update(read, write, fn, max_retries=max_retries)


class AsyncSessionsCalls(SessionsCalls):
    """``db.sessions`` for asyncio code: every method returns an awaitable."""

    async def update(
        self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int = 100
    ) -> Any:
        if type(max_retries) is not int or max_retries < 0:
            raise InvalidArgument("max_retries must be a non-negative int")
        rng = random.Random()
        for attempt in range(max_retries + 1):
            session = await self.get(session_id)  # type: ignore[misc]
            if session is None:
                raise NotFound(f"no session {session_id!r}")
            new_state = fn(session.state)
            try:
                await self.replace(session_id, new_state, expect_generation=session.generation)  # type: ignore[misc]
                return new_state
            except Conflict as e:
                if attempt == max_retries:
                    raise Conflict(
                        f"update gave up after {max_retries + 1} attempts under contention",
                        e.generation,
                    ) from e
                await asyncio.sleep(rng.uniform(0, min(0.05, 0.0002 * 2**attempt)))
        raise AssertionError("unreachable")


class MemoryCalls:
    """``db.memory`` of a remote database (methods as ``engramdb.memory.MemoryStore``).

    Embeddings are computed by the server's embedder, unless ``embedding=`` is passed."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"memory.{method}", args, kwargs)

    def add(self, content: str, **kwargs: Any) -> dict[str, str]:
        return self._call("add", content, **_plain(kwargs))  # type: ignore[no-any-return]

    def update(self, memory_id: str, **kwargs: Any) -> Memory:
        return self._call("update", memory_id, **_plain(kwargs))  # type: ignore[no-any-return]

    def invalidate(self, memory_id: str, *, at: float | None = None) -> Memory:
        return self._call("invalidate", memory_id, at=at)  # type: ignore[no-any-return]

    def delete(self, memory_id: str) -> bool:
        return self._call("delete", memory_id)  # type: ignore[no-any-return]

    def delete_all(self, **scope: Any) -> int:
        return self._call("delete_all", **scope)  # type: ignore[no-any-return]

    def get(self, memory_id: str) -> Memory | None:
        return self._call("get", memory_id)  # type: ignore[no-any-return]

    def history(self, memory_id: str) -> builtins.list[MemoryEvent]:
        return self._call("history", memory_id)  # type: ignore[no-any-return]

    def list(self, **kwargs: Any) -> tuple[builtins.list[Memory], str | None]:
        return self._call("list", **kwargs)  # type: ignore[no-any-return]

    def search(self, query: str, **kwargs: Any) -> builtins.list[MemoryHit]:
        return self._call("search", query, **_plain(kwargs))  # type: ignore[no-any-return]


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments as msgpack carries them (an embedding as a float32 array)."""
    from engramdb.index.vector import as_float32

    out = dict(kwargs)
    if out.get("embedding") is not None:
        out["embedding"] = as_float32(out["embedding"])  # InvalidArgument unless numbers
    if out.get("metadata") is not None:
        out["metadata"] = dict(out["metadata"])
    return out


class CacheCoreCalls:
    """The cache's storage primitives on the server (see ``engramdb.cache.CacheCore``)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _call(self, method: str, *args: Any) -> Any:
        return self._owner._call(f"cache.{method}", args, {})

    def peek(self, key: str) -> Any:
        return self._call("peek", key)

    def acquire(self, key: str, lease_ttl: float) -> Any:
        return self._call("acquire", key, lease_ttl)

    def fill(self, *args: Any) -> Any:
        return self._call("fill", *args)

    def release(self, *args: Any) -> Any:
        return self._call("release", *args)

    def delete(self, key: str) -> Any:
        return self._call("delete", key)

    def set(self, key: str, value: Any, ttl: float, stale_ttl: float = 0.0) -> Any:
        return self._call("set", key, value, ttl, stale_ttl)
