"""``db.vectors``: the collections of the embedding store.

A collection's definition is a record of the set ``_collections``; its items are records of
``vec.<name>``. Collections need no server-side setup and are visible to every process and
client as soon as ``create_collection`` returns.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.index.vector import VectorParams
from engramdb.records.writes import Current, Outcome
from engramdb.remote import remote
from engramdb.vectors.collection import Collection
from engramdb.vectors.model import CollectionInfo
from engramdb.vectors.state import CollectionState

if TYPE_CHECKING:
    from engramdb.database import Database

__all__ = ["VectorStore"]

REGISTRY = "_collections"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")


class VectorStore:
    """Create, open, list and drop collections. One per ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._registry = db._internal_records(REGISTRY)
        self._states: dict[str, CollectionState] = {}
        self._lock = threading.Lock()

    @staticmethod
    def set_of(name: str) -> str:
        return f"vec.{name}"

    @staticmethod
    def _check_name(name: object) -> str:
        if type(name) is not str or not _NAME.fullmatch(name):
            raise InvalidArgument(
                "a collection name is 1-48 letters, digits, '_', '.' or '-', starting with a "
                f"letter or digit; not {name!r}"
            )
        return name

    @remote("slow", writes=True)
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
    ) -> Collection:
        """Create a collection of ``dim``-dimensional vectors compared by ``metric``
        (``cosine``, ``ip`` or ``l2``), with a BM25 index over item texts when ``text``.

        Raises ``Conflict`` if it exists (unless ``exist_ok`` and the definition matches).
        """
        self._check_name(name)
        params = VectorParams(dim, metric, m, ef_construction, ef_search, exact_threshold)
        params.check(self.db.limits.max_vector_dim)
        if type(text) is not bool:
            raise InvalidArgument("text must be a bool")
        info = CollectionInfo(
            name=name,
            dim=dim,
            metric=metric,
            text=text,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            exact_threshold=exact_threshold,
            uid=secrets.token_hex(8),
            created_at=self.db._clock(),
        )
        try:
            self._registry.put(name, msgspec.structs.asdict(info), create_only=True)
        except Conflict:
            existing = self._info(name)
            same = msgspec.structs.replace(existing, uid=info.uid, created_at=info.created_at)
            if exist_ok and same == info:
                return Collection(self, existing)
            raise
        return Collection(self, info)

    @remote("read")
    def get_collection(self, name: str) -> Collection:
        """The collection ``name``; ``NotFound`` if there is none."""
        return Collection(self, self._info(self._check_name(name)))

    @remote("read")
    def list_collections(self) -> list[CollectionInfo]:
        return [self._decode(r.bins) for r in self._registry.iterate()]

    @remote("slow", writes=True)
    def drop_collection(self, name: str) -> bool:
        """Delete the collection and all its items. Returns whether it existed."""
        self._check_name(name)
        record = self._registry.get(name)
        if record is None:
            return False
        self._registry.delete(name, expect_generation=record.generation)
        items = self.db._internal_records(self.set_of(name))

        def remove(current: Current, now: int) -> Outcome:
            return Outcome(None, None)

        while True:
            page = items.scan(limit=1000)
            if not page.records:
                break
            items.transform_many([(r.key, remove) for r in page.records])
        info = self._decode(record.bins)
        with self._lock:
            state = self._states.pop(info.uid, None)
        if state is not None:
            state.dropped = True
            state.remove_files()
        return True

    # internals ---------------------------------------------------------------------------

    @staticmethod
    def _decode(bins: dict[str, Any]) -> CollectionInfo:
        return msgspec.convert(bins, CollectionInfo)

    def _info(self, name: str) -> CollectionInfo:
        record = self._registry.get(name)
        if record is None:
            raise NotFound(f"no collection named {name!r}")
        return self._decode(record.bins)

    def check_alive(self, info: CollectionInfo) -> None:
        """``NotFound`` when the collection was dropped (here or in another process)."""
        record = self._registry.get(info.name)
        if record is None or record.bins.get("uid") != info.uid:
            raise NotFound(f"collection {info.name!r} was dropped")

    def state_of(self, info: CollectionInfo) -> CollectionState:
        self.check_alive(info)
        state = self._states.get(info.uid)
        if state is None:
            with self._lock:
                state = self._states.get(info.uid)
                if state is None:
                    state = CollectionState(self.db, info, self.set_of(info.name))
                    state.open()
                    self._states[info.uid] = state
        return state

    def close(self) -> None:
        with self._lock:
            states = list(self._states.values())
        for state in states:
            state.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            states = list(self._states.values())
        return {state.info.name: state.stats() for state in states}
