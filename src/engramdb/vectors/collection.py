"""``Collection``: upsert, get, delete and search the items of one collection."""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from engramdb._progress import progress_bar
from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.index import fusion as fusers
from engramdb.index.filters import Filter, compile_filter
from engramdb.index.vector import prepare, prepare_one
from engramdb.records.codec import check_value, decode_own, encode_value
from engramdb.records.keys import Key, encode_key
from engramdb.records.model import Record
from engramdb.records.writes import KEEP, Current, Outcome, check_ttl, expiry_ms
from engramdb.remote import DEFAULT_CAP, remote
from engramdb.vectors.model import DEFAULT_INCLUDE, CollectionInfo, Hit, Item, ItemPage
from engramdb.vectors.state import METADATA, TEXT, VECTOR, CollectionState, params_of
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.recordset import RecordSet

if TYPE_CHECKING:
    from engramdb.vectors.store import VectorStore

__all__ = ["Collection"]

log = logging.getLogger("engramdb.vectors")

CHUNK = 1000  # items per atomic write
MAX_K = 10_000
# A filtered text search names the admissible documents to tantivy when there are at most
# _TEXT_WITHIN of them, or fewer than _TEXT_WITHIN_SHARE of the collection (up to
# _TEXT_WITHIN_MAX); otherwise it searches deeper until k of its hits pass the filter.
_TEXT_WITHIN = 4096
_TEXT_WITHIN_SHARE = 0.05
_TEXT_WITHIN_MAX = 50_000
INCLUDE = frozenset({"metadata", "text", "vector"})
# A filtered scan walks the records themselves (testing each) when more than this share of
# the live items match: a page then reads at most a few times ``limit`` records. Below it,
# the index names the matches, and only those are read.
_SCAN_BY_RECORDS = 0.25
_STALLS = 3  # pages in a row that delete nothing before delete_where stops looking


def _check_k(k: int) -> None:
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be an int from 1 to {MAX_K}, not {k!r}")


def _check_single(vector: Any, method: str) -> None:
    try:
        several = np.ndim(vector) != 1
    except (TypeError, ValueError):
        return  # not numbers at all: prepare() says what is wrong
    if several:
        raise InvalidArgument(f"{method} takes one vector, got shape {np.shape(vector)}")


def _check_ef(ef: int | None) -> None:
    if ef is not None and (type(ef) is not int or not 1 <= ef <= 65_536):
        raise InvalidArgument(f"ef must be an int from 1 to 65536, not {ef!r}")


_DEFAULT_CHOSEN = frozenset(DEFAULT_INCLUDE)


def _check_include(include: Sequence[str]) -> frozenset[str]:
    if include is DEFAULT_INCLUDE:
        return _DEFAULT_CHOSEN
    if isinstance(include, str):
        raise InvalidArgument(f"include takes a list of names, not the str {include!r}")
    try:
        chosen = frozenset(include)
    except TypeError:
        raise InvalidArgument(f"include takes a list of names, not {include!r:.100}") from None
    if not chosen <= INCLUDE:
        raise InvalidArgument(f"include takes {sorted(INCLUDE)}, not {sorted(chosen - INCLUDE)}")
    return chosen


