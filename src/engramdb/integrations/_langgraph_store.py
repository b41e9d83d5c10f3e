"""``EngramStore``: LangGraph's ``BaseStore`` (long-term memory) on engramdb.

Items live in the set ``<prefix>.store`` under ``ns\\0key``, where ``ns`` joins the
namespace's labels with ``\\x01``. Both separators sort below every other character, so
key order is namespace-tuple order, a namespace's items and its sub-namespaces' are one
contiguous key range (``ns\\0`` .. ``ns\\x02``), and ``list_namespaces`` skips from one
namespace to the next with one bounded read each instead of reading every item.

With ``index=`` (LangGraph's ``IndexConfig``), the texts at the configured paths are
embedded and kept in the collection ``<prefix>.store`` (one vector per text, id
``ns\\0key\\0path``); a search with a ``query`` ranks by cosine similarity in the native
index, restricted to the namespace prefix there, then applies the value filter.

TTLs are LangGraph's (minutes, refreshed on read unless ``refresh_on_read`` is False);
expired items are invisible at once, to reads, searches and namespace listings alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)

from engramdb.integrations._flow import (
    COLLECTION,
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

__all__ = ["EngramStore"]

_MAX_K = 10_000


def _ns_text(namespace: tuple[str, ...]) -> str:
    for label in namespace:
        if not isinstance(label, str) or "\0" in label or "\x01" in label:
            raise InvalidNamespaceError(
                f"namespace labels are strings without NUL or \\x01 characters: {namespace!r}"
            )
    return "\x01".join(namespace)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _matches(value: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics: nested maps match field by field, lists exactly,
    ``{"$op": x}`` compares (``$eq $ne $gt $gte $lt $lte``)."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_compare(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_matches(a, b) for a, b in zip(value, wanted))
        )
    return bool(value == wanted)


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(value == operand)
    if op == "$ne":
        return bool(value != operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        try:
            a, b = float(value), float(operand)
        except (TypeError, ValueError):
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    raise ValueError(f"unsupported filter operator: {op}")


def _admits(value: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    return not filter or all(_matches(value.get(k), v) for k, v in filter.items())


def _namespace_matches(condition: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = condition.path
    if len(ns) < len(path):
        return False
    pairs = zip(ns, path) if condition.match_type == "prefix" else zip(reversed(ns), reversed(path))
    return all(p == "*" or n == p for n, p in pairs)


class EngramStore(BaseStore):
    """LangGraph's long-term memory store on engramdb: namespaces, TTL, semantic search.

    Args:
        db: an embedded database, a client, or an asyncio face of either.
        index: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``) to enable
            semantic search; None: filters only.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``).
        prefix: the items go to the set ``<prefix>.store`` and, with ``index``, the
            collection ``<prefix>.store``.

    Results of a search without a query, and namespace listings, come in key order
    (namespace, then key).
    """

    supports_ttl = True

    def __init__(
        self,
        db: Any,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str = "lg",
    ) -> None:
        self._faces = Faces(db)
        self.db = db
        self.ttl_config = ttl
        self.items = f"{prefix}.store"
        self.collection_name = f"{prefix}.store"
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        self._fields = [
            (path, "$" if path == "$" else tokenize_path(path))
            for path in ((index or {}).get("fields") or ["$"])
        ]
        self._collections: dict[int, Any] = {}

    def close(self) -> None:
        """Release what the store opened itself (never the database it was given)."""
        self._faces.close()

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run Get/Put/Search/ListNamespaces operations; results in the order given."""
        return self._faces.run(self._batch(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async ``batch``."""
        return await self._faces.arun(self._batch(list(ops)))

    # the flows ---------------------------------------------------------------------------

    def _batch(self, ops: list[Op]) -> Flow[list[Result]]:
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        gets: list[tuple[int, GetOp]] = []
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                gets.append((i, op))
            elif isinstance(op, SearchOp):
                results[i] = yield from self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._list_namespaces(op)
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op  # the last one for a key wins
            else:
                raise ValueError(f"unknown operation {type(op).__name__}")
        if gets:
            keys = [f"{_ns_text(op.namespace)}\0{op.key}" for _, op in gets]
            records = yield on(self.items, "get_many", keys)
            refresh = []
            for (i, op), record in zip(gets, records):
                if record is not None:
                    results[i] = self._item(record, op.namespace, op.key)
                    if op.refresh_ttl:
                        refresh.append(record)
            yield from self._refresh(refresh)
        if puts:
            yield from self._put(list(puts.values()))
        return results

    def _item(self, record: Any, namespace: tuple[str, ...], key: str) -> Item:
        bins = record.bins
        return Item(
            value=bins["value"],
            key=key,
            namespace=namespace,
            created_at=_when(bins["c"]),
            updated_at=_when(bins["u"]),
        )

    def _hit(self, record: Any, score: float | None) -> SearchItem:
        ns_text, key = record.key.split("\0", 1)
        bins = record.bins
        return SearchItem(
            namespace=tuple(ns_text.split("\x01")),
            key=key,
            value=bins["value"],
            created_at=_when(bins["c"]),
            updated_at=_when(bins["u"]),
            score=score,
        )

    def _refresh(self, records: list[Any]) -> Flow[None]:
        """Restart the TTL of items just read (those stored with one)."""
        if self.ttl_config is not None and not self.ttl_config.get("refresh_on_read", True):
            return
        timed = [r for r in records if r.bins.get("ttl")]
        if not timed:
            return
        yield commit([(self.items, "touch", (r.key, r.bins["ttl"] * 60.0), {}) for r in timed])
        vids = [(v, r.bins["ttl"] * 60.0) for r in timed for v in r.bins.get("vids") or ()]
        if vids and self.index_config:
            coll = yield self._collection
            for ttl in {t for _, t in vids}:
                ids = [v for v, t in vids if t == ttl]
                yield call(coll, "touch", ids, ttl)

    def _collection(self, f: Face) -> Any:
        """This face's handle on the store's collection, created on first use."""
        found = self._collections.get(id(f.db))
        if found is not None:
            return found
        assert self.index_config is not None
        dims = int(self.index_config["dims"])  # type: ignore[call-overload]
        made = f.db.vectors.create_collection(
            self.collection_name, dims, "cosine", text=False, exist_ok=True
        )
        if not f.is_async:
            self._collections[id(f.db)] = made
            return made

        async def keep() -> Any:
            handle = await made
            self._collections[id(f.db)] = handle
            return handle

        return keep()

    def _texts(self, op: PutOp) -> list[tuple[str, str]]:
        """(path, text) pairs to embed for a put, per the store's or the op's fields."""
        if op.value is None or op.index is False or not self.index_config:
            return []
        paths = (
            self._fields
            if op.index is None
            else [(p, "$" if p == "$" else tokenize_path(p)) for p in op.index]
        )
        out: list[tuple[str, str]] = []
        for path, tokens in paths:
            texts = get_text_at_path(op.value, tokens)
            if len(texts) > 1:
                out.extend((f"{path}.{i}", text) for i, text in enumerate(texts))
            elif texts:
                out.append((path, texts[0]))
        return out

    def _put(self, ops: list[PutOp]) -> Flow[None]:
        keys = [f"{_ns_text(op.namespace)}\0{op.key}" for op in ops]
        old = yield on(self.items, "get_many", keys)
        now = time.time()
        texts = {key: self._texts(op) for key, op in zip(keys, ops)}
        flat = [text for pairs in texts.values() for _, text in pairs]
        vectors: list[Any] = []
        if flat:
            embeddings = self.embeddings
            assert embeddings is not None
            vectors = yield embed_documents(embeddings, flat)
        staged: list[Write] = []
        upserts: dict[float | None, list[tuple[str, Any, dict[str, Any]]]] = {}
        stale: list[str] = []
        position = 0
        for key, op, before in zip(keys, ops, old):
            previous = set(before.bins.get("vids") or ()) if before is not None else set()
            if op.value is None:
                stale.extend(previous)
                staged.append((self.items, "delete", (key,), {}))
                continue
            ttl = None if op.ttl is None else float(op.ttl) * 60.0
            vids = []
            for path, _ in texts[key]:
                vid = f"{key}\0{path}"
                vids.append(vid)
                upserts.setdefault(ttl, []).append(
                    (vid, vectors[position], {"ns": key.split("\0", 1)[0]})
                )
                position += 1
            stale.extend(previous - set(vids))
            bins = {
                "value": dict(op.value),
                "c": before.bins["c"] if before is not None else now,
                "u": now,
                "ttl": op.ttl,
                "vids": vids,
            }
            staged.append((self.items, "put", (key, bins), {"ttl": ttl}))
        if upserts or stale:
            yield self._collection  # created on first use
            # The vectors commit with their items: one transaction, all or nothing.
            target = COLLECTION + self.collection_name
            for ttl, rows in upserts.items():
                args = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
                staged.append((target, "upsert", args, {} if ttl is None else {"ttl": ttl}))
            if stale:
                staged.append((target, "delete", (sorted(stale),), {}))
        yield commit(staged)

    def _search(self, op: SearchOp) -> Flow[list[SearchItem]]:
        ns = _ns_text(op.namespace_prefix)
        start, end = (f"{ns}\0", f"{ns}\x02") if op.namespace_prefix else (None, None)
        if op.query and self.embeddings is not None:
            found = yield from self._ranked(op, ns)
        else:
            found = []
            skip = op.offset
            cursor: str | None = None
            while len(found) < op.limit:
                page = yield on(
                    self.items,
                    "scan",
                    start=start,
                    end=end,
                    cursor=cursor,
                    limit=max(op.limit, 100),
                )
                for record in page.records:
                    if not _admits(record.bins["value"], op.filter):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    found.append((record, None))
                    if len(found) == op.limit:
                        break
                if page.cursor is None:
                    break
                cursor = page.cursor
        if op.refresh_ttl:
            yield from self._refresh([r for r, _ in found])
        return [self._hit(record, score) for record, score in found]

    def _ranked(self, op: SearchOp, ns: str) -> Flow[list[tuple[Any, float | None]]]:
        embeddings = self.embeddings
        assert embeddings is not None
        query = op.query
        assert query is not None
        vector = yield embed_query(embeddings, query)
        coll = yield self._collection
        where = (
            {"$or": [{"ns": ns}, {"ns": {"$prefix": ns + "\x01"}}]} if op.namespace_prefix else None
        )
        wanted = op.offset + op.limit
        k = min(_MAX_K, max(wanted * (4 if op.filter else 2), 10))
        while True:
            hits = yield call(coll, "search", vector, k, filter=where, include=())
            best: dict[str, float] = {}
            for hit in hits:  # best first: an item's first vector is its best
                best.setdefault(str(hit.id).rsplit("\0", 1)[0], hit.score)
            keys = list(best)
            records = yield on(self.items, "get_many", keys)
            ranked: list[tuple[Any, float | None]] = [
                (r, best[r.key])
                for r in records
                if r is not None and _admits(r.bins["value"], op.filter)
            ]
            if len(ranked) >= wanted or len(hits) < k or k >= _MAX_K:
                break
            k = min(_MAX_K, k * 4)
        ranked = ranked[op.offset : wanted]
        if len(ranked) < op.limit:
            # Items with nothing to embed (index=False, no text at the paths) still match:
            # after the ranked ones, without a score, as LangGraph's own stores do.
            start, end = (f"{ns}\0", f"{ns}\x02") if op.namespace_prefix else (None, None)
            cursor: str | None = None
            while len(ranked) < op.limit:
                page = yield on(self.items, "scan", start=start, end=end, cursor=cursor, limit=100)
                for record in page.records:
                    if record.bins.get("vids") or not _admits(record.bins["value"], op.filter):
                        continue
                    ranked.append((record, None))
                    if len(ranked) == op.limit:
                        break
                if page.cursor is None:
                    break
                cursor = page.cursor
        return ranked

    def _list_namespaces(self, op: ListNamespacesOp) -> Flow[list[tuple[str, ...]]]:
        conditions = op.match_conditions or ()
        fixed: list[str] = []  # the leading labels every match starts with: a key range
        for condition in conditions:
            if condition.match_type == "prefix":
                for label in condition.path:
                    if label == "*":
                        break
                    fixed.append(label)
                break
        base = _ns_text(tuple(fixed))
        cursor: str | None = f"{base}\0" if fixed else None
        end = f"{base}\x02" if fixed else None
        depth = op.max_depth
        out: list[tuple[str, ...]] = []
        wanted = op.offset + op.limit
        while len(out) < wanted:
            page = yield on(self.items, "scan", start=cursor, end=end, limit=1)
            if not page.records:
                break
            ns_text = page.records[0].key.split("\0", 1)[0]
            namespace = tuple(ns_text.split("\x01"))
            if all(_namespace_matches(c, namespace) for c in conditions):
                shown = namespace if depth is None else namespace[:depth]
                if not out or out[-1] != shown:
                    out.append(shown)
            if depth is not None and len(namespace) >= depth:
                cursor = "\x01".join(namespace[:depth]) + "\x02"  # past its whole subtree
            else:
                cursor = ns_text + "\x01"  # past its own items, into its children
        return out[op.offset : wanted]
