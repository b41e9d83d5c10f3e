"""The client's faces of the API: the generated remote methods plus what runs client-side.

Each class below is a generated ``<Face>Calls`` (sync) or ``Async<Face>Calls`` (asyncio)
with what cannot be a plain remote call: iteration over pages, the optimistic loops that
take a function (``transform``, ``sessions.update``), batches split to fit a request,
embeddings computed on the client, and the database-level handles. They run over any owner
with a ``_request(method, args, kwargs)``: the network clients (``client.sync``,
``engramdb.aio.connect``) and the in-process asyncio database (``engramdb.aio.open``).

What involves several calls is written once, as a generator of effects (``("call", method,
args, kwargs)`` or ``("sleep", "", (seconds,), {})``), and driven by ``_drive`` (sync) or
``_adrive`` (asyncio); a failed call is thrown back into the generator.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engramdb.client._generated import (
    AsyncCacheCoreCalls,
    AsyncCollectionCalls,
    AsyncDatabaseCalls,
    AsyncFeatureStoreCalls,
    AsyncMemoryStoreCalls,
    AsyncRecordSetCalls,
    AsyncSessionStoreCalls,
    AsyncVectorStoreCalls,
    CacheCoreCalls,
    CollectionCalls,
    DatabaseCalls,
    FeatureStoreCalls,
    MemoryStoreCalls,
    RecordSetCalls,
    SessionStoreCalls,
    VectorStoreCalls,
)
from engramdb.errors import Conflict, EngramError, InvalidArgument, NotFound, StorageError
from engramdb.observability.metrics import Metrics
from engramdb.records.keys import Key, is_reserved, set_prefix
from engramdb.records.limits import DEFAULT_LIMITS
from engramdb.records.model import Record
from engramdb.records.writes import KEEP, Current, TransformFn
from engramdb.transaction import AsyncTransaction, Transaction
from engramdb.vectors.model import CollectionInfo

if TYPE_CHECKING:
    from engramdb.cache.model import AsyncCache, Cache
    from engramdb.embedders import Embedder
    from engramdb.features.model import HistoricalResult, IngestResult

__all__ = [
    "ASYNC_HANDLES",
    "SYNC_HANDLES",
    "AsyncCollection",
    "AsyncDatabaseFace",
    "AsyncRecordSet",
    "RemoteCollection",
    "RemoteDatabaseFace",
    "RemoteRecordSet",
    "document",
]

Effect = tuple[str, str, tuple[Any, ...], dict[str, Any]]
Flow = Generator[Effect, Any, Any]

_RETRIES = 100
_JITTER = random.Random()
MAX_CACHED_SETS = 4096


def _drive(owner: Any, flow: Flow) -> Any:
    """Run ``flow``'s effects against ``owner``."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            kind, method, args, kwargs = flow.throw(error) if error else flow.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        if kind == "sleep":
            time.sleep(args[0])
            continue
        try:
            reply = owner._request(method, args, kwargs)
        except EngramError as e:
            error = e


async def _adrive(owner: Any, flow: Flow) -> Any:
    """``_drive`` for asyncio owners."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            kind, method, args, kwargs = flow.throw(error) if error else flow.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        if kind == "sleep":
            await asyncio.sleep(args[0])
            continue
        try:
            reply = await owner._request(method, args, kwargs)
        except EngramError as e:
            error = e


def _backoff(attempt: int) -> Effect:
    # Full jitter (AWS architecture blog): spreads retries so contenders stop colliding.
    return ("sleep", "", (_JITTER.uniform(0, min(0.05, 0.0002 * 2**attempt)),), {})


def _gave_up(what: str, error: Conflict) -> Conflict:
    return Conflict(
        f"{what} gave up after {_RETRIES + 1} attempts under contention", error.generation
    )


class _Owned:
    """A handle that needs only its owner (the transport)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner


# record sets: iteration, and transform through an optimistic transaction -------------------


