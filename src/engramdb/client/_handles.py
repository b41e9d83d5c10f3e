"""The client's faces of the API: the generated remote methods plus what runs client-side.

Each class below is a generated ``<Face>Calls`` (sync) or ``Async<Face>Calls`` (asyncio)
with what cannot be a plain remote call: iteration over pages, the optimistic loops that
take a function (``transform``, ``sessions.update``), batches split to fit a request,
embeddings computed on the client, and the database-level handles. They run over any owner
with a ``_request(method, args, kwargs)``: the network clients (``client.sync``,
``engramdb.aio.connect``) and the in-process asyncio database (``engramdb.aio.open``).

The algorithms with a function argument are written once, as generators of effects
(``("call", method, args, kwargs)``), and driven by ``_drive`` / ``_adrive``.
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
    "AsyncCollection",
    "AsyncDatabaseFace",
    "AsyncRecordSet",
    "RemoteCollection",
    "RemoteDatabaseFace",
    "RemoteRecordSet",
]

Effect = tuple[str, str, tuple[Any, ...], dict[str, Any]]
Flow = Generator[Effect, Any, Any]

_RETRIES = 100
_JITTER = random.Random()
MAX_CACHED_SETS = 4096


def _drive(owner: Any, flow: Flow) -> Any:
    """Run ``flow``'s effects against ``owner`` (errors go back into the flow)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            return done.value
        kind, method, args, kwargs = effect
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
            effect = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            return done.value
        kind, method, args, kwargs = effect
        reply, error = None, None
        if kind == "sleep":
            await asyncio.sleep(args[0])
            continue
        try:
            reply = await owner._request(method, args, kwargs)
        except EngramError as e:
            error = e


# transform: an optimistic read-modify-write through a transaction -------------------------


def _transform_flow(set_name: str, items: Sequence[tuple[Key, TransformFn]]) -> Flow:
    """``RecordSet.transform_many`` over the network: the functions cannot travel, so read
    the records, run them here, and commit the outcomes only if no record moved meanwhile
    (retrying on ``Conflict``). ``now`` is this machine's clock in ms."""
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
            if bins is KEEP and expires is KEEP:
                continue
            if bins is KEEP:
                if record is None:
                    continue
                bins = record.bins
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
                raise Conflict(
                    f"transform gave up after {_RETRIES + 1} attempts under contention",
                    e.generation,
                ) from e
        yield ("sleep", "", (_JITTER.uniform(0, min(0.05, 0.0002 * 2**attempt)),), {})
    raise AssertionError("unreachable")


# record sets ------------------------------------------------------------------------------


class RemoteRecordSet(RecordSetCalls):
    """``engramdb.RecordSet`` over the network."""

    def __init__(self, owner: Any, name: str) -> None:
        self._owner = owner
        self._address = (name,)
        self.name = name

    def __repr__(self) -> str:
        return f"<remote RecordSet {self.name!r}>"

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
        return _drive(self._owner, _transform_flow(self.name, [(key, fn)]))[0]

    def transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> list[Any]:
        result: list[Any] = _drive(self._owner, _transform_flow(self.name, items))
        return result


class AsyncRecordSet(AsyncRecordSetCalls):
    """``engramdb.RecordSet`` for asyncio code: every call is awaited."""

    def __init__(self, owner: Any, name: str) -> None:
        self._owner = owner
        self._address = (name,)
        self.name = name

    def __repr__(self) -> str:
        return f"<async RecordSet {self.name!r}>"

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
        return (await _adrive(self._owner, _transform_flow(self.name, [(key, fn)])))[0]

    async def transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> list[Any]:
        result: list[Any] = await _adrive(self._owner, _transform_flow(self.name, items))
        return result


# collections: upserts split to fit a request ----------------------------------------------

# Items per request of a remote upsert: the embedded chunk (1,000 items, atomic each), made
# smaller when the vectors alone would pass this many bytes (the server's default frame
# limit is 2 MiB per request; metadata and texts ride along).
UPSERT_BYTES = 1 << 20


