"""``db.sessions``: agent session state (see ``engramdb.sessions.store``).

The value types and the shared update algorithm live in ``model`` (what clients import);
the implementation over a ``Store`` is ``SessionStore``, loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.sessions.model import Checkpoint, Session, SessionPage, cas_update

if TYPE_CHECKING:
    from engramdb.sessions.store import SessionStore

__all__ = ["Checkpoint", "Session", "SessionPage", "SessionStore", "cas_update"]


def __getattr__(name: str) -> Any:
    if name == "SessionStore":
        from engramdb.sessions.store import SessionStore

        return SessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