def _transform_flow(set_name: str, items: Sequence[tuple[Key, TransformFn]]) -> Flow:
    """``RecordSet.transform_many`` remotely: the functions cannot travel, so read the
    records, run the functions here, and commit the outcomes only if no record moved
    meanwhile (retrying on ``Conflict``). ``now`` is this machine's clock in ms."""
    if isinstance(items, str | bytes) or not isinstance(items, list | tuple):
        raise InvalidArgument("transform_many takes a list of (key, fn) pairs")
    keys = [key for key, _ in items]
    for attempt in range(_RETRIES + 1):
        records: list[Record | None] = yield ("call", "records.get_many", (set_name, keys), {})
        now = int(time.time() * 1000)
        reads: list[list[Any]] = []
        writes: list[list[Any]] = []
        results: list[Any] = []
        seen: dict[Any, Record | None] = {}
        for (key, fn), record in zip(items, records):
            record = seen.get(key, record)
            current = Current(
                None if record is None else dict(record.bins),
                0 if record is None else record.generation,
                0 if record is None or record.expires_at is None else int(record.expires_at * 1000),
            )
            outcome = fn(current, now)
            results.append(outcome.result)
            reads.append([set_name, key, current.generation])
            bins, expires = outcome.bins, outcome.expires_ms
            if bins is None:
                if record is not None:
                    writes.append(["delete", set_name, key, [], {}])
                seen[key] = None
                continue
            if (bins is KEEP and expires is KEEP) or (bins is KEEP and record is None):
                continue
            if bins is KEEP:
                bins = record.bins  # type: ignore[union-attr]
            if expires is KEEP:
                expires = current.expires_ms
            ttl = None if not expires else max(0.001, (int(expires) - now) / 1000)
            writes.append(["put", set_name, key, [bins], {} if ttl is None else {"ttl": ttl}])
            seen[key] = Record(key, dict(bins), current.generation + 1, None, now / 1000)
        if not writes:
            return results
        try:
            yield ("call", "db.commit", (reads, writes), {})
            return results
        except Conflict as e:
            if attempt == _RETRIES:
                raise _gave_up("transform", e) from e
        yield _backoff(attempt)
    raise AssertionError("unreachable")


class _Named:
    def __init__(self, owner: Any, name: str) -> None:
        self._owner = owner
        self._address = (name,)
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class RemoteRecordSet(_Named, RecordSetCalls):
    """``engramdb.RecordSet`` over the network."""

    def iterate(
        self,
        prefix: str | bytes | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        batch: int = 1000,
    ) -> Iterator[Record]:
        cursor: str | None = None
        while True:
            page = self.scan(
                prefix, start=start, end=end, reverse=reverse, cursor=cursor, limit=batch
            )
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor

    def transform(self, key: Key, fn: TransformFn) -> Any:
        return self.transform_many([(key, fn)])[0]

    def transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> list[Any]:
        result: list[Any] = _drive(self._owner, _transform_flow(self.name, items))
        return result


class AsyncRecordSet(_Named, AsyncRecordSetCalls):
    """``engramdb.RecordSet`` for asyncio code: every call is awaited."""

    async def iterate(
        self,
        prefix: str | bytes | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        batch: int = 1000,
    ) -> AsyncIterator[Record]:
        cursor: str | None = None
        while True:
            page = await self.scan(
                prefix, start=start, end=end, reverse=reverse, cursor=cursor, limit=batch
            )
            for record in page.records:
                yield record
            if page.cursor is None:
                return
            cursor = page.cursor

    async def transform(self, key: Key, fn: TransformFn) -> Any:
        return (await self.transform_many([(key, fn)]))[0]

    async def transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> list[Any]:
        result: list[Any] = await _adrive(self._owner, _transform_flow(self.name, items))
        return result


# collections: upserts split to fit a request ----------------------------------------------

# Items per request of a remote upsert: the embedded chunk (1,000 items, atomic each), made
# smaller when the vectors alone would pass this many bytes (the server's default frame
# limit is 2 MiB per request; metadata and texts ride along).
UPSERT_BYTES = 1 << 20