def _upsert_chunks(
    ids: Any, vectors: Any, metadata: Any, texts: Any, expect: Any
) -> list[tuple[Any, Any, Any, Any, Any]]:
    if not isinstance(ids, list | tuple):
        return [(ids, vectors, metadata, texts, expect)]  # the server says what is wrong
    from engramdb.index.vector import as_float32

    array = as_float32(vectors)
    n = len(ids)
    per_item = max(1, array[0].nbytes if array.ndim == 2 and len(array) else array.nbytes)
    size = max(1, min(1000, UPSERT_BYTES // per_item))
    if n <= size:
        return [(ids, array, metadata, texts, expect)]

    def part(column: Any, i: int) -> Any:
        return None if column is None else column[i : i + size]

    return [
        (ids[i : i + size], array[i : i + size], part(metadata, i), part(texts, i), part(expect, i))
        for i in range(0, n, size)
    ]


class RemoteCollection(CollectionCalls):
    """``engramdb.vectors.Collection`` over the network."""

    def __init__(self, owner: Any, info: CollectionInfo) -> None:
        self._owner = owner
        self._address = (info.name,)
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<remote Collection {self.name!r} dim={self.info.dim} metric={self.info.metric}>"

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
        generations: list[int] = []
        for part in _upsert_chunks(ids, vectors, metadata, texts, expect_generation):
            ids_, vectors_, metadata_, texts_, expect_ = part
            generations += super().upsert(
                ids_, vectors_, metadata_, texts_, ttl=ttl, expect_generation=expect_
            )
        return generations


class AsyncCollection(AsyncCollectionCalls):
    """A collection for asyncio code: every call is awaited."""

    def __init__(self, owner: Any, info: CollectionInfo) -> None:
        self._owner = owner
        self._address = (info.name,)
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<async Collection {self.name!r} dim={self.info.dim} metric={self.info.metric}>"

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
        generations: list[int] = []
        for part in _upsert_chunks(ids, vectors, metadata, texts, expect_generation):
            ids_, vectors_, metadata_, texts_, expect_ = part
            generations += await super().upsert(
                ids_, vectors_, metadata_, texts_, ttl=ttl, expect_generation=expect_
            )
        return generations


class RemoteVectorStore(VectorStoreCalls):
    """``db.vectors`` over the network."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner


class AsyncVectorStore(AsyncVectorStoreCalls):
    """``db.vectors`` for asyncio code."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner


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
            yield (
                "call",
                "sessions.replace",
                (session_id, new_state),
                {"expect_generation": session.generation},
            )
            return new_state
        except Conflict as e:
            if attempt == max_retries:
                raise Conflict(
                    f"update gave up after {max_retries + 1} attempts under contention",
                    e.generation,
                ) from e
            yield ("sleep", "", (_JITTER.uniform(0, min(0.05, 0.0002 * 2**attempt)),), {})
    raise AssertionError("unreachable")


class RemoteSessionStore(SessionStoreCalls):
    """``db.sessions`` over the network (``update`` runs its optimistic loop here)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def update(self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int = 100) -> Any:
        return _drive(self._owner, _update_flow(session_id, fn, max_retries))


class AsyncSessionStore(AsyncSessionStoreCalls):
    """``db.sessions`` for asyncio code."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

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


# method -> (argument holding the text, where it is: an index of args or a keyword)
_EMBEDS: dict[str, int | str] = {"memory.add": 0, "memory.search": 0, "memory.update": "content"}


def _with_embedding(
    embedder: Embedder | None, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Compute ``embedding=`` here when this store's embedder lives on the client."""
    where = _EMBEDS.get(method)
    if embedder is None or where is None or kwargs.get("embedding") is not None:
        return kwargs
    if isinstance(where, str):
        text = kwargs.get(where)
    else:
        text = args[where] if len(args) > where else None
    if type(text) is not str:
        return kwargs  # nothing to embed (or not text: the server says what is wrong)
    return {**kwargs, "embedding": embedder.embed([text])[0]}


class RemoteMemoryStore(MemoryStoreCalls):
    """``db.memory`` over the network: embedded by the server's embedder, or, from
    ``memory_with(embedder)``, by ``embedder`` here."""

    def __init__(self, owner: Any, spec: Any = None, embedder: Embedder | None = None) -> None:
        self._owner = owner
        self._address = (spec,)
        self._embedder = embedder

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = _with_embedding(self._embedder, method, args, kwargs)
        return self._owner._request(method, (*self._address, *args), kwargs)


class AsyncMemoryStore(AsyncMemoryStoreCalls):
    """``db.memory`` for asyncio code."""

    def __init__(self, owner: Any, spec: Any = None, embedder: Embedder | None = None) -> None:
        self._owner = owner
        self._address = (spec,)
        self._embedder = embedder

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = _with_embedding(self._embedder, method, args, kwargs)
        return await self._owner._request(method, (*self._address, *args), kwargs)


# cache primitives ------------------------------------------------------------------------


class RemoteCacheCore(CacheCoreCalls):
    """The cache's storage primitives on the server (``engramdb.cache.core.CacheCore``)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner


class AsyncCacheCore(AsyncCacheCoreCalls):
    """The cache's storage primitives, awaited."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner


# features: tables go in chunks that fit a request -------------------------------------------

_CHUNK_BYTES = 1 << 20  # an Arrow IPC chunk well under the server's 2 MiB default frame
_JOIN_ROWS = 20_000


def _table_chunks(data: Any) -> list[Any]:
    from engramdb.features.frames import to_arrow

    table = to_arrow(data)
    if table.num_rows == 0:
        return [table]
    per_row = max(1, table.nbytes // table.num_rows)
    rows = max(1, _CHUNK_BYTES // (2 * per_row))
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def _ingested(view: str, replies: list[Any]) -> IngestResult:
    from engramdb.features.model import IngestResult

    return IngestResult(
        view, sum(r.rows for r in replies), sum(r.online_written for r in replies), None
    )


def _historical(pieces: list[Any], output: str | None) -> HistoricalResult:
    import pyarrow as pa

    from engramdb.features.model import HistoricalResult, ParquetOutput

    result = pa.concat_tables([p.to_arrow() for p in pieces])
    if output is not None:
        # The caller's own file, on the caller's machine: written beside it and renamed
        # into place (whole or not at all; a symlink there is replaced, not followed).
        writer = ParquetOutput(output)
        try:
            writer.write(result)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        return HistoricalResult(None, output)
    return HistoricalResult(result, None)


class RemoteFeatureStore(FeatureStoreCalls):
    """``db.features`` over the network. Large tables go in chunks under the request limit:
    an ingest in several atomic ingests, a historical join by slices of entity rows (a
    point-in-time join is row by row, so slices concatenate in order)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def ingest(self, view: str, data: Any) -> IngestResult:
        send = super().ingest  # (zero-argument super() does not reach into comprehensions)
        return _ingested(view, [send(view, chunk) for chunk in _table_chunks(data)])

    def push(self, view: str, rows: Sequence[dict[str, Any]]) -> IngestResult:
        return self.ingest(view, [rows] if isinstance(rows, dict) else list(rows))

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        full_feature_names: bool = False,
        output: str | None = None,
    ) -> HistoricalResult:
        from engramdb.features.frames import to_arrow

        table = to_arrow(entity_df)
        join = super().get_historical_features
        pieces = [
            join(table.slice(i, _JOIN_ROWS), features, full_feature_names=full_feature_names)
            for i in range(0, max(1, table.num_rows), _JOIN_ROWS)
        ]
        return _historical(pieces, output)


class AsyncFeatureStore(AsyncFeatureStoreCalls):
    """``db.features`` for asyncio code (chunked as ``RemoteFeatureStore``)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    async def ingest(self, view: str, data: Any) -> IngestResult:
        send = super().ingest
        return _ingested(view, [await send(view, chunk) for chunk in _table_chunks(data)])

    async def push(self, view: str, rows: Sequence[dict[str, Any]]) -> IngestResult:
        return await self.ingest(view, [rows] if isinstance(rows, dict) else list(rows))

    async def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        full_feature_names: bool = False,
        output: str | None = None,
    ) -> HistoricalResult:
        from engramdb.features.frames import to_arrow

        table = to_arrow(entity_df)
        join = super().get_historical_features
        pieces = [
            await join(table.slice(i, _JOIN_ROWS), features, full_feature_names=full_feature_names)
            for i in range(0, max(1, table.num_rows), _JOIN_ROWS)
        ]
        return _historical(pieces, output)


# the database ----------------------------------------------------------------------------


def _check_set_name(set_name: Any) -> None:
    """The naming rules, checked where the call is made (the server checks them again)."""
    set_prefix(set_name, DEFAULT_LIMITS)
    if is_reserved(set_name):
        raise InvalidArgument(
            f"set {set_name!r} is reserved for engramdb's own roles (names starting with "
            "'_', 'vec.' or 'fv.'); use another name, or the role's API"
        )


class RemoteDatabaseFace(DatabaseCalls):
    """What a sync client adds to the generated database methods (``Client`` transports it)."""

    _sets: dict[str, RemoteRecordSet]
    _cache: Cache | None
    _closed: bool = False
    _metrics: Metrics

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the client is closed")

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def records(self, set_name: str) -> RemoteRecordSet:
        self._check_open()
        found = self._sets.get(set_name)
        if found is None:
            _check_set_name(set_name)
            if len(self._sets) >= MAX_CACHED_SETS:
                self._sets.clear()
            found = self._sets[set_name] = RemoteRecordSet(self, set_name)
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


class AsyncDatabaseFace(AsyncDatabaseCalls):
    """What an asyncio database (remote or in-process) adds to the generated methods."""

    _sets: dict[str, AsyncRecordSet]
    _cache: AsyncCache | None
    _closed: bool = False
    _metrics: Metrics

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def records(self, set_name: str) -> AsyncRecordSet:
        self._check_open()
        found = self._sets.get(set_name)
        if found is None:
            _check_set_name(set_name)
            if len(self._sets) >= MAX_CACHED_SETS:
                self._sets.clear()
            found = self._sets[set_name] = AsyncRecordSet(self, set_name)
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
        return AsyncMemoryStore(self, self._memory_address(embedder, options), embedder)

    def _memory_address(self, embedder: Embedder, options: Mapping[str, Any]) -> Any:
        return _memory_spec(embedder, options)

    @property
    def features(self) -> AsyncFeatureStore:
        return AsyncFeatureStore(self)

    @property
    def cache(self) -> AsyncCache:
        if self._cache is None:
            from engramdb.cache.model import AsyncCache

            self._cache = AsyncCache(AsyncCacheCore(self))
        return self._cache


# results the generic decoder cannot build from fields --------------------------------------


def _online(raw: Any, owner: Any) -> Any:
    from engramdb.features.model import OnlineResponse

    return OnlineResponse(raw["columns"], raw["statuses"])


def _historical_table(raw: Any, owner: Any) -> Any:
    import pyarrow as pa

    from engramdb.features.model import HistoricalResult

    return HistoricalResult(pa.ipc.open_stream(raw).read_all(), None)


def _ingest_reply(raw: Any, owner: Any) -> Any:
    from engramdb.features.model import IngestResult

    return IngestResult(raw["view"], raw["rows"], raw["online_written"], None)


def _register() -> None:
    from engramdb.client._decode import register_decoder
    from engramdb.features.model import HistoricalResult, IngestResult, OnlineResponse

    register_decoder(
        RemoteCollection, lambda raw, owner: RemoteCollection(owner, CollectionInfo(**raw))
    )
    register_decoder(
        AsyncCollection, lambda raw, owner: AsyncCollection(owner, CollectionInfo(**raw))
    )
    register_decoder(OnlineResponse, _online)
    register_decoder(HistoricalResult, _historical_table)
    register_decoder(IngestResult, _ingest_reply)


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
    "Database": (RemoteDatabaseFace, AsyncDatabaseFace),
    "RecordSet": (RemoteRecordSet, AsyncRecordSet),
    "Collection": (RemoteCollection, AsyncCollection),
    "VectorStore": (RemoteVectorStore, AsyncVectorStore),
    "SessionStore": (RemoteSessionStore, AsyncSessionStore),
    "MemoryStore": (RemoteMemoryStore, AsyncMemoryStore),
    "FeatureStore": (RemoteFeatureStore, AsyncFeatureStore),
}.items():
    for _cls in _classes:
        document(_cls, _face)
