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

from engramdb import ops
from engramdb.client.sync import Client, RemoteRecordSet, connect
from engramdb.clock import Clock, FakeClock
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

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Change",
    "ChangeLogTruncated",
    "Client",
    "Clock",
    "Conflict",
    "Database",
    "EngramError",
    "FakeClock",
    "InvalidArgument",
    "Key",
    "Limits",
    "NotFound",
    "Overloaded",
    "ProtocolError",
    "Record",
    "RecordSet",
    "RecordTooBig",
    "RemoteRecordSet",
    "RequestTooLarge",
    "ScanPage",
    "StorageError",
    "Timeout",
    "Unavailable",
    "__version__",
    "connect",
    "open",
    "ops",
]
