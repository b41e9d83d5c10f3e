"""The embedding store over the network, written once for the sync and async clients (each
method returns ``owner._call(...)``: a value, or an awaitable for the async client)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engramdb.errors import InvalidArgument
from engramdb.index.vector import as_float32
from engramdb.vectors.model import DEFAULT_INCLUDE, CollectionInfo, Hit, Item

__all__ = [
    "RESULTS",
    "CollectionCalls",
    "VectorStoreCalls",
    "collection_info",
    "hits",
    "items",
    "nested_hits",
]


def collection_info(raw: Any) -> CollectionInfo:
    return CollectionInfo(**raw)


def hits(raw: Any) -> list[Hit]:
    return [Hit(**h) for h in raw]


def nested_hits(raw: Any) -> list[list[Hit]]:
    return [hits(row) for row in raw]


def items(raw: Any) -> list[Item | None]:
    return [None if i is None else Item(**i) for i in raw]


def _same(raw: Any) -> Any:
    return raw


# method -> (how to rebuild its result, whether a retry is safe)
RESULTS: dict[str, tuple[Any, bool]] = {
    "vectors.create_collection": (collection_info, False),
    "vectors.get_collection": (collection_info, True),
    "vectors.list_collections": (lambda raw: [collection_info(i) for i in raw], True),
    "vectors.drop_collection": (_same, False),
    "collection.upsert": (_same, False),
    "collection.delete": (_same, False),
    "collection.touch": (_same, False),
    "collection.get": (items, True),
    "collection.count": (_same, True),
    "collection.search": (hits, True),
    "collection.search_many": (nested_hits, True),
    "collection.text_search": (hits, True),
    "collection.hybrid_search": (hits, True),
}


def _rows(vectors: Any) -> Any:
    """Vectors as msgpack-friendly rows: 1-D float32 arrays (sent as compact binary)."""
    array = as_float32(vectors)  # InvalidArgument for anything but real numbers
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise InvalidArgument(f"vectors must be 1-D or 2-D, got shape {tuple(array.shape)}")
    return list(array)


class VectorStoreCalls:
    """``db.vectors`` of a remote database."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"vectors.{method}", args, kwargs)

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        text: bool = True,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        exact_threshold: int = 4096,
        exist_ok: bool = False,
    ) -> Any:
        return self._owner._collection(
            self._call(
                "create_collection",
                name,
                dim,
                metric,
                text=text,
                m=m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                exact_threshold=exact_threshold,
                exist_ok=exist_ok,
            )
        )

    def get_collection(self, name: str) -> Any:
        return self._owner._collection(self._call("get_collection", name))

    def list_collections(self) -> list[CollectionInfo]:
        return self._call("list_collections")  # type: ignore[no-any-return]

    def drop_collection(self, name: str) -> bool:
        return self._call("drop_collection", name)  # type: ignore[no-any-return]


class CollectionCalls:
    """One remote collection; the same methods as ``engramdb.vectors.Collection``."""

    def __init__(self, owner: Any, info: CollectionInfo) -> None:
        self._owner = owner
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<remote Collection {self.name!r} dim={self.info.dim} metric={self.info.metric}>"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"collection.{method}", (self.name, *args), kwargs)

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
        # Arguments go as they are: the server validates them with the embedded code, so a
        # str where ids belong is refused there, never iterated into one id per character.
        return self._call(  # type: ignore[no-any-return]
            "upsert", ids, _rows(vectors), metadata, texts,
            ttl=ttl, expect_generation=expect_generation,
        )  # fmt: skip

    def delete(self, ids: Sequence[str | int]) -> int:
        return self._call("delete", ids)  # type: ignore[no-any-return]

    def touch(self, ids: Sequence[str | int], ttl: float) -> int:
        return self._call("touch", ids, ttl)  # type: ignore[no-any-return]

    def get(self, ids: Sequence[str | int]) -> list[Item | None]:
        return self._call("get", ids)  # type: ignore[no-any-return]

    def count(self) -> int:
        return self._call("count")  # type: ignore[no-any-return]

    def search(
        self,
        vector: Any,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[Hit]:
        return self._call(  # type: ignore[no-any-return]
            "search", _rows(vector), k, filter=filter, ef=ef, include=include
        )

    def search_many(
        self,
        vectors: Any,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[list[Hit]]:
        return self._call(  # type: ignore[no-any-return]
            "search_many", _rows(vectors), k, filter=filter, ef=ef, include=include
        )

    def text_search(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[Hit]:
        return self._call(  # type: ignore[no-any-return]
            "text_search", query, k, filter=filter, include=include
        )

    def hybrid_search(
        self,
        text: str,
        vector: Any,
        k: int = 10,
        *,
        fusion: str = "rrf",
        alpha: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        candidates: int | None = None,
        ef: int | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[Hit]:
        return self._call(  # type: ignore[no-any-return]
            "hybrid_search",
            text,
            _rows(vector),
            k,
            fusion=fusion,
            alpha=alpha,
            filter=filter,
            candidates=candidates,
            ef=ef,
            include=include,
        )
