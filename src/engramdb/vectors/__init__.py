"""The embedding store: vector, keyword (BM25) and hybrid retrieval over collections.

The value types load eagerly; the store itself (numpy, faiss, tantivy) only when used.
"""

from typing import TYPE_CHECKING, Any

from engramdb.vectors.model import CollectionInfo, Hit, Item, ItemPage

if TYPE_CHECKING:
    from engramdb.vectors.collection import Collection
    from engramdb.vectors.store import VectorStore

__all__ = ["Collection", "CollectionInfo", "Hit", "Item", "ItemPage", "VectorStore"]


def __getattr__(name: str) -> Any:
    if name == "Collection":
        from engramdb.vectors.collection import Collection

        return Collection
    if name == "VectorStore":
        from engramdb.vectors.store import VectorStore

        return VectorStore
    raise AttributeError(name)
