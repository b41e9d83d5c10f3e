"""One API on every face: embedded, remote sync, remote asyncio and embedded asyncio.

For every role, each face must offer the same public methods and properties as the embedded
implementation, with the same parameters, defaults, result types (their face's handle types
standing for the embedded ones, awaited on asyncio faces) and docstrings. The remote
methods are generated from the embedded declarations; this test is what keeps the
hand-written rest, and the generated file itself, in step.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import engramdb
from engramdb.aio import AsyncClient, AsyncDatabase
from engramdb.cache.core import CacheCore
from engramdb.cache.model import AsyncCache, Cache
from engramdb.client import _generated as h
from engramdb.client.sync import Client
from engramdb.database import Database
from engramdb.features.store import FeatureStore
from engramdb.memory.store import MemoryStore
from engramdb.recordset import RecordSet
from engramdb.sessions.store import SessionStore
from engramdb.transaction import AsyncTransaction, Transaction
from engramdb.vectors.collection import Collection
from engramdb.vectors.store import VectorStore

# role -> (embedded, remote sync, remote asyncio, embedded asyncio)
FACES: dict[str, tuple[type, ...]] = {
    "Database": (Database, Client, AsyncClient, AsyncDatabase),
    "RecordSet": (RecordSet, h.RemoteRecordSet, h.AsyncRecordSet),
    "VectorStore": (VectorStore, h.RemoteVectorStore, h.AsyncVectorStore),
    "Collection": (Collection, h.RemoteCollection, h.AsyncCollection),
    "SessionStore": (SessionStore, h.RemoteSessionStore, h.AsyncSessionStore),
    "MemoryStore": (MemoryStore, h.RemoteMemoryStore, h.AsyncMemoryStore),
    "FeatureStore": (FeatureStore, h.RemoteFeatureStore, h.AsyncFeatureStore),
    "CacheCore": (CacheCore, h.RemoteCacheCore, h.AsyncCacheCore),
    "Cache": (Cache, Cache, AsyncCache),
    "Transaction": (Transaction, Transaction, AsyncTransaction),
}
# What a network face adds (raw commands) and what only an in-process one has.
EXTRAS = {Client: {"execute"}, AsyncClient: {"execute"}}
# Embedded-only members, each with the reason it cannot exist remotely.
EMBEDDED_ONLY = {
    ("MemoryStore", "collection"): "the in-process collection object; remotely, db.vectors",
}
# Results that differ on asyncio faces by design, each with the reason.
ASYNC_RESULTS = {("Cache", "memoize"): "the asyncio decorator makes an awaitable function"}
# The embedded type name -> the name each face's handle has.
HANDLES = {
    "Collection": ("RemoteCollection", "AsyncCollection"),
    "RecordSet": ("RemoteRecordSet", "AsyncRecordSet"),
    "VectorStore": ("RemoteVectorStore", "AsyncVectorStore"),
    "SessionStore": ("RemoteSessionStore", "AsyncSessionStore"),
    "MemoryStore": ("RemoteMemoryStore", "AsyncMemoryStore"),
    "FeatureStore": ("RemoteFeatureStore", "AsyncFeatureStore"),
    "Cache": ("Cache", "AsyncCache"),
    "Transaction": ("Transaction", "AsyncTransaction"),
    "Iterator": ("Iterator", "AsyncIterator"),
}
# Calls that stay synchronous on asyncio faces: they do no I/O (handles, staging, counters).
LOCAL = {
    "records", "transaction", "memory_with", "memoize", "stats", "close", "discard", "collection",
    "put", "update", "delete", "touch", "operate", "put_many", "delete_many",
}  # fmt: skip


def members(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, property) or callable(member):
            out[name] = member
    return out


def translated(text: str, face: int) -> str:
    if face == 0:
        return text
    for embedded, handles in HANDLES.items():
        text = re.sub(rf"\b{embedded}\b", handles[0 if face == 1 else 1], text)
    return text


def cases() -> list[tuple[str, int]]:
    return [(role, face) for role, classes in FACES.items() for face in range(1, len(classes))]


@pytest.mark.parametrize(("role", "face"), cases())
def test_every_face_has_the_embedded_methods_and_nothing_else(role: str, face: int) -> None:
    embedded, other = FACES[role][0], FACES[role][face]
    want = {n for n in members(embedded) if (role, n) not in EMBEDDED_ONLY}
    have = set(members(other)) - EXTRAS.get(other, set())
    assert sorted(have - want) == [], f"{other.__name__} has more than {embedded.__name__}"
    assert sorted(want - have) == [], f"{other.__name__} lacks methods of {embedded.__name__}"


@pytest.mark.parametrize(("role", "face"), cases())
def test_every_face_has_the_embedded_signatures_results_and_docs(role: str, face: int) -> None:
    embedded, other = FACES[role][0], FACES[role][face]
    is_async = face >= 2 or other in (AsyncCache, AsyncTransaction)
    theirs = members(other)
    for name, member in members(embedded).items():
        if (role, name) in EMBEDDED_ONLY:
            continue
        where = f"{other.__name__}.{name}"
        assert inspect.getdoc(getattr(other, name)) == inspect.getdoc(getattr(embedded, name)), (
            f"{where}: docstring differs from the embedded one"
        )
        if isinstance(member, property):
            assert isinstance(theirs[name], property), f"{where} should be a property"
            continue
        mine = inspect.signature(getattr(embedded, name))
        their = inspect.signature(getattr(other, name))
        params = [
            (p.name, p.kind, p.default, translated(str(p.annotation), face))
            for p in mine.parameters.values()
        ]
        got = [(p.name, p.kind, p.default, str(p.annotation)) for p in their.parameters.values()]
        assert got == params, f"{where}: parameters differ"
        if not (is_async and (role, name) in ASYNC_RESULTS):
            want = translated(str(mine.return_annotation), face)
            assert str(their.return_annotation) == want, f"{where}: result type differs"
        fn = getattr(other, name)
        if is_async and name not in LOCAL:
            awaited = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
            assert awaited, f"{where} must be awaited on an asyncio face"


def test_the_generated_client_methods_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engramdb.client.generate", "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_importing_engramdb_loads_no_role_implementation_or_heavy_library() -> None:
    probe = (
        "import sys, engramdb, engramdb.aio\n"
        "db = engramdb.open()\n"
        "db.records('s').put('k', {'v': 1})\n"
        "heavy = ['numpy', 'faiss', 'tantivy', 'duckdb', 'pyarrow', 'engramdb.vectors.store',"
        " 'engramdb.features.store', 'engramdb.memory.store', 'engramdb.sessions.store',"
        " 'engramdb.cache.core', 'engramdb.client.sync']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# The hand-written client and relay code before the clients were derived from the
# declarations (client/, aio.py, server/handlers/native.py at 88ee38a): deriving them was
# to remove code, not add it. Adding a method touches its implementation and its test only.
HAND_WRITTEN_BEFORE = 1971


def test_the_hand_written_client_and_relay_code_is_smaller_than_the_stubs_it_replaced() -> None:
    src = Path(engramdb.__file__).parent
    # The files that replaced the stubs, named: a new capability in a module of its own
    # (hedging, tracing) is not a stub and is not counted; code it adds to these files is.
    client = ("__init__.py", "_core.py", "_handles.py", "generate.py", "sync.py")
    files = [src / "client" / name for name in client]
    files += [src / "aio.py", src / "dispatch.py", src / "remote.py"]
    files += [src / "server" / "handlers" / "native.py"]
    lines = {p.name: len(p.read_text().splitlines()) for p in files}
    assert sum(lines.values()) < HAND_WRITTEN_BEFORE, lines
