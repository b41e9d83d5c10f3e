"""``db.memory``: long-term memory for agents (see ``engramdb.memory.store``).

The value types live in ``model`` (what clients import); ``MemoryStore``, the
implementation over a ``Store`` and the vector role, is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.memory.model import Memory, MemoryEvent, MemoryHit, Weights

if TYPE_CHECKING:
    from engramdb.memory.store import MemoryStore

__all__ = ["Memory", "MemoryEvent", "MemoryHit", "MemoryStore", "Weights"]


def __getattr__(name: str) -> Any:
    if name == "MemoryStore":
        from engramdb.memory.store import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