class Collection:
    """One collection of the embedding store; obtain with ``db.vectors.get_collection``."""

    def __init__(self, store: VectorStore, info: CollectionInfo, items: str) -> None:
        self._store = store
        self.info = info
        self.name = info.name
        self.params = params_of(info)
        self.set_name = items  # the (reserved) record set holding this incarnation's items
        self._records = store.store.records(items)
        self._checked: CollectionState | None = None  # see _ready

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} dim={self.info.dim} metric={self.info.metric}>"

    def _state(self) -> CollectionState:
        return self._store._state_of(self.info, self.set_name)

    def _write_steps(self, steps: Sequence[TransformStep]) -> list[list[Any]]:
        """Commit ``steps`` (over this collection's items, and other sets) as one write, and
        index it. The write fails, writing nothing, with ``NotFound`` when the collection
        was dropped, here or in another process: it checks the definition in its own
        transaction, so no item ever lands in a dropped incarnation."""
        results = self._store.store.write([self._alive_step(), *steps])[1:]
        self._index_writes()
        return results

    def _index_writes(self) -> None:
        """Bring this process's index up to the writes just committed. They stand whatever
        happens here, so nothing is raised: a failure is logged, and the next search
        catches up again (and reports it)."""
        try:
            self._state().catch_up()
        except NotFound:
            pass  # dropped since: there is nothing left to index
        except Exception:
            log.exception("indexing collection %r after a committed write failed", self.name)

    # writes ------------------------------------------------------------------------------

    @remote("slow", writes=True, wire={"vectors": "vectors"})
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
        """Insert or replace items; returns each item's new generation.

        ``vectors`` is (n, dim) (numpy or lists). Everything is validated before anything is
        written; up to 1,000 items are written atomically, larger batches in atomic chunks
        of 1,000. ``expect_generation[i]`` makes item i a compare-and-set (0: must not
        exist); a failed one raises ``Conflict`` and its chunk is not written.

        An id given more than once is written once, with its last occurrence (as a dict
        update would); every position of that id gets the generation written. A repeated
        id cannot carry ``expect_generation`` (which occurrence would it check?).
        """
        keys, items = self._upsert_items(ids, vectors, metadata, texts, ttl, expect_generation)
        written: dict[Key, int] = {}
        with progress_bar(f"upserting into {self.name}", len(items)) as advance:
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                step = self._store.store.step(self._records, chunk, result="generation")
                generations = self._write_steps([step])[0]
                written.update(zip((key for key, _ in chunk), generations))
                advance(len(chunk))
        return [written[key] for key in keys]

    def _upsert_items(
        self,
        ids: Sequence[str | int],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None,
        texts: Sequence[str | None] | None,
        ttl: float | None,
        expect_generation: Sequence[int | None] | None,
    ) -> tuple[list[Key], list[tuple[Key, Any]]]:
        """Validate an upsert: its ids, and one write per distinct id (the last occurrence
        wins), in order. Raises before anything is written."""
        keys: list[Key] = list(self._check_ids(ids, unique=False))
        n = len(keys)
        prepared = prepare(vectors, self.params) if n else np.zeros((0, self.info.dim))
        if len(prepared) != n:
            raise InvalidArgument(f"got {n} ids but {len(prepared)} vectors")
        metas = self._check_column("metadata", metadata, n)
        docs = self._check_column("texts", texts, n)
        for i, meta in enumerate(metas):
            if meta is not None:
                if not isinstance(meta, Mapping) or not all(type(k) is str for k in meta):
                    raise InvalidArgument(f"metadata[{i}] must be a mapping with str keys")
                check_value(dict(meta), self._store.store.limits, f"metadata[{i}]")
        for i, doc in enumerate(docs):
            if doc is not None and type(doc) is not str:
                raise InvalidArgument(f"texts[{i}] must be a str or None")
        expected = self._check_column("expect_generation", expect_generation, n)
        for i, gen in enumerate(expected):
            if gen is not None and (type(gen) is not int or gen < 0):
                raise InvalidArgument(f"expect_generation[{i}] must be a non-negative int")
        check_ttl(ttl)
        last = {key: i for i, key in enumerate(keys)}  # each id's winning position
        if len(last) == n:
            order: Sequence[int] = range(n)
        else:
            seen = Counter(keys)
            for i, gen in enumerate(expected):
                if gen is not None and seen[keys[i]] > 1:
                    raise InvalidArgument(
                        f"id {keys[i]!r} appears more than once with expect_generation; a "
                        "compare-and-set names each id once"
                    )
            order = sorted(last.values())
        items = [
            (keys[i], self._writer(prepared[i], metas[i], docs[i], ttl, expected[i])) for i in order
        ]
        return keys, items

    def _alive_step(self) -> TransformStep:
        """A step that fails the write with ``NotFound`` if this collection was dropped."""
        info = self.info

        def alive(current: Current, now: int) -> Outcome:
            if current.bins is None or current.bins.get("uid") != info.uid:
                raise NotFound(f"collection {info.name!r} was dropped")
            return Outcome(None)  # nothing to write

        roles = self._store.store
        return roles.step(self._store._registry, [(info.name, alive)])

    @staticmethod
    def _writer(
        vector: np.ndarray,
        metadata: Mapping[str, Any] | None,
        text: str | None,
        ttl: float | None,
        expected: int | None,
    ) -> Any:
        bins: dict[str, Any] = {VECTOR: vector, METADATA: dict(metadata or {})}
        if text is not None:
            bins[TEXT] = text

        def write(current: Current, now: int) -> Outcome:
            if expected is not None and current.generation != expected:
                raise Conflict(
                    f"expected generation {expected}, item is at {current.generation}",
                    current.generation,
                )
            return Outcome(None, bins, expiry_ms(ttl, now) if ttl is not None else 0)

        return write

    @remote("slow", writes=True)
    def delete(self, ids: Sequence[str | int]) -> int:
        """Delete items; returns how many existed (an id given twice counts once)."""
        ids = list(dict.fromkeys(self._check_ids(ids, unique=False)))

        def remove(current: Current, now: int) -> Outcome:
            return Outcome(current.bins is not None, None)

        removed = 0
        for start in range(0, len(ids), CHUNK):
            step = self._store.store.step(
                self._records, [(i, remove) for i in ids[start : start + CHUNK]]
            )
            removed += sum(self._write_steps([step])[0])
        return removed

    @remote("slow", writes=True)
    def touch(self, ids: Sequence[str | int], ttl: float) -> int:
        """Set items to expire ``ttl`` seconds from now; returns how many exist (an id given
        twice counts once)."""
        ids = list(dict.fromkeys(self._check_ids(ids, unique=False)))
        if ttl is None:
            raise InvalidArgument("touch needs a ttl")
        check_ttl(ttl)

        def refresh(current: Current, now: int) -> Outcome:
            if current.bins is None:
                return Outcome(False)
            return Outcome(True, KEEP, expiry_ms(ttl, now))

        (results,) = self._write_steps(
            [self._store.store.step(self._records, [(i, refresh) for i in ids])]
        )
        return int(sum(results))

    @remote("slow", writes=True)
    def delete_where(self, filter: Mapping[str, Any]) -> int:
        """Delete the items whose metadata passes ``filter``; returns how many.

        Atomic per page of 1,000 items, not as a whole: a large delete runs page after
        page, and a failure part-way leaves the pages before it deleted. Each item is
        tested again inside its page's transaction, so an item changed meanwhile to fail
        the filter stays. Items written to match while it runs may be deleted too.
        """
        if filter is None:
            raise InvalidArgument("delete_where needs a filter (delete_all removes every item)")
        compiled = compile_filter(filter)
        assert compiled is not None

        def remove(current: Current, now: int) -> Outcome:
            if current.bins is None or not compiled.matches(current.bins.get(METADATA)):
                return Outcome(False)
            return Outcome(True, None)

        removed = stalls = 0
        while stalls < _STALLS:
            state = self._ready()
            with state.lock.read():
                allowed = self._allowed(state, compiled)
                assert allowed is not None
                labels = np.flatnonzero(allowed)[:CHUNK]
                ids = [state.id_of[i] for i in labels]
            if not ids:
                break
            (results,) = self._write_steps(
                [self._store.store.step(self._records, [(i, remove) for i in ids])]
            )
            done = int(sum(results))
            removed += done
            stalls = 0 if done else stalls + 1
        return removed

    @remote("slow", writes=True)
    def delete_all(self) -> int:
        """Delete every item, keeping the collection; returns how many were deleted.

        Atomic per page of 1,000 items, not as a whole (see ``delete_where``); items
        written while it runs may or may not be deleted. To remove the collection itself,
        ``db.vectors.drop_collection`` is one atomic step.
        """

        def remove(current: Current, now: int) -> Outcome:
            return Outcome(current.bins is not None, None)

        self._store._check_alive(self.info)
        removed = 0
        cursor: str | None = None
        while True:
            page = self._records.scan(cursor=cursor, limit=CHUNK)
            if page.records:
                step = self._store.store.step(
                    self._records, [(r.key, remove) for r in page.records]
                )
                removed += int(sum(self._write_steps([step])[0]))
            if page.cursor is None:
                return removed
            cursor = page.cursor

    # reads -------------------------------------------------------------------------------

    @remote("read")
    def get(self, ids: Sequence[str | int]) -> list[Item | None]:
        """Items in request order; None for missing or expired ones."""
        ids = self._check_ids(ids, unique=False)
        self._store._check_alive(self.info)
        return [None if r is None else _item(r) for r in self._records.get_many(ids)]

    @remote("slow")
    def stats(self) -> dict[str, Any]:
        """The collection's index in this process: items, tombstones, memory, lag, and its
        calibration: ``target_recall``, the ``ef`` a search without one uses now,
        ``search_mode`` (``graph``, or ``exact`` when a scan is cheaper than the graph at
        the target or the collection is small), ``measured_recall`` (recall@10 at that ef of
        queries sampled near stored items), ``calibrated_size`` (live items then) and whether a
        calibration is running."""
        state = self._ready()
        return {"name": self.name, **state.stats()}

    @remote("slow")
    def calibrate(self) -> dict[str, Any]:
        """Calibrate ``ef`` for ``target_recall`` now, waiting for it (calibration otherwise
        runs in the background as the collection grows); returns ``stats()``."""
        state = self._ready()
        state.calibrate()
        return self.stats()

    @remote("slow")
    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Live (unexpired) items; with ``filter``, those whose metadata passes it."""
        compiled = compile_filter(filter)
        if compiled is None:
            self._store._check_alive(self.info)
            return self._records.count()
        state = self._ready()
        with state.lock.read():
            allowed = self._allowed(state, compiled)
            assert allowed is not None
            return int(np.count_nonzero(allowed))

    @remote("slow", caps={"limit": DEFAULT_CAP})
    def scan(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = 100,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> ItemPage:
        """Up to ``limit`` live items in id order (ints numerically, then strs by their
        UTF-8 bytes), only those whose metadata passes ``filter`` if one is given.

        Pass the page's ``cursor`` back for the next page; it is None once the scan is
        complete. Each page reads the items as they are when it runs, so an item written
        during a scan appears if its id lies ahead of the cursor. ``include`` chooses the
        parts returned as in ``search`` (by default metadata and text; add ``"vector"``);
        parts left out are None (``metadata``: ``{}``). A selective filter reads only the
        matching items, found through the index.
        """
        if type(limit) is not int or limit < 1:
            raise InvalidArgument(f"scan limit must be a positive int, not {limit!r}")
        chosen = _check_include(include)
        compiled = compile_filter(filter)
        after: bytes | None = None
        if cursor is not None:
            try:
                after = bytes.fromhex(cursor)
            except (TypeError, ValueError):
                raise InvalidArgument(f"invalid scan cursor {cursor!r:.100}") from None
        if compiled is None:
            self._store._check_alive(self.info)
            return self._scan_records(None, cursor, limit, chosen)
        state = self._ready()
        with state.lock.read():
            allowed = self._allowed(state, compiled)
            assert allowed is not None
            matching = int(np.count_nonzero(allowed))
            ordered = (
                None
                if matching > _SCAN_BY_RECORDS * state.vectors.live_count
                else self._ordered(state, compiled, allowed)
            )
        if ordered is None:
            return self._scan_records(compiled, cursor, limit, chosen)
        keys, ids = ordered
        position = 0 if after is None else bisect.bisect_right(keys, after)
        items: list[Item] = []
        while position < len(ids) and len(items) < limit:
            batch = ids[position : position + limit - len(items)]
            for record in self._records.get_many(batch):
                if record is not None and compiled.matches(record.get(METADATA)):
                    items.append(_item(record, chosen))
            position += len(batch)
        return ItemPage(items, keys[position - 1].hex() if position < len(ids) else None)

    def _ordered(
        self, state: CollectionState, compiled: Filter, allowed: np.ndarray
    ) -> tuple[list[bytes], list[Key]]:
        """The ids of the ``allowed`` labels (the filter's matches) and their encoded keys,
        in key order. Cached per filter until the index changes, so paging through a
        filter's matches sorts them once, not once per page. (Expiry needs no part in the
        cache key: an item that expired since is left out when its record is read.)"""
        try:
            spec = encode_value(compiled.spec)
        except (TypeError, ValueError, OverflowError):
            spec = None
        if spec is not None:
            found: tuple[list[bytes], list[Key]] | None = state.scan_cache_get(spec)
            if found is not None:
                return found
        limits = self._store.store.limits
        id_of = state.id_of
        pairs = sorted(
            (encode_key(key, limits), key)
            for key in (id_of[i] for i in np.flatnonzero(allowed).tolist())
            if key is not None
        )
        ordered = ([k for k, _ in pairs], [key for _, key in pairs])
        if spec is not None:
            state.scan_cache_put(spec, ordered)
        return ordered

    def _scan_records(
        self, compiled: Filter | None, cursor: str | None, limit: int, chosen: frozenset[str]
    ) -> ItemPage:
        """A scan page read from the items in key order, each tested against ``compiled``."""
        items: list[Item] = []
        batch = min(DEFAULT_CAP, max(2 * limit, 100))
        while True:
            page = self._records.scan(cursor=cursor, limit=batch)
            for i, record in enumerate(page.records):
                if compiled is not None and not compiled.matches(record.get(METADATA)):
                    continue
                items.append(_item(record, chosen))
                if len(items) == limit:
                    if i + 1 == len(page.records) and page.cursor is None:
                        return ItemPage(items, None)
                    key = encode_key(record.key, self._store.store.limits)
                    return ItemPage(items, key.hex())
            if page.cursor is None:
                return ItemPage(items, None)
            cursor = page.cursor

    @remote("slow", caps={"k": DEFAULT_CAP, "ef": DEFAULT_CAP}, wire={"vector": "vectors"})
    def search(
        self,
        vector: Any,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[Hit]:
        """The ``k`` nearest items to ``vector`` that pass ``filter``, best first.

        ``include`` names what each hit carries besides its id and score (``metadata``,
        ``text``, ``vector``); nothing else is read. ``ef`` overrides the beam width that
        calibration chose for the collection's ``target_recall`` (see ``stats``).
        """
        # The hot path: every step here is paid on each search, so the common case (a
        # plain float32 query, no filter, no expiry) takes the shortest way through.
        if type(k) is not int or not 1 <= k <= MAX_K:
            _check_k(k)
        chosen = _DEFAULT_CHOSEN if include is DEFAULT_INCLUDE else _check_include(include)
        if ef is not None:
            _check_ef(ef)
        plain = prepare_one(vector, self.params)
        if plain is None:  # not the plain 1-D float32 case: check and convert it fully
            _check_single(vector, "search")
            query, scale = prepare(vector, self.params), 1.0
        else:
            query, scale = plain
        compiled = None if filter is None else compile_filter(filter)
        state = self._ready()
        with state.lock.read():
            vectors = state.vectors
            if compiled is None and not vectors.with_ttl:
                allowed = None
            else:
                allowed = self._allowed(state, compiled)
            beam, exact = state.default_beam if ef is None else (ef, False)
            labels, scores = vectors.search_one(query, k, allowed, beam, exact, scale)
            return _hits(state, labels, scores, chosen)

    @remote("slow", caps={"k": DEFAULT_CAP, "ef": DEFAULT_CAP}, wire={"vectors": "vectors"})
    def search_many(
        self,
        vectors: Any,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[list[Hit]]:
        """``search`` for each row of ``vectors`` (one native batch call when unfiltered)."""
        _check_k(k)
        chosen = _check_include(include)
        _check_ef(ef)
        queries = prepare(vectors, self.params)
        compiled = compile_filter(filter)
        state = self._ready()
        with state.lock.read():
            allowed = self._allowed(state, compiled)
            beam, exact = state.beam(ef)
            scores, labels = state.vectors.search(queries, k, allowed, beam, exact)
            out: list[list[Hit]] = []
            for row_s, row_l in zip(scores.tolist(), labels.tolist()):
                found = [(label, score) for label, score in zip(row_l, row_s) if label >= 0]
                out.append(
                    _hits(state, [label for label, _ in found], [s for _, s in found], chosen)
                )
            return out

    @remote("slow", caps={"k": DEFAULT_CAP})
    def text_search(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> list[Hit]:
        """The ``k`` best BM25 matches for ``query`` that pass ``filter``."""
        _check_k(k)
        chosen = _check_include(include)
        if type(query) is not str:
            raise InvalidArgument("query must be a str")
        compiled = compile_filter(filter)
        state = self._ready()
        if state.text is None:
            raise InvalidArgument(f"collection {self.name!r} was created with text=False")
        with state.lock.read():
            ranked = self._text(state, query, k, compiled)
            return _hits(state, [label for label, _ in ranked], [s for _, s in ranked], chosen)

    @remote(
        "slow",
        caps={"k": DEFAULT_CAP, "candidates": DEFAULT_CAP, "ef": DEFAULT_CAP},
        wire={"vector": "vectors"},
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
        """Vector and BM25 results fused (``rrf`` or ``weighted`` by ``alpha``).

        Each side contributes its top ``candidates`` (default ``max(50, 2 * k)``); a hit's
        ``scores`` holds both raw scores and ranks.
        """
        _check_k(k)
        chosen = _check_include(include)
        if fusion not in ("rrf", "weighted"):
            raise InvalidArgument(f"fusion must be 'rrf' or 'weighted', not {fusion!r}")
        if type(alpha) not in (int, float) or not 0 <= alpha <= 1:
            raise InvalidArgument(f"alpha must be a number from 0 to 1, not {alpha!r}")
        if type(text) is not str:
            raise InvalidArgument("text must be a str")
        depth = candidates if candidates is not None else max(50, 2 * k)
        _check_k(depth)
        _check_ef(ef)
        _check_single(vector, "hybrid_search")
        query = prepare(vector, self.params)
        compiled = compile_filter(filter)
        state = self._ready()
        if state.text is None:
            raise InvalidArgument(f"collection {self.name!r} was created with text=False")
        with state.lock.read():
            allowed = self._allowed(state, compiled)
            beam, exact = state.beam(ef)
            scores, labels = state.vectors.search(query, depth, allowed, beam, exact)
            by_vector = [
                (int(label), float(score))
                for score, label in zip(scores[0], labels[0])
                if label >= 0
            ]
            by_text = self._text(state, text, depth, compiled)
            if fusion == "rrf":
                fused = fusers.rrf(by_vector, by_text)
            else:
                fused = fusers.weighted(by_vector, by_text, float(alpha))
            top = fused[:k]
            return _hits(
                state,
                [label for label, _, _ in top],
                [score for _, score, _ in top],
                chosen,
                [parts for _, _, parts in top],
            )

    # helpers -----------------------------------------------------------------------------

    def _ready(self) -> CollectionState:
        """The collection's index, checked alive and caught up with every committed write.

        When nothing at all was committed since the last such check (the change log's
        sequence has not moved: no drop, no write), the check is skipped: it reads the
        registry, and a search is otherwise a few tens of microseconds.
        """
        state = self._checked
        last = self._store.store.last_sequence()
        if state is not None and not state.dropped and state.checked == last:
            return state
        state = self._state()
        state.catch_up()
        state.checked = last
        self._checked = state
        return state

    def _allowed(self, state: CollectionState, compiled: Any) -> np.ndarray | None:
        """Labels a search may return (visible, passing the filter); None for every live
        one, when there is no filter and nothing can have expired."""
        vectors = state.vectors
        if compiled is None and not vectors.with_ttl:
            return None
        allowed = vectors.visible(self._store.store.now_ms())
        if compiled is not None:
            allowed = allowed & compiled.mask(state.columns, vectors.size)
        return allowed

    def _text(
        self, state: CollectionState, query: str, k: int, compiled: Any
    ) -> list[tuple[int, float]]:
        assert state.text is not None
        visible = state.vectors.visible(self._store.store.now_ms())
        mask = (
            visible
            if compiled is None
            else visible & compiled.mask(state.columns, state.vectors.size)
        )
        admissible = int(np.count_nonzero(mask))
        if admissible <= _TEXT_WITHIN or (
            admissible <= _TEXT_WITHIN_MAX and admissible < _TEXT_WITHIN_SHARE * len(mask)
        ):
            # Few admissible documents: search only those (see TextIndex.search).
            return state.text.search(query, k, only=np.flatnonzero(mask))
        return state.text.search(query, k, lambda labels: mask[labels])

    def _check_ids(self, ids: Sequence[str | int], unique: bool = True) -> list[str | int]:
        if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
            raise InvalidArgument("ids must be a list of str or int")
        out = list(ids)
        for item in out:
            if type(item) not in (str, int):
                raise InvalidArgument(f"an id must be a str or int, not {type(item).__name__}")
        if unique and len(set(out)) != len(out):
            raise InvalidArgument("ids in one call must be unique")
        return out

    @staticmethod
    def _check_column(name: str, values: Sequence[Any] | None, n: int) -> list[Any]:
        if values is None:
            return [None] * n
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise InvalidArgument(f"{name} must be a list with one entry per id")
        out = list(values)
        if len(out) != n:
            raise InvalidArgument(f"got {n} ids but {len(out)} {name}")
        return out


def _picker(labels: Sequence[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """What ``[seq[label] for label in labels]`` gives, looked up in one native loop: the
    entries lie scattered in memory, and a C loop overlaps the cache misses that a Python
    loop pays one after another (itemgetter of one label gives the entry, not a tuple)."""
    if len(labels) > 1:
        return itemgetter(*labels)
    return lambda seq: [seq[label] for label in labels]


def _hits(
    state: CollectionState,
    labels: Sequence[int],
    scores: Sequence[float],
    include: frozenset[str],
    parts: Sequence[dict[str, float]] | None = None,
) -> list[Hit]:
    """Hits for ``labels`` (found under ``state``'s read lock, and called under it), carrying
    only the parts ``include`` names. Metadata and text come straight from the index, which
    answers for the same instant as the search itself (it was caught up with every committed
    write before the search began, and a deleted item left it then): no record is read or
    decoded for them. A hit's metadata is decoded from the index's packed copy, so it is the
    caller's own. Only a caller asking for vectors has records read, for their stored
    vectors (bit for bit what ``get`` returns; the index holds a re-normalised copy), and
    falls back to the index's copy for an item written again since the search."""
    pick = _picker(labels)
    ids = pick(state.id_of)
    if not include and parts is None:
        return [Hit(key, score) for key, score in zip(ids, scores)]
    unpack = decode_own
    if include is _DEFAULT_CHOSEN and parts is None:  # the common case, spelled out
        return [
            Hit(key, score, unpack(packed), text)
            for key, score, packed, text in zip(
                ids, scores, pick(state.packed_metadata), pick(state.text_of)
            )
        ]
    metadata = (
        [unpack(packed) for packed in pick(state.packed_metadata)]
        if "metadata" in include
        else None
    )
    texts = pick(state.text_of) if "text" in include else None
    vectors: list[Any] | None = None
    if "vector" in include:
        records = state.store.records(state.set_name).get_many(list(ids))
        stored = state.vectors.vectors()
        generation_of = state.generation_of
        vectors = [
            record.get(VECTOR)
            if record is not None and record.generation == generation_of[label]
            else stored[label].copy()
            for label, record in zip(labels, records)
        ]
    return [
        Hit(
            key,
            score,
            metadata[i] if metadata is not None else None,
            texts[i] if texts is not None else None,
            vectors[i] if vectors is not None else None,
            parts[i] if parts is not None else None,
        )
        for i, (key, score) in enumerate(zip(ids, scores))
    ]


def _item(record: Record, include: frozenset[str] = INCLUDE) -> Item:
    return Item(
        id=record.key,  # type: ignore[arg-type]
        vector=record.get(VECTOR) if "vector" in include else None,
        metadata=(record.get(METADATA) or {}) if "metadata" in include else {},
        text=record.get(TEXT) if "text" in include else None,
        generation=record.generation,
        expires_at=record.expires_at,
    )


# What roles built on collections (long-term memory) use: the items as records, and atomic
# writes that combine item changes with the role's own sets and then index them.


def items_of(collection: Collection) -> RecordSet:
    """The record set holding ``collection``'s items (a role's read and step target)."""
    return collection._records


def write_steps(collection: Collection, steps: Sequence[TransformStep]) -> list[list[Any]]:
    """Commit ``steps`` as one write that fails with ``NotFound`` if ``collection`` was
    dropped, then index it (see ``Collection._write_steps``)."""
    return collection._write_steps(steps)


def staged_steps(
    collection: Collection, method: str, ids: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[TransformStep], Callable[[list[list[Any]]], Any]]:
    """A transaction's collection write (``upsert`` or ``delete`` of ``ids``) as steps to
    commit with the transaction's other writes, and how to turn the steps' results into the
    call's result."""
    roles = collection._store.store
    if method == "upsert":
        vectors, metadata, texts = [*args, None, None, None][:3]
        options = {k: v for k, v in kwargs.items() if k in ("ttl", "expect_generation")}
        if len(options) != len(kwargs):
            raise InvalidArgument(f"a staged upsert takes ttl and expect_generation, not {kwargs}")
        keys, items = collection._upsert_items(
            ids, vectors, metadata, texts, options.get("ttl"), options.get("expect_generation")
        )
        step = roles.step(collection._records, items, result="generation")

        def generations(results: list[list[Any]]) -> list[int]:
            written = dict(zip((key for key, _ in items), results[1]))
            return [written[key] for key in keys]

        return [collection._alive_step(), step], generations
    if method == "delete" and not args and not kwargs:
        unique = list(dict.fromkeys(collection._check_ids(ids, unique=False)))

        def remove(current: Current, now: int) -> Outcome:
            return Outcome(current.bins is not None, None)

        step = roles.step(collection._records, [(i, remove) for i in unique])
        return [collection._alive_step(), step], lambda results: sum(results[1])
    raise InvalidArgument(f"a transaction cannot stage collection {method!r} like that")
