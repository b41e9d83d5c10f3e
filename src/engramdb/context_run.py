"""How ``db.context`` runs: one snapshot read for the record-backed parts, the index-backed
searches beside it on worker threads, everything bounded by the call's deadline.

- The snapshot task plans the record-backed parts (records, session, features), each
  catching its own error, then reads every record they need with one ``Store.read`` (one
  LMDB read transaction; one locked read on the memory engine; one statement on
  PostgreSQL), then builds each part from what that read saw.
- The memory search and the vector/text/hybrid search each run as their own task: they read
  derived indexes (HNSW, BM25), which follow the change log and are not versioned with the
  records, so they cannot share the snapshot.
- Parts not done by the deadline come back as ``Timeout``; their threads finish in the
  background (Python cannot stop a thread) and their results are dropped. The pool is
  bounded, so a flood of slow parts queues rather than spawning threads without limit.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.context import (
    PARTS,
    Context,
    FeatureRead,
    MemoryQuery,
    Part,
    SearchQuery,
    SessionRead,
)
from engramdb.errors import EngramError, InvalidArgument, Timeout
from engramdb.records.keys import encode_key

if TYPE_CHECKING:
    from engramdb.database import Database
    from engramdb.records.keys import Key
    from engramdb.records.model import Record
    from engramdb.recordset import RecordSet

__all__ = ["run"]

_WORKERS = 16
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, "engramdb-context")
        return _pool


def _forget_pool() -> None:
    # A forked child has none of the parent's threads: it makes its own pool on first use.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)

Reads = list[tuple["RecordSet", Sequence["Key"]]]
Fetched = Sequence[Sequence["Record | None"]]
ReadAcross = Callable[[Reads], list[list["Record | None"]]]


def _failed(error: Exception) -> Part[Any]:
    if isinstance(error, EngramError):
        return Part(error=error)
    # An embedder's or a library's failure: this part's, not the whole call's.
    wrapped = EngramError(f"{type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return Part(error=wrapped)


def _guarded(fn: Callable[[], Any]) -> Part[Any]:
    """``fn``'s value as a part, or the error it raised as that part's alone."""
    try:
        return Part(fn())
    except Exception as e:
        return _failed(e)


def _records(db: Database, records: Mapping[str, Sequence[Key]]) -> tuple[Reads, Any]:
    names = list(records)
    reads: Reads = [(db.records(name), list(records[name])) for name in names]
    for _, keys in reads:  # a bad key fails this part here, not the one read all parts share
        for key in keys:
            encode_key(key, db.limits)
    return reads, lambda got: dict(zip(names, got))


def _session(db: Database, read: SessionRead) -> tuple[Reads, Any]:
    from engramdb.sessions.store import from_snapshot, snapshot_read

    sessions = db.sessions
    records, key = snapshot_read(sessions, read.id)

    def build(got: Fetched) -> Any:
        found = from_snapshot(sessions, got[0][0])
        if found is None or read.last_events is None:
            return found
        kept = found.events[-read.last_events :] if read.last_events else []
        return msgspec.structs.replace(found, events=kept)

    return [(records, [key])], build


def _features(db: Database, read: FeatureRead) -> tuple[Reads, Any]:
    rows = [dict(row) for row in read.entity_rows]
    from engramdb.features.store import online_reads

    reads, build = online_reads(
        db.features, read.features, rows, full_feature_names=read.full_feature_names
    )
    return list(reads), build


def _snapshot(
    db: Database,
    read_across: ReadAcross,
    records: Mapping[str, Sequence[Key]] | None,
    session: SessionRead | None,
    features: FeatureRead | None,
) -> dict[str, Part[Any]]:
    """The record-backed parts, all built from one read (one snapshot)."""
    parts: dict[str, Part[Any]] = {}
    planned: list[tuple[str, Reads, Callable[[Fetched], Any]]] = []
    makers: tuple[tuple[str, Any, Callable[[Database, Any], tuple[Reads, Any]]], ...] = (
        ("records", records, _records),
        ("session", session, _session),
        ("features", features, _features),
    )
    for name, request, make in makers:
        if request is not None:
            try:
                wanted, build = make(db, request)
            except Exception as e:
                parts[name] = _failed(e)
            else:
                planned.append((name, wanted, build))
    if not planned:
        return parts
    try:
        fetched = read_across([read for _, wanted, _ in planned for read in wanted])
    except Exception as e:
        return {**parts, **{name: _failed(e) for name, _, _ in planned}}
    at = 0
    for name, wanted, build in planned:
        got = fetched[at : at + len(wanted)]
        at += len(wanted)
        parts[name] = _guarded(lambda build=build, got=got: build(got))  # type: ignore[misc]
    return parts


def _memory(db: Database, query: MemoryQuery) -> Any:
    return db.memory.search(
        query.query,
        user_id=query.user_id,
        agent_id=query.agent_id,
        run_id=query.run_id,
        k=query.k,
        filter=query.filter,
        hybrid=query.hybrid,
    )


def _search(db: Database, query: SearchQuery) -> Any:
    collection = db.vectors.get_collection(query.collection)
    options: dict[str, Any] = {"filter": query.filter, "include": query.include}
    if query.vector is None:
        return collection.text_search(query.text, query.k, **options)  # type: ignore[arg-type]
    if query.text is None:
        return collection.search(query.vector, query.k, **options)
    return collection.hybrid_search(query.text, query.vector, query.k, **options)


def run(
    db: Database,
    read_across: ReadAcross,
    *,
    records: Mapping[str, Sequence[Key]] | None,
    session: SessionRead | None,
    features: FeatureRead | None,
    memory: MemoryQuery | None,
    search: SearchQuery | None,
    timeout: float | None,
) -> Context:
    """``db.context`` (see its docstring); arguments already checked by type."""
    started = time.monotonic()
    for value, cls, name in (
        (session, SessionRead, "session"),
        (features, FeatureRead, "features"),
        (memory, MemoryQuery, "memory"),
        (search, SearchQuery, "search"),
    ):
        if value is not None and type(value) is not cls:
            raise InvalidArgument(f"{name}= takes an engramdb.{cls.__name__}, not {value!r}")
    asked = {
        "records": records, "session": session, "features": features,
        "memory": memory, "search": search,
    }  # fmt: skip
    jobs: list[Callable[[], dict[str, Part[Any]]]] = []
    if records is not None or session is not None or features is not None:
        jobs.append(lambda: _snapshot(db, read_across, records, session, features))
    if memory is not None:
        jobs.append(lambda: {"memory": _guarded(lambda: _memory(db, memory))})
    if search is not None:
        jobs.append(lambda: {"search": _guarded(lambda: _search(db, search))})
    # No deadline to keep: the calling thread runs the last part itself, while the pool
    # runs the others, rather than only waiting (a thread hop fewer). With a deadline every
    # part runs in the pool, so one that overruns can be left behind.
    mine = jobs.pop() if timeout is None and jobs else None
    pool = _executor()
    tasks = [pool.submit(job) for job in jobs]
    out: dict[str, Part[Any]] = {} if mine is None else mine()
    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
    concurrent.futures.wait(tasks, timeout=left)
    for task in tasks:
        if task.done():
            out.update(task.result())
        else:
            task.cancel()  # not started yet: never will be; started: its result is dropped
    late: Part[Any] = Part(error=Timeout(f"not done within the context's timeout of {timeout}s"))
    parts = {name: out.get(name, late) for name in PARTS if asked[name] is not None}
    # Golden signals: the call's latency, and each part's error by type (Timeout included).
    op = db.metrics.op("context")
    for part in parts.values():
        if part.error is not None:
            op.error(type(part.error).__name__)
    op.observe(int((time.monotonic() - started) * 1e9))
    return Context(**parts)
