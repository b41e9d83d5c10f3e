"""A Feast online store on engramdb (``pip install 'engramdb[feast]'``).

``feature_store.yaml``::

    online_store:
      type: engramdb.integrations.feast.EngramOnlineStore
      path: data/engramdb            # an embedded database (relative to the repo), or
      # url: engramdb://127.0.0.1:7379   # a server (engramdb serve)

Layout: the rows of a feature view are the records of the set ``feast.<project>.<view>``,
one per entity (key: Feast's serialized entity key; bins: ``ts`` and ``cts``, the event and
created timestamps in microseconds, and ``f``, each feature's serialized ``ValueProto``).

Newer event wins: a row replaces the stored one only if its (event timestamp, created
timestamp) is not older; an older event arriving later, from any process or client, never
overwrites. Each batch reads the stored rows and commits the newer ones in one transaction
whose writes are compare-and-sets on the generations read; a concurrent writer makes it
``Conflict`` and it reads again, so the decision always holds at commit.

Document retrieval (``retrieve_online_documents_v2``): a view with a vector field
(``Field(vector_index=True, vector_length=..., vector_search_metric=...)``) is also kept in
the engramdb collection ``feast.<project>.<view>`` (a longer name is hashed): the vector,
the view's string features as the BM25 text, and its scalar features as filterable
metadata, upserted in the same commit as the rows that won, so a document always matches
its row. An embedding runs a vector search, a
``query_string`` a BM25 search, both a hybrid search (``hybrid_fusion``/``hybrid_alpha``);
Feast filters become engramdb filters run inside the search. Each document carries
``distance`` (lower is nearer: 1 - cosine, Euclidean distance, or -inner product) and, for
text queries, ``text_rank`` (BM25).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from feast import Entity
from feast.feature_view import FeatureView
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.vector_store import VectorStoreConfig
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.types import PrimitiveFeastType
from pydantic import StrictStr, model_validator

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.integrations._flow import COLLECTION, Face, Faces, Flow, Step, Write, commit

__all__ = ["EngramOnlineStore", "EngramOnlineStoreConfig"]

TS, CREATED, FEATURES = "ts", "cts", "f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_ROWS = 500  # rows per transaction: a few hundred KiB, well inside a server frame
_BYTES = 1 << 20  # ... or fewer rows when their values are large
_ATTEMPTS = 100  # commits lost to concurrent writers before a batch gives up
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}\Z")
_METRICS = {"cosine": "cosine", "l2": "l2", "euclidean": "l2", "ip": "ip", "inner_product": "ip",
            "dot": "ip", "dot_product": "ip"}  # fmt: skip
_FILTER_OPS = {"eq": "$eq", "ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte",
               "in": "$in", "nin": "$nin"}  # fmt: skip


class EngramOnlineStoreConfig(FeastConfigBaseModel, VectorStoreConfig):  # type: ignore[misc]
    """``online_store:`` of ``feature_store.yaml`` for ``EngramOnlineStore``."""

    type: Literal["engramdb.integrations.feast.EngramOnlineStore"] = (
        "engramdb.integrations.feast.EngramOnlineStore"
    )
    path: StrictStr | None = None
    """An embedded database directory (relative paths are under the repo); the default
    when ``url`` is not given is ``data/engramdb``."""
    url: StrictStr | None = None
    """A server, ``engramdb://[:password@]host:port``."""
    durability: Literal["sync", "async", "none"] = "sync"
    """Embedded only: ``sync`` fsyncs every commit."""
    hybrid_fusion: Literal["rrf", "weighted"] = "rrf"
    """How a query with an embedding and a query_string fuses the two rankings."""
    hybrid_alpha: float = 0.5
    """With ``weighted`` fusion, the weight of the vector side (1 - alpha for BM25)."""

    @model_validator(mode="after")
    def _one_place(self) -> EngramOnlineStoreConfig:
        if self.path is not None and self.url is not None:
            raise ValueError("set either path (embedded) or url (a server), not both")
        if not 0 <= self.hybrid_alpha <= 1:
            raise ValueError("hybrid_alpha is from 0 to 1")
        return self


# rows ---------------------------------------------------------------------------------------


