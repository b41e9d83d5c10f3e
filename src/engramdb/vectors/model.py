"""Public value types of the embedding store."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["DEFAULT_INCLUDE", "CollectionInfo", "Hit", "Item", "ItemPage"]

DEFAULT_INCLUDE = ("metadata", "text")  # what a hit carries unless asked otherwise

ItemId = str | int


class CollectionInfo(msgspec.Struct, frozen=True):
    """A collection's definition. ``uid`` tells a re-created collection from a dropped one.

    ``target_recall``: the recall@10 searches are calibrated to reach (None: always search
    with ``ef_search``); absent from definitions written before calibration existed, which
    read back as 0.95."""

    name: str
    dim: int
    metric: str
    text: bool
    m: int
    ef_construction: int
    ef_search: int
    exact_threshold: int
    uid: str
    created_at: float
    target_recall: float | None = 0.95


class Item(msgspec.Struct, frozen=True):
    """One stored item: its vector (float32, normalised for cosine), metadata and text.

    From ``Collection.scan``, parts left out of ``include`` are empty: ``vector`` and
    ``text`` None, ``metadata`` ``{}``."""

    id: ItemId
    vector: Any
    metadata: dict[str, Any]
    text: str | None
    generation: int
    expires_at: float | None


class ItemPage(msgspec.Struct, frozen=True):
    """A page of ``Collection.scan``: items in id order, and the cursor of the next page
    (None once the scan is complete)."""

    items: list[Item]
    cursor: str | None


class Hit(msgspec.Struct, frozen=True):
    """One search result, best first. ``score`` is higher-is-better: cosine similarity, inner
    product, negative squared L2 distance, BM25, or the fused score of a hybrid search, whose
    components are in ``scores`` (``vector``, ``text`` and their ranks)."""

    id: ItemId
    score: float
    metadata: dict[str, Any] | None = None
    text: str | None = None
    vector: Any = None
    scores: dict[str, float] | None = None