def _upsert_flow(
    handle: Any, ids: Any, vectors: Any, metadata: Any, texts: Any, ttl: Any, expect: Any
) -> Flow:
    """The upsert in requests that fit: chunks of at most 1,000 items (the embedded atomic
    unit), fewer when their vectors would pass ``UPSERT_BYTES``."""
    kwargs = {k: v for k, v in (("ttl", ttl), ("expect_generation", expect)) if v is not None}
    if not isinstance(ids, list | tuple):  # the server says what is wrong with it
        args = (handle.name, ids, handle._wire("vectors", vectors), metadata, texts)
        return (yield ("call", "collection.upsert", args, kwargs))
    from engramdb.index.vector import as_float32

    array = as_float32(vectors)
    per_item = max(1, array[0].nbytes if array.ndim == 2 and len(array) else array.nbytes)
    size = max(1, min(1000, UPSERT_BYTES // per_item))
    generations: list[int] = []
    for i in range(0, max(1, len(ids)), size):

        def part(column: Any) -> Any:
            return None if column is None else column[i : i + size]  # noqa: B023

        sent = {**kwargs, "expect_generation": part(expect)} if expect is not None else kwargs
        rows = handle._wire("vectors", array[i : i + size])
        args = (handle.name, ids[i : i + size], rows, part(metadata), part(texts))
        generations += yield ("call", "collection.upsert", args, sent)
    return generations


class _Collection:
    def __init__(self, owner: Any, info: CollectionInfo) -> None:
        self._owner = owner
        self._address = (info.name,)
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dim={self.info.dim} {self.info.metric}>"


class RemoteCollection(_Collection, CollectionCalls):
    """``engramdb.vectors.Collection`` over the network."""

    def upsert(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        *,
        ttl: float | None = None,
        expect_generation: Sequence[int | None] | None = None,
    ) -> list[int]:
        flow = _upsert_flow(self, ids, vectors, metadata, texts, ttl, expect_generation)
        result: list[int] = _drive(self._owner, flow)
        return result


class AsyncCollection(_Collection, AsyncCollectionCalls):
    """A collection for asyncio code: every call is awaited."""

    async def upsert(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        *,
        ttl: float | None = None,
        expect_generation: Sequence[int | None] | None = None,
    ) -> list[int]:
        flow = _upsert_flow(self, ids, vectors, metadata, texts, ttl, expect_generation)
        result: list[int] = await _adrive(self._owner, flow)
        return result


class RemoteVectorStore(_Owned, VectorStoreCalls):
    """``db.vectors`` over the network."""


class AsyncVectorStore(_Owned, AsyncVectorStoreCalls):
    """``db.vectors`` for asyncio code."""


# sessions: the optimistic update runs here -------------------------------------------------


def _update_flow(session_id: str, fn: Callable[[Any], Any], max_retries: int) -> Flow:
    if type(max_retries) is not int or max_retries < 0:
        raise InvalidArgument("max_retries must be a non-negative int")
    for attempt in range(max_retries + 1):
        session = yield ("call", "sessions.get", (session_id,), {})
        if session is None:
            raise NotFound(f"no session {session_id!r}")
        new_state = fn(session.state)
        try:
            kwargs = {"expect_generation": session.generation}
            yield ("call", "sessions.replace", (session_id, new_state), kwargs)
            return new_state
        except Conflict as e:
            if attempt == max_retries:
                raise Conflict(
                    f"update gave up after {max_retries + 1} attempts under contention",
                    e.generation,
                ) from e
        yield _backoff(attempt)
    raise AssertionError("unreachable")


class RemoteSessionStore(_Owned, SessionStoreCalls):
    """``db.sessions`` over the network (``update`` runs its optimistic loop here)."""

    def update(self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int = 100) -> Any:
        return _drive(self._owner, _update_flow(session_id, fn, max_retries))


class AsyncSessionStore(_Owned, AsyncSessionStoreCalls):
    """``db.sessions`` for asyncio code."""

    async def update(
        self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int = 100
    ) -> Any:
        return await _adrive(self._owner, _update_flow(session_id, fn, max_retries))


# memory: a store named by its embedder; embeddings computed where the embedder is ----------


def _memory_spec(embedder: Embedder, options: Mapping[str, Any]) -> dict[str, Any]:
    name = options.get("name") or f"{type(embedder).__name__.lower()}{embedder.dim}"
    spec = {"name": name, "dim": int(embedder.dim)}
    spec.update({k: v for k, v in options.items() if k != "name"})
    return spec


# method -> where the text to embed is: an index of args or a keyword
_EMBEDS: dict[str, int | str] = {"memory.add": 0, "memory.search": 0, "memory.update": "content"}


class _Memory:
    """A memory store is addressed by its spec (None: the server's ``db.memory``); with an
    ``embedder`` of the caller's, embeddings are computed here and sent as ``embedding=``."""

    def __init__(self, owner: Any, spec: Any = None, embedder: Embedder | None = None) -> None:
        self._owner = owner
        self._address = (spec,)
        self._embedder = embedder

    def _embedded(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        where = _EMBEDS.get(method)
        if self._embedder is None or where is None or kwargs.get("embedding") is not None:
            return kwargs
        text = kwargs.get(where) if isinstance(where, str) else args[where] if args else None
        if type(text) is not str:
            return kwargs  # nothing to embed (or not text: the server says what is wrong)
        return {**kwargs, "embedding": self._embedder.embed([text])[0]}


class RemoteMemoryStore(_Memory, MemoryStoreCalls):
    """``db.memory`` over the network."""

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._embedded(method, args, kwargs)
        return self._owner._request(method, (*self._address, *args), sent)


class AsyncMemoryStore(_Memory, AsyncMemoryStoreCalls):
    """``db.memory`` for asyncio code."""

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._embedded(method, args, kwargs)
        return await self._owner._request(method, (*self._address, *args), sent)


class RemoteCacheCore(_Owned, CacheCoreCalls):
    """The cache's storage primitives on the server (``engramdb.cache.core.CacheCore``)."""


class AsyncCacheCore(_Owned, AsyncCacheCoreCalls):
    """The cache's storage primitives, awaited."""


# features: tables go in chunks that fit a request -------------------------------------------

_CHUNK_BYTES = 1 << 20  # an Arrow IPC chunk well under the server's 2 MiB default frame
_JOIN_ROWS = 20_000


def _ingest_flow(handle: Any, view: str, data: Any) -> Flow:
    """An ingest in chunks under the request limit, each one atomic on its own."""
    from engramdb.features.frames import to_arrow
    from engramdb.features.model import IngestResult

    table = to_arrow(data)
    rows = max(1, _CHUNK_BYTES // (2 * max(1, table.nbytes // max(1, table.num_rows))))
    replies = []
    for i in range(0, max(1, table.num_rows), rows):
        chunk = handle._wire("table", table.slice(i, rows))
        replies.append((yield ("call", "features.ingest", (view, chunk), {})))
    rows_in = sum(r.rows for r in replies)
    return IngestResult(view, rows_in, sum(r.online_written for r in replies), None)


def _historical_flow(
    handle: Any, entity_df: Any, features: Any, full_feature_names: bool, output: str | None
) -> Flow:
    """A point-in-time join by slices of entity rows (a join is row by row, so the slices'
    results concatenate in order); ``output`` is written here, on the caller's machine,
    beside the target and renamed into place (a symlink there is replaced, not followed)."""
    import pyarrow as pa

    from engramdb.features.frames import to_arrow
    from engramdb.features.model import HistoricalResult, ParquetOutput

    table = to_arrow(entity_df)
    kwargs = {"full_feature_names": True} if full_feature_names else {}
    pieces = []
    for i in range(0, max(1, table.num_rows), _JOIN_ROWS):
        rows = handle._wire("table", table.slice(i, _JOIN_ROWS))
        args = (rows, features)
        pieces.append((yield ("call", "features.get_historical_features", args, kwargs)))
    result = pa.concat_tables([p.to_arrow() for p in pieces])
    if output is None:
        return HistoricalResult(result, None)
    writer = ParquetOutput(output)
    try:
        writer.write(result)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return HistoricalResult(None, output)


class RemoteFeatureStore(_Owned, FeatureStoreCalls):
    """``db.features`` over the network: large tables go in chunks under the request limit
    (an ingest in several atomic ingests)."""

    def ingest(self, view: str, data: Any) -> IngestResult:
        result: IngestResult = _drive(self._owner, _ingest_flow(self, view, data))
        return result

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        full_feature_names: bool = False,
        output: str | None = None,
    ) -> HistoricalResult:
        flow = _historical_flow(self, entity_df, features, full_feature_names, output)
        result: HistoricalResult = _drive(self._owner, flow)
        return result


class AsyncFeatureStore(_Owned, AsyncFeatureStoreCalls):
    """``db.features`` for asyncio code (chunked as ``RemoteFeatureStore``)."""

    async def ingest(self, view: str, data: Any) -> IngestResult:
        result: IngestResult = await _adrive(self._owner, _ingest_flow(self, view, data))
        return result

    async def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        full_feature_names: bool = False,
        output: str | None = None,
    ) -> HistoricalResult:
        flow = _historical_flow(self, entity_df, features, full_feature_names, output)
        result: HistoricalResult = await _adrive(self._owner, flow)
        return result


# the database ----------------------------------------------------------------------------


class _Face:
    """What every client database adds to the generated methods: handles and properties."""

    _sets: dict[str, Any]
    _closed: bool = False
    _metrics: Metrics
    _record_set: type
    _role_handles: tuple[type, type, type, type]  # vectors, sessions, memory, features

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def _records(self, set_name: str) -> Any:
        self._check_open()
        found = self._sets.get(set_name)
        if found is None:
            set_prefix(set_name, DEFAULT_LIMITS)  # checked where the call is made, and again
            if is_reserved(set_name):  # on the server
                raise InvalidArgument(
                    f"set {set_name!r} is reserved for engramdb's own roles (names starting "
                    "with '_', 'vec.' or 'fv.'); use another name, or the role's API"
                )
            if len(self._sets) >= MAX_CACHED_SETS:
                self._sets.clear()
            found = self._sets[set_name] = self._record_set(self, set_name)
        return found


class RemoteDatabaseFace(_Face, DatabaseCalls):
    """What a sync client adds to the generated database methods (``Client`` transports it)."""

    _cache: Cache | None
    _record_set = RemoteRecordSet

    def records(self, set_name: str) -> RemoteRecordSet:
        found: RemoteRecordSet = self._records(set_name)
        return found

    def transaction(self) -> Transaction:
        return Transaction(self)

    @property
    def vectors(self) -> RemoteVectorStore:
        return RemoteVectorStore(self)

    @property
    def sessions(self) -> RemoteSessionStore:
        return RemoteSessionStore(self)

    @property
    def memory(self) -> RemoteMemoryStore:
        return RemoteMemoryStore(self)

    def memory_with(self, embedder: Embedder, **options: Any) -> RemoteMemoryStore:
        return RemoteMemoryStore(self, _memory_spec(embedder, options), embedder)

    @property
    def features(self) -> RemoteFeatureStore:
        return RemoteFeatureStore(self)

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            from engramdb.cache.model import Cache, ThreadedCore

            core = RemoteCacheCore(self)
            self._cache = Cache(core, async_core=ThreadedCore(core))
        return self._cache


class AsyncDatabaseFace(_Face, AsyncDatabaseCalls):
    """What an asyncio database (remote or in-process) adds to the generated methods."""

    _cache: AsyncCache | None
    _record_set = AsyncRecordSet

    def records(self, set_name: str) -> AsyncRecordSet:
        found: AsyncRecordSet = self._records(set_name)
        return found

    def transaction(self) -> AsyncTransaction:
        return AsyncTransaction(self)

    @property
    def vectors(self) -> AsyncVectorStore:
        return AsyncVectorStore(self)

    @property
    def sessions(self) -> AsyncSessionStore:
        return AsyncSessionStore(self)

    @property
    def memory(self) -> AsyncMemoryStore:
        return AsyncMemoryStore(self)

    def memory_with(self, embedder: Embedder, **options: Any) -> AsyncMemoryStore:
        return AsyncMemoryStore(self, _memory_spec(embedder, options), embedder)

    @property
    def features(self) -> AsyncFeatureStore:
        return AsyncFeatureStore(self)

    @property
    def cache(self) -> AsyncCache:
        if self._cache is None:
            from engramdb.cache.model import AsyncCache

            self._cache = AsyncCache(AsyncCacheCore(self))
        return self._cache


# results the generic decoder cannot build from fields, and the docstrings ----------------


def _register() -> None:
    from engramdb.client._decode import register_decoder
    from engramdb.features.model import HistoricalResult, IngestResult, OnlineResponse

    def historical(raw: Any, owner: Any) -> Any:
        import pyarrow as pa

        return HistoricalResult(pa.ipc.open_stream(raw).read_all(), None)

    def online(raw: Any, owner: Any) -> Any:
        return OnlineResponse(raw["columns"], raw["statuses"])

    def ingested(raw: Any, owner: Any) -> Any:  # the server keeps its file name to itself
        return IngestResult(raw["view"], raw["rows"], raw["online_written"], None)

    def collection(cls: type) -> Any:
        return lambda raw, owner: cls(owner, CollectionInfo(**raw))

    register_decoder(RemoteCollection, collection(RemoteCollection))
    register_decoder(AsyncCollection, collection(AsyncCollection))
    register_decoder(OnlineResponse, online)
    register_decoder(HistoricalResult, historical)
    register_decoder(IngestResult, ingested)


_register()

# What the generated annotations name, per face, for the decoders.
SYNC_HANDLES: dict[str, Any] = {"RemoteCollection": RemoteCollection}
ASYNC_HANDLES: dict[str, Any] = {"AsyncCollection": AsyncCollection}


def document(cls: type, face: str) -> None:
    """Give ``cls``'s hand-written methods the embedded implementation's docstrings."""
    from engramdb.client._generated import DOCS

    for name, doc in DOCS.get(face, {}).items():
        member = cls.__dict__.get(name)
        if isinstance(member, property):
            setattr(cls, name, property(member.fget, member.fset, member.fdel, doc))
        elif callable(member) and not member.__doc__:
            member.__doc__ = doc


for _face, _classes in {
    "Database": (_Face, RemoteDatabaseFace, AsyncDatabaseFace),
    "RecordSet": (RemoteRecordSet, AsyncRecordSet),
    "Collection": (RemoteCollection, AsyncCollection),
    "SessionStore": (RemoteSessionStore, AsyncSessionStore),
    "FeatureStore": (RemoteFeatureStore, AsyncFeatureStore),
}.items():
    for _cls in _classes:
        document(_cls, _face)
