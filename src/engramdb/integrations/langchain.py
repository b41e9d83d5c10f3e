"""LangChain on engramdb: a vector store, a byte store and two LLM caches.

``pip install 'engramdb[langchain]'``. Each class takes any face of the API
(``engramdb.open()``, ``engramdb.connect()``, ``engramdb.aio.open()``,
``engramdb.aio.connect()``) and implements LangChain's sync and async methods on all of
them, each written once (``engramdb.integrations._flow``).

- ``EngramVectorStore``: a ``VectorStore`` over an engramdb collection: add/upsert with
  ids, similarity search with scores and metadata filters (engramdb's filter language,
  which is MongoDB's: ``{"year": {"$gte": 2022}, "lang": {"$in": ["en", "fr"]}}``), MMR,
  ``get_by_ids``, delete, and BM25 + vector ``hybrid_search`` (also as
  ``as_retriever(search_type="hybrid")``).
- ``EngramByteStore``: a ``ByteStore`` (``mget``/``mset``/``mdelete``/``yield_keys``) over
  a record set, with optional TTL; values past the record limit are chunked.
- ``EngramCache``: an exact-match LLM cache with optional TTL.
- ``EngramSemanticCache``: an LLM cache matched by prompt-embedding similarity.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.stores import ByteStore
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from engramdb.errors import InvalidArgument, NotFound
from engramdb.integrations._chunks import Chunks, Put, chunk_limit
from engramdb.integrations._flow import (
    Face,
    Faces,
    Flow,
    Write,
    call,
    commit,
    embed_documents,
    embed_query,
    on,
)

__all__ = [
    "EngramByteStore",
    "EngramCache",
    "EngramRetriever",
    "EngramSemanticCache",
    "EngramVectorStore",
]


def _face(f: Face) -> Face:
    return f


def _vectors(method: str, *args: Any, **kwargs: Any) -> Callable[[Face], Any]:
    return lambda f: getattr(f.db.vectors, method)(*args, **kwargs)


class _Collection:
    """One collection's handle per face, created (or found) on first use."""

    def __init__(
        self,
        name: str,
        dim: int | None,
        metric: str,
        text: bool,
        embedding: Embeddings,
    ) -> None:
        self.name = name
        self.dim = dim
        self.metric = metric
        self.text = text
        self.embedding = embedding
        self._handles: dict[int, Any] = {}

    def handle(self) -> Flow[Any]:
        face = yield _face
        found = self._handles.get(id(face.db))
        if found is not None:
            return found
        dim = self.dim
        if dim is None:
            try:
                found = yield _vectors("get_collection", self.name)
            except NotFound:
                probe = yield embed_query(self.embedding, "dimension probe")
                dim = self.dim = len(probe)
        if found is None:
            found = yield _vectors(
                "create_collection", self.name, dim, self.metric, text=self.text, exist_ok=True
            )
        self._handles[id(face.db)] = found
        return found


