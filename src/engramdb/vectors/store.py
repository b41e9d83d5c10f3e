"""``db.vectors``: the collections of the embedding store.

A collection's definition is a record of the set ``_collections``, under its name. Its items
are records of a set of their own per *incarnation*: ``vec._<uid>``, where ``uid`` is drawn
when the collection is created (``vec.<name>`` for collections created before incarnations
had sets of their own; they keep working). Only the definition points at the items, so:

- Dropping is one commit: the definition goes, and in the same commit a marker in
  ``_collections_dropped`` (keyed by the items' set) records what is left to reclaim. From
  that commit on no reader sees the items, and no write reaches them: every write checks,
  in its own transaction, that the definition it was made for is still there.
- The items are deleted afterwards, a few pages per ``sweep`` (the database's sweeper calls
  it), and the marker goes last, so a crash part-way leaves work that the next sweep, in any
  process, resumes. A collection created again under the same name gets a new, empty set:
  the old items can never come back into it, whatever its ``dim``.

Definitions are re-validated when read back, so a corrupt or forged one fails its own
collection only (``list_collections`` leaves it out and logs it), and no name reaches a file
path unchecked. Collections need no server-side setup and are visible to every process and
client as soon as ``create_collection`` returns.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import shutil
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from engramdb.errors import Conflict, EngramError, InvalidArgument, NotFound, StorageError
from engramdb.index.vector import VectorParams
from engramdb.records.keys import Key
from engramdb.records.model import Record
from engramdb.records.writes import Current, Outcome
from engramdb.remote import remote
from engramdb.vectors.calibrate import Calibration, decode_calibration
from engramdb.vectors.collection import Collection
from engramdb.vectors.model import CollectionInfo
from engramdb.vectors.state import CollectionState, params_of

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["VectorStore"]

log = logging.getLogger("engramdb.vectors")

REGISTRY = "_collections"
DROPPED = "_collections_dropped"
# Registry bin saying where the items are: INCARNATION_SETS for ``vec._<uid>``; absent for
# the legacy ``vec.<name>``. Kept out of CollectionInfo: it is storage layout, not API.
LAYOUT = "layout"
CALIBRATION = "calibration"  # registry bin: the collection's last calibration (calibrate.py)
INCARNATION_SETS = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
_UID = re.compile(r"[0-9a-f]{16}")
# A name cannot start with "_", so the two kinds of item sets never collide.
_ITEMS_SET = re.compile(r"vec\.(?:_[0-9a-f]{16}|[A-Za-z0-9][A-Za-z0-9_.-]{0,47})")
_SNAPSHOT_DIR = re.compile(r"(vec\..+)-([0-9a-f]{16})")
_MAX_DIM_READ_BACK = 1 << 16  # a sanity bound; the configured limit applies when created
_RECLAIM_PAGE = 1000  # items deleted per transaction
_RECLAIM_PAGES = 10  # transactions per sweep


# The parts of a definition a caller chooses, compared when a collection already exists.
_DEFINITION = (
    "dim", "metric", "text", "m", "ef_construction", "ef_search", "exact_threshold",
    "target_recall",
)  # fmt: skip


def _check_target(target: object) -> None:
    if target is None:
        return
    if not isinstance(target, int | float) or type(target) is bool or not 0.5 <= target <= 1.0:
        raise InvalidArgument(
            f"target_recall must be a number from 0.5 to 1.0, or None; not {target!r}"
        )


def legacy_set(name: str) -> str:
    return f"vec.{name}"


def incarnation_set(uid: str) -> str:
    return f"vec._{uid}"


class Definition(NamedTuple):
    """A collection's definition as read back and checked, and the set of its items."""

    info: CollectionInfo
    items: str


