"""Public value types of long-term memory (what clients import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["Memory", "MemoryEvent", "MemoryHit", "Weights"]


@dataclass(frozen=True)
class Weights:
    """The ranking blend; see the module docs."""

    semantic: float = 0.6
    bm25: float = 0.2
    recency: float = 0.1
    importance: float = 0.1


class Memory(msgspec.Struct, frozen=True):
    """One memory: its content, scope, metadata, importance and validity window."""

    id: str
    content: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    importance: float
    created_at: float
    updated_at: float
    valid_from: float
    invalid_at: float | None
    expires_at: float | None


class MemoryHit(msgspec.Struct, frozen=True):
    """A search result: the memory, its blended ``score`` and the components of it."""

    memory: Memory
    score: float
    scores: dict[str, float]


class MemoryEvent(msgspec.Struct, frozen=True):
    """One entry of a memory's history."""

    event: str  # ADD | UPDATE | INVALIDATE | DELETE
    content: str | None
    previous: str | None
    at: float
    metadata: dict[str, Any] | None = None
