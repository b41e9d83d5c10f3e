"""Write each adapter operation once, run it on any face of the API.

An operation is a generator (a *flow*) that yields *steps*: functions of a ``Face`` that
call the database (``on(name, "get", key)``). ``Faces.run`` drives a flow
synchronously; ``Faces.arun`` drives the same flow with awaits, so the algorithm of a
saver or store exists once (the model is ``engramdb/cache``: one flow, two drivers). A step
returns a value on a sync face and an awaitable on an asyncio face; the async driver awaits
whatever is awaitable. An exception raised by a step is thrown into the flow, which may
catch it (a ``Conflict`` retried, say).

``Faces(db)`` accepts every face of the API and gives both kinds of caller what they need:

- an embedded ``engramdb.Database`` or a ``engramdb.connect()`` client serves sync calls
  directly and async calls on a worker thread (``asyncio.to_thread``, one hop per
  operation, not per step);
- an ``engramdb.aio`` database serves async calls natively; its sync calls go to the
  embedded ``Database`` underneath it, or, for ``engramdb.aio.connect()``, to a sync client
  of the same server, opened on first use and closed by ``close()``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["Face", "Faces", "Flow", "Step"]

T = TypeVar("T")
Step = Callable[["Face"], Any]
Flow = Generator[Step, Any, T]


class Face:
    """What a step sees: the database (sync or asyncio) and whether it is awaited."""

    __slots__ = ("db", "is_async")

    def __init__(self, db: Any, is_async: bool) -> None:
        self.db = db
        self.is_async = is_async


def _is_async_face(db: Any) -> bool:
    from engramdb.client._generated import AsyncDatabaseFace

    return isinstance(db, AsyncDatabaseFace)


class Faces:
    """The sync and asyncio faces of one database, and the two flow drivers."""

    def __init__(self, db: Any) -> None:
        if not callable(getattr(db, "records", None)) or not callable(
            getattr(db, "transaction", None)
        ):
            from engramdb.errors import InvalidArgument

            raise InvalidArgument(
                "expected an engramdb database: engramdb.open(), engramdb.connect(), "
                f"engramdb.aio.open() or engramdb.aio.connect(), not {type(db).__name__}"
            )
        self.db = db
        self._lock = threading.Lock()
        self._owned: Any = None  # a sync client this object opened (and closes)
        if _is_async_face(db):
            self._async: Face | None = Face(db, True)
            inner = getattr(db, "db", None)  # engramdb.aio.AsyncDatabase wraps a Database
            self._sync: Face | None = None if inner is None else Face(inner, False)
        else:
            self._async = None
            self._sync = Face(db, False)

    @property
    def sync(self) -> Face:
        """The sync face (for an asyncio client: a sync client of the same server)."""
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    import engramdb

                    self._owned = engramdb.connect(self.db.url, timeout=self.db.timeout)
                    self._sync = Face(self._owned, False)
        return self._sync

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to its end on the sync face."""
        face = self.sync
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, error = step(face), None
            except Exception as e:
                reply, error = None, e

    async def arun(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to its end, awaiting every step that needs it."""
        face = self._async
        if face is None:
            # A sync face: the whole operation takes one trip to a worker thread, so the
            # loop never waits on an fsync or a socket.
            return await asyncio.to_thread(self.run, flow)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply = step(face)
                if inspect.isawaitable(reply):
                    reply = await reply
                error = None
            except Exception as e:
                reply, error = None, e

    def close(self) -> None:
        """Close what this object opened (never the database it was given)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            self._sync = None
            owned.close()


Write = tuple[str, str, tuple[Any, ...], dict[str, Any]]  # set, method, args, kwargs


COLLECTION = "@collection:"  # a Write's target prefix naming a vector collection


def commit(writes: list[Write]) -> Step:
    """A step that stages ``writes`` in one ``db.transaction()`` and commits them: all or
    nothing, one commit (one round trip remotely). A target ``COLLECTION + name`` stages a
    vector collection's ``upsert``/``delete`` in the same commit."""

    def step(face: Face) -> Any:
        tx = face.db.transaction()
        for target, method, args, kwargs in writes:
            if target.startswith(COLLECTION):
                handle = tx.collection(target[len(COLLECTION) :])
            else:
                handle = tx.records(target)
            getattr(handle, method)(*args, **kwargs)
        return tx.commit()

    return step


def scan_all(set_name: str, prefix: str, *, batch: int = 1000) -> Flow[list[Any]]:
    """Every live record of ``set_name`` whose key starts with ``prefix``, in key order."""
    records: list[Any] = []
    cursor: str | None = None
    while True:
        page = yield on(set_name, "scan", prefix, cursor=cursor, limit=batch)
        records.extend(page.records)
        if page.cursor is None:
            return records
        cursor = page.cursor


def on(set_name: str, method: str, *args: Any, **kwargs: Any) -> Step:
    """A step calling ``db.records(set_name).<method>(*args, **kwargs)``."""
    return lambda f: getattr(f.db.records(set_name), method)(*args, **kwargs)


def call(target: Any, method: str, *args: Any, **kwargs: Any) -> Step:
    """A step calling ``target.<method>(*args, **kwargs)`` (a handle of the face's own)."""
    return lambda f: getattr(target, method)(*args, **kwargs)


def embed_documents(embedding: Any, texts: list[str]) -> Step:
    """A step embedding ``texts`` with a LangChain ``Embeddings`` (awaited on asyncio)."""
    return lambda f: (
        embedding.aembed_documents(texts) if f.is_async else embedding.embed_documents(texts)
    )


def embed_query(embedding: Any, text: str) -> Step:
    """A step embedding a query with a LangChain ``Embeddings`` (awaited on asyncio)."""
    return lambda f: embedding.aembed_query(text) if f.is_async else embedding.embed_query(text)