class EngramVectorStore(VectorStore):
    """A LangChain vector store over the engramdb collection ``collection``.

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        embedding: the LangChain ``Embeddings`` that turns texts into vectors.
        collection: the collection's name (created on first use if missing).
        dim: the vectors' dimension; None asks ``embedding`` once (or reads the existing
            collection's).
        metric: ``cosine`` (default), ``ip`` or ``l2``.
        text: keep a BM25 index of the texts, for ``hybrid_search`` (default True).
        ttl: seconds each added item lives; None: for ever.

    Scores are engramdb's, higher is better (cosine similarity, inner product, negative
    squared L2); ``similarity_search_with_relevance_scores`` maps them into [0, 1].
    """

    def __init__(
        self,
        db: Any,
        embedding: Embeddings,
        *,
        collection: str = "langchain",
        dim: int | None = None,
        metric: str = "cosine",
        text: bool = True,
        ttl: float | None = None,
    ) -> None:
        self._faces = Faces(db)
        self.db = db
        self.embedding = embedding
        self.metric = metric
        self.ttl = ttl
        self._collection = _Collection(collection, dim, metric, text, embedding)

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def close(self) -> None:
        """Release what the store opened itself (never the database it was given)."""
        self._faces.close()

    # flows -------------------------------------------------------------------------------

    def _add(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: Any
    ) -> Flow[list[str]]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgument(f"got {len(texts)} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != len(texts):
            raise InvalidArgument(f"got {len(texts)} texts but {len(ids)} ids")
        chosen = [
            str(i) if i is not None else uuid.uuid4().hex for i in (ids or [None] * len(texts))
        ]
        if not texts:
            return []
        vectors = yield embed_documents(self.embedding, texts)
        coll = yield from self._collection.handle()
        metas = [dict(m) for m in metadatas] if metadatas is not None else None
        yield call(coll, "upsert", chosen, vectors, metas, texts, ttl=self.ttl)
        return chosen

    def _search(
        self,
        vector: Any,
        k: int,
        filter: dict[str, Any] | None,
        *,
        fetch_vectors: bool = False,
        ef: int | None = None,
    ) -> Flow[list[Any]]:
        coll = yield from self._collection.handle()
        include = ("metadata", "text", "vector") if fetch_vectors else ("metadata", "text")
        hits = yield call(coll, "search", vector, k, filter=filter, include=include, ef=ef)
        return list(hits)

    def _by_query(self, query: str, k: int, filter: dict[str, Any] | None) -> Flow[list[Any]]:
        vector = yield embed_query(self.embedding, query)
        return (yield from self._search(vector, k, filter))

    def _mmr(
        self,
        vector: Any,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        filter: dict[str, Any] | None,
    ) -> Flow[list[Document]]:
        hits = yield from self._search(vector, fetch_k, filter, fetch_vectors=True)
        if not hits:
            return []
        chosen = maximal_marginal_relevance(
            np.asarray(vector, dtype=np.float32),
            [list(map(float, h.vector)) for h in hits],
            lambda_mult=lambda_mult,
            k=min(k, len(hits)),
        )
        return [_document(hits[i]) for i in chosen]

    def _hybrid(self, query: str, k: int, options: dict[str, Any]) -> Flow[list[Any]]:
        vector = yield embed_query(self.embedding, query)
        coll = yield from self._collection.handle()
        hits = yield call(coll, "hybrid_search", query, vector, k, **options)
        return list(hits)

    def _get(self, ids: Sequence[str]) -> Flow[list[Document]]:
        coll = yield from self._collection.handle()
        items = yield call(coll, "get", list(ids))
        return [
            Document(id=str(i.id), page_content=i.text or "", metadata=i.metadata)
            for i in items
            if i is not None
        ]

    def _delete(self, ids: list[str] | None) -> Flow[bool]:
        coll = yield from self._collection.handle()
        if ids is None:
            yield call(
                coll,
                "delete_all",
            )
        else:
            yield call(coll, "delete", list(ids))
        return True

    # LangChain's API --------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert ``texts`` (an id given again replaces its item)."""
        return self._faces.run(self._add(texts, metadatas, ids))

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async ``add_texts``."""
        return await self._faces.arun(self._add(texts, metadatas, ids))

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest to ``query`` that pass ``filter``."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async ``similarity_search``."""
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their scores (higher is nearer)."""
        return [(_document(h), h.score) for h in self._faces.run(self._by_query(query, k, filter))]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async ``similarity_search_with_score``."""
        hits = await self._faces.arun(self._by_query(query, k, filter))
        return [(_document(h), h.score) for h in hits]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents nearest to a vector (``ef=``: the HNSW search breadth)."""
        hits = self._faces.run(self._search(embedding, k, filter, ef=kwargs.get("ef")))
        return [_document(h) for h in hits]

    async def asimilarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async ``similarity_search_by_vector``."""
        hits = await self._faces.arun(self._search(embedding, k, filter, ef=kwargs.get("ef")))
        return [_document(h) for h in hits]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents chosen among the ``fetch_k`` nearest for relevance and diversity."""
        vector = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter=filter
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async ``max_marginal_relevance_search``."""
        vector = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR from a vector."""
        return self._faces.run(self._mmr(embedding, k, fetch_k, lambda_mult, filter))

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async ``max_marginal_relevance_search_by_vector``."""
        return await self._faces.arun(self._mmr(embedding, k, fetch_k, lambda_mult, filter))

    def hybrid_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        fusion: str = "rrf",
        alpha: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """BM25 and vector results for ``query`` fused by reciprocal rank (``rrf``) or by
        ``weighted`` scores (``alpha`` weighs the vector side)."""
        found = self.hybrid_search_with_score(query, k, filter=filter, fusion=fusion, alpha=alpha)
        return [d for d, _ in found]

    async def ahybrid_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        fusion: str = "rrf",
        alpha: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Async ``hybrid_search``."""
        found = await self.ahybrid_search_with_score(
            query, k, filter=filter, fusion=fusion, alpha=alpha
        )
        return [d for d, _ in found]

    def hybrid_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        fusion: str = "rrf",
        alpha: float = 0.5,
    ) -> list[tuple[Document, float]]:
        """``hybrid_search`` with the fused scores."""
        options = {"filter": filter, "fusion": fusion, "alpha": alpha}
        return [(_document(h), h.score) for h in self._faces.run(self._hybrid(query, k, options))]

    async def ahybrid_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        fusion: str = "rrf",
        alpha: float = 0.5,
    ) -> list[tuple[Document, float]]:
        """Async ``hybrid_search_with_score``."""
        options = {"filter": filter, "fusion": fusion, "alpha": alpha}
        hits = await self._faces.arun(self._hybrid(query, k, options))
        return [(_document(h), h.score) for h in hits]

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents stored under ``ids`` (missing ones are left out)."""
        return self._faces.run(self._get(ids))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async ``get_by_ids``."""
        return await self._faces.arun(self._get(ids))

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents ``ids`` (None: every document)."""
        return self._faces.run(self._delete(ids))

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Async ``delete``."""
        return await self._faces.arun(self._delete(ids))

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.metric == "cosine":
            return lambda score: (score + 1.0) / 2.0
        if self.metric == "l2":  # score = -squared distance; unit vectors are <= 2 apart
            return lambda score: 1.0 - min(1.0, (max(0.0, -score) ** 0.5) / 2.0)
        return lambda score: 1.0 / (1.0 + float(np.exp(-score)))

    def as_retriever(self, **kwargs: Any) -> EngramRetriever:
        """A retriever; ``search_type`` may also be ``"hybrid"`` (``hybrid_search``)."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return EngramRetriever(vectorstore=self, tags=tags, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        db: Any = None,
        **kwargs: Any,
    ) -> EngramVectorStore:
        """A store on ``db`` (required) holding ``texts``."""
        if db is None:
            raise InvalidArgument("from_texts needs db=<an engramdb database>")
        store = cls(db, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class EngramRetriever(VectorStoreRetriever):
    """LangChain's vector store retriever, plus ``search_type="hybrid"``."""

    allowed_search_types: ClassVar[Sequence[str]] = (
        "similarity",
        "similarity_score_threshold",
        "mmr",
        "hybrid",
    )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            store: EngramVectorStore = self.vectorstore  # type: ignore[assignment]
            return store.hybrid_search(query, **(self.search_kwargs | kwargs))
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            store: EngramVectorStore = self.vectorstore  # type: ignore[assignment]
            return await store.ahybrid_search(query, **(self.search_kwargs | kwargs))
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)