def _micros(value: datetime | None) -> int:
    """A timestamp as microseconds since the epoch (-1 for None); naive ones are UTC, as
    Feast's interface says."""
    if value is None:
        return -1
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICRO


def _datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class _Row:
    __slots__ = ("created", "features", "key", "ts", "values")

    def __init__(
        self, key: bytes, values: dict[str, ValueProto], ts: datetime, created: datetime | None
    ) -> None:
        self.key = key
        self.values = values
        self.ts = _micros(ts)
        self.created = _micros(created)
        self.features = {name: value.SerializeToString() for name, value in values.items()}

    @property
    def order(self) -> tuple[int, int]:
        return (self.ts, self.created)

    def size(self) -> int:
        return len(self.key) + sum(len(n) + len(v) for n, v in self.features.items())


def _newest(rows: Sequence[_Row]) -> list[_Row]:
    """One row per entity: its newest (the later one of a batch on a tie), in first-seen
    order."""
    best: dict[bytes, _Row] = {}
    for row in rows:
        held = best.get(row.key)
        if held is None or row.order >= held.order:
            best[row.key] = row
    return list(best.values())


def _chunks(rows: list[_Row]) -> list[list[_Row]]:
    out: list[list[_Row]] = []
    current: list[_Row] = []
    size = 0
    for row in rows:
        if current and (len(current) >= _ROWS or size + row.size() > _BYTES):
            out.append(current)
            current, size = [], 0
        current.append(row)
        size += row.size()
    if current:
        out.append(current)
    return out


# documents ----------------------------------------------------------------------------------


class _Documents:
    """How a view maps onto a collection: its vector field, text fields and metric."""

    def __init__(self, table: FeatureView, config: RepoConfig) -> None:
        fields = [f for f in table.features if getattr(f, "vector_index", False)]
        if len(fields) > 1:
            raise InvalidArgument(f"feature view {table.name!r} has more than one vector field")
        self.vector = fields[0].name if fields else None
        self.dim = int(getattr(fields[0], "vector_length", 0) or 0) if fields else 0
        declared = (getattr(fields[0], "vector_search_metric", None) if fields else None) or (
            getattr(config.online_store, "similarity", None) or "cosine"
        )
        metric = _METRICS.get(str(declared).lower())
        if metric is None:
            raise InvalidArgument(
                f"vector search metric {declared!r} of {table.name!r} is not one engramdb "
                f"runs; use one of {sorted(_METRICS)}"
            )
        self.metric = metric
        self.texts = [
            f.name
            for f in table.features
            if f.dtype == PrimitiveFeastType.STRING and f.name != self.vector
        ]

    def item(self, row: _Row) -> tuple[str, list[float], dict[str, Any], str]:
        assert self.vector is not None
        vector = row.values.get(self.vector)
        if vector is None or vector.WhichOneof("val") not in ("float_list_val", "double_list_val"):
            raise InvalidArgument(f"a row has no float list in the vector field {self.vector!r}")
        kind = vector.WhichOneof("val")
        values = [float(x) for x in getattr(vector, kind).val]
        metadata: dict[str, Any] = {}
        for name, value in row.values.items():
            scalar = _scalar(value)
            if scalar is not None and name != self.vector:
                metadata[name] = scalar
        text = "\n".join(
            row.values[name].string_val
            for name in self.texts
            if name in row.values and row.values[name].WhichOneof("val") == "string_val"
        )
        return row.key.hex(), values, metadata, text

    def distance(self, score: float) -> float:
        """engramdb's higher-is-better score as Feast's lower-is-nearer distance."""
        if self.metric == "cosine":
            return 1.0 - score
        if self.metric == "l2":
            return float(max(0.0, -score) ** 0.5)  # the score is minus the squared distance
        return -score


def _scalar(value: ValueProto) -> Any:
    """A feature value as something an engramdb filter compares (None for the rest)."""
    kind = value.WhichOneof("val")
    if kind in ("string_val", "bool_val", "int32_val", "int64_val", "float_val", "double_val"):
        return getattr(value, kind)
    if kind == "unix_timestamp_val":
        return _EPOCH + timedelta(seconds=value.unix_timestamp_val)
    return None


