"""The client's hand-written part, written once for both faces, and what it stands on.

A handle (a remote record set, collection, the database itself...) knows its ``owner`` (the
transport: a network client, or an in-process database for ``engramdb.aio.open``) and its
``address``: the arguments that name it (a set's name...), sent first in each of its calls.
Each ``<Face>Face`` here is the base of a generated sync and asyncio class (see
``client/generate.py``), with what runs client-side: iteration over pages, the optimistic
loops that take a function (``transform``, ``sessions.update``), batches split to fit a
request, embeddings computed on the client, the database's handles.

What involves several calls is written once, as a generator of effects: ``("call", method,
args, kwargs)``, ``("sleep", "", (seconds,), {})`` or ``("items", "", (values,), {})`` (what
a streamed method yields). ``Calls`` drives it with blocking calls, ``AsyncCalls`` with
awaited ones; a failed call is thrown back into it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from engramdb.cache.model import AsyncCache, Cache, ThreadedCore
from engramdb.errors import Conflict, EngramError, InvalidArgument, NotFound, StorageError
from engramdb.observability.metrics import Metrics
from engramdb.records.keys import Key, is_reserved, set_prefix
from engramdb.records.limits import DEFAULT_LIMITS, Limits
from engramdb.records.model import Record
from engramdb.records.writes import KEEP, Current, TransformFn
from engramdb.remote import FORMS
from engramdb.transaction import AsyncTransaction, Transaction
from engramdb.vectors.model import CollectionInfo

if TYPE_CHECKING:
    from engramdb.embedders import Embedder

Effect = tuple[str, str, tuple[Any, ...], dict[str, Any]]
Flow = Generator[Effect, Any, Any]
F = TypeVar("F", bound=Callable[..., Any])


def _mark(kind: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__client__ = kind  # type: ignore[attr-defined]
        return fn

    return mark


# How the generator makes a public ``name`` of a handle's ``_name``: ``local`` calls it (not
# awaited on any face), ``awaited`` calls it and awaits it on asyncio faces (each face defines
# it), ``flow`` drives the flow it returns, ``stream`` iterates the values its flow streams.
local, awaited, flow, stream = _mark("local"), _mark("awaited"), _mark("flow"), _mark("stream")


class Handle:
    """A handle's owner and address, and what a call sends."""

    _face = 0  # 0 sync, 1 asyncio: the index of this face's classes in KINDS
    _address: tuple[Any, ...] = ()

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _wire(self, form: str, value: Any) -> Any:
        # The owner decides: a network client encodes, an in-process one passes values as
        # they are (no Arrow round trip inside one process).
        encode = getattr(self._owner, "_encode", None)
        return FORMS[form].encode(value) if encode is None else encode(form, value)

    def _sent(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return kwargs  # a memory store with its own embedder adds the embedding

    def _kind(self, name: str) -> Any:
        """This face's class (or factory) for the embedded type ``name``."""
        from engramdb.client._generated import KINDS

        return KINDS[name][self._face]


def _next(flow: Flow, reply: Any, error: EngramError | None, out: list[Any]) -> Effect | None:
    """The flow's next effect, or None when it is done (its result appended to ``out``)."""
    try:
        return flow.throw(error) if error else flow.send(reply)
    except StopIteration as done:
        out.append(done.value)
        return None


class Calls(Handle):
    """Base of the generated sync classes."""

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._sent(method, args, kwargs)
        return self._owner._request(method, (*self._address, *args), sent)

    def _stream(self, flow: Flow, out: list[Any]) -> Iterator[Any]:
        reply: Any = None
        error: EngramError | None = None
        while (effect := _next(flow, reply, error, out)) is not None:
            kind, method, args, kwargs = effect
            reply, error = None, None
            if kind == "items":
                yield from args[0]
            elif kind == "sleep":
                time.sleep(args[0])
            else:
                try:
                    reply = self._owner._request(method, args, kwargs)
                except EngramError as e:
                    error = e

    def _run(self, flow: Flow) -> Any:
        out: list[Any] = []
        for _ in self._stream(flow, out):
            pass
        return out[0]


class AsyncCalls(Handle):
    """Base of the generated asyncio classes."""

    _face = 1

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sent = self._sent(method, args, kwargs)
        return await self._owner._request(method, (*self._address, *args), sent)

    async def _stream(self, flow: Flow, out: list[Any]) -> AsyncIterator[Any]:
        reply: Any = None
        error: EngramError | None = None
        while (effect := _next(flow, reply, error, out)) is not None:
            kind, method, args, kwargs = effect
            reply, error = None, None
            if kind == "items":
                for value in args[0]:
                    yield value
            elif kind == "sleep":
                await asyncio.sleep(args[0])
            else:
                try:
                    reply = await self._owner._request(method, args, kwargs)
                except EngramError as e:
                    error = e

    async def _run(self, flow: Flow) -> Any:
        out: list[Any] = []
        async for _ in self._stream(flow, out):
            pass
        return out[0]


# client-side parts of each face -------------------------------------------------------------------

_RETRIES = 100
_JITTER = random.Random()
MAX_CACHED_SETS = 4096


def _backoff(attempt: int) -> Effect:
    # Full jitter (AWS architecture blog): spreads retries so contenders stop colliding.
    return ("sleep", "", (_JITTER.uniform(0, min(0.05, 0.0002 * 2**attempt)),), {})


def _gave_up(what: str, attempts: int, error: Conflict) -> Conflict:
    message = f"{what} gave up after {attempts} attempts under contention"
    return Conflict(message, error.generation)


# record sets: iteration, and transform through an optimistic transaction -------------------


class RecordSetFace(Handle):
    def __init__(self, owner: Any, name: str) -> None:
        self._owner = owner
        self._address = (name,)
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @stream
    def _iterate(self, prefix: Any, *, start: Any, end: Any, reverse: bool, batch: int) -> Flow:
        options: dict[str, Any] = {"start": start, "end": end, "reverse": reverse, "limit": batch}
        while True:
            page = yield ("call", "records.scan", (self.name, prefix), options)
            yield ("items", "", (page.records,), {})
            if page.cursor is None:
                return
            options = {**options, "cursor": page.cursor}

    @flow
    def _transform(self, key: Key, fn: TransformFn) -> Flow:
        return (yield from self._transform_many([(key, fn)]))[0]

    @flow
    def _transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> Flow:
        """Remotely, the functions cannot travel: read the records, run the functions here,
        and commit the outcomes only if no record moved meanwhile (retrying on
        ``Conflict``). ``now`` is this machine's clock in ms."""
        if isinstance(items, str | bytes) or not isinstance(items, list | tuple):
            raise InvalidArgument("transform_many takes a list of (key, fn) pairs")
        keys = [key for key, _ in items]
        for attempt in range(_RETRIES + 1):
            records: list[Record | None] = yield ("call", "records.get_many", (self.name, keys), {})
            now = int(time.time() * 1000)
            reads: list[list[Any]] = []
            writes: list[list[Any]] = []
            results: list[Any] = []
            seen: dict[Any, Record | None] = {}
            for (key, fn), record in zip(items, records):
                record = seen.get(key, record)
                at = None if record is None else record.expires_at
                current = Current(
                    None if record is None else dict(record.bins),
                    0 if record is None else record.generation,
                    0 if at is None else int(at * 1000),
                )
                outcome = fn(current, now)
                results.append(outcome.result)
                reads.append([self.name, key, current.generation])
                bins, expires = outcome.bins, outcome.expires_ms
                if bins is None:
                    if record is not None:
                        writes.append(["delete", self.name, key, [], {}])
                    seen[key] = None
                    continue
                if (bins is KEEP and expires is KEEP) or (bins is KEEP and record is None):
                    continue
                if bins is KEEP:
                    bins = record.bins  # type: ignore[union-attr]
                if expires is KEEP:
                    expires = current.expires_ms
                ttl = None if not expires else max(0.001, (int(expires) - now) / 1000)
                writes.append(["put", self.name, key, [bins], {} if ttl is None else {"ttl": ttl}])
                seen[key] = Record(key, dict(bins), current.generation + 1, None, now / 1000)
            if not writes:
                return results
            try:
                yield ("call", "db.commit", (reads, writes), {})
                return results
            except Conflict as e:
                if attempt == _RETRIES:
                    raise _gave_up("transform", _RETRIES + 1, e) from e
            yield _backoff(attempt)
        raise AssertionError("unreachable")


# collections: upserts split to fit a request ----------------------------------------------

# Items per request of a remote upsert: the embedded chunk (1,000 items, atomic each), made
# smaller when the vectors alone would pass this many bytes (the server's default frame
# limit is 2 MiB per request; metadata and texts ride along).
UPSERT_BYTES = 1 << 20


class CollectionFace(Handle):
    def __init__(self, owner: Any, info: CollectionInfo) -> None:
        self._owner = owner
        self._address = (info.name,)
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dim={self.info.dim} {self.info.metric}>"

    @classmethod
    def _from_reply(cls, raw: Any, owner: Any) -> Any:
        return cls(owner, CollectionInfo(**raw))

    @flow
    def _upsert(self, ids: Any, vectors: Any, metadata: Any, texts: Any, **kw: Any) -> Flow:
        """The upsert in requests that fit: chunks of at most 1,000 items (the embedded atomic
        unit), fewer when their vectors would pass ``UPSERT_BYTES``."""
        kwargs = {k: v for k, v in kw.items() if v is not None}  # ttl, expect_generation
        expect = kw["expect_generation"]
        if not isinstance(ids, list | tuple):  # the server says what is wrong with it
            args = (self.name, ids, self._wire("vectors", vectors), metadata, texts)
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
            rows = self._wire("vectors", array[i : i + size])
            args = (self.name, ids[i : i + size], rows, part(metadata), part(texts))
            generations += yield ("call", "collection.upsert", args, sent)
        return generations


# sessions: the optimistic update runs here -------------------------------------------------


class SessionStoreFace(Handle):
    @flow
    def _update(self, session_id: str, fn: Callable[[Any], Any], *, max_retries: int) -> Flow:
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
                    raise _gave_up("update", max_retries + 1, e) from e
            yield _backoff(attempt)
        raise AssertionError("unreachable")


# memory: a store named by its embedder; embeddings computed where the embedder is ----------

# method -> where the text to embed is: an index of args or a keyword
_EMBEDS: dict[str, int | str] = {"memory.add": 0, "memory.search": 0, "memory.update": "content"}


class MemoryStoreFace(Handle):
    """A memory store is addressed by its spec (None: the server's ``db.memory``); with an
    ``embedder`` of the caller's, embeddings are computed here and sent as ``embedding=``."""

    def __init__(self, owner: Any, spec: Any = None, embedder: Embedder | None = None) -> None:
        self._owner = owner
        self._address = (spec,)
        self._embedder = embedder

    def _sent(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        where = _EMBEDS.get(method)
        if self._embedder is None or where is None or kwargs.get("embedding") is not None:
            return kwargs
        text = kwargs.get(where) if isinstance(where, str) else args[where] if args else None
        if type(text) is not str:
            return kwargs  # nothing to embed (or not text: the server says what is wrong)
        return {**kwargs, "embedding": self._embedder.embed([text])[0]}


# features: tables go in chunks that fit a request -------------------------------------------

_CHUNK_BYTES = 1 << 20  # an Arrow IPC chunk well under the server's 2 MiB default frame
_JOIN_ROWS = 20_000


class FeatureStoreFace(Handle):
    @flow
    def _ingest(self, view: str, data: Any) -> Flow:
        """An ingest in chunks under the request limit, each one atomic on its own."""
        from engramdb.features.frames import to_arrow
        from engramdb.features.model import IngestResult

        table = to_arrow(data)
        rows = max(1, _CHUNK_BYTES // (2 * max(1, table.nbytes // max(1, table.num_rows))))
        replies = []
        for i in range(0, max(1, table.num_rows), rows):
            chunk = self._wire("table", table.slice(i, rows))
            replies.append((yield ("call", "features.ingest", (view, chunk), {})))
        rows_in = sum(r.rows for r in replies)
        return IngestResult(view, rows_in, sum(r.online_written for r in replies), None)

    @flow
    def _get_historical_features(
        self, entity_df: Any, features: Any, *, full_feature_names: bool, output: str | None
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
            args = (self._wire("table", table.slice(i, _JOIN_ROWS)), features)
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


# the database ----------------------------------------------------------------------------


# The embedded types each face stands for with a class of its own (not generated).
BUILT: dict[str, tuple[Any, Any]] = {
    "Transaction": (Transaction, AsyncTransaction),
    "Cache": (lambda core: Cache(core, async_core=ThreadedCore(core)), AsyncCache),
}


class DatabaseFace(Handle):
    """What every client database adds to the remote methods (the generator adds the role
    properties). The transports (``Client``, ``engramdb.aio``) define ``_limits``, ``_close``."""

    _sets: dict[str, Any]
    _closed: bool = False
    _meter: Metrics
    _made_cache: Any = None

    @local
    def _records(self, set_name: str) -> Any:
        if self._closed:
            raise StorageError("the database is closed")
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
            found = self._sets[set_name] = self._kind("RecordSet")(self, set_name)
        return found

    @local
    def _transaction(self) -> Any:
        return self._kind("Transaction")(self)

    @local
    def _metrics(self) -> Metrics:
        return self._meter

    @local
    def _memory_with(self, embedder: Embedder, **options: Any) -> Any:
        name = options.get("name") or f"{type(embedder).__name__.lower()}{embedder.dim}"
        spec = {"name": name, "dim": int(embedder.dim)}
        spec.update({k: v for k, v in options.items() if k != "name"})
        return self._kind("MemoryStore")(self, spec, embedder)

    @local
    def _cache(self) -> Any:
        if self._made_cache is None:
            self._made_cache = self._kind("Cache")(self._kind("CacheCore")(self))
        return self._made_cache

    @local
    def _limits(self) -> Limits:
        raise NotImplementedError

    @awaited
    def _close(self) -> Any:
        raise NotImplementedError
