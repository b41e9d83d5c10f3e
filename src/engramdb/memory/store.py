"""``db.memory``: long-term memory for agents — deduplicated, ranked, bi-temporal, fast.

A memory is an item of an embedding-store collection (``mem-<embedder>``): its text is the
content, its vector the content's embedding, its metadata the scope (``user_id``,
``agent_id``, ``run_id``), importance, and validity. Beside it, in the same atomic write:

- a *content key* (``_memory_keys``: scope + hash of the normalised content -> id), so the
  dedupe decision is a compare-and-set, not check-then-insert: fifty concurrent adds of the
  same fact from any mix of threads, processes and clients end as one memory;
- a *scope index* entry (``_memory_scopes``: scope + id) for listing a scope cheaply;
- a *history* entry (``_memory_history``: id + sequence) for every ADD, UPDATE,
  INVALIDATE and DELETE, with the text before and after.

A near-duplicate (cosine similarity >= ``dedupe_threshold`` with a memory of the same scope)
updates that memory instead of adding one; its old text stays in the history.

Ranking (``search``). Candidates are the top vector matches and, with ``hybrid``, the top
BM25 matches within the scope and validity window. Each gets four components in [0, 1]:

- ``semantic``: cosine similarity (negative similarity counts as 0);
- ``bm25``: its BM25 score divided by the best BM25 score among the candidates;
- ``recency``: ``0.5 ** (age / half_life)``, age since the memory last changed, by the
  database clock;
- ``importance``: as given when added (default 0.5).

``score = 0.6 semantic + 0.2 bm25 + 0.1 recency + 0.1 importance`` (weights configurable;
without ``hybrid`` the BM25 weight is 0). So between equally relevant memories the more
recent wins, and between equally relevant and recent ones the more important wins.

No LLM is involved anywhere: extraction of facts is the caller's business.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from engramdb.embedders import Embedder, HashEmbedder
from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.index.vector import VectorParams, as_float32, prepare
from engramdb.memory.model import Memory, MemoryEvent, MemoryHit, Weights
from engramdb.records.codec import check_value
from engramdb.records.writes import Current, Outcome, check_ttl, expiry_ms
from engramdb.remote import DEFAULT_CAP, remote
from engramdb.vectors.collection import items_of, write_steps

if TYPE_CHECKING:
    from engramdb.store import Store
    from engramdb.vectors.collection import Collection

__all__ = ["MemoryStore"]

KEYS = "_memory_keys"
# The graph's build effort, lower than a collection's default (200): every add inserts into
# the graph, and at 100k memories insertion at 200 took ~0.6 ms, most of an add. Searches
# are scoped (a user's memories: the exact path), so the graph serves only broad scopes,
# where ef_search, not ef_construction, buys back recall.
GRAPH_EF_CONSTRUCTION = 64
SCOPES = "_memory_scopes"
HISTORY = "_memory_history"
SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", " ", folded).strip()


class MemoryStore:
    """Long-term memory over one embedder (``db.memory``, or ``db.memory_with(embedder)``).

    Args:
        embedder: turns texts into unit vectors (``engramdb.embedders``).
        dedupe_threshold: cosine similarity at or above which a new memory updates an
            existing one of the same scope.
        half_life: seconds for recency to halve.
        weights: the ranking blend.
        candidates: how many vector (and BM25) matches are re-ranked.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None = None,
        *,
        dedupe_threshold: float = 0.92,
        half_life: float = 30 * 86_400,
        weights: Weights | None = None,
        candidates: int = 50,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.embedder: Embedder = embedder or HashEmbedder(256)
        self.dedupe_threshold = dedupe_threshold
        self.half_life = half_life
        self.weights = weights or Weights()
        self.candidates = candidates
        scheme = getattr(self.embedder, "scheme", None)
        label = name or (
            f"{type(self.embedder).__name__.lower()}{self.embedder.dim}"
            + (f"s{scheme}" if scheme is not None else "")
        )
        self._collection_name = f"mem-{label}"[:48]
        self._collection: Collection | None = None
        self._keys = store.records(KEYS)
        self._scopes = store.records(SCOPES)
        self._history = store.records(HISTORY)

    @property
    def collection(self) -> Collection:
        if self._collection is None:
            try:
                self._collection = self.store.vectors.get_collection(self._collection_name)
            except NotFound:
                self._collection = self.store.vectors.create_collection(
                    self._collection_name,
                    self.embedder.dim,
                    "cosine",
                    ef_construction=GRAPH_EF_CONSTRUCTION,
                    exist_ok=True,
                )
        return self._collection

    # helpers -----------------------------------------------------------------------------

    @staticmethod
    def _scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, str]:
        scope = {k: v for k, v in zip(SCOPE_FIELDS, (user_id, agent_id, run_id)) if v is not None}
        if not scope:
            raise InvalidArgument("a memory needs a scope: user_id, agent_id and/or run_id")
        for key, value in scope.items():
            if type(value) is not str or not value or "\x00" in value or len(value) > 200:
                raise InvalidArgument(f"{key} must be a non-empty str without NUL")
        return scope

    @staticmethod
    def _scope_key(scope: Mapping[str, str]) -> str:
        return "|".join(f"{k}={scope.get(k, '')}" for k in SCOPE_FIELDS)

    def _embed(self, content: str, embedding: Any) -> np.ndarray:
        # as_float32: InvalidArgument for anything but real numbers.
        vector = self.embedder.embed([content])[0] if embedding is None else as_float32(embedding)
        if np.shape(vector) != (self.embedder.dim,):
            raise InvalidArgument(
                f"the embedding must have dimension {self.embedder.dim}, got {np.shape(vector)}"
            )
        try:
            unit: np.ndarray = prepare(vector, VectorParams(self.embedder.dim))[0]
        except InvalidArgument as e:
            raise InvalidArgument(f"the embedding must be finite and non-zero: {e}") from None
        return unit

    def _memory(self, item: Any) -> Memory:
        m = item.metadata
        return Memory(
            id=item.id,
            content=item.text or "",
            user_id=m.get("user_id"),
            agent_id=m.get("agent_id"),
            run_id=m.get("run_id"),
            metadata=m.get("meta") or {},
            importance=m.get("importance", 0.5),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            valid_from=m["valid_from"],
            invalid_at=m.get("invalid_at"),
            expires_at=item.expires_at,
        )

    def _history_step(self, memory_id: str, version: int, event: Callable[[], MemoryEvent]) -> Any:
        """A history entry, keyed by the version the write makes (the item's generation,
        compare-and-set by the write), so entries list in the order the writes committed."""
        key = f"{memory_id}\x00{version:020d}"
        return self.store.step(
            self._history, [(key, lambda c, n: Outcome(None, msgspec.to_builtins(event()), 0))]
        )

    # writes ------------------------------------------------------------------------------

    @remote("slow", writes=True, wire={"embedding": "vectors"})
    def add(
        self,
        content: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        embedding: Any = None,
        ttl: float | None = None,
    ) -> dict[str, str]:
        """Remember ``content`` in its scope; returns ``{"id", "event"}`` with event ``ADD``,
        ``UPDATE`` (a near-duplicate was refreshed) or ``NOOP`` (an exact duplicate)."""
        if type(content) is not str or not content.strip():
            raise InvalidArgument("content must be a non-empty str")
        scope = self._scope(user_id, agent_id, run_id)
        if importance is not None and (
            type(importance) not in (int, float) or not 0 <= importance <= 1
        ):
            raise InvalidArgument("importance is a number from 0 to 1")
        meta = dict(metadata or {})
        check_value(meta, self.store.limits, "metadata")
        check_ttl(ttl)
        vector = self._embed(content, embedding)
        scope_key = self._scope_key(scope)
        content_key = f"{scope_key}\x00{hashlib.sha256(_normalise(content).encode()).hexdigest()}"
        collection = self.collection
        epoch_key = f"{scope_key}\x01epoch"
        for _ in range(64):  # retries only when a concurrent add moved the content key
            epoch = self._keys.get(epoch_key)
            epoch_step = self.store.step(
                self._keys, [(epoch_key, _claim(0 if epoch is None else epoch.generation))]
            )
            existing = self._keys.get(content_key)
            item = None if existing is None else collection.get([existing["id"]])[0]
            now = self.store.now()
            if (
                item is not None
                and item.metadata.get("content_key") == content_key
                and (item.metadata.get("invalid_at") is None or item.metadata["invalid_at"] > now)
            ):
                return {"id": str(item.id), "event": "NOOP"}
            near = self._near_duplicate(vector, scope)
            if near is not None:
                found = self.get(near)
                if found is not None and _normalise(found.content) == _normalise(content):
                    return {"id": near, "event": "NOOP"}  # the same fact, added meanwhile
                try:
                    self._update(
                        near,
                        content,
                        meta or None,
                        importance,
                        vector,
                        "UPDATE",
                        content_key,
                        extra=[epoch_step],
                    )
                except Conflict:
                    continue
                return {"id": near, "event": "UPDATE"}
            memory_id = secrets.token_hex(12)
            try:
                generation = None if existing is None else existing.generation
                self._insert(
                    memory_id,
                    content,
                    scope,
                    meta,
                    importance,
                    vector,
                    ttl,
                    content_key,
                    generation,
                    epoch_step,
                )
            except Conflict:
                continue  # someone else added (or replaced) this content meanwhile: look again
            return {"id": memory_id, "event": "ADD"}
        raise Conflict("add kept colliding with concurrent writers", 0)

    def _near_duplicate(self, vector: np.ndarray, scope: Mapping[str, str]) -> str | None:
        now = self.store.now()
        flt = self._filter(scope, now, None)
        flt["$and"].append({"scope": self._scope_key(scope)})
        hits = self.collection.search(vector, 1, filter=flt, include=[])
        if hits and hits[0].score >= self.dedupe_threshold:
            return str(hits[0].id)
        return None

    def _insert(
        self,
        memory_id: str,
        content: str,
        scope: dict[str, str],
        meta: dict[str, Any],
        importance: float | None,
        vector: np.ndarray,
        ttl: float | None,
        content_key: str,
        key_generation: int | None,
        epoch_step: Any,
    ) -> None:
        now = self.store.now()
        metadata = {
            **scope,
            "scope": self._scope_key(scope),
            "meta": meta,
            "importance": 0.5 if importance is None else float(importance),
            "created_at": now,
            "updated_at": now,
            "valid_from": now,
            "content_key": content_key,
            **_flat(meta),
        }
        bins = {"vector": vector, "metadata": metadata, "text": content}

        def claim(current: Current, now_ms: int) -> Outcome:
            if current.generation != (key_generation or 0):
                raise Conflict("the content key moved", current.generation)
            return Outcome(None, {"id": memory_id}, 0)

        items = self.store.step(
            items_of(self.collection),
            [(memory_id, lambda c, n: Outcome(None, bins, expiry_ms(ttl, n) if ttl else 0))],
        )
        write_steps(
            self.collection,
            [
                epoch_step,
                self.store.step(self._keys, [(content_key, claim)]),
                items,
                self.store.step(
                    self._scopes,
                    [
                        (
                            f"{self._scope_key(scope)}\x00{memory_id}",
                            lambda c, n: Outcome(None, {}, 0),
                        )
                    ],
                ),
                self._history_step(
                    memory_id, 1, lambda: MemoryEvent("ADD", content, None, now, meta or None)
                ),
            ],
        )

    @remote("slow", writes=True, wire={"embedding": "vectors"})
    def update(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        embedding: Any = None,
    ) -> Memory:
        """Change a memory's content (re-embedded), metadata or importance."""
        if content is not None and (type(content) is not str or not content.strip()):
            raise InvalidArgument("content must be a non-empty str")
        if importance is not None and (
            type(importance) not in (int, float) or not 0 <= importance <= 1
        ):
            raise InvalidArgument("importance is a number from 0 to 1")
        current = self.get(memory_id)
        if current is None:
            raise NotFound(f"no memory {memory_id!r}")
        text = current.content if content is None else content
        vector = (
            self._embed(text, embedding) if content is not None or embedding is not None else None
        )
        scope = {
            k: v
            for k, v in (
                ("user_id", current.user_id),
                ("agent_id", current.agent_id),
                ("run_id", current.run_id),
            )
            if v
        }
        new_key = (
            f"{self._scope_key(scope)}\x00{hashlib.sha256(_normalise(text).encode()).hexdigest()}"
        )
        for attempt in range(32):  # a concurrent change moved the version: redo on top of it
            try:
                self._update(
                    memory_id,
                    text,
                    None if metadata is None else dict(metadata),
                    importance,
                    vector,
                    "UPDATE",
                    new_key,
                )
                break
            except Conflict:
                if attempt == 31:
                    raise
        updated = self.get(memory_id)
        assert updated is not None
        return updated

    def _update(
        self,
        memory_id: str,
        content: str,
        meta: dict[str, Any] | None,
        importance: float | None,
        vector: np.ndarray | None,
        event: str,
        content_key: str | None,
        extra: Any = (),
    ) -> None:
        now = self.store.now()
        seen: dict[str, Any] = {}
        record = items_of(self.collection).get(memory_id)
        if record is None:
            raise NotFound(f"no memory {memory_id!r}")
        version = record.generation

        def change(current: Current, now_ms: int) -> Outcome:
            if current.bins is None:
                raise NotFound(f"no memory {memory_id!r}")
            if current.generation != version:
                raise Conflict("the memory changed meanwhile", current.generation)
            bins = dict(current.bins)
            metadata = dict(bins["metadata"])
            seen["previous"] = bins.get("text")
            seen["old_key"] = metadata.get("content_key")
            if meta is not None:
                metadata = {k: v for k, v in metadata.items() if not k.startswith("meta.")}
                metadata["meta"] = meta
                metadata.update(_flat(meta))
            if importance is not None:
                metadata["importance"] = float(importance)
            metadata["updated_at"] = now
            if content_key is not None:
                metadata["content_key"] = content_key
            bins["metadata"] = metadata
            bins["text"] = content
            if vector is not None:
                bins["vector"] = vector
            return Outcome(None, bins)

        steps = [*extra, self.store.step(items_of(self.collection), [(memory_id, change)])]
        if content_key is not None:
            steps.append(
                self.store.step(
                    self._keys, [(content_key, lambda c, n: Outcome(None, {"id": memory_id}, 0))]
                )
            )
        steps.append(
            self._history_step(
                memory_id,
                version + 1,
                lambda: MemoryEvent(event, content, seen.get("previous"), now, meta),
            )
        )
        write_steps(self.collection, steps)

    @remote("slow", writes=True)
    def invalidate(self, memory_id: str, *, at: float | None = None) -> Memory:
        """Mark the memory no longer true from ``at`` (default now): kept for history and
        "as of" searches before ``at``, excluded from searches after it."""
        when = self.store.now() if at is None else float(at)
        for attempt in range(32):  # a concurrent change moved the version: redo on top of it
            try:
                self._invalidate(memory_id, when)
                break
            except Conflict:
                if attempt == 31:
                    raise
        found = self.get(memory_id)
        assert found is not None
        return found

    def _invalidate(self, memory_id: str, when: float) -> None:
        record = items_of(self.collection).get(memory_id)
        if record is None:
            raise NotFound(f"no memory {memory_id!r}")
        version = record.generation

        def change(current: Current, now_ms: int) -> Outcome:
            if current.bins is None:
                raise NotFound(f"no memory {memory_id!r}")
            if current.generation != version:
                raise Conflict("the memory changed meanwhile", current.generation)
            bins = dict(current.bins)
            bins["metadata"] = {**bins["metadata"], "invalid_at": when}
            return Outcome(None, bins)

        write_steps(
            self.collection,
            [
                self.store.step(items_of(self.collection), [(memory_id, change)]),
                self._history_step(
                    memory_id,
                    version + 1,
                    lambda: MemoryEvent(
                        "INVALIDATE", None, None, self.store.now(), {"invalid_at": when}
                    ),
                ),
            ],
        )

    @remote("slow", writes=True)
    def delete(self, memory_id: str) -> bool:
        """Forget a memory (its history keeps a DELETE entry)."""
        current = self.get(memory_id)
        if current is None:
            return False
        item = items_of(self.collection).get(memory_id)
        content_key = item["metadata"].get("content_key") if item is not None else None
        scope = {
            k: v
            for k, v in (
                ("user_id", current.user_id),
                ("agent_id", current.agent_id),
                ("run_id", current.run_id),
            )
            if v
        }
        drop = lambda c, n: Outcome(c.bins is not None, None)  # noqa: E731
        steps = [self.store.step(items_of(self.collection), [(memory_id, drop)])]
        if content_key:
            steps.append(self.store.step(self._keys, [(content_key, _drop_if(memory_id))]))
        steps.append(
            self.store.step(self._scopes, [(f"{self._scope_key(scope)}\x00{memory_id}", drop)])
        )
        assert item is not None
        steps.append(
            self._history_step(
                memory_id,
                item.generation + 1,
                lambda: MemoryEvent("DELETE", None, current.content, self.store.now()),
            )
        )
        removed = bool(write_steps(self.collection, steps)[0][0])
        return removed

    @remote("slow", writes=True)
    def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """Forget every memory of a scope; returns how many."""
        scope = self._scope(user_id, agent_id, run_id)
        removed = 0
        for memory in list(self._iterate(scope)):
            removed += self.delete(memory.id)
        return removed

    # reads -------------------------------------------------------------------------------

    @remote("read")
    def get(self, memory_id: str) -> Memory | None:
        """The memory, or None when it does not exist (or has expired)."""
        if type(memory_id) is not str:
            raise InvalidArgument("memory ids are str")
        item = self.collection.get([memory_id])[0]
        return None if item is None else self._memory(item)

    @remote("read")
    def history(self, memory_id: str) -> list[MemoryEvent]:
        """Every version of the memory, oldest first."""
        return [
            msgspec.convert(r.bins, MemoryEvent) for r in self._history.iterate(f"{memory_id}\x00")
        ]

    def _iterate(self, scope: Mapping[str, str]) -> Any:
        prefix = f"{self._scope_key(scope)}\x00"
        for entry in self._scopes.iterate(prefix):
            memory = self.get(str(entry.key).split("\x00", 1)[1])
            if memory is not None:
                yield memory

    @remote("read", caps={"limit": DEFAULT_CAP})
    def list(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[builtins.list[Memory], str | None]:
        """A page of a scope's memories and the cursor of the next (None at the end)."""
        scope = self._scope(user_id, agent_id, run_id)
        page = self._scopes.scan(f"{self._scope_key(scope)}\x00", cursor=cursor, limit=limit)
        ids = [str(r.key).split("\x00", 1)[1] for r in page.records]
        items = self.collection.get(ids) if ids else []
        return [self._memory(i) for i in items if i is not None], page.cursor

    @staticmethod
    def _filter(
        scope: Mapping[str, str], at: float, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Scope, validity at ``at``, and the caller's filter over its own metadata."""
        clauses: list[Any] = [{k: v} for k, v in scope.items()]
        clauses.append({"valid_from": {"$lte": at}})
        clauses.append(
            {"$or": [{"invalid_at": {"$gt": at}}, {"$not": {"invalid_at": {"$gte": 0}}}]}
        )
        if extra:
            clauses.append(_rewrite(extra))
        return {"$and": clauses}

    @remote("slow", caps={"k": DEFAULT_CAP}, wire={"embedding": "vectors"})
    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        hybrid: bool = True,
        as_of: float | None = None,
        embedding: Any = None,
        all_scopes: bool = False,
    ) -> builtins.list[MemoryHit]:
        """Memories of the scope most relevant to ``query``, best first (see the ranking in
        the module docs). ``as_of``: judge validity at that time instead of now.
        ``all_scopes`` searches every scope (only when asked)."""
        if type(query) is not str or not query.strip():
            raise InvalidArgument("query must be a non-empty str")
        scope = {} if all_scopes else self._scope(user_id, agent_id, run_id)
        if filter is not None and not isinstance(filter, Mapping):
            raise InvalidArgument("filter must be a mapping")
        now = self.store.now()
        at = now if as_of is None else float(as_of)
        vector = self._embed(query, embedding)
        flt = self._filter(scope, at, filter)
        depth = max(self.candidates, k)
        collection = self.collection
        by_vector = collection.search(vector, depth, filter=flt, include=[])
        by_text = collection.text_search(query, depth, filter=flt, include=[]) if hybrid else []
        semantic = {h.id: max(0.0, h.score) for h in by_vector}
        best_text = max((h.score for h in by_text), default=0.0)
        lexical = {h.id: (h.score / best_text if best_text > 0 else 0.0) for h in by_text}
        ids = list(dict.fromkeys([*semantic, *lexical]))
        items = collection.get(ids) if ids else []
        w = self.weights
        hits: list[MemoryHit] = []
        for item in items:
            if item is None:
                continue
            memory = self._memory(item)
            sem = semantic.get(memory.id)
            if sem is None:  # a BM25-only candidate: score its meaning too
                sem = max(0.0, float(np.dot(np.asarray(item.vector, dtype=np.float32), vector)))
            recency = 0.5 ** (max(0.0, now - memory.updated_at) / self.half_life)
            parts = {
                "semantic": sem,
                "bm25": lexical.get(memory.id, 0.0),
                "recency": recency,
                "importance": memory.importance,
            }
            score = (
                w.semantic * parts["semantic"]
                + (w.bm25 * parts["bm25"] if hybrid else 0.0)
                + w.recency * parts["recency"]
                + w.importance * parts["importance"]
            )
            hits.append(MemoryHit(memory, score, parts))
        hits.sort(key=lambda h: (-h.score, h.memory.id))
        return hits[:k]

    def _close(self) -> None:
        pass

    def _stats(self) -> dict[str, Any]:
        return {"memories": self.collection.count()}


def _flat(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's scalar metadata, as filterable top-level fields ``meta.<name>``."""
    return {f"meta.{k}": v for k, v in meta.items() if type(v) in (str, int, float, bool)}


def _rewrite(spec: Any) -> Any:
    """A filter over the caller's metadata names, aimed at the ``meta.<name>`` fields."""
    if isinstance(spec, Mapping):
        out = {}
        for key, value in spec.items():
            if key in ("$and", "$or") and isinstance(value, list):
                out[key] = [_rewrite(v) for v in value]
            elif key == "$not":
                out[key] = _rewrite(value)
            elif isinstance(key, str) and key.startswith("$"):
                out[key] = value
            else:
                out[f"meta.{key}"] = value
        return out
    return spec


def _drop_if(memory_id: str) -> Any:
    def drop(current: Current, now_ms: int) -> Outcome:
        if current.bins is not None and current.bins.get("id") == memory_id:
            return Outcome(None, None)
        return Outcome(None)

    return drop


def _claim(generation: int) -> Any:
    def claim(current: Current, now_ms: int) -> Outcome:
        if current.generation != generation:
            raise Conflict("the scope moved", current.generation)
        return Outcome(None, {}, 0)

    return claim