class VectorStore:
    """Create, open, list and drop collections. One per ``Database``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._registry = store.records(REGISTRY)
        self._dropped = store.records(DROPPED)
        self._states: dict[str, CollectionState] = {}
        self._lock = threading.Lock()
        self._sweeping = threading.Lock()
        self._looked_for_leftovers = False

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
        target_recall: float | None = 0.95,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection of ``dim``-dimensional vectors compared by ``metric``
        (``cosine``, ``ip`` or ``l2``), with a BM25 index over item texts when ``text``.

        Searches that name no ``ef`` reach ``target_recall`` (recall@10, from 0.5 to 1.0)
        on the collection's own data: the ``ef`` is calibrated from queries sampled near
        stored items, in the background as the collection grows (``Collection.stats``
        reports it; the collection may search exactly when that is cheaper). Until the
        first calibration, and always with ``target_recall=None``, searches use
        ``ef_search``.

        Raises ``Conflict`` if it exists, saying so; with ``exist_ok`` an existing collection
        of the same definition is returned (one defined otherwise is still a ``Conflict``
        naming what differs).
        """
        self._check_name(name)
        params = VectorParams(dim, metric, m, ef_construction, ef_search, exact_threshold)
        params.check(self.store.limits.max_vector_dim)
        if type(text) is not bool:
            raise InvalidArgument("text must be a bool")
        _check_target(target_recall)
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
            created_at=self.store.now(),
            target_recall=None if target_recall is None else float(target_recall),
        )
        bins = {**msgspec.structs.asdict(info), LAYOUT: INCARNATION_SETS}
        try:
            self._registry.put(name, bins, create_only=True)
        except Conflict as taken:
            existing = self._definition(name)
            same = msgspec.structs.replace(existing.info, uid=info.uid, created_at=info.created_at)
            if same == info:
                if exist_ok:
                    return Collection(self, existing.info, existing.items)
                raise Conflict(
                    f"collection {name!r} already exists: pass exist_ok=True to use it, or "
                    f"get_collection({name!r})",
                    taken.generation,
                ) from None
            differs = ", ".join(
                f"{field} {getattr(existing.info, field)!r} (asked {getattr(info, field)!r})"
                for field in _DEFINITION
                if getattr(existing.info, field) != getattr(info, field)
            )
            raise Conflict(
                f"collection {name!r} already exists with another definition: {differs}; "
                f"drop_collection({name!r}) first to change it",
                taken.generation,
            ) from None
        return Collection(self, info, incarnation_set(info.uid))

    @remote("read")
    def get_collection(self, name: str) -> Collection:
        """The collection ``name``; ``NotFound`` if there is none (``StorageError`` if its
        stored definition is corrupt)."""
        found = self._definition(self._check_name(name))
        return Collection(self, found.info, found.items)

    @remote("read")
    def list_collections(self) -> list[CollectionInfo]:
        """Every collection's definition. A corrupt one is left out (and logged)."""
        out: list[CollectionInfo] = []
        for record in self._registry.iterate():
            try:
                out.append(self._decode(record.key, record.bins).info)
            except StorageError as e:
                log.warning("%s; list_collections leaves it out", e)
        return out

    @remote("slow", writes=True)
    def drop_collection(self, name: str) -> bool:
        """Drop the collection and its items; returns whether it existed.

        Atomic for every reader and writer, here and in other processes: once this returns
        the collection is gone, and a write racing with it either landed before (and went
        with it) or fails with ``NotFound``. The space of the items is reclaimed in the
        background (``Database.sweep``), also after a crash.
        """
        self._check_name(name)
        for _ in range(16):
            record = self._registry.get(name)
            if record is None:
                return False
            sets = self._sets_claimed(name, record.bins)
            generation = record.generation

            def remove(current: Current, now: int, generation: int = generation) -> Outcome:
                if current.generation != generation:
                    raise Conflict("the definition changed meanwhile", current.generation)
                return Outcome(None, None)

            uid = record.bins.get("uid")
            marker = {"name": name, "uid": uid if type(uid) is str else None}

            def mark(current: Current, now: int, marker: dict[str, Any] = marker) -> Outcome:
                return Outcome(None, marker, 0)

            try:
                self.store.write(
                    [
                        self.store.step(self._registry, [(name, remove)]),
                        self.store.step(self._dropped, [(s, mark) for s in sets]),
                    ]
                )
            except Conflict:
                continue  # re-defined meanwhile (dropped and created again): drop that one
            break
        else:
            raise Conflict(f"collection {name!r} kept changing while being dropped", 0)
        with self._lock:
            gone = [s for s in self._states.values() if s.info.name == name]
            for state in gone:
                del self._states[state.info.uid]
        for state in gone:
            state.dropped = True
            state.stop_calibrating()
            state.remove_files()
        return True

    # the sweeper's part ------------------------------------------------------------------

    def _sweep(self) -> int:
        """Reclaim some of the items of dropped collections (``Database.sweep`` calls this);
        returns how many were deleted. The first call in a process also looks for item sets
        and snapshot directories that no collection owns (left by a crash of older
        versions, which deleted a collection's items after its definition)."""
        if not self._sweeping.acquire(blocking=False):
            return 0  # another thread is at it
        try:
            if not self._looked_for_leftovers:
                self._look_for_leftovers()
                self._looked_for_leftovers = True
            removed = 0
            budget = _RECLAIM_PAGES
            for marker in self._dropped.scan(limit=100).records:
                done, used = self._reclaim(marker, budget)
                removed += done
                budget -= used
                if budget <= 0:
                    break
            return removed
        finally:
            self._sweeping.release()

    def _reclaim(self, marker: Record, budget: int) -> tuple[int, int]:
        """Delete up to ``budget`` pages of the set ``marker`` names; drop the marker once
        the set is empty. Returns (items deleted, pages used)."""
        items_set = marker.key
        if type(items_set) is not str or not _ITEMS_SET.fullmatch(items_set):
            log.warning("ignoring a malformed drop marker %r", items_set)
            self._forget_marker(marker)
            return 0, 0
        owned, _ = self._owned()
        if items_set in owned:  # forged, or a definition claims it again: keep the items
            log.warning("drop marker for %s, which a collection still owns; kept", items_set)
            self._forget_marker(marker)
            return 0, 0
        items = self.store.records(items_set)

        def remove(current: Current, now: int) -> Outcome:
            return Outcome(None, None)

        removed = used = 0
        while True:
            page = items.scan(limit=_RECLAIM_PAGE)
            if not page.records:
                self._forget_marker(marker)
                self._remove_snapshots(items_set)
                break
            if used == budget:
                break
            self.store.write([self.store.step(items, [(r.key, remove) for r in page.records])])
            removed += len(page.records)
            used += 1
        return removed, used

    def _forget_marker(self, marker: Record) -> None:
        with contextlib.suppress(Conflict):  # another process got there first
            self._dropped.delete(marker.key, expect_generation=marker.generation)

    def _owned(self) -> tuple[set[str], set[str]]:
        """Item sets and uids that some definition (corrupt ones too) may own."""
        sets: set[str] = set()
        uids: set[str] = set()
        for record in self._registry.iterate():
            claimed = self._sets_claimed(record.key, record.bins)
            sets.update(claimed)
            uid = record.bins.get("uid")
            if type(uid) is str and _UID.fullmatch(uid):
                uids.add(uid)
        return sets, uids

    def _sets_claimed(self, key: Key, bins: dict[str, Any]) -> list[str]:
        """The item set a definition points at; for a corrupt one, every set it might."""
        try:
            return [self._decode(key, bins).items]
        except StorageError:
            claimed = []
            if type(key) is str and _NAME.fullmatch(key):
                claimed.append(legacy_set(key))
            uid = bins.get("uid")
            if type(uid) is str and _UID.fullmatch(uid):
                claimed.append(incarnation_set(uid))
            return claimed

    def _look_for_leftovers(self) -> None:
        # Order matters: sets and directories are listed before the definitions are read.
        # A set or directory exists only after its definition was committed, so a listed
        # one whose definition the later read does not find was dropped: it is garbage.
        present = [s for s in self.store.sets() if _ITEMS_SET.fullmatch(s)]
        root = self._snapshot_root()
        directories = []
        if root is not None:
            with contextlib.suppress(OSError):
                directories = os.listdir(root)
        owned, uids = self._owned()
        pending = {r.key for r in self._dropped.scan(limit=1000).records}
        for items_set in present:
            if items_set not in owned and items_set not in pending:
                log.warning("reclaiming %s, which no collection owns", items_set)
                self._dropped.put(items_set, {"name": None, "uid": None})
        for directory in directories:
            found = _SNAPSHOT_DIR.fullmatch(directory)
            if found is not None and found.group(2) not in uids:
                assert root is not None
                shutil.rmtree(os.path.join(root, directory), ignore_errors=True)

    def _snapshot_root(self) -> str | None:
        return (
            None if self.store.cache_dir is None else os.path.join(self.store.cache_dir, "indexes")
        )

    def _remove_snapshots(self, items_set: str) -> None:
        root = self._snapshot_root()
        if root is None:
            return
        try:
            directories = os.listdir(root)
        except OSError:
            return
        for directory in directories:
            found = _SNAPSHOT_DIR.fullmatch(directory)
            if found is not None and found.group(1) == items_set:
                shutil.rmtree(os.path.join(root, directory), ignore_errors=True)

    # internals ---------------------------------------------------------------------------

    def _decode(self, key: Key, bins: dict[str, Any]) -> Definition:
        """A definition read back, re-validated: ``StorageError`` when it is corrupt."""
        try:
            info = msgspec.convert(bins, CollectionInfo)
        except msgspec.ValidationError as e:
            raise StorageError(f"collection {key!r} has a corrupt definition: {e}") from None
        problem = None
        if info.name != key or not _NAME.fullmatch(info.name):
            problem = f"it names {info.name!r}"
        elif not _UID.fullmatch(info.uid):
            problem = f"its uid is {info.uid!r}"
        elif bins.get(LAYOUT) not in (None, INCARNATION_SETS):
            problem = f"its layout is {bins.get(LAYOUT)!r}"
        else:
            try:
                params_of(info).check(_MAX_DIM_READ_BACK)
                _check_target(info.target_recall)
            except InvalidArgument as e:
                problem = str(e)
        if problem is not None:
            raise StorageError(f"collection {key!r} has a corrupt definition: {problem}")
        if bins.get(LAYOUT) == INCARNATION_SETS:
            return Definition(info, incarnation_set(info.uid))
        return Definition(info, legacy_set(info.name))

    def _definition(self, name: str) -> Definition:
        record = self._registry.get(name)
        if record is None:
            raise NotFound(f"no collection named {name!r}")
        return self._decode(name, record.bins)

    def _check_alive(self, info: CollectionInfo) -> Record:
        """The collection's definition record; ``NotFound`` when the collection was dropped
        (here or in another process)."""
        record = self._registry.get(info.name)
        if record is None or record.bins.get("uid") != info.uid:
            raise NotFound(f"collection {info.name!r} was dropped")
        return record

    def _state_of(self, info: CollectionInfo, items: str) -> CollectionState:
        try:
            record = self._check_alive(info)
        except NotFound:
            with self._lock:
                state = self._states.pop(info.uid, None)
            if state is not None:
                state.dropped = True
                state.stop_calibrating()
            raise
        tuned = decode_calibration(record.bins.get(CALIBRATION))
        state = self._states.get(info.uid)
        if state is None:
            with self._lock:
                state = self._states.get(info.uid)
                if state is None:
                    state = CollectionState(
                        self.store,
                        info,
                        items,
                        tuned,
                        functools.partial(self._save_calibration, info),
                    )
                    state.open()
                    self._states[info.uid] = state
                    return state
        state.adopt(tuned)  # another process may have calibrated on more items
        return state

    def _save_calibration(self, info: CollectionInfo, found: Calibration) -> None:
        """Record a calibration in the collection's definition (unless it was dropped)."""
        value = msgspec.structs.asdict(found)

        def put(current: Current, now: int) -> Outcome:
            if current.bins is None or current.bins.get("uid") != info.uid:
                return Outcome(False)  # dropped (or re-created) meanwhile: nothing to record
            return Outcome(True, {**current.bins, CALIBRATION: value})

        self.store.write([self.store.step(self._registry, [(info.name, put)])])

    def _close(self) -> None:
        """Snapshot each index that changed (skipping dropped collections). Closes every
        one even if some fail, then raises the first error."""
        with self._lock:
            states = list(self._states.values())
        first: BaseException | None = None
        for state in states:
            try:
                try:
                    self._check_alive(state.info)
                except EngramError:  # dropped elsewhere, or the store is unusable
                    state.dropped = True
                state.close()
            except Exception as e:
                log.exception("closing the index of collection %r failed", state.info.name)
                first = first or e
        if first is not None:
            raise first

    def _stats(self) -> dict[str, Any]:
        with self._lock:
            states = list(self._states.values())
        return {state.info.name: state.stats() for state in states}
