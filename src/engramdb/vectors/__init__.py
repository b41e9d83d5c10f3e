"""The embedding store: vector, keyword (BM25) and hybrid retrieval over collections."""

from engramdb.vectors.collection import Collection
from engramdb.vectors.model import CollectionInfo, Hit, Item
from engramdb.vectors.store import VectorStore

__all__ = ["Collection", "CollectionInfo", "Hit", "Item", "VectorStore"]