def _document(hit: Any) -> Document:
    return Document(id=str(hit.id), page_content=hit.text or "", metadata=hit.metadata or {})


# byte store ------------------------------------------------------------------------------


class EngramByteStore(ByteStore):
    """A LangChain ``ByteStore`` over the record set ``namespace``.

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        namespace: the set holding the values (chunks of large ones go to
            ``<namespace>.chunks``).
        ttl: seconds each value lives after it is set; None: for ever.

    ``mset`` and ``mdelete`` are each one atomic write.
    """

    def __init__(self, db: Any, *, namespace: str = "lc.bytes", ttl: float | None = None) -> None:
        self._faces = Faces(db)
        self.db = db
        self.set = namespace
        self.ttl = ttl
        budget = None if isinstance(getattr(db, "db", db), _embedded()) else 1 << 20
        self._chunks = Chunks(f"{namespace}.chunks", chunk_limit(db), budget)

    def close(self) -> None:
        """Release what the store opened itself (never the database it was given)."""
        self._faces.close()

    def _mget(self, keys: Sequence[str]) -> Flow[list[bytes | None]]:
        keys = [_key(k) for k in keys]
        records = yield on(self.set, "get_many", keys)
        found = [(k, r) for k, r in zip(keys, records) if r is not None]
        values = yield from self._chunks.load(("v", k, r.bins) for k, r in found)
        loaded = {k: v for (k, _), v in zip(found, values)}
        return [loaded.get(k) for k in keys]

    def _mset(self, pairs: Sequence[tuple[str, bytes]]) -> Flow[None]:
        pairs = [(_key(k), v) for k, v in pairs]
        for _, value in pairs:
            if not isinstance(value, bytes):
                raise InvalidArgument(f"a ByteStore holds bytes, not {type(value).__name__}")
        if not pairs:
            return
        keys = [k for k, _ in pairs]
        old = yield on(self.set, "get_many", keys)
        stale = {c for k, r in zip(keys, old) if r is not None
                 for c in self._chunks.keys_of("v", k, r.bins)}  # fmt: skip
        heads: list[Put] = []
        early: list[Put] = []
        for key, value in dict(pairs).items():
            head, parts = self._chunks.split("v", key, value)
            early.extend(parts)
            stale -= {c for _, c, _ in parts}
            heads.append((self.set, key, head))
        extra: list[Write] = []
        if stale:
            extra.append((self._chunks.set, "delete_many", (sorted(stale),), {}))
        yield from self._chunks.write(early, heads, extra, ttl=self.ttl)

    def _mdelete(self, keys: Sequence[str]) -> Flow[None]:
        keys = [_key(k) for k in keys]
        if not keys:
            return
        old = yield on(self.set, "get_many", keys)
        chunks = [c for k, r in zip(keys, old) if r is not None
                  for c in self._chunks.keys_of("v", k, r.bins)]  # fmt: skip
        yield commit(
            [
                (self.set, "delete_many", (keys,), {}),
                (self._chunks.set, "delete_many", (chunks,), {}),
            ]
        )

    def _keys_page(self, prefix: str | None, cursor: str | None) -> Flow[tuple[list[str], Any]]:
        page = yield on(self.set, "scan", prefix, cursor=cursor, limit=1000)
        return [str(r.key) for r in page.records], page.cursor

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in request order; None for missing ones."""
        return self._faces.run(self._mget(keys))

    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Async ``mget``."""
        return await self._faces.arun(self._mget(keys))

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        """Set every pair, atomically."""
        self._faces.run(self._mset(key_value_pairs))

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        """Async ``mset``."""
        await self._faces.arun(self._mset(key_value_pairs))

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (missing ones are fine), atomically."""
        self._faces.run(self._mdelete(keys))

    async def amdelete(self, keys: Sequence[str]) -> None:
        """Async ``mdelete``."""
        await self._faces.arun(self._mdelete(keys))

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """Every key (starting with ``prefix``), in order, read a page at a time."""
        cursor: str | None = None
        while True:
            keys, cursor = self._faces.run(self._keys_page(prefix, cursor))
            yield from keys
            if cursor is None:
                return

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """Async ``yield_keys``."""
        cursor: str | None = None
        while True:
            keys, cursor = await self._faces.arun(self._keys_page(prefix, cursor))
            for key in keys:
                yield key
            if cursor is None:
                return


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidArgument(f"keys are str, not {type(key).__name__}")
    return key


def _embedded() -> type:
    import engramdb

    return engramdb.Database


# LLM caches ------------------------------------------------------------------------------


def _dump_generations(generations: Sequence[Generation]) -> bytes:
    out = []
    for g in generations:
        entry: dict[str, Any] = {"text": str(g.text), "info": g.generation_info}
        if isinstance(g, ChatGeneration):
            entry["message"] = message_to_dict(g.message)
        out.append(entry)
    try:
        return msgspec.msgpack.encode(out)
    except (TypeError, msgspec.EncodeError) as e:
        raise InvalidArgument(f"generation_info must be plain data to cache: {e}") from None


def _load_generations(data: bytes) -> list[Generation]:
    out: list[Generation] = []
    for entry in msgspec.msgpack.decode(data):
        if "message" in entry:
            (message,) = messages_from_dict([entry["message"]])
            out.append(ChatGeneration(message=message, generation_info=entry["info"]))
        else:
            out.append(Generation(text=entry["text"], generation_info=entry["info"]))
    return out


def _cache_key(prompt: str, llm_string: str) -> str:
    return hashlib.sha256(f"{llm_string}\0{prompt}".encode()).hexdigest()


class _FlowCache(BaseCache):
    """An LLM cache whose operations are flows (``_lookup``, ``_update``, ``_clear``) run
    on whichever face of the database it was given, sync or async."""

    _faces: Faces

    def close(self) -> None:
        """Release what the cache opened itself (never the database it was given)."""
        self._faces.close()

    def _lookup(self, prompt: str, llm_string: str) -> Flow[RETURN_VAL_TYPE | None]:
        raise NotImplementedError

    def _update(self, prompt: str, llm_string: str, value: RETURN_VAL_TYPE) -> Flow[None]:
        raise NotImplementedError

    def _clear(self) -> Flow[None]:
        raise NotImplementedError

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for this prompt and model, or None."""
        return self._faces.run(self._lookup(prompt, llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async ``lookup``."""
        return await self._faces.arun(self._lookup(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache the generations for this prompt and model."""
        self._faces.run(self._update(prompt, llm_string, return_val))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async ``update``."""
        await self._faces.arun(self._update(prompt, llm_string, return_val))

    def clear(self, **kwargs: Any) -> None:
        """Forget every cached answer."""
        self._faces.run(self._clear())

    async def aclear(self, **kwargs: Any) -> None:
        """Async ``clear``."""
        await self._faces.arun(self._clear())


class EngramCache(_FlowCache):
    """An exact-match LLM cache (``langchain_core.globals.set_llm_cache(EngramCache(db))``).

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        ttl: seconds an answer is kept; None: for ever.
        namespace: the set holding the answers (``clear`` empties it).
    """

    def __init__(self, db: Any, *, ttl: float | None = None, namespace: str = "lc.cache"):
        self._faces = Faces(db)
        self.db = db
        self.ttl = ttl
        self.set = namespace

    def _lookup(self, prompt: str, llm_string: str) -> Flow[RETURN_VAL_TYPE | None]:
        key = _cache_key(prompt, llm_string)
        record = yield on(self.set, "get", key)
        return None if record is None else _load_generations(record.bins["g"])

    def _update(self, prompt: str, llm_string: str, value: RETURN_VAL_TYPE) -> Flow[None]:
        key, data = _cache_key(prompt, llm_string), _dump_generations(value)
        yield on(self.set, "put", key, {"g": data}, ttl=self.ttl)

    def _clear(self) -> Flow[None]:
        yield on(
            self.set,
            "truncate",
        )


class EngramSemanticCache(_FlowCache):
    """An LLM cache that answers a prompt close enough to one it has seen, for the same
    model: the prompts' embeddings live in the collection ``collection``.

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        embedding: embeds the prompts.
        score_threshold: the least cosine similarity that counts as a hit.
        ttl: seconds an answer is kept; None: for ever.
        collection: the collection's name.
    """

    def __init__(
        self,
        db: Any,
        embedding: Embeddings,
        *,
        score_threshold: float = 0.95,
        ttl: float | None = None,
        collection: str = "lc-semantic-cache",
        dim: int | None = None,
    ) -> None:
        self._faces = Faces(db)
        self.db = db
        self.embedding = embedding
        self.score_threshold = score_threshold
        self.ttl = ttl
        self._collection = _Collection(collection, dim, "cosine", False, embedding)

    def _lookup(self, prompt: str, llm_string: str) -> Flow[RETURN_VAL_TYPE | None]:
        vector = yield embed_query(self.embedding, prompt)
        coll = yield from self._collection.handle()
        model = _cache_key("", llm_string)
        hits = yield call(coll, "search", vector, 1, filter={"llm": model})
        if not hits or hits[0].score < self.score_threshold:
            return None
        return _load_generations(hits[0].metadata["g"])

    def _update(self, prompt: str, llm_string: str, value: RETURN_VAL_TYPE) -> Flow[None]:
        vector = yield embed_query(self.embedding, prompt)
        coll = yield from self._collection.handle()
        meta = {"llm": _cache_key("", llm_string), "g": _dump_generations(value)}
        key = _cache_key(prompt, llm_string)
        yield call(coll, "upsert", [key], [vector], [meta], ttl=self.ttl)

    def _clear(self) -> Flow[None]:
        coll = yield from self._collection.handle()
        yield call(
            coll,
            "delete_all",
        )
