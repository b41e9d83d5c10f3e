"""LlamaIndex vector store over an engramdb collection (``pip install 'engramdb[llamaindex]'``).

>>> from llama_index.core import StorageContext, VectorStoreIndex
>>> store = EngramVectorStore(engramdb.open("./data"), collection_name="docs")
>>> index = VectorStoreIndex.from_documents(
...     documents, storage_context=StorageContext.from_defaults(vector_store=store)
... )

Each node is one collection item: its id is the node id, its vector the node's embedding,
its text the node's content (indexed for BM25) and its metadata the node's metadata plus
LlamaIndex's own keys (``_node_content``, ``ref_doc_id``...) and ``_node_id``. Queries run in
``default`` (dense), ``text_search``/``sparse`` (BM25) and ``hybrid`` mode: weighted fusion
``alpha * vector + (1 - alpha) * BM25`` when the query carries ``alpha`` (LlamaIndex's
convention: 1 is pure vector), reciprocal-rank fusion otherwise. ``MetadataFilters`` become
engramdb filters, which run inside the search (so ``k`` matching nodes give ``k`` hits);
operators without an engramdb equivalent raise ``InvalidArgument`` before anything runs.

The store takes any face of the API (``engramdb.open()``, ``engramdb.connect()``,
``engramdb.aio.open()``, ``engramdb.aio.connect()``) and offers every sync and ``a*`` method
on each: each operation is written once and driven by ``engramdb.integrations._flow`` (a
sync face serves the ``a*`` methods on a worker thread, so they never block the loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from engramdb.embedders import Embedder
from engramdb.errors import InvalidArgument, NotFound
from engramdb.integrations._flow import Face, Faces, Flow, Step

__all__ = ["EngramEmbedding", "EngramVectorStore", "to_engram_filter"]

NODE_ID = "_node_id"  # metadata key holding the node id, so queries can restrict by id
_PAGE = 500

_COMPARISONS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
# Why each of these has no mapping: engramdb filters have no substring test (``$prefix``
# only) and cannot test a field for None or an empty list.
_UNMAPPABLE: dict[FilterOperator, str] = {
    FilterOperator.TEXT_MATCH: "engramdb filters have no substring match (only $prefix)",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "engramdb filters have no substring match",
    FilterOperator.IS_EMPTY: "engramdb filters cannot test for None or an empty list",
}
_TEXT_MODES = (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE)


def to_engram_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """``MetadataFilters`` as an engramdb filter (None for no filter).

    ``==``/``!=``/``>``/``>=``/``<``/``<=``/``in``/``nin`` map to ``$eq``... ``$nin``;
    ``contains`` to ``$contains`` (list membership); ``any``/``all`` to ``$or``/``$and`` of
    ``$contains``; ``and``/``or`` to ``$and``/``$or``; ``not`` to ``$not`` of their ``$or``
    (no filter matches). Nested ``MetadataFilters`` nest. A list-valued field matches
    ``==`` and ``in`` by element (engramdb's rule, as in MongoDB). ``text_match``,
    ``text_match_insensitive`` and ``is_empty`` raise ``InvalidArgument``.
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters)