def to_engram_filter(filters: ComparisonFilter | CompoundFilter | None) -> dict[str, Any] | None:
    """A Feast metadata filter as an engramdb filter over the features of a document."""
    if filters is None:
        return None
    if isinstance(filters, ComparisonFilter):
        op = _FILTER_OPS.get(filters.type)
        if op is None:
            raise InvalidArgument(f"unknown Feast filter operator {filters.type!r}")
        return {filters.key: {op: filters.value}}
    parts = [to_engram_filter(f) for f in filters.filters]
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return {"$and" if filters.type == "and" else "$or": present}


def _collection_name(set_name: str) -> str:
    if _COLLECTION_NAME.match(set_name):
        return set_name
    return "feast." + hashlib.sha256(set_name.encode()).hexdigest()[:32]


# the store ----------------------------------------------------------------------------------


class _Shared:
    """One database handle per path (or server) in a process, shared by every store.

    Feast makes an online store per ``FeatureStore`` (and per provider), and closes them
    only on ``teardown``: one handle per place keeps one set of vector indexes in memory and
    one connection pool, closed at exit at the latest. It also avoids opening a path again
    while another handle of this process writes to it (which can deadlock: LMDB's
    ``open_db`` waits for the write lock while holding the GIL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, str], list[Any]] = {}  # where -> [db, users]
        atexit.register(self.close_all)

    def acquire(self, where: tuple[str, str, str]) -> Any:
        with self._lock:
            held = self._open.get(where)
            if held is None:
                import engramdb

                kind, place, durability = where
                db: Any
                if kind == "url":
                    db = engramdb.connect(place)
                else:
                    db = engramdb.open(place, durability=durability)  # type: ignore[arg-type]
                held = self._open[where] = [db, 0]
            held[1] += 1
            return held[0]

    def close_all(self) -> None:
        with self._lock:
            held, self._open = list(self._open.values()), {}
        for db, _ in held:
            db.close()

    def release(self, where: tuple[str, str, str]) -> None:
        with self._lock:
            held = self._open.get(where)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del self._open[where]
                held[0].close()


_SHARED = _Shared()


class EngramOnlineStore(OnlineStore):  # type: ignore[misc]
    """Feast's ``OnlineStore`` interface on engramdb records (see the module docs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faces: Faces | None = None
        self._opened: Any = None
        self._where: tuple[str, str, str] | None = None
        self._collections: dict[str, Any] = {}

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return SupportedAsyncMethods(read=True, write=True)

    # plumbing --------------------------------------------------------------------------

    def _db(self, config: RepoConfig) -> Faces:
        store = config.online_store
        if not isinstance(store, EngramOnlineStoreConfig):
            raise InvalidArgument("EngramOnlineStore needs an EngramOnlineStoreConfig")
        if store.url is None:
            path = Path(store.path or "data/engramdb")
            if not path.is_absolute() and config.repo_path is not None:
                path = Path(config.repo_path) / path
            where: tuple[str, str, str] = ("path", os.path.realpath(path), store.durability)
        else:
            where = ("url", store.url, "")
        with self._lock:
            if self._faces is not None and self._where == where:
                return self._faces
            self._close()
            db = _SHARED.acquire(where)
            self._opened, self._where, self._faces = db, where, Faces(db)
            return self._faces

    def _close(self) -> None:
        opened, where = self._opened, self._where
        self._opened, self._faces, self._where = None, None, None
        self._collections.clear()
        if opened is not None and where is not None:
            _SHARED.release(where)

    @staticmethod
    def _set(config: RepoConfig, table: FeatureView) -> str:
        name = table.name
        if getattr(config.registry, "enable_online_feature_view_versioning", False):
            try:
                from feast.infra.online_stores.helpers import compute_versioned_name
            except ImportError:  # a Feast without view versioning
                pass
            else:
                name = compute_versioned_name(table, True)
        return f"feast.{config.project}.{name}"

    @staticmethod
    def _key(config: RepoConfig, entity_key: EntityKeyProto) -> bytes:
        key: bytes = serialize_entity_key(
            entity_key, entity_key_serialization_version=config.entity_key_serialization_version
        )
        return key

    # flows ------------------------------------------------------------------------------

    def _write_flow(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: Sequence[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> Flow[None]:
        set_name = self._set(config, table)
        documents = _Documents(table, config)
        rows = _newest([_Row(self._key(config, k), v, ts, c) for k, v, ts, c in data])
        collection: str | None = None
        if documents.vector is not None and rows:
            dim = documents.dim or len(documents.item(rows[0])[1])
            yield from self._collection(config, set_name, documents, dim)
            collection = _collection_name(set_name)
        for chunk in _chunks(rows):
            yield from _commit_newer(set_name, chunk, documents, collection)
            if progress is not None:
                progress(len(chunk))
        if progress is not None and len(data) > len(rows):
            progress(len(data) - len(rows))  # rows superseded within the batch count as done

    def _collection(
        self, config: RepoConfig, set_name: str, documents: _Documents, dim: int
    ) -> Flow[Any]:
        name = _collection_name(set_name)
        found = self._collections.get(name)
        if found is not None:
            return found
        try:
            found = yield lambda f: f.db.vectors.get_collection(name)
        except NotFound:
            if not dim:
                return None
            metric = documents.metric
            found = yield lambda f: f.db.vectors.create_collection(name, dim, metric, exist_ok=True)
        self._collections[name] = found
        return found

    def _read_flow(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: Sequence[EntityKeyProto],
        requested_features: Sequence[str] | None,
    ) -> Flow[list[tuple[datetime | None, dict[str, ValueProto] | None]]]:
        set_name = self._set(config, table)
        keys = [self._key(config, k) for k in entity_keys]
        records = yield lambda f: f.db.records(set_name).get_many(keys)
        wanted = None if requested_features is None else set(requested_features)
        return [_decode(record, wanted) for record in records]

    def _drop_flow(self, config: RepoConfig, tables: Sequence[FeatureView]) -> Flow[None]:
        for table in tables:
            set_name = self._set(config, table)
            yield _call("drop_set", set_name)
            name = _collection_name(set_name)
            self._collections.pop(name, None)
            if _Documents(table, config).vector is not None:
                yield _call("vectors.drop_collection", name)

    def _create_flow(self, config: RepoConfig, tables: Sequence[FeatureView]) -> Flow[None]:
        for table in tables:
            documents = _Documents(table, config)
            if documents.vector is not None and documents.dim:
                yield from self._collection(
                    config, self._set(config, table), documents, documents.dim
                )

    def _documents_flow(
        self,
        config: RepoConfig,
        table: FeatureView,
        requested_features: Sequence[str],
        embedding: Sequence[float] | None,
        top_k: int,
        query_string: str | None,
        filters: ComparisonFilter | CompoundFilter | None,
    ) -> Flow[list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]]]:
        documents = _Documents(table, config)
        if documents.vector is None:
            raise InvalidArgument(
                f"feature view {table.name!r} has no vector field (Field(vector_index=True)): "
                "EngramOnlineStore keeps documents only for views with one"
            )
        if embedding is None and not query_string:
            raise InvalidArgument("document retrieval needs an embedding, a query_string or both")
        where = to_engram_filter(filters)
        set_name = self._set(config, table)
        collection = yield from self._collection(config, set_name, documents, 0)
        if collection is None:
            return []
        store = config.online_store
        vector = None if embedding is None else [float(x) for x in embedding]
        text = query_string or ""
        if vector is not None and text:
            hits = yield lambda f: collection.hybrid_search(
                text, vector, top_k, fusion=store.hybrid_fusion, alpha=store.hybrid_alpha,
                filter=where, include=(),
            )  # fmt: skip
        elif vector is not None:
            hits = yield lambda f: collection.search(vector, top_k, filter=where, include=())
        else:
            hits = yield lambda f: collection.text_search(text, top_k, filter=where, include=())
        keys = [bytes.fromhex(str(hit.id)) for hit in hits]
        records = yield lambda f: f.db.records(set_name).get_many(keys)
        wanted = set(requested_features)
        version = config.entity_key_serialization_version
        out: list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]] = []
        for hit, key, record in zip(hits, keys, records):
            if record is None:
                continue  # removed since the search
            ts, features = _decode(record, wanted)
            assert features is not None
            if vector is not None:
                score = hit.score if hit.scores is None else hit.scores.get("vector")
                if score is not None:
                    features["distance"] = ValueProto(float_val=documents.distance(score))
            if text:
                rank = hit.score if hit.scores is None else hit.scores.get("text")
                if rank is not None:
                    features["text_rank"] = ValueProto(float_val=rank)
            entity = deserialize_entity_key(key, entity_key_serialization_version=version)
            out.append((ts, entity, features))
        return out

    # Feast's interface ------------------------------------------------------------------

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write each row unless the stored one is newer (see the module docs)."""
        self._db(config).run(self._write_flow(config, table, data, progress))

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        await self._db(config).arun(self._write_flow(config, table, data, progress))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Each entity's event timestamp and feature values, ``(None, None)`` if it has none."""
        return self._db(config).run(self._read_flow(config, table, entity_keys, requested_features))

    async def online_read_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        flow = self._read_flow(config, table, entity_keys, requested_features)
        return await self._db(config).arun(flow)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Drop the sets (and collections) of deleted views; create the collections of kept
        views that have a vector field. Sets need no creation."""
        faces = self._db(config)
        faces.run(self._drop_flow(config, tables_to_delete))
        faces.run(self._create_flow(config, tables_to_keep))

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        """Drop the sets (and collections) of ``tables`` and close the database."""
        try:
            self._db(config).run(self._drop_flow(config, tables))
        finally:
            with self._lock:
                self._close()

    def retrieve_online_documents_v2(
        self,
        config: RepoConfig,
        table: FeatureView,
        requested_features: list[str],
        embedding: list[float] | None,
        top_k: int,
        distance_metric: str | None = None,
        query_string: str | None = None,
        filters: ComparisonFilter | CompoundFilter | None = None,
        include_feature_view_version_metadata: bool = False,
    ) -> list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]]:
        """The ``top_k`` documents nearest ``embedding``, best for ``query_string`` (BM25),
        or both fused; ``distance_metric`` is the vector field's (set when the collection
        was created), so the argument is not consulted."""
        flow = self._documents_flow(
            config, table, requested_features, embedding, top_k, query_string, filters
        )
        return self._db(config).run(flow)

    async def close(self) -> None:
        with self._lock:
            self._close()


def _decode(
    record: Any, wanted: set[str] | None
) -> tuple[datetime | None, dict[str, ValueProto] | None]:
    if record is None:
        return None, None
    values: dict[str, ValueProto] = {}
    for name, raw in record.bins[FEATURES].items():
        if wanted is None or name in wanted:
            value = ValueProto()
            value.ParseFromString(raw)
            values[name] = value
    return _datetime(record.bins[TS]), values


def _commit_newer(
    set_name: str, rows: list[_Row], documents: _Documents, collection: str | None
) -> Flow[list[_Row]]:
    """Store each row unless the stored one is newer, atomically: every write is a
    compare-and-set on the generation read, so a concurrent writer means ``Conflict`` and
    a fresh read. With ``collection``, the rows written are upserted as documents in the
    same commit, so a document always matches its row. Returns the rows written."""
    keys = [row.key for row in rows]
    for _ in range(_ATTEMPTS):
        stored = yield _get_many(set_name, keys)
        writes: list[Write] = []
        won: list[_Row] = []
        for row, record in zip(rows, stored):
            condition: dict[str, Any] = {"create_only": True}
            if record is not None:
                if (record.bins[TS], record.bins[CREATED]) > row.order:
                    continue
                condition = {"expect_generation": record.generation}
            bins = {TS: row.ts, CREATED: row.created, FEATURES: row.features}
            writes.append((set_name, "put", (row.key, bins), condition))
            won.append(row)
        if not writes:
            return []
        if collection is not None:
            ids, vectors, metadata, texts = (list(c) for c in zip(*map(documents.item, won)))
            writes.append((COLLECTION + collection, "upsert", (ids, vectors, metadata, texts), {}))
        try:
            yield commit(writes)
            return won
        except Conflict:
            continue
    raise Conflict(f"gave up writing {len(rows)} rows to {set_name} after {_ATTEMPTS} conflicts", 0)


def _call(method: str, *args: Any) -> Step:
    """A step calling the database's ``method`` (a dotted path: ``vectors.drop_collection``)."""

    def step(face: Face) -> Any:
        target = face.db
        for part in method.split("."):
            target = getattr(target, part)
        return target(*args)

    return step


def _get_many(set_name: str, keys: list[bytes]) -> Step:
    return lambda f: f.db.records(set_name).get_many(keys)
