"""``db.cache``: a cache-aside helper that cannot stampede (see ``engramdb.cache.model``).

``Cache`` (the algorithm) is the same on every face; ``CacheCore`` (its storage primitives
over a ``Store``) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.cache.model import Cache, LoaderError, ThreadedCore

if TYPE_CHECKING:
    from engramdb.cache.core import LEASES, VALUES, CacheCore

__all__ = ["LEASES", "VALUES", "Cache", "CacheCore", "LoaderError", "ThreadedCore"]


def __getattr__(name: str) -> Any:
    if name in ("CacheCore", "LEASES", "VALUES"):
        from engramdb.cache import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