def _group(filters: MetadataFilters) -> dict[str, Any]:
    parts = [_group(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    raise InvalidArgument(f"unknown filter condition {condition!r}")


def _one(f: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in _UNMAPPABLE:
        raise InvalidArgument(
            f"metadata filter {f.key!r} {op.value!r}: operator {op.name} cannot be run by "
            f"EngramVectorStore ({_UNMAPPABLE[op]}); supported: "
            "==, !=, >, >=, <, <=, in, nin, contains, any, all"
        )
    if f.value is None:
        raise InvalidArgument(f"metadata filter {f.key!r} {op.value!r} needs a value, not None")
    if op in _COMPARISONS:
        return {f.key: {_COMPARISONS[op]: f.value}}
    if op == FilterOperator.CONTAINS:
        return {f.key: {"$contains": f.value}}
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        if not isinstance(f.value, list) or not f.value:
            raise InvalidArgument(f"metadata filter {f.key!r} {op.value!r} needs a non-empty list")
        each = [{f.key: {"$contains": v}} for v in f.value]
        return {"$or" if op == FilterOperator.ANY else "$and": each}
    raise InvalidArgument(f"unknown metadata filter operator {f.operator!r}")


def _and(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"$and": present}


def _scan_page(collection: Any, where: dict[str, Any] | None, cursor: str | None) -> Step:
    return lambda f: collection.scan(filter=where, cursor=cursor, limit=_PAGE)


def _node(metadata: Mapping[str, Any], text: str | None) -> BaseNode:
    return metadata_dict_to_node(dict(metadata), text=text)


class EngramEmbedding(BaseEmbedding):
    """A LlamaIndex embed model over an engramdb embedder: ``HashEmbedder`` (deterministic,
    no dependencies) or ``SentenceEmbedder`` (all-MiniLM-L6-v2, shipped in a package, no
    downloads)."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        kwargs.setdefault("model_name", f"engramdb-{type(embedder).__name__}-{embedder.dim}")
        super().__init__(**kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "EngramEmbedding"

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self._embedder.embed(texts)]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]


class EngramVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over the engramdb collection ``collection_name``.

    Args:
        db: any face of the API: ``engramdb.open(...)``, ``engramdb.connect(url)``,
            ``await engramdb.aio.open(...)`` or ``await engramdb.aio.connect(url)``.
        collection_name: the collection (created on the first ``add`` if missing).
        dim: vector length; None takes it from the first node added.
        metric: ``cosine`` (LlamaIndex's default similarity), ``ip`` or ``l2``; used only
            when the collection is created.
        flat_metadata: refuse metadata values other than str, int, float and None (as
            stores that cannot hold lists or maps do); engramdb holds any JSON value, so
            off by default.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str
    dim: int | None = None
    metric: str = "cosine"

    _faces: Faces = PrivateAttr()
    _handles: dict[bool, Any] = PrivateAttr(default_factory=dict)

    def __init__(
        self,
        db: Any,
        *,
        collection_name: str = "llama_index",
        dim: int | None = None,
        metric: str = "cosine",
        flat_metadata: bool = False,
        **kwargs: Any,
    ) -> None:
        faces = Faces(db)
        fields: dict[str, Any] = {
            "collection_name": collection_name,
            "dim": dim,
            "metric": metric,
            "flat_metadata": flat_metadata,
        }
        super().__init__(**fields, **kwargs)
        self._faces = faces

    @classmethod
    def class_name(cls) -> str:
        return "EngramVectorStore"

    @property
    def client(self) -> Any:
        """The engramdb database this store was given."""
        return self._faces.db

    def close(self) -> None:
        """Close what the store opened itself (a sync client beside an ``aio.connect()``
        face); never the database it was given."""
        self._faces.close()

    # the operations, each written once -------------------------------------------------

    def _collection(self, dim: int | None) -> Flow[Any]:
        """The collection's handle on the face driving the flow: created when ``dim`` is
        given, else None while it does not exist."""
        face: Face = yield lambda f: f
        found = self._handles.get(face.is_async)
        if found is not None:
            return found
        name = self.collection_name
        try:
            found = yield lambda f: f.db.vectors.get_collection(name)
        except NotFound:
            want = self.dim if self.dim is not None else dim
            if want is None:
                return None
            metric = self.metric
            found = yield lambda f: f.db.vectors.create_collection(
                name, want, metric, exist_ok=True
            )
        self._handles[face.is_async] = found
        return found

    def _add(self, nodes: Sequence[BaseNode]) -> Flow[list[str]]:
        ids: list[str] = []
        vectors: list[list[float]] = []
        metadata: list[dict[str, Any]] = []
        texts: list[str] = []
        for node in nodes:
            if node.embedding is None:
                raise InvalidArgument(
                    f"node {node.node_id!r} has no embedding: EngramVectorStore stores embedded "
                    "nodes (build the index with an embed_model)"
                )
            meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            meta[NODE_ID] = node.node_id
            ids.append(node.node_id)
            vectors.append(node.embedding)
            metadata.append(meta)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
        if not ids:
            return []
        collection = yield from self._collection(len(vectors[0]))
        yield lambda f: collection.upsert(ids, vectors, metadata, texts)
        return ids

    def _delete_where(self, where: dict[str, Any]) -> Flow[None]:
        collection = yield from self._collection(None)
        if collection is not None:
            yield lambda f: collection.delete_where(where)

    def _delete_nodes(
        self, node_ids: list[str] | None, filters: MetadataFilters | None
    ) -> Flow[None]:
        where = to_engram_filter(filters)
        if where is None and node_ids is None:
            raise InvalidArgument("delete_nodes needs node_ids or filters (clear() empties all)")
        collection = yield from self._collection(None)
        if collection is None:
            return
        if where is None and node_ids is not None:
            ids = list(node_ids)
            yield lambda f: collection.delete(ids)
        else:
            restrict = None if node_ids is None else {NODE_ID: {"$in": list(node_ids)}}
            combined = _and(where, restrict)
            yield lambda f: collection.delete_where(combined)

    def _clear(self) -> Flow[None]:
        collection = yield from self._collection(None)
        if collection is not None:
            yield lambda f: collection.delete_all()

    def _get_nodes(
        self, node_ids: list[str] | None, filters: MetadataFilters | None
    ) -> Flow[list[BaseNode]]:
        where = to_engram_filter(filters)
        collection = yield from self._collection(None)
        if collection is None:
            return []
        if where is None and node_ids is not None:
            ids = list(node_ids)
            items = yield lambda f: collection.get(ids)
            return [_node(item.metadata, item.text) for item in items if item is not None]
        restrict = None if node_ids is None else {NODE_ID: {"$in": list(node_ids)}}
        combined = _and(where, restrict)
        nodes: list[BaseNode] = []
        cursor: str | None = None
        while True:
            page = yield _scan_page(collection, combined, cursor)
            nodes.extend(_node(item.metadata, item.text) for item in page.items)
            cursor = page.cursor
            if cursor is None:
                return nodes

    def _query(self, query: VectorStoreQuery) -> Flow[VectorStoreQueryResult]:
        # An empty id list restricts nothing: VectorStoreIndex.as_retriever() passes the ids
        # its index struct holds, which stay empty when the store keeps the nodes itself.
        where = _and(
            to_engram_filter(query.filters),
            {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None,
            {NODE_ID: {"$in": list(query.node_ids)}} if query.node_ids else None,
        )
        k = query.similarity_top_k
        mode = VectorStoreQueryMode(query.mode)
        vector = query.query_embedding
        text = query.query_str or ""
        if mode == VectorStoreQueryMode.DEFAULT:
            if vector is None:
                raise InvalidArgument("a default (dense) query needs query_embedding")
        elif mode in _TEXT_MODES:
            if not text:
                raise InvalidArgument(f"a {mode.value} query needs query_str")
            k = query.sparse_top_k or k
        elif mode == VectorStoreQueryMode.HYBRID:
            if vector is None or not text:
                raise InvalidArgument("a hybrid query needs query_embedding and query_str")
            k = query.hybrid_top_k or k
        else:
            raise InvalidArgument(
                f"EngramVectorStore does not run {mode.value!r} queries; it runs default "
                "(dense), text_search, sparse (both BM25) and hybrid"
            )
        collection = yield from self._collection(None)
        if collection is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if mode == VectorStoreQueryMode.DEFAULT:
            hits = yield lambda f: collection.search(vector, k, filter=where)
        elif mode in _TEXT_MODES:
            hits = yield lambda f: collection.text_search(text, k, filter=where)
        else:
            alpha = query.alpha
            # Each side contributes at least its own top-k before fusion.
            depth = max(k, query.similarity_top_k, query.sparse_top_k or 0)
            hits = yield lambda f: collection.hybrid_search(
                text,
                vector,
                k,
                fusion="rrf" if alpha is None else "weighted",
                alpha=0.5 if alpha is None else alpha,
                candidates=max(50, 2 * depth),
                filter=where,
            )
        return VectorStoreQueryResult(
            nodes=[_node(hit.metadata or {}, hit.text) for hit in hits],
            similarities=[hit.score for hit in hits],
            ids=[str(hit.id) for hit in hits],
        )

    # the LlamaIndex interface ----------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert ``nodes`` (with their embeddings); returns their ids."""
        return self._faces.run(self._add(nodes))

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await self._faces.arun(self._add(nodes))

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``."""
        self._faces.run(self._delete_where({"ref_doc_id": ref_doc_id}))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self._faces.arun(self._delete_where({"ref_doc_id": ref_doc_id}))

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes among ``node_ids`` that pass ``filters`` (either may be None)."""
        self._faces.run(self._delete_nodes(node_ids, filters))

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await self._faces.arun(self._delete_nodes(node_ids, filters))

    def clear(self) -> None:
        """Delete every node of the collection."""
        self._faces.run(self._clear())

    async def aclear(self) -> None:
        await self._faces.arun(self._clear())

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes among ``node_ids`` that pass ``filters`` (either may be None)."""
        return self._faces.run(self._get_nodes(node_ids, filters))

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await self._faces.arun(self._get_nodes(node_ids, filters))

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Run ``query`` (default, text_search, sparse or hybrid mode)."""
        return self._faces.run(self._query(query))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await self._faces.arun(self._query(query))
