"""engramdb: the operational data tier for AI inference and agents.

>>> import engramdb
>>> db = engramdb.open("./data")            # embedded, durable (LMDB); open() for in-memory
>>> users = db.records("users")
>>> users.put("u1", {"name": "Ada", "visits": 0}, ttl=3600)
1
>>> users.operate("u1", [engramdb.ops.incr("visits")])
[1]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb import ops
from engramdb.clock import Clock, FakeClock
from engramdb.context import Context, FeatureRead, MemoryQuery, Part, SearchQuery, SessionRead
from engramdb.database import Database, open
from engramdb.errors import (
    AuthError,
    ChangeLogTruncated,
    Conflict,
    EngramError,
    InvalidArgument,
    NotFound,
    Overloaded,
    ProtocolError,
    RecordTooBig,
    RequestTooLarge,
    StorageError,
    Timeout,
    Unavailable,
)
from engramdb.records.keys import Key
from engramdb.records.limits import Limits
from engramdb.records.model import Change, Record, ScanPage
from engramdb.recordset import RecordSet

if TYPE_CHECKING:
    from engramdb.client.sync import Client, RemoteRecordSet, connect

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Change",
    "ChangeLogTruncated",
    "Client",
    "Clock",
    "Conflict",
    "Context",
    "Database",
    "EngramError",
    "FakeClock",
    "FeatureRead",
    "InvalidArgument",
    "Key",
    "Limits",
    "MemoryQuery",
    "NotFound",
    "Overloaded",
    "Part",
    "ProtocolError",
    "Record",
    "RecordSet",
    "RecordTooBig",
    "RemoteRecordSet",
    "RequestTooLarge",
    "ScanPage",
    "SearchQuery",
    "SessionRead",
    "StorageError",
    "Timeout",
    "Unavailable",
    "__version__",
    "connect",
    "open",
    "ops",
]


def __getattr__(name: str) -> Any:
    # The network client loads on first use: ``import engramdb`` stays light.
    if name in ("Client", "RemoteRecordSet", "connect"):
        from engramdb.client import sync

        return getattr(sync, name)
    raise AttributeError(f"module 'engramdb' has no attribute {name!r}")
